//! `pktpath agent`: the data path as a service. On start it takes the writer lock, attaches
//! (or adopts an attachment of the same configuration: attach is idempotent) and applies
//! the runtime configuration. Then it waits: a change to either file (inotify on their
//! directories) or SIGHUP re-applies, each time under the writer lock taken for that
//! reload only (so `pktpath route ...` keeps working beside the agent); a bad file is
//! logged with the message `route apply` gives, counted, and the running set stays.
//! SIGTERM/SIGINT stop the agent and leave the data path forwarding (pins stay) unless
//! `detach_on_exit`. The metrics endpoint ([`http`]) reads the counters from the maps at
//! scrape time ([`metrics`]). Unless turned off, the kernel drop monitor ([`DropMonitor`])
//! is attached for the agent's life and read at scrape time too; when asked for, so are the
//! hop-latency histograms ([`HopLatency`]) of the configured interfaces.
//!
//! Logs: one line per event, through `log` (the binary prints them on stderr).

pub mod http;
pub mod metrics;
pub mod status;
mod watch;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use self::{
    http::MetricsServer,
    metrics::DatapathCollector,
    status::{Applied, Status},
    watch::FileWatch,
};
use crate::{
    dropmon::{DropMonitor, DropMonitorError},
    hoplat::{HopLatency, HopLatencyError},
    route::datapath::attach::{self, AttachError, Layout, TcMode, Writer},
    route::{
        compile::{PolicySet, Topology},
        config::{ConfigError, Source},
    },
    sys::{
        SysError,
        signals::{SignalPipe, poll_readable},
    },
};

/// The agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    DropMonitor(#[from] DropMonitorError),
    #[error(transparent)]
    HopLatency(#[from] HopLatencyError),
    #[error("{what} failed")]
    Watch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} names no file; give the path of a file")]
    NotAFile { path: String },
    #[error("cannot serve metrics on {addr}: {message}; pick another --metrics-listen address")]
    Listen { addr: SocketAddr, message: String },
}

/// What the agent runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The static configuration (configuration.json).
    pub config: PathBuf,
    /// The policy set (runtimeConfiguration.json).
    pub runtime: PathBuf,
    /// Where the data path is pinned and its state kept.
    pub layout: Layout,
    /// Where to serve /metrics, /healthz and /readyz (None: no HTTP server).
    pub metrics_listen: Option<SocketAddr>,
    /// How to hook into TC when attaching (None: probe, TCX where the kernel has it).
    pub tc_mode: Option<TcMode>,
    /// Detach the data path when stopping (otherwise it keeps forwarding).
    pub detach_on_exit: bool,
    /// How long a reload waits for another writer of the data path.
    pub wait: Duration,
    /// Attach the kernel drop monitor (`skb:kfree_skb` counters) for the agent's life.
    pub drop_monitor: bool,
    /// Attach the hop-latency histograms (receive to transmit on the configured
    /// interfaces) for the agent's life.
    pub hop_latency: bool,
}

/// How long the agent waits after a file event for the rest of an editor's write.
const SETTLE: Duration = Duration::from_millis(200);

