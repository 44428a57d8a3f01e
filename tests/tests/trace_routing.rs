//! `pktpath trace`'s routing and queueing hooks on real packets: a ping through a router
//! namespace shows the router's routing table lookup (table, result, output device) inside
//! the forwarded packet's journey, between its receive and its transmit, for IPv4 and
//! IPv6; a qdisc on the router's upstream interface shows the packet's enqueue and dequeue
//! there. A lookup for a locally generated packet opens the journey the packet continues.

use std::time::Duration;

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Event, TraceConfig, filter::compile_filter};
use pktpath_tests::{
    RootQdiscGuard, RouterLab, require_root, run,
    trace::{Tracing, hooks, position},
};

fn forwarded(v6: bool) {
    require_root();
    let lab = RouterLab::new();
    let router = u32::try_from(lab.router.inode()).expect("32-bit inode");
    let client = u32::try_from(lab.client.inode()).expect("32-bit inode");
    let up_if = lab.up1_link.a.as_str();
    let ix_out = run::ifindex(&lab.router.name, up_if);
    // tbf always queues (a fifo on an idle device is bypassed, with no enqueue event).
    let _qdisc = RootQdiscGuard::new(
        &lab.router.name,
        up_if,
        &[
            "handle", "8:", "tbf", "rate", "1gbit", "burst", "100k", "latency", "10ms",
        ],
    );
    let (dst, fib_hook, echo_request) = if v6 {
        (RouterLab::UP1_6, Hook::Fib6TableLookup, 128)
    } else {
        (RouterLab::UP1_4, Hook::FibTableLookup, 8)
    };
    // Resolve neighbours first, so the traced request is forwarded at once.
    assert_eq!(run::ping(&lab.client.name, dst, 1), 1);
    // Limited to the router in the kernel: other tests' traffic cannot crowd the ring.
    let cfg = TraceConfig {
        hooks: Hook::ALL.to_vec(),
        netns: Some(router),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, dst, 1), 1);
    let ours = |e: &Event| e.netns == router || e.netns == client;
    let events = t.collect(Duration::from_secs(5), ours, |evs| {
        evs.iter()
            .any(|e| e.netns == router && e.hook == "net_dev_xmit" && e.dst.as_deref() == Some(dst))
    });
    let id = events
        .iter()
        .find(|e| e.netns == router && e.icmp_type == Some(echo_request))
        .map(|e| e.packet_id)
        .unwrap_or_else(|| panic!("no echo request in the router: {events:#?}"));
    let j: Vec<&Event> = events.iter().filter(|e| e.packet_id == id).collect();
    let seq = hooks(&j);

    // In the router: receive, lookup, queue, enqueue, dequeue, send.
    let recv = j
        .iter()
        .position(|e| e.hook == "netif_receive_skb" && e.netns == router)
        .unwrap_or_else(|| panic!("no receive in the router: {seq:?}"));
    // IPv6 may look in the local table first (unreachable there), then in main.
    let lookup = recv
        + j[recv..]
            .iter()
            .position(|e| {
                e.hook == fib_hook.name() && e.fib.as_ref().is_some_and(|f| f.result == "ok")
            })
            .unwrap_or_else(|| panic!("no routed {} after the receive: {seq:?}", fib_hook.name()));
    let enq = position(&j, Hook::QdiscEnqueue);
    let deq = position(&j, Hook::QdiscDequeue);
    let xmit = j
        .iter()
        .rposition(|e| e.hook == "net_dev_xmit" && e.netns == router)
        .unwrap_or_else(|| panic!("no transmit in the router: {seq:?}"));
    assert!(
        recv < lookup && lookup < enq && enq < deq && deq < xmit,
        "{seq:?}"
    );

    let fib = j[lookup];
    let info = fib.fib.as_ref().expect("a lookup carries its result");
    assert_eq!(fib.netns, router, "{fib:?}");
    assert_eq!(info.result, "ok", "{fib:?}");
    assert_eq!(info.oif_name.as_deref(), Some(up_if), "{fib:?}");
    assert_eq!(info.oif_index, Some(ix_out), "{fib:?}");
    assert_eq!(fib.dst.as_deref(), Some(dst), "{fib:?}");
    assert!(fib.delta_ns.is_some(), "{fib:?}");
    if !v6 {
        // The router has no policy rules: main and local are searched as one table.
        assert_eq!(info.table, 254, "{fib:?}");
    }
    for e in [j[enq], j[deq]] {
        let q = e.qdisc.as_ref().expect("a qdisc event names its qdisc");
        assert_eq!((q.kind.as_str(), q.handle.as_str()), ("tbf", "8:"), "{e:?}");
        assert_eq!((e.ifname.as_str(), e.netns), (up_if, router), "{e:?}");
    }
}

