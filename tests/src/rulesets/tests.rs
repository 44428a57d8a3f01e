use std::collections::HashSet;

use pktpath_core::route::{
    config::{Action, Family, Policy, Prefix, Protocol},
    model,
};

use super::*;

fn share(count: usize, of: usize) -> f64 {
    count as f64 * 100.0 / of as f64
}

#[test]
fn names_round_trip() {
    for p in Profile::ALL {
        assert_eq!(p.name().parse::<Profile>(), Ok(p));
        assert_eq!(p.to_string(), p.name());
    }
    let err = "acl4".parse::<Profile>().unwrap_err().to_string();
    assert!(err.contains("acl4") && err.contains("one-shape"), "{err}");
}

#[test]
fn every_set_has_exactly_n_unique_policies_and_validates() {
    for profile in Profile::ALL {
        for n in [0, 1, 100, 1000] {
            let set = generate(profile, n, 11);
            let policies = &set.runtime.policies;
            assert_eq!(policies.len(), n, "{profile} {n}");
            let ids: HashSet<&str> = policies.iter().map(|p| p.id.as_str()).collect();
            let priorities: HashSet<u32> = policies.iter().map(|p| p.priority).collect();
            assert_eq!(ids.len(), n, "{profile}: ids unique");
            assert_eq!(priorities.len(), n, "{profile}: priorities unique");
            let compiled = set
                .policy_set()
                .unwrap_or_else(|e| panic!("{profile} at {n} does not validate: {e}"));
            assert_eq!(compiled.policies.len(), n);
        }
    }
}

#[test]
fn generation_is_deterministic_and_sizes_nest() {
    for profile in Profile::ALL {
        let a = generate(profile, 300, 5);
        assert_eq!(a.runtime, generate(profile, 300, 5).runtime, "{profile}");
        // The first k policies of n are the k of a smaller set, but for their priorities
        // (ordered over the whole set).
        let small = generate(profile, 100, 5);
        let unprioritised = |p: &pktpath_core::route::config::Policy| {
            (p.id.clone(), p.matches.clone(), p.action.clone())
        };
        assert!(
            small
                .runtime
                .policies
                .iter()
                .zip(&a.runtime.policies[..100])
                .all(|(x, y)| unprioritised(x) == unprioritised(y)),
            "{profile}: sizes nest"
        );
        let other = generate(profile, 300, 6);
        assert_ne!(a.runtime, other.runtime, "{profile}: another seed");
        let same_ids = a
            .runtime
            .policies
            .iter()
            .zip(&other.runtime.policies)
            .all(|(x, y)| x.id == y.id);
        assert!(same_ids, "{profile}: seeds change matches, not ids");
        let priorities = |s: &RuleSet| {
            let mut p: Vec<u32> = s.runtime.policies.iter().map(|p| p.priority).collect();
            p.sort_unstable();
            p
        };
        assert_eq!(
            priorities(&a),
            priorities(&other),
            "{profile}: the same priorities"
        );
    }
}

#[test]
fn ipv4_profiles_have_at_least_100_length_pairs_at_10k() {
    for profile in [Profile::Acl, Profile::Firewall, Profile::IpChain] {
        let set = generate(profile, 10_000, 1);
        let pairs = set.len_pairs();
        assert!(
            pairs.iter().all(|(f, _, _)| *f == Some(Family::Ipv4)),
            "{profile}: IPv4 only"
        );
        assert!(
            pairs.len() >= 100,
            "{profile}: {} distinct (src_len, dst_len) pairs",
            pairs.len()
        );
    }
}

#[test]
fn headers_are_matched_by_the_model() {
    for profile in Profile::ALL {
        let set = generate(profile, 1000, 3);
        let compiled = set.policy_set().unwrap();
        let headers = headers(&set, 2000, 9);
        assert_eq!(headers.len(), 2000);
        let matched = headers
            .iter()
            .filter(|h| model::classify(&compiled, h).policy.is_some())
            .count();
        assert!(
            share(matched, headers.len()) > 90.0,
            "{profile}: {matched} of {} headers matched",
            headers.len()
        );
        for h in &headers {
            assert_eq!(h.src.is_ipv4(), h.dst.is_ipv4(), "{h:?}: one family");
            assert_eq!(
                h.sport.is_some(),
                Protocol(h.proto).has_ports(),
                "{h:?}: ports only with a protocol that has them"
            );
            assert!(h.sport != Some(0) && h.dport != Some(0), "{h:?}");
        }
        let distinct: HashSet<_> = headers.iter().collect();
        assert!(
            distinct.len() < headers.len() * 9 / 10,
            "{profile}: some headers repeat (flows)"
        );
    }
}

