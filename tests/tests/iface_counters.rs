//! Per-interface counters of the data path, for interface indexes the counter array holds
//! (below MAX_IFACES) and for those above it (kept in a hash instead): the program runs
//! with BPF_PROG_TEST_RUN on frames arriving on veths of a fresh namespace whose indexes
//! are chosen on each side of the limit.

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use pktpath_common::route::{MAX_IFACES, PROG_DATAPATH};
use pktpath_core::{
    loader::{self, Object},
    route::datapath::{
        frame::{self, FrameOptions},
        tables::DatapathMaps,
    },
    route::packet::{Ifindex, PacketFields},
};
use pktpath_tests::{NetnsGuard, names, require_root, run};

/// `struct __sk_buff` is 192 bytes; `ifindex` is at offset 40.
const SKB_CTX: usize = 192;
const CTX_IFINDEX: usize = 40;
const RUNS: u32 = 3;

#[test]
fn counters_of_low_and_high_ifindexes_count_every_packet() {
    require_root();
    let ns = NetnsGuard::new("ifcnt");
    let (low, high) = (7u32, MAX_IFACES + 976);
    let (low_name, high_name) = (names::ifname('l'), names::ifname('h'));
    run::must(
        "ip",
        &[
            "-n",
            &ns.name,
            "link",
            "add",
            "name",
            &low_name,
            "index",
            &low.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            &high_name,
            "index",
            &high.to_string(),
        ],
    );
    assert_eq!(run::ifindex(&ns.name, &low_name), low);
    assert_eq!(run::ifindex(&ns.name, &high_name), high);

    let mut ebpf = loader::load(Object::Datapath, &[]).expect("load datapath object");
    let prog: &mut SchedClassifier = ebpf.program_mut(PROG_DATAPATH).unwrap().try_into().unwrap();
    prog.load().expect("verifier accepts the data path");
    let maps = DatapathMaps::from_ebpf(&mut ebpf).expect("maps");
    let prog: &SchedClassifier = ebpf.program(PROG_DATAPATH).unwrap().try_into().unwrap();

    let frame = frame::build(
        &PacketFields::<Ifindex> {
            src: [192, 0, 2, 1].into(),
            dst: [198, 51, 100, 1].into(),
            proto: 17,
            sport: Some(1000),
            dport: Some(2000),
            ..Default::default()
        },
        &FrameOptions::default(),
    );
    for ifindex in [low, high] {
        let before = maps.iface_counters(ifindex).expect("read counters");
        let mut ctx_in = [0u8; SKB_CTX];
        ctx_in[CTX_IFINDEX..CTX_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        // The test run resolves ifindex in the calling thread's namespace.
        let r = ns
            .handle()
            .run(|| {
                prog.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx_in),
                    repeat: RUNS,
                    ..Default::default()
                })
            })
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on ifindex {ifindex}: {e:?}"));
        assert_eq!(r.return_value, 0, "no policy: the packet passes");
        let after = maps.iface_counters(ifindex).expect("read counters");
        assert_eq!(
            after.passed_packets - before.passed_packets,
            RUNS as u64,
            "ifindex {ifindex}"
        );
        assert_eq!(
            after.passed_bytes - before.passed_bytes,
            RUNS as u64 * frame.len() as u64,
            "ifindex {ifindex}"
        );
        assert_eq!(after.forwarded_packets + after.dropped_packets, 0);
    }
}
