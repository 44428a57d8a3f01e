//! The compiled trees against the reference model ([`crate::route::model`]), without root:
//! random policy sets drawn from a small vocabulary (so that policies overlap: nested
//! prefixes, port ranges that cross, wildcards, both families, protocols without ports,
//! `proto 0`, port 0, fragments) and random packets from the same vocabulary, looked up in
//! user space by the kernel's own search ([`Lookup`]). The vocabulary is
//! [`synth::dense_policies`]'s, as strategies that shrink.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::{
    route::datapath::{
        policy::{self, Interfaces, Slots},
        synth,
    },
    route::{
        compile::{InterfaceId, PolicySet, Topology},
        config::{
            Action, MarkMatch, Match, Policy, PortRange, Prefix, Protocol, RUNTIME_VERSION,
            RuntimeConfiguration, Source,
        },
        model,
        packet::PacketFields,
    },
};

fn topology() -> Topology {
    synth::dense_topology()
}

fn ifaces() -> Interfaces {
    synth::dense_ifaces()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

fn v6(net: u8, tail: u8) -> IpAddr {
    let mut x = [0u8; 16];
    x[0] = 0xfd;
    x[1] = net;
    x[15] = tail;
    IpAddr::from(x)
}

fn addr(v6_family: bool) -> impl Strategy<Value = IpAddr> {
    (0u8..3, 0u8..3, 0u8..4).prop_map(
        move |(a, b, c)| {
            if v6_family { v6(a, c) } else { v4(10, a, b, c) }
        },
    )
}

fn prefix(v6_family: bool) -> impl Strategy<Value = Prefix> {
    let lens: &'static [u8] = if v6_family {
        &[0, 8, 16, 64, 120, 128]
    } else {
        &[0, 8, 16, 24, 30, 32]
    };
    (addr(v6_family), proptest::sample::select(lens))
        .prop_map(|(a, len)| Prefix::new(synth::mask_to(a, len), len).unwrap())
}

fn ports() -> impl Strategy<Value = Option<PortRange>> {
    prop_oneof![
        3 => Just(None),
        1 => proptest::sample::select(vec![0u16, 22, 53, 80, 443]).prop_map(|p| Some(PortRange::single(p))),
        1 => Just(Some(PortRange::new(0, 1023).unwrap())),
        1 => Just(Some(PortRange::new(1024, 65535).unwrap())),
        1 => (0u16..600, 0u16..300).prop_map(|(lo, n)| Some(PortRange::new(lo, lo + n).unwrap())),
    ]
}

/// A policy's match and action (id and priority come from its place in the set).
fn policy() -> impl Strategy<Value = (Match, Action)> {
    let family = prop_oneof![2 => Just(Some(false)), 1 => Just(Some(true)), 1 => Just(None)];
    family.prop_flat_map(|family| {
        let v6_family = family.unwrap_or(false);
        let addrs = match family {
            None => (Just(None), Just(None)).boxed(),
            Some(_) => (
                proptest::option::weighted(0.6, prefix(v6_family)),
                proptest::option::weighted(0.6, prefix(v6_family)),
            )
                .boxed(),
        };
        let proto = prop_oneof![
            2 => Just(None),
            1 => Just(Some(6u8)),
            1 => Just(Some(17u8)),
            1 => proptest::sample::select(vec![0u8, 1, 47, 58]).prop_map(Some),
        ];
        (
            addrs,
            proto,
            ports(),
            ports(),
            proptest::option::weighted(0.2, proptest::sample::select(vec!["in0", "in1"])),
            proptest::option::weighted(0.15, proptest::sample::select(vec![0u8, 10, 46])),
            proptest::option::weighted(
                0.15,
                (
                    0u32..4,
                    proptest::sample::select(vec![0xffu32, 0x0f, u32::MAX]),
                ),
            ),
            0u8..4,
        )
            .prop_map(
                move |((src, dst), proto, sport, dport, iif, dscp, mark, action)| {
                    let ports_ok = proto.is_none_or(|p| matches!(p, 6 | 17));
                    let m = Match {
                        iif: iif.map(str::to_owned),
                        src,
                        dst,
                        proto: proto.map(Protocol),
                        sport: sport.filter(|_| ports_ok),
                        dport: dport.filter(|_| ports_ok),
                        dscp,
                        mark: mark.map(|(v, mask)| MarkMatch {
                            value: v & mask,
                            mask,
                        }),
                    };
                    let next_hop = if v6_family { "both" } else { "v4only" };
                    let action = match action {
                        0 => Action::Drop {},
                        1 => Action::Pass {
                            set_mark: None,
                            set_dscp: None,
                        },
                        2 => Action::Forward {
                            next_hop: next_hop.to_owned(),
                            set_mark: None,
                            set_dscp: None,
                        },
                        _ => Action::LookupTable {
                            table: "main".to_owned(),
                            set_mark: None,
                            set_dscp: None,
                        },
                    };
                    (m, action)
                },
            )
    })
}

