//! One journey through header rewrites, on real pings in fresh namespaces: a router that
//! DNATs and masquerades (nftables), and tunnels between two namespaces (VXLAN; GRE, gretap,
//! IPIP, ip6gre and ip6tnl where `pktpath doctor` finds the link type, and otherwise a check
//! that doctor reports it missing). The `sk_buff` is the same throughout; the journey follows
//! it by the fields a rewrite keeps, and the event that first shows the new headers says what
//! they were.

use std::time::{Duration, Instant};

use serde_json::json;

use pktpath_common::trace::Hook;
use pktpath_core::{
    doctor,
    trace::{Event, TraceConfig, filter::compile_filter},
};
use pktpath_tests::{
    AddrGuard, LinkGuard, NftTableGuard, RouterLab, TwoHosts, require_root, run, trace::Tracing,
};

/// The address the router answers for, translated to up1's.
const PUBLIC: &str = "10.1.0.100";

/// Traces with `cfg` while namespace `from` pings `dst` once (`what` says why it must be
/// answered), and returns the events of namespaces `here` up to an echo reply's free.
fn ping_traced(cfg: &TraceConfig, from: &str, dst: &str, here: &[u64], what: &str) -> Vec<Event> {
    let mut t = Tracing::start(cfg);
    assert_eq!(run::ping(from, dst, 1), 1, "{what}");
    t.collect(
        Duration::from_secs(5),
        |e| here.contains(&u64::from(e.netns)),
        |evs| {
            evs.iter()
                .any(|e| e.hook == Hook::KfreeSkb.name() && e.icmp_type == Some(0))
        },
    )
}

/// The journey of the ICMP echo `icmp_type` (8 request, 0 reply) sent (`net_dev_queue`)
/// from namespace `netns`: every event with its packet id.
fn journey_of(events: &[Event], icmp_type: u8, netns: u64) -> Vec<&Event> {
    let sent = events
        .iter()
        .find(|e| {
            e.hook == Hook::NetDevQueue.name()
                && e.icmp_type == Some(icmp_type)
                && u64::from(e.netns) == netns
        })
        .unwrap_or_else(|| panic!("no echo {icmp_type} sent from {netns}:\n{}", lines(events)));
    events
        .iter()
        .filter(|e| e.packet_id == sent.packet_id)
        .collect()
}

/// The events as text lines, for failure messages.
fn lines<'a>(events: impl IntoIterator<Item = &'a Event>) -> String {
    events
        .into_iter()
        .map(|e| e.to_text(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn addr(n: &Option<pktpath_core::trace::name::Name>) -> String {
    n.as_ref().map(|n| n.to_string()).unwrap_or_default()
}

/// The event of `events` with a rewrite, checked to name `before` and `after`
/// (`(src, dst)` each).
fn the_rewrite<'a>(events: &[&'a Event], before: (&str, &str), after: (&str, &str)) -> &'a Event {
    let rewritten: Vec<&&Event> = events.iter().filter(|e| e.rewrite.is_some()).collect();
    assert_eq!(rewritten.len(), 1, "one rewrite in {events:#?}");
    let e = rewritten[0];
    let r = e.rewrite.as_ref().expect("rewrite");
    assert_eq!(
        (addr(&r.src), addr(&r.dst)),
        (before.0.into(), before.1.into())
    );
    assert_eq!(
        (addr(&e.src), addr(&e.dst)),
        (after.0.into(), after.1.into())
    );
    let text = e.to_text(0);
    let says = format!(
        "rewrite: {} > {} becomes {} > {}",
        before.0, before.1, after.0, after.1
    );
    assert!(text.contains(&says), "{text}");
    let json = serde_json::to_value(e).expect("JSON");
    assert_eq!(json["rewrite"]["src"], before.0, "{json}");
    assert_eq!(json["rewrite"]["dst"], before.1, "{json}");
    e
}

/// The router lab with the router answering for [`PUBLIC`]: DNAT to up1 in prerouting,
/// masquerade out of up1's link in postrouting. Fields drop in order: rules, address, lab.
struct NatLab {
    _nat: NftTableGuard,
    _public: AddrGuard,
    lab: RouterLab,
}