/// An error and its causes on one line, as `pktpath` prints errors.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Gives the heap the apply freed back to the system: compiling a large set takes hundreds
/// of MiB for a moment, which glibc's allocator would otherwise keep.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(options: Options) -> Result<(), AgentError> {
    let signals = SignalPipe::install(&[libc::SIGHUP, libc::SIGTERM, libc::SIGINT])?;
    let mut watch = FileWatch::new(&[&options.config, &options.runtime])?;
    let status = Arc::new(Status::default());
    // Before the data path: a monitor that cannot start stops the agent with nothing attached.
    let drops = if options.drop_monitor {
        let monitor = DropMonitor::start()?;
        log::info!("kernel drop monitor attached to skb:kfree_skb");
        Some(Arc::new(monitor))
    } else {
        log::info!("kernel drop monitor off (--no-drop-monitor)");
        None
    };
    let hops = if options.hop_latency {
        // The configured interfaces, in this (the router's) namespace.
        let topology = Topology::load(&options.config)?;
        let names: Vec<String> = topology.interfaces.iter().map(|i| i.name.clone()).collect();
        let hops = HopLatency::start(&names)?;
        log::info!(
            "hop-latency histograms attached to netif_receive_skb and net_dev_start_xmit ({})",
            hops.interfaces().join(", ")
        );
        Some(Arc::new(hops))
    } else {
        None
    };
    let collector = Arc::new(DatapathCollector::new(
        options.layout.clone(),
        status.clone(),
        drops,
        hops.clone(),
    ));
    let agent = Agent {
        options: options.clone(),
        status: status.clone(),
        collector: options.metrics_listen.map(|_| collector.clone()),
        hops,
    };

    agent.start()?;
    let _server = match options.metrics_listen {
        Some(addr) => {
            let server =
                MetricsServer::start(addr, collector.registry(), options.layout.clone(), status)?;
            log::info!(
                "serving http://{}/metrics, /healthz and /readyz",
                server.addr
            );
            Some(server)
        }
        None => None,
    };

    let mut pending: Option<Instant> = None;
    let mut changed = Vec::new();
    let mut next_egress_check = Instant::now() + EGRESS_CHECK;
    let stop = loop {
        let wake = pending.map_or(next_egress_check, |at| at.min(next_egress_check));
        let timeout = Some(wake.saturating_duration_since(Instant::now()));
        let ready = poll_readable(&[signals.as_raw_fd(), watch.as_raw_fd()], timeout)?;
        if Instant::now() >= next_egress_check {
            next_egress_check = Instant::now() + EGRESS_CHECK;
            agent.check_xdp_egress();
            agent.refresh_hop_interfaces();
        }
        let mut stop = None;
        for sig in signals.take() {
            match sig {
                libc::SIGHUP => {
                    log::info!("SIGHUP: reloading");
                    agent.reload(true);
                }
                libc::SIGTERM => stop = Some("SIGTERM"),
                _ => stop = Some("SIGINT"),
            }
        }
        if let Some(sig) = stop {
            break sig;
        }
        if ready[1] && watch.changed(&mut changed)? {
            // Let the writer finish (an editor's write, rename and chmod come apart).
            pending = Some(Instant::now() + SETTLE);
            continue;
        }
        if pending.is_some_and(|at| Instant::now() >= at) {
            pending = None;
            let names: Vec<String> = changed.drain(..).map(|p| p.display().to_string()).collect();
            log::info!("{} changed: reloading", names.join(" and "));
            agent.reload(true);
        }
    };
    agent.stop(stop)
}

/// How often the agent looks whether the interfaces XDP redirects into still take native
/// XDP frames (a veth's peer may turn GRO off at any time; XDP's redirect into it would
/// then drop the frame).
const EGRESS_CHECK: Duration = Duration::from_secs(1);

/// The agent's loop state.
struct Agent {
    options: Options,
    status: Arc<Status>,
    /// The metrics' collector, warmed after each apply (None without metrics).
    collector: Option<Arc<DatapathCollector>>,
    /// The hop-latency histograms, when on.
    hops: Option<Arc<HopLatency>>,
}

impl Agent {
    /// Attaches (or adopts) and applies. A data path that cannot be attached is an error;
    /// a runtime configuration that cannot be applied is logged and counted, as on reload.
    fn start(&self) -> Result<(), AgentError> {
        let layout = &self.options.layout;
        let writer = self.lock()?;
        let config = Source::read(&self.options.config)?;
        let report = attach::attach_source(&writer, &config, self.options.tc_mode)?;
        if report.attached.is_empty() {
            log::info!(
                "adopted the data path attached at {} ({}, {})",
                report.pin_dir,
                report.mode,
                report.unchanged.join(", ")
            );
        } else if report.unchanged.is_empty() {
            log::info!(
                "attached at {} ({}): {}",
                report.pin_dir,
                report.mode,
                report.attached.join(", ")
            );
        } else {
            log::info!(
                "adopted the data path attached at {} ({}), re-attached {}",
                report.pin_dir,
                report.mode,
                report.attached.join(", ")
            );
        }
        let start = Instant::now();
        let result = self.apply(&writer, false);
        drop(writer);
        self.record(result, start);
        log::debug!("state under {}", layout.state_dir().display());
        Ok(())
    }

    fn lock(&self) -> Result<Writer, AttachError> {
        let writer = Writer::lock(&self.options.layout, self.options.wait)?;
        for line in writer.recovered() {
            log::warn!("{line}");
        }
        Ok(writer)
    }

