//! The agent's kernel drop monitor on real drops in a namespace of the test's own: UDP to a
//! closed port on loopback (`NO_SOCKET`) and to a port an nftables rule drops
//! (`NETFILTER_DROP`), counted by reason, device and namespace; deliveries that the kernel
//! frees with a drop reason (ping's echo replies) not counted; a map too small for the
//! keys counts the rest as unkeyed.

use pktpath_common::drops::{DROP_CACHE_SLOTS, drop_cache_slot};
use pktpath_core::dropmon::{DropCounts, DropMonitor};
use pktpath_tests::{NetnsGuard, NftTableGuard, require_root, run};

const CLOSED: u16 = 7001;
const FILTERED: u16 = 7002;

/// Sends `n` datagrams to 127.0.0.1:`port` in `ns`.
fn send(ns: &NetnsGuard, port: u16, n: usize) {
    let dst = format!("127.0.0.1:{port}");
    run::udp(
        ns,
        "127.0.0.1:0",
        std::iter::repeat_n(dst.as_str(), n),
        b"drop me",
    );
}

/// Packets counted for `reason` on `lo` in namespace `inode`.
fn on_lo(counts: &DropCounts, inode: u64, reason: &str) -> u64 {
    counts
        .rows
        .iter()
        .filter(|r| u64::from(r.netns) == inode && r.interface == "lo" && r.reason == reason)
        .map(|r| r.packets)
        .sum()
}

/// A namespace with loopback up and an nftables drop rule for [`FILTERED`].
fn lab(label: &str) -> (NetnsGuard, NftTableGuard) {
    let ns = NetnsGuard::new(label);
    run::in_ns(&ns.name, "ip", &["link", "set", "lo", "up"]).expect("lo up");
    let nft = NftTableGuard::input(&ns.name, &[&format!("udp dport {FILTERED} drop")]);
    (ns, nft)
}

#[test]
fn drops_are_counted_by_reason_device_and_namespace() {
    require_root();
    let (ns, _nft) = lab("dropmon");
    let inode = ns.inode();
    let monitor = DropMonitor::start().expect("start the drop monitor");
    send(&ns, CLOSED, 40);
    send(&ns, FILTERED, 15);
    let counts = monitor.read().expect("read the counters");
    assert_eq!(on_lo(&counts, inode, "NO_SOCKET"), 40, "{counts:#?}");
    assert_eq!(on_lo(&counts, inode, "NETFILTER_DROP"), 15, "{counts:#?}");
    assert!(
        counts.rows.iter().all(|r| r.reason != "CONSUMED"),
        "frees that are not drops are not counted: {counts:#?}"
    );
    // Detached with the monitor: a new one starts from zero and sees only new drops.
    drop(monitor);
    let monitor = DropMonitor::start().expect("start again");
    send(&ns, FILTERED, 3);
    let counts = monitor.read().expect("read the counters");
    assert_eq!(on_lo(&counts, inode, "NETFILTER_DROP"), 3, "{counts:#?}");
    assert_eq!(on_lo(&counts, inode, "NO_SOCKET"), 0, "{counts:#?}");
}

/// A ping to 127.0.0.1 with no loss: ping's raw socket gets a clone of each echo reply
/// and the kernel frees the original as `NO_SOCKET` (no ping socket wanted it). Those are
/// deliveries, as the tracer shows them, not drops; UDP to a closed port still is one.
#[test]
fn a_ping_without_loss_counts_no_drop() {
    require_root();
    let (ns, _nft) = lab("dropping");
    let inode = ns.inode();
    let monitor = DropMonitor::start().expect("start the drop monitor");
    assert_eq!(run::ping(&ns.name, "127.0.0.1", 10), 10, "no loss");
    send(&ns, CLOSED, 4);
    let counts = monitor.read().expect("read the counters");
    assert_eq!(
        on_lo(&counts, inode, "NO_SOCKET"),
        4,
        "only the datagrams to the closed port: {counts:#?}"
    );
}