impl NatLab {
    fn new() -> Self {
        let lab = RouterLab::new();
        let r = lab.router.name.as_str();
        let public = AddrGuard::new(r, &lab.client_link.a, &format!("{PUBLIC}/32"));
        let dnat = format!("ip daddr {PUBLIC} dnat to {}", RouterLab::UP1_4);
        let masquerade = format!("oifname \"{}\" masquerade", lab.up1_link.a);
        let nat = NftTableGuard::chains(
            r,
            "ip",
            &[
                (
                    "type nat hook prerouting priority dstnat;",
                    &[dnat.as_str()],
                ),
                (
                    "type nat hook postrouting priority srcnat;",
                    &[masquerade.as_str()],
                ),
            ],
        );
        Self {
            _nat: nat,
            _public: public,
            lab,
        }
    }
}

#[test]
fn trace_dnat_and_masquerade_keep_one_journey_each_way() {
    require_root();
    let nat_lab = NatLab::new();
    let lab = &nat_lab.lab;
    let here = [lab.client.inode(), lab.router.inode(), lab.up1.inode()];
    let cfg = TraceConfig {
        filter: compile_filter("icmp").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, PUBLIC, 1), 1, "NAT answers");
    let client = lab.client.inode();
    let events = t.collect(
        Duration::from_secs(5),
        |e| here.contains(&u64::from(e.netns)),
        |evs| {
            evs.iter().any(|e| {
                e.hook == Hook::KfreeSkb.name()
                    && e.icmp_type == Some(0)
                    && u64::from(e.netns) == client
            })
        },
    );
    // Neighbour resolution may free a copy of the first request (an skb of its own):
    // the journey is that of the request the client sent.
    let request = journey_of(&events, 8, client);
    for ns in [client, lab.router.inode(), lab.up1.inode()] {
        assert!(
            request.iter().any(|e| u64::from(e.netns) == ns),
            "the request's journey reaches netns {ns}:\n{}",
            lines(&events)
        );
    }
    let nat = the_rewrite(
        &request,
        (RouterLab::CLIENT4, PUBLIC),
        ("10.2.0.1", RouterLab::UP1_4),
    );
    assert_eq!(nat.ifname, lab.up1_link.a, "rewritten on the way out");
    assert_eq!(u64::from(nat.netns), lab.router.inode());

    let reply = journey_of(&events, 0, lab.up1.inode());
    assert!(
        reply
            .iter()
            .any(|e| e.hook == Hook::KfreeSkb.name() && u64::from(e.netns) == client),
        "the reply's journey ends in the client:\n{}",
        lines(&events)
    );
    the_rewrite(
        &reply,
        (RouterLab::UP1_4, "10.2.0.1"),
        (PUBLIC, RouterLab::CLIENT4),
    );
    // The router's input lookup, made after DNAT, is a hop of the request's journey.
    let lookup = events
        .iter()
        .find(|e| e.fib.is_some() && u64::from(e.netns) == lab.router.inode())
        .unwrap_or_else(|| panic!("no lookup in the router: {events:#?}"));
    assert_eq!(addr(&lookup.dst), RouterLab::UP1_4);
    assert_eq!(lookup.packet_id, request[0].packet_id);
}

