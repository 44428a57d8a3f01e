//! Helpers shared by the end-to-end tests of the built binary (route, agent and trace
//! tests): the CLI run inside the router namespace with a unique pin directory, the lab's
//! static configuration, a policy set the data path cannot hold, counter lookups in
//! `route stats --json`, and the "nothing left" check.
//!
//! The CLI runs in the router namespace through `nsenter --net=...`, not `ip netns exec`:
//! the latter also unshares the mount namespace and mounts a fresh /sys, so a bpffs
//! mounted and pinned there would vanish (and the data path with it) when the command
//! exits. nsenter switches the network namespace only; the pins land in the host's bpffs,
//! in a directory unique to the test.
#![expect(
    dead_code,
    reason = "each test binary uses its own subset of these helpers"
)]

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use pktpath_core::sys::netns::NetNs;
use pktpath_tests::{AddrGuard, BpffsGuard, PinGuard, RouterLab, SysctlGuard, require_root, run};
use serde_json::Value;

pub const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");
/// The service addresses both upstreams own (on their loopback) in the route tests.
pub const SVC4: &str = "10.9.0.1";
pub const SVC6: &str = "fd09::1";

/// The data path pinned at a unique directory; detached on drop if the test did not.
pub struct Attachment {
    pub router: String,
    pub pin: PinGuard,
    /// Environment variables every command gets.
    pub env: Vec<(&'static str, &'static str)>,
}

impl Attachment {
    pub fn new(lab: &RouterLab, label: &str) -> Self {
        Self {
            router: lab.router.name.clone(),
            pin: PinGuard::new(label),
            env: Vec::new(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        pktpath_core::route::datapath::attach::Layout::new(&self.pin.path).state_dir()
    }

    /// Runs `pktpath route --pin-dir DIR ARGS` inside the router's network namespace.
    pub fn route(&self, args: &[&str]) -> Output {
        let net = format!("--net=/run/netns/{}", self.router);
        let pin = self.pin.path.display().to_string();
        let mut full = vec![net.as_str(), PKTPATH, "route", "--pin-dir", &pin];
        full.extend_from_slice(args);
        Command::new("nsenter")
            .args(&full)
            .envs(self.env.iter().copied())
            .output()
            .expect("run nsenter (util-linux)")
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.route(args);
        assert!(
            out.status.success(),
            "pktpath route {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.ok(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// `route stats --json`.
    pub fn stats(&self) -> Value {
        self.json(&["stats"])
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.pin.path.exists() {
            let out = self.route(&["detach"]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: detach failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.state_dir());
        let _ = std::fs::remove_dir("/run/pktpath");
    }
}

/// A scratch directory for configuration files, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pktpath-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        Self(dir)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The static configuration of the lab: the router's three interfaces (ingress, plus
/// egress where listed in `egress`), next hops `up1`, `up2` and `client` by gateway
/// address (so the kernel resolves the MACs: bpf_redirect_neigh) and table `main`.
pub fn lab_config(lab: &RouterLab, egress: &[&str]) -> String {
    let (c, u1, u2) = (&lab.client_link.a, &lab.up1_link.a, &lab.up2_link.a);
    let e = |name: &str| egress.contains(&name);
    format!(
        r#"{{ "version": 1,
  "interfaces": [ {{ "name": "{c}", "egress": {} }}, {{ "name": "{u1}", "egress": {} }}, {{ "name": "{u2}", "egress": {} }} ],
  "next_hops": [
    {{ "name": "up1", "interface": "{u1}", "gateway4": "10.2.0.2", "gateway6": "fd02::2" }},
    {{ "name": "up2", "interface": "{u2}", "gateway4": "10.3.0.2", "gateway6": "fd03::2" }},
    {{ "name": "client", "interface": "{c}", "gateway4": "10.1.0.2", "gateway6": "fd01::2" }}
  ],
  "tables": [ {{ "name": "main", "id": 254 }} ] }}"#,
        e(c),
        e(u1),
        e(u2)
    )
}

/// A runtime configuration the data path cannot hold: one policy more than it has counter
/// slots for (the classifier itself takes any valid set of up to that many).
pub fn too_many_policies() -> String {
    let n = pktpath_common::route::MAX_POLICY_SLOTS as usize + 1;
    let policies: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"p{i}","priority":{},"match":{{}},"action":{{"type":"drop"}}}}"#,
                i + 1
            )
        })
        .collect();
    format!(
        "{{ \"version\": 1, \"policies\": [\n{}\n] }}\n",
        policies.join(",\n")
    )
}

