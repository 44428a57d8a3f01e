//! `pktpath trace` on real packets in fresh namespaces: every hop of a ping in order with the
//! right interfaces and namespaces (IPv4 and IPv6), a forwarded packet's journey through a
//! router, and a drop with the kernel's reason and a symbolized location.

use std::time::Duration;

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Event, TraceConfig};
use pktpath_tests::{
    RouterLab, TwoHosts, require_root, run,
    trace::{Tracing, hooks, position},
    txring,
};

/// Where a hook ran: (netns inode, interface, ifindex).
fn at(ev: &Event) -> (u64, &str, u32) {
    (u64::from(ev.netns), ev.ifname.as_str(), ev.ifindex)
}

/// The events of the first journey matching `first`, in ring order.
fn journey(events: &[Event], first: impl Fn(&Event) -> bool) -> Vec<&Event> {
    let Some(id) = events.iter().find(|e| first(e)).map(|e| e.packet_id) else {
        return Vec::new();
    };
    events.iter().filter(|e| e.packet_id == id).collect()
}

/// One echo request a -> b and its reply: both journeys show transmit on the sender's veth
/// end (its namespace, its ifindex) and then receive on the peer's, in that order, with
/// non-decreasing time; the reply comes after the request.
fn ping_hops(v6: bool) {
    require_root();
    let lab = TwoHosts::new();
    let (ns_a, ns_b) = (lab.a.inode(), lab.b.inode());
    let (ix_a, ix_b) = (
        run::ifindex(&lab.a.name, &lab.link.a),
        run::ifindex(&lab.b.name, &lab.link.b),
    );
    let (src, dst, proto) = if v6 {
        (TwoHosts::A6, TwoHosts::B6, "icmp6")
    } else {
        (TwoHosts::A4, TwoHosts::B4, "icmp")
    };
    // No in-kernel filter: both namespaces are watched, others are ignored here.
    let mut t = Tracing::start(&TraceConfig::default());
    assert_eq!(run::ping(&lab.a.name, dst, 1), 1, "ping {dst}");
    let is_echo = |e: &Event, ty4: u8, ty6: u8| {
        e.proto == proto && e.icmp_type == Some(if v6 { ty6 } else { ty4 })
    };
    let events = t.collect(
        Duration::from_secs(5),
        |e| [ns_a, ns_b].contains(&u64::from(e.netns)) && e.proto == proto,
        |evs| {
            evs.iter()
                .any(|e| is_echo(e, 0, 129) && e.hook == Hook::NetifReceiveSkb.name())
        },
    );
    // The journey that leaves through the stack (ping may also see copies consumed
    // elsewhere, e.g. by raw sockets).
    let queued = |e: &Event| e.hook == Hook::NetDevQueue.name();
    let request = journey(&events, |e| is_echo(e, 8, 128) && queued(e));
    let reply = journey(&events, |e| is_echo(e, 0, 129) && queued(e));
    assert!(!request.is_empty() && !reply.is_empty(), "saw {events:#?}");

    for (what, j, from, to) in [
        (
            "request",
            &request,
            (ns_a, lab.link.a.as_str(), ix_a),
            (ns_b, lab.link.b.as_str(), ix_b),
        ),
        (
            "reply",
            &reply,
            (ns_b, lab.link.b.as_str(), ix_b),
            (ns_a, lab.link.a.as_str(), ix_a),
        ),
    ] {
        let seq = hooks(j);
        let queue = position(j, Hook::NetDevQueue);
        let start = position(j, Hook::NetDevStartXmit);
        let xmit = position(j, Hook::NetDevXmit);
        let rx = position(j, Hook::NetifRx);
        let recv = position(j, Hook::NetifReceiveSkb);
        assert!(
            queue < start && start < xmit && start < rx && rx < recv,
            "{what}: {seq:?}"
        );
        for i in [queue, start, xmit] {
            assert_eq!(
                at(j[i]),
                from,
                "{what} {} on the sender side: {seq:?}",
                j[i].hook
            );
        }
        for i in [rx, recv] {
            assert_eq!(
                at(j[i]),
                to,
                "{what} {} on the receiver side: {seq:?}",
                j[i].hook
            );
        }
        for e in j.iter() {
            let (s, d) = if what == "request" {
                (src, dst)
            } else {
                (dst, src)
            };
            // A routing lookup made before source address selection has no source yet.
            let unsourced = e.fib.is_some() && matches!(e.src.as_deref(), Some("0.0.0.0" | "::"));
            assert_eq!(
                (
                    if unsourced { Some(s) } else { e.src.as_deref() },
                    e.dst.as_deref()
                ),
                (Some(s), Some(d)),
                "{what}"
            );
        }
        assert_eq!(j[0].delta_ns, None, "{what}: first hop has no delta");
        assert!(
            j.windows(2)
                .all(|w| w[1].ts_ns >= w[0].ts_ns && w[1].delta_ns.is_some()),
            "{what}: time goes forward along the journey"
        );
        let name_b = Some(lab.b.name.as_str());
        assert_eq!(
            j[recv].netns_name.as_deref() == name_b,
            to.0 == ns_b,
            "netns name"
        );
    }
    assert_ne!(request[0].packet_id, reply[0].packet_id);
    assert!(reply[0].ts_ns > request[0].ts_ns, "reply after request");
}

