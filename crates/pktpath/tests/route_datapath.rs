//! `pktpath route attach / apply / stats / show / detach` end to end with real packets, in
//! both TC attach modes (TCX links, and netlink clsact + cls_bpf filters).
//!
//! A client – router – up1/up2 lab with forwarding DISABLED in the router namespace, so
//! every packet that crosses the router was carried by the eBPF data path. Both upstreams
//! own the same service addresses (10.9.0.1, fd09::1) on their loopback, so which one
//! receives a datagram shows where the router steered it. The CLI runs in the router's
//! network namespace (see common/mod.rs for why through nsenter).

mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::{Attachment, SVC4, SVC6, Scratch, expect, iface, in_echos, policy};
use pktpath_tests::{
    AddrGuard, BpffsGuard, ClsactGuard, RouterLab, SysctlGuard, require_root, run,
};
use serde_json::Value;

const CLIENT_B4: &str = "10.1.0.130";
const CLIENT_B6: &str = "fd01::8002";
const PORTS: [u16; 3] = [5000, 53, 9999];
const PAYLOAD: usize = 32;
const N: usize = 5;

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

#[test]
fn policies_steer_real_traffic_through_the_pinned_data_path_tcx() {
    steer_and_detach("tcx");
}

#[test]
fn policies_steer_real_traffic_through_the_pinned_data_path_netlink() {
    steer_and_detach("netlink");
}