pub fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The entry of policy `id` in `route stats --json`.
pub fn policy<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("policy {id} in {stats}"))
}

/// The entry of interface `name` in `route stats --json`.
pub fn iface<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("interface {name} in {stats}"))
}

/// A counter of an interface in `route stats --json` (`passed_packets`, ...).
pub fn iface_counter(stats: &Value, name: &str, counter: &str) -> u64 {
    iface(stats, name)[counter]
        .as_u64()
        .unwrap_or_else(|| panic!("{counter} of {name} in {stats}"))
}

/// A counter of the namespace's /proc/net/snmp (`Icmp`, `InEchos`) or, for names starting
/// with `Icmp6`/`Udp6`/..., of /proc/net/snmp6 (`Icmp6InEchos`).
pub fn snmp(ns: &NetNs, group: &str, name: &str) -> u64 {
    let v6 = group.ends_with('6');
    let file = if v6 { "snmp6" } else { "snmp" };
    let text = ns
        .run(|| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")))
        .expect("enter namespace")
        .expect("read snmp");
    if v6 {
        let key = format!("{group}{name}");
        return text
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(key.as_str())).then(|| w.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{key} in snmp6"));
    }
    let prefix = format!("{group}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("{group} {name} in snmp"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Echo requests the namespace received (IPv4 or IPv6).
pub fn in_echos(ns: &NetNs, v6: bool) -> u64 {
    if v6 {
        snmp(ns, "Icmp6", "InEchos")
    } else {
        snmp(ns, "Icmp", "InEchos")
    }
}

/// The TC hooks of `ifname` in namespace `ns` that still hold a program: TCX programs and
/// tc filters on either clsact hook, and the clsact qdisc itself (`"qdisc"`).
pub fn tc_hooks_in_use(ns: &RouterLab, ifname: &str) -> Vec<String> {
    let r = &ns.router.name;
    let mut left = Vec::new();
    for (dir, name) in [
        (TcAttachType::Ingress, "ingress"),
        (TcAttachType::Egress, "egress"),
    ] {
        let (_, progs) = ns
            .router
            .handle()
            .run(|| SchedClassifier::query_tcx(ifname, dir))
            .expect("enter router namespace")
            .unwrap_or_else(|e| panic!("query tcx on {ifname}: {e:?}"));
        if !progs.is_empty() {
            left.push(format!("tcx {name}"));
        }
        let filters = run::must("tc", &["-n", r, "filter", "show", "dev", ifname, name]);
        if !filters.trim().is_empty() {
            left.push(format!("filter {name}: {}", filters.trim()));
        }
    }
    let qdiscs = run::must("tc", &["-n", r, "qdisc", "show", "dev", ifname]);
    if qdiscs.contains("clsact") {
        left.push("qdisc clsact".into());
    }
    left
}

/// How many cls_bpf filters run `pktpath_tc` on hook `dir` of `ifname` in the router.
pub fn pktpath_filters(lab: &RouterLab, ifname: &str, dir: &str) -> usize {
    let out = run::must(
        "tc",
        &["-n", &lab.router.name, "filter", "show", "dev", ifname, dir],
    );
    out.lines().filter(|l| l.contains("pktpath_tc")).count()
}

/// A paced, numbered UDP stream from the client to `SVC4:port`, received in up1 (which must
/// own SVC4): a few thousand datagrams a second, far below what the veth backlogs hold, into
/// a receive buffer that rides out a starved receiver thread, so a loss is the router's.
pub struct Stream {
    stop_tx: Arc<AtomicBool>,
    stop_rx: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    sender: std::thread::JoinHandle<u64>,
    receiver: std::thread::JoinHandle<Vec<bool>>,
}

impl Stream {
    pub fn start(lab: &RouterLab, port: u16) -> Self {
        let dst = SocketAddr::new(SVC4.parse().unwrap(), port);
        let rx = lab
            .up1
            .handle()
            .run(|| UdpSocket::bind(dst))
            .expect("enter up1")
            .expect("bind in up1");
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        set_receive_buffer(&rx, 16 << 20);
        let tx = lab
            .client
            .handle()
            .run(|| UdpSocket::bind(SocketAddr::new(RouterLab::CLIENT4.parse().unwrap(), 0)))
            .expect("enter the client")
            .expect("bind in the client");
        let stop_tx = Arc::new(AtomicBool::new(false));
        let stop_rx = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let receiver = {
            let (stop, received) = (stop_rx.clone(), received.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::<bool>::new();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = rx.recv(&mut buf) else { continue };
                    assert_eq!(n, 8, "datagram arrived intact");
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                    if seen.len() <= seq {
                        seen.resize(seq + 1, false);
                    }
                    seen[seq] = true;
                    received.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        };
        let sender = {
            let stop = stop_tx.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..4 {
                        tx.send_to(&seq.to_be_bytes(), dst).expect("send");
                        seq += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                seq
            })
        };
        Self {
            stop_tx,
            stop_rx,
            received,
            sender,
            receiver,
        }
    }

    /// Waits up to 30 s until `n` datagrams arrived.
    #[track_caller]
    pub fn wait_for(&self, n: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} datagrams arrived",
                self.received.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending, waits for what was sent (up to 30 s), and returns how many datagrams
    /// were sent and the numbers of those that never arrived.
    pub fn stop(self) -> (u64, Vec<usize>) {
        self.stop_tx.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_rx.store(true, Ordering::Relaxed);
        let seen = self.receiver.join().unwrap();
        let missing = (0..sent as usize)
            .filter(|&s| !seen.get(s).copied().unwrap_or(false))
            .collect();
        (sent, missing)
    }
}

/// SO_RCVBUFFORCE (root may exceed net.core.rmem_max).
fn set_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the option value is a c_int of the size given, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// The router lab with the kernel's forwarding off in the router, so that only the data
/// path moves packets across it, and the service address SVC4 on up1's loopback (where
/// [`Stream`] sends). Fields drop in order: the lab and bpffs last.
pub struct DataPathOnlyLab {
    _guards: Vec<SysctlGuard>,
    _addr: AddrGuard,
    lab: RouterLab,
    _bpffs: BpffsGuard,
}

impl DataPathOnlyLab {
    pub fn new() -> Self {
        require_root();
        let bpffs = BpffsGuard::ensure();
        let lab = RouterLab::new();
        let r = lab.router.name.clone();
        Self {
            _guards: vec![
                SysctlGuard::new(&r, "net.ipv4.ip_forward", "0"),
                SysctlGuard::new(&r, "net.ipv6.conf.all.forwarding", "0"),
            ],
            _addr: AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC4}/32")),
            lab,
            _bpffs: bpffs,
        }
    }
}

impl std::ops::Deref for DataPathOnlyLab {
    type Target = RouterLab;

    fn deref(&self) -> &RouterLab {
        &self.lab
    }
}

/// Forwards the child's stderr lines to a channel.
pub fn stderr_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `pktpath ARGS` (a trace with a `--duration`) while `traffic` runs, once the trace
/// says it is tracing; its stdout once it ended (it must succeed). Both pipes are read while
/// it runs: a trace that fills one (64 KiB of JSON) would otherwise wait for it forever.
pub fn trace_while(args: &[&str], traffic: impl FnOnce()) -> String {
    use std::io::Read as _;
    let mut child = Command::new(PKTPATH)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pktpath trace");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout
            .read_to_string(&mut out)
            .expect("read the trace's stdout");
        out
    });
    let stderr = stderr_lines(child.stderr.take().unwrap());
    let banner = stderr
        .recv_timeout(Duration::from_secs(30))
        .expect("pktpath trace says something on stderr");
    assert!(banner.starts_with("pktpath: tracing"), "{banner}");
    traffic();
    let status = child.wait().expect("wait for pktpath trace");
    let notes: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "trace: {status}: {notes:?}");
    reader.join().expect("the trace's stdout")
}