#[test]
fn trace_vxlan_encapsulation_and_decapsulation_are_one_journey() {
    require_root();
    let lab = TwoHosts::new();
    let vxlan = |ns: &str, local: &str, remote: &str, dev: &str| {
        LinkGuard::new(
            ns,
            &[
                "type", "vxlan", "id", "42", "dstport", "4789", "local", local, "remote", remote,
                "dev", dev,
            ],
        )
    };
    let vx_a = vxlan(&lab.a.name, TwoHosts::A4, TwoHosts::B4, &lab.link.a);
    let vx_b = vxlan(&lab.b.name, TwoHosts::B4, TwoHosts::A4, &lab.link.b);
    let _addrs = [
        AddrGuard::new(&lab.a.name, &vx_a.name, "10.78.0.1/24"),
        AddrGuard::new(&lab.b.name, &vx_b.name, "10.78.0.2/24"),
    ];
    let here = [lab.a.inode(), lab.b.inode()];
    let cfg = TraceConfig {
        filter: compile_filter("host 10.78.0.1 or udp port 4789").expect("filter"),
        ..TraceConfig::default()
    };
    let events = ping_traced(&cfg, &lab.a.name, "10.78.0.2", &here, "the tunnel works");
    // The request's journey: sent on vx_a, encapsulated, received on b's underlay,
    // decapsulated onto vx_b, consumed in b.
    let journey = journey_of(&events, 8, lab.a.inode());
    assert_eq!(journey[0].ifname, vx_a.name, "sent on the tunnel");
    let encap = journey
        .iter()
        .find(|e| e.dport == Some(4789))
        .unwrap_or_else(|| panic!("no encapsulated hop in\n{}", lines(&events)));
    assert_eq!(encap.ifname, lab.link.a);
    let r = encap.rewrite.as_ref().expect("encapsulation shown");
    assert_eq!(
        (addr(&r.src), addr(&r.dst)),
        ("10.78.0.1".into(), "10.78.0.2".into())
    );
    let decap = journey
        .iter()
        .find(|e| e.ifname == vx_b.name && e.icmp_type == Some(8))
        .unwrap_or_else(|| panic!("not decapsulated onto {}:\n{}", vx_b.name, lines(&events)));
    let r = decap.rewrite.as_ref().expect("decapsulation shown");
    assert_eq!(r.dport, Some(4789), "{r:?}");
    assert_eq!(addr(&r.src), TwoHosts::A4);
    assert!(
        journey
            .iter()
            .any(|e| e.hook == Hook::ConsumeSkb.name() && u64::from(e.netns) == lab.b.inode()),
        "consumed in b:\n{}",
        lines(&events)
    );
}

/// Inside addresses of the tunnel tests below.
const INNER_A: &str = "10.79.0.1";
const INNER_B: &str = "10.79.0.2";

/// A tunnel link of type `kind` in `ns` (`args` follow the type), or None where the kernel
/// has no such link type: then `pktpath doctor` must report it missing, as it must report
/// present a type the kernel has.
fn tunnel_or_doctors_word(ns: &str, kind: &str, args: &[&str]) -> Option<LinkGuard> {
    let mut all = vec!["type", kind];
    all.extend_from_slice(args);
    let id = format!("tunnel_{kind}");
    let doctor_says = doctor::probe(&id);
    match LinkGuard::try_new(ns, &all) {
        Ok(link) => {
            assert!(
                doctor_says.is_ok(),
                "the kernel has {kind} links, doctor says not: {doctor_says:?}"
            );
            Some(link)
        }
        Err(e) if e.contains("Unknown device type") => {
            let why = doctor_says.expect_err(&format!(
                "`ip link` knows no {kind} links ({e}), doctor says it does"
            ));
            assert!(why.contains("EOPNOTSUPP"), "doctor on {kind}: {why}");
            eprintln!(
                "no {kind} links in this kernel, as doctor reports ({why}): journey not traced"
            );
            None
        }
        Err(e) => panic!("{kind} link: {e}"),
    }
}

/// An address as the text view shows it, with its port when it has one (VXLAN's UDP).
fn shown(addr: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
        Some(p) => format!("{addr}:{p}"),
        None => addr.to_owned(),
    }
}

/// The underlay: IPv4 (`TwoHosts::A4`, `B4`) or IPv6 (`A6`, `B6`).
#[derive(Clone, Copy)]
enum Underlay {
    V4,
    V6,
}

impl Underlay {
    fn addrs(self) -> (&'static str, &'static str) {
        match self {
            Self::V4 => (TwoHosts::A4, TwoHosts::B4),
            Self::V6 => (TwoHosts::A6, TwoHosts::B6),
        }
    }
}

