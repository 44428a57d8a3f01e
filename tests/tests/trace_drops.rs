//! Drops the tracer reports with the kernel's own reason and a symbolized location, on real
//! packets in fresh namespaces: a flow dropped by an nftables rule, and a packet forwarded
//! towards a destination the router has no route to.

use std::time::Duration;

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Event, TraceConfig, filter::compile_filter};
use pktpath_tests::{NftTableGuard, RouterLab, TwoHosts, require_root, run, trace::Tracing};

/// The first `kfree_skb` among `events`, checked to carry a `symbol+0xoffset` location.
fn the_drop(events: &[Event]) -> &Event {
    let drop = events
        .iter()
        .find(|e| e.hook == Hook::KfreeSkb.name())
        .unwrap_or_else(|| panic!("no drop among {events:#?}"));
    let loc = drop.drop_location.as_deref().unwrap_or_default();
    assert!(
        !loc.is_empty() && !loc.starts_with("0x") && loc.contains("+0x"),
        "location `{loc}` is a symbol+offset"
    );
    drop
}

/// Sends one UDP datagram from namespace `ns` (bound to `from`) to `to`; returns its source
/// port.
fn send_udp(ns: &pktpath_tests::NetnsGuard, from: &str, to: &str) -> u16 {
    run::udp(ns, from, [to], b"pktpath")
}

#[test]
fn trace_nftables_drop_is_netfilter_drop() {
    require_root();
    let lab = TwoHosts::new();
    let _nft = NftTableGuard::input(&lab.b.name, &["udp dport 7001 drop"]);
    let cfg = TraceConfig {
        netns: Some(u32::try_from(lab.b.inode()).expect("32-bit inode")),
        hooks: vec![Hook::NetifReceiveSkb, Hook::KfreeSkb],
        filter: compile_filter("udp and dst port 7001").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let sport = send_udp(&lab.a, "10.77.0.1:0", &format!("{}:7001", TwoHosts::B4));
    let ours = |e: &Event| e.sport == Some(sport) && e.dport == Some(7001);
    let events = t.collect(Duration::from_secs(5), ours, |evs| {
        evs.iter().any(|e| e.hook == Hook::KfreeSkb.name())
    });
    let drop = the_drop(&events);
    assert_eq!(
        drop.drop_reason.as_deref(),
        Some("NETFILTER_DROP"),
        "{drop:#?}"
    );
    assert_eq!(drop.ifname, lab.link.b);
    assert_eq!(u64::from(drop.netns), lab.b.inode());
}

#[test]
fn trace_forwarding_without_a_route_names_the_reason() {
    require_root();
    let lab = RouterLab::new();
    // 10.9.9.9 is routed by the client to the router, which has no route for it. Linux 6.18
    // drops it in ip_error with IP_INNOROUTES (found by running this; the router answers
    // with ICMP host unreachable).
    let cfg = TraceConfig {
        netns: Some(u32::try_from(lab.router.inode()).expect("32-bit inode")),
        hooks: vec![Hook::NetifReceiveSkb, Hook::KfreeSkb],
        filter: compile_filter("udp and dst host 10.9.9.9").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let sport = send_udp(&lab.client, "10.1.0.2:0", "10.9.9.9:7002");
    let ours = |e: &Event| e.sport == Some(sport) && e.dport == Some(7002);
    let events = t.collect(Duration::from_secs(5), ours, |evs| {
        evs.iter().any(|e| e.hook == Hook::KfreeSkb.name())
    });
    let drop = the_drop(&events);
    eprintln!(
        "no-route drop: {:?} at {:?}",
        drop.drop_reason, drop.drop_location
    );
    assert_eq!(
        drop.drop_reason.as_deref(),
        Some("IP_INNOROUTES"),
        "{drop:#?}"
    );
    assert_eq!(drop.ifname, lab.client_link.a);
    assert_eq!(u64::from(drop.netns), lab.router.inode());
}

/// The frees of ICMP echo packets among `events` that happened in `a` or `b`.
fn echo_frees<'a>(events: &'a [Event], lab: &TwoHosts) -> Vec<&'a Event> {
    let here = [lab.a.inode(), lab.b.inode()];
    events
        .iter()
        .filter(|e| e.hook == Hook::KfreeSkb.name() || e.hook == Hook::ConsumeSkb.name())
        .filter(|e| here.contains(&u64::from(e.netns)))
        .collect()
}