#[test]
fn profiles_have_their_distributions() {
    let n = 10_000;
    let acl = generate(Profile::Acl, n, 2);
    let ps = &acl.runtime.policies;
    let count = |f: &dyn Fn(&Policy) -> bool| ps.iter().filter(|p| f(p)).count();
    let with_ports = count(&|p| {
        p.matches
            .proto
            .is_some_and(|x| x == Protocol::TCP || x == Protocol::UDP)
    });
    let sport_any = count(&|p| {
        p.matches
            .proto
            .is_some_and(|x| x == Protocol::TCP || x == Protocol::UDP)
            && p.matches.sport.is_none()
    });
    assert!(
        (75.0..85.0).contains(&share(sport_any, with_ports)),
        "acl sport any"
    );
    let dst32 = count(&|p| p.matches.dst.is_some_and(|d| d.prefix_len() == 32));
    assert!(share(dst32, n) > 35.0, "acl destinations mostly /32");
    let iif = count(&|p| p.matches.iif.is_some());
    assert!((4.0..8.0).contains(&share(iif, n)), "iif share");
    let dscp = count(&|p| p.matches.dscp.is_some());
    assert!((1.0..3.5).contains(&share(dscp, n)), "dscp share");
    let mark = count(&|p| p.matches.mark.is_some());
    assert!((1.0..3.5).contains(&share(mark, n)), "mark share");
    assert_eq!(
        count(&|p| {
            !p.matches
                .proto
                .is_some_and(|x| x == Protocol::TCP || x == Protocol::UDP)
                && (p.matches.sport.is_some() || p.matches.dport.is_some())
        }),
        0,
        "ports only with tcp and udp"
    );
    for kind in ["forward", "drop", "pass", "lookup_table"] {
        let c = count(&|p| {
            let a = serde_json::to_value(&p.action).unwrap();
            a["type"] == kind
        });
        assert!(c > n / 20, "acl has {kind} actions");
    }

    let fw = generate(Profile::Firewall, n, 2);
    let ps = &fw.runtime.policies;
    // Both wildcards are written as destination 0.0.0.0/0 to keep the policy IPv4.
    let any = |p: Option<Prefix>| p.is_none_or(|p| p.prefix_len() == 0);
    let src_any = ps.iter().filter(|p| any(p.matches.src)).count();
    let dst_any = ps.iter().filter(|p| any(p.matches.dst)).count();
    let both = ps
        .iter()
        .filter(|p| any(p.matches.src) && any(p.matches.dst))
        .count();
    assert!((31.0..39.0).contains(&share(src_any, n)), "fw src any");
    assert!((21.0..29.0).contains(&share(dst_any, n)), "fw dst any");
    assert!((2.0..6.0).contains(&share(both, n)), "fw both any");

    let mixed = generate(Profile::Mixed, n, 2);
    let ps = &mixed.runtime.policies;
    let family = |p: &Policy| p.matches.src.or(p.matches.dst).map(|x| x.family());
    let v4 = ps
        .iter()
        .filter(|p| family(p) == Some(Family::Ipv4))
        .count();
    let v6 = ps
        .iter()
        .filter(|p| family(p) == Some(Family::Ipv6))
        .count();
    let free = n - v4 - v6;
    assert!(
        (65.0..75.0).contains(&share(v4, v4 + v6)),
        "mixed ~70% IPv4"
    );
    assert!(
        free > 0 && share(free, n) < 5.0,
        "a few family-free policies"
    );

    for profile in [Profile::Acl6, Profile::Firewall6, Profile::IpChain6] {
        let set = generate(profile, 2000, 2);
        let ula: Prefix = "fd00::/8".parse().unwrap();
        for p in &set.runtime.policies {
            for x in [p.matches.src, p.matches.dst].into_iter().flatten() {
                assert_eq!(x.family(), Family::Ipv6, "{profile}");
                assert!(
                    x.prefix_len() < 8 || ula.contains(x.addr()),
                    "{profile}: {x} under fd00::/8"
                );
            }
            if p.matches.proto == Some(Protocol::ICMP) {
                panic!("{profile}: IPv6 policies use icmpv6");
            }
        }
        let common = set
            .runtime
            .policies
            .iter()
            .flat_map(|p| [p.matches.src, p.matches.dst])
            .flatten()
            .filter(|x| [48, 56, 64, 128].contains(&x.prefix_len()))
            .count();
        let all = set
            .runtime
            .policies
            .iter()
            .flat_map(|p| [p.matches.src, p.matches.dst])
            .flatten()
            .count();
        assert!(
            share(common, all) > 70.0,
            "{profile}: mostly /48 /56 /64 /128"
        );
    }
}

#[test]
fn prefixes_nest_and_overlap() {
    let set = generate(Profile::IpChain, 2000, 4);
    let prefixes: Vec<Prefix> = set
        .runtime
        .policies
        .iter()
        .flat_map(|p| [p.matches.src, p.matches.dst])
        .flatten()
        .filter(|p| p.prefix_len() > 0)
        .collect();
    let distinct: HashSet<Prefix> = prefixes.iter().copied().collect();
    let nested = distinct
        .iter()
        .filter(|p| {
            distinct
                .iter()
                .any(|q| q.prefix_len() < p.prefix_len() && q.contains(p.addr()))
        })
        .count();
    assert!(
        share(nested, distinct.len()) > 50.0,
        "{nested} of {} distinct prefixes lie inside a shorter one of the set",
        distinct.len()
    );
}

#[test]
fn files_are_written_and_load_back() {
    let dir = std::env::temp_dir().join(format!("pktpath-rulesets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = generate(Profile::Mixed, 200, 8);
    let files = set.write(&dir).unwrap();
    let topology = Topology::load(&files.configuration).unwrap();
    let loaded = PolicySet::load(&topology, &files.runtime).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.policies.len(), 200);
    assert_eq!(loaded.topology.next_hops.len(), NEXT_HOPS.len());
    for hop in &loaded.topology.next_hops {
        assert!(hop.gateway4.is_some() && hop.gateway6.is_some());
    }
    let forwards = loaded
        .policies
        .iter()
        .filter(|p| {
            matches!(
                set.runtime
                    .policies
                    .iter()
                    .find(|q| q.id == p.id)
                    .map(|q| &q.action),
                Some(Action::Forward { .. })
            )
        })
        .count();
    assert!(forwards > 0);
}