/// A tunnel of type `kind` (`extra` arguments after local and remote) between the two
/// hosts over `underlay`, [`INNER_A`] pinging [`INNER_B`] through it once: the request's
/// journey is one `packet_id` from the tunnel in a, through its encapsulation on a's
/// underlay, the outer packet's hops and its decapsulation onto the tunnel in b, to its
/// consumption in b; the text view names the headers before and after at both changes.
fn trace_tunnel_journey(kind: &str, underlay: Underlay, extra: &[&str]) {
    require_root();
    let lab = TwoHosts::new();
    let (out_a, out_b) = underlay.addrs();
    let mut args_a = vec!["local", out_a, "remote", out_b];
    args_a.extend_from_slice(extra);
    let Some(tun_a) = tunnel_or_doctors_word(&lab.a.name, kind, &args_a) else {
        return;
    };
    let mut args_b = vec!["type", kind, "local", out_b, "remote", out_a];
    args_b.extend_from_slice(extra);
    let tun_b = LinkGuard::new(&lab.b.name, &args_b);
    let _addrs = [
        AddrGuard::new(&lab.a.name, &tun_a.name, &format!("{INNER_A}/24")),
        AddrGuard::new(&lab.b.name, &tun_b.name, &format!("{INNER_B}/24")),
    ];
    let here = [lab.a.inode(), lab.b.inode()];
    let cfg = TraceConfig {
        filter: compile_filter(&format!("host {INNER_A} or host {out_a}")).expect("filter"),
        ..TraceConfig::default()
    };
    let events = ping_traced(
        &cfg,
        &lab.a.name,
        INNER_B,
        &here,
        &format!("the {kind} tunnel works"),
    );
    let journey = journey_of(&events, 8, lab.a.inode());
    assert_eq!(journey[0].ifname, tun_a.name, "sent on the tunnel");
    // Encapsulated: the first hop of a packet (not a route lookup) with the outer headers.
    let encap = journey
        .iter()
        .find(|e| e.fib.is_none() && addr(&e.src) == out_a)
        .unwrap_or_else(|| panic!("no encapsulated hop in\n{}", lines(&events)));
    assert_eq!(encap.ifname, lab.link.a, "encapsulated onto a's underlay");
    assert_eq!(addr(&encap.dst), out_b);
    let r = encap.rewrite.as_ref().expect("encapsulation shown");
    assert_eq!(
        (addr(&r.src), addr(&r.dst)),
        (INNER_A.into(), INNER_B.into())
    );
    let says = format!(
        "rewrite: {INNER_A} > {INNER_B} becomes {} > {}",
        shown(out_a, encap.sport),
        shown(out_b, encap.dport)
    );
    assert!(encap.to_text(0).contains(&says), "{}", encap.to_text(0));
    let json = serde_json::to_value(encap).expect("JSON");
    assert_eq!(json["rewrite"]["src"], INNER_A, "{json}");
    assert_eq!(json["packet_id"], json!(journey[0].packet_id), "{json}");
    // The outer packet's hops: received on b's underlay.
    assert!(
        journey
            .iter()
            .any(|e| e.ifname == lab.link.b && addr(&e.src) == out_a),
        "the outer packet reaches b's underlay:\n{}",
        lines(&events)
    );
    // Decapsulated onto b's tunnel.
    let decap = journey
        .iter()
        .find(|e| e.ifname == tun_b.name && e.icmp_type == Some(8))
        .unwrap_or_else(|| panic!("not decapsulated onto {}:\n{}", tun_b.name, lines(&events)));
    let r = decap.rewrite.as_ref().expect("decapsulation shown");
    assert_eq!((addr(&r.src), addr(&r.dst)), (out_a.into(), out_b.into()));
    let says = format!(
        "rewrite: {} > {} becomes {INNER_A} > {INNER_B}",
        shown(out_a, r.sport),
        shown(out_b, r.dport)
    );
    assert!(decap.to_text(0).contains(&says), "{}", decap.to_text(0));
    assert!(
        journey
            .iter()
            .any(|e| e.hook == Hook::ConsumeSkb.name() && u64::from(e.netns) == lab.b.inode()),
        "consumed in b:\n{}",
        lines(&events)
    );
}

