//! Classification cost of pktpath's data path on policy sets shaped like real ones: every
//! profile of the rule-set generator (`pktpath_tests::rulesets`) at 100, 1k, 10k and 100k
//! policies, and the single-shape set the part started with (the best case) from 10 to
//! 100k, beside the floor (a program that only rewrites MACs and redirects) and, for the
//! best case, a linear scan over the same policies.
//!
//! Each set goes through the real pipeline: configuration text, validation
//! (`PolicySet`), data path rules, tree compilation, an apply into the loaded data path.
//! A set the compiler refuses is a row with its message. Headers aimed at the set (with
//! the generator's locality) become frames that arrive on the interface the header names;
//! the part runs in a fresh network namespace holding the configuration's interfaces
//! (veth pairs), so input-interface matches are exercised with real ifindexes.
//!
//! Every policy's action becomes pass, or stays drop: forwarding needs neighbours and
//! routes, and this part measures classification. Each header's frame runs `repeat` times
//! per round through BPF_PROG_TEST_RUN, pktpath and the floor taking turns for [`ROUNDS`]
//! rounds; a header's cost is the median of its rounds, and a row reports the mean and the
//! 99th percentile of those. Before timing, each header runs once as a `route get` test run
//! and the data path's decision is compared with the reference model's.

mod kernel;

use std::time::Instant;

use anyhow::Context as _;
use pktpath_common::route::{ACTION_DROP, ACTION_PASS, FAMILY_V4, FAMILY_V6, RuleMatch};
use pktpath_core::{
    route::datapath::{
        classifier::{self, Lookup, Rule, TreeStats},
        policy::{self, Interfaces, LinkInfo, Slots},
    },
    route::{
        compile::CompiledAction,
        model,
        packet::{Ifindex, PacketFields},
    },
    sys::{iface, netns},
};
use pktpath_tests::rulesets::{self, INTERFACES, Profile};
use serde::Serialize;

use self::kernel::{Frame, Prog, Programs};
use crate::{lab::median, report::Goal};

/// Sizes of the realistic profiles (100 for the ratio goal).
const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];
/// Sizes of the best case.
const ONE_SHAPE_SIZES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// The seed of every set; the headers' seed.
const SEED: u64 = 2026;
const HEADER_SEED: u64 = 7;
/// Headers per set.
const HEADERS: usize = 1_000;
const ROUNDS: usize = 5;
/// Runs of each header's frame per round.
const REPEAT: u32 = 1_000;
/// The TC verdicts of a pass and a drop.
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
/// Mismatches kept per row (all are counted).
const KEEP_MISMATCHES: usize = 10;
/// Goals: ns per packet at 10k and 100k policies, p99 over mean, 10k over 100 policies;
/// and the original part's 10k over 10 policies for the best case.
const GOAL_10K_NS: f64 = 200.0;
const GOAL_100K_NS: f64 = 250.0;
const GOAL_P99_OVER_MEAN: f64 = 2.0;
const GOAL_10K_OVER_100: f64 = 1.5;
const GOAL_10K_OVER_10: f64 = 1.5;

/// Runs of each header per round for the linear scan: about 0.4 M rule checks per header
/// and round at most.
fn linear_repeat(policies: usize) -> u32 {
    (400_000 / policies.max(1)).clamp(1, REPEAT as usize) as u32
}

/// A header the data path decided otherwise than the reference model.
#[derive(Debug, Serialize)]
pub struct Mismatch {
    pub header: String,
    pub model_policy: Option<String>,
    pub model_priority: Option<u32>,
    pub model_verdict: i32,
    pub kernel_priority: Option<u32>,
    pub kernel_verdict: i32,
}

/// What was measured of a set the compiler took.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// The decision trees (IPv4 and IPv6 together) and their shape.
    pub trees: usize,
    pub tree_stats: TreeStats,
    /// Per packet (counted in user space by the kernel's search): trees walked, inner nodes
    /// passed and leaf rules checked, mean and max.
    pub trees_mean: f64,
    pub nodes_mean: f64,
    pub nodes_max: u32,
    pub candidates_mean: f64,
    pub candidates_max: u32,
    /// ns per packet over the headers: mean and 99th percentile of the per-header costs.
    pub ns_mean: f64,
    pub ns_p99: f64,
    pub floor_ns_mean: f64,
    pub floor_ns_p99: f64,
    /// The linear scan's mean (best case only) and its runs per header and round.
    pub linear_ns_mean: Option<f64>,
    pub linear_repeat: Option<u32>,
    pub apply_ms: f64,
    /// The kernel's `memlock` of the data path object's maps, and of the arena chunks
    /// that hold this set's trees.
    pub map_bytes: u64,
    pub table_bytes: u64,
    pub headers: usize,
    /// Headers some policy matches (by the model).
    pub model_matched: usize,
    /// Headers the data path decided as the model did (policy and verdict).
    pub agree: usize,
    pub mismatches: Vec<Mismatch>,
    pub repeat: u32,
}

