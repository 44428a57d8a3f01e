//! The XDP program in the kernel, run with BPF_PROG_TEST_RUN beside the TC program on the
//! same maps: where XDP decides (drop, redirect), TC decides the same with any packet mark
//! and leaves the same bytes; where it passes, the frame is untouched.

use pktpath_common::route::{FAMILY_V4, MAX_NEXTHOPS, NextHop};
use pktpath_core::route::datapath::{
    classifier::compile,
    frame::{self, FrameOptions, ipv4_checksum},
    policy::{self, Slots},
    synth::{self, Rng},
};
use pktpath_tests::{
    datapath::{
        Datapath, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT, loop_kinds,
    },
    require_root,
};

/// Same margin as the TC program's (datapath_classify): a quarter of the budget free.
#[test]
fn the_xdp_program_verifies_with_a_quarter_of_the_budget_to_spare() {
    require_root();
    // Which variants load is the TC test's to check (datapath_classify).
    for kind in loop_kinds() {
        let mut dp = Datapath::load_kind(kind);
        dp.load_xdp();
        let n = dp
            .xdp()
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
            .expect("the kernel reports the verified instruction count");
        eprintln!("{} verified in {n} instructions", kind.xdp_program());
        assert!(
            n < 750_000,
            "{} takes {n} of 1,000,000 instructions",
            kind.xdp_program()
        );
    }
}

/// Next hops with fixed MACs out of loopback (ifindex 1, where test runs arrive), so that
/// both programs can forward.
fn loopback_next_hops() -> Vec<NextHop> {
    let hop = NextHop {
        ifindex: 1,
        has_mac: 1,
        dmac: [2, 0, 0, 0, 0, 0xd],
        smac: [2, 0, 0, 0, 0, 0x5],
        mtu: 1500,
        ..NextHop::default()
    };
    vec![hop; 4.min(MAX_NEXTHOPS as usize)]
}

#[test]
fn xdp_decides_as_tc_does_for_any_mark_or_passes_untouched() {
    require_root();
    let mut dp = Datapath::load();
    dp.load_xdp();
    dp.allow_xdp_egress(&[1]);
    // Seeded, not proptest: one fixed sequence of sets in the kernel, replayed as it ran.
    let mut rng = Rng::new(0x0d0d);
    let mut ifaces = synth::dense_ifaces();
    ifaces.links[0].ifindex = 1;
    let (mut dropped, mut redirected, mut passed) = (0, 0, 0);
    for round in 0..20 {
        let n = 1 + rng.below(60) as usize;
        let set = synth::dense_policies(&mut rng, n, None);
        let plan = Slots::default().plan(&set).unwrap();
        let rules = policy::rules(&set, &ifaces, &plan.slots).unwrap();
        dp.maps.apply(&compile(&rules).unwrap()).expect("apply");
        dp.maps
            .set_nexthops(&loopback_next_hops())
            .expect("next hops");
        for _ in 0..100 {
            let mut p = synth::dense_packet(&mut rng);
            p.iif = pktpath_core::route::compile::InterfaceId(0);
            let fields = policy::packet_fields(&p, &ifaces);
            let frame = frame::build(&fields, &FrameOptions::default());
            let (xdp, xdp_out) = dp.run_xdp(&frame);
            let what = format!("round {round}, {p:?}");
            match xdp {
                XDP_PASS => {
                    passed += 1;
                    assert_eq!(xdp_out, frame, "{what}: passed, so untouched");
                }
                XDP_DROP | XDP_REDIRECT => {
                    let want = if xdp == XDP_DROP {
                        dropped += 1;
                        TC_ACT_SHOT
                    } else {
                        redirected += 1;
                        TC_ACT_REDIRECT
                    };
                    for mark in [0, p.mark, 0xffff_ffff] {
                        let (tc, _, tc_out) = dp.run(&frame, mark);
                        assert_eq!(tc, want, "{what}, mark {mark:#x}: XDP said {xdp}");
                        if xdp == XDP_REDIRECT {
                            assert_eq!(xdp_out, tc_out, "{what}: both rewrite alike");
                        }
                    }
                    if xdp == XDP_REDIRECT && fields.family() == FAMILY_V4 {
                        assert_eq!(ipv4_checksum(&xdp_out[14..34]), 0, "{what}: checksum");
                        assert_eq!(xdp_out[22], 63, "{what}: TTL decremented");
                    }
                }
                other => panic!("{what}: XDP verdict {other}"),
            }
        }
    }
    eprintln!("XDP dropped {dropped}, redirected {redirected}, passed {passed}");
    assert!(
        dropped > 50 && redirected > 50 && passed > 50,
        "too few of a kind (dropped {dropped}, redirected {redirected}, passed {passed})"
    );
}