#[test]
fn trace_a_lossless_ping_shows_deliveries_not_drops() {
    require_root();
    let lab = TwoHosts::new();
    // No namespace filter: the echo request ends in b, the reply in a.
    let cfg = TraceConfig {
        filter: compile_filter("icmp").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 3), 3, "no loss");
    let here = [lab.a.inode(), lab.b.inode()];
    let events = t.collect(
        Duration::from_secs(5),
        |e| here.contains(&u64::from(e.netns)),
        |evs| {
            evs.iter()
                .filter(|e| e.hook == Hook::KfreeSkb.name() && e.icmp_type == Some(0))
                .count()
                >= 3
        },
    );
    let frees = echo_frees(&events, &lab);
    // iputils' raw socket gets a clone of each reply; ping_rcv frees the original.
    let replies: Vec<&&Event> = frees.iter().filter(|e| e.icmp_type == Some(0)).collect();
    assert_eq!(replies.len(), 3, "{frees:#?}");
    for r in &replies {
        assert_eq!(r.drop_reason, None, "a delivered reply is no drop: {r:#?}");
        let d = r.delivered.as_ref().expect("delivered");
        assert_eq!(d.reason, "NO_SOCKET", "the kernel's reason stays visible");
        assert!(d.location.starts_with("ping_rcv+0x"), "{d:?}");
        assert!(
            r.to_text(0)
                .contains("DELIVERED to a socket (freed as NO_SOCKET at ping_rcv+0x")
        );
    }
    let mut summary = pktpath_core::trace::Summary::new();
    for e in &events {
        summary.add(e);
    }
    let report = summary.report(Some(0));
    assert!(report.drops.is_empty(), "{:?}", report.drops);
    assert_eq!(report.deliveries.iter().map(|d| d.count).sum::<u64>(), 3);
    assert!(
        report
            .short()
            .contains(" 0 drops (3 deliveries not counted as drops)")
    );

    // A real drop stays one: nftables in b drops the next echo request.
    let _nft = NftTableGuard::input(&lab.b.name, &["icmp type echo-request drop"]);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 1), 0, "dropped");
    let events = t.collect(
        Duration::from_secs(5),
        |e| here.contains(&u64::from(e.netns)),
        |evs| {
            evs.iter()
                .any(|e| e.hook == Hook::KfreeSkb.name() && e.icmp_type == Some(8))
        },
    );
    let drop = echo_frees(&events, &lab)
        .into_iter()
        .find(|e| e.hook == Hook::KfreeSkb.name() && e.icmp_type == Some(8))
        .unwrap_or_else(|| panic!("no drop among {events:#?}"));
    assert_eq!(
        drop.drop_reason.as_deref(),
        Some("NETFILTER_DROP"),
        "{drop:#?}"
    );
    assert_eq!(drop.delivered, None);
    assert_eq!(u64::from(drop.netns), lab.b.inode());
}