/// One set.
#[derive(Debug, Serialize)]
pub struct Row {
    pub profile: &'static str,
    pub policies: usize,
    /// Data path rules as the classifier places them (a rule without a family counts once
    /// per family).
    pub rules: usize,
    /// Distinct (family, source length, destination length) of the policies.
    pub len_pairs: usize,
    pub generate_ms: f64,
    pub validate_ms: f64,
    pub compile_ms: f64,
    /// The compiler's message when it refused the set.
    pub refused: Option<String>,
    #[serde(flatten)]
    pub measured: Option<Measured>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub command: &'static str,
    pub seed: u64,
    pub headers: usize,
    pub rounds: usize,
    pub rows: Vec<Row>,
    /// Headers the data path decided otherwise than the model, over all sets.
    pub mismatches: usize,
    /// Wall time of the part.
    pub seconds: f64,
    pub goals: Vec<Goal>,
}

/// Runs the part in a fresh network namespace (which goes away with it).
pub fn run() -> anyhow::Result<Results> {
    netns::run_in_fresh(run_here).context("a fresh network namespace for the part")?
}

/// The configuration's interfaces as veth pairs in this thread's namespace.
fn interfaces() -> anyhow::Result<Interfaces> {
    for pair in INTERFACES.chunks(2) {
        pktpath_tests::run::cmd(
            "ip",
            &[
                "link", "add", pair[0], "type", "veth", "peer", "name", pair[1],
            ],
        )
        .map_err(anyhow::Error::msg)?;
    }
    let links = INTERFACES
        .iter()
        .map(|name| {
            let i = iface::lookup(name)?;
            Ok(LinkInfo {
                ifindex: i.ifindex,
                mtu: i.mtu,
                mac: i.mac,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Interfaces { links })
}

fn run_here() -> anyhow::Result<Results> {
    let start = Instant::now();
    let links = interfaces()?;
    let mut programs = Programs::load()?;
    println!(
        "{HEADERS} headers per set (seed {HEADER_SEED}), each run {REPEAT} times in each of \
         {ROUNDS} rounds; ns = mean / p99 over the headers of each header's median round"
    );
    println!("{}", crate::report::classify_header());
    let mut rows = Vec::new();
    let sets = ONE_SHAPE_SIZES
        .iter()
        .map(|&n| (Profile::OneShape, n))
        .chain(
            Profile::ALL
                .into_iter()
                .filter(|&p| p != Profile::OneShape)
                .flat_map(|p| SIZES.iter().map(move |&n| (p, n))),
        );
    // PKTPATH_BENCH_SETS=acl:10000,fw:100 measures those sets only.
    let only: Option<Vec<(String, usize)>> = std::env::var("PKTPATH_BENCH_SETS").ok().map(|v| {
        v.split(',')
            .filter_map(|s| s.split_once(':'))
            .filter_map(|(p, n)| Some((p.to_owned(), n.parse().ok()?)))
            .collect()
    });
    for (profile, n) in sets {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|(p, m)| p == profile.name() && *m == n))
        {
            continue;
        }
        crate::lab::check_stop()?;
        let row = measure(&mut programs, &links, profile, n)
            .with_context(|| format!("{profile} at {n} policies"))?;
        println!(
            "{}",
            crate::report::classify_line(&serde_json::to_value(&row)?)
        );
        rows.push(row);
    }
    let mismatches: usize = rows
        .iter()
        .filter_map(|r| r.measured.as_ref())
        .map(|m| m.headers - m.agree)
        .sum();
    let goals = goals(&rows);
    for g in &goals {
        println!(
            "goal {} {} {}: {} ({:.2})",
            g.what,
            g.cmp,
            g.target,
            if g.met { "met" } else { "MISSED" },
            g.measured
        );
    }
    if mismatches > 0 {
        eprintln!(
            "classify: THE DATA PATH DECIDED {mismatches} HEADERS OTHERWISE THAN THE REFERENCE MODEL (rows' mismatches)"
        );
    }
    Ok(Results {
        command: "bash bench/run.sh classify",
        seed: SEED,
        headers: HEADERS,
        rounds: ROUNDS,
        rows,
        mismatches,
        seconds: start.elapsed().as_secs_f64(),
        goals,
    })
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The 99th percentile (nearest rank) of non-empty `v`, exactly: one sort of the per-header
/// costs (a thousand fractional ns values) per set. `pktpath_core::trace::latency`'s
/// histogram is for integer ns latencies of any count in fixed memory, which this is not.
pub(crate) fn p99(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(s.len() * 99).div_ceil(100).max(1) - 1]
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The rules of a set as this part applies them: drop stays, every other action passes;
/// no rewrites, so repeated runs of one frame see the same packet.
fn classification_only(mut rules: Vec<Rule>) -> Vec<Rule> {
    for r in &mut rules {
        r.value.flags = 0;
        if r.value.action != ACTION_DROP {
            r.value.action = ACTION_PASS;
        }
    }
    rules
}

/// The rules as the linear scan checks them: the IPv4 rules best priority first, then the
/// IPv6 ones (a rule without a family in both), and how many of each.
fn linear_rules(rules: &[Rule]) -> (Vec<RuleMatch>, [u32; 2]) {
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|&i| rules[i].priority);
    let mut out = Vec::with_capacity(rules.len());
    let mut counts = [0u32; 2];
    for (f, family) in [FAMILY_V4, FAMILY_V6].into_iter().enumerate() {
        for &i in &order {
            if rules[i].family.is_none_or(|x| x == family) {
                out.push(classifier::rule_match(&rules[i], i as u32));
                counts[f] += 1;
            }
        }
    }
    (out, counts)
}

fn measure(
    programs: &mut Programs,
    links: &Interfaces,
    profile: Profile,
    n: usize,
) -> anyhow::Result<Row> {
    let t = Instant::now();
    let set = rulesets::generate(profile, n, SEED);
    let generate_ms = ms_since(t);
    let t = Instant::now();
    let policies = set
        .policy_set()
        .context("the generated set does not validate")?;
    let validate_ms = ms_since(t);
    let plan = Slots::default().plan(&policies)?;
    let rules = classification_only(policy::rules(&policies, links, &plan.slots)?);
    let mut row = Row {
        profile: profile.name(),
        policies: n,
        rules: rules
            .iter()
            .map(|r| 1 + usize::from(r.family.is_none()))
            .sum(),
        len_pairs: set.len_pairs().len(),
        generate_ms,
        validate_ms,
        compile_ms: 0.0,
        refused: None,
        measured: None,
    };
    let t = Instant::now();
    let compiled = classifier::compile(&rules);
    row.compile_ms = ms_since(t);
    let tables = match compiled {
        Ok(tables) => tables,
        Err(e) => {
            row.refused = Some(e.to_string());
            return Ok(row);
        }
    };
    let apply_ms = programs.apply(&tables)?;
    let (map_bytes, table_bytes) = programs.map_bytes()?;
    let best_case = profile == Profile::OneShape;
    if best_case {
        programs.set_linear(&linear_rules(&rules))?;
    }

    let headers = rulesets::headers(&set, HEADERS, HEADER_SEED);
    let fields: Vec<_> = headers
        .iter()
        .map(|h| policy::packet_fields(h, links))
        .collect();
    let frames: Vec<Frame> = fields.iter().map(Frame::new).collect();

    let lookup = Lookup::new(&tables);
    let work: Vec<_> = fields.iter().map(|p| lookup.probe(p)).collect();
    let mean_of = |f: fn(&classifier::Probe) -> u32| {
        work.iter().map(|w| f(w) as f64).sum::<f64>() / work.len() as f64
    };

    let mut agree = 0;
    let mut model_matched = 0;
    let mut mismatches = Vec::new();
    for (h, frame) in headers.iter().zip(&frames) {
        let want = model::classify(&policies, h);
        let want_verdict = match want.action {
            CompiledAction::Drop => TC_ACT_SHOT,
            _ => TC_ACT_OK,
        };
        model_matched += usize::from(want.policy.is_some());
        let got = programs.decide(frame)?;
        let want_priority = want.policy.map(|p| p.priority);
        if got.priority == want_priority && got.verdict == want_verdict {
            agree += 1;
            continue;
        }
        let m = Mismatch {
            header: format!("{h:?}"),
            model_policy: want.policy_id().map(str::to_owned),
            model_priority: want_priority,
            model_verdict: want_verdict,
            kernel_priority: got.priority,
            kernel_verdict: got.verdict,
        };
        eprintln!("classify: MISMATCH {profile} at {n} policies: {m:?}");
        if mismatches.len() < KEEP_MISMATCHES {
            mismatches.push(m);
        }
    }

    let lin_repeat = linear_repeat(n);
    let (mut dp, mut fl, mut li) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        crate::lab::check_stop()?;
        dp.push(programs.time(Prog::Datapath, &frames, REPEAT)?);
        fl.push(programs.time(Prog::Floor, &frames, REPEAT)?);
        if best_case {
            li.push(programs.time(Prog::Linear, &frames, lin_repeat)?);
        }
    }
    // Each header's median round.
    let per_header = |rounds: &[Vec<f64>]| -> Vec<f64> {
        (0..frames.len())
            .map(|i| median(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>()))
            .collect()
    };
    let (dp, fl) = (per_header(&dp), per_header(&fl));
    if let Ok(dir) = std::env::var("PKTPATH_BENCH_DUMP") {
        dump_headers(&dir, profile, n, &tables, &fields, &work, &dp)?;
    }
    row.measured = Some(Measured {
        trees: tables.stats.trees[0] + tables.stats.trees[1],
        tree_stats: tables.stats,
        trees_mean: mean_of(|w| w.trees),
        nodes_mean: mean_of(|w| w.nodes),
        nodes_max: work.iter().map(|w| w.nodes).max().unwrap_or(0),
        candidates_mean: mean_of(|w| w.candidates),
        candidates_max: work.iter().map(|w| w.candidates).max().unwrap_or(0),
        ns_mean: mean(&dp),
        ns_p99: p99(&dp),
        floor_ns_mean: mean(&fl),
        floor_ns_p99: p99(&fl),
        linear_ns_mean: best_case.then(|| mean(&per_header(&li))),
        linear_repeat: best_case.then_some(lin_repeat),
        apply_ms,
        map_bytes,
        table_bytes,
        headers: headers.len(),
        model_matched,
        agree,
        mismatches,
        repeat: REPEAT,
    });
    Ok(row)
}

