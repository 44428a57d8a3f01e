//! A tp_btf program reads, through offsets resolved from this kernel's BTF, the ifindex, length
//! and netns inode of real packets; they equal what netlink and /proc/PID/ns/net report.

use std::{
    os::unix::fs::MetadataExt as _,
    process::{Child, Command},
    time::{Duration, Instant},
};

use aya::{maps::RingBuf, programs::BtfTracePoint};
use pktpath_common::trace::{Hook, MAP_EVENTS};
use pktpath_core::{
    loader::{self, GlobalValue, Object},
    trace::wire,
};
use pktpath_tests::{TwoHosts, require_root, run};

struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tp_btf_reads_ifindex_len_and_netns_of_real_packets() {
    require_root();
    let lab = TwoHosts::new();
    let ns_inode = lab.b.inode();
    let ifindex = run::ifindex(&lab.b.name, &lab.link.b);
    // A process living in b: its /proc/PID/ns/net names the same namespace.
    let sleeper = Reaper(
        Command::new("ip")
            .args(["netns", "exec", &lab.b.name, "sleep", "30"])
            .spawn()
            .expect("spawn sleep"),
    );
    let proc_inode = std::fs::metadata(format!("/proc/{}/ns/net", sleeper.0.id()))
        .unwrap()
        .ino();
    // `ip netns exec` enters the namespace before exec'ing sleep; wait until it has.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut proc_inode = proc_inode;
    while proc_inode != ns_inode && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        proc_inode = std::fs::metadata(format!("/proc/{}/ns/net", sleeper.0.id()))
            .unwrap()
            .ino();
    }
    assert_eq!(
        proc_inode, ns_inode,
        "/proc/PID/ns/net and /run/netns disagree"
    );

    let mut ebpf = loader::load(
        Object::Tracer,
        &[("PKTPATH_FILTER_NETNS", GlobalValue::U32(ns_inode as u32))],
    )
    .expect("load tracer with BTF offsets");
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let prog: &mut BtfTracePoint = ebpf
        .program_mut("trace_netif_receive_skb")
        .expect("program")
        .try_into()
        .expect("tp_btf");
    prog.load("netif_receive_skb", &btf)
        .expect("verifier accepts the hook");
    prog.attach().expect("attach");

    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 3), 3);

    let mut ring = RingBuf::try_from(ebpf.map_mut(MAP_EVENTS).expect("ring")).expect("ring buffer");
    let mut echo_requests = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while echo_requests < 3 && Instant::now() < deadline {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let ev = wire::decode(&item).expect("well-formed record");
        assert_eq!(
            ev.netns as u64, ns_inode,
            "the in-kernel netns filter let another namespace through"
        );
        assert_eq!(Hook::from_u16(ev.hook), Some(Hook::NetifReceiveSkb));
        // IPv4 ICMP echo request: protocol 1 at byte 9, type 8 at byte 20 (no IP options).
        let h = &ev.header;
        if ev.protocol == 0x0800 && h[9] == 1 && h[20] == 8 {
            echo_requests += 1;
            assert_eq!(ev.ifindex, ifindex, "ifindex differs from netlink's");
            assert_eq!(wire::ifname(&ev), lab.link.b, "interface name");
            assert_eq!(
                ev.len, 84,
                "skb->len of a default ping at receive (IP header on)"
            );
            assert_eq!(ev.netns as u64, proc_inode);
            assert_eq!(
                &h[16..20],
                &[10, 77, 0, 2],
                "destination address in the copied header"
            );
            assert!(ev.header_len >= 28);
        }
    }
    assert_eq!(echo_requests, 3, "saw {echo_requests} of 3 echo requests");
}
