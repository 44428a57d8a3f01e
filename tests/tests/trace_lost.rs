//! No silent loss: with a one-page ring buffer that nobody reads while a flood of datagrams
//! passes, the tracer's lost count is exactly what was sent minus what was received, and
//! its own count of produced events equals what was sent.

use std::time::Duration;

use pktpath_common::trace::Hook;
use pktpath_core::trace::{TraceConfig, filter::compile_filter};
use pktpath_tests::{TwoHosts, require_root, run, trace::Tracing};

const SENT: u64 = 300;

#[test]
fn trace_flood_beyond_the_ring_counts_every_lost_event() {
    require_root();
    let lab = TwoHosts::new();
    // Neighbour resolved first: the flood goes out at once, nothing else matches the filter.
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 1), 1);
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size");
    let cfg = TraceConfig {
        netns: Some(u32::try_from(lab.b.inode()).expect("32-bit inode")),
        hooks: vec![Hook::NetifReceiveSkb],
        filter: compile_filter("udp and dst port 7100").expect("filter"),
        ring_bytes: Some(page),
        ..TraceConfig::default()
    };
    let mut t = Tracing::start(&cfg);
    let to = format!("{}:7100", TwoHosts::B4);
    run::udp(
        &lab.a,
        "10.77.0.1:0",
        std::iter::repeat_n(to.as_str(), SENT as usize),
        b"pktpath",
    );
    // Not read while flooding; now drain what fitted.
    std::thread::sleep(Duration::from_millis(300));
    let received = t
        .collect(Duration::from_millis(500), |_| true, |_| false)
        .len() as u64;
    let lost = t.collector.lost().expect("lost count");
    let seen = t.collector.seen().expect("seen count");
    assert_eq!(seen, SENT, "every datagram met netif_receive_skb in b once");
    assert!(lost > 0 && received > 0, "received {received}, lost {lost}");
    assert_eq!(lost, SENT - received, "received {received}");
}
