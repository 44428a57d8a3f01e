//! A Rust eBPF TC program attached to a veth in a fresh namespace counts real pings.

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    tc::{NlOptions, TcAttachOptions},
};
use pktpath_common::route::PROG_DATAPATH;
use pktpath_core::{
    loader::{self, Object},
    route::datapath::tables::DatapathMaps,
};
use pktpath_tests::{ClsactGuard, TwoHosts, require_root, run};

const PINGS: u32 = 5;
/// An IPv4 echo request with ping's default 56 data bytes, Ethernet header included.
const ECHO_FRAME: u64 = 14 + 20 + 8 + 56;

fn run_case(netlink: bool) {
    require_root();
    let lab = TwoHosts::new();
    let ifindex = run::ifindex(&lab.b.name, &lab.link.b);
    let _clsact = netlink.then(|| ClsactGuard::new(&lab.b.name, &lab.link.b));

    let mut ebpf = loader::load(Object::Datapath, &[]).expect("load datapath object");
    let maps = DatapathMaps::from_ebpf(&mut ebpf).expect("data path maps");
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DATAPATH)
        .expect("program")
        .try_into()
        .expect("classifier");
    prog.load().expect("verifier accepts the classifier");
    let ns = lab.b.handle();
    let dev = lab.link.b.clone();
    let opts = if netlink {
        TcAttachOptions::Netlink(NlOptions::default())
    } else {
        TcAttachOptions::TcxOrder(LinkOrder::default())
    };
    let link = ns
        .run(|| prog.attach_with_options(&dev, TcAttachType::Ingress, opts))
        .expect("enter namespace")
        .expect("attach to veth ingress");

    let before = maps.iface_counters(ifindex).expect("read counters");
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, PINGS), PINGS);
    let after = maps.iface_counters(ifindex).expect("read counters");
    let packets = after.passed_packets - before.passed_packets;
    let bytes = after.passed_bytes - before.passed_bytes;
    assert!(
        packets >= PINGS as u64,
        "counted {packets} packets for {PINGS} pings"
    );
    assert!(bytes >= PINGS as u64 * ECHO_FRAME, "counted {bytes} bytes");
    assert_eq!(after.forwarded_packets + after.dropped_packets, 0);

    // A netlink filter is detached inside its namespace: detaching it from here would
    // address an interface of the host with the same ifindex.
    let prog: &mut SchedClassifier = ebpf.program_mut(PROG_DATAPATH).unwrap().try_into().unwrap();
    ns.run(|| prog.detach(link))
        .expect("enter namespace")
        .expect("detach");
}

#[test]
fn tcx_attached_counter_counts_pings() {
    run_case(false);
}

#[test]
fn netlink_clsact_attached_counter_counts_pings() {
    run_case(true);
}