/// Writes one line per header (ns, then the work the user-space search counts) to
/// `DIR/PROFILE-N.tsv`, for fitting what a walk, a node and a rule check cost
/// (`PKTPATH_BENCH_DUMP=DIR`).
fn dump_headers(
    dir: &str,
    profile: Profile,
    n: usize,
    tables: &classifier::Tables,
    fields: &[PacketFields<Ifindex>],
    work: &[classifier::Probe],
    ns: &[f64],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::from(
        "ns\troots\twalks\tsides\trests\tnodes\tcands\tmatched\tchunks\tsteps\tpruned\n",
    );
    for ((p, w), ns) in fields.iter().zip(work).zip(ns) {
        let f = usize::from(p.family() != FAMILY_V4);
        let _ = writeln!(
            out,
            "{ns:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            tables.roots.counts[f],
            w.trees,
            w.sides,
            w.rests,
            w.nodes,
            w.candidates,
            u8::from(w.value.is_some()),
            w.chunk_switches,
            w.steps,
            w.pruned
        );
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(format!("{dir}/{}-{n}.tsv", profile.name()), out)?;
    Ok(())
}

/// The part's goals, judged on this run's rows; a refused set misses its goals.
fn goals(rows: &[Row]) -> Vec<Goal> {
    let find = |p: Profile, n: usize| {
        rows.iter()
            .find(|r| r.profile == p.name() && r.policies == n)
    };
    let ns = |p: Profile, n: usize| {
        find(p, n)
            .and_then(|r| r.measured.as_ref())
            .map_or(f64::NAN, |m| m.ns_mean)
    };
    let note = |p: Profile, sizes: &[usize]| {
        if sizes
            .iter()
            .any(|&n| find(p, n).is_some_and(|r| r.refused.is_some()))
        {
            " (refused)"
        } else {
            ""
        }
    };
    let mut goals = vec![Goal::at_most(
        &format!(
            "one-shape 10k / 10 policies{}",
            note(Profile::OneShape, &[10, 10_000])
        ),
        ns(Profile::OneShape, 10_000) / ns(Profile::OneShape, 10),
        GOAL_10K_OVER_10,
    )];
    for p in Profile::ALL {
        let p99_over_mean = |n: usize| {
            find(p, n)
                .and_then(|r| r.measured.as_ref())
                .map_or(f64::NAN, |m| m.ns_p99 / m.ns_mean)
        };
        for (n, target, k) in [
            (10_000, GOAL_10K_NS, "10k"),
            (100_000, GOAL_100K_NS, "100k"),
        ] {
            goals.push(Goal::at_most(
                &format!("{p} ns/packet at {k} policies{}", note(p, &[n])),
                ns(p, n),
                target,
            ));
            goals.push(Goal::at_most(
                &format!("{p} p99 / mean at {k} policies{}", note(p, &[n])),
                p99_over_mean(n),
                GOAL_P99_OVER_MEAN,
            ));
        }
        goals.push(Goal::at_most(
            &format!("{p} 10k / 100 policies{}", note(p, &[100, 10_000])),
            ns(p, 10_000) / ns(p, 100),
            GOAL_10K_OVER_100,
        ));
    }
    let (headers, agree) = rows
        .iter()
        .filter_map(|r| r.measured.as_ref())
        .fold((0, 0), |(h, a), m| (h + m.headers, a + m.agree));
    goals.push(Goal::at_least(
        "share of headers the data path decided as the model",
        agree as f64 / headers.max(1) as f64,
        1.0,
    ));
    goals
}