fn policy_set(policies: Vec<(Match, Action)>, priorities: Vec<u32>) -> PolicySet {
    let runtime = RuntimeConfiguration {
        version: RUNTIME_VERSION,
        policies: policies
            .into_iter()
            .zip(priorities)
            .enumerate()
            .map(|(i, ((matches, action), priority))| Policy {
                id: format!("p{i}"),
                priority,
                matches,
                action,
            })
            .collect(),
    };
    let text = serde_json::to_string(&runtime).unwrap();
    PolicySet::from_source(&topology(), &Source::new("runtime.json", text))
        .expect("the strategy makes valid policy sets")
}

fn packet() -> impl Strategy<Value = PacketFields> {
    any::<bool>().prop_flat_map(|v6_family| {
        (
            0usize..2,
            addr(v6_family),
            addr(v6_family),
            proptest::sample::select(vec![6u8, 17, 1, 47, 0, 58]),
            proptest::sample::select(vec![0u16, 22, 53, 80, 443, 700, 1023, 1024, 40000]),
            proptest::sample::select(vec![0u16, 22, 53, 80, 443, 700, 1023, 1024, 40000]),
            proptest::sample::select(vec![0u8, 10, 46]),
            0u32..5,
            proptest::bool::weighted(0.1),
        )
            .prop_map(
                |(iif, src, dst, proto, sport, dport, dscp, mark, fragment)| {
                    let ports = matches!(proto, 6 | 17) && !fragment;
                    PacketFields {
                        iif: InterfaceId(iif),
                        src,
                        dst,
                        proto,
                        sport: ports.then_some(sport),
                        dport: ports.then_some(dport),
                        dscp,
                        mark,
                    }
                },
            )
    })
}