    /// Re-attaches missing links (the configuration must be the one attached) and applies
    /// the runtime configuration unless `skip_unchanged` and it is the set in use. None
    /// when nothing was applied.
    fn apply(
        &self,
        writer: &Writer,
        skip_unchanged: bool,
    ) -> Result<Option<attach::ApplyReport>, AgentError> {
        let config = Source::read(&self.options.config)?;
        let report = attach::attach_source(writer, &config, self.options.tc_mode)?;
        if !report.attached.is_empty() {
            log::warn!(
                "re-attached {} (missing from the data path at {})",
                report.attached.join(", "),
                report.pin_dir
            );
        }
        let mut attached = attach::open(writer.layout())?;
        let source = Source::read(&self.options.runtime)?;
        let set = PolicySet::from_source(&attached.topology, &source)?;
        if skip_unchanged
            && let Some(running) = attached.active_file()?.source
            && running.name() == source.name()
            && running.text() == source.text()
        {
            return Ok(None);
        }
        Ok(Some(attached.apply(writer, &set, &source)?))
    }

    /// Sets which interfaces XDP redirects into as their drivers say now, and logs what
    /// changed (nothing to do without XDP).
    fn check_xdp_egress(&self) {
        match attach::refresh_xdp_egress(&self.options.layout) {
            Ok(r) => {
                for c in r.changed {
                    if c.takes_xdp {
                        log::info!("{}", c.describe());
                    } else {
                        log::warn!("{}", c.describe());
                    }
                }
            }
            Err(e) => log::debug!("XDP egress check: {}", one_line(&e)),
        }
    }

    /// Writes the measured interfaces' ifindexes again where they changed (an interface
    /// deleted and made again), and logs what changed.
    fn refresh_hop_interfaces(&self) {
        let Some(hops) = &self.hops else {
            return;
        };
        match hops.refresh() {
            Ok(changes) => {
                for (measured, line) in changes {
                    if measured {
                        log::info!("{line}");
                    } else {
                        log::warn!("{line}");
                    }
                }
            }
            Err(e) => log::warn!("hop latency: {}", one_line(&e)),
        }
    }

    /// One reload: lock, apply, unlock; logged and recorded.
    fn reload(&self, skip_unchanged: bool) {
        let start = Instant::now();
        let result = self
            .lock()
            .map_err(AgentError::from)
            .and_then(|writer| self.apply(&writer, skip_unchanged));
        self.record(result, start);
    }

    fn record(&self, result: Result<Option<attach::ApplyReport>, AgentError>, start: Instant) {
        let took = start.elapsed();
        let now = SystemTime::now();
        match result {
            Ok(Some(report)) => {
                log::info!(
                    "applied {}: {} policies, {} rules in {} trees ({} KiB in the kernel), generation {}, in {:.3} s",
                    self.options.runtime.display(),
                    report.policies,
                    report.rules,
                    report.trees,
                    report.table_bytes / 1024,
                    report.generation,
                    took.as_secs_f64()
                );
                self.status.update(|r| {
                    r.reloads += 1;
                    r.last_reload = Some((now, true));
                    r.last_error = None;
                    r.applied = Some(Applied {
                        generation: report.generation,
                        policies: report.policies,
                        rules: report.rules,
                        match_shapes: report.match_shapes,
                        trees: report.trees,
                        table_bytes: report.table_bytes,
                        duration: took,
                    });
                });
                if let Some(c) = &self.collector {
                    c.warm();
                }
                release_free_memory();
            }
            Ok(None) => {
                log::info!(
                    "{} is the policy set in use: nothing to apply",
                    self.options.runtime.display()
                );
                self.status.update(|r| {
                    r.reloads += 1;
                    r.last_reload = Some((now, true));
                    r.last_error = None;
                });
            }
            Err(e) => {
                let line = one_line(&e);
                log::error!("reload failed, the running policy set stays: {line}");
                self.status.update(|r| {
                    r.reloads += 1;
                    r.failures += 1;
                    r.last_reload = Some((now, false));
                    r.last_error = Some(line);
                });
            }
        }
    }

    /// Stops on `signal`: detaches when asked to, otherwise leaves the data path running.
    fn stop(&self, signal: &str) -> Result<(), AgentError> {
        let dir = self.options.layout.pin_dir.display();
        if !self.options.detach_on_exit {
            log::info!(
                "{signal}: stopping; the data path stays attached at {dir} and keeps forwarding"
            );
            return Ok(());
        }
        log::info!("{signal}: stopping and detaching the data path at {dir}");
        let writer = self.lock()?;
        let report = attach::detach(&writer)?;
        log::info!(
            "detached from {} ({} pins removed)",
            report.links.join(", "),
            report.pins
        );
        Ok(())
    }
}
