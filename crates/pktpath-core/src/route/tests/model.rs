//! The reference model: each match field on its own, priority order, the no-match default,
//! resolved actions; and a property test (proptest) of compile + classify against a
//! separately written oracle that works on the uncompiled configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::{compiled, topology};
use crate::route::{
    compile::{CompiledAction, InterfaceId, PolicySet, Rewrite},
    config::{
        Action, MarkMatch, Match, Policy, PortRange, Prefix, Protocol, RUNTIME_VERSION,
        RuntimeConfiguration, Source,
    },
    model::{NO_MATCH, classify},
    packet::PacketFields,
};

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP packet from 10.1.0.5:40000 to 198.51.100.1:443 on `lan`, no DSCP, no mark.
fn packet(set: &PolicySet) -> PacketFields {
    PacketFields {
        iif: set.topology.interface_id("lan").unwrap(),
        src: v4("10.1.0.5"),
        dst: v4("198.51.100.1"),
        proto: 6,
        sport: Some(40000),
        dport: Some(443),
        dscp: 0,
        mark: 0,
    }
}

/// The id of the policy `set` picks for `p`.
fn pick(set: &PolicySet, p: &PacketFields) -> Option<String> {
    classify(set, p).policy_id().map(str::to_owned)
}

fn one(matches: &str) -> PolicySet {
    compiled(&[&format!(
        r#"{{ "id": "m", "priority": 1, "match": {matches}, "action": {{ "type": "drop" }} }}"#
    )])
}

#[test]
fn no_policy_matches_means_pass_unchanged() {
    let set = compiled(&[]);
    let decision = classify(&set, &packet(&set));
    assert_eq!(decision.policy_id(), None);
    assert_eq!(decision.action, NO_MATCH);
    assert_eq!(
        decision.action,
        CompiledAction::Pass {
            rewrite: Rewrite::default()
        }
    );
}

#[test]
fn empty_match_matches_both_families() {
    let set = one("{}");
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
    p.src = "fd01::5".parse().unwrap();
    p.dst = "2001:db8::1".parse().unwrap();
    p.proto = 58;
    p.sport = None;
    p.dport = None;
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
}

#[test]
fn lowest_priority_number_wins_whatever_the_file_order() {
    let set = compiled(&[
        r#"{ "id": "late", "priority": 300, "match": {}, "action": { "type": "pass" } }"#,
        r#"{ "id": "first", "priority": 5, "match": { "proto": "tcp" }, "action": { "type": "drop" } }"#,
        r#"{ "id": "middle", "priority": 200, "match": { "proto": "tcp" }, "action": { "type": "forward", "next_hop": "isp1" } }"#,
    ]);
    let ids: Vec<&str> = set.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["first", "middle", "late"]);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p).as_deref(), Some("first"));
    assert_eq!(classify(&set, &p).action, CompiledAction::Drop);
    p.proto = 17;
    assert_eq!(pick(&set, &p).as_deref(), Some("late"));
}