/// The policy id the compiled tables pick for `p`.
fn compiled_pick(set: &PolicySet, p: &PacketFields) -> Option<String> {
    let ifaces = ifaces();
    let plan = Slots::default().plan(set).unwrap();
    let rules = policy::rules(set, &ifaces, &plan.slots).unwrap();
    let tables = compile(&rules).unwrap();
    let value = Lookup::new(&tables).find(&policy::packet_fields(p, &ifaces))?;
    plan.slots
        .by_id
        .iter()
        .find(|(_, s)| **s == value.slot)
        .map(|(id, _)| id.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A rule that matches a packet counts in its subtrees' priority bound for the
    /// packet's class: a bound never skips a subtree holding the packet's match.
    #[test]
    fn a_rule_matching_a_packet_counts_in_the_bound_of_its_class(
        policies in proptest::collection::vec(policy(), 1..40),
        packets in proptest::collection::vec(packet(), 40),
    ) {
        let n = policies.len() as u32;
        let set = policy_set(policies, (1..=n).collect());
        let ifaces = ifaces();
        let plan = Slots::default().plan(&set).unwrap();
        let rules = policy::rules(&set, &ifaces, &plan.slots).unwrap();
        for p in &packets {
            let fields = policy::packet_fields(p, &ifaces);
            let key = key_of(&fields);
            let class = key.words[pktpath_common::route::KEY_CLASS];
            for r in &rules {
                let m = rule_match(r, 0);
                if candidate_matches(&m, fields.family(), &key) {
                    prop_assert!(m.may_match_class(class), "{:?} matches {:?}, class {}", r, p, class);
                }
            }
        }
    }

    /// Every packet gets the policy the reference model picks.
    #[test]
    fn compiled_trees_pick_what_the_model_picks(
        policies in proptest::collection::vec(policy(), 1..60),
        packets in proptest::collection::vec(packet(), 40),
        order in Just((0..60u32).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        // Distinct priorities in an order unrelated to the file order (the ranks below the
        // policy count, in the order of a shuffle, which shrinks towards the file order).
        let n = policies.len() as u32;
        let priorities = order.iter().filter(|&&i| i < n).map(|i| i * 7 + 1).collect();
        let set = policy_set(policies, priorities);
        let ifaces = ifaces();
        let plan = Slots::default().plan(&set).unwrap();
        let rules = policy::rules(&set, &ifaces, &plan.slots).unwrap();
        // The default shape; the roomy one (more copies, a side's best rules copied into
        // the slices); the packet class cut at every node (folded into the parents' cuts,
        // and not), and never; deep trees of tiny
        // leaves with few copies allowed, each node a walk of its own (as if in a chunk of
        // its own); one leaf per tree, longer than a walk checks (its rest walked after).
        for params in [
            Params::default(),
            Params::roomy(),
            Params {
                leaf_rules: 2,
                class_cut_rules: usize::MAX,
                ..Params::default()
            },
            Params {
                class_cut_rules: 0,
                ..Params::default()
            },
            Params {
                leaf_rules: 2,
                class_cut_rules: usize::MAX,
                class_fold_slots: 0,
                ..Params::default()
            },
            Params {
                leaf_rules: 1,
                space_factor: 2,
                far_all: true,
                ..Params::default()
            },
            Params {
                leaf_rules: 256,
                space_factor: 4,
                ..Params::default()
            },
        ] {
            let tables = compile_with(&rules, params).unwrap();
            let lookup = Lookup::new(&tables);
            for p in &packets {
                let want = model::classify(&set, p).policy_id().map(str::to_owned);
                let got = lookup
                    .find(&policy::packet_fields(p, &ifaces))
                    .and_then(|v| plan.slots.by_id.iter().find(|(_, s)| **s == v.slot))
                    .map(|(id, _)| id.clone());
                prop_assert_eq!(got, want, "packet {:?} with {:?}", p, params);
            }
        }
    }
}

#[test]
fn proto_zero_is_a_protocol_not_icmp() {
    let set = policy_set(
        vec![
            (
                Match {
                    proto: Some(Protocol(0)),
                    ..Default::default()
                },
                Action::Drop {},
            ),
            (
                Match {
                    proto: Some(Protocol(1)),
                    ..Default::default()
                },
                Action::Drop {},
            ),
        ],
        vec![1, 2],
    );
    let mut p = PacketFields {
        iif: InterfaceId(0),
        src: v4(10, 0, 0, 1),
        dst: v4(10, 0, 0, 2),
        proto: 0,
        sport: None,
        dport: None,
        dscp: 0,
        mark: 0,
    };
    assert_eq!(compiled_pick(&set, &p).as_deref(), Some("p0"));
    p.proto = 1;
    assert_eq!(compiled_pick(&set, &p).as_deref(), Some("p1"));
}

#[test]
fn port_zero_matches_and_packets_without_ports_do_not() {
    let set = policy_set(
        vec![(
            Match {
                dport: Some(PortRange::new(0, 1023).unwrap()),
                ..Default::default()
            },
            Action::Drop {},
        )],
        vec![1],
    );
    let mut p = PacketFields {
        iif: InterfaceId(0),
        src: v4(10, 0, 0, 1),
        dst: v4(10, 0, 0, 2),
        proto: 17,
        sport: Some(5000),
        dport: Some(0),
        dscp: 0,
        mark: 0,
    };
    assert_eq!(compiled_pick(&set, &p).as_deref(), Some("p0"));
    p.dport = None; // a fragment
    assert_eq!(compiled_pick(&set, &p), None);
    p.proto = 1;
    assert_eq!(compiled_pick(&set, &p), None);
}

#[test]
fn match_shapes_count_lengths_fields_named_and_port_kinds() {
    use pktpath_common::route::{FAMILY_V4, FAMILY_V6};
    let net = |a: u8, len: u8| {
        let mut b = [0u8; 16];
        b[0] = 10;
        b[1] = a;
        Some((b, len))
    };
    let rule = |family, src, dport, proto| Rule {
        family: Some(family),
        src,
        dport,
        proto,
        ..Rule::default()
    };
    let rules = [
        rule(FAMILY_V4, net(0, 8), None, None),
        // Another address of the same length: the same shape.
        rule(FAMILY_V4, net(1, 8), None, None),
        rule(FAMILY_V4, net(0, 16), None, None),
        rule(FAMILY_V4, net(0, 8), Some((80, 80)), Some(6)),
        // Another single port: the same shape.
        rule(FAMILY_V4, net(0, 8), Some((443, 443)), Some(6)),
        rule(FAMILY_V4, net(0, 8), Some((1024, 65535)), Some(6)),
        rule(FAMILY_V6, net(0, 8), None, None),
    ];
    assert_eq!(match_shapes(&rules), 5);
    assert_eq!(match_shapes(&rules[..2]), 1);
    assert_eq!(match_shapes(&[]), 0);
}
