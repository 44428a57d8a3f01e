//! Tuple compilation against the definition: exhaustive port-range checks and random rule
//! sets compared with a linear scan.

use pktpath_common::route::{FAMILY_V4, FAMILY_V6, MAX_TUPLES, RuleValue};

use super::*;
use crate::datapath::synth::{Rng, linear, random_packet, random_rules, v4, v6};

#[test]
fn port_ranges_become_exact_disjoint_prefix_covers() {
    let mut rng = Rng::new(7);
    let mut cases = vec![
        (1, 65535),
        (1, 1),
        (65535, 65535),
        (1024, 65535),
        (80, 80),
        (1, 1023),
        (8000, 8999),
    ];
    for _ in 0..300 {
        let a = rng.below(65535) as u16 + 1;
        let b = rng.below(65535) as u16 + 1;
        cases.push((a.min(b), a.max(b)));
    }
    for (lo, hi) in cases {
        let prefixes = range_to_prefixes(lo, hi);
        assert!(
            prefixes.len() <= 30,
            "{lo}-{hi}: {} prefixes",
            prefixes.len()
        );
        let mut covered = vec![0u8; 65536];
        for (value, len) in prefixes {
            let size = 1u32 << (16 - len);
            assert_eq!(
                value as u32 % size,
                0,
                "{lo}-{hi}: unaligned prefix {value}/{len}"
            );
            for port in value as u32..value as u32 + size {
                covered[port as usize] += 1;
            }
        }
        for port in 0..65536u32 {
            let want = (lo as u32..=hi as u32).contains(&port) as u8;
            assert_eq!(covered[port as usize], want, "{lo}-{hi}: port {port}");
        }
    }
}

#[test]
fn widened_port_entries_cover_the_range_exactly() {
    for (lo, hi) in [(1, 65535), (1000, 1999), (443, 443), (5, 77)] {
        let mut covered = vec![0u8; 65536];
        for (value, len) in port_entries(Some((lo, hi))) {
            assert!(PORT_LENGTHS.contains(&len));
            let size = 1u32 << (16 - len);
            for port in value as u32..value as u32 + size {
                covered[port as usize] += 1;
            }
        }
        for port in 0..65536u32 {
            assert_eq!(
                covered[port as usize],
                (lo as u32..=hi as u32).contains(&port) as u8,
                "{lo}-{hi} {port}"
            );
        }
    }
}

#[test]
fn compiled_tables_pick_what_a_linear_scan_picks() {
    let mut rng = Rng::new(0x5eed);
    let mut matched = 0;
    for round in 0..200 {
        let n = 1 + rng.below(40) as usize;
        let rules = random_rules(&mut rng, n);
        let tables = match compile(&rules) {
            Ok(t) => t,
            Err(CompileError::TooManyShapes { .. }) => continue,
            Err(e) => panic!("round {round}: {e}"),
        };
        let lookup = Lookup::new(&tables);
        for _ in 0..200 {
            let p = random_packet(&mut rng);
            let want = linear(&rules, &p);
            let got = lookup.find(&p);
            assert_eq!(got.map(|v| v.priority), want, "round {round}: packet {p:?}");
            if let Some(v) = got {
                matched += 1;
                let rule = rules.iter().find(|r| r.priority == v.priority).unwrap();
                assert_eq!(v.slot, rule.value.slot);
                assert_eq!(v.action, rule.value.action);
            }
        }
    }
    assert!(
        matched > 5_000,
        "the random packets should match often, matched {matched}"
    );
}

#[test]
fn the_scan_table_first_match_is_the_definition() {
    let mut rng = Rng::new(0x11ea);
    for round in 0..100 {
        let n = 1 + rng.below(40) as usize;
        let rules = random_rules(&mut rng, n);
        let table = scan_table(&rules).expect("valid rules");
        assert!(
            table
                .windows(2)
                .all(|w| w[0].value.priority <= w[1].value.priority),
            "round {round}: best priority first"
        );
        for _ in 0..100 {
            let p = random_packet(&mut rng);
            let got = table
                .iter()
                .find(|m| candidate_matches(m, &p))
                .map(|m| m.value.priority);
            assert_eq!(got, linear(&rules, &p), "round {round}: packet {p:?}");
        }
    }
}

