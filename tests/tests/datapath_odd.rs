//! Odd and malformed frames through the data path (BPF_PROG_TEST_RUN on the program, loaded
//! with forward and drop policies): each case asserts what a router does with it. Forwarded
//! frames leave with the TTL / hop limit decremented, a valid IPv4 header checksum and the
//! policy's DSCP; frames for the stack leave untouched; each case also checks how the
//! interface's counters (passed, forwarded, dropped, invalid) moved.
//!
//! The test runs arrive on the loopback (ifindex 1) of the test's namespace, so its
//! counters are the ones that move. docs/route-verbs.md ("How the data path treats packets")
//! lists the same cases.

use std::net::IpAddr;

use pktpath_common::route::{
    ACTION_DROP, ACTION_FORWARD, FAMILY_V4, FAMILY_V6, IfaceCounters, NextHop, RULE_SET_DSCP,
    RuleValue,
};
use pktpath_core::{
    route::datapath::{
        classifier::{Rule, compile},
        frame::{self, FrameOptions, ipv4_checksum},
        synth::v4,
    },
    route::packet::{Ifindex, PacketFields},
};
use pktpath_tests::{
    datapath::{Datapath, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    require_root,
};

const ETH: usize = 14;
/// The DSCP the forwarding policies set (EF).
const POLICY_DSCP: u8 = 46;
/// The next hop every forward policy uses.
const HOP: NextHop = NextHop {
    ifindex: 1,
    has_mac: 1,
    dmac: [0x02, 0xaa, 0, 0, 0, 0x01],
    smac: [0x02, 0xbb, 0, 0, 0, 0x02],
    mtu: 1500,
    gw_family: 0,
    _pad: [0; 2],
    gateway: [0; 16],
    slow_mark: 0x0300_0000,
    slow_mask: 0xff00_0000,
};

/// The mark every frame arrives with: bits of the user's, and a stale slow-path mark
/// (0x01) the data path must overwrite when it hands a packet to the stack for a policy.
const MARK_IN: u32 = 0x0100_0005;

/// What a router does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Redirected to [`HOP`], TTL decremented, checksum valid, DSCP set to `dscp`.
    Forwarded { dscp: u8 },
    /// Handed to the stack untouched and counted passed (`invalid`: also counted invalid);
    /// `slow`: with the next hop's slow-path mark (see [`Want::StackMarked`]).
    Stack { invalid: bool, slow: bool },
    /// Handed to the stack and counted passed, with the DSCP the matching policy sets (a
    /// policy's marking holds on the slow path too) and a valid checksum, nothing else
    /// changed; the mark carries the next hop's slow-path mark within its mask, the other
    /// bits kept, so the stack's forwarding follows the policy.
    StackMarked,
    /// Dropped by a drop policy.
    Dropped,
}

fn v6(prefix: u16, last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&prefix.to_be_bytes());
    a[15] = last;
    a
}

