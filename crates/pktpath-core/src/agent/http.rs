//! The agent's HTTP endpoints, on one thread (tiny_http): `/metrics` (OpenMetrics text when
//! the client asks for it, as Prometheus does, the Prometheus text format 0.0.4 otherwise),
//! `/healthz` (the process runs) and `/readyz` (the data path is attached and the last
//! reload succeeded).

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};
use tiny_http::{Header, Request, Response, Server};

use super::{AgentError, status::Status};
use crate::route::datapath::attach::{self, Layout};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running HTTP server; stopped on drop.
pub struct MetricsServer {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    /// The address it listens on (the port the kernel chose when asked for port 0).
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves in a thread.
    pub fn start(
        addr: SocketAddr,
        registry: Registry,
        layout: Layout,
        status: Arc<Status>,
    ) -> Result<Self, AgentError> {
        let server = Server::http(addr).map_err(|e| AgentError::Listen {
            addr,
            message: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().ok_or(AgentError::Listen {
            addr,
            message: "not an IP socket".to_owned(),
        })?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    serve(request, &registry, &layout, &status);
                }
            })
            .map_err(|source| AgentError::Watch {
                what: "starting the metrics thread".to_owned(),
                source,
            })?;
        Ok(Self {
            server,
            thread: Some(thread),
            addr,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(value: &str) -> Header {
    Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("a valid header")
}

fn serve(request: Request, registry: &Registry, layout: &Layout, status: &Status) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let response = match path.as_str() {
        "/metrics" => {
            let open = request.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let mut body = String::new();
            let (encoded, kind) = if open {
                (text::encode(&mut body, registry), OPENMETRICS)
            } else {
                (
                    prometheus_text::encode(&mut body, registry),
                    prometheus_text::CONTENT_TYPE,
                )
            };
            match encoded {
                Ok(()) => Response::from_string(body).with_header(header(kind)),
                Err(_) => {
                    Response::from_string("encoding the metrics failed\n").with_status_code(500)
                }
            }
        }
        "/healthz" => Response::from_string("ok\n"),
        "/readyz" => match readiness(layout, status) {
            Ok(()) => Response::from_string("ready\n"),
            Err(why) => Response::from_string(format!("not ready: {why}\n")).with_status_code(503),
        },
        _ => Response::from_string("not found: try /metrics, /healthz or /readyz\n")
            .with_status_code(404),
    };
    if let Err(e) = request.respond(response) {
        log::debug!("answering {path}: {e}");
    }
}

/// Ready: the data path is attached and the last reload succeeded.
fn readiness(layout: &Layout, status: &Status) -> Result<(), String> {
    attach::open(layout).map_err(|e| e.to_string())?;
    let record = status.get();
    match record.last_reload {
        Some((_, true)) => Ok(()),
        Some((_, false)) => Err(format!(
            "the last reload failed: {}",
            record.last_error.unwrap_or_default()
        )),
        None => Err("no policy set applied yet".to_owned()),
    }
}
