//! Part 3: policy updates. The wall time of `pktpath route apply` (the whole command: start,
//! parse and validate the JSON, compile, write the maps, swap) for 1k, 10k and 100k
//! policies; and frames lost while policy sets are applied in a loop under a steady paced
//! load, against the same load without applies.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::Duration,
};

use serde::Serialize;

use crate::{
    lab::{Lab, Scratch, check_stop, median},
    report::Goal,
    routecli::{self, Route},
};

/// Policy counts and applies of each: the first replaces the previous (smaller) set, the
/// others swap between two sets of that size that differ in every policy but one.
const SIZES: [(usize, usize); 3] = [(1_000, 3), (10_000, 3), (100_000, 2)];
/// An apply still running after this is killed and reported as such.
const APPLY_LIMIT: Duration = Duration::from_secs(30);
/// The paced load: frames and rate (well below what the lab forwards).
const LOAD_FRAMES: u64 = 150_000;
const LOAD_PPS: u64 = 50_000;

#[derive(Debug, Serialize)]
pub struct ApplyRow {
    pub policies: usize,
    /// Wall time of each apply (the first one replaces the previous size's set); null:
    /// killed after `limit_s`.
    pub ms: Vec<Option<f64>>,
    /// Median over all applies, a killed one counting as the limit.
    pub median_ms: f64,
    pub limit_s: f64,
}

#[derive(Debug, Serialize)]
pub struct LossRow {
    pub case: String,
    pub sent: u64,
    pub delivered: u64,
    pub lost: i64,
    pub applies: u32,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub load_pps: u64,
    pub apply: Vec<ApplyRow>,
    pub loss: Vec<LossRow>,
    pub goals: Vec<Goal>,
}

/// Sends the paced load while another thread applies `sets` in turn (none: no applies).
fn loaded(
    lab: &Lab,
    route: &Route,
    tg: &std::path::Path,
    sets: &[std::path::PathBuf],
    case: &str,
) -> anyhow::Result<LossRow> {
    let done = AtomicBool::new(false);
    let applies = AtomicU32::new(0);
    let delivered = std::thread::scope(|s| {
        let applier = s.spawn(|| -> anyhow::Result<()> {
            let mut i = 0;
            while !sets.is_empty() && !done.load(Ordering::SeqCst) {
                check_stop()?;
                route.apply_on(&sets[i % sets.len()], Some(crate::lab::TOOL_CPU))?;
                applies.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Ok(())
        });
        // Let the first apply start before the load does.
        std::thread::sleep(Duration::from_millis(50));
        let delivered = lab.send_paced(tg, LOAD_FRAMES, LOAD_PPS);
        done.store(true, Ordering::SeqCst);
        let applied = applier.join().expect("apply thread");
        applied.and(delivered)
    })?;
    let row = LossRow {
        case: case.to_owned(),
        sent: LOAD_FRAMES,
        delivered,
        lost: LOAD_FRAMES as i64 - delivered as i64,
        applies: applies.load(Ordering::SeqCst),
    };
    eprintln!(
        "update: {case}: sent {} delivered {} lost {} during {} applies",
        row.sent, row.delivered, row.lost, row.applies
    );
    Ok(row)
}

pub fn run() -> anyhow::Result<Results> {
    let lab = Lab::new()?;
    let dir = Scratch::new("update")?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    let config = dir.write("configuration.json", &routecli::config(&lab))?;
    let route = Route::attach(&lab.router.name, &config)?;
    let mut apply = Vec::new();
    for (n, runs) in SIZES {
        let sets = [
            dir.write(&format!("a-{n}.json"), &routecli::policies(&lab, n - 1, 0))?,
            dir.write(&format!("b-{n}.json"), &routecli::policies(&lab, n - 1, 1))?,
        ];
        let mut ms = Vec::new();
        for i in 0..runs {
            check_stop()?;
            let t = route.apply_within(&sets[i % 2], APPLY_LIMIT)?;
            ms.push(t.map(|t| t.as_secs_f64() * 1e3));
            if t.is_none() {
                eprintln!("update: apply of {n} policies killed after {APPLY_LIMIT:?}");
                break; // the set in place is unknown: do not build on it
            }
        }
        eprintln!("update: apply {n} policies: {ms:.1?} ms");
        let capped: Vec<f64> = ms
            .iter()
            .map(|m| m.unwrap_or(APPLY_LIMIT.as_secs_f64() * 1e3))
            .collect();
        apply.push(ApplyRow {
            policies: n,
            median_ms: median(&capped),
            ms,
            limit_s: APPLY_LIMIT.as_secs_f64(),
        });
    }

    let sets_1k = [
        dir.write("a-1000.json", &routecli::policies(&lab, 999, 0))?,
        dir.write("b-1000.json", &routecli::policies(&lab, 999, 1))?,
    ];
    // A fresh data path: the 100k set (or a killed apply) is not the loss test's business.
    drop(route);
    let route = Route::attach(&lab.router.name, &config)?;
    route.apply(&sets_1k[0])?;
    let loss = vec![
        loaded(&lab, &route, &tg, &[], "no applies")?,
        loaded(&lab, &route, &tg, &sets_1k, "applying 1k sets")?,
    ];
    let get = |n: usize| {
        apply
            .iter()
            .find(|r| r.policies == n)
            .map_or(f64::NAN, |r| r.median_ms)
    };
    let mut goals = vec![
        Goal::at_most("apply 10k policies, median (ms)", get(10_000), 1_000.0),
        Goal::at_most("apply 100k policies, median (ms)", get(100_000), 10_000.0),
    ];
    for row in &loss[1..] {
        goals.push(Goal::at_most(
            &format!("frames lost {}", row.case),
            row.lost as f64,
            0.0,
        ));
    }
    Ok(Results {
        load_pps: LOAD_PPS,
        apply,
        loss,
        goals,
    })
}
