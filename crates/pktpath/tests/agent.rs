//! `pktpath agent` with the real components, in the client – router – up1/up2 lab: the
//! agent (the real binary) runs in the router's network namespace while traffic flows, a
//! real Prometheus server (Debian package `prometheus`) in the same namespace scrapes it,
//! and the test reads Prometheus' HTTP API; `promtool check metrics` lints the exposition.
//! Reloads are driven by editing the files (rename over, write in place) and by SIGHUP.
//!
//! Everything runs inside the router's namespace on 127.0.0.1 there (fixed ports are free
//! in a namespace of the test's own); the test's HTTP requests enter it too.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Attachment, DataPathOnlyLab, PKTPATH, SVC4, Scratch};
use pktpath_tests::{BpffsGuard, RouterLab, require_root, run};
use serde_json::Value;

const AGENT_PORT: u16 = 9471;
const PROMETHEUS_PORT: u16 = 9090;
const STREAM_PORT: u16 = 7100;

/// The lab with the data path's files and the service address on up1. Kernel forwarding is
/// off in the router: what crosses it was carried by the data path.
struct Lab {
    dp: Attachment,
    scratch: Scratch,
    lab: DataPathOnlyLab,
    config: String,
    runtime: String,
}

/// Policies: UDP to 7100 forwarded to up1 (`stream`), UDP to 5001 forwarded to up1
/// (`web`), UDP to 5002 dropped (`blocked`).
fn policies(extra: &str) -> String {
    format!(
        r#"{{ "version": 1, "policies": [
  {{ "id": "stream", "priority": 10, "match": {{ "proto": "udp", "dport": {STREAM_PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "web", "priority": 20, "match": {{ "proto": "udp", "dport": 5001 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "blocked", "priority": 30, "match": {{ "proto": "udp", "dport": 5002 }}, "action": {{ "type": "drop" }} }}{extra}
] }}
"#
    )
}

impl Lab {
    fn new(label: &str) -> Self {
        let lab = DataPathOnlyLab::new();
        let scratch = Scratch::new(&format!("agent-{label}"));
        let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
        let runtime = scratch.write("runtimeConfiguration.json", &policies(""));
        let dp = Attachment::new(&lab, label);
        Self {
            dp,
            scratch,
            lab,
            config,
            runtime,
        }
    }

    /// Starts `pktpath agent` in the router namespace; its stderr goes to a file.
    fn agent(&self, extra: &[&str]) -> Agent {
        let log = self.scratch.0.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let net = format!("--net=/run/netns/{}", self.lab.router.name);
        let pin = self.dp.pin.path.display().to_string();
        let listen = format!("127.0.0.1:{AGENT_PORT}");
        let mut args = vec![
            net.as_str(),
            PKTPATH,
            "agent",
            "--config",
            &self.config,
            "--runtime",
            &self.runtime,
            "--pin-dir",
            &pin,
            "--metrics-listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let child = Command::new("nsenter")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the agent's log"))
            .spawn()
            .expect("run nsenter (util-linux)");
        let agent = Agent {
            child: Some(child),
            log,
            router: self.lab.router.name.clone(),
        };
        agent.wait_ready();
        agent
    }

    /// Sends `n` UDP datagrams from the client to the service on `port`.
    fn send(&self, port: u16, n: usize) {
        let dst = format!("{SVC4}:{port}");
        run::udp(
            &self.lab.client,
            &format!("{}:0", RouterLab::CLIENT4),
            std::iter::repeat_n(dst.as_str(), n),
            b"pktpath agent test",
        );
    }
}

/// A GET of `path` on 127.0.0.1:`port` in namespace `ns`: (status code, body).
fn http_get(ns: &str, port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let ns = pktpath_core::sys::netns::NetNs::from_name(ns).expect("open the namespace");
    let stream = ns
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )
        })
        .expect("enter the namespace")
        .ok()?;
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Percent-encodes a PromQL query for a URL.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` (Debian package prometheus) accepts the exposition `body`.
#[track_caller]
fn promtool_accepts(l: &Lab, body: &str) {
    let exposition = l.scratch.write("metrics.txt", body);
    let lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&exposition).unwrap())
        .output()
        .expect("run promtool (Debian package prometheus)");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// Polls `f` every 100 ms until it returns Some, for up to `limit`; panics with `what`.
#[track_caller]
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The running agent; killed on drop if the test did not stop it.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    router: String,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.router, AGENT_PORT, path, None)
    }

    #[track_caller]
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for(Duration::from_secs(61), "the agent is ready", || {
            assert!(
                Instant::now() < deadline,
                "the agent is not ready after 60 s; its log:\n{}",
                self.log()
            );
            if let Some(child) = &self.child {
                let pid = child.id();
                assert!(
                    std::path::Path::new(&format!("/proc/{pid}")).exists(),
                    "the agent exited: {}",
                    self.log()
                );
            }
            self.get("/readyz").filter(|(c, _)| *c == 200)
        });
    }

    /// The value of a sample in /metrics (its name with labels, as printed).
    fn sample(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal the agent");
    }

    /// Sends `sig` and waits for the agent to exit; its exit code and log.
    fn stop(mut self, sig: libc::c_int) -> (Option<i32>, String) {
        self.signal(sig);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), self.log())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("agent log:\n{}", self.log());
        }
    }
}

/// A Prometheus server in the router's namespace scraping the agent every 500 ms, with its
/// configuration and data in a temporary directory; killed and removed on drop.
struct Prometheus {
    child: Child,
    router: String,
    _dir: Scratch,
}

impl Prometheus {
    fn start(router: &str) -> Self {
        let dir = Scratch::new("agent-prometheus");
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: pktpath\n    static_configs:\n      - targets: ['127.0.0.1:{AGENT_PORT}']\n"
            ),
        );
        let data = dir.0.join("data");
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{router}"))
            .arg("prometheus")
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian package prometheus; scripts/bootstrap.sh installs it)");
        let p = Self {
            child,
            router: router.to_owned(),
            _dir: dir,
        };
        wait_for(Duration::from_secs(60), "Prometheus is ready", || {
            http_get(&p.router, PROMETHEUS_PORT, "/-/ready", None).filter(|(c, _)| *c == 200)
        });
        p
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let Some((200, body)) = http_get(&self.router, PROMETHEUS_PORT, &path, None) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Whether the agent's target is up (scraped without error).
    fn target_up(&self) -> bool {
        self.query("up{job=\"pktpath\"}")
            .iter()
            .any(|r| r["value"][1] == "1")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent attaches and applies; traffic through the lab is counted; Prometheus scrapes
/// the agent and its per-policy counters equal `route stats`; promtool accepts the
/// exposition; SIGTERM leaves the data path forwarding; a restarted agent adopts it with
/// no counter lost; one with --detach-on-exit removes it on SIGTERM.
#[test]
fn prometheus_scrapes_counters_equal_to_route_stats_and_the_data_path_outlives_the_agent() {
    let l = Lab::new("agent-prom");
    // Netlink clsact here, TCX (probed) in the reload test: the agent adopts either.
    let agent = l.agent(&["--tc-mode", "netlink"]);
    assert!(
        agent.log().contains("attached at"),
        "attach logged: {}",
        agent.log()
    );
    l.send(5001, 50);
    l.send(5002, 30);
    let stats = l.dp.stats();
    assert_eq!(common::policy(&stats, "web")["packets"], 50, "{stats}");
    assert_eq!(common::policy(&stats, "blocked")["packets"], 30, "{stats}");

    // The exposition (Prometheus text format) passes promtool's lint.
    let (code, body) = agent.get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    promtool_accepts(&l, &body);
    for line in [
        "pktpath_policy_packets_total{id=\"web\",priority=\"20\"} 50",
        "pktpath_policy_packets_total{id=\"blocked\",priority=\"30\"} 30",
        "pktpath_attached 1",
        "pktpath_policies 3",
        "pktpath_reload_failures_total 0",
        "pktpath_last_reload_success 1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
    // The applied set's match shapes, as `route check` counts them.
    let check = l.dp.json(&["check", "--config", &l.config, &l.runtime]);
    let shapes = check["classifier"]["match_shapes"]
        .as_u64()
        .unwrap_or_else(|| panic!("match_shapes in route check: {check}"));
    assert!(shapes > 0, "{check}");
    let line = format!("pktpath_match_shapes {shapes}");
    assert!(
        body.lines().any(|l| l == line),
        "{line} in:
{body}"
    );
    assert!(body.contains("process_resident_memory_bytes "), "{body}");
    // OpenMetrics when asked for it, as Prometheus asks.
    let (_, open) = http_get(
        &l.lab.router.name,
        AGENT_PORT,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .expect("GET /metrics (OpenMetrics)");
    assert!(open.ends_with("# EOF\n"), "{open}");

    let prometheus = Prometheus::start(&l.lab.router.name);
    wait_for(
        Duration::from_secs(30),
        "Prometheus scrapes the agent",
        || prometheus.target_up().then_some(()),
    );
    let stats = l.dp.stats();
    for p in stats["policies"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        for (metric, field) in [
            ("pktpath_policy_packets_total", "packets"),
            ("pktpath_policy_bytes_total", "bytes"),
        ] {
            let want = p[field].as_u64().unwrap();
            let query = format!("{metric}{{id=\"{id}\",priority=\"{}\"}}", p["priority"]);
            wait_for(
                Duration::from_secs(30),
                &format!("Prometheus has {query} = {want}"),
                || {
                    let got = prometheus.query(&query);
                    (got.len() == 1
                        && got[0]["value"][1].as_str() == Some(want.to_string().as_str()))
                    .then_some(())
                },
            );
        }
    }
    let generation = stats["generation"].as_u64().unwrap();
    let got = prometheus.query("pktpath_generation");
    assert_eq!(got[0]["value"][1], generation.to_string(), "{got:?}");
    let web_if = l.lab.client_link.a.clone();
    let query =
        format!("pktpath_interface_packets_total{{interface=\"{web_if}\",outcome=\"forwarded\"}}");
    let forwarded = common::iface_counter(&stats, &web_if, "forwarded_packets");
    wait_for(Duration::from_secs(30), &query, || {
        let got = prometheus.query(&query);
        (got.len() == 1 && got[0]["value"][1].as_str() == Some(forwarded.to_string().as_str()))
            .then_some(())
    });
    drop(prometheus);

    // SIGTERM: the agent exits 0, the data path stays and keeps forwarding.
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(l.dp.pin.path.exists(), "pins stay after SIGTERM");
    l.send(5001, 10);
    let stats = l.dp.stats();
    assert_eq!(common::policy(&stats, "web")["packets"], 60, "{stats}");

    // A restart adopts it; no counter is lost.
    let agent = l.agent(&["--detach-on-exit"]);
    assert!(agent.log().contains("adopted"), "{}", agent.log());
    assert_eq!(
        agent.sample("pktpath_policy_packets_total{id=\"web\",priority=\"20\"}"),
        Some(60.0)
    );
    assert_eq!(
        agent.sample("pktpath_policy_packets_total{id=\"blocked\",priority=\"30\"}"),
        Some(30.0)
    );
    // --detach-on-exit: SIGINT removes the data path, nothing is left.
    let (code, log) = agent.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("detached from"), "{log}");
    assert!(!l.dp.pin.path.exists(), "pins removed: {log}");
    assert!(!l.dp.state_dir().exists(), "state removed");
    for link in [&l.lab.client_link.a, &l.lab.up1_link.a, &l.lab.up2_link.a] {
        let left = common::tc_hooks_in_use(&l.lab, link);
        assert!(left.is_empty(), "left on {link}: {left:?}");
    }
}

/// Reloads while a UDP stream crosses the router through the data path: an edit renamed
/// over the file gives a new generation; a bad edit written in place is logged with the
/// message `route apply` gives, counted, the agent becomes unready and the old set keeps
/// forwarding; fixing the file and SIGHUP recover; `route apply` works beside the agent;
/// no datagram of the stream is lost.
#[test]
fn reloads_swap_good_files_and_keep_the_running_set_on_bad_ones() {
    let l = Lab::new("agent-reload");
    let agent = l.agent(&[]);
    let generation = |a: &Agent| a.sample("pktpath_generation").map(|g| g as u64);
    let first = generation(&agent).expect("a generation");

    let stream = common::Stream::start(&l.lab, STREAM_PORT);
    stream.wait_for(50, "stream running before the reloads");

    // A good edit, written beside the file and renamed over it (as editors do).
    let extra = r#",
  { "id": "extra", "priority": 40, "match": { "proto": "udp", "dport": 6000 }, "action": { "type": "drop" } }"#;
    let tmp = l
        .scratch
        .write("runtimeConfiguration.json.tmp", &policies(extra));
    std::fs::rename(&tmp, &l.runtime).unwrap();
    let second = wait_for(Duration::from_secs(30), "a new generation", || {
        generation(&agent).filter(|&g| g != first)
    });
    assert_eq!(agent.sample("pktpath_policies"), Some(4.0));
    let log = agent.log();
    assert!(
        log.contains(&format!("{} changed: reloading", l.runtime)),
        "the reload names the file: {log}"
    );
    let ids: Vec<String> = l.dp.json(&["show"])["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["stream", "web", "blocked", "extra"]);

    // A bad edit, written in place: logged as `route apply` says it, counted, unready.
    let bad = policies(extra).replace("\"priority\": 40", "\"priority\": \"forty\"");
    let bad_copy = l.scratch.write("bad.json", &bad);
    std::fs::write(&l.runtime, &bad).unwrap();
    wait_for(Duration::from_secs(30), "the failure is counted", || {
        (agent.sample("pktpath_reload_failures_total") == Some(1.0)).then_some(())
    });
    let out = l.dp.route(&["apply", &bad_copy]);
    assert_eq!(out.status.code(), Some(1));
    let apply_err = String::from_utf8_lossy(&out.stderr).into_owned();
    let message = apply_err
        .trim()
        .strip_prefix("pktpath: ")
        .expect("route apply's error line")
        .replace(&bad_copy, &l.runtime);
    assert!(
        message.contains(&format!("{}:", l.runtime)) && message.contains("policies[3].priority"),
        "route apply names file, line, column and field: {message}"
    );
    let log = agent.log();
    assert!(
        log.lines()
            .any(|line| line.contains("reload failed") && line.ends_with(&message)),
        "the agent logs `{message}`:\n{log}"
    );
    assert_eq!(agent.sample("pktpath_last_reload_success"), Some(0.0));
    assert_eq!(generation(&agent), Some(second), "the running set stays");
    let (code, body) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("policies[3].priority"), "{body}");

    // `route apply` works beside the agent (it holds the lock only while it reloads).
    let good = l.scratch.write("good.json", &policies(extra));
    l.dp.ok(&["apply", &good, "--wait", "10"]);
    let third = generation(&agent).unwrap();
    assert!(third > second, "route apply flipped to {third}");

    // The file fixed, SIGHUP: applied, ready again.
    std::fs::write(&l.runtime, policies("")).unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(30), "the agent is ready again", || {
        agent.get("/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(agent.sample("pktpath_policies"), Some(3.0));
    assert!(generation(&agent).unwrap() > third);
    assert_eq!(agent.sample("pktpath_reload_failures_total"), Some(1.0));

    let (sent, missing) = stream.stop();
    assert!(
        missing.is_empty(),
        "{} of {sent} datagrams lost across the reloads: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let stats = l.dp.stats();
    assert!(
        common::policy(&stats, "stream")["packets"]
            .as_u64()
            .unwrap()
            >= sent,
        "the stream crossed the data path: {stats}"
    );
    eprintln!("{sent} datagrams across 4 generations and a refused file, none lost");
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}

/// A data path that cannot be attached stops the agent at start: exit 1, one line naming
/// what to fix, nothing left behind.
#[test]
fn an_agent_that_cannot_attach_exits_with_one_line() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let ns = pktpath_tests::NetnsGuard::new("agent-fail");
    let scratch = Scratch::new("agent-fail");
    let config = scratch.write(
        "configuration.json",
        r#"{ "version": 1, "interfaces": [ { "name": "nosuch0" } ], "next_hops": [], "tables": [] }"#,
    );
    let runtime = scratch.write(
        "runtimeConfiguration.json",
        "{ \"version\": 1, \"policies\": [] }",
    );
    let pin = pktpath_tests::PinGuard::new("agent-fail");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args([
            PKTPATH,
            "agent",
            "--config",
            &config,
            "--runtime",
            &runtime,
            "--pin-dir",
        ])
        .arg(&pin.path)
        .output()
        .expect("run nsenter");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pktpath: interface nosuch0 (named in") && last.contains("create it"),
        "{err}"
    );
    assert!(!pin.path.exists(), "no pins left");
    let layout = pktpath_core::route::datapath::attach::Layout::new(&pin.path);
    assert!(
        !layout.state_dir().exists() && !layout.lock_file().exists(),
        "no state left"
    );
}

/// The agent as an unprivileged user (nobody) holding exactly the capabilities of
/// dist/pktpath-agent.service as ambient ones, with its own state directory and a pin
/// directory under a bpffs directory made for it (as the unit's ExecStartPre= does): it
/// attaches in TCX mode, counts traffic, reloads an edit, and detaches on SIGTERM with
/// --detach-on-exit.
#[test]
fn the_agent_runs_unprivileged_with_the_units_capabilities() {
    const NOBODY: u32 = 65534;
    let l = Lab::new("agent-nobody");
    // The configuration files must be readable by nobody.
    std::fs::set_permissions(
        &l.scratch.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod scratch");
    let unit = include_str!("../../../dist/pktpath-agent.service");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let bin = pktpath_tests::run::SharedBinary::new(PKTPATH);
    let state =
        pktpath_tests::OwnedDirGuard::new(&std::env::temp_dir(), "agent-state", NOBODY, 0o700);
    let pin_parent = pktpath_tests::OwnedDirGuard::new(
        std::path::Path::new("/sys/fs/bpf"),
        "agent-nobody",
        NOBODY,
        0o700,
    );
    let pin = pin_parent.path.join("agent");
    let log = l.scratch.0.join("agent-nobody.log");
    let listen = format!("127.0.0.1:{AGENT_PORT}");
    let mut cmd = bin.command(NOBODY, &caps, Some(&l.lab.router.name));
    cmd.args(["agent", "--config", &l.config, "--runtime", &l.runtime])
        .arg("--pin-dir")
        .arg(&pin)
        .arg("--state-dir")
        .arg(&state.path)
        .args([
            "--tc-mode",
            "tcx",
            "--detach-on-exit",
            "--metrics-listen",
            &listen,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let agent = Agent {
        child: Some(cmd.spawn().expect("run setpriv (util-linux)")),
        log,
        router: l.lab.router.name.clone(),
    };
    agent.wait_ready();
    assert!(
        agent.log().contains("(tcx)"),
        "attached in TCX mode: {}",
        agent.log()
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pin).unwrap());
    assert_eq!(owner, NOBODY, "the pins are nobody's");
    l.send(5001, 20);
    assert_eq!(
        agent.sample("pktpath_policy_packets_total{id=\"web\",priority=\"20\"}"),
        Some(20.0)
    );
    let first = agent.sample("pktpath_generation").unwrap();
    let tmp = l.scratch.write(
        "runtimeConfiguration.json.tmp",
        &policies(
            r#",
  { "id": "extra", "priority": 40, "match": { "proto": "udp", "dport": 6000 }, "action": { "type": "drop" } }"#,
        ),
    );
    std::fs::rename(&tmp, &l.runtime).unwrap();
    wait_for(Duration::from_secs(30), "a new generation", || {
        agent
            .sample("pktpath_generation")
            .filter(|&g| g != first)
            .map(|_| ())
    });
    assert_eq!(agent.sample("pktpath_policies"), Some(4.0));
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("detached from"), "{log}");
    assert!(!pin.exists(), "pins removed: {log}");
    for link in [&l.lab.client_link.a, &l.lab.up1_link.a, &l.lab.up2_link.a] {
        let left = common::tc_hooks_in_use(&l.lab, link);
        assert!(left.is_empty(), "left on {link}: {left:?}");
    }
}

/// The inode number that names network namespace `ns` (the drop monitor's `netns` label).
fn netns_inode(ns: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{ns}")).expect("stat the namespace"),
    )
}

/// Whether process `pid` holds a BPF tracing program (prog_type 26 in its fds' fdinfo):
/// the drop monitor is the agent's only one.
fn holds_tracing_program(pid: u32) -> bool {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo");
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_to_string(fd.path())
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().eq(["prog_type:", "26"]))
    })
}

/// The kernel drop monitor: the agent attaches it at start; drops the test makes (the data
/// path's `drop` policy on the router's client-side interface, an nftables drop rule in
/// up1's namespace) appear in /metrics and in Prometheus by reason, interface and netns
/// with exactly the packets dropped; promtool accepts the exposition; the monitor is
/// detached when the agent stops.
#[test]
fn kernel_drops_by_reason_reach_prometheus_with_exactly_the_packets_dropped() {
    const NFT_PORT: u16 = 5003;
    const DP_DROPS: u64 = 30;
    const NFT_DROPS: u64 = 25;
    let l = Lab::new("agent-drops");
    let nft_policy = format!(
        r#",
  {{ "id": "to-nft", "priority": 40, "match": {{ "proto": "udp", "dport": {NFT_PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
    );
    std::fs::write(&l.runtime, policies(&nft_policy)).unwrap();
    let _nft = pktpath_tests::NftTableGuard::input(
        &l.lab.up1.name,
        &[&format!("udp dport {NFT_PORT} drop")],
    );
    let agent = l.agent(&[]);
    let pid = agent.child.as_ref().unwrap().id();
    assert!(
        agent.log().contains("kernel drop monitor attached"),
        "{}",
        agent.log()
    );
    assert!(holds_tracing_program(pid), "the agent holds the monitor");

    l.send(5002, DP_DROPS as usize);
    l.send(NFT_PORT, NFT_DROPS as usize);
    let stats = l.dp.stats();
    assert_eq!(common::policy(&stats, "blocked")["packets"], DP_DROPS);
    assert_eq!(common::policy(&stats, "to-nft")["packets"], NFT_DROPS);

    let router_ns = netns_inode(&l.lab.router.name);
    let up1_ns = netns_inode(&l.lab.up1.name);
    let dp_series = format!(
        "pktpath_kernel_drops_total{{reason=\"TC_INGRESS\",interface=\"{}\",netns=\"{router_ns}\",netns_name=\"{}\"}}",
        l.lab.client_link.a, l.lab.router.name
    );
    let nft_series = format!(
        "pktpath_kernel_drops_total{{reason=\"NETFILTER_DROP\",interface=\"{}\",netns=\"{up1_ns}\",netns_name=\"{}\"}}",
        l.lab.up1_link.b, l.lab.up1.name
    );
    // The last datagrams may still be on their way to up1's drop when the sender returns:
    // scraped until both series show their counts (they must never show more).
    let wanted = [(&dp_series, DP_DROPS), (&nft_series, NFT_DROPS)];
    let mut body = String::new();
    for _ in 0..50 {
        body = agent.get("/metrics").expect("GET /metrics").1;
        let shown = |(series, want): &(&String, u64)| {
            body.lines().any(|line| line == format!("{series} {want}"))
        };
        if wanted.iter().all(shown) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for line in body
        .lines()
        .filter(|l| l.starts_with("pktpath_kernel_drop"))
    {
        eprintln!("{line}");
    }
    for (series, want) in wanted {
        assert!(
            body.lines().any(|line| line == format!("{series} {want}")),
            "{series} {want} in:\n{body}"
        );
    }
    assert!(
        body.lines()
            .any(|line| line.starts_with("pktpath_kernel_drops_unkeyed_total ")),
        "{body}"
    );
    // The data path's own count of what it dropped there agrees.
    assert_eq!(
        common::iface_counter(&stats, &l.lab.client_link.a, "dropped_packets"),
        DP_DROPS
    );
    promtool_accepts(&l, &body);

    // Prometheus, filtered by the lab's namespaces: other traffic on the machine has other
    // namespaces.
    let prometheus = Prometheus::start(&l.lab.router.name);
    for (query, want) in [
        (
            format!(
                "sum(pktpath_kernel_drops_total{{reason=\"TC_INGRESS\",netns=\"{router_ns}\"}})"
            ),
            DP_DROPS,
        ),
        (
            format!(
                "sum(pktpath_kernel_drops_total{{reason=\"NETFILTER_DROP\",netns=\"{up1_ns}\"}})"
            ),
            NFT_DROPS,
        ),
    ] {
        wait_for(
            Duration::from_secs(30),
            &format!("Prometheus has {query} = {want}"),
            || {
                let got = prometheus.query(&query);
                (got.len() == 1 && got[0]["value"][1].as_str() == Some(want.to_string().as_str()))
                    .then_some(())
            },
        );
    }
    drop(prometheus);
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}

/// `--no-drop-monitor`: the agent loads no tracing program and exports no kernel drops.
#[test]
fn the_drop_monitor_off_switch_loads_nothing() {
    let l = Lab::new("agent-nodrops");
    let agent = l.agent(&["--no-drop-monitor"]);
    let pid = agent.child.as_ref().unwrap().id();
    assert!(
        agent.log().contains("kernel drop monitor off"),
        "{}",
        agent.log()
    );
    assert!(!holds_tracing_program(pid), "no tracing program loaded");
    l.send(5002, 5);
    let (_, body) = agent.get("/metrics").expect("GET /metrics");
    assert!(!body.contains("pktpath_kernel_drop"), "{body}");
    assert!(body.contains("pktpath_policy_packets_total"), "{body}");
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}

/// The names of the BPF programs process `pid` holds (the `prog_id` of its fds' fdinfo,
/// named by the kernel's list of loaded programs).
fn held_program_names(pid: u32) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo");
    let ids: Vec<u32> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| {
            let text = std::fs::read_to_string(fd.path()).ok()?;
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == "prog_id").then(|| v.trim().parse().ok())?
            })
        })
        .collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| p.name_as_str().unwrap_or("").to_owned())
        .collect()
}

/// One hop-latency histogram as /metrics shows it.
#[derive(Debug, Default)]
struct Histogram {
    count: u64,
    sum: f64,
    /// (le, cumulative count), in the order shown.
    buckets: Vec<(String, u64)>,
}

/// The `pktpath_hop_latency_seconds` histogram of (iif, oif) in `body` (all zero when
/// absent), whatever the order of the labels.
fn hop_histogram(body: &str, iif: &str, oif: &str) -> Histogram {
    let mut h = Histogram::default();
    for line in body.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
        let le = labels.iter().position(|l| l.starts_with("le=")).map(|i| {
            labels
                .remove(i)
                .trim_start_matches("le=")
                .trim_matches('"')
                .to_owned()
        });
        labels.sort_unstable();
        if labels != [format!("iif=\"{iif}\""), format!("oif=\"{oif}\"")] {
            continue;
        }
        match (name, le) {
            ("pktpath_hop_latency_seconds_count", None) => {
                h.count = value.parse().expect("a count")
            }
            ("pktpath_hop_latency_seconds_sum", None) => h.sum = value.parse().expect("a sum"),
            ("pktpath_hop_latency_seconds_bucket", Some(le)) => {
                h.buckets.push((le, value.parse().expect("a bucket count")))
            }
            _ => {}
        }
    }
    h
}

/// `--hop-latency`: the agent attaches `hop_rx` and `hop_tx`; datagrams the data path
/// forwards from the client to up1 are counted in the (client interface, up1 interface)
/// histogram, exactly as many as were sent (kernel forwarding is off in the router: only
/// the data path's policies forward, and only the test sends); its buckets are cumulative
/// and end with `+Inf` = `_count`; `_sum` lies within what the buckets allow; promtool
/// accepts the exposition and Prometheus reads the count.
#[test]
fn hop_latency_histograms_count_exactly_the_packets_forwarded() {
    const N: u64 = 200;
    const WARMUP: u64 = 5;
    let l = Lab::new("agent-hops");
    let agent = l.agent(&["--hop-latency"]);
    let pid = agent.child.as_ref().unwrap().id();
    assert!(
        agent.log().contains("hop-latency histograms attached"),
        "{}",
        agent.log()
    );
    let names = held_program_names(pid);
    for p in ["hop_rx", "hop_tx"] {
        assert!(names.iter().any(|n| n == p), "{p} in {names:?}");
    }
    let (iif, oif) = (l.lab.client_link.a.clone(), l.lab.up1_link.a.clone());
    let read = || {
        let body = agent.get("/metrics").expect("GET /metrics").1;
        (hop_histogram(&body, &iif, &oif), body)
    };
    // A few first, until they are counted: the router resolves up1's address meanwhile
    // (bpf_redirect_neigh queues the packets until then).
    l.send(STREAM_PORT, WARMUP as usize);
    let before = wait_for(
        Duration::from_secs(10),
        "the warm-up datagrams are counted",
        || Some(read().0).filter(|h| h.count == WARMUP),
    );

    l.send(STREAM_PORT, N as usize);
    let stats = l.dp.stats();
    assert_eq!(common::policy(&stats, "stream")["packets"], WARMUP + N);
    let after = wait_for(Duration::from_secs(10), "the datagrams are counted", || {
        Some(read().0).filter(|h| h.count >= WARMUP + N)
    });
    // Nothing more comes later.
    std::thread::sleep(Duration::from_millis(300));
    let (again, body) = read();
    assert_eq!(again.count, after.count, "{body}");
    for line in body
        .lines()
        .filter(|l| l.starts_with("pktpath_hop_latency") && l.contains(&format!("iif=\"{iif}\"")))
    {
        eprintln!("{line}");
    }
    assert_eq!(again.count - before.count, N, "{body}");

    // Cumulative buckets from 512 ns by powers of two, +Inf last and equal to the count.
    assert_eq!(again.buckets.len(), 25, "{:?}", again.buckets);
    assert_eq!(
        again.buckets.last().unwrap(),
        &("+Inf".to_owned(), again.count)
    );
    assert!(
        again.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{:?}",
        again.buckets
    );
    let bounds: Vec<f64> = again
        .buckets
        .iter()
        .map(|(le, _)| {
            if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            }
        })
        .collect();
    assert_eq!(bounds[0], 512e-9, "{:?}", again.buckets);
    assert!(
        (1..24).all(|i| bounds[i] == 2.0 * bounds[i - 1]),
        "{:?}",
        again.buckets
    );
    // The sum of the N latencies lies between what their buckets' bounds allow.
    let (mut low, mut high) = (0.0, 0.0);
    for i in 0..bounds.len() {
        let n = |h: &Histogram| {
            h.buckets.get(i).map_or(0, |b| b.1)
                - if i == 0 {
                    0
                } else {
                    h.buckets.get(i - 1).map_or(0, |b| b.1)
                }
        };
        let k = (n(&again) - n(&before)) as f64;
        if k > 0.0 {
            low += k * if i == 0 { 0.0 } else { bounds[i - 1] };
            high += k * bounds[i];
        }
    }
    let sum = again.sum - before.sum;
    assert!(
        sum > 0.0 && sum >= low * 0.999 && sum <= high * 1.001,
        "sum {sum} s of {N} latencies, buckets allow {low}..{high}"
    );
    assert!(sum / (N as f64) < 0.1, "mean {} s per hop", sum / N as f64);
    promtool_accepts(&l, &body);

    let prometheus = Prometheus::start(&l.lab.router.name);
    let query = format!("pktpath_hop_latency_seconds_count{{iif=\"{iif}\",oif=\"{oif}\"}}");
    wait_for(
        Duration::from_secs(30),
        &format!("Prometheus has {query} = {}", again.count),
        || {
            let got = prometheus.query(&query);
            (got.len() == 1
                && got[0]["value"][1].as_str() == Some(again.count.to_string().as_str()))
            .then_some(())
        },
    );
    drop(prometheus);
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}

/// Without `--hop-latency` the agent holds no hop-latency program (it does hold the drop
/// monitor's, which the same look finds) and exports no hop-latency metric, while the data
/// path forwards.
#[test]
fn hop_latency_is_off_by_default() {
    let l = Lab::new("agent-nohops");
    let agent = l.agent(&[]);
    let pid = agent.child.as_ref().unwrap().id();
    let names = held_program_names(pid);
    assert!(
        names.iter().any(|n| n == "drops_kfree_skb"),
        "the look finds the drop monitor's program: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("hop_")),
        "no hop-latency program: {names:?}"
    );
    l.send(STREAM_PORT, 5);
    let stats = l.dp.stats();
    assert_eq!(common::policy(&stats, "stream")["packets"], 5);
    let (_, body) = agent.get("/metrics").expect("GET /metrics");
    assert!(!body.contains("pktpath_hop_latency"), "{body}");
    assert!(body.contains("pktpath_policy_packets_total"), "{body}");
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}

/// `--hop-latency` measures the kernel's own forwarding too: with forwarding on in the
/// router, datagrams no policy matches (the data path passes them to the stack) to up1's
/// address are forwarded by the kernel (`ip_forward`, then `dev_queue_xmit`), and exactly
/// as many are counted in the (client interface, up1 interface) histogram.
#[test]
fn hop_latency_counts_the_kernels_own_forwarding_too() {
    const N: u64 = 100;
    const WARMUP: u64 = 5;
    let l = Lab::new("agent-hops-kernel");
    // Dropped before the lab, which sets forwarding off again and then back.
    let _forwarding =
        pktpath_tests::SysctlGuard::new(&l.lab.router.name, "net.ipv4.ip_forward", "1");
    let agent = l.agent(&["--hop-latency"]);
    let (iif, oif) = (l.lab.client_link.a.clone(), l.lab.up1_link.a.clone());
    let count = || {
        let body = agent.get("/metrics").expect("GET /metrics").1;
        hop_histogram(&body, &iif, &oif).count
    };
    let send = |n: u64| {
        let dst = format!("{}:6000", RouterLab::UP1_4);
        run::udp(
            &l.lab.client,
            &format!("{}:0", RouterLab::CLIENT4),
            std::iter::repeat_n(dst.as_str(), n as usize),
            b"pktpath agent test",
        );
    };
    // The router resolves up1's address meanwhile (the kernel queues the packets).
    send(WARMUP);
    wait_for(
        Duration::from_secs(10),
        "the warm-up datagrams are counted",
        || (count() == WARMUP).then_some(()),
    );
    send(N);
    wait_for(Duration::from_secs(10), "the datagrams are counted", || {
        (count() >= WARMUP + N).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), WARMUP + N);
    // The data path passed them to the kernel: no policy matches.
    let stats = l.dp.stats();
    assert!(
        common::iface_counter(&stats, &iif, "passed_packets") >= WARMUP + N,
        "{stats}"
    );
    let (code, log) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
}