#[test]
fn the_number_of_tuples_depends_on_shapes_not_on_rules() {
    let rule = |i: u32| Rule {
        priority: i,
        family: Some(FAMILY_V4),
        dst: Some((v4(10, (i >> 8) as u8, i as u8, 0), 24)),
        proto: Some(6),
        dport: Some((443, 443)),
        value: RuleValue {
            slot: i,
            ..Default::default()
        },
        ..Default::default()
    };
    let few = compile(&(0..10).map(rule).collect::<Vec<_>>()).unwrap();
    let many = compile(&(0..10_000).map(rule).collect::<Vec<_>>()).unwrap();
    assert_eq!(few.tuples.len(), 1);
    assert_eq!(many.tuples.len(), 1);
    assert_eq!(many.entries.len(), 10_000);
}

#[test]
fn tuples_differing_only_in_prefix_lengths_merge_whatever_the_order() {
    // Longest prefixes first: placement alone opens a /32, a /24 and a /16 tuple.
    let rules: Vec<Rule> = (0..30u32)
        .map(|i| Rule {
            priority: i,
            family: Some(FAMILY_V4),
            dst: Some((v4(10, i as u8, 0, 0), [32, 24, 16][(i / 10) as usize])),
            value: RuleValue {
                slot: i,
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let tables = compile(&rules).unwrap();
    assert_eq!(tables.tuples.len(), 1);
    assert_eq!(tables.tuples[0].dst[..3], [0xff, 0xff, 0]);
    let lookup = Lookup::new(&tables);
    for i in 0..30u32 {
        let p = PacketFields {
            family: FAMILY_V4,
            dst: v4(10, i as u8, 0, 0),
            ..Default::default()
        };
        assert_eq!(lookup.find(&p).map(|v| v.priority), Some(i));
    }
    // Nine /24s under one /16 cannot share a /16 bucket: they keep their own tuple.
    let dense: Vec<Rule> = (0..9u32)
        .map(|i| Rule {
            priority: i,
            family: Some(FAMILY_V4),
            dst: Some((v4(10, 1, i as u8, 0), 24)),
            ..Default::default()
        })
        .chain(std::iter::once(Rule {
            priority: 9,
            family: Some(FAMILY_V4),
            dst: Some((v4(10, 2, 0, 0), 16)),
            ..Default::default()
        }))
        .collect();
    assert_eq!(compile(&dense).unwrap().tuples.len(), 2);
}

#[test]
fn too_many_shapes_overflowing_buckets_and_bad_ranges_are_refused() {
    // Group g: nine rules on the same destination, differing in DSCP, under fwmark mask
    // 1 << g. The first group fills the shared prefix-only bucket; every group then needs a
    // tuple of its own (no other group's mark mask is within its own).
    let mut rules = Vec::new();
    for g in 0..=MAX_TUPLES {
        for d in 0..9u32 {
            rules.push(Rule {
                priority: g * 100 + d,
                family: Some(FAMILY_V6),
                dst: Some((v6(1, 1), 128)),
                dscp: Some(d as u8),
                mark: Some((1 << (g % 32), 1 << (g % 32))),
                ..Default::default()
            });
        }
    }
    assert!(matches!(
        compile(&rules),
        Err(CompileError::TooManyShapes { .. })
    ));

    // Thirty rules that differ only in overlapping port ranges starting at one port.
    let rules: Vec<Rule> = (1..=30u16)
        .map(|k| Rule {
            priority: k as u32,
            family: Some(FAMILY_V4),
            dst: Some((v4(10, 0, 0, 1), 32)),
            dport: Some((1000, 1000 + k)),
            ..Default::default()
        })
        .collect();
    let err = compile(&rules).unwrap_err();
    assert!(matches!(err, CompileError::BucketOverflow { .. }), "{err}");

    let bad = Rule {
        priority: 5,
        dport: Some((90, 80)),
        ..Default::default()
    };
    let err = compile(&[bad]).unwrap_err().to_string();
    assert!(err.contains("priority 5") && err.contains("90-80"), "{err}");
}
