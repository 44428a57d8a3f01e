//! `pktpath-bench shapes [PROFILE[:N]...]`: the classifier's trees for the generator's
//! profiles, without the kernel: compile time, trees, nodes, leaves, rule entries, depth,
//! table bytes, and the work per header counted by the kernel's search in user space.
//! Needs no root; for tuning the tree builder between full `classify` runs.

use std::time::Instant;

use anyhow::Context as _;
use pktpath_core::datapath::{
    classifier::{self, Lookup},
    policy::{self, Interfaces, LinkInfo, Slots},
};
use pktpath_tests::rulesets::{self, INTERFACES, Profile};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// Runs the tree report for `args` (`acl`, `fw:100000`, ...; default: every profile and
/// size).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut sets = Vec::new();
    if args.is_empty() {
        for p in Profile::ALL {
            sets.extend(SIZES.iter().map(|&n| (p, n)));
        }
    }
    for a in args {
        let (p, n) = match a.split_once(':') {
            Some((p, n)) => (p, Some(n.parse::<usize>().context("size")?)),
            None => (a.as_str(), None),
        };
        let p: Profile = p.parse()?;
        match n {
            Some(n) => sets.push((p, n)),
            None => sets.extend(SIZES.iter().map(|&n| (p, n))),
        }
    }
    let links = Interfaces {
        links: (0..INTERFACES.len() as u32)
            .map(|i| LinkInfo {
                ifindex: 2 + i,
                mtu: 1500,
                mac: [2, 0, 0, 0, 0, i as u8],
            })
            .collect(),
    };
    println!(
        "{:<9} {:>7} {:>7} {:>9} {:>5} {:>8} {:>8} {:>9} {:>5} {:>4} {:>8} {:>6} {:>5} {:>5} {:>6} {:>5}",
        "profile",
        "policies",
        "reach",
        "compile",
        "trees",
        "inner",
        "leaves",
        "entries",
        "depth",
        "leaf",
        "MiB",
        "walks",
        "sides",
        "nodes",
        "cands",
        "max"
    );
    for (profile, n) in sets {
        let set = rulesets::generate(profile, n, 2026);
        let policies = set.policy_set()?;
        let plan = Slots::default().plan(&policies)?;
        let rules = policy::rules(&policies, &links, &plan.slots)?;
        let t = Instant::now();
        let params = classifier::Params {
            leaf_rules: env_or(
                "PKTPATH_LEAF_RULES",
                classifier::Params::default().leaf_rules,
            ),
            space_factor: env_or(
                "PKTPATH_SPACE_FACTOR",
                classifier::Params::default().space_factor,
            ),
        };
        let tables = match classifier::compile_with(&rules, params) {
            Ok(t) => t,
            Err(e) => {
                println!("{profile:<9} {n:>7} refused: {e}");
                continue;
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let s = tables.stats;
        let lookup = Lookup::new(&tables);
        let headers = rulesets::headers(&set, 1000, 7);
        let work: Vec<_> = headers
            .iter()
            .map(|h| lookup.probe(&policy::packet_fields(h, &links)))
            .collect();
        let mean = |f: fn(&classifier::Probe) -> u32| {
            work.iter().map(|w| f(w) as f64).sum::<f64>() / work.len() as f64
        };
        let max_cost = work
            .iter()
            .map(|w| w.nodes + w.candidates)
            .max()
            .unwrap_or(0);
        println!(
            "{:<9} {:>7} {:>7} {:>9.1} {:>5} {:>8} {:>8} {:>9} {:>5} {:>4} {:>8.2} {:>6.2} {:>5.2} {:>5.2} {:>6.2} {:>5}",
            profile.name(),
            n,
            s.reachable_rules,
            ms,
            s.trees[0] + s.trees[1],
            s.inner,
            s.leaves,
            s.rule_entries,
            s.max_depth,
            s.max_leaf,
            tables.arena_bytes() as f64 / (1 << 20) as f64,
            mean(|w| w.trees),
            mean(|w| w.sides),
            mean(|w| w.nodes),
            mean(|w| w.candidates),
            max_cost,
        );
    }
    Ok(())
}

/// A tree-shape parameter from the environment (for sweeps), or its default.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
