//! Part 3: policy updates. The wall time of `pktpath route apply` (the whole command: start,
//! parse and validate the JSON, compile, write the maps, swap) for 1k, 10k and 100k
//! policies, of this part's own set and of a realistic one (the rule-set generator's
//! firewall profile); and frames lost while policy sets (1k, and 100k) are applied in a
//! loop under a steady paced load, against the same load without applies.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::Duration,
};

use pktpath_tests::rulesets::{self, INTERFACES, Profile};
use serde::Serialize;

use crate::{
    lab::{Lab, Scratch, check_stop, median},
    report::Goal,
    routecli::{self, Route, Timed},
};

/// Policy counts and applies of each: the first replaces the previous (smaller) set, the
/// others swap between two sets of that size that differ in every policy but one.
const SIZES: [(usize, usize); 3] = [(1_000, 3), (10_000, 3), (100_000, 2)];
/// The realistic profile, and the seeds of its two variants (same ids and priorities,
/// other matches).
const PROFILE: Profile = Profile::Firewall;
const VARIANTS: [u64; 2] = [1, 2];
/// The profile name of this part's own set.
const SYNTHETIC: &str = "synthetic";
/// An apply still running after this is killed and reported as such.
const APPLY_LIMIT: Duration = Duration::from_secs(30);
/// The paced load: frames and rate (well below what the lab forwards).
const LOAD_FRAMES: u64 = 150_000;
const LOAD_PPS: u64 = 50_000;

#[derive(Debug, Serialize)]
pub struct ApplyRow {
    /// `synthetic` (this part's set: distinct source /32s and one policy that matches the
    /// load) or a rule-set profile.
    pub profile: String,
    pub policies: usize,
    /// Wall time of each apply (the first one replaces the previous size's set); null:
    /// killed after `limit_s`.
    pub ms: Vec<Option<f64>>,
    /// Median over all applies, a killed one counting as the limit (NaN: none finished).
    pub median_ms: f64,
    pub limit_s: f64,
    /// What `route apply` said when it refused the set.
    pub refused: Option<String>,
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

/// Apply times of each size's sets, written by `sets` (two files that differ in their
/// matches: the first apply replaces the previous size's set, the others swap between them).
fn apply_times(
    route: &Route,
    profile: &str,
    mut sets: impl FnMut(usize) -> anyhow::Result<[PathBuf; 2]>,
) -> anyhow::Result<Vec<ApplyRow>> {
    let mut rows = Vec::new();
    for (n, runs) in SIZES {
        let files = sets(n)?;
        let mut ms = Vec::new();
        let mut refused = None;
        for i in 0..runs {
            check_stop()?;
            match route.apply_within(&files[i % 2], APPLY_LIMIT)? {
                Timed::Took(t) => ms.push(Some(t.as_secs_f64() * 1e3)),
                Timed::Killed => {
                    ms.push(None);
                    eprintln!(
                        "update: apply of {n} {profile} policies killed after {APPLY_LIMIT:?}"
                    );
                    break; // the set in place is unknown: do not build on it
                }
                Timed::Failed(said) => {
                    eprintln!("update: apply of {n} {profile} policies refused: {said}");
                    refused = Some(said);
                    break;
                }
            }
        }
        eprintln!("update: apply {n} {profile} policies: {ms:.1?} ms");
        let capped: Vec<f64> = ms
            .iter()
            .map(|m| m.unwrap_or(APPLY_LIMIT.as_secs_f64() * 1e3))
            .collect();
        rows.push(ApplyRow {
            profile: profile.to_owned(),
            policies: n,
            median_ms: if capped.is_empty() {
                f64::NAN
            } else {
                median(&capped)
            },
            ms,
            limit_s: APPLY_LIMIT.as_secs_f64(),
            refused,
        });
    }
    Ok(rows)
}

/// Apply times of the realistic profile, on a data path attached to its configuration's
/// interfaces: veth pairs in the router namespace (they go with it).
fn profile_apply_times(lab: &Lab, dir: &Scratch) -> anyhow::Result<Vec<ApplyRow>> {
    let links: Vec<String> = INTERFACES
        .chunks(2)
        .map(|pair| format!("link add {} type veth peer name {}", pair[0], pair[1]))
        .collect();
    crate::lab::ip_batch(&lab.router.name, &links)?;
    let config = dir.write(
        &format!("{}-configuration.json", PROFILE.name()),
        &rulesets::generate(PROFILE, 0, VARIANTS[0]).configuration,
    )?;
    let route = Route::attach(&lab.router.name, &config)?;
    apply_times(&route, PROFILE.name(), |n| {
        let file = |seed: u64| {
            dir.write(
                &format!("{}-{seed}-{n}.json", PROFILE.name()),
                &rulesets::generate(PROFILE, n, seed).runtime_json(),
            )
        };
        Ok([file(VARIANTS[0])?, file(VARIANTS[1])?])
    })
}

pub fn run() -> anyhow::Result<Results> {
    let lab = Lab::new()?;
    let dir = Scratch::new("update")?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    let config = dir.write("configuration.json", &routecli::config(&lab))?;
    let route = Route::attach(&lab.router.name, &config)?;
    let mut apply = apply_times(&route, SYNTHETIC, |n| {
        Ok([
            dir.write(&format!("a-{n}.json"), &routecli::policies(&lab, n - 1, 0))?,
            dir.write(&format!("b-{n}.json"), &routecli::policies(&lab, n - 1, 1))?,
        ])
    })?;
    drop(route);
    apply.extend(profile_apply_times(&lab, &dir)?);

    let sets_1k = [
        dir.write("a-1000.json", &routecli::policies(&lab, 999, 0))?,
        dir.write("b-1000.json", &routecli::policies(&lab, 999, 1))?,
    ];
    // A fresh data path: the 100k sets (or a killed apply) are not the loss test's business.
    let route = Route::attach(&lab.router.name, &config)?;
    route.apply(&sets_1k[0])?;
    // The 100k sets apply_times wrote: a data path swapping sets that big under the load
    // loses no more than with 1k.
    let sets_100k = [dir.path("a-100000.json"), dir.path("b-100000.json")];
    let loss = vec![
        loaded(&lab, &route, &tg, &[], "no applies")?,
        loaded(&lab, &route, &tg, &sets_1k, "applying 1k sets")?,
        loaded(&lab, &route, &tg, &sets_100k, "applying 100k sets")?,
    ];
    let get = |profile: &str, n: usize| {
        apply
            .iter()
            .find(|r| r.profile == profile && r.policies == n)
            .map_or(f64::NAN, |r| r.median_ms)
    };
    let mut goals = Vec::new();
    for profile in [SYNTHETIC, PROFILE.name()] {
        let refused = |n: usize| {
            apply
                .iter()
                .any(|r| r.profile == profile && r.policies == n && r.refused.is_some())
        };
        let what = |n: usize, k: &str| {
            let note = if refused(n) { " (refused)" } else { "" };
            let name = if profile == SYNTHETIC {
                String::new()
            } else {
                format!("{profile} ")
            };
            format!("apply {k} {name}policies, median (ms){note}")
        };
        goals.push(Goal::at_most(
            &what(10_000, "10k"),
            get(profile, 10_000),
            1_000.0,
        ));
        goals.push(Goal::at_most(
            &what(100_000, "100k"),
            get(profile, 100_000),
            5_000.0,
        ));
    }
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
