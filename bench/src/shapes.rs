//! `pktpath-bench shapes [PROFILE[:N]...]`: the classifier's trees for the generator's
//! profiles, without the kernel: compile time, trees, nodes, leaves, rule entries, depth,
//! table bytes, and the work per header counted by the kernel's search in user space.
//! Needs no root; for tuning the tree builder between full `classify` runs.

use std::time::Instant;

use anyhow::Context as _;
use pktpath_core::route::datapath::{
    classifier::{self, Lookup},
    policy::{self, Interfaces, LinkInfo, Slots},
};
use pktpath_tests::rulesets::{self, INTERFACES, Profile};

use crate::classify;

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
        "{:<9} {:>7} {:>7} {:>9} {:>5} {:>8} {:>8} {:>9} {:>5} {:>4} {:>8} {:>6} {:>5} {:>5} {:>6} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6}",
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
        "max",
        "waste",
        "wnode",
        "wcand",
        "model",
        "p99"
    );
    for (profile, n) in sets {
        let set = rulesets::generate(profile, n, 2026);
        let policies = set.policy_set()?;
        let plan = Slots::default().plan(&policies)?;
        let rules = policy::rules(&policies, &links, &plan.slots)?;
        let t = Instant::now();
        let compiled = match shape_params() {
            Some(params) => classifier::compile_with(&rules, params),
            None => classifier::compile(&rules),
        };
        let tables = match compiled {
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
        let model: Vec<f64> = work.iter().map(model_ns).collect();
        let (model_mean, model_p99) = (classify::mean(&model), classify::p99(&model));
        println!(
            "{:<9} {:>7} {:>7} {:>9.1} {:>5} {:>8} {:>8} {:>9} {:>5} {:>4} {:>8.2} {:>6.2} {:>5.2} {:>5.2} {:>6.2} {:>5} {:>5.2} {:>5.2} {:>5.2} {:>6.1} {:>6.1}",
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
            mean(|w| w.wasted_walks),
            mean(|w| w.wasted_nodes),
            mean(|w| w.wasted_candidates),
            model_mean,
            model_p99,
        );
    }
    Ok(())
}

/// ns per packet as fitted to the kernel's per-header times (`PKTPATH_BENCH_DUMP`, 6,000
/// headers of six sets from 1k to 100k policies, r^2 = 0.99, the programs with
/// `may_goto`): a fixed part, then per subtree walked, per subtree pruned by its priority
/// bound, per inner node and per rule checked.
fn model_ns(w: &classifier::Probe) -> f64 {
    61.3 + 3.8 * f64::from(w.trees)
        + 1.9 * f64::from(w.pruned)
        + 5.0 * f64::from(w.nodes)
        + 2.6 * f64::from(w.candidates)
}

/// The tree shape the environment asks for: `PKTPATH_SHAPE=default|roomy`, then
/// `PKTPATH_LEAF_RULES`, `PKTPATH_SPACE_FACTOR`, `PKTPATH_CELL_FACTOR`, `PKTPATH_CUT_GAIN`,
/// `PKTPATH_COPY_QUANTILE`, `PKTPATH_CLASS_CUT_RULES` over it; None (what `route apply`
/// compiles) when none is set.
fn shape_params() -> Option<classifier::Params> {
    let vars = [
        "PKTPATH_SHAPE",
        "PKTPATH_LEAF_RULES",
        "PKTPATH_SPACE_FACTOR",
        "PKTPATH_CELL_FACTOR",
        "PKTPATH_CUT_GAIN",
        "PKTPATH_COPY_QUANTILE",
        "PKTPATH_CLASS_CUT_RULES",
        "PKTPATH_CLASS_FOLD_SLOTS",
    ];
    if !vars.iter().any(|v| std::env::var_os(v).is_some()) {
        return None;
    }
    let base = match std::env::var("PKTPATH_SHAPE").as_deref() {
        Ok("roomy") => classifier::Params::roomy(),
        _ => classifier::Params::default(),
    };
    Some(classifier::Params {
        leaf_rules: env_or("PKTPATH_LEAF_RULES", base.leaf_rules),
        space_factor: env_or("PKTPATH_SPACE_FACTOR", base.space_factor),
        cell_factor: env_or("PKTPATH_CELL_FACTOR", base.cell_factor),
        cut_gain: env_or("PKTPATH_CUT_GAIN", base.cut_gain),
        copy_quantile: env_or("PKTPATH_COPY_QUANTILE", base.copy_quantile),
        class_cut_rules: env_or("PKTPATH_CLASS_CUT_RULES", base.class_cut_rules),
        class_fold_slots: env_or("PKTPATH_CLASS_FOLD_SLOTS", base.class_fold_slots),
        ..base
    })
}

/// A tree-shape parameter from the environment (for sweeps), or its default.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