#[test]
fn trace_ping_hops_ipv4() {
    ping_hops(false);
}

#[test]
fn trace_ping_hops_ipv6() {
    ping_hops(true);
}

/// The ICMP events of the router's namespace on `hooks` while the client pings up1 once
/// (after a ping that resolves ARP, so the traced request is forwarded at once), until the
/// echo reply is seen at `last`.
fn trace_forwarded_ping(lab: &RouterLab, hooks: Vec<Hook>, last: Hook) -> Vec<Event> {
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let cfg = TraceConfig {
        hooks,
        netns: Some(u32::try_from(lab.router.inode()).expect("32-bit inode")),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    t.collect(
        Duration::from_secs(5),
        |e| e.proto == "icmp",
        |evs| {
            evs.iter()
                .any(|e| e.icmp_type == Some(0) && e.hook == last.name())
        },
    )
}

/// Through a router, filtered in the kernel to the router's namespace: one echo request is
/// received on the client-side interface and transmitted on the upstream one, as one
/// journey with growing time.
#[test]
fn trace_forwarded_journey_through_router() {
    require_root();
    let lab = RouterLab::new();
    let router = lab.router.inode();
    let ix_in = run::ifindex(&lab.router.name, &lab.client_link.a);
    let ix_out = run::ifindex(&lab.router.name, &lab.up1_link.a);
    let events = trace_forwarded_ping(&lab, Hook::DEFAULT.to_vec(), Hook::NetDevXmit);
    for e in &events {
        if e.hook != "kfree_skb" && e.hook != "consume_skb" {
            assert_eq!(
                u64::from(e.netns),
                router,
                "kernel netns filter let {e:?} through"
            );
        }
    }
    let j = journey(&events, |e| e.icmp_type == Some(8));
    let seq = hooks(&j);
    let recv = position(&j, Hook::NetifReceiveSkb);
    let out = position(&j, Hook::NetDevXmit);
    assert!(recv < out, "received before sent: {seq:?}");
    assert_eq!(
        (j[recv].ifname.as_str(), j[recv].ifindex),
        (lab.client_link.a.as_str(), ix_in),
        "{seq:?}"
    );
    assert_eq!(
        (j[out].ifname.as_str(), j[out].ifindex),
        (lab.up1_link.a.as_str(), ix_out),
        "{seq:?}"
    );
    assert_eq!(j[recv].packet_id, j[out].packet_id);
    assert!(j[recv + 1..=out].iter().all(|e| e.delta_ns.is_some()));
    assert!(
        j[out].ts_ns > j[recv].ts_ns,
        "time passes between receive and transmit"
    );
    assert!(
        j[recv + 1..=out]
            .iter()
            .any(|e| e.delta_ns.unwrap_or(0) > 0),
        "{seq:?}"
    );
    assert_eq!(j[out].dst.as_deref(), Some(RouterLab::UP1_4));
}

/// `--hooks hops` alone (no route lookups, no intermediate steps): the forwarded echo
/// request is still one journey, received on the client-side interface, then transmitted
/// on the upstream one, in that order and with the time between them.
#[test]
fn trace_hop_hooks_follow_a_forwarded_packet() {
    require_root();
    let lab = RouterLab::new();
    let events = trace_forwarded_ping(&lab, Hook::HOPS.to_vec(), Hook::NetDevStartXmit);
    let j = journey(&events, |e| e.icmp_type == Some(8));
    let seq = hooks(&j);
    assert!(
        j.iter()
            .all(|e| Hook::HOPS.iter().any(|h| h.name() == e.hook)),
        "{seq:?}"
    );
    let recv = position(&j, Hook::NetifReceiveSkb);
    let out = position(&j, Hook::NetDevStartXmit);
    assert!(recv < out, "received before sent: {seq:?}");
    assert_eq!(j[recv].ifname, lab.client_link.a, "{seq:?}");
    assert_eq!(j[out].ifname, lab.up1_link.a, "{seq:?}");
    assert_eq!(j[out].dst.as_deref(), Some(RouterLab::UP1_4));
    assert!(j[out].delta_ns.is_some_and(|d| d > 0), "{seq:?}");
}

/// A frame sent through an AF_PACKET TX ring (as trafgen sends) reaches the router with its
/// headers in page fragments: `netif_receive_skb` cannot read them (no addresses), the
/// transmit hooks after IP pulled them in can. It is one journey all the same.
#[test]
fn trace_tx_ring_frame_is_one_journey_though_its_headers_show_late() {
    const PORT: u16 = 7002;
    require_root();
    let lab = RouterLab::new();
    let router = lab.router.inode();
    // The router resolves up1 now, so the frame is forwarded at once.
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let cfg = TraceConfig {
        hooks: vec![Hook::NetifReceiveSkb, Hook::NetDevXmit],
        netns: Some(u32::try_from(router).expect("32-bit inode")),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let ip = |a: &str| a.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let frame = txring::udp_frame(
        txring::mac(&lab.router.name, &lab.client_link.a),
        txring::mac(&lab.client.name, &lab.client_link.b),
        ip(RouterLab::CLIENT4),
        ip(RouterLab::UP1_4),
        PORT,
        b"headers-in-frags",
    );
    let ifindex = run::ifindex(&lab.client.name, &lab.client_link.b);
    lab.client
        .handle()
        .run(|| txring::send(ifindex, &frame, 1))
        .expect("enter client")
        .expect("send through the TX ring");
    let sent = |e: &Event| e.hook == "net_dev_xmit" && e.dport == Some(PORT);
    let events = t.collect(Duration::from_secs(5), |_| true, |evs| evs.iter().any(sent));
    let out = events
        .iter()
        .find(|e| sent(e))
        .expect("the frame forwarded");
    let j: Vec<&Event> = events
        .iter()
        .filter(|e| e.packet_id == out.packet_id)
        .collect();
    let seq = hooks(&j);
    assert!(
        j.iter().any(|e| e.hook == "netif_receive_skb"),
        "{seq:?} in {events:#?}"
    );
    let recv = position(&j, Hook::NetifReceiveSkb);
    assert_eq!(j[recv].ifname, lab.client_link.a, "{seq:?}");
    assert_eq!(
        j[recv].src, None,
        "the headers are not linear at the receive hook (what this test is about): {seq:?}"
    );
    assert!(recv < position(&j, Hook::NetDevXmit), "{seq:?}");
}

/// A UDP datagram to a closed port is dropped by the kernel with NO_SOCKET, at a location
/// that resolves to a kernel symbol.
#[test]
fn trace_udp_to_closed_port_is_a_no_socket_drop() {
    require_root();
    let lab = TwoHosts::new();
    let ns_b = lab.b.inode();
    let cfg = TraceConfig {
        netns: Some(u32::try_from(ns_b).expect("32-bit inode")),
        hooks: vec![Hook::NetifReceiveSkb, Hook::KfreeSkb],
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let sport = run::udp(
        &lab.a,
        "10.77.0.1:0",
        [format!("{}:9", TwoHosts::B4)],
        b"pktpath",
    );
    let ours = |e: &Event| e.proto == "udp" && e.sport == Some(sport) && e.dport == Some(9);
    let events = t.collect(Duration::from_secs(5), ours, |evs| {
        evs.iter().any(|e| e.hook == "kfree_skb")
    });
    let drop = events
        .iter()
        .find(|e| e.hook == "kfree_skb")
        .unwrap_or_else(|| panic!("no drop among {events:#?}"));
    assert_eq!(drop.drop_reason.as_deref(), Some("NO_SOCKET"));
    let loc = drop.drop_location.as_deref().unwrap_or_default();
    assert!(
        !loc.is_empty() && !loc.starts_with("0x") && loc.contains("+0x"),
        "location `{loc}` is a symbol+offset"
    );
    assert_eq!(u64::from(drop.netns), ns_b);
    assert_eq!(drop.ifname, lab.link.b);
    assert_eq!(drop.dst.as_deref(), Some(TwoHosts::B4));
    let rx = events
        .iter()
        .find(|e| e.hook == "netif_receive_skb")
        .expect("the datagram was received first");
    assert_eq!(rx.packet_id, drop.packet_id);
    assert!(drop.delta_ns.is_some_and(|d| d > 0));
}
