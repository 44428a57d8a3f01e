//! `pktpath-bench trace-soak [SECS]`: `pktpath trace --summary` under a steady load for a
//! long run, its resident memory sampled as it goes. The tracer keeps per-packet state
//! (journeys in flight, latency per hop pair, remembered names); after warm-up that state
//! must stop growing, or a long trace on a busy host runs out of memory.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    lab::{check_stop, sleep},
    tools::Tool,
    tracer::forwarding_lab,
};

/// Frames per second the sender paces: each is some six events at the default hooks, a
/// rate the tracer keeps up with on this machine kind (see the lossless ladder).
const PPS: u64 = 100_000;
/// How often the memory is sampled.
const EVERY: Duration = Duration::from_secs(10);
/// Samples before this are warm-up (buffers and caches reaching their size).
const WARM_UP: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize)]
pub struct Soak {
    pub pps: u64,
    pub seconds: u64,
    /// (seconds since the load started, resident MiB).
    pub rss_mib: Vec<(u64, f64)>,
    /// Resident memory at the end minus at the end of warm-up.
    pub growth_after_warm_up_mib: f64,
    pub events: u64,
    pub lost: u64,
}

pub fn run(seconds: u64) -> anyhow::Result<Soak> {
    let (lab, dir, tg, _routing) = forwarding_lab("trace-soak")?;
    // The events go nowhere: the run measures the tracer, not a disk.
    let mut t = Tool::pktpath(&["udp", "--summary"], std::path::Path::new("/dev/null"))?;
    t.wait_ready(Duration::from_secs(60))?;
    let mut sender = lab.trafgen(&tg, PPS * seconds, Some(PPS))?;
    let start = Instant::now();
    let mut rss_mib = vec![(0, t.rss_mib()?)];
    while start.elapsed() < Duration::from_secs(seconds) {
        check_stop()?;
        sleep(EVERY)?;
        let at = start.elapsed().as_secs();
        let rss = t.rss_mib()?;
        eprintln!("trace-soak: {at:>5} s {rss:>8.1} MiB");
        rss_mib.push((at, rss));
    }
    let _ = sender.wait_for(Duration::from_secs(30))?;
    let (events, lost) = t.finish()?;
    drop(dir);
    // The first sample at or after warm-up (the last one, in a run shorter than that).
    let warm = rss_mib
        .iter()
        .find(|(s, _)| *s >= WARM_UP.as_secs())
        .or(rss_mib.last())
        .map_or(0.0, |x| x.1);
    let last = rss_mib.last().map_or(warm, |x| x.1);
    Ok(Soak {
        pps: PPS,
        seconds,
        growth_after_warm_up_mib: last - warm,
        rss_mib,
        events,
        lost,
    })
}
