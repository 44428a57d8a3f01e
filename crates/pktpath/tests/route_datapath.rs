//! `pktpath route attach / apply / stats / show / detach` end to end with real packets.
//!
//! A client – router – up1/up2 lab with forwarding DISABLED in the router namespace, so
//! every packet that crosses the router was carried by the eBPF data path. Both upstreams
//! own the same service addresses (10.9.0.1, fd09::1) on their loopback, so which one
//! receives a datagram shows where the router steered it.
//!
//! The CLI runs in the router namespace through `nsenter --net=...`, not `ip netns exec`:
//! the latter also unshares the mount namespace and mounts a fresh /sys, so a bpffs
//! mounted and pinned there would vanish (and the data path with it) when the command
//! exits. nsenter switches the network namespace only; the pins land in the host's bpffs,
//! in a directory unique to this test.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};
use pktpath_core::sys::netns::NetNs;
use pktpath_tests::{AddrGuard, BpffsGuard, PinGuard, RouterLab, SysctlGuard, require_root, run};
use serde_json::Value;

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");
const SVC4: &str = "10.9.0.1";
const SVC6: &str = "fd09::1";
const CLIENT_B4: &str = "10.1.0.130";
const CLIENT_B6: &str = "fd01::8002";
const PORTS: [u16; 3] = [5000, 53, 9999];
const PAYLOAD: usize = 32;
const N: usize = 5;

/// The data path pinned at a unique directory; detached on drop if the test did not.
struct Attachment {
    router: String,
    pin: PinGuard,
}

impl Attachment {
    fn state_dir(&self) -> PathBuf {
        let escaped = self
            .pin
            .path
            .display()
            .to_string()
            .trim_matches('/')
            .replace('/', "-");
        Path::new("/run/pktpath").join(escaped)
    }

