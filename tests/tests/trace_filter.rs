//! The tracer's filter expression on real packets: known numbers of UDP datagrams (IPv4 and
//! IPv6, several ports) and pings (IPv4 and IPv6) go from one namespace to another, and for
//! each filter the distinct packets the tracer reports at `netif_receive_skb` on the
//! receiver are exactly the sent ones the filter matches.

use std::{collections::BTreeSet, time::Duration};

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Event, TraceConfig, filter::compile_filter};
use pktpath_tests::{TwoHosts, require_root, run, trace::Tracing};

/// Datagrams sent per (source, destination, port); pings per family.
const UDP: [(&str, &str, u16, usize); 3] = [
    ("10.77.0.1:0", "10.77.0.2", 5001, 3),
    ("10.77.0.1:0", "10.77.0.2", 5002, 2),
    ("[fd77::1]:0", "[fd77::2]", 5001, 2),
];
const PINGS: u32 = 2;

/// Sends the ground-truth traffic from `a` to `b`.
fn send(lab: &TwoHosts) {
    for (bind, dst, port, n) in UDP {
        let to = format!("{dst}:{port}");
        run::udp(
            &lab.a,
            bind,
            std::iter::repeat_n(to.as_str(), n),
            b"pktpath",
        );
    }
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, PINGS), PINGS);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B6, PINGS), PINGS);
}

/// Whether `e` is one of the packets [`send`] sent (not neighbour discovery, ARP, ...).
fn ours(e: &Event) -> bool {
    let echo_request = e.icmp_type == Some(8) && e.proto == "icmp"
        || e.icmp_type == Some(128) && e.proto == "icmp6";
    let datagram = e.proto == "udp" && matches!(e.dport, Some(5001 | 5002));
    echo_request || datagram
}

/// Traces `filter` in namespace b at netif_receive_skb while [`send`] runs; `expected` is
/// how many of the sent packets match, `holds` an independent statement of the filter that
/// every reported packet (ours or not) must satisfy.
fn check(lab: &TwoHosts, filter: &str, expected: usize, holds: impl Fn(&Event) -> bool) {
    let ns_b = lab.b.inode();
    let cfg = TraceConfig {
        netns: Some(u32::try_from(ns_b).expect("32-bit inode")),
        // The frees end each skb's journey, so a reused skb address is a new packet id.
        hooks: vec![Hook::NetifReceiveSkb, Hook::KfreeSkb, Hook::ConsumeSkb],
        filter: compile_filter(filter).expect("filter compiles"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    send(lab);
    let here = |e: &Event| e.hook == Hook::NetifReceiveSkb.name() && e.ifname == lab.link.b;
    let distinct = |evs: &[Event]| {
        evs.iter()
            .filter(|e| ours(e))
            .map(|e| e.packet_id)
            .collect::<BTreeSet<_>>()
            .len()
    };
    let mut events = t.collect(Duration::from_secs(5), here, |evs| {
        distinct(evs) >= expected
    });
    // Anything the filter wrongly lets through would arrive by now.
    events.extend(t.collect(Duration::from_millis(300), here, |_| false));
    for e in &events {
        assert!(holds(e), "`{filter}` let through {e:#?}");
    }
    assert_eq!(
        distinct(&events),
        expected,
        "`{filter}`: distinct sent packets seen; events {events:#?}"
    );
}

#[test]
fn trace_filters_select_exactly_the_matching_packets() {
    require_root();
    let lab = TwoHosts::new();
    // Neighbours resolved before tracing, so the counted traffic flows at once.
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 1), 1);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B6, 1), 1);

    let udp = |e: &Event| e.proto == "udp";
    let icmp_any = |e: &Event| e.proto == "icmp" || e.proto == "icmp6";
    let v4_b = |e: &Event| {
        e.src.as_deref() == Some(TwoHosts::B4) || e.dst.as_deref() == Some(TwoHosts::B4)
    };
    check(&lab, "udp and dst port 5001", 5, |e| {
        udp(e) && e.dport == Some(5001)
    });
    check(&lab, "icmp or icmp6", 2 * PINGS as usize, icmp_any);
    check(&lab, "not udp", 2 * PINGS as usize, |e| !udp(e));
    check(
        &lab,
        "host 10.77.0.2 and (udp or icmp)",
        5 + PINGS as usize,
        |e| v4_b(e) && (udp(e) || e.proto == "icmp"),
    );
    check(&lab, "src net fd77::/64 and udp", 2, |e| {
        udp(e) && e.src.as_deref().is_some_and(|s| s.starts_with("fd77:"))
    });
    check(
        &lab,
        "portrange 5002-5010 or (ip6 and icmp6)",
        2 + PINGS as usize,
        |e| udp(e) && e.dport == Some(5002) || e.proto == "icmp6",
    );
    // Filters with an address guard (IPv4 packets that fail it are rejected on their
    // addresses alone, see `pktpath_common::guard`): the source and destination words the
    // same way round as the expression, a prefix, a second address, no IPv4 at all.
    check(&lab, "src host 10.77.0.1 and udp", 5, |e| {
        udp(e) && e.src.as_deref() == Some(TwoHosts::A4)
    });
    check(&lab, "dst host 10.77.0.1", 0, |e| {
        e.dst.as_deref() == Some(TwoHosts::A4)
    });
    check(&lab, "dst net 10.77.0.0/24 and icmp", PINGS as usize, |e| {
        e.proto == "icmp" && e.dst.as_deref().is_some_and(|d| d.starts_with("10.77.0."))
    });
    check(
        &lab,
        "host 10.77.0.9 or dst host 10.77.0.2",
        5 + PINGS as usize,
        |e| e.dst.as_deref() == Some(TwoHosts::B4),
    );
    check(&lab, "ip6 and udp", 2, |e| {
        udp(e) && e.src.as_deref() == Some(TwoHosts::A6)
    });
    // Guards on ports (the word after the IPv4 header): either port, IPv6 untouched; the
    // destination half of the word (the sources are ephemeral ports).
    check(&lab, "port 5001", 5, |e| {
        udp(e) && (e.dport == Some(5001) || e.sport == Some(5001))
    });
    check(&lab, "dst portrange 5002-5003", 2, |e| {
        udp(e) && e.dport.is_some_and(|p| (5002..=5003).contains(&p))
    });
}