#[test]
fn trace_router_lookup_and_qdisc_ipv4() {
    forwarded(false);
}

#[test]
fn trace_router_lookup_and_qdisc_ipv6() {
    forwarded(true);
}

/// A locally generated packet is routed before its skb exists: the sender's lookup opens
/// the journey its echo request continues.
#[test]
fn trace_local_lookup_opens_the_journey() {
    require_root();
    let lab = RouterLab::new();
    let client = u32::try_from(lab.client.inode()).expect("32-bit inode");
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let cfg = TraceConfig {
        netns: Some(client),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let events = t.collect(
        Duration::from_secs(5),
        |e| e.dst.as_deref() == Some(RouterLab::UP1_4),
        |evs| evs.iter().any(|e| e.hook == "net_dev_xmit"),
    );
    let xmit = events
        .iter()
        .find(|e| e.hook == "net_dev_xmit" && e.icmp_type == Some(8))
        .unwrap_or_else(|| panic!("no echo request sent: {events:#?}"));
    let j: Vec<&Event> = events
        .iter()
        .filter(|e| e.packet_id == xmit.packet_id)
        .collect();
    let seq = hooks(&j);
    let first = j[0];
    assert_eq!(
        (first.hook, first.netns),
        ("fib_table_lookup", client),
        "{seq:?}"
    );
    let info = first.fib.as_ref().expect("a lookup carries its result");
    assert_eq!(info.result, "ok", "{first:?}");
    assert_eq!(info.gateway.as_deref(), Some("10.1.0.1"), "{first:?}");
    assert_eq!(
        info.oif_name.as_deref(),
        Some(lab.client_link.b.as_str()),
        "{first:?}"
    );
    assert!(position(&j, Hook::NetDevQueue) > 0, "{seq:?}");
}

/// No route in the router: its lookup reports the failure, in the packet's journey (the
/// failed IPv4 lookup names no device: the tracer takes the namespace of the packet just
/// received on that CPU, so the kernel's namespace filter keeps it).
#[test]
fn trace_router_lookup_without_a_route_reports_the_failure() {
    require_root();
    let lab = RouterLab::new();
    let router = u32::try_from(lab.router.inode()).expect("32-bit inode");
    let cfg = TraceConfig {
        netns: Some(router),
        hooks: vec![Hook::NetifReceiveSkb, Hook::FibTableLookup, Hook::KfreeSkb],
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    // 10.9.9.9 is routed by the client (its default route) but not by the router.
    assert_eq!(run::ping(&lab.client.name, "10.9.9.9", 1), 0);
    let events = t.collect(
        Duration::from_secs(5),
        |e| e.dst.as_deref() == Some("10.9.9.9"),
        |evs| evs.iter().any(|e| e.hook == "kfree_skb"),
    );
    let lookup = events
        .iter()
        .find(|e| e.hook == "fib_table_lookup")
        .unwrap_or_else(|| panic!("no lookup: {events:#?}"));
    let info = lookup.fib.as_ref().expect("a lookup carries its result");
    assert_ne!(info.result, "ok", "{lookup:?}");
    assert_eq!(info.oif_name, None, "{lookup:?}");
    let recv = events
        .iter()
        .find(|e| e.hook == "netif_receive_skb")
        .expect("the router received the packet");
    assert_eq!(lookup.packet_id, recv.packet_id, "{events:#?}");
}

/// A filter expression cannot judge an input route lookup (its flow names no protocol): the
/// lookup follows the verdict on the packet the router received just before it on that CPU.
/// A filter rejecting the forwarded ping reports none of its lookups (each would be an event
/// per forwarded packet, for user space to throw away); one keeping it reports the lookup in
/// the ping's journey.
#[test]
fn trace_filtered_input_lookups_follow_their_packet() {
    require_root();
    let lab = RouterLab::new();
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    for (filter, kept) in [("host 192.0.2.99", false), ("icmp", true)] {
        let hooks = vec![
            Hook::NetifReceiveSkb,
            Hook::FibTableLookup,
            Hook::NetDevXmit,
        ];
        let events = filtered_while_pinging_up1(&lab, hooks, filter);
        let lookups: Vec<&Event> = events
            .iter()
            .filter(|e| e.hook == "fib_table_lookup")
            .collect();
        if kept {
            assert!(!lookups.is_empty(), "`{filter}`: {events:#?}");
            for l in &lookups {
                assert!(
                    events
                        .iter()
                        .any(|e| e.hook == "netif_receive_skb" && e.packet_id == l.packet_id),
                    "`{filter}`: lookup outside a journey: {events:#?}"
                );
            }
        } else {
            assert!(events.is_empty(), "`{filter}`: {events:#?}");
        }
    }
}

/// The kernel's own route lookups (address type checks, such as the one ARP makes to pick
/// the source of its request) carry no input device and follow no packet: they are not
/// taken for the input lookup of the packet the CPU received just before, and a filter
/// judges them by their addresses alone (`icmp` drops them: they name no protocol). With
/// up1's address forgotten, the router resolves it while forwarding the first ping, right
/// after receiving it, on the same CPU.
#[test]
fn trace_the_kernels_own_lookups_do_not_follow_the_packet_received_before() {
    require_root();
    let lab = RouterLab::new();
    let router = u32::try_from(lab.router.inode()).expect("32-bit inode");
    let cfg = TraceConfig {
        hooks: vec![Hook::NetifReceiveSkb, Hook::FibTableLookup],
        netns: Some(router),
        filter: compile_filter("icmp").expect("filter compiles"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    run::in_ns(&lab.router.name, "ip", &["neigh", "flush", "all"]).expect("flush neighbours");
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let lookups = t.collect(
        Duration::from_secs(2),
        |e| e.hook == "fib_table_lookup",
        |_| false,
    );
    let iif = |e: &Event| e.fib.as_ref().map_or(0, |f| f.flow_iif);
    assert!(
        lookups.iter().any(|e| iif(e) != 0),
        "no input lookup of the ping: {lookups:#?}"
    );
    assert!(
        lookups.iter().all(|e| iif(e) != 0),
        "a lookup without an input device was reported in the router's namespace: {lookups:#?}"
    );
}

/// The events of the router's namespace toward up1 on `hooks`, with the filter expression
/// `filter`, while the client pings up1 three times (two seconds of them).
fn filtered_while_pinging_up1(lab: &RouterLab, hooks: Vec<Hook>, filter: &str) -> Vec<Event> {
    let router = u32::try_from(lab.router.inode()).expect("32-bit inode");
    let dst = RouterLab::UP1_4;
    let cfg = TraceConfig {
        hooks,
        netns: Some(router),
        filter: compile_filter(filter).expect("filter compiles"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.client.name, dst, 3), 3);
    t.collect(
        Duration::from_secs(2),
        |e| e.netns == router && e.dst.as_deref() == Some(dst),
        |_| false,
    )
}

/// Without `netif_receive_skb` nothing notes the packets for the input lookups: with a filter
/// expression those lookups (whose flows name no protocol to judge) are then all reported
/// for user space to join, not all dropped as following a rejected packet.
#[test]
fn trace_filtered_input_lookups_without_the_receive_hook_are_reported() {
    require_root();
    let lab = RouterLab::new();
    assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
    let hooks = vec![Hook::FibTableLookup, Hook::NetDevXmit];
    let events = filtered_while_pinging_up1(&lab, hooks, "icmp");
    assert!(
        events.iter().any(|e| e.hook == "fib_table_lookup"),
        "no input lookup of the forwarded pings: {events:#?}"
    );
}
