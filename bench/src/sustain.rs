//! `pktpath-bench trace-sustain [SECS]`: the ladder's 1.5M events/s step held for SECS
//! instead of one second. A one-second step fits in the ring buffer and the page cache
//! even when the tracer or the disk falls behind; a long run shows what each keeps up
//! with. Three runs: the JSON events written to /dev/null (the tracer alone: every event
//! read, followed on its journey and formatted), the same written to a file in the
//! scratch directory (the tracer and the file system), and the file system's own floor:
//! as many bytes as the file run wrote, in 1 MiB writes, timed.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    lab::{Lab, Scratch, check_stop},
    tools::Tool,
    tracer::{Step, forwarding_lab},
};

/// The ladder's step at the tracer's goal: about 12 events per frame, 1.5M events/s.
const PPS: u64 = 125_000;
/// The file run is at most this long: at some 780 MB/s of JSON, longer fills disks.
const FILE_SECONDS: u64 = 10;

#[derive(Debug, Serialize)]
pub struct Sustain {
    pub pps: u64,
    pub runs: Vec<Run>,
    /// The file system alone, taking the file run's bytes.
    pub disk_floor: Option<DiskFloor>,
}

#[derive(Debug, Serialize)]
pub struct Run {
    /// `/dev/null` or `file`.
    pub output: &'static str,
    /// As a step of the ladder measures it: the sender's time, events written and lost,
    /// the rate offered, the tool's CPU per event.
    #[serde(flatten)]
    pub step: Step,
    /// JSON bytes written (the file run).
    pub bytes: Option<u64>,
    /// The write rate the offered events need, at the bytes per event written (the file
    /// run).
    pub needed_mb_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct DiskFloor {
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

pub fn run(seconds: u64) -> anyhow::Result<Sustain> {
    let (lab, dir, tg, _routing) = forwarding_lab("trace-sustain")?;
    let null = one(&lab, &tg, Path::new("/dev/null"), seconds)?;
    let file = dir.path("sustain.jsonl");
    // The file run and the floor each start with nothing dirty to write back.
    sync();
    let mut on_disk = one(&lab, &tg, &file, seconds.min(FILE_SECONDS))?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).ok();
    let _ = std::fs::remove_file(&file);
    on_disk.bytes = bytes;
    let s = &on_disk.step;
    on_disk.needed_mb_per_s =
        bytes.map(|b| b as f64 / (s.events.max(1)) as f64 * s.events_per_s / 1e6);
    sync();
    let disk_floor = match bytes {
        Some(b) if b > 0 => Some(disk_floor(&dir, b)?),
        _ => None,
    };
    Ok(Sustain {
        pps: PPS,
        runs: vec![null, on_disk],
        disk_floor,
    })
}

fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// `pktpath trace --output json udp` to `out` while the sender runs `seconds` at [`PPS`].
fn one(lab: &Lab, tg: &Path, out: &Path, seconds: u64) -> anyhow::Result<Run> {
    check_stop()?;
    let output = if out == Path::new("/dev/null") {
        "/dev/null"
    } else {
        "file"
    };
    let mut t = Tool::pktpath(&["udp"], out)?;
    t.wait_ready(Duration::from_secs(60))?;
    let cpu0 = t.cpu_seconds()?;
    let (_, took) = lab.send_paced_timed(tg, PPS * seconds, PPS)?;
    let cpu = t.cpu_seconds()? - cpu0;
    let (events, lost) = t.finish()?;
    let step = Step::new(PPS, took, cpu, events, lost);
    eprintln!(
        "trace-sustain: {output}: {events} events, {lost} lost in {:.1} s ({:.0} events/s \
         offered), {:.0} ns of tool CPU per event",
        step.seconds, step.events_per_s, step.tool_cpu_ns_per_event
    );
    Ok(Run {
        output,
        step,
        bytes: None,
        needed_mb_per_s: None,
    })
}

/// Writes `bytes` of JSON-like text to a file in `dir` in 1 MiB writes, as fast as the
/// file system takes them; the file is removed after.
fn disk_floor(dir: &Scratch, bytes: u64) -> anyhow::Result<DiskFloor> {
    check_stop()?;
    let path = dir.path("floor.out");
    let chunk = vec![b'x'; 1 << 20];
    let t = Instant::now();
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).context("write the floor's file")?;
        left -= n as u64;
    }
    let seconds = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    let floor = DiskFloor {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
    };
    eprintln!(
        "trace-sustain: the file system took {bytes} bytes in 1 MiB writes in {seconds:.1} s \
         ({:.0} MB/s)",
        floor.mb_per_s
    );
    Ok(floor)
}
