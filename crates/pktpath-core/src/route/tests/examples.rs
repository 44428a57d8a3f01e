//! The shipped examples (examples/*.json) are valid and steer the lab's traffic as their
//! policies say: client - router - two upstreams.

use std::{net::IpAddr, path::PathBuf};

use crate::route::{
    compile::{CompiledAction, PolicySet, Topology},
    config::Protocol,
    model::classify,
    packet::PacketFields,
};

fn examples() -> PolicySet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let topology = Topology::load(&dir.join("configuration.json"))
        .unwrap_or_else(|e| panic!("examples/configuration.json: {e}"));
    PolicySet::load(&topology, &dir.join("runtimeConfiguration.json"))
        .unwrap_or_else(|e| panic!("examples/runtimeConfiguration.json: {e}"))
}

/// iif, src, dst, proto, dport, dscp, mark; then the policy id and the next hop name or
/// verdict the packet should get.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Protocol,
    Option<u16>,
    u8,
    u32,
    Option<&'static str>,
    &'static str,
);

const CASES: &[Case] = &[
    (
        "to-client",
        "10.1.0.66",
        "198.51.100.1",
        Protocol::TCP,
        Some(443),
        0,
        0,
        Some("block-quarantined-host"),
        "drop",
    ),
    (
        "to-client",
        "10.1.0.5",
        "198.51.100.1",
        Protocol::UDP,
        Some(5004),
        46,
        0,
        Some("voice-via-up2"),
        "up2",
    ),
    (
        "to-client",
        "fd01::5",
        "2001:db8::1",
        Protocol::UDP,
        Some(5004),
        46,
        0,
        Some("voice-via-up2"),
        "up2",
    ),
    (
        "to-client",
        "10.1.0.5",
        "198.51.100.1",
        Protocol::TCP,
        Some(22),
        0,
        0x13,
        Some("marked-via-up1"),
        "up1",
    ),
    (
        "to-client",
        "10.1.0.200",
        "198.51.100.1",
        Protocol::TCP,
        Some(22),
        0,
        0x23,
        Some("lab-b-v4-via-up2"),
        "up2",
    ),
    (
        "to-client",
        "10.1.0.5",
        "198.51.100.53",
        Protocol::UDP,
        Some(53),
        0,
        0,
        Some("dns-via-up2"),
        "up2",
    ),
    (
        "to-client",
        "10.1.0.5",
        "198.51.100.53",
        Protocol::TCP,
        Some(53),
        0,
        0,
        Some("clients-via-up1"),
        "up1",
    ),
    (
        "to-client",
        "10.1.0.200",
        "198.51.100.1",
        Protocol::TCP,
        Some(443),
        0,
        0,
        Some("web-via-up1"),
        "up1",
    ),
    (
        "to-client",
        "fd01::8001",
        "2001:db8::1",
        Protocol::TCP,
        Some(8080),
        0,
        0,
        Some("lab-b-v6-via-up2"),
        "up2",
    ),
    (
        "to-client",
        "fd01::7fff",
        "2001:db8::1",
        Protocol::TCP,
        Some(8080),
        0,
        0,
        Some("clients-via-up1"),
        "up1",
    ),
    (
        "to-client",
        "10.1.0.5",
        "198.51.100.1",
        Protocol::ICMP,
        None,
        0,
        0,
        Some("icmp-to-stack"),
        "pass",
    ),
    (
        "to-up1",
        "198.51.100.1",
        "10.1.0.5",
        Protocol::TCP,
        Some(40000),
        0,
        0,
        Some("replies-by-main-table"),
        "table 254",
    ),
    (
        "to-up2",
        "2001:db8::1",
        "fd01::5",
        Protocol::TCP,
        Some(40000),
        0,
        0,
        None,
        "pass",
    ),
];

#[test]
fn examples_are_valid_and_steer_the_lab() {
    let set = examples();
    assert_eq!(set.topology.interfaces.len(), 3);
    assert_eq!(set.topology.next_hops.len(), 2);
    assert_eq!(set.policies.len(), 10);
    assert!(
        set.policies
            .windows(2)
            .all(|w| w[0].priority < w[1].priority)
    );
    for &(iif, src, dst, proto, dport, dscp, mark, policy, verdict) in CASES {
        let packet = PacketFields {
            iif: set.topology.interface_id(iif).expect("example interface"),
            src: src.parse::<IpAddr>().unwrap(),
            dst: dst.parse::<IpAddr>().unwrap(),
            proto: proto.0,
            sport: dport.map(|_| 40000),
            dport,
            dscp,
            mark,
        };
        let decision = classify(&set, &packet);
        let got = match decision.action {
            CompiledAction::Forward { next_hop, .. } => {
                set.topology.next_hop(next_hop).name.clone()
            }
            CompiledAction::LookupTable { table, .. } => format!("table {table}"),
            CompiledAction::Pass { .. } => "pass".to_owned(),
            CompiledAction::Drop => "drop".to_owned(),
        };
        assert_eq!(
            (decision.policy_id(), got.as_str()),
            (policy, verdict),
            "{iif} {src} -> {dst} {proto} dport {dport:?} dscp {dscp} mark {mark:#x}"
        );
    }
}
