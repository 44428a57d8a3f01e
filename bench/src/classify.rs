//! Classification cost against the number of policies: pktpath's data path, the floor
//! (a program that only rewrites MACs and redirects) and a linear scan over the same
//! policies, measured in the same run.
//!
//! For each policy count the three programs take turns (pktpath, floor, linear, pktpath,
//! ...) for [`ROUNDS`] rounds; a round runs every flow's frame `repeat` times through
//! BPF_PROG_TEST_RUN. The figure reported per program is the median of its rounds' means,
//! so a burst of load from elsewhere on the machine shifts one round, not the result.
//! The linear scan costs microseconds per packet at 1k policies and more: it gets fewer
//! repeats ([`linear_repeat`]), reported in `runs`.

use std::time::Instant;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::Array,
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use pktpath_common::{
    baseline::{
        GLOBAL_FLOOR_IFINDEX, MAP_LINEAR_COUNT, MAP_LINEAR_RULES, MAX_LINEAR_RULES, PROG_FLOOR,
        PROG_LINEAR,
    },
    route::{ACTION_PASS, FAMILY_V4, PROG_DATAPATH, RuleMatch, RuleValue},
};
use pktpath_core::{
    datapath::{
        frame::{self, FrameOptions},
        synth::Rng,
        tables::DatapathMaps,
        tuples::{self, Lookup, PacketFields, Rule, compile},
    },
    loader::{self, GlobalValue, Object},
};
use serde::Serialize;

use crate::{lab::median, report::Goal};

const SIZES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
const FLOWS: usize = 64;
const ROUNDS: usize = 4;
/// Runs of each flow per round for pktpath and the floor: 64 x 4,000 x 4 = 1.02 M runs.
const REPEAT: u32 = 4_000;
/// The data path's goals at 10k policies (issue 3).
const GOAL_10K_NS: f64 = 200.0;
const GOAL_10K_OVER_10: f64 = 1.5;

/// Runs of each flow per round for the linear scan: about 0.4 M rule checks per flow and
/// round, so that 100k policies take a quarter of a second rather than minutes.
fn linear_repeat(policies: usize) -> u32 {
    (400_000 / policies.max(1)).clamp(1, REPEAT as usize) as u32
}

/// One program's figures for one policy count.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// Median over the rounds of the mean ns per packet.
    pub ns_per_packet: f64,
    /// Each round's mean, in the order run.
    pub rounds_ns: Vec<f64>,
    /// Test runs in total (flows x repeat x rounds).
    pub runs: u64,
}

/// One policy count's figures.
#[derive(Debug, Serialize)]
pub struct Row {
    pub policies: usize,
    pub tuples: usize,
    pub entries: usize,
    pub compile_ms: f64,
    pub apply_ms: f64,
    /// Flows a policy matches (by the reference model); all flows are aimed at one.
    pub matched_flows: usize,
    pub pktpath: Timing,
    pub floor: Timing,
    pub linear: Timing,
    pub pktpath_over_floor: f64,
    pub linear_over_pktpath: f64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub command: &'static str,
    pub flows: usize,
    pub rounds: usize,
    pub rows: Vec<Row>,
    /// Issue 3's goals at 10k policies, judged on this run.
    pub goals: Vec<Goal>,
}

