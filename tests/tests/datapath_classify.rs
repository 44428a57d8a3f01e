//! The data path in the kernel, run with BPF_PROG_TEST_RUN on synthesized frames, against
//! the reference model (`route::model`): random dense policy sets applied one after the
//! other to the same loaded program (so each apply flips generations), random packets.
//! Also the router duties: TTL decrement with a valid checksum, TTL expiry and oversize
//! packets left to the stack, MAC rewrite on forward.

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use pktpath_common::route::{ACTION_FORWARD, FAMILY_V4, FAMILY_V6, NextHop, RuleValue};
use pktpath_core::{
    route::datapath::{
        classifier::{Params, Rule, compile, compile_with},
        frame::{self, FrameOptions, ipv4_checksum},
        loops::LoopKind,
        policy::{self, Slots},
        synth::{self, Rng, v4},
    },
    route::{
        model,
        packet::{Ifindex, PacketFields},
    },
};
use pktpath_tests::{
    datapath::{Datapath, SKB_CTX, TC_ACT_OK, TC_ACT_REDIRECT, loop_kinds},
    require_root, run,
};

const MARK_BASE: u32 = 100_000;

/// The verifier's budget is 1,000,000 instructions, and kernel builds of one version have
/// differed by a factor of two in what the data path takes (219,548 and 454,368 for the
/// same walk's code with 32 and 8 rules a walk): the data path keeps a quarter of the budget
/// free, so that growth or a costlier kernel build shows here before a load fails.
#[test]
fn the_data_path_verifies_with_a_quarter_of_the_budget_to_spare() {
    require_root();
    let kinds = loop_kinds();
    for kind in [LoopKind::MayGoto, LoopKind::BpfLoop] {
        let loaded = Datapath::try_load_kind(kind);
        if !kinds.contains(&kind) {
            // doctor found no may_goto: the kernel must refuse that variant, or doctor
            // would keep the faster one from a kernel that runs it.
            assert!(
                loaded.is_err(),
                "doctor says the kernel lacks may_goto, but {} loads",
                kind.tc_program()
            );
            continue;
        }
        let dp = loaded.unwrap_or_else(|e| panic!("verifier rejected {kind:?}: {e:?}"));
        // Reported since 5.16; the data path needs newer kernels anyway.
        let n = dp
            .verified_instructions()
            .expect("the kernel reports the verified instruction count");
        eprintln!("{} verified in {n} instructions", kind.tc_program());
        assert!(
            n < 750_000,
            "{} takes {n} of the verifier's 1,000,000 instructions",
            kind.tc_program()
        );
    }
}

#[test]
fn kernel_classification_equals_the_model() {
    require_root();
    for kind in loop_kinds() {
        classifies_as_the_model(Datapath::load_kind(kind));
    }
}