/// The check the other tunnels get, on the tunnel this kernel surely has: proof that it
/// passes where the journey is followed.
#[test]
fn trace_vxlan_in_the_common_tunnel_check() {
    trace_tunnel_journey("vxlan", Underlay::V4, &["id", "42", "dstport", "4789"]);
}

/// VXLAN over IPv6: its headers before the inner packet's transport header take 90 bytes
/// (40 + 8 + 8 + 14 + 20), the inner ICMP sequence ends at 98.
#[test]
fn trace_vxlan_over_ipv6_is_one_journey() {
    trace_tunnel_journey("vxlan", Underlay::V6, &["id", "42", "dstport", "4789"]);
}

#[test]
fn trace_gre_encapsulation_and_decapsulation_are_one_journey() {
    trace_tunnel_journey("gre", Underlay::V4, &["ttl", "64"]);
}

#[test]
fn trace_gre_with_key_and_sequence_numbers_is_one_journey() {
    trace_tunnel_journey("gre", Underlay::V4, &["key", "42", "seq", "csum"]);
}

#[test]
fn trace_gretap_encapsulation_and_decapsulation_are_one_journey() {
    trace_tunnel_journey("gretap", Underlay::V4, &[]);
}

#[test]
fn trace_ipip_encapsulation_and_decapsulation_are_one_journey() {
    trace_tunnel_journey("ipip", Underlay::V4, &["ttl", "64"]);
}

#[test]
fn trace_ip6gre_encapsulation_and_decapsulation_are_one_journey() {
    trace_tunnel_journey("ip6gre", Underlay::V6, &[]);
}

#[test]
fn trace_ip6tnl_encapsulation_and_decapsulation_are_one_journey() {
    trace_tunnel_journey("ip6tnl", Underlay::V6, &["mode", "any"]);
}

/// Traces `host PUBLIC` (the address before DNAT) in the NAT lab, tracking as `track` says,
/// while the client pings once; returns the request's events in up1, after the rewrite.
fn requests_in_up1(nat_lab: &NatLab, track: bool) -> Vec<Event> {
    let lab = &nat_lab.lab;
    let cfg = TraceConfig {
        filter: compile_filter(&format!("host {PUBLIC}")).expect("filter"),
        track,
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, PUBLIC, 1), 1, "NAT answers");
    let up1 = lab.up1.inode();
    // Until the request's free in up1, which either way is reported.
    let events = t.collect(
        Duration::from_secs(5),
        |e| u64::from(e.netns) == up1 && e.icmp_type == Some(8),
        |evs| evs.iter().any(|e| e.hook == Hook::ConsumeSkb.name()),
    );
    // Once the request, its reply and whatever else matched are freed, nothing is tracked
    // any more: the hooks stop looking skbs up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let tracked = loop {
        let n = t
            .collector
            .tracked()
            .expect("read the count of tracked skbs");
        if n == 0 || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        tracked, 0,
        "skbs still tracked after the ping's packets were freed"
    );
    events
}

#[test]
fn trace_a_filter_on_the_address_before_nat_follows_the_packet_after_it() {
    require_root();
    let nat_lab = NatLab::new();
    let tracked = requests_in_up1(&nat_lab, true);
    // Received and consumed in up1, with headers the filter does not match.
    for hook in [Hook::NetifReceiveSkb, Hook::ConsumeSkb] {
        let e = tracked
            .iter()
            .find(|e| e.hook == hook.name())
            .unwrap_or_else(|| panic!("no {} in up1:\n{}", hook.name(), lines(&tracked)));
        assert_eq!(addr(&e.dst), RouterLab::UP1_4, "{}", e.to_text(0));
    }
    // --no-track: only the free of the packet that matched is reported there.
    let untracked = requests_in_up1(&nat_lab, false);
    let hooks: Vec<&str> = untracked.iter().map(|e| e.hook).collect();
    assert_eq!(hooks, [Hook::ConsumeSkb.name()], "{}", lines(&untracked));
}