#[test]
fn drops_that_find_the_map_full_are_counted_unkeyed() {
    require_root();
    let (ns, _nft) = lab("dropmon-full");
    let inode = ns.inode();
    // One key: the first drop anywhere on the machine takes it; our two reasons cannot
    // both fit, so some of ours are counted without a key.
    let monitor = DropMonitor::with_capacity(1).expect("start the drop monitor");
    send(&ns, CLOSED, 20);
    send(&ns, FILTERED, 20);
    let counts = monitor.read().expect("read the counters");
    assert!(counts.rows.len() <= 1, "{counts:#?}");
    let keyed = on_lo(&counts, inode, "NO_SOCKET") + on_lo(&counts, inode, "NETFILTER_DROP");
    assert!(keyed <= 20, "at most one of our keys fits: {counts:#?}");
    assert!(
        keyed + counts.overflow >= 40,
        "every drop is counted, keyed or not: {counts:#?}"
    );
}

/// Two devices whose drops share one slot of the monitor's per-CPU cache (their indexes
/// differ by the number of slots): drops alternating between them move each one's count
/// from the slot to the hash at every turn, and every drop is counted at its own device.
#[test]
fn drops_that_share_a_cache_slot_are_each_counted_at_their_device() {
    require_root();
    let (senders, receivers) = (NetnsGuard::new("dropslot-a"), NetnsGuard::new("dropslot-b"));
    // Indexes from 2,000 up: far above what a fresh namespace hands out.
    let index = |k: u32| 2000 + k * DROP_CACHE_SLOTS;
    for reason in [1, 2, 77] {
        assert_eq!(
            drop_cache_slot(reason, index(0), 12345),
            drop_cache_slot(reason, index(1), 12345),
            "the devices share their slots"
        );
    }
    let mut peers = Vec::new();
    for k in 0..2u32 {
        let (a, b) = (format!("dsa{k}"), format!("dsb{k}"));
        let idx = index(k).to_string();
        let args = format!(
            "link add {b} index {idx} type veth peer name {a} netns {}",
            senders.name
        );
        run::in_ns(&receivers.name, "ip", &args.split(' ').collect::<Vec<_>>())
            .expect("a veth pair with the receiving end's index chosen");
        let net = format!("10.77.{k}");
        run::in_ns(
            &senders.name,
            "ip",
            &["addr", "add", &format!("{net}.1/24"), "dev", &a],
        )
        .expect("address");
        run::in_ns(
            &receivers.name,
            "ip",
            &["addr", "add", &format!("{net}.2/24"), "dev", &b],
        )
        .expect("address");
        run::in_ns(&senders.name, "ip", &["link", "set", &a, "up"]).expect("up");
        run::in_ns(&receivers.name, "ip", &["link", "set", &b, "up"]).expect("up");
        assert_eq!(run::ifindex(&receivers.name, &b), index(k));
        assert_eq!(
            run::ping(&senders.name, &format!("{net}.2"), 1),
            1,
            "{net}.2 answers"
        );
        peers.push((b, format!("{net}.2:{FILTERED}")));
    }
    let _nft = NftTableGuard::input(&receivers.name, &[&format!("udp dport {FILTERED} drop")]);
    let inode = receivers.inode();
    let monitor = DropMonitor::start().expect("start the drop monitor");
    let turns = 150;
    let to = (0..2 * turns).map(|i| peers[i % 2].1.as_str());
    run::udp(&senders, "0.0.0.0:0", to, b"drop me");
    let counts = monitor.read().expect("read the counters");
    for (dev, _) in &peers {
        let at: u64 = counts
            .rows
            .iter()
            .filter(|r| u64::from(r.netns) == inode && &r.interface == dev)
            .filter(|r| r.reason == "NETFILTER_DROP")
            .map(|r| r.packets)
            .sum();
        assert_eq!(at, turns as u64, "{dev}: {counts:#?}");
    }
    assert_eq!(counts.overflow, 0, "{counts:#?}");
}