/// Random dense policy sets through the kernel program of `dp`, against the model.
fn classifies_as_the_model(mut dp: Datapath) {
    // Seeded, not proptest: one fixed sequence of sets in the kernel, replayed as it ran
    // (the root-free classifier tests draw the same shapes with shrinking).
    let mut rng = Rng::new(0xda7a);
    // Test runs arrive on the namespace's loopback (ifindex 1): the sets' `in0` is 2, so
    // policies naming an interface never match here; the packets say iif in0 or in1, which
    // the conversion below pins to 1 as well, so the model sees what the kernel sees.
    let mut ifaces = synth::dense_ifaces();
    ifaces.links[0].ifindex = 1;
    let (mut compared, mut matched) = (0, 0);
    for round in 0..25 {
        let n = 1 + rng.below(120) as usize;
        let set = synth::dense_policies(&mut rng, n, Some(MARK_BASE));
        let plan = Slots::default().plan(&set).unwrap();
        let rules = policy::rules(&set, &ifaces, &plan.slots).unwrap();
        // The default shape, the roomy one, one leaf per tree (longer than a walk checks,
        // so the kernel walks the rest of it as a leaf of its own), and tiny leaves with
        // every node a walk of its own (as if each block were in a chunk of its own).
        let params = match round % 4 {
            0 => Params::default(),
            1 => Params::roomy(),
            2 => Params {
                leaf_rules: 256,
                ..Params::default()
            },
            _ => Params {
                leaf_rules: 1,
                far_all: true,
                ..Params::default()
            },
        };
        let tables = compile_with(&rules, params).unwrap_or_else(|e| panic!("round {round}: {e}"));
        dp.maps.apply(&tables).expect("apply");
        for _ in 0..80 {
            let mut p = synth::dense_packet(&mut rng);
            p.iif = pktpath_core::route::compile::InterfaceId(0);
            let fields = policy::packet_fields(&p, &ifaces);
            let frame = frame::build(&fields, &FrameOptions::default());
            let (verdict, mark_out, _) = dp.run(&frame, p.mark);
            compared += 1;
            assert_eq!(verdict, TC_ACT_OK, "{p:?}: every policy passes");
            match model::classify(&set, &p).policy_id() {
                None => assert_eq!(mark_out, p.mark, "no policy matches {p:?}: mark untouched"),
                Some(id) => {
                    matched += 1;
                    let i: u32 = id[1..].parse().unwrap();
                    assert_eq!(
                        mark_out,
                        MARK_BASE + i,
                        "round {round}, {p:?}: the model picks {id}, the kernel policy p{}",
                        mark_out.wrapping_sub(MARK_BASE)
                    );
                }
            }
        }
    }
    assert!(
        matched > 300,
        "only {matched} of {compared} packets matched a policy: generator too sparse"
    );
}

/// Each realistic rule-set profile at a few thousand policies, through the kernel, against
/// the model: every policy passes the packet with a mark naming it, so the mark after the
/// run says which policy the kernel picked.
#[test]
fn kernel_classification_of_realistic_rule_sets_equals_the_model() {
    use std::collections::HashMap;

    use pktpath_core::{
        route::datapath::policy::{Interfaces, LinkInfo},
        route::{compile::InterfaceId, config::Action},
    };
    use pktpath_tests::rulesets::{self, INTERFACES, Profile};

    require_root();
    let mut dp = Datapath::load();
    // Test runs arrive on the namespace's loopback (ifindex 1): that is `in0`, and every
    // header arrives there; the other interfaces get ifindexes no packet has.
    let ifaces = Interfaces {
        links: (0..INTERFACES.len() as u32)
            .map(|i| LinkInfo {
                ifindex: if i == 0 { 1 } else { 1000 + i },
                mtu: 1500,
                mac: [2, 0, 0, 0, 0, i as u8],
            })
            .collect(),
    };
    for profile in Profile::ALL {
        let mut set = rulesets::generate(profile, 3000, 11);
        for (i, p) in set.runtime.policies.iter_mut().enumerate() {
            p.action = Action::Pass {
                set_mark: Some(MARK_BASE + i as u32),
                set_dscp: None,
            };
        }
        let index: HashMap<String, u32> = set
            .runtime
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i as u32))
            .collect();
        let policies = set.policy_set().expect("generated sets are valid");
        let plan = Slots::default().plan(&policies).unwrap();
        let rules = policy::rules(&policies, &ifaces, &plan.slots).unwrap();
        let tables = compile(&rules).unwrap_or_else(|e| panic!("{profile}: {e}"));
        dp.maps.apply(&tables).expect("apply");
        let (mut compared, mut matched) = (0, 0);
        for mut h in rulesets::headers(&set, 2000, 3) {
            h.iif = InterfaceId(0);
            let frame = frame::build(
                &policy::packet_fields(&h, &ifaces),
                &FrameOptions::default(),
            );
            let (verdict, mark_out, _) = dp.run(&frame, h.mark);
            assert_eq!(verdict, TC_ACT_OK, "{profile}, {h:?}: every policy passes");
            let want = model::classify(&policies, &h)
                .policy_id()
                .map(|id| MARK_BASE + index[id]);
            assert_eq!(
                mark_out,
                want.unwrap_or(h.mark),
                "{profile}, {h:?}: the model picks {:?}",
                model::classify(&policies, &h).policy_id()
            );
            compared += 1;
            matched += usize::from(want.is_some());
        }
        assert!(
            matched * 10 >= compared * 9,
            "{profile}: only {matched} of {compared} headers matched a policy"
        );
    }
}

