//! `pktpath-bench hop-cost [ROUNDS]`: what the agent's hop-latency programs cost per
//! forwarded frame, as the kernel's BPF run-time statistics measure it, beside empty
//! programs on the same two tracepoints (`hookfloor`'s `floor_netif_receive_skb` and
//! `floor_net_dev_start_xmit`). Part 2's lab with `pktpath-1` forwarding (the TC fast path,
//! `bpf_redirect`), trafgen paced at [`PPS`] for [`FRAMES`] frames per window, windows
//! alternating between the two; statistics on for the windows only (`BPF_ENABLE_STATS`,
//! what `sysctl kernel.bpf_stats_enabled=1` turns on, released with its fd). Not part of
//! `bench/run.sh`: a paced run that leaves the second CPU mostly free.

use anyhow::Context as _;
use aya::programs::BtfTracePoint;
use pktpath_tests::objects::{self, TestObject};
use serde::Serialize;

use crate::{
    forward,
    lab::{Lab, Scratch, check_stop},
    routecli,
};

/// Frames per window, and their rate: 5 s.
const FRAMES: u64 = 500_000;
const PPS: u64 = 100_000;

/// One window's figures for one pair of programs.
#[derive(Debug, Serialize)]
pub struct Window {
    /// `hoplat` or `empty`.
    pub programs: &'static str,
    /// Frames the sink received.
    pub frames: u64,
    /// Runs and run time (ns) of the `netif_receive_skb` program, then of the
    /// `net_dev_start_xmit` one.
    pub rx_runs: u64,
    pub rx_ns: u64,
    pub tx_runs: u64,
    pub tx_ns: u64,
    /// Mean time per run of each.
    pub rx_ns_per_run: f64,
    pub tx_ns_per_run: f64,
    /// Both programs' time over the frames forwarded.
    pub ns_per_frame: f64,
    /// The (router in, router out) histogram's count over the window (hoplat only).
    pub counted: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub frames_per_window: u64,
    pub pps: u64,
    pub windows: Vec<Window>,
}

/// The empty programs on the hop-latency programs' tracepoints; detached when dropped.
fn empty_programs() -> anyhow::Result<(aya::Ebpf, [u32; 2])> {
    let mut ebpf = objects::load(TestObject::HookFloor, &[]).context("load the empty hooks")?;
    let btf = aya::Btf::from_sys_fs().context("kernel BTF")?;
    let mut ids = [0; 2];
    for (i, hook) in ["netif_receive_skb", "net_dev_start_xmit"]
        .iter()
        .enumerate()
    {
        let name = format!("floor_{hook}");
        let p: &mut BtfTracePoint = ebpf
            .program_mut(&name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        p.load(hook, &btf).with_context(|| format!("load {name}"))?;
        p.attach().with_context(|| format!("attach {name}"))?;
        ids[i] = p.info()?.id();
    }
    Ok((ebpf, ids))
}

/// (run time in ns, runs) of the loaded program `id`.
fn program_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if p.id() == id {
            return Ok((p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    anyhow::bail!("program {id} is not loaded")
}

/// One window of paced frames with statistics on, timing programs `ids` (rx, tx).
fn window(
    lab: &Lab,
    tg: &std::path::Path,
    programs: &'static str,
    ids: [u32; 2],
    count: impl Fn() -> anyhow::Result<Option<u64>>,
) -> anyhow::Result<Window> {
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let (rx0, tx0) = (program_stats(ids[0])?, program_stats(ids[1])?);
    let c0 = count()?;
    let frames = lab.send_paced(tg, FRAMES, PPS)?;
    let (rx1, tx1) = (program_stats(ids[0])?, program_stats(ids[1])?);
    let c1 = count()?;
    drop(stats);
    let (rx_ns, rx_runs) = (rx1.0 - rx0.0, rx1.1 - rx0.1);
    let (tx_ns, tx_runs) = (tx1.0 - tx0.0, tx1.1 - tx0.1);
    Ok(Window {
        programs,
        frames,
        rx_runs,
        rx_ns,
        tx_runs,
        tx_ns,
        rx_ns_per_run: rx_ns as f64 / rx_runs.max(1) as f64,
        tx_ns_per_run: tx_ns as f64 / tx_runs.max(1) as f64,
        ns_per_frame: (rx_ns + tx_ns) as f64 / frames.max(1) as f64,
        counted: c0.zip(c1).map(|(a, b)| b - a),
    })
}

pub fn run(rounds: usize) -> anyhow::Result<Results> {
    // The data path pins (route attach).
    let _bpffs = pktpath_tests::BpffsGuard::ensure();
    let lab = Lab::new()?;
    let dir = Scratch::new("hop-cost")?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    let _route = routecli::setup(&lab, &dir, 0)?;
    let mut windows = Vec::new();
    for round in 0..rounds {
        check_stop()?;
        {
            let hops = forward::hop_latency(&lab)?;
            let ids = [hops.program_ids()[0].1, hops.program_ids()[1].1];
            let count = || -> anyhow::Result<Option<u64>> {
                let rows = hops.read()?;
                Ok(Some(
                    rows.iter()
                        .filter(|r| r.iif == lab.r_in() && r.oif == lab.r_out())
                        .map(|r| r.count())
                        .sum(),
                ))
            };
            let w = window(&lab, &tg, "hoplat", ids, count)?;
            eprintln!("hop-cost: round {} {w:?}", round + 1);
            windows.push(w);
        }
        check_stop()?;
        {
            let (_ebpf, ids) = empty_programs()?;
            let w = window(&lab, &tg, "empty", ids, || Ok(None))?;
            eprintln!("hop-cost: round {} {w:?}", round + 1);
            windows.push(w);
        }
    }
    Ok(Results {
        frames_per_window: FRAMES,
        pps: PPS,
        windows,
    })
}