fn rule(priority: u32, family: u8, dst: ([u8; 16], u8), action: u8, dscp: Option<u8>) -> Rule {
    Rule {
        priority,
        family: Some(family),
        dst: Some(dst),
        value: RuleValue {
            action,
            nexthop: 0,
            slot: priority,
            flags: if dscp.is_some() { RULE_SET_DSCP } else { 0 },
            dscp: dscp.unwrap_or(0),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The policies: forward 10.2/16 and fd02::/16 setting DSCP EF, drop 10.3/16, fd03::/16
/// and UDP to port 9999, and forward everything else of each family (as a default route
/// would) without touching DSCP.
fn rules() -> Vec<Rule> {
    let mut port_drop = rule(5, FAMILY_V4, (v4(10, 0, 0, 0), 8), ACTION_DROP, None);
    port_drop.proto = Some(17);
    port_drop.dport = Some((9999, 9999));
    vec![
        port_drop,
        rule(
            10,
            FAMILY_V4,
            (v4(10, 2, 0, 0), 16),
            ACTION_FORWARD,
            Some(POLICY_DSCP),
        ),
        rule(
            11,
            FAMILY_V6,
            (v6(0xfd02, 0), 16),
            ACTION_FORWARD,
            Some(POLICY_DSCP),
        ),
        rule(20, FAMILY_V4, (v4(10, 3, 0, 0), 16), ACTION_DROP, None),
        rule(21, FAMILY_V6, (v6(0xfd03, 0), 16), ACTION_DROP, None),
        rule(30, FAMILY_V4, ([0; 16], 0), ACTION_FORWARD, None),
        rule(31, FAMILY_V6, ([0; 16], 0), ACTION_FORWARD, None),
    ]
}

/// An IPv4 address given as rules hold it (in the first 4 bytes).
fn ip4(a: [u8; 16]) -> IpAddr {
    IpAddr::from([a[0], a[1], a[2], a[3]])
}

fn udp4(dst: [u8; 16], dport: u16) -> PacketFields<Ifindex> {
    PacketFields {
        src: IpAddr::from([10, 1, 0, 2]),
        dst: ip4(dst),
        proto: 17,
        sport: Some(4000),
        dport: Some(dport),
        ..Default::default()
    }
}

fn udp6(dst: [u8; 16], dport: u16) -> PacketFields<Ifindex> {
    PacketFields {
        src: IpAddr::from(v6(0xfd01, 2)),
        dst: IpAddr::from(dst),
        proto: 17,
        sport: Some(4000),
        dport: Some(dport),
        ..Default::default()
    }
}

/// `p` as a later fragment: no ports.
fn later_fragment(p: PacketFields<Ifindex>) -> PacketFields<Ifindex> {
    PacketFields {
        sport: None,
        dport: None,
        ..p
    }
}

fn build(p: &PacketFields<Ifindex>) -> Vec<u8> {
    frame::build(p, &FrameOptions::default())
}

fn build_ttl(p: &PacketFields<Ifindex>, ttl: u8) -> Vec<u8> {
    frame::build(
        p,
        &FrameOptions {
            ttl,
            ..Default::default()
        },
    )
}

/// Recomputes the IPv4 header checksum over the header's own length.
fn fix_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    let end = (ETH + ihl).min(f.len());
    f[ETH + 10..ETH + 12].fill(0);
    let sum = ipv4_checksum(&f[ETH..end]);
    f[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
}

/// An IPv4 frame with `options` (a multiple of 4 bytes) after its 20-byte header.
fn with_v4_options(mut f: Vec<u8>, options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    f.splice(ETH + 20..ETH + 20, options.iter().copied());
    f[ETH] = 0x40 | (5 + options.len() / 4) as u8;
    let tot = (f.len() - ETH) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    fix_checksum(&mut f);
    f
}

/// Sets an IPv4 frame's flags/fragment offset word (offset in 8-byte units).
fn fragment_v4(mut f: Vec<u8>, more: bool, offset: u16) -> Vec<u8> {
    let word = (u16::from(more) << 13) | offset;
    f[ETH + 6..ETH + 8].copy_from_slice(&word.to_be_bytes());
    fix_checksum(&mut f);
    f
}

/// An IPv6 frame with one extension header of type `kind` (its body `body`, next header
/// filled in) between the fixed header and the upper layer.
fn with_v6_ext(mut f: Vec<u8>, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut ext = body.to_vec();
    ext[0] = f[ETH + 6];
    f[ETH + 6] = kind;
    f.splice(ETH + 40..ETH + 40, ext);
    let payload = (f.len() - ETH - 40) as u16;
    f[ETH + 4..ETH + 6].copy_from_slice(&payload.to_be_bytes());
    f
}

fn with_dst_mac(mut f: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&mac);
    f
}

/// `f` with its DSCP set to `dscp` (ECN kept), the IPv4 checksum recomputed.
fn with_dscp(f: &[u8], dscp: u8) -> Vec<u8> {
    let mut f = f.to_vec();
    if f[ETH] >> 4 == 4 {
        f[ETH + 1] = (dscp << 2) | (f[ETH + 1] & 3);
        fix_checksum(&mut f);
    } else {
        let tclass = (dscp << 2) | ((f[ETH + 1] >> 4) & 3);
        f[ETH] = (f[ETH] & 0xf0) | (tclass >> 4);
        f[ETH + 1] = (f[ETH + 1] & 0x0f) | (tclass << 4);
    }
    f
}

/// (passed, forwarded, dropped, invalid) packets.
fn counts(c: &IfaceCounters) -> [u64; 4] {
    [
        c.passed_packets,
        c.forwarded_packets,
        c.dropped_packets,
        c.invalid_packets,
    ]
}

/// Runs `f` and checks the verdict, the frame after and the counters' movement.
fn check(dp: &Datapath, what: &str, f: &[u8], want: Want) {
    let before = counts(&dp.maps.iface_counters(1).expect("interface counters"));
    let (verdict, mark, out) = dp.run(f, MARK_IN);
    let after = counts(&dp.maps.iface_counters(1).expect("interface counters"));
    let moved: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    match want {
        Want::Forwarded { dscp } => {
            assert_eq!(verdict, TC_ACT_REDIRECT, "{what}: forwarded");
            assert_eq!(moved, [0, 1, 0, 0], "{what}: counted forwarded");
            assert_eq!(out.len(), f.len(), "{what}: length kept");
            assert_eq!(&out[0..6], &HOP.dmac, "{what}: next hop's MAC");
            assert_eq!(&out[6..12], &HOP.smac, "{what}: egress MAC");
            if f[ETH] >> 4 == 4 {
                let ihl = usize::from(f[ETH] & 0x0f) * 4;
                assert_eq!(out[ETH + 8], f[ETH + 8] - 1, "{what}: TTL decremented");
                assert_eq!(
                    ipv4_checksum(&out[ETH..ETH + ihl]),
                    0,
                    "{what}: IPv4 header checksum valid"
                );
                assert_eq!(out[ETH + 1] >> 2, dscp, "{what}: DSCP");
                assert_eq!(out[ETH + 1] & 3, f[ETH + 1] & 3, "{what}: ECN kept");
            } else {
                assert_eq!(
                    out[ETH + 7],
                    f[ETH + 7] - 1,
                    "{what}: hop limit decremented"
                );
                let tclass = (out[ETH] & 0x0f) << 4 | out[ETH + 1] >> 4;
                assert_eq!(tclass >> 2, dscp, "{what}: DSCP");
            }
            assert_eq!(&out[ETH + 20..], &f[ETH + 20..], "{what}: rest untouched");
        }
        Want::Stack { invalid, slow } => {
            assert_eq!(verdict, TC_ACT_OK, "{what}: handed to the stack");
            assert_eq!(out, f, "{what}: untouched");
            let want = if slow {
                (MARK_IN & !HOP.slow_mask) | HOP.slow_mark
            } else {
                MARK_IN
            };
            assert_eq!(mark, want, "{what}: mark (slow-path mark: {slow})");
            let want = [1, 0, 0, u64::from(invalid)];
            assert_eq!(moved, want, "{what}: counted passed, invalid: {invalid}");
        }
        Want::StackMarked => {
            assert_eq!(verdict, TC_ACT_OK, "{what}: handed to the stack");
            assert_eq!(
                out,
                with_dscp(f, POLICY_DSCP),
                "{what}: only DSCP rewritten"
            );
            assert_eq!(
                mark,
                (MARK_IN & !HOP.slow_mask) | HOP.slow_mark,
                "{what}: the next hop's slow-path mark, the other bits kept"
            );
            assert_eq!(moved, [1, 0, 0, 0], "{what}: counted passed");
        }
        Want::Dropped => {
            assert_eq!(verdict, TC_ACT_SHOT, "{what}: dropped");
            assert_eq!(moved, [0, 0, 1, 0], "{what}: counted dropped");
        }
    }
}

fn loaded() -> Datapath {
    let mut dp = Datapath::load();
    dp.maps.set_nexthops(&[HOP]).expect("next hops");
    dp.maps
        .apply(&compile(&rules()).expect("compile"))
        .expect("apply");
    dp
}

const FWD: Want = Want::Forwarded { dscp: POLICY_DSCP };
const STACK: Want = Want::Stack {
    invalid: false,
    slow: false,
};
const MARKED: Want = Want::StackMarked;
const INVALID: Want = Want::Stack {
    invalid: true,
    slow: false,
};

#[test]
fn ordinary_frames_are_forwarded_and_dropped_by_policy() {
    require_root();
    let dp = loaded();
    check(
        &dp,
        "UDP to 10.2.0.2",
        &build(&udp4(v4(10, 2, 0, 2), 53)),
        FWD,
    );
    check(&dp, "UDP to fd02::2", &build(&udp6(v6(0xfd02, 2), 53)), FWD);
    check(
        &dp,
        "UDP to 10.3.0.2",
        &build(&udp4(v4(10, 3, 0, 2), 53)),
        Want::Dropped,
    );
    check(
        &dp,
        "UDP to fd03::2",
        &build(&udp6(v6(0xfd03, 2), 53)),
        Want::Dropped,
    );
    let port = build(&udp4(v4(10, 2, 0, 2), 9999));
    check(&dp, "UDP to 10.2.0.2 port 9999", &port, Want::Dropped);
}

/// IPv4 options: the fast path leaves packets with options to the stack, even when a
/// forward policy matches (the stack then routes them by its own tables, not to the
/// policy's next hop). A drop policy still drops them.
#[test]
fn ipv4_options_go_to_the_stack_unless_dropped() {
    require_root();
    let dp = loaded();
    let to2 = build(&udp4(v4(10, 2, 0, 2), 53));
    let nops = with_v4_options(to2.clone(), &[1, 1, 1, 1]);
    check(&dp, "four NOP options", &nops, MARKED);
    // Record route: type 7, length 11, pointer 4, two empty slots; then end of options.
    let rr = with_v4_options(to2, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    check(&dp, "record route option", &rr, MARKED);
    let dropped = with_v4_options(build(&udp4(v4(10, 3, 0, 2), 53)), &[1, 1, 1, 1]);
    check(&dp, "options to a drop policy", &dropped, Want::Dropped);
    // With options the stack checks the header checksum (over the whole header): a wrong
    // one goes there too, which drops the packet. (To the catch-all policy, which leaves
    // DSCP alone: a DSCP rewrite updates the checksum incrementally, keeping it wrong.)
    // It carries the policy's slow-path mark, as any packet with options does.
    let mut bad = with_v4_options(build(&udp4(v4(10, 9, 0, 2), 53)), &[1, 1, 1, 1]);
    bad[ETH + 10] ^= 1;
    let slow = Want::Stack {
        invalid: false,
        slow: true,
    };
    check(&dp, "options, wrong checksum", &bad, slow);
}

/// No fragment carries ports for the classifier, the first one included (its later
/// fragments have none, and all fragments of a datagram must get the same decision): a
/// port policy does not see fragments; an address policy does.
#[test]
fn fragments_are_classified_without_ports() {
    require_root();
    let dp = loaded();
    let port = build(&udp4(v4(10, 2, 0, 2), 9999));
    check(&dp, "whole datagram to port 9999", &port, Want::Dropped);
    let first = fragment_v4(port, true, 0);
    check(&dp, "first fragment to port 9999", &first, FWD);
    let later = build(&later_fragment(udp4(v4(10, 2, 0, 2), 9999)));
    check(&dp, "later fragment", &later, FWD);
    let middle = fragment_v4(later, true, 1);
    check(&dp, "middle fragment", &middle, FWD);
    let to3 = fragment_v4(build(&udp4(v4(10, 3, 0, 2), 53)), true, 0);
    check(&dp, "first fragment to a drop policy", &to3, Want::Dropped);
    let later3 = later_fragment(udp4(v4(10, 3, 0, 2), 53));
    check(
        &dp,
        "later fragment to a drop policy",
        &build(&later3),
        Want::Dropped,
    );
    let mut f6 = later_fragment(udp6(v6(0xfd02, 2), 9999));
    check(&dp, "IPv6 fragment", &build(&f6), FWD);
    f6.dst = IpAddr::from(v6(0xfd03, 2));
    check(
        &dp,
        "IPv6 fragment to a drop policy",
        &build(&f6),
        Want::Dropped,
    );
}

/// A TTL or hop limit that would reach 0 here: the stack answers ICMP time exceeded.
#[test]
fn expiring_ttl_and_hop_limit_go_to_the_stack() {
    require_root();
    let dp = loaded();
    for ttl in [0, 1] {
        let f = build_ttl(&udp4(v4(10, 2, 0, 2), 53), ttl);
        check(&dp, &format!("IPv4 TTL {ttl}"), &f, MARKED);
        let f = build_ttl(&udp6(v6(0xfd02, 2), 53), ttl);
        check(&dp, &format!("IPv6 hop limit {ttl}"), &f, MARKED);
    }
    check(&dp, "TTL 2", &build_ttl(&udp4(v4(10, 2, 0, 2), 53), 2), FWD);
    let f = build_ttl(&udp4(v4(10, 3, 0, 2), 53), 1);
    check(&dp, "TTL 1 to a drop policy", &f, Want::Dropped);
}

/// Headers the kernel's IP input refuses go to the stack untouched (which drops them and
/// counts the reason), counted invalid, whatever the policy says.
#[test]
fn malformed_headers_go_to_the_stack_counted_invalid() {
    require_root();
    let dp = loaded();
    let good = build(&udp4(v4(10, 2, 0, 2), 53));
    let edit = |change: &dyn Fn(&mut Vec<u8>), sum: bool| {
        let mut f = good.clone();
        change(&mut f);
        if sum {
            fix_checksum(&mut f);
        }
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 version 5", edit(&|f| f[ETH] = 0x55, true)),
        ("IHL 4 (16 bytes)", edit(&|f| f[ETH] = 0x44, false)),
        ("IHL 0", edit(&|f| f[ETH] = 0x40, false)),
        // 60 bytes of header in a 58-byte packet (header 20 + UDP 8 + 16 payload + 14).
        ("IHL 15, beyond the frame", edit(&|f| f[ETH] = 0x4f, false)),
        ("wrong header checksum", edit(&|f| f[ETH + 10] ^= 1, false)),
        (
            "total length beyond the frame",
            edit(
                &|f| f[ETH + 2..ETH + 4].copy_from_slice(&45u16.to_be_bytes()),
                true,
            ),
        ),
        (
            "total length under the header's",
            edit(
                &|f| f[ETH + 2..ETH + 4].copy_from_slice(&19u16.to_be_bytes()),
                true,
            ),
        ),
        // Cut inside the UDP header: total length says 22 bytes (2 bytes of UDP).
        (
            "cut inside the ports",
            edit(
                &|f| {
                    f.truncate(ETH + 22);
                    f[ETH + 2..ETH + 4].copy_from_slice(&22u16.to_be_bytes());
                },
                true,
            ),
        ),
        // A frame cut short of what its total length says (a runt of a real packet).
        ("cut frame", good[..ETH + 24].to_vec()),
    ];
    for (what, f) in &cases {
        check(&dp, what, f, INVALID);
    }
    let mut long = build(&udp6(v6(0xfd02, 2), 53));
    let beyond = (long.len() - ETH - 40 + 1) as u16;
    long[ETH + 4..ETH + 6].copy_from_slice(&beyond.to_be_bytes());
    check(&dp, "IPv6 payload length beyond the frame", &long, INVALID);
    let mut ver = build(&udp6(v6(0xfd02, 2), 53));
    ver[ETH] = 0x40 | (ver[ETH] & 0x0f);
    check(&dp, "IPv6 ethertype, version 4", &ver, INVALID);
    // Ethernet padding after a valid total length is no error.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 8]);
    check(&dp, "padded frame", &padded, FWD);
}

/// Frames shorter than the headers their ethertype announces. The kernel's test run
/// refuses an IPv4 frame shorter than 34 bytes (Ethernet and a 20-byte header) and an IPv6
/// frame shorter than 54, so the program's own checks of those headers' bounds are not
/// reached here; a frame with its IP header whole but cut short of its total length is.
#[test]
fn runt_frames() {
    require_root();
    let dp = loaded();
    let good = build(&udp4(v4(10, 2, 0, 2), 53));
    let v6 = build(&udp6(v6(0xfd02, 2), 53));
    for len in [0, ETH - 1, ETH, ETH + 19] {
        assert!(
            dp.try_run(&good[..len], 0).is_err(),
            "IPv4 frame of {len} bytes: the kernel no longer refuses to test-run it; \
             assert what the program does with it instead"
        );
    }
    assert!(
        dp.try_run(&v6[..ETH + 39], 0).is_err(),
        "IPv6 frame of 53 bytes"
    );
    for len in [ETH + 20, ETH + 21, ETH + 27] {
        check(
            &dp,
            &format!("IPv4 frame of {len} bytes"),
            &good[..len],
            INVALID,
        );
    }
    check(&dp, "IPv6 frame of 54 bytes", &v6[..ETH + 40], INVALID);
    // A frame of another ethertype needs no more than its Ethernet header.
    let mut other = good[..ETH].to_vec();
    other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    check(
        &dp,
        "bare Ethernet header (local experimental ethertype)",
        &other,
        STACK,
    );
}

/// IPv6 extension headers are walked to the upper layer (up to four): the packet is
/// classified with its ports and forwarded like any other (hop-by-hop options are not
/// processed by the fast path, as RFC 8200 lets a router skip them).
#[test]
fn ipv6_extension_headers_are_walked() {
    require_root();
    let dp = loaded();
    let base = build(&udp6(v6(0xfd02, 2), 53));
    // Hop-by-hop: next header, length 0 (8 bytes), PadN of 4.
    let hbh = with_v6_ext(base.clone(), 0, &[0, 0, 1, 4, 0, 0, 0, 0]);
    check(&dp, "hop-by-hop options", &hbh, FWD);
    // Routing header type 4 (segment routing), no segments left, one address.
    let mut srh = vec![0u8; 24];
    srh[1] = 2;
    srh[2] = 4;
    let routing = with_v6_ext(base.clone(), 43, &srh);
    check(&dp, "routing header", &routing, FWD);
    // Destination options, then a port drop policy finds its ports behind them.
    let drop = build(&udp6(v6(0xfd03, 2), 53));
    let dst_opts = with_v6_ext(drop, 60, &[0, 0, 1, 4, 0, 0, 0, 0]);
    check(
        &dp,
        "destination options to a drop policy",
        &dst_opts,
        Want::Dropped,
    );
    // An atomic fragment (offset 0, no more fragments) still counts as a fragment.
    let frag = with_v6_ext(base.clone(), 44, &[0, 0, 0, 0, 0, 0, 0, 1]);
    check(&dp, "fragment header", &frag, FWD);
    // Five headers: more than the walk follows; passed unclassified.
    let mut five = base.clone();
    for _ in 0..5 {
        five = with_v6_ext(five, 60, &[0, 0, 1, 4, 0, 0, 0, 0]);
    }
    check(&dp, "five extension headers", &five, STACK);
    // An extension header cut by the frame's end.
    let mut cut = with_v6_ext(base, 0, &[0, 0, 1, 4, 0, 0, 0, 0]);
    cut[ETH + 41] = 200; // 1608 bytes
    check(&dp, "hop-by-hop header beyond the frame", &cut, INVALID);
}

/// Frames that are not IPv4 or IPv6 at the Ethernet layer pass unclassified.
#[test]
fn non_ip_ethertypes_pass_unclassified() {
    require_root();
    let mut dp = loaded();
    dp.maps.reset_policy_counters([10]).unwrap();
    // ARP request who-has 10.2.0.2 from 10.1.0.2.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 10, 1, 0, 2]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 2, 0, 2]);
    check(&dp, "ARP request", &arp, STACK);
    // 802.1Q: the tag is in the frame (a test run has no VLAN offload), so the program
    // sees ethertype 0x8100 and leaves the frame to the stack without classifying it.
    let ip = build(&udp4(v4(10, 2, 0, 2), 53));
    let mut tagged = ip[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&ip[12..]);
    check(&dp, "802.1Q-tagged IPv4 (VLAN 100)", &tagged, STACK);
    assert_eq!(
        dp.maps.policy_counters(10).unwrap().packets,
        0,
        "the tagged frame was not classified"
    );
}

/// A router forwards unicast only: a broadcast or multicast destination (IPv4 224/4 and
/// 255.255.255.255, IPv6 ff00::/8, or an Ethernet group address) is the stack's, even
/// when a unicast forward policy matches the addresses.
#[test]
fn broadcast_and_multicast_destinations_are_not_forwarded() {
    require_root();
    let dp = loaded();
    let cases = [
        (
            "IPv4 multicast 224.0.0.5",
            build(&udp4(v4(224, 0, 0, 5), 53)),
        ),
        (
            "IPv4 multicast 239.1.2.3",
            build(&udp4(v4(239, 1, 2, 3), 53)),
        ),
        (
            "IPv4 limited broadcast",
            build(&udp4(v4(255, 255, 255, 255), 67)),
        ),
        ("IPv6 multicast ff02::1", build(&udp6(v6(0xff02, 1), 53))),
        ("IPv6 multicast ff0e::2", build(&udp6(v6(0xff0e, 2), 53))),
        (
            "unicast IPv4 in an Ethernet broadcast",
            with_dst_mac(build(&udp4(v4(10, 9, 0, 2), 53)), [0xff; 6]),
        ),
        (
            "unicast IPv6 in an Ethernet multicast",
            with_dst_mac(build(&udp6(v6(0xfd09, 2), 53)), [0x33, 0x33, 0, 0, 0, 1]),
        ),
    ];
    for (what, f) in &cases {
        check(&dp, what, f, STACK);
    }
    // Class E (240/4) is no group address: an ordinary destination to the fast path.
    let e = build(&udp4(v4(240, 0, 0, 1), 53));
    check(&dp, "IPv4 240.0.0.1", &e, Want::Forwarded { dscp: 0 });
}