/// A realistic mixed policy: destination prefix (/16, /24 or /32), sometimes a source /24,
/// protocol TCP/UDP/any, destination port exact, a range, or any.
fn mixed_rule(rng: &mut Rng, priority: u32) -> Rule {
    let a = |rng: &mut Rng| {
        [
            10 + rng.below(100) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ]
    };
    let to16 = |b: [u8; 4]| {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&b);
        x
    };
    let dst_len = [16, 24, 32][rng.below(3) as usize];
    let proto = [Some(6), Some(17), None][rng.below(3) as usize];
    let dport = match (proto, rng.below(3)) {
        (None, _) => None,
        (_, 0) => {
            let p = 1 + rng.below(65535) as u16;
            Some((p, p))
        }
        (_, 1) => {
            let lo = 1024 * (1 + rng.below(60) as u16);
            Some((lo, lo + 1023))
        }
        _ => None,
    };
    Rule {
        priority,
        family: Some(FAMILY_V4),
        src: rng.chance(30).then(|| (to16(a(rng)), 24)),
        dst: Some((to16(a(rng)), dst_len)),
        proto,
        dport,
        value: RuleValue {
            action: ACTION_PASS,
            slot: priority % 1000,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Packets aimed at the policies: flow i targets policy i * n / FLOWS (distinct flows).
fn flows(rules: &[Rule], rng: &mut Rng) -> Vec<PacketFields> {
    (0..FLOWS)
        .map(|i| {
            let r = &rules[i * rules.len() / FLOWS];
            let mut p = PacketFields {
                family: FAMILY_V4,
                iif: 1,
                proto: r.proto.unwrap_or(6),
                sport: 1024 + rng.below(60000) as u16,
                dport: r.dport.map_or(443, |(lo, _)| lo),
                ..Default::default()
            };
            p.src = r.src.map_or([0; 16], |(a, _)| a);
            p.dst = r.dst.map_or([0; 16], |(a, _)| a);
            p.src[3] = rng.below(256) as u8;
            p
        })
        .collect()
}

/// Loads an object and its classifier program.
fn load(object: Object, prog: &str, globals: &[(&str, GlobalValue)]) -> anyhow::Result<Ebpf> {
    let mut ebpf = loader::load(object, globals).with_context(|| format!("load {object:?}"))?;
    let p: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    p.load().with_context(|| format!("verifier on {prog}"))?;
    Ok(ebpf)
}

/// Mean ns per packet of one pass over the frames.
fn pass(ebpf: &Ebpf, prog: &str, frames: &[Vec<u8>], repeat: u32) -> anyhow::Result<f64> {
    let p: &SchedClassifier = ebpf.program(prog).context("program")?.try_into()?;
    let mut total = 0f64;
    for f in frames {
        let r = p.test_run(TestRunOptions {
            data_in: Some(f),
            repeat,
            ..Default::default()
        })?;
        total += r.duration.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

fn timing(rounds_ns: Vec<f64>, repeat: u32) -> Timing {
    Timing {
        ns_per_packet: median(&rounds_ns),
        runs: repeat as u64 * FLOWS as u64 * rounds_ns.len() as u64,
        rounds_ns,
    }
}

/// Writes the linear scan's rules.
fn set_linear(ebpf: &mut Ebpf, rules: &[RuleMatch]) -> anyhow::Result<()> {
    anyhow::ensure!(
        rules.len() <= MAX_LINEAR_RULES as usize,
        "{} rules exceed the linear scan's {MAX_LINEAR_RULES}",
        rules.len()
    );
    let mut table: Array<_, RuleMatch> =
        Array::try_from(ebpf.map_mut(MAP_LINEAR_RULES).context(MAP_LINEAR_RULES)?)?;
    for (i, r) in rules.iter().enumerate() {
        table.set(i as u32, r, 0)?;
    }
    let mut count: Array<_, u32> =
        Array::try_from(ebpf.map_mut(MAP_LINEAR_COUNT).context(MAP_LINEAR_COUNT)?)?;
    count.set(0, rules.len() as u32, 0)?;
    Ok(())
}

pub fn run() -> anyhow::Result<Results> {
    let mut pktpath = load(Object::Datapath, PROG_DATAPATH, &[])?;
    let mut maps = DatapathMaps::from_ebpf(&mut pktpath)?;
    let floor = load(
        Object::Floor,
        PROG_FLOOR,
        &[(GLOBAL_FLOOR_IFINDEX, GlobalValue::U32(1))],
    )?;
    let mut linear = load(Object::Linear, PROG_LINEAR, &[])?;
    let mut rng = Rng::new(2026);
    let mut rows = Vec::new();
    println!(
        "ns per packet, median of {ROUNDS} alternating rounds; {FLOWS} distinct flows; \
         pktpath and floor {} runs each per row, linear scan fewer (column runs)",
        REPEAT as usize * FLOWS * ROUNDS
    );
    println!(
        "{:>8} {:>6} {:>8} {:>10} {:>9} {:>8} {:>7} {:>7} {:>10} {:>9} {:>8} {:>9}",
        "policies",
        "tuples",
        "entries",
        "compile ms",
        "apply ms",
        "matched",
        "pktpath",
        "floor",
        "linear",
        "lin runs",
        "pkt/flr",
        "lin/pkt"
    );
    for &n in &SIZES {
        let rules: Vec<Rule> = (0..n as u32).map(|i| mixed_rule(&mut rng, i + 1)).collect();
        let t0 = Instant::now();
        let tables = compile(&rules)?;
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        maps.apply(&tables)?;
        let apply_ms = t0.elapsed().as_secs_f64() * 1e3;
        set_linear(&mut linear, &tuples::scan_table(&rules)?)?;
        let packets = flows(&rules, &mut rng);
        let lookup = Lookup::new(&tables);
        let matched_flows = packets.iter().filter(|p| lookup.find(p).is_some()).count();
        let frames: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| frame::build(p, &FrameOptions::default()))
            .collect();
        let lin_repeat = linear_repeat(n);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(pass(&pktpath, PROG_DATAPATH, &frames, REPEAT)?);
            b.push(pass(&floor, PROG_FLOOR, &frames, REPEAT)?);
            c.push(pass(&linear, PROG_LINEAR, &frames, lin_repeat)?);
        }
        let (pk, fl, li) = (timing(a, REPEAT), timing(b, REPEAT), timing(c, lin_repeat));
        let row = Row {
            policies: n,
            tuples: tables.tuples.len(),
            entries: tables.entries.len(),
            compile_ms,
            apply_ms,
            matched_flows,
            pktpath_over_floor: pk.ns_per_packet / fl.ns_per_packet,
            linear_over_pktpath: li.ns_per_packet / pk.ns_per_packet,
            pktpath: pk,
            floor: fl,
            linear: li,
        };
        println!(
            "{n:>8} {:>6} {:>8} {compile_ms:>10.1} {apply_ms:>9.1} {matched_flows:>5}/{FLOWS} {:>7.0} {:>7.0} {:>10.0} {:>9} {:>8.2} {:>9.1}",
            row.tuples,
            row.entries,
            row.pktpath.ns_per_packet,
            row.floor.ns_per_packet,
            row.linear.ns_per_packet,
            row.linear.runs,
            row.pktpath_over_floor,
            row.linear_over_pktpath,
        );
        rows.push(row);
    }
    let ns = |n: usize| {
        rows.iter()
            .find(|r| r.policies == n)
            .map(|r| r.pktpath.ns_per_packet)
    };
    let mut goals = Vec::new();
    if let (Some(at10k), Some(at10)) = (ns(10_000), ns(10)) {
        goals.push(Goal::at_most(
            "pktpath ns/packet at 10k policies",
            at10k,
            GOAL_10K_NS,
        ));
        goals.push(Goal::at_most(
            "pktpath 10k / 10 policies",
            at10k / at10,
            GOAL_10K_OVER_10,
        ));
    }
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
    Ok(Results {
        command: "bash bench/run.sh classify",
        flows: FLOWS,
        rounds: ROUNDS,
        rows,
        goals,
    })
}
