//! Classification cost against the number of policies.

use std::time::Instant;

use anyhow::Context as _;
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use pktpath_common::route::{ACTION_PASS, FAMILY_V4, PROG_DATAPATH, RuleValue};
use pktpath_core::{
    datapath::{
        frame::{self, FrameOptions},
        synth::Rng,
        tables::DatapathMaps,
        tuples::{PacketFields, Rule, compile},
    },
    loader::{self, Object},
};
use serde::Serialize;

/// 0 is the floor: the same program with an empty policy set (parse, count, pass).
const SIZES: [usize; 6] = [0, 10, 100, 1_000, 10_000, 100_000];
const FLOWS: usize = 64;
const REPEAT_PER_FLOW: u32 = 20_000; // 64 x 20k = 1.28M runs per size

/// One policy count's figures.
#[derive(Debug, Serialize)]
pub struct Row {
    pub policies: usize,
    pub tuples: usize,
    pub entries: usize,
    pub compile_ms: f64,
    pub apply_ms: f64,
    pub ns_per_packet: f64,
    pub runs: u64,
    pub matched_flows: usize,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: String,
    pub classification: Vec<Row>,
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

pub fn run() -> anyhow::Result<Results> {
    let mut ebpf = loader::load(Object::Datapath, &[]).context("load data path")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DATAPATH)
        .context("program")?
        .try_into()?;
    prog.load().context("verifier")?;
    let mut maps = DatapathMaps::from_ebpf(&mut ebpf)?;
    let prog: &SchedClassifier = ebpf.program(PROG_DATAPATH).context("program")?.try_into()?;
    let mut rng = Rng::new(2026);
    let mut rows = Vec::new();
    println!(
        "{:>9} {:>7} {:>9} {:>11} {:>10} {:>10} {:>8}",
        "policies", "tuples", "entries", "compile ms", "apply ms", "ns/packet", "matched"
    );
    for &n in &SIZES {
        let rules: Vec<Rule> = (0..n as u32).map(|i| mixed_rule(&mut rng, i + 1)).collect();
        let t0 = Instant::now();
        let tables = compile(&rules)?;
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        maps.apply(&tables)?;
        let apply_ms = t0.elapsed().as_secs_f64() * 1e3;
        let lookup = pktpath_core::datapath::tuples::Lookup::new(&tables);
        let packets = if rules.is_empty() {
            let floor_rules: Vec<Rule> = (0..FLOWS as u32)
                .map(|i| mixed_rule(&mut rng, i + 1))
                .collect();
            flows(&floor_rules, &mut rng)
        } else {
            flows(&rules, &mut rng)
        };
        let matched_flows = packets.iter().filter(|p| lookup.find(p).is_some()).count();
        let frames: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| frame::build(p, &FrameOptions::default()))
            .collect();
        let mut total_ns = 0f64;
        for f in &frames {
            let r = prog.test_run(TestRunOptions {
                data_in: Some(f),
                repeat: REPEAT_PER_FLOW,
                ..Default::default()
            })?;
            total_ns += r.duration.as_nanos() as f64;
        }
        let ns = total_ns / frames.len() as f64;
        println!(
            "{n:>9} {:>7} {:>9} {compile_ms:>11.1} {apply_ms:>10.1} {ns:>10.1} {matched_flows:>5}/{FLOWS}",
            tables.tuples.len(),
            tables.entries.len()
        );
        rows.push(Row {
            policies: n,
            tuples: tables.tuples.len(),
            entries: tables.entries.len(),
            compile_ms,
            apply_ms,
            ns_per_packet: ns,
            runs: REPEAT_PER_FLOW as u64 * FLOWS as u64,
            matched_flows,
        });
    }
    let machine = format!(
        "{} cores, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    Ok(Results {
        machine,
        classification: rows,
    })
}