    /// Runs `pktpath route --pin-dir DIR ARGS` inside the router's network namespace.
    fn route(&self, args: &[&str]) -> Output {
        let net = format!("--net=/run/netns/{}", self.router);
        let pin = self.pin.path.display().to_string();
        let mut full = vec![net.as_str(), PKTPATH, "route", "--pin-dir", &pin];
        full.extend_from_slice(args);
        Command::new("nsenter")
            .args(&full)
            .output()
            .expect("run nsenter (util-linux)")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
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
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.ok(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
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

/// UDP listeners on the service addresses in both upstreams.
struct Listeners {
    sockets: BTreeMap<(&'static str, bool, u16), UdpSocket>,
}

impl Listeners {
    fn new(lab: &RouterLab) -> Self {
        let mut sockets = BTreeMap::new();
        for (name, ns) in [("up1", &lab.up1), ("up2", &lab.up2)] {
            for v6 in [false, true] {
                for port in PORTS {
                    let addr: IpAddr = if v6 { SVC6 } else { SVC4 }.parse().unwrap();
                    let sock = ns
                        .handle()
                        .run(|| UdpSocket::bind(SocketAddr::new(addr, port)))
                        .expect("enter upstream namespace")
                        .unwrap_or_else(|e| panic!("bind {addr}:{port} in {name}: {e}"));
                    sock.set_nonblocking(true).unwrap();
                    sockets.insert((name, v6, port), sock);
                }
            }
        }
        Self { sockets }
    }

    /// Datagrams waiting on each socket (drained after a moment for stragglers), keyed
    /// `up1/v4/5000`.
    fn drain(&self) -> BTreeMap<String, usize> {
        std::thread::sleep(Duration::from_millis(300));
        let mut out = BTreeMap::new();
        let mut buf = [0u8; 2048];
        for ((name, v6, port), sock) in &self.sockets {
            let mut n = 0;
            while let Ok(len) = sock.recv(&mut buf) {
                assert_eq!(len, PAYLOAD, "datagram arrived intact");
                n += 1;
            }
            if n > 0 {
                out.insert(
                    format!("{name}/{}/{port}", if *v6 { "v6" } else { "v4" }),
                    n,
                );
            }
        }
        out
    }
}

/// Sends `N` datagrams of `PAYLOAD` bytes from `src` (in the client namespace) to the
/// service address of its family on `port`.
fn send(lab: &RouterLab, src: &str, port: u16) {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = if src.is_ipv4() { SVC4 } else { SVC6 }.parse().unwrap();
    let sock = lab
        .client
        .handle()
        .run(|| UdpSocket::bind(SocketAddr::new(src, 0)))
        .expect("enter client namespace")
        .unwrap_or_else(|e| panic!("bind {src} in the client: {e}"));
    for _ in 0..N {
        sock.send_to(&[0x5a; PAYLOAD], SocketAddr::new(dst, port))
            .unwrap_or_else(|e| panic!("send {src} -> {dst}:{port}: {e}"));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `Icmp: InEchos` of a namespace.
fn in_echos(ns: &NetNs) -> u64 {
    let snmp = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("enter namespace")
        .expect("read snmp");
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn policy<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("policy {id} in {stats}"))
}

fn iface<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("interface {name} in {stats}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn policies_steer_real_traffic_through_the_pinned_data_path() {
    require_root();
    // Declared first, so dropped last: after detach and the pin directory's guard.
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let r = lab.router.name.as_str();
    let _no_forwarding = [
        SysctlGuard::new(r, "net.ipv4.ip_forward", "0"),
        SysctlGuard::new(r, "net.ipv6.conf.all.forwarding", "0"),
    ];
    let _addrs = [
        AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC4}/32")),
        AddrGuard::new(&lab.up2.name, "lo", &format!("{SVC4}/32")),
        AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC6}/128")),
        AddrGuard::new(&lab.up2.name, "lo", &format!("{SVC6}/128")),
        AddrGuard::new(
            &lab.client.name,
            &lab.client_link.b,
            &format!("{CLIENT_B4}/24"),
        ),
        AddrGuard::new(
            &lab.client.name,
            &lab.client_link.b,
            &format!("{CLIENT_B6}/64"),
        ),
    ];
    let scratch =
        Scratch(std::env::temp_dir().join(format!("pktpath-route-dp-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let (to_client, to_up1, to_up2) = (&lab.client_link.a, &lab.up1_link.a, &lab.up2_link.a);
    let config = write(
        &scratch.0,
        "configuration.json",
        &format!(
            r#"{{ "version": 1,
  "interfaces": [ {{ "name": "{to_client}" }}, {{ "name": "{to_up1}" }}, {{ "name": "{to_up2}" }} ],
  "next_hops": [
    {{ "name": "up1", "interface": "{to_up1}", "gateway4": "10.2.0.2", "gateway6": "fd02::2" }},
    {{ "name": "up2", "interface": "{to_up2}", "gateway4": "10.3.0.2", "gateway6": "fd03::2" }},
    {{ "name": "client", "interface": "{to_client}", "gateway4": "10.1.0.2", "gateway6": "fd01::2" }}
  ] }}"#
        ),
    );
    let policies = |udp_to: &str, dns_to: &str, src_b4: bool, extra: &str| {
        let src_b4 = if src_b4 {
            r#"{ "id": "src-b-v4", "priority": 10, "match": { "src": "10.1.0.128/25", "proto": "udp" }, "action": { "type": "forward", "next_hop": "up2" } },"#
        } else {
            ""
        };
        format!(
            r#"{{ "version": 1, "policies": [
  {{ "id": "drop-9999", "priority": 5, "match": {{ "proto": "udp", "dport": 9999 }}, "action": {{ "type": "drop" }} }},
  {src_b4}
  {{ "id": "src-b-v6", "priority": 11, "match": {{ "src": "fd01::8000/113", "proto": "udp" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {{ "id": "dns", "priority": 20, "match": {{ "proto": "udp", "dport": 53 }}, "action": {{ "type": "forward", "next_hop": "{dns_to}" }} }},
  {{ "id": "udp", "priority": 30, "match": {{ "iif": "{to_client}", "proto": "udp" }}, "action": {{ "type": "forward", "next_hop": "{udp_to}" }} }},
  {{ "id": "icmp-up2", "priority": 40, "match": {{ "iif": "{to_client}", "proto": "icmp" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {extra}
  {{ "id": "icmp-back", "priority": 50, "match": {{ "dst": "10.1.0.2", "proto": "icmp" }}, "action": {{ "type": "forward", "next_hop": "client" }} }}
] }}"#
        )
    };
    let first = write(&scratch.0, "first.json", &policies("up1", "up2", true, ""));
    let second = write(
        &scratch.0,
        "second.json",
        &policies(
            "up2",
            "up1",
            false,
            r#"{ "id": "new-sctp", "priority": 45, "match": { "proto": "sctp" }, "action": { "type": "drop" } },"#,
        ),
    );

    let dp = Attachment {
        router: lab.router.name.clone(),
        pin: PinGuard::new("route-dp"),
    };
    let listeners = Listeners::new(&lab);

    // An interface the namespace lacks: a clear error, and nothing is created.
    let missing = write(
        &scratch.0,
        "missing.json",
        r#"{ "version": 1, "interfaces": [ { "name": "no-such-if0" } ] }"#,
    );
    let out = dp.route(&["attach", "--config", &missing]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interface no-such-if0"), "{stderr}");
    assert!(
        !dp.pin.path.exists() && !dp.state_dir().exists(),
        "nothing left by a failed attach"
    );

    // Attach, then attach again: nothing changes.
    let report = dp.json(&["attach", "--config", &config]);
    assert_eq!(report["attached"].as_array().unwrap().len(), 3, "{report}");
    let again = dp.json(&["attach", "--config", &config]);
    assert_eq!(again["attached"], serde_json::json!([]), "{again}");
    assert_eq!(again["unchanged"].as_array().unwrap().len(), 3, "{again}");

    // Another configuration over the running one is refused.
    let other = write(
        &scratch.0,
        "other.json",
        &format!(r#"{{ "version": 1, "interfaces": [ {{ "name": "{to_client}" }} ] }}"#),
    );
    let out = dp.route(&["attach", "--config", &other]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("different configuration"), "{stderr}");

    // Before any policy, every packet passes to the router's stack, which does not
    // forward: nothing arrives upstream.
    send(&lab, RouterLab::CLIENT4, 5000);
    assert_eq!(listeners.drain(), expect(&[]), "forwarding is off");

    let applied = dp.json(&["apply", &first]);
    assert_eq!(applied["applied"]["policies"], 7, "{applied}");

    let echos = (in_echos(&lab.up1.handle()), in_echos(&lab.up2.handle()));
    for (src_a, src_b, fam) in [
        (RouterLab::CLIENT4, CLIENT_B4, "v4"),
        (RouterLab::CLIENT6, CLIENT_B6, "v6"),
    ] {
        send(&lab, src_a, 5000); // udp -> up1
        send(&lab, src_a, 53); // dns -> up2
        send(&lab, src_b, 5000); // source prefix -> up2
        send(&lab, src_a, 9999); // dropped
        let got = listeners.drain();
        let want = expect(&[
            (&format!("up1/{fam}/5000"), N),
            (&format!("up2/{fam}/53"), N),
            (&format!("up2/{fam}/5000"), N),
        ]);
        assert_eq!(got, want, "{fam} steering by port, source prefix, drop");
    }
    // Protocol: ICMP goes to up2 only, and replies come back through the data path.
    assert_eq!(
        run::ping(&lab.client.name, SVC4, 3),
        3,
        "ping through the fast path"
    );
    assert_eq!(
        in_echos(&lab.up1.handle()),
        echos.0,
        "no echo request at up1"
    );
    assert_eq!(
        in_echos(&lab.up2.handle()),
        echos.1 + 3,
        "echo requests at up2"
    );

    let stats = dp.json(&["stats"]);
    let n = N as u64;
    let v4_len = (14 + 20 + 8 + PAYLOAD) as u64;
    let v6_len = (14 + 40 + 8 + PAYLOAD) as u64;
    for (id, packets, bytes) in [
        ("drop-9999", 2 * n, n * (v4_len + v6_len)),
        ("src-b-v4", n, n * v4_len),
        ("src-b-v6", n, n * v6_len),
        ("dns", 2 * n, n * (v4_len + v6_len)),
        ("udp", 2 * n, n * (v4_len + v6_len)),
        ("icmp-up2", 3, 3 * (14 + 84)),
        ("icmp-back", 3, 3 * (14 + 84)),
    ] {
        let p = policy(&stats, id);
        assert_eq!(p["packets"], packets, "{id}: {p}");
        assert_eq!(p["bytes"], bytes, "{id}: {p}");
    }
    let ids: Vec<&str> = stats["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "drop-9999",
            "src-b-v4",
            "src-b-v6",
            "dns",
            "udp",
            "icmp-up2",
            "icmp-back"
        ],
        "priority order"
    );
    let client_if = iface(&stats, to_client);
    assert_eq!(client_if["dropped_packets"], 2 * n, "{client_if}");
    assert_eq!(client_if["forwarded_packets"], 6 * n + 3, "{client_if}");
    assert_eq!(
        iface(&stats, to_up2)["forwarded_packets"],
        3,
        "echo replies"
    );
    assert_eq!(iface(&stats, to_up1)["forwarded_packets"], 0);
    let text = dp.ok(&["stats"]);
    assert!(
        text.contains("drop-9999") && text.contains("FORWARDED"),
        "{text}"
    );

    // Dry run: says what would change, changes nothing.
    let dry = dp.json(&["apply", &second, "--dry-run"]);
    let ids_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.get("id")
                    .or_else(|| p["before"].get("id"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids_of(&dry["changes"]["added"]), ["new-sctp"], "{dry}");
    assert_eq!(ids_of(&dry["changes"]["removed"]), ["src-b-v4"], "{dry}");
    assert_eq!(ids_of(&dry["changes"]["changed"]), ["dns", "udp"], "{dry}");
    send(&lab, RouterLab::CLIENT4, 5000);
    assert_eq!(
        listeners.drain(),
        expect(&[("up1/v4/5000", N)]),
        "dry run applied nothing"
    );

    // The new set swaps the steering; surviving policies keep counting.
    dp.json(&["apply", &second]);
    send(&lab, RouterLab::CLIENT4, 5000);
    send(&lab, RouterLab::CLIENT6, 53);
    assert_eq!(
        listeners.drain(),
        expect(&[("up2/v4/5000", N), ("up1/v6/53", N)]),
        "steering after the second apply"
    );
    let stats = dp.json(&["stats"]);
    assert_eq!(policy(&stats, "udp")["packets"], 4 * n, "udp kept counting");
    assert_eq!(policy(&stats, "dns")["packets"], 3 * n, "dns kept counting");
    assert_eq!(
        policy(&stats, "new-sctp")["packets"],
        0,
        "a new policy starts at 0"
    );
    let show = dp.json(&["show"]);
    assert_eq!(show["policies"].as_array().unwrap().len(), 7, "{show}");

    // A bad file is rejected with its line; the running set stays and keeps steering.
    let bad = write(
        &scratch.0,
        "bad.json",
        "{\n  \"version\": 1,\n  \"policies\": [\n    { \"id\": \"x\", \"priority\": 1, \"match\": {}, \"action\": { \"type\": \"forward\", \"next_hop\": \"nowhere\" } }\n  ]\n}\n",
    );
    let out = dp.route(&["apply", &bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("pktpath: {bad}:4:")),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere"), "{stderr}");
    send(&lab, RouterLab::CLIENT4, 5000);
    assert_eq!(
        listeners.drain(),
        expect(&[("up2/v4/5000", N)]),
        "old steering continues"
    );
    assert_eq!(dp.json(&["show"])["policies"], show["policies"]);

    // `route get` agrees with where the real packets went under the running set.
    let get = |words: &str| {
        dp.json(&[&["get"], words.split(' ').collect::<Vec<_>>().as_slice()].concat())
    };
    let udp = get(&format!(
        "iif {to_client} from 10.1.0.2 to {SVC4} proto udp dport 5000"
    ));
    assert_eq!(udp["policy"], "udp", "{udp}");
    assert_eq!(udp["action"], "forward", "{udp}");
    assert_eq!(udp["egress"], to_up2.as_str(), "{udp}");
    assert_eq!(udp["next_hop"], "up2", "{udp}");
    assert_eq!(udp["verdict"], "redirect", "{udp}");
    assert_eq!(udp["rewritten"]["ttl"], 63, "{udp}");
    let dns6 = get(&format!(
        "iif {to_client} from fd01::2 to {SVC6} proto udp dport 53"
    ));
    assert_eq!(
        (
            &dns6["policy"],
            &dns6["egress"],
            &dns6["next_hop"],
            &dns6["verdict"]
        ),
        (
            &"dns".into(),
            &to_up1.as_str().into(),
            &"up1".into(),
            &"redirect".into()
        ),
        "{dns6}"
    );
    let dropped = get(&format!(
        "iif {to_client} from 10.1.0.2 to {SVC4} proto udp dport 9999"
    ));
    assert_eq!(
        (
            &dropped["policy"],
            &dropped["action"],
            &dropped["verdict"],
            &dropped["egress"]
        ),
        (
            &"drop-9999".into(),
            &"drop".into(),
            &"drop".into(),
            &Value::Null
        ),
        "{dropped}"
    );
    let none = get(&format!(
        "iif {to_up1} from 10.2.0.2 to {SVC4} proto udp dport 5000"
    ));
    assert_eq!(
        (
            &none["policy"],
            &none["action"],
            &none["verdict"],
            &none["next_hop"]
        ),
        (&Value::Null, &"pass".into(), &"pass".into(), &Value::Null),
        "{none}"
    );
    let text = dp.ok(&[
        "get", "iif", to_client, "from", CLIENT_B4, "to", SVC4, "proto", "udp",
    ]);
    assert!(
        text.starts_with("policy udp (priority 30) action forward"),
        "{text}"
    );
    let out = dp.route(&["get", "iif", to_client, "from", "10.1.0.2"]);
    assert_eq!(out.status.code(), Some(1), "incomplete get is an error");

    // Detach leaves nothing: no pins, no state, no TCX program on any router interface,
    // and (forwarding being off) no packet crosses the router any more.
    let detached = dp.json(&["detach"]);
    assert_eq!(detached["links"].as_array().unwrap().len(), 3, "{detached}");
    assert!(!dp.pin.path.exists(), "pin directory removed");
    assert!(!dp.state_dir().exists(), "state directory removed");
    for ifname in [to_client, to_up1, to_up2] {
        for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = lab
                .router
                .handle()
                .run(|| SchedClassifier::query_tcx(ifname, dir))
                .expect("enter router namespace")
                .unwrap_or_else(|e| panic!("query tcx on {ifname}: {e:?}"));
            assert!(progs.is_empty(), "{ifname} {dir:?} still has TCX programs");
        }
    }
    send(&lab, RouterLab::CLIENT4, 5000);
    assert_eq!(
        listeners.drain(),
        expect(&[]),
        "nothing forwarded after detach"
    );
    let out = dp.route(&["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no data path is attached"),
        "{out:?}"
    );
}