/// The kernel remembers the filter's verdict per header signature (per CPU) and reuses it at
/// the packet's next hooks and for the flow's next packets. Datagrams alternating between
/// two ports, otherwise alike (same socket, size and addresses, so the kernel reuses the
/// same skbs and buffers), must still be told apart at every hook on both ends: each one to
/// port 5001 is reported at the sender's queue and the receiver's receive hook, none to
/// port 5002 anywhere.
#[test]
fn trace_filter_verdicts_are_not_mixed_up_between_alike_packets() {
    require_root();
    let lab = TwoHosts::new();
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 1), 1);
    const EACH: usize = 300;
    let cfg = TraceConfig {
        hooks: vec![
            Hook::NetDevQueue,
            Hook::NetDevStartXmit,
            Hook::NetifRx,
            Hook::NetifReceiveSkb,
            Hook::ConsumeSkb,
            Hook::KfreeSkb,
        ],
        filter: compile_filter("udp and dst port 5001").expect("filter compiles"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let to = (0..2 * EACH).map(|i| {
        let port = if i % 2 == 0 { 5001 } else { 5002 };
        format!("{}:{port}", TwoHosts::B4)
    });
    run::udp(&lab.a, "10.77.0.1:0", to, b"alike");
    let ours = |e: &Event| e.proto == "udp" && e.src.as_deref() == Some("10.77.0.1");
    let at = |evs: &[Event], hook: Hook, ifname: &str| {
        evs.iter()
            .filter(|e| e.hook == hook.name() && e.ifname == ifname)
            .count()
    };
    let (a_if, b_if) = (lab.link.a.clone(), lab.link.b.clone());
    let mut events = t.collect(Duration::from_secs(5), ours, |evs| {
        at(evs, Hook::NetifReceiveSkb, &b_if) >= EACH && at(evs, Hook::NetDevQueue, &a_if) >= EACH
    });
    events.extend(t.collect(Duration::from_millis(300), ours, |_| false));
    for e in &events {
        assert_eq!(e.dport, Some(5001), "the filter let through {e:#?}");
    }
    assert_eq!(
        at(&events, Hook::NetDevQueue, &a_if),
        EACH,
        "sender's queue"
    );
    assert_eq!(
        at(&events, Hook::NetDevStartXmit, &a_if),
        EACH,
        "sender's transmit"
    );
    assert_eq!(at(&events, Hook::NetifReceiveSkb, &b_if), EACH, "receiver");
}