#[test]
fn input_interface() {
    let set = one(r#"{ "iif": "wan1" }"#);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p), None);
    p.iif = set.topology.interface_id("wan1").unwrap();
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
}

#[test]
fn prefixes_and_families() {
    let set = one(r#"{ "src": "10.1.0.0/25", "dst": "198.51.100.0/24" }"#);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
    p.src = v4("10.1.0.127");
    assert_eq!(
        pick(&set, &p).as_deref(),
        Some("m"),
        "last address in the prefix"
    );
    p.src = v4("10.1.0.128");
    assert_eq!(pick(&set, &p), None, "first address past the prefix");
    p.src = v4("10.1.0.5");
    p.dst = v4("198.51.101.1");
    assert_eq!(pick(&set, &p), None);

    let set = one(r#"{ "dst": "0.0.0.0/0" }"#);
    let mut p = packet(&set);
    assert_eq!(
        pick(&set, &p).as_deref(),
        Some("m"),
        "default prefix matches all ipv4"
    );
    p.src = IpAddr::V6(Ipv6Addr::LOCALHOST);
    p.dst = "2001:db8::1".parse().unwrap();
    assert_eq!(pick(&set, &p), None, "an ipv4 prefix never matches ipv6");

    let set = one(r#"{ "dst": "2001:db8::/32" }"#);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p), None, "an ipv6 prefix never matches ipv4");
    p.src = "fd01::5".parse().unwrap();
    p.dst = "2001:db8:ffff::1".parse().unwrap();
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
    p.dst = "2001:db9::1".parse().unwrap();
    assert_eq!(pick(&set, &p), None);
}

#[test]
fn protocol_and_ports() {
    let set = one(r#"{ "proto": "udp", "sport": 53, "dport": "1024-2047" }"#);
    let mut p = packet(&set);
    p.proto = 17;
    p.sport = Some(53);
    for (dport, hit) in [(1023, false), (1024, true), (2047, true), (2048, false)] {
        p.dport = Some(dport);
        assert_eq!(pick(&set, &p).is_some(), hit, "dport {dport}");
    }
    p.dport = Some(1500);
    p.sport = Some(54);
    assert_eq!(pick(&set, &p), None, "sport");
    p.sport = Some(53);
    p.proto = 6;
    assert_eq!(pick(&set, &p), None, "proto");

    // A packet without ports (a later fragment) never matches a port condition.
    let set = one(r#"{ "dport": "0-65535" }"#);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
    p.sport = None;
    p.dport = None;
    assert_eq!(pick(&set, &p), None);
}

#[test]
fn dscp_and_mark() {
    let set = one(r#"{ "dscp": 46 }"#);
    let mut p = packet(&set);
    assert_eq!(pick(&set, &p), None);
    p.dscp = 46;
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));

    let set = one(r#"{ "mark": { "value": 16, "mask": 240 } }"#);
    let mut p = packet(&set);
    for (mark, hit) in [
        (0x10, true),
        (0x1f, true),
        (0xff10, true),
        (0x20, false),
        (0, false),
    ] {
        p.mark = mark;
        assert_eq!(pick(&set, &p).is_some(), hit, "mark {mark:#x}");
    }
    let set = one(r#"{ "mark": { "value": 7 } }"#);
    let mut p = packet(&set);
    p.mark = 7;
    assert_eq!(pick(&set, &p).as_deref(), Some("m"));
    p.mark = 0x107;
    assert_eq!(pick(&set, &p), None, "the default mask compares every bit");
}

#[test]
fn actions_are_resolved() {
    let set = compiled(&[
        r#"{ "id": "f", "priority": 1, "match": { "dport": 1 }, "action": { "type": "forward", "next_hop": "isp2", "set_mark": 9, "set_dscp": 10 } }"#,
        r#"{ "id": "t", "priority": 2, "match": { "dport": 2 }, "action": { "type": "lookup_table", "table": "alt" } }"#,
        r#"{ "id": "p", "priority": 3, "match": { "dport": 3 }, "action": { "type": "pass", "set_mark": 1 } }"#,
    ]);
    let mut p = packet(&set);
    p.dport = Some(1);
    let CompiledAction::Forward { next_hop, rewrite } = classify(&set, &p).action else {
        panic!("forward expected");
    };
    assert_eq!(set.topology.next_hop(next_hop).name, "isp2");
    assert_eq!(
        set.topology
            .interface(set.topology.next_hop(next_hop).interface)
            .name,
        "wan2"
    );
    assert_eq!(
        rewrite,
        Rewrite {
            mark: Some(9),
            dscp: Some(10)
        }
    );
    p.dport = Some(2);
    assert_eq!(
        classify(&set, &p).action,
        CompiledAction::LookupTable {
            table: 100,
            rewrite: Rewrite::default()
        }
    );
    p.dport = Some(3);
    assert_eq!(
        classify(&set, &p).action,
        CompiledAction::Pass {
            rewrite: Rewrite {
                mark: Some(1),
                dscp: None
            }
        }
    );
}

/// The interfaces of [`topology`].
const IFACES: [&str; 3] = ["lan", "wan1", "wan2"];

/// Addresses from a small pool so random prefixes and packets meet often.
fn address(v6: bool) -> impl Strategy<Value = IpAddr> {
    (0u8..4, 0u8..3).prop_map(move |(high, low)| {
        let low = high * 64 + low;
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, u16::from(low)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, low))
        }
    })
}

/// A prefix containing an address of the pool, at a length near the pool's width.
fn prefix(v6: bool) -> impl Strategy<Value = Prefix> {
    (address(v6), 0usize..5).prop_map(|(addr, i)| {
        let text = match addr {
            IpAddr::V4(a) => {
                let len = [0, 24, 25, 26, 32][i];
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                format!("{}/{len}", Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let len = [0, 64, 120, 121, 128][i];
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                format!("{}/{len}", Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        text.parse().unwrap()
    })
}

/// A policy's match of one address family: each field present or not.
fn match_of_one_family() -> impl Strategy<Value = Match> {
    any::<bool>()
        .prop_flat_map(|v6| {
            (
                proptest::option::weighted(0.3, proptest::sample::select(IFACES.to_vec())),
                proptest::option::weighted(0.5, prefix(v6)),
                proptest::option::weighted(0.3, prefix(v6)),
                proptest::option::weighted(
                    0.4,
                    (
                        proptest::sample::select(vec![6u8, 17]),
                        proptest::option::weighted(0.5, (0u16..4, 0u16..150)),
                        proptest::option::weighted(0.2, 0u16..3),
                    ),
                ),
                proptest::option::weighted(0.2, 0u8..3),
                proptest::option::weighted(
                    0.2,
                    (
                        proptest::sample::select(vec![0xffu32, 0x0f, 0xffff_ffff]),
                        0u32..4,
                    ),
                ),
            )
        })
        .prop_map(|(iif, src, dst, ports, dscp, mark)| {
            let (proto, dport, sport) = match ports {
                Some((proto, dport, sport)) => (Some(proto), dport, sport),
                None => (None, None, None),
            };
            Match {
                iif: iif.map(str::to_owned),
                src,
                dst,
                proto: proto.map(Protocol),
                sport: sport.map(PortRange::single),
                dport: dport
                    .map(|(first, more)| PortRange::new(first * 100, first * 100 + more).unwrap()),
                dscp,
                mark: mark.map(|(mask, value)| MarkMatch {
                    value: value & mask,
                    mask,
                }),
            }
        })
}

/// A packet from the pool: its input interface's name, and its fields (`iif` to be set
/// from that name).
fn random_packet() -> impl Strategy<Value = (&'static str, PacketFields)> {
    any::<bool>()
        .prop_flat_map(|v6| {
            (
                proptest::sample::select(IFACES.to_vec()),
                address(v6),
                address(v6),
                proptest::sample::select(vec![6u8, 17, 1]),
                proptest::bool::weighted(0.9),
                (0u16..3, 0u16..500),
                0u8..3,
                (0u32..4, any::<bool>()),
            )
        })
        .prop_map(
            |(iif, src, dst, proto, ports, (sport, dport), dscp, (mark, high))| {
                let ports = proto != 1 && ports;
                let fields = PacketFields {
                    iif: InterfaceId(0),
                    src,
                    dst,
                    proto,
                    sport: ports.then_some(sport),
                    dport: ports.then_some(dport),
                    dscp,
                    mark: mark | if high { 0x100 } else { 0 },
                };
                (iif, fields)
            },
        )
}

/// Policy matches, and distinct priorities for them in an order unrelated to theirs.
fn matches_and_priorities() -> impl Strategy<Value = (Vec<Match>, Vec<u32>)> {
    proptest::collection::vec(match_of_one_family(), 0..12).prop_flat_map(|matches| {
        let priorities: Vec<u32> = (0..matches.len() as u32).map(|i| i * 10).collect();
        (Just(matches), Just(priorities).prop_shuffle())
    })
}

/// The oracle: whether the uncompiled `m` accepts `p`, field by field, comparing
/// prefixes bit by bit from their text.
fn oracle_accepts(m: &Match, p: &PacketFields, iif_name: &str) -> bool {
    fn bits(ip: IpAddr) -> Vec<bool> {
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
            .collect()
    }
    let in_prefix = |text: &str, ip: IpAddr| {
        let (net, len) = text.split_once('/').unwrap();
        let net: IpAddr = net.parse().unwrap();
        let len: usize = len.parse().unwrap();
        net.is_ipv4() == ip.is_ipv4() && bits(net)[..len] == bits(ip)[..len]
    };
    let port_in = |range: &Option<crate::route::config::PortRange>, port: Option<u16>| match range {
        None => true,
        Some(r) => port.is_some_and(|port| r.first() <= port && port <= r.last()),
    };
    m.iif.as_deref().is_none_or(|name| name == iif_name)
        && m.src.is_none_or(|s| in_prefix(&s.to_string(), p.src))
        && m.dst.is_none_or(|d| in_prefix(&d.to_string(), p.dst))
        && m.proto.is_none_or(|proto| proto.0 == p.proto)
        && port_in(&m.sport, p.sport)
        && port_in(&m.dport, p.dport)
        && m.dscp.is_none_or(|d| d == p.dscp)
        && m.mark.is_none_or(|mk| p.mark & mk.mask == mk.value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn classify_agrees_with_an_oracle_on_random_policy_sets(
        (matches, priorities) in matches_and_priorities(),
        packets in proptest::collection::vec(random_packet(), 200),
    ) {
        let topology = topology();
        let policies: Vec<Policy> = matches
            .into_iter()
            .zip(priorities)
            .enumerate()
            .map(|(i, (matches, priority))| Policy {
                id: format!("p{i}"),
                priority,
                matches,
                action: Action::Drop {},
            })
            .collect();
        let runtime = RuntimeConfiguration {
            version: RUNTIME_VERSION,
            policies,
        };
        let text = serde_json::to_string_pretty(&runtime).unwrap();
        let set = PolicySet::from_source(&topology, &Source::new("random.json", text.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        for (iif, mut p) in packets {
            p.iif = topology.interface_id(iif).unwrap();
            let want = runtime
                .policies
                .iter()
                .filter(|pol| oracle_accepts(&pol.matches, &p, iif))
                .min_by_key(|pol| pol.priority)
                .map(|pol| pol.id.clone());
            prop_assert_eq!(pick(&set, &p), want, "packet {:?}\n{}", p, text);
        }
    }
}