/// The clone of the echo reply iputils' raw socket was handed shares the reply's data
/// buffer: its free (`consume_skb` when ping reads it, after the original's free) is the last
/// hop of the reply's journey, marked as a clone.
#[test]
fn trace_the_clone_a_socket_was_handed_is_the_last_hop_of_the_replys_journey() {
    require_root();
    let lab = TwoHosts::new();
    let cfg = TraceConfig {
        filter: compile_filter("icmp").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 1), 1, "no loss");
    let a = lab.a.inode();
    // The original reply's free in a, and the later frees of echo replies anywhere (the
    // clone's, read off the socket, names no device: namespace 0).
    let is_reply_free = |e: &Event| {
        e.icmp_type == Some(0)
            && (e.hook == Hook::KfreeSkb.name() || e.hook == Hook::ConsumeSkb.name())
    };
    let original = |evs: &[Event]| -> Option<Event> {
        evs.iter()
            .find(|e| u64::from(e.netns) == a && e.delivered.is_some())
            .cloned()
    };
    let clone_of = |evs: &[Event], o: &Event| -> Option<Event> {
        evs.iter()
            .find(|e| {
                e.skb != o.skb
                    && is_reply_free(e)
                    && (e.icmp_id, e.icmp_seq, &e.src, &e.dst)
                        == (o.icmp_id, o.icmp_seq, &o.src, &o.dst)
            })
            .cloned()
    };
    let events = t.collect(
        Duration::from_secs(5),
        |e| u64::from(e.netns) == a || is_reply_free(e),
        |evs| original(evs).is_some_and(|o| clone_of(evs, &o).is_some()),
    );
    let o =
        original(&events).unwrap_or_else(|| panic!("no delivered reply in a:\n{}", text(&events)));
    let c = clone_of(&events, &o)
        .unwrap_or_else(|| panic!("no free of the reply's clone:\n{}", text(&events)));
    assert_eq!(c.packet_id, o.packet_id, "{}", text(&events));
    assert!(c.clone && !o.clone, "{}", text(&events));
    assert!(c.hop > o.hop && c.delta_ns.is_some(), "{c:#?}");
    assert_eq!(c.hook, Hook::ConsumeSkb.name(), "read by ping: {c:#?}");
    assert!(c.to_text(0).ends_with(" clone"), "{}", c.to_text(0));
}

/// A capture on an interface takes a clone of each packet it sends: the clone's free is a
/// hop of the packet's journey, not a journey of its own.
#[test]
fn trace_a_captures_clone_is_a_hop_of_the_packets_journey() {
    require_root();
    let lab = TwoHosts::new();
    let _capture = run::Capture::start(&lab.b.name, &lab.link.b, "icmp");
    let b = lab.b.inode();
    let cfg = TraceConfig {
        netns: Some(u32::try_from(b).expect("32-bit inode")),
        filter: compile_filter("icmp").expect("filter"),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 3), 3, "no loss");
    let sent = |evs: &[Event]| -> Vec<Event> {
        evs.iter()
            .filter(|e| e.hook == Hook::NetDevXmit.name() && e.icmp_type == Some(0))
            .cloned()
            .collect()
    };
    let events = t.collect(
        Duration::from_secs(5),
        |e| u64::from(e.netns) == b,
        |evs| sent(evs).len() >= 3 && evs.iter().filter(|e| e.clone).count() >= 3,
    );
    let replies = sent(&events);
    assert_eq!(replies.len(), 3, "{}", text(&events));
    for r in &replies {
        assert!(!r.clone, "{r:#?}");
        let clones: Vec<&Event> = events
            .iter()
            .filter(|e| e.packet_id == r.packet_id && e.clone)
            .collect();
        assert_eq!(clones.len(), 1, "{}", text(&events));
        assert_eq!(clones[0].hook, Hook::ConsumeSkb.name(), "{:#?}", clones[0]);
        assert_ne!(clones[0].skb, r.skb);
        // The reply's own hops are timed from each other, the clone's free between them
        // or not.
        let hop = |hook: Hook| {
            events
                .iter()
                .find(|e| e.packet_id == r.packet_id && e.hook == hook.name() && !e.clone)
                .unwrap_or_else(|| panic!("no {} of the reply:\n{}", hook.name(), text(&events)))
        };
        let (queued, started) = (hop(Hook::NetDevQueue), hop(Hook::NetDevStartXmit));
        assert_eq!(
            started.delta_ns,
            Some(started.ts_ns.saturating_sub(queued.ts_ns)),
            "{}",
            text(&events)
        );
    }
    // No echo reply's journey is a lone free.
    for e in events.iter().filter(|e| e.icmp_type == Some(0)) {
        let hops = events.iter().filter(|x| x.packet_id == e.packet_id).count();
        assert!(hops > 1, "a journey of one event:\n{}", text(&events));
    }
}

/// The events as text lines, for failure messages.
fn text(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| e.to_text(0))
        .collect::<Vec<_>>()
        .join("\n")
}