fn forward_rule(priority: u32, dst: [u8; 16], len: u8, family: u8) -> Rule {
    Rule {
        priority,
        family: Some(family),
        dst: Some((dst, len)),
        value: RuleValue {
            action: ACTION_FORWARD,
            nexthop: 0,
            slot: priority,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn forwarding_decrements_ttl_fixes_the_checksum_and_rewrites_macs() {
    require_root();
    let mut dp = Datapath::load();
    let hop = NextHop {
        ifindex: 1,
        has_mac: 1,
        dmac: [0x02, 0xaa, 0, 0, 0, 0x01],
        smac: [0x02, 0xbb, 0, 0, 0, 0x02],
        mtu: 1500,
        ..Default::default()
    };
    dp.maps.set_nexthops(&[hop]).unwrap();
    let mut v6dst = [0u8; 16];
    v6dst[0] = 0xfd;
    v6dst[1] = 0x02;
    let rules = [
        forward_rule(10, v4(10, 2, 0, 0), 16, FAMILY_V4),
        forward_rule(20, v6dst, 16, FAMILY_V6),
    ];
    dp.maps.apply(&compile(&rules).unwrap()).unwrap();
    dp.maps.reset_policy_counters([10]).unwrap();

    let p4: PacketFields<Ifindex> = PacketFields {
        src: [10, 1, 0, 2].into(),
        dst: [10, 2, 0, 2].into(),
        proto: 17,
        sport: Some(4000),
        dport: Some(53),
        ..Default::default()
    };
    let (verdict, _, out) = dp.run(&frame::build(&p4, &FrameOptions::default()), 0);
    assert_eq!(verdict, TC_ACT_REDIRECT, "forwarded");
    assert_eq!(&out[0..6], &hop.dmac);
    assert_eq!(&out[6..12], &hop.smac);
    assert_eq!(out[14 + 8], 63, "TTL decremented");
    assert_eq!(ipv4_checksum(&out[14..34]), 0, "IPv4 checksum still valid");
    let c = dp.maps.policy_counters(10).unwrap();
    assert_eq!(c.packets, 1, "policy counter");

    let mut p6 = p4;
    p6.src = std::net::Ipv6Addr::UNSPECIFIED.into();
    let mut dst = v6dst;
    dst[15] = 2;
    p6.dst = dst.into();
    let (verdict, _, out) = dp.run(&frame::build(&p6, &FrameOptions::default()), 0);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[14 + 7], 63, "hop limit decremented");

    // TTL 1: the stack must answer with ICMP time exceeded, so the packet goes there as is.
    let expiring = frame::build(
        &p4,
        &FrameOptions {
            ttl: 1,
            ..Default::default()
        },
    );
    let (verdict, _, out) = dp.run(&expiring, 0);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, expiring, "unchanged");

    // Larger than the egress device's MTU: the stack fragments or sends "fragmentation
    // needed". The data path asks the kernel for the device's MTU as it is now
    // (bpf_check_mtu), so the next hop's device (ifindex 1) is the loopback of a fresh
    // namespace with its MTU set to 1500 (the host's lo has 65536).
    let big = frame::build(
        &p4,
        &FrameOptions {
            payload: 1600,
            ..Default::default()
        },
    );
    let (verdict, _, out) = pktpath_core::sys::netns::run_in_fresh(|| {
        run::must("ip", &["link", "set", "dev", "lo", "mtu", "1500"]);
        let small = dp.run(&frame::build(&p4, &FrameOptions::default()), 0);
        assert_eq!(
            small.0, TC_ACT_REDIRECT,
            "a packet that fits is still forwarded"
        );
        dp.run(&big, 0)
    })
    .expect("fresh namespace");
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, big);

    // ARP, and frames cut inside the UDP header, pass untouched. (The kernel's test run
    // itself refuses frames cut inside the IP header.)
    let mut arp = frame::build(&p4, &FrameOptions::default());
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(dp.run(&arp, 0).0, TC_ACT_OK);
    let truncated = &frame::build(&p4, &FrameOptions::default())[..36];
    assert_eq!(dp.run(truncated, 0).0, TC_ACT_OK);

    // Headers the kernel's IP input refuses go to the stack untouched, although a policy
    // forwards the packet: a wrong IPv4 checksum, an IPv4 total length beyond the frame or
    // under the header's, an IPv6 payload length beyond the frame.
    let good = frame::build(&p4, &FrameOptions::default());
    assert_eq!(
        dp.run(&good, 0).0,
        TC_ACT_REDIRECT,
        "the valid frame is forwarded"
    );
    let mut odd = Vec::new();
    let mut bad_sum = good.clone();
    bad_sum[14 + 10] ^= 0x01;
    odd.push(("wrong IPv4 header checksum", bad_sum));
    let with_len = |len: u16| {
        let mut f = good.clone();
        f[16..18].copy_from_slice(&len.to_be_bytes());
        let sum = ipv4_checksum(&{
            let mut h = f[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    };
    odd.push((
        "IPv4 total length beyond the frame",
        with_len(good.len() as u16),
    ));
    odd.push(("IPv4 total length under the header's", with_len(19)));
    let mut v6 = frame::build(&p6, &FrameOptions::default());
    let beyond = (v6.len() - 14 - 40 + 1) as u16;
    v6[18..20].copy_from_slice(&beyond.to_be_bytes());
    odd.push(("IPv6 payload length beyond the frame", v6));
    for (what, f) in &odd {
        let (verdict, _, out) = dp.run(f, 0);
        assert_eq!(verdict, TC_ACT_OK, "{what}: passed to the stack");
        assert_eq!(&out, f, "{what}: untouched");
    }
    // A valid total length shorter than the frame (Ethernet padding) is forwarded.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(dp.run(&padded, 0).0, TC_ACT_REDIRECT, "padded frame");
}

/// `route get` marks its test runs in the control buffer (`cb[0]` a nonce, `cb[1..3]`
/// `GET_MAGIC`) and the data path writes their decision record. A real packet's control
/// buffer holds what earlier layers left: a nonzero `cb[0]` without the marks must be taken
/// for a real packet (whose decision goes to the tracers), not for a test run.
#[test]
fn a_control_buffer_left_by_other_layers_is_not_a_route_get() {
    use aya::maps::PerCpuArray;
    use pktpath_common::route::{Decision, GET_MAGIC, MAP_DECISION};

    require_root();
    let dp = Datapath::load();
    let prog: &SchedClassifier = dp
        .ebpf
        .program(dp.kind.tc_program())
        .unwrap()
        .try_into()
        .unwrap();
    // One sample packet, the same in every run.
    let p = policy::packet_fields(
        &synth::dense_packet(&mut Rng::new(0xcb)),
        &synth::dense_ifaces(),
    );
    let frame = frame::build(&p, &FrameOptions::default());
    let records = |nonce: u32| -> usize {
        let map: PerCpuArray<_, Decision> =
            PerCpuArray::try_from(dp.ebpf.map(MAP_DECISION).expect("decision map")).unwrap();
        map.get(&0, 0)
            .expect("read the decision records")
            .iter()
            .filter(|d| d.nonce == nonce)
            .count()
    };
    let run = |cb: [u32; 3]| {
        let mut ctx_in = [0u8; SKB_CTX];
        // `__sk_buff.cb` starts at offset 48.
        for (i, word) in cb.iter().enumerate() {
            ctx_in[48 + 4 * i..52 + 4 * i].copy_from_slice(&word.to_ne_bytes());
        }
        let mut data_out = vec![0u8; frame.len() + 64];
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    };
    run([0x0abc_def1, 0, 0]);
    run([0x0abc_def1, GET_MAGIC[0], 0]);
    assert_eq!(
        records(0x0abc_def1),
        0,
        "garbage in cb[0] taken for a test run"
    );
    run([0x0abc_def1, GET_MAGIC[0], GET_MAGIC[1]]);
    assert_eq!(
        records(0x0abc_def1),
        1,
        "a marked test run writes its record"
    );
}
