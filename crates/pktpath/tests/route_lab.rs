//! The fast path in the client – router – up1/up2 lab, with the traffic a router owes its
//! users: a TCP transfer arriving intact, DSCP and mark steering, policy swaps under a
//! running stream, TTL expiry and oversize packets answered by the stack, and a next hop
//! whose neighbour entry is missing.
//!
//! Unless a test says otherwise forwarding is DISABLED in the router namespace, so whatever
//! crosses the router was carried by the eBPF data path. Both upstreams own the service
//! addresses 10.9.0.1 and fd09::1, so which upstream receives shows where the router
//! steered. Replies to the client go back through the data path too (policies `back-v4`
//! and `back-v6`). The CLI runs in the router namespace (see common/mod.rs).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use common::{Attachment, SVC4, SVC6, Scratch, Stream, iface_counter, in_echos, policy};
use pktpath_core::sys::netns::NetNs;
use pktpath_tests::{
    AddrGuard, BpffsGuard, NetnsGuard, RouteGuard, RouterLab, SysctlGuard, require_root, run,
};
use serde_json::Value;

/// Policies sending replies (anything addressed to the client) back to it.
const BACK: &str = r#"
  { "id": "back-v4", "priority": 900, "match": { "dst": "10.1.0.2" }, "action": { "type": "forward", "next_hop": "client" } },
  { "id": "back-v6", "priority": 901, "match": { "dst": "fd01::2" }, "action": { "type": "forward", "next_hop": "client" } }"#;

/// The lab with the data path attached. Fields drop in order: detach first, the lab and
/// bpffs last.
struct Lab {
    dp: Attachment,
    scratch: Scratch,
    _routes: Vec<RouteGuard>,
    _guards: Vec<SysctlGuard>,
    _addrs: Vec<AddrGuard>,
    lab: RouterLab,
    _bpffs: BpffsGuard,
}

struct Setup<'a> {
    label: &'a str,
    /// Leave the kernel's forwarding on in the router (the stack must answer).
    forwarding: bool,
    /// Attach at egress of to-up1 too.
    egress_up1: bool,
    /// Attach at egress of to-up2 too.
    egress_up2: bool,
    /// Attach at egress of to-client too.
    egress_client: bool,
    /// Routes to the service addresses in the router (via up1), for the stack or a table
    /// lookup.
    service_routes: bool,
    /// Applied before attach (MTU changes, ...).
    before_attach: &'a dyn Fn(&RouterLab),
    /// Routing tables configuration.json names besides main, as `{ "name", "id" }` JSON.
    extra_tables: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            label: "lab",
            forwarding: false,
            egress_up1: false,
            egress_up2: false,
            egress_client: false,
            service_routes: false,
            before_attach: &|_| {},
            extra_tables: "",
        }
    }
}

impl Lab {
    fn new(s: Setup) -> Self {
        require_root();
        let bpffs = BpffsGuard::ensure();
        let lab = RouterLab::new();
        let r = lab.router.name.clone();
        let addrs = vec![
            AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC4}/32")),
            AddrGuard::new(&lab.up2.name, "lo", &format!("{SVC4}/32")),
            AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC6}/128")),
            AddrGuard::new(&lab.up2.name, "lo", &format!("{SVC6}/128")),
        ];
        let mut guards = Vec::new();
        if !s.forwarding {
            guards.push(SysctlGuard::new(&r, "net.ipv4.ip_forward", "0"));
            guards.push(SysctlGuard::new(&r, "net.ipv6.conf.all.forwarding", "0"));
        }
        let routes = if s.service_routes {
            vec![
                RouteGuard::new(&r, &[SVC4, "via", RouterLab::UP1_4]),
                RouteGuard::new(&r, &[SVC6, "via", RouterLab::UP1_6]),
            ]
        } else {
            Vec::new()
        };
        (s.before_attach)(&lab);
        let scratch = Scratch::new(&format!("route-lab-{}", s.label));
        let egress: Vec<&str> = [
            (s.egress_up1, &lab.up1_link),
            (s.egress_up2, &lab.up2_link),
            (s.egress_client, &lab.client_link),
        ]
        .into_iter()
        .filter_map(|(on, link)| on.then_some(link.a.as_str()))
        .collect();
        let mut config = common::lab_config(&lab, &egress);
        if !s.extra_tables.is_empty() {
            let main = r#"{ "name": "main", "id": 254 }"#;
            assert!(config.contains(main), "{config}");
            config = config.replace(main, &format!("{main}, {}", s.extra_tables));
        }
        let config = scratch.write("configuration.json", &config);
        let dp = Attachment::new(&lab, s.label);
        let report = dp.json(&["attach", "--config", &config]);
        assert_eq!(
            report["mode"], "tcx",
            "without --tc-mode, attach probes and picks TCX, which this kernel has: {report}"
        );
        Self {
            dp,
            scratch,
            _routes: routes,
            _guards: guards,
            _addrs: addrs,
            lab,
            _bpffs: bpffs,
        }
    }

    /// Applies a policy set made of `policies` (JSON objects, comma-separated) and BACK.
    fn apply(&self, name: &str, policies: &str) -> Value {
        let path = self.write_set(name, policies);
        self.dp.json(&["apply", &path])
    }

    fn write_set(&self, name: &str, policies: &str) -> String {
        let text = format!(r#"{{ "version": 1, "policies": [ {policies}, {BACK} ] }}"#);
        self.scratch.write(name, &text)
    }

    fn to_client(&self) -> &str {
        &self.lab.client_link.a
    }
}

/// A socket bound in namespace `ns` (the namespace sticks to the socket).
fn in_ns<T>(ns: &NetNs, what: &str, f: impl FnOnce() -> std::io::Result<T> + Send) -> T
where
    T: Send,
{
    ns.run(f)
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sends datagrams number 0 to `n` - 1 from `tx` to `to`: 16 bytes each, all the number.
fn send_numbered(tx: &UdpSocket, to: SocketAddr, n: u8) {
    for i in 0..n {
        tx.send_to(&[i; 16], to).expect("send");
    }
}

/// Receives on `rx` the `n` datagrams [`send_numbered`] sent, each exactly once: up to 5 s
/// for each, then 300 ms in which none may arrive twice. `what` names them in a failure,
/// `context` adds to the one of datagrams that did not arrive.
fn receive_numbered_once(rx: &UdpSocket, n: u8, what: &str, context: impl Fn() -> String) {
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < n as usize {
        match rx.recv(&mut buf) {
            Ok(16) => got.push(buf[0]),
            Ok(len) => panic!("{what}: datagram of {len} bytes"),
            Err(e) => panic!(
                "{what}: {} of {n} datagrams arrived ({e}){}",
                got.len(),
                context()
            ),
        }
    }
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    if let Ok(len) = rx.recv(&mut buf) {
        panic!(
            "{what}: a datagram arrived twice ({len} bytes, number {})",
            buf[0]
        );
    }
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "{what}");
}

fn svc(v6: bool) -> IpAddr {
    if v6 { SVC6 } else { SVC4 }.parse().unwrap()
}

fn client_addr(v6: bool) -> IpAddr {
    if v6 {
        RouterLab::CLIENT6
    } else {
        RouterLab::CLIENT4
    }
    .parse()
    .unwrap()
}