/// The whole life cycle with `route attach --tc-mode MODE`.
fn steer_and_detach(mode: &str) {
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
    let scratch = Scratch::new(&format!("route-dp-{mode}"));
    let (to_client, to_up1, to_up2) = (&lab.client_link.a, &lab.up1_link.a, &lab.up2_link.a);
    // Netlink mode: a clsact qdisc someone else put on to-up2 must survive detach; the ones
    // attach adds (to-client, to-up1) must not.
    let _their_clsact = (mode == "netlink").then(|| ClsactGuard::new(r, to_up2));
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
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
    let first = scratch.write("first.json", &policies("up1", "up2", true, ""));
    let second = scratch.write(
        "second.json",
        &policies(
            "up2",
            "up1",
            false,
            r#"{ "id": "new-sctp", "priority": 45, "match": { "proto": "sctp" }, "action": { "type": "drop" } },"#,
        ),
    );

    let dp = Attachment::new(&lab, "route-dp");
    let listeners = Listeners::new(&lab);

    // An interface the namespace lacks: a clear error, and nothing is created.
    let missing = scratch.write(
        "missing.json",
        r#"{ "version": 1, "interfaces": [ { "name": "no-such-if0" } ] }"#,
    );
    let out = dp.route(&["attach", "--config", &missing, "--tc-mode", mode]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interface no-such-if0"), "{stderr}");
    assert!(
        !dp.pin.path.exists() && !dp.state_dir().exists(),
        "nothing left by a failed attach"
    );

    // Attach, then attach again (same mode, then auto): nothing changes.
    let report = dp.json(&["attach", "--config", &config, "--tc-mode", mode]);
    assert_eq!(report["attached"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["mode"], mode, "{report}");
    let hooks_before: Vec<_> = [to_client, to_up1, to_up2]
        .iter()
        .map(|i| common::tc_hooks_in_use(&lab, i))
        .collect();
    for args in [
        &["attach", "--config", &config, "--tc-mode", mode][..],
        &["attach", "--config", &config],
    ] {
        let again = dp.json(args);
        assert_eq!(again["attached"], serde_json::json!([]), "{again}");
        assert_eq!(again["unchanged"].as_array().unwrap().len(), 3, "{again}");
        assert_eq!(again["mode"], mode, "{again}");
    }
    let hooks_after: Vec<_> = [to_client, to_up1, to_up2]
        .iter()
        .map(|i| common::tc_hooks_in_use(&lab, i))
        .collect();
    assert_eq!(hooks_before, hooks_after, "a second attach changed TC");
    if mode == "netlink" {
        for i in [to_client, to_up1, to_up2] {
            assert_eq!(common::pktpath_filters(&lab, i, "ingress"), 1, "{i}");
        }
        // The other mode, forced, is refused while this one runs.
        let out = dp.route(&["attach", "--config", &config, "--tc-mode", "tcx"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("netlink mode, not tcx"), "{stderr}");
        // A filter that vanished (deleted here behind pktpath's back) is re-created by the
        // next attach; the others are left alone.
        run::must("tc", &["-n", r, "filter", "del", "dev", to_up1, "ingress"]);
        assert_eq!(common::pktpath_filters(&lab, to_up1, "ingress"), 0);
        let again = dp.json(&["attach", "--config", &config]);
        assert_eq!(
            again["attached"],
            serde_json::json!([format!("{to_up1}/ingress")]),
            "{again}"
        );
        for i in [to_client, to_up1, to_up2] {
            assert_eq!(common::pktpath_filters(&lab, i, "ingress"), 1, "{i}");
        }
    }

    // Another configuration over the running one is refused.
    let other = scratch.write(
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

    let echos = (
        in_echos(&lab.up1.handle(), false),
        in_echos(&lab.up2.handle(), false),
    );
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
        in_echos(&lab.up1.handle(), false),
        echos.0,
        "no echo request at up1"
    );
    assert_eq!(
        in_echos(&lab.up2.handle(), false),
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
    let bad = scratch.write(
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

    // A valid set the data path cannot hold: apply refuses it, `route check` (no data
    // path, no interfaces) with the same line and exit code, and the running set stays.
    let refused = scratch.write("refused.json", &common::too_many_policies());
    let applied = dp.route(&["apply", &refused]);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert_eq!(applied.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    let checked = std::process::Command::new(common::PKTPATH)
        .args(["route", "check", "--config", &config, &refused])
        .output()
        .expect("run pktpath route check");
    assert_eq!(checked.status.code(), applied.status.code());
    assert_eq!(String::from_utf8_lossy(&checked.stderr), stderr);
    send(&lab, RouterLab::CLIENT4, 5000);
    assert_eq!(
        listeners.drain(),
        expect(&[("up2/v4/5000", N)]),
        "old steering continues after a refused set"
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
    // Without proto the packet is an echo request; proto 0 is protocol 0, which no policy
    // matches; for IPv6, next header 0 is the hop-by-hop header, not a protocol.
    let echo = get(&format!("iif {to_client} from 10.1.0.2 to {SVC4}"));
    assert_eq!(echo["policy"], "icmp-up2", "{echo}");
    let zero = get(&format!("iif {to_client} from 10.1.0.2 to {SVC4} proto 0"));
    assert_eq!(
        (&zero["policy"], &zero["action"]),
        (&Value::Null, &"pass".into()),
        "{zero}"
    );
    let out = dp.route(&[
        "get", "iif", to_client, "from", "fd01::2", "to", SVC6, "proto", "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hop-by-hop"), "{stderr}");

    // Detach leaves nothing: no pins, no state, no TCX program, tc filter or clsact qdisc
    // it added on any router interface (a clsact it did not add stays), and (forwarding
    // being off) no packet crosses the router any more.
    let detached = dp.json(&["detach"]);
    assert_eq!(detached["links"].as_array().unwrap().len(), 3, "{detached}");
    assert_eq!(detached["mode"], mode, "{detached}");
    assert!(!dp.pin.path.exists(), "pin directory removed");
    assert!(!dp.state_dir().exists(), "state directory removed");
    for ifname in [to_client, to_up1, to_up2] {
        let want: Vec<String> = if mode == "netlink" && ifname == to_up2 {
            vec!["qdisc clsact".into()]
        } else {
            vec![]
        };
        assert_eq!(
            common::tc_hooks_in_use(&lab, ifname),
            want,
            "{ifname} after detach"
        );
    }
    if mode == "netlink" {
        assert_eq!(
            detached["clsact_removed"],
            serde_json::json!([to_client, to_up1]),
            "{detached}"
        );
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