/// Runs ping in namespace `ns`; its stdout and stderr together (ping exits non-zero when
/// replies are missing, which some tests expect).
fn ping(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n"])
        .args(args)
        .output()
        .expect("run ping");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sends 3 echo requests from namespace `from` to the service address (of the family `v6`
/// says) with the ping options `opts`, and asserts that they reached up2 (`to_up2`) or up1,
/// and only that one (waiting for the counters, generously). Returns ping's output.
fn pings_reach(l: &Lab, from: &str, v6: bool, opts: &[&str], to_up2: bool) -> String {
    let echoes = || {
        (
            in_echos(&l.lab.up1.handle(), v6),
            in_echos(&l.lab.up2.handle(), v6),
        )
    };
    let before = echoes();
    let dst = svc(v6).to_string();
    let mut args = vec![
        if v6 { "-6" } else { "-4" },
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "5",
    ];
    args.extend_from_slice(opts);
    args.push(&dst);
    let out = ping(from, &args);
    let want = if to_up2 {
        (before.0, before.1 + 3)
    } else {
        (before.0 + 3, before.1)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = echoes();
    while after != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = echoes();
    }
    assert_eq!(
        after, want,
        "ping {args:?} from {from}: echo requests at (up1, up2); ping said: {out}"
    );
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be replayed.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, to name a payload in messages.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Several MiB over TCP from the client to the service address, for IPv4 and IPv6. The
/// policies steer TCP to port 7001 to up2 and other TCP to up1; up2 must receive every
/// byte as sent (compared byte for byte, FNV-1a shown), up1 no connection at all. TCP
/// over veth hands the router GSO packets far larger than the MTU: they must be forwarded,
/// not taken for oversize packets.
#[test]
fn tcp_transfer_through_the_fast_path_arrives_intact() {
    tcp_transfer(false);
}

/// With the data path also attached at the egress the fast path forwards to, a policy that
/// names no input interface must not match the forwarded packet a second time on its way
/// out (it would redirect it again and again until the kernel drops it): the same transfer
/// arrives intact, and the packets are counted once.
#[test]
fn forwarded_packets_are_not_classified_again_at_an_attached_egress() {
    tcp_transfer(true);
}

/// Sends 6 MiB over TCP from the client to the service port, IPv4 then IPv6, steered by
/// the port to one upstream (the other one must see no connection). `at_egress`: the
/// steering policy names no input interface and the data path is attached at the egress
/// of the chosen upstream's link too.
fn tcp_transfer(at_egress: bool) {
    const PORT: u16 = 7001;
    const LEN: usize = 6 << 20;
    let l = Lab::new(Setup {
        label: if at_egress { "tcp-egress" } else { "tcp" },
        egress_up1: at_egress,
        ..Setup::default()
    });
    let c = l.to_client();
    // The chosen upstream is up1 with the egress hook there, up2 otherwise.
    let (chosen, other) = if at_egress {
        ("up1", "up2")
    } else {
        ("up2", "up1")
    };
    let iif = if at_egress {
        String::new()
    } else {
        format!(r#""iif": "{c}", "#)
    };
    l.apply(
        "tcp.json",
        &format!(
            r#"{{ "id": "tcp-{PORT}-chosen", "priority": 10, "match": {{ {iif}"proto": "tcp", "dport": {PORT} }}, "action": {{ "type": "forward", "next_hop": "{chosen}" }} }},
  {{ "id": "tcp-other", "priority": 20, "match": {{ "iif": "{c}", "proto": "tcp" }}, "action": {{ "type": "forward", "next_hop": "{other}" }} }}"#
        ),
    );
    let (want_ns, other_ns) = if at_egress {
        (&l.lab.up1, &l.lab.up2)
    } else {
        (&l.lab.up2, &l.lab.up1)
    };
    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let addr = SocketAddr::new(svc(v6), PORT);
        let want = in_ns(&want_ns.handle(), "listen in the chosen upstream", || {
            TcpListener::bind(addr)
        });
        let unwanted = in_ns(&other_ns.handle(), "listen in the other upstream", || {
            TcpListener::bind(addr)
        });
        unwanted.set_nonblocking(true).unwrap();
        let receiver = std::thread::spawn(move || {
            let (mut s, _) = want.accept().expect("accept in the chosen upstream");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).map(|_| got)
        });
        let data = random_bytes(LEN, 0x5eed_0000 + v6 as u64);
        let mut stream = in_ns(&l.lab.client.handle(), "connect from the client", || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(20))
        });
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .write_all(&data)
            .unwrap_or_else(|e| panic!("{fam}: sending {LEN} bytes: {e}"));
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let got = receiver
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{fam}: receiving at up2: {e}"));
        assert_eq!(
            (got.len(), fnv1a(&got)),
            (data.len(), fnv1a(&data)),
            "{fam}: length and FNV-1a of what up2 received vs what the client sent"
        );
        assert!(got == data, "{fam}: payload differs");
        assert!(
            matches!(unwanted.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{fam}: {other} got a connection"
        );
    }
    let stats = l.dp.stats();
    let steered = policy(&stats, &format!("tcp-{PORT}-chosen"))["bytes"]
        .as_u64()
        .unwrap();
    // Headers and the odd retransmission add a few percent; a packet classified again at
    // the egress would count twice or more.
    assert!(
        (2 * LEN as u64..3 * LEN as u64).contains(&steered),
        "the data went through the policy, each packet counted once: {stats}"
    );
    assert_eq!(policy(&stats, "tcp-other")["packets"], 0, "{stats}");
    assert!(policy(&stats, "back-v4")["packets"].as_u64().unwrap() > 0);
    assert!(policy(&stats, "back-v6")["packets"].as_u64().unwrap() > 0);
    assert_eq!(iface_counter(&stats, c, "error_packets"), 0, "{stats}");
}

/// DSCP picks the upstream: echo requests with DSCP 46 (`ping -Q 184`, TOS/traffic class
/// 0xb8) go to up2, others to up1, for IPv4 and IPv6.
#[test]
fn dscp_picks_the_upstream() {
    let l = Lab::new(Setup {
        label: "dscp",
        ..Setup::default()
    });
    let c = l.to_client();
    l.apply(
        "dscp.json",
        &format!(
            r#"{{ "id": "ef-v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}", "dscp": 46 }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {{ "id": "ef-v6-up2", "priority": 11, "match": {{ "iif": "{c}", "dst": "{SVC6}", "dscp": 46 }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {{ "id": "v4-up1", "priority": 20, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "v6-up1", "priority": 21, "match": {{ "iif": "{c}", "dst": "{SVC6}" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
        ),
    );
    let client = &l.lab.client.name;
    for v6 in [false, true] {
        for (tos, to_up2) in [(Some("184"), true), (None, false)] {
            let opts = tos.map(|t| vec!["-Q", t]).unwrap_or_default();
            let out = pings_reach(&l, client, v6, &opts, to_up2);
            assert!(
                out.contains("3 received"),
                "v6 {v6} tos {tos:?}: replies come back through the fast path: {out}"
            );
        }
    }
    let stats = l.dp.stats();
    for (id, n) in [
        ("ef-v4-up2", 3),
        ("ef-v6-up2", 3),
        ("v4-up1", 3),
        ("v6-up1", 3),
    ] {
        assert_eq!(policy(&stats, id)["packets"], n, "{id}: {stats}");
    }
}

/// The mark picks the upstream. skb->mark is scrubbed when a packet crosses a veth into
/// another namespace, so a mark set by the client (SO_MARK, nftables) never reaches the
/// router's ingress program. Where a router's program does see marks is on egress, for
/// packets its own stack marked: here the router itself pings the service address (routed
/// via up1 by its main table) with `ping -m` (SO_MARK), and the data path, attached at
/// egress of to-up1, sends marked packets (mark & 0xf0 == 0x10) to up2 instead.
#[test]
fn mark_set_by_the_router_stack_picks_the_upstream() {
    let l = Lab::new(Setup {
        label: "mark",
        egress_up1: true,
        service_routes: true,
        ..Setup::default()
    });
    l.apply(
        "mark.json",
        &format!(
            r#"{{ "id": "mark-v4-up2", "priority": 10, "match": {{ "dst": "{SVC4}", "mark": {{ "value": 16, "mask": 240 }} }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {{ "id": "mark-v6-up2", "priority": 11, "match": {{ "dst": "{SVC6}", "mark": {{ "value": 16, "mask": 240 }} }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    // up2 routes the router's to-up1 network back to it: the pings' source address. Without
    // this up2 would ignore the router's ARP / ND for it (reverse path check).
    let _up2_back = [
        RouteGuard::new(&l.lab.up2.name, &["10.2.0.0/24", "via", "10.3.0.1"]),
        RouteGuard::new(&l.lab.up2.name, &["fd02::/64", "via", "fd03::1"]),
    ];
    let router = &l.lab.router.name;
    // KNOWN LIMITATION, kept visible here: a packet redirected at an EGRESS hook to a next
    // hop whose neighbour entry is not resolved yet is lost. It waits in the neighbour's
    // queue still carrying the route the stack gave it (via up1), and when the neighbour
    // resolves the kernel re-resolves through that route and writes up1's MAC on a frame
    // that leaves on to-up2 (up2 drops it). Ingress hooks (every other test) carry no
    // route yet and are not affected (missing_neighbour_still_delivers). Resolve up2 from
    // the router first, so this test is about marks.
    for gw in [RouterLab::UP2_4, RouterLab::UP2_6] {
        let out = ping(router, &["-c", "1", "-W", "5", gw]);
        assert!(out.contains("1 received"), "router reaches {gw}: {out}");
    }
    for v6 in [false, true] {
        // 0x1f matches (0x1f & 0xf0 == 0x10); 0x20 and no mark do not.
        for (mark, to_up2) in [(Some("31"), true), (Some("32"), false), (None, false)] {
            let opts = mark.map(|m| vec!["-m", m]).unwrap_or_default();
            let out = pings_reach(&l, router, v6, &opts, to_up2);
            assert!(
                out.contains("3 received"),
                "v6 {v6} mark {mark:?}: replies: {out}"
            );
        }
    }
    let stats = l.dp.stats();
    assert_eq!(policy(&stats, "mark-v4-up2")["packets"], 3, "{stats}");
    assert_eq!(policy(&stats, "mark-v6-up2")["packets"], 3, "{stats}");
    assert!(
        iface_counter(&stats, &l.lab.up1_link.a, "forwarded_packets") >= 6,
        "marked packets redirected at to-up1 egress: {stats}"
    );
}

/// A paced UDP stream with sequence numbers runs from the client to up1 while `route
/// apply` swaps between two policy sets many times. Both sets steer the stream the same
/// way (the same policy `udp-7100`) and differ elsewhere, so every datagram must arrive:
/// a swap may not lose any. The surviving policy keeps counting across the swaps.
#[test]
fn policy_swaps_under_a_running_stream_lose_nothing() {
    const PORT: u16 = 7100;
    const SWAPS: usize = 40;
    let l = Lab::new(Setup {
        label: "swap",
        ..Setup::default()
    });
    let c = l.to_client();
    let stream_policy = format!(
        r#"{{ "id": "udp-7100", "priority": 30, "match": {{ "iif": "{c}", "proto": "udp", "dport": {PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
    );
    let a = l.write_set(
        "a.json",
        &format!(
            r#"{stream_policy},
  {{ "id": "dns", "priority": 20, "match": {{ "proto": "udp", "dport": 53 }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let b = l.write_set(
        "b.json",
        &format!(
            r#"{{ "id": "drop-9999", "priority": 5, "match": {{ "proto": "udp", "dport": 9999 }}, "action": {{ "type": "drop" }} }},
  {stream_policy},
  {{ "id": "dns", "priority": 20, "match": {{ "proto": "udp", "dport": 53 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "sctp", "priority": 40, "match": {{ "proto": "sctp" }}, "action": {{ "type": "drop" }} }},
  {{ "id": "src-b", "priority": 41, "match": {{ "src": "10.1.0.128/25" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    l.dp.json(&["apply", &a]);

    let stream = Stream::start(&l.lab, PORT);
    stream.wait_for(50, "stream running before the swaps");
    let mut generations = Vec::new();
    for i in 0..SWAPS {
        let set = if i % 2 == 0 { &b } else { &a };
        generations.push(l.dp.json(&["apply", set])["applied"]["generation"].clone());
    }
    let (sent, missing) = stream.stop();
    assert!(
        missing.is_empty(),
        "{} of {sent} datagrams lost across {SWAPS} swaps: {missing:?}",
        missing.len()
    );
    eprintln!("{sent} datagrams across {SWAPS} swaps, none lost");
    assert_eq!(
        generations.len(),
        SWAPS,
        "every apply reported its generation"
    );
    let stats = l.dp.stats();
    assert_eq!(
        policy(&stats, "udp-7100")["packets"],
        sent,
        "the stream's policy counted every datagram across the swaps: {stats}"
    );
    assert_eq!(iface_counter(&stats, c, "dropped_packets"), 0, "{stats}");
}

/// Sets the MTU of interface `dev` in namespace `ns`.
fn set_mtu(ns: &str, dev: &str, mtu: u32) {
    run::must(
        "ip",
        &["-n", ns, "link", "set", "dev", dev, "mtu", &mtu.to_string()],
    );
}

/// With the router's forwarding ON (the stack must answer), packets the fast path must not
/// forward itself are passed to the stack: TTL 1 gets ICMP time exceeded, a packet with DF
/// larger than the egress MTU (1280 on to-up1) gets "fragmentation needed" (IPv4) / "packet
/// too big" (IPv6), each from the router at the client. The interface counters show them
/// passed, not forwarded, and nothing reached up1.
#[test]
fn ttl_expiry_and_oversize_are_answered_by_the_stack() {
    let l = Lab::new(Setup {
        label: "icmp-err",
        forwarding: true,
        service_routes: true,
        before_attach: &|lab| {
            set_mtu(&lab.router.name, &lab.up1_link.a, 1280);
        },
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    // The kernel rate-limits ICMP errors; the test's few must all go out.
    let _no_ratelimit = [
        SysctlGuard::new(&r, "net.ipv4.icmp_ratelimit", "0"),
        SysctlGuard::new(&r, "net.ipv6.icmp.ratelimit", "0"),
    ];
    let c = l.to_client().to_owned();
    l.apply(
        "icmp.json",
        &format!(
            r#"{{ "id": "v4-up1", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "v6-up1", "priority": 11, "match": {{ "iif": "{c}", "dst": "{SVC6}" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
        ),
    );
    let client = l.lab.client.name.clone();
    let counters = |stats: &Value| {
        (
            iface_counter(stats, &c, "passed_packets"),
            iface_counter(stats, &c, "forwarded_packets"),
        )
    };
    for v6 in [false, true] {
        let fam = if v6 { "-6" } else { "-4" };
        let dst = svc(v6).to_string();
        let router_addr = if v6 { "fd01::1" } else { "10.1.0.1" };
        // A normal echo is fast-forwarded: the counters tell the two apart.
        let before = counters(&l.dp.stats());
        let out = ping(&client, &[fam, "-c", "1", "-W", "5", &dst]);
        assert!(out.contains("1 received"), "{fam}: plain ping: {out}");
        let after = counters(&l.dp.stats());
        assert!(after.1 > before.1, "{fam}: plain echo forwarded");

        let cases: [(&str, Vec<&str>, &str); 2] = [
            (
                "ttl 1",
                vec![fam, "-c", "1", "-W", "5", "-t", "1", &dst],
                if v6 {
                    "Time exceeded: Hop limit"
                } else {
                    "Time to live exceeded"
                },
            ),
            (
                "1300 bytes with DF over MTU 1280",
                vec![fam, "-c", "1", "-W", "5", "-M", "do", "-s", "1300", &dst],
                if v6 {
                    "Packet too big: mtu=1280"
                } else {
                    "Frag needed and DF set (mtu = 1280)"
                },
            ),
        ];
        for (what, args, error) in cases {
            let echos = in_echos(&l.lab.up1.handle(), v6);
            let before = counters(&l.dp.stats());
            let out = ping(&client, &args);
            assert!(
                out.contains(&format!("From {router_addr}")) && out.contains(error),
                "{fam} {what}: the router's ICMP error at the client ({error}): {out}"
            );
            let after = counters(&l.dp.stats());
            assert!(
                after.0 > before.0,
                "{fam} {what}: passed to the stack ({before:?} -> {after:?})"
            );
            assert_eq!(after.1, before.1, "{fam} {what}: not forwarded");
            assert_eq!(
                in_echos(&l.lab.up1.handle(), v6),
                echos,
                "{fam} {what}: nothing reached up1"
            );
        }
    }
}

/// IPv4 options through the router with real traffic: echo requests with a record-route
/// option, matched by a policy that forwards to up2, are handed to the router's stack
/// (which processes options, recording its address) with up2's slow-path mark, and the
/// stack forwards them by the table `route attach` installed for up2: they reach up2, not
/// up1, where the main table's route to the service leads. Their replies, with options
/// too, go back by the client's table. Plain echo requests of the same flow follow the
/// policy to up2 in the fast path.
#[test]
fn ipv4_options_follow_the_policy_through_the_stack() {
    let l = Lab::new(Setup {
        label: "ip-opts",
        forwarding: true,
        service_routes: true,
        ..Setup::default()
    });
    let c = l.to_client().to_owned();
    l.apply(
        "opts.json",
        &format!(
            r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let client = l.lab.client.name.clone();
    let counters = |stats: &Value| {
        (
            iface_counter(stats, &c, "passed_packets"),
            iface_counter(stats, &c, "forwarded_packets"),
        )
    };
    let before = counters(&l.dp.stats());
    let out = pings_reach(&l, &client, false, &[], true);
    assert!(out.contains("3 received"), "plain ping: {out}");
    let after = counters(&l.dp.stats());
    assert!(
        after.1 >= before.1 + 3,
        "plain echoes fast-forwarded: {out}"
    );

    let before = after;
    let out = pings_reach(&l, &client, false, &["-R"], true);
    assert!(out.contains("3 received"), "record-route ping: {out}");
    assert!(
        out.contains("RR:") && out.contains("10.3.0.1") && out.contains("10.1.0.1"),
        "the router's stack recorded its to-up2 address going out and its to-client address coming back: {out}"
    );
    let after = counters(&l.dp.stats());
    assert!(
        after.0 >= before.0 + 3,
        "echoes with options passed to the stack ({before:?} -> {after:?})"
    );
    assert_eq!(after.1, before.1, "nothing with options fast-forwarded");
    assert_eq!(
        policy(&l.dp.stats(), "v4-up2")["packets"],
        6,
        "the policy matched all six echo requests"
    );
}

/// Packets too big for the policy's egress follow the policy through the stack: to-up2
/// has MTU 1280, the main table's route to the service leads to up1 (MTU 1500). A 1300-byte
/// echo with DF gets "fragmentation needed" with to-up2's MTU from the router (the main
/// table's route would have carried it whole to up1); one without DF is fragmented by the
/// router's stack and reaches up2.
#[test]
fn too_big_packets_follow_the_policy_through_the_stack() {
    let l = Lab::new(Setup {
        label: "too-big",
        forwarding: true,
        service_routes: true,
        before_attach: &|lab| {
            set_mtu(&lab.router.name, &lab.up2_link.a, 1280);
            // up2's end too, or the router's end would not take its big replies.
            set_mtu(&lab.up2.name, &lab.up2_link.b, 1280);
        },
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    let _no_ratelimit = SysctlGuard::new(&r, "net.ipv4.icmp_ratelimit", "0");
    let c = l.to_client().to_owned();
    l.apply(
        "big.json",
        &format!(
            r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let client = l.lab.client.name.clone();
    let dst = SVC4.to_string();
    let echos = || {
        (
            in_echos(&l.lab.up1.handle(), false),
            in_echos(&l.lab.up2.handle(), false),
        )
    };
    let before = echos();
    let out = ping(
        &client,
        &["-4", "-c", "1", "-W", "5", "-M", "do", "-s", "1300", &dst],
    );
    assert!(
        out.contains("From 10.1.0.1") && out.contains("Frag needed and DF set (mtu = 1280)"),
        "the router answers with the policy's egress MTU: {out}"
    );
    assert_eq!(echos(), before, "nothing reached up1 or up2: {out}");
    let out = pings_reach(&l, &client, false, &["-M", "dont", "-s", "1300"], true);
    assert!(out.contains("3 received"), "fragmented to up2: {out}");
}

/// A `lookup_table` policy holds on the slow path: the router's table 100 (`alt`) routes
/// the service addresses via up2, its main table via up1, and a policy looks the service
/// up in `alt`. Plain echoes are forwarded by the fast path to up2. Echoes with a record
/// route option, and packets too big for to-up2 (MTU 1280), go to the router's stack with
/// alt's mark, whose rule `route attach` installed: the record-route echoes reach up2, not
/// up1; too-big packets get "fragmentation needed" / "packet too big" with to-up2's MTU,
/// where the main table would have carried them whole to up1; and a destination alt
/// holds an `unreachable` route for (which the fast path cannot use either) gets the
/// router's "host unreachable", where main would have sent it to up1. `route get` says so.
#[test]
fn lookup_table_packets_follow_their_table_through_the_stack() {
    let l = Lab::new(Setup {
        label: "lookup-slow",
        forwarding: true,
        service_routes: true,
        extra_tables: r#"{ "name": "alt", "id": 100 }"#,
        before_attach: &|lab| {
            set_mtu(&lab.router.name, &lab.up2_link.a, 1280);
            set_mtu(&lab.up2.name, &lab.up2_link.b, 1280);
        },
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    // 10.9.0.99: main forwards it to up1, alt says unreachable.
    let _alt = [
        RouteGuard::new(&r, &[SVC4, "via", RouterLab::UP2_4, "table", "100"]),
        RouteGuard::new(&r, &[SVC6, "via", RouterLab::UP2_6, "table", "100"]),
        RouteGuard::new(&r, &["10.9.0.99", "via", RouterLab::UP1_4]),
        RouteGuard::new(&r, &["unreachable", "10.9.0.99", "table", "100"]),
    ];
    let _no_ratelimit = [
        SysctlGuard::new(&r, "net.ipv4.icmp_ratelimit", "0"),
        SysctlGuard::new(&r, "net.ipv6.icmp.ratelimit", "0"),
    ];
    // Next hops up1, up2, client take marks 1-3; tables main and alt 4 and 5.
    for fam in ["-4", "-6"] {
        let rules = run::must("ip", &[fam, "-n", &r, "rule", "show"]);
        for want in [
            "1000:	from all fwmark 0x4000000/0xff000000 lookup main",
            "1000:	from all fwmark 0x5000000/0xff000000 lookup 100",
        ] {
            assert!(rules.contains(want), "{fam}: {want:?} in {rules}");
        }
    }
    let c = l.to_client().to_owned();
    l.apply(
        "alt.json",
        &format!(
            r#"{{ "id": "svc4-alt", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "lookup_table", "table": "alt" }} }},
  {{ "id": "svc6-alt", "priority": 11, "match": {{ "iif": "{c}", "dst": "{SVC6}" }}, "action": {{ "type": "lookup_table", "table": "alt" }} }},
  {{ "id": "gone-alt", "priority": 12, "match": {{ "iif": "{c}", "dst": "10.9.0.99" }}, "action": {{ "type": "lookup_table", "table": "alt" }} }}"#
        ),
    );
    let text = l.dp.ok(&[
        "get", "iif", &c, "from", "10.1.0.2", "to", SVC4, "proto", "udp", "dport", "53", "ttl", "1",
    ]);
    assert!(
        text.contains(
            "action lookup_table egress - next_hop - verdict pass, via stack following policy svc4-alt (lookup table alt: table 100, mark 0x5000000/0xff000000)"
        ),
        "{text}"
    );
    let json = l.dp.json(&[
        "get", "iif", &c, "from", "fd01::2", "to", SVC6, "mark", "5", "ttl", "1",
    ]);
    let via = &json["via_stack"];
    assert_eq!(via["policy"], "svc6-alt", "{json}");
    assert_eq!(via["lookup_table"], "alt", "{json}");
    assert_eq!(via["table"], 100, "{json}");
    assert!(via["next_hop"].is_null(), "{json}");
    assert_eq!(json["rewritten"]["mark"], 0x0500_0005, "{json}");

    let client = l.lab.client.name.clone();
    let passed = || iface_counter(&l.dp.stats(), &c, "passed_packets");
    let out = pings_reach(&l, &client, false, &[], true);
    assert!(
        out.contains("3 received"),
        "plain ping, by alt in the fast path: {out}"
    );
    let before = passed();
    let out = pings_reach(&l, &client, false, &["-R"], true);
    assert!(
        out.contains("3 received") && out.contains("RR:") && out.contains("10.3.0.1"),
        "record-route echoes routed by the router's stack through alt to up2: {out}"
    );
    assert!(
        passed() >= before + 3,
        "the echoes with options went to the stack"
    );

    let echos = || {
        (
            in_echos(&l.lab.up1.handle(), false),
            in_echos(&l.lab.up2.handle(), false),
            in_echos(&l.lab.up1.handle(), true),
            in_echos(&l.lab.up2.handle(), true),
        )
    };
    for (fam, dst, error) in [
        ("-4", SVC4, "Frag needed and DF set (mtu = 1280)"),
        ("-6", SVC6, "Packet too big: mtu=1280"),
    ] {
        let before = echos();
        let out = ping(
            &client,
            &[fam, "-c", "1", "-W", "5", "-M", "do", "-s", "1300", dst],
        );
        assert!(
            out.contains(error),
            "{fam}: the router answers with alt's egress MTU, not main's route to up1: {out}"
        );
        assert_eq!(echos(), before, "{fam}: nothing reached up1 or up2: {out}");
    }
    // A route of the table that the fast path cannot use holds in the stack too.
    let before = echos();
    let out = ping(&client, &["-4", "-c", "1", "-W", "5", "10.9.0.99"]);
    assert!(
        out.contains("From 10.1.0.1") && out.contains("Destination Host Unreachable"),
        "alt's unreachable route answers, not main's route to up1: {out}"
    );
    assert_eq!(echos(), before, "nothing reached up1: {out}");
}

/// `route attach` installs the slow path (a table per next hop, a fwmark rule per family
/// it serves), `route get` says when a packet goes through it, and `route detach` leaves
/// no rule and no route behind.
#[test]
fn the_slow_path_is_installed_shown_and_removed() {
    let l = Lab::new(Setup {
        label: "slow",
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    let ip = |args: &[&str]| {
        let mut full = vec!["-n", r.as_str()];
        full.extend_from_slice(args);
        run::must("ip", &full)
    };
    let (up1, up2, c) = (&l.lab.up1_link.a, &l.lab.up2_link.a, &l.lab.client_link.a);
    for fam in ["-4", "-6"] {
        let rules = ip(&[fam, "rule", "show"]);
        for (i, table) in ["7070", "7071", "7072"].into_iter().enumerate() {
            let want = format!(
                "from all fwmark {:#x}/0xff000000 lookup {table}",
                (i as u32 + 1) << 24
            );
            assert!(
                rules
                    .lines()
                    .any(|line| line.starts_with("1000:") && line.contains(&want)),
                "{fam} rule {want:?} at priority 1000: {rules}"
            );
        }
    }
    for (fam, table, via, dev) in [
        ("-4", "7070", "10.2.0.2", up1),
        ("-6", "7070", "fd02::2", up1),
        ("-4", "7071", "10.3.0.2", up2),
        ("-6", "7071", "fd03::2", up2),
        ("-4", "7072", "10.1.0.2", c),
        ("-6", "7072", "fd01::2", c),
    ] {
        let routes = ip(&[fam, "route", "show", "table", table]);
        assert!(
            routes.contains(&format!("default via {via} dev {dev}")) && routes.contains("onlink"),
            "{fam} table {table}: {routes}"
        );
    }
    l.apply(
        "slow.json",
        &format!(
            r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let get = |ttl: &str| {
        l.dp.ok(&[
            "get", "iif", c, "from", "10.1.0.2", "to", SVC4, "proto", "udp", "dport", "53", "ttl",
            ttl,
        ])
    };
    let text = get("1");
    assert!(
        text.contains(
            "verdict pass, via stack following policy v4-up2 (next hop up2: table 7071, mark 0x2000000/0xff000000)"
        ),
        "{text}"
    );
    assert!(
        get("64").contains("verdict redirect\n"),
        "TTL 64 fast-forwarded"
    );
    let json = l.dp.json(&[
        "get", "iif", c, "from", "10.1.0.2", "to", SVC4, "mark", "5", "ttl", "1",
    ]);
    let via = &json["via_stack"];
    assert_eq!(via["policy"], "v4-up2", "{json}");
    assert_eq!(via["next_hop"], "up2", "{json}");
    assert_eq!(via["table"], 7071, "{json}");
    assert_eq!(
        json["rewritten"]["mark"], 0x0200_0005,
        "the slow-path mark, the packet's own bits kept: {json}"
    );
    let plain =
        l.dp.json(&["get", "iif", c, "from", "10.1.0.2", "to", SVC4]);
    assert!(plain["via_stack"].is_null(), "{plain}");

    let detached = l.dp.json(&["detach"]);
    // 3 next hops and table main, each in both families.
    assert_eq!(detached["slow_path"]["rules"], 8, "{detached}");
    assert_eq!(detached["slow_path"]["routes"], 6, "{detached}");
    assert_no_slow_path(&l.lab.router.name);
}

/// Namespace `ns` holds no fwmark rule and no default route in a slow-path table (7070
/// and up), in either family.
#[track_caller]
fn assert_no_slow_path(ns: &str) {
    for fam in ["-4", "-6"] {
        let rules = run::must("ip", &[fam, "-n", ns, "rule", "show"]);
        assert!(!rules.contains("fwmark"), "{fam}: rules left: {rules}");
        let routes = run::must("ip", &[fam, "-n", ns, "route", "show", "table", "all"]);
        assert!(
            !routes
                .lines()
                .any(|l| l.starts_with("default") && l.contains("table 707")),
            "{fam}: slow-path routes left: {routes}"
        );
    }
}

/// A routing table the slow path would use that already holds a route: attach refuses,
/// names it and what to do, and leaves nothing (no pins, no state, no rule).
#[test]
fn attach_refuses_a_slow_path_table_in_use_and_leaves_nothing() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let r = lab.router.name.clone();
    let _taken = RouteGuard::new(
        &r,
        &["192.0.2.0/24", "dev", &lab.up1_link.a, "table", "7071"],
    );
    let scratch = Scratch::new("route-lab-taken");
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
    let dp = Attachment::new(&lab, "taken");
    let out = dp.route(&["attach", "--config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("routing table 7071 (ipv4) already holds 1 routes")
            && stderr.contains("slow_path.table_base"),
        "{stderr}"
    );
    assert!(!dp.pin.path.exists(), "no pins");
    assert!(!dp.state_dir().exists(), "no state");
    assert_no_slow_path(&r);
}

/// An egress interface that is down when the data path is attached: the kernel refuses a
/// route through it, so its next hop's slow-path table stays empty, with a warning that
/// says so, and the attach goes on (the other next hop's table is filled); detach then
/// leaves no rule and no route.
#[test]
fn attach_with_an_egress_down_leaves_its_slow_path_table_empty_and_warns() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let r = lab.router.name.clone();
    run::must("ip", &["-n", &r, "link", "set", &lab.up2_link.a, "down"]);
    let scratch = Scratch::new("route-lab-down");
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
    let dp = Attachment::new(&lab, "egress-down");
    let out = dp.route(&["attach", "--config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("table 7071 left empty") && stderr.contains("is down"),
        "{stderr}"
    );
    let t = run::must("ip", &["-n", &r, "route", "show", "table", "7070"]);
    assert!(t.contains("default via"), "up1's table filled: {t}");
    let t = run::must("ip", &["-n", &r, "route", "show", "table", "7071"]);
    assert!(t.trim().is_empty(), "up2's table empty: {t}");
    let out = dp.route(&["detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_slow_path(&r);
}

/// An egress interface deleted and created again (as a container runtime or a VPN client
/// does): the kernel deleted up2's slow-path route with it, so record-route echoes a
/// policy forwards to up2 go by the main table to up1; `route apply` (CAP_BPF would do for
/// the policies; here as root) puts the route back through the new interface, says so,
/// and the echoes reach up2 again. Detach then leaves nothing.
#[test]
fn apply_puts_back_the_slow_path_route_of_a_recreated_interface() {
    let l = Lab::new(Setup {
        label: "recreated",
        forwarding: true,
        service_routes: true,
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    let a = &l.lab.up2_link.a;
    let c = l.to_client().to_owned();
    let policies = format!(
        r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
    );
    l.apply("up2.json", &policies);
    let client = l.lab.client.name.clone();
    pings_reach(&l, &client, false, &["-R"], true);

    recreate_up2_link(&l);
    let table = || run::must("ip", &["-4", "-n", &r, "route", "show", "table", "7071"]);
    assert!(
        table().trim().is_empty(),
        "gone with the interface: {}",
        table()
    );
    let out = pings_reach(&l, &client, false, &["-R"], false);
    assert!(
        out.contains("3 received"),
        "by main to up1 meanwhile: {out}"
    );

    let path = l.write_set("up2.json", &policies);
    let out = l.dp.route(&["apply", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("put back the slow path's routes in tables 7071"),
        "{stderr}"
    );
    assert!(
        table().contains(&format!("default via 10.3.0.2 dev {a}")),
        "{}",
        table()
    );
    let out = pings_reach(&l, &client, false, &["-R"], true);
    assert!(
        out.contains("3 received"),
        "by the policy's table to up2: {out}"
    );
    // Nothing missing: the next apply puts back nothing.
    let report = l.dp.json(&["apply", &path]);
    assert!(
        report["applied"]["slow_path_restored"].is_null(),
        "{report}"
    );

    let detached = l.dp.json(&["detach"]);
    assert_eq!(detached["slow_path"]["routes"], 6, "{detached}");
    assert_no_slow_path(&r);
}

/// An interface deleted and created again with IPv6 off: the kernel refuses its next
/// hop's IPv6 slow-path route; `route apply` still puts back the IPv4 one, says so, and
/// warns about the one it could not.
#[test]
fn apply_puts_back_what_it_can_when_one_route_is_refused() {
    let l = Lab::new(Setup {
        label: "restore-some",
        forwarding: true,
        service_routes: true,
        ..Setup::default()
    });
    let r = l.lab.router.name.clone();
    let a = l.lab.up2_link.a.clone();
    let c = l.to_client().to_owned();
    let policies = format!(
        r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
    );
    l.apply("up2.json", &policies);
    let table =
        |family: &str| run::must("ip", &[family, "-n", &r, "route", "show", "table", "7071"]);
    assert!(!table("-6").trim().is_empty(), "an IPv6 route to put back");
    recreate_up2_link(&l);
    let key = format!("net.ipv6.conf.{a}.disable_ipv6=1");
    run::must("ip", &["netns", "exec", &r, "sysctl", "-qw", &key]);
    assert!(table("-4").trim().is_empty() && table("-6").trim().is_empty());

    let path = l.write_set("up2.json", &policies);
    let out = l.dp.route(&["apply", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("put back the slow path's routes in tables 7071"),
        "{stderr}"
    );
    assert!(
        stderr.contains("could not put back the routes of its tables"),
        "{stderr}"
    );
    assert!(
        table("-4").contains(&format!("default via 10.3.0.2 dev {a}")),
        "{}",
        table("-4")
    );
    assert!(table("-6").trim().is_empty(), "{}", table("-6"));
    l.dp.json(&["detach"]);
    assert_no_slow_path(&r);
}

/// Deletes the router – up2 veth pair and makes a new one with the same names, addresses
/// (IPv4) and up2's route back to the client (all removed with the namespaces).
fn recreate_up2_link(l: &Lab) {
    let (r, up2) = (&l.lab.router.name, &l.lab.up2.name);
    let (a, b) = (&l.lab.up2_link.a, &l.lab.up2_link.b);
    run::must("ip", &["-n", r, "link", "del", a]);
    run::must(
        "ip",
        &[
            "-n", r, "link", "add", a, "type", "veth", "peer", "name", b, "netns", up2,
        ],
    );
    for (ns, dev, addr) in [(r, a, "10.3.0.1/24"), (up2, b, "10.3.0.2/24")] {
        run::must("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
        run::must("ip", &["-n", ns, "link", "set", dev, "up"]);
    }
    run::must(
        "ip",
        &["-n", up2, "route", "add", "10.1.0.0/24", "via", "10.3.0.1"],
    );
}

/// `route attach` run again after an interface was deleted and created again (TCX): the
/// link pinned for its hook outlived the old interface, and the new one has no program;
/// attach puts the program on it, the next hops through it follow its new ifindex, and its
/// slow-path route comes back. With the router's own forwarding off, echoes to up2 and
/// their replies (classified on up2's new interface) cross only if all of that happened.
#[test]
fn attach_again_rehooks_an_interface_created_again() {
    let l = Lab::new(Setup {
        label: "rehook",
        ..Setup::default()
    });
    let c = l.to_client().to_owned();
    l.apply(
        "up2.json",
        &format!(
            r#"{{ "id": "v4-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let client = l.lab.client.name.clone();
    let out = pings_reach(&l, &client, false, &[], true);
    assert!(out.contains("3 received"), "{out}");

    recreate_up2_link(&l);
    let config = l
        .scratch
        .write("configuration.json", &common::lab_config(&l.lab, &[]));
    let report = l.dp.json(&["attach", "--config", &config]);
    let up2 = format!("{}/ingress", l.lab.up2_link.a);
    assert_eq!(report["attached"], serde_json::json!([up2]), "{report}");
    let t = run::must(
        "ip",
        &[
            "-4",
            "-n",
            &l.lab.router.name,
            "route",
            "show",
            "table",
            "7071",
        ],
    );
    assert!(t.contains("default via 10.3.0.2"), "{t}");
    let out = pings_reach(&l, &client, false, &[], true);
    assert!(
        out.contains("3 received"),
        "through the new interface: {out}"
    );
    let again = l.dp.json(&["attach", "--config", &config]);
    assert_eq!(again["attached"], serde_json::json!([]), "{again}");
}

/// A broadcast is not forwarded by a unicast policy, with real traffic: a policy sends
/// every IPv4 datagram from the client to up1, and up1 listens on all its addresses.
/// Datagrams to the service address reach it through the fast path; datagrams the client
/// broadcasts (255.255.255.255, Ethernet broadcast) go to the router's stack, which does
/// not forward them: up1 sees none. (Before the data path checked group destinations, it
/// redirected them to up1 with up1's MAC, and up1 took them in.)
#[test]
fn broadcasts_are_not_forwarded_by_a_unicast_policy() {
    let l = Lab::new(Setup {
        label: "bcast",
        ..Setup::default()
    });
    let c = l.to_client().to_owned();
    l.apply(
        "bcast.json",
        &format!(
            r#"{{ "id": "all-v4-up1", "priority": 10, "match": {{ "iif": "{c}", "dst": "0.0.0.0/0" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
        ),
    );
    const PORT: u16 = 7411;
    let rx = in_ns(&l.lab.up1.handle(), "bind in up1", || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))
    });
    let tx = in_ns(&l.lab.client.handle(), "bind in client", || {
        let tx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        tx.set_broadcast(true)?;
        Ok(tx)
    });
    let counters = |stats: &Value| {
        (
            iface_counter(stats, &c, "passed_packets"),
            iface_counter(stats, &c, "forwarded_packets"),
        )
    };
    let before = counters(&l.dp.stats());
    send_numbered(&tx, SocketAddr::new(svc(false), PORT), 3);
    receive_numbered_once(&rx, 3, "unicast to the service address", String::new);
    let after = counters(&l.dp.stats());
    assert!(after.1 >= before.1 + 3, "unicast fast-forwarded");

    let before = after;
    send_numbered(&tx, SocketAddr::new(Ipv4Addr::BROADCAST.into(), PORT), 3);
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    if let Ok(len) = rx.recv(&mut buf) {
        panic!("up1 received a broadcast datagram ({len} bytes): the router forwarded it");
    }
    let after = counters(&l.dp.stats());
    assert!(
        after.0 >= before.0 + 3,
        "broadcasts passed to the stack ({before:?} -> {after:?})"
    );
    assert_eq!(after.1, before.1, "no broadcast fast-forwarded");
}

/// Next hops given by gateway address only: after `ip neigh flush` in the router, the
/// first datagrams towards a next hop with no neighbour entry still arrive (the data path
/// hands them to bpf_redirect_neigh, which resolves the neighbour and queues them), for a
/// `forward` policy and a `lookup_table` policy, IPv4 and IPv6.
///
/// For `forward` the router's forwarding is off, so the stack could not have delivered
/// them. The kernel's FIB lookup helper answers "forwarding disabled" for an input device
/// that does not forward, so `lookup_table` needs forwarding on (a packet it cannot look
/// up is passed to the stack): for that policy forwarding is on, and the data path's
/// forwarded counter shows that it, not the stack, carried every datagram.
#[test]
fn missing_neighbour_still_delivers() {
    const N: usize = 3;
    let l = Lab::new(Setup {
        label: "neigh",
        service_routes: true,
        ..Setup::default()
    });
    let c = l.to_client();
    l.apply(
        "neigh.json",
        &format!(
            r#"{{ "id": "fwd-up1", "priority": 10, "match": {{ "iif": "{c}", "proto": "udp", "dport": 7200 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "table-main", "priority": 11, "match": {{ "iif": "{c}", "proto": "udp", "dport": 7201 }}, "action": {{ "type": "lookup_table", "table": "main" }} }}"#
        ),
    );
    let r = l.lab.router.name.clone();
    for v6 in [false, true] {
        let fam = if v6 { "-6" } else { "-4" };
        let gw = if v6 {
            RouterLab::UP1_6
        } else {
            RouterLab::UP1_4
        };
        for port in [7200u16, 7201] {
            let _forwarding = (port == 7201).then(|| {
                [
                    SysctlGuard::new(&r, "net.ipv4.ip_forward", "1"),
                    SysctlGuard::new(&r, "net.ipv6.conf.all.forwarding", "1"),
                ]
            });
            let before = iface_counter(&l.dp.stats(), c, "forwarded_packets");
            let rx = in_ns(&l.lab.up1.handle(), "bind in up1", || {
                UdpSocket::bind(SocketAddr::new(svc(v6), port))
            });
            run::must("ip", &[fam, "-n", &r, "neigh", "flush", "all"]);
            let neigh = run::must("ip", &[fam, "-n", &r, "neigh", "show", "to", gw]);
            assert!(
                !["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"]
                    .iter()
                    .any(|s| neigh.contains(s)),
                "{fam}: neighbour {gw} still known after the flush: {neigh}"
            );
            let tx = in_ns(&l.lab.client.handle(), "bind in the client", || {
                UdpSocket::bind(SocketAddr::new(client_addr(v6), 0))
            });
            send_numbered(&tx, SocketAddr::new(svc(v6), port), N as u8);
            receive_numbered_once(&rx, N as u8, &format!("{fam} port {port}"), || {
                format!(
                    "; neighbours: {}",
                    run::must("ip", &[fam, "-n", &r, "neigh", "show"])
                )
            });
            assert_eq!(
                iface_counter(&l.dp.stats(), c, "forwarded_packets"),
                before + N as u64,
                "{fam} port {port}: the data path forwarded them"
            );
        }
    }
    let stats = l.dp.stats();
    assert_eq!(policy(&stats, "fwd-up1")["packets"], 2 * N, "{stats}");
    assert_eq!(policy(&stats, "table-main")["packets"], 2 * N, "{stats}");
    assert_eq!(
        iface_counter(&stats, c, "forwarded_packets"),
        4 * N as u64,
        "{stats}"
    );
    assert_eq!(iface_counter(&stats, c, "dropped_packets"), 0, "{stats}");
    assert_eq!(iface_counter(&stats, c, "error_packets"), 0, "{stats}");
}

/// With the data path attached at the egress it forwards to as well, a packet that
/// bpf_redirect_neigh had to hold while it resolved the neighbour reaches that egress later,
/// outside the program's run. It must still leave as it is: a policy that names no input
/// interface would match it there and forward it again, and again. After `ip neigh flush`
/// in the router, N datagrams each arrive once and the policy counts each once, IPv4 and
/// IPv6 (the router does not forward: only the data path can deliver them).
#[test]
fn neighbour_held_packets_are_not_classified_again_at_an_attached_egress() {
    const N: u64 = 3;
    const PORT: u16 = 7202;
    let l = Lab::new(Setup {
        label: "neigh-egress",
        egress_up1: true,
        ..Setup::default()
    });
    let c = l.to_client();
    l.apply(
        "neigh-egress.json",
        &format!(
            r#"{{ "id": "fwd-up1", "priority": 10, "match": {{ "proto": "udp", "dport": {PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
        ),
    );
    let r = l.lab.router.name.clone();
    for (i, v6) in [false, true].into_iter().enumerate() {
        let fam = if v6 { "-6" } else { "-4" };
        let rx = in_ns(&l.lab.up1.handle(), "bind in up1", || {
            UdpSocket::bind(SocketAddr::new(svc(v6), PORT))
        });
        run::must("ip", &[fam, "-n", &r, "neigh", "flush", "all"]);
        let tx = in_ns(&l.lab.client.handle(), "bind in the client", || {
            UdpSocket::bind(SocketAddr::new(client_addr(v6), 0))
        });
        send_numbered(&tx, SocketAddr::new(svc(v6), PORT), N as u8);
        receive_numbered_once(&rx, N as u8, fam, String::new);
        let stats = l.dp.stats();
        assert_eq!(
            policy(&stats, "fwd-up1")["packets"],
            (i as u64 + 1) * N,
            "{fam}: each datagram matched once: {stats}"
        );
        assert_eq!(iface_counter(&stats, c, "error_packets"), 0, "{stats}");
    }
}

/// A packet the router itself sends, redirected by the data path at one egress to another
/// where the data path is attached too, leaves that second egress as it is. The router's
/// route to the service goes via up1; a policy without input interface sends the datagrams
/// to up2 instead, and it would match them again at up2's egress. N datagrams from the
/// router each arrive once, at up2, and the policy counts each once, IPv4 and IPv6.
#[test]
fn locally_sent_packets_redirected_at_an_egress_are_not_classified_again() {
    const N: u64 = 3;
    const PORT: u16 = 7203;
    let l = Lab::new(Setup {
        label: "local-egress",
        egress_up1: true,
        egress_up2: true,
        service_routes: true,
        ..Setup::default()
    });
    l.apply(
        "local-egress.json",
        &format!(
            r#"{{ "id": "to-up2", "priority": 10, "match": {{ "proto": "udp", "dport": {PORT} }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    for (i, v6) in [false, true].into_iter().enumerate() {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let bind = |ns: &NetnsGuard| {
            in_ns(&ns.handle(), "bind in an upstream", || {
                UdpSocket::bind(SocketAddr::new(svc(v6), PORT))
            })
        };
        // Up2's neighbour entry first: a redirect from an egress hook to a neighbour not yet
        // resolved loses the packet (a limit the README describes).
        let gw = if v6 {
            RouterLab::UP2_6
        } else {
            RouterLab::UP2_4
        };
        let r = &l.lab.router.name;
        run::must("ip", &["netns", "exec", r, "ping", "-c1", "-W2", gw]);
        let (rx, elsewhere) = (bind(&l.lab.up2), bind(&l.lab.up1));
        elsewhere.set_nonblocking(true).unwrap();
        let unspecified: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let tx = in_ns(&l.lab.router.handle(), "bind in the router", || {
            UdpSocket::bind(SocketAddr::new(unspecified, 0))
        });
        send_numbered(&tx, SocketAddr::new(svc(v6), PORT), N as u8);
        receive_numbered_once(&rx, N as u8, &format!("{fam} at up2"), String::new);
        assert!(
            elsewhere.recv(&mut [0u8; 64]).is_err(),
            "{fam}: a datagram reached up1"
        );
        let stats = l.dp.stats();
        assert_eq!(
            policy(&stats, "to-up2")["packets"],
            (i as u64 + 1) * N,
            "{fam}: each datagram matched once: {stats}"
        );
    }
}

/// A packet the data path sends back out of the interface it came in by (hairpin), with
/// the data path attached at that egress too, leaves as it is: a policy without input
/// interface would match it there again. The client sends datagrams to 10.9.0.77 (routed
/// via the router); a policy forwards them back to the client, which takes packets for
/// that address that come in from the router (a local route in a table its input-interface
/// rule selects; `accept_local`, since their source is its own address). Each arrives once
/// and is counted once.
#[test]
fn hairpin_packets_are_not_classified_again_at_an_attached_egress() {
    const N: u64 = 3;
    const PORT: u16 = 7204;
    const DST: &str = "10.9.0.77";
    let l = Lab::new(Setup {
        label: "hairpin",
        egress_client: true,
        ..Setup::default()
    });
    l.apply(
        "hairpin.json",
        &format!(
            r#"{{ "id": "hairpin", "priority": 10, "match": {{ "proto": "udp", "dport": {PORT} }}, "action": {{ "type": "forward", "next_hop": "client" }} }}"#
        ),
    );
    // In the client namespace, removed with it.
    let (cl, veth) = (&l.lab.client.name, &l.lab.client_link.b);
    for args in [
        vec!["rule", "add", "iif", veth, "lookup", "100"],
        vec!["route", "add", "local", DST, "dev", "lo", "table", "100"],
    ] {
        let mut all = vec!["-n", cl.as_str()];
        all.extend(args);
        run::must("ip", &all);
    }
    let _sysctls = ["all", veth.as_str()]
        .map(|dev| SysctlGuard::new(cl, &format!("net.ipv4.conf.{dev}.accept_local"), "1"));
    let rx = in_ns(&l.lab.client.handle(), "bind in the client", || {
        UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), PORT))
    });
    let tx = in_ns(&l.lab.client.handle(), "bind in the client", || {
        UdpSocket::bind(SocketAddr::new(client_addr(false), 0))
    });
    send_numbered(&tx, SocketAddr::new(DST.parse().unwrap(), PORT), N as u8);
    receive_numbered_once(&rx, N as u8, "back at the client", String::new);
    let stats = l.dp.stats();
    assert_eq!(
        policy(&stats, "hairpin")["packets"],
        N,
        "each datagram matched once: {stats}"
    );
}

/// `pktpath trace --route-pin-dir` shows the data path's decision as a `tc:pktpath` hop of
/// the packet's journey, between its receive on the router's input interface and its
/// transmit on the output one, naming the policy, the action and the outcome; requests and
/// replies alike.
#[test]
fn trace_shows_the_fast_path_decision_in_the_journey() {
    let l = Lab::new(Setup {
        label: "trace-tc",
        ..Setup::default()
    });
    let c = l.to_client();
    l.apply(
        "icmp.json",
        &format!(
            r#"{{ "id": "icmp-up1", "priority": 10, "match": {{ "iif": "{c}", "proto": "icmp" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
        ),
    );
    let (stdout, outs) = traced_ping(
        &l,
        "json",
        "6",
        &[&["-4", "-c", "3", "-i", "0.2", "-W", "5", SVC4]],
    );
    assert!(outs[0].contains("3 received"), "{}", outs[0]);
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e["hook"] == "tc:pktpath")
        .collect();
    let up1 = &l.lab.up1_link.a;
    for (id, iif, egress) in [("icmp-up1", c, up1.as_str()), ("back-v4", up1.as_str(), c)] {
        let mine: Vec<&&Value> = decisions
            .iter()
            .filter(|d| d["tc"]["policy"] == id)
            .collect();
        assert_eq!(mine.len(), 3, "three decisions by {id}:\n{stdout}");
        for d in mine {
            assert_eq!(d["ifname"], iif, "{d}");
            assert_eq!(d["tc"]["action"], "forward", "{d}");
            assert_eq!(d["tc"]["outcome"], "forwarded", "{d}");
            assert_eq!(d["proto"], "icmp", "the packet's headers repeated: {d}");
            // Its journey: received on the input interface just before, sent on the output
            // interface after.
            let journey: Vec<&Value> = events
                .iter()
                .filter(|e| e["packet_id"] == d["packet_id"])
                .collect();
            let at = journey.iter().position(|e| e == d).unwrap();
            assert!(
                journey[..at]
                    .iter()
                    .any(|e| e["hook"] == "netif_receive_skb" && e["ifname"] == iif),
                "received on {iif} before the decision: {journey:?}"
            );
            assert!(
                journey[at + 1..]
                    .iter()
                    .any(|e| e["hook"] == "net_dev_xmit" && e["ifname"] == egress),
                "sent on {egress} after the decision: {journey:?}"
            );
        }
    }
}

/// A `pktpath trace --route-pin-dir` running in the router namespace while `args` are
/// pinged from the client, for `secs` seconds: its stdout once it ended, and each ping's
/// output.
fn traced_ping(l: &Lab, output: &str, secs: &str, pings: &[&[&str]]) -> (String, Vec<String>) {
    let pin = l.dp.pin.path.display().to_string();
    let router = l.lab.router.name.clone();
    let args = [
        "trace",
        "icmp",
        "--netns",
        &router,
        "--output",
        output,
        "--route-pin-dir",
        &pin,
        "--duration",
        secs,
    ];
    let mut outs = Vec::new();
    let stdout = common::trace_while(&args, || {
        for args in pings {
            let out = ping(&l.lab.client.name, args);
            assert!(out.contains("received"), "{args:?}: {out}");
            outs.push(out);
        }
    });
    (stdout, outs)
}

/// The trace shows when the fast path hands a packet to the stack with its policy's
/// slow-path mark: echo requests with a record-route option, matched by a policy that
/// forwards to up2, are `forward -> passed via stack following the policy` in text and
/// `"via_stack": true` in JSON; the plain echoes of the same policy are forwarded, and
/// are not.
#[test]
fn trace_shows_a_packet_handed_to_the_stack_following_its_policy() {
    let l = Lab::new(Setup {
        label: "trace-via",
        forwarding: true,
        service_routes: true,
        ..Setup::default()
    });
    let c = l.to_client().to_owned();
    l.apply(
        "via.json",
        &format!(
            r#"{{ "id": "icmp-up2", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}" }}, "action": {{ "type": "forward", "next_hop": "up2" }} }}"#
        ),
    );
    let plain: &[&str] = &["-4", "-c", "2", "-i", "0.2", "-W", "5", SVC4];
    let rr: &[&str] = &["-4", "-c", "2", "-i", "0.2", "-W", "5", "-R", SVC4];

    let (stdout, _) = traced_ping(&l, "json", "5", &[plain, rr]);
    let decisions: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|e| e["hook"] == "tc:pktpath" && e["tc"]["policy"] == "icmp-up2")
        .collect();
    let seen: Vec<(&str, bool)> = decisions
        .iter()
        .map(|d| {
            (
                d["tc"]["outcome"].as_str().unwrap_or("?"),
                d["tc"]["via_stack"]
                    .as_bool()
                    .expect("via_stack is a boolean"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("forwarded", false),
            ("forwarded", false),
            ("passed", true),
            ("passed", true)
        ],
        "plain echoes forwarded, record-route ones via the stack:\n{stdout}"
    );

    let (stdout, _) = traced_ping(&l, "text", "3", &[rr]);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("tc:pktpath") && line.contains("icmp-up2"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        assert!(
            line.contains(
                "policy icmp-up2 (priority 10) forward -> passed via stack following the policy"
            ),
            "{line}"
        );
    }
}
