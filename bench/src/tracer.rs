//! Part 4: the tracer. Start-up time to ready; the highest event rate written as JSON to a
//! file with nothing lost (paced load, increasing); forwarding throughput with tracing
//! off, with empty programs on the same hooks (the floor), on with a filter matching
//! nothing (on the default hooks and on the hop hooks only), on with no filter; and
//! bpftrace on the same tracepoints printing one line per event, side by side; the
//! kernel's run time per hook hit; and a perf profile of the forwarding CPU in the
//! filtering modes. The router forwards with Linux policy routing (one rule) throughout.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use anyhow::Context as _;
use aya::programs::BtfTracePoint;
use pktpath_common::trace::Hook;
use pktpath_tests::objects::{self, TestObject};

use crate::{
    forward::{self, Kind as Fwd},
    lab::{Lab, Scratch, check_stop, median},
    report::Goal,
    tools::{Kind, Tool},
};

const STARTUP_RUNS: usize = 5;
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Paced rates (frames/s) of the lossless search, one second each (a frame is about 12
/// events at the default hooks: 125,000 is the 1.5M events/s of the tracer's goal).
const LADDER: [u64; 9] = [
    2_000, 5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000,
];
const ROUNDS: usize = 5;
const WARMUP: Duration = Duration::from_millis(400);
const WINDOW: Duration = Duration::from_millis(1500);
/// Matches nothing in the lab.
const NOTHING: &str = "host 192.0.2.99";
/// `--mark` with a mark nothing in the lab carries: each hook rejects after one load, about
/// the least a hook can do: the cost of running the hooks at all.
const NO_MARK: [&str; 2] = ["--mark", "0x7e57"];

#[derive(Debug, Serialize)]
pub struct Startup {
    pub runs_s: Vec<f64>,
    pub median: f64,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub pps: u64,
    pub seconds: f64,
    pub events: u64,
    pub lost: u64,
    /// (events + lost) / seconds: the event rate offered to the tool.
    pub events_per_s: f64,
    /// The tool's CPU time from ready until the traffic ended (plus 200 ms), per event:
    /// what reading, decoding and writing one event costs live. The tool runs on one CPU,
    /// so 1e9 / this is the rate it could keep up with.
    pub tool_cpu_ns_per_event: f64,
}

impl Step {
    /// A step at `pps` whose traffic took `took`, the tool `cpu` seconds, with `events`
    /// written and `lost`.
    pub fn new(pps: u64, took: Duration, cpu: f64, events: u64, lost: u64) -> Self {
        Self {
            pps,
            seconds: took.as_secs_f64(),
            events,
            lost,
            events_per_s: (events + lost) as f64 / took.as_secs_f64(),
            tool_cpu_ns_per_event: cpu * 1e9 / events.max(1) as f64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Lossless {
    pub steps: Vec<Step>,
    pub max_lossless_events_per_s: f64,
    /// The step at which the ladder stopped before losing an event, and why: the sender
    /// could not keep the pace while the tool traced (the tool's load slowed the machine
    /// down). The steps before it are the tool's ceiling on this machine.
    pub stopped: Option<Stopped>,
}

#[derive(Debug, Serialize)]
pub struct Stopped {
    pub pps: u64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub mode: String,
    pub pps: Vec<f64>,
    pub median_pps: f64,
    /// The median over the rounds of the rate relative to "off" in the same round (the
    /// modes of a round run back to back, so a slow spell of the machine affects both).
    pub vs_off: f64,
    /// Events the tool lost over all rounds (the load is far beyond what it keeps up with).
    pub lost: u64,
    pub events: u64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub tool_cpu: usize,
    pub startup_s: BTreeMap<String, Startup>,
    pub lossless: BTreeMap<String, Lossless>,
    pub throughput: Vec<Throughput>,
    /// Kernel time per hook hit with the filter matching nothing (`trace_*`), and of the
    /// empty programs (`floor_*`).
    pub hook_cost: Vec<HookCost>,
    /// Where the forwarding CPU's time went, mode by mode (perf).
    pub profile: Vec<Profile>,
    pub goals: Vec<Goal>,
}

/// One hook's cost, from the kernel's BPF statistics (run time / run count).
#[derive(Debug, Serialize)]
pub struct HookCost {
    pub program: String,
    pub hits: u64,
    pub ns_per_hit: f64,
}

/// The tracer's cost to forwarding alone (`pktpath-bench trace-overhead`).
#[derive(Debug, Serialize)]
pub struct Overhead {
    pub throughput: Vec<Throughput>,
    pub hook_cost: Vec<HookCost>,
}

/// What runs while the lab forwards.
#[derive(Clone, Copy)]
enum Load {
    Nothing,
    /// An empty program on each of the tracer's default hooks: the floor of any tracer
    /// built on these tracepoints.
    EmptyHooks,
    /// The same on the hop hooks only (`--hooks hops`).
    EmptyHops,
    /// A tool, with its arguments.
    Tool(Kind, &'static [&'static str]),
}

/// A forwarding mode: its name and what runs meanwhile.
type Mode = (&'static str, Load);

const MODES: [Mode; 7] = [
    ("off", Load::Nothing),
    ("empty programs on the same hooks", Load::EmptyHooks),
    (
        "pktpath, filter matching nothing",
        Load::Tool(Kind::Pktpath, &[NOTHING]),
    ),
    (
        "pktpath, --mark matching nothing",
        Load::Tool(Kind::Pktpath, &NO_MARK),
    ),
    ("pktpath, no filter", Load::Tool(Kind::Pktpath, &[])),
    HOP_MODE,
    (
        "bpftrace, one line per event",
        Load::Tool(Kind::Bpftrace, &[]),
    ),
];

/// Empty programs attached to `hooks` (of the tracer's default ones), as the tracer
/// attaches its own (tp_btf); detached when the returned object is dropped.
fn empty_hooks(hooks: &[Hook]) -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = objects::load(TestObject::HookFloor, &[]).context("load the empty hooks")?;
    let btf = aya::Btf::from_sys_fs().context("kernel BTF")?;
    for hook in hooks {
        let name = format!("floor_{}", hook.name());
        let p: &mut BtfTracePoint = ebpf
            .program_mut(&name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        p.load(hook.name(), &btf)
            .with_context(|| format!("load {name}"))?;
        p.attach().with_context(|| format!("attach {name}"))?;
    }
    Ok(ebpf)
}

fn start(kind: Kind, args: &[&str], out: &std::path::Path) -> anyhow::Result<Tool> {
    let mut t = match kind {
        Kind::Pktpath => Tool::pktpath(args, out)?,
        Kind::Bpftrace => Tool::bpftrace(out)?,
    };
    t.wait_ready(READY_LIMIT)?;
    Ok(t)
}

/// Starts what `load` runs (a tool writing to `out`, or the empty programs); it stops when
/// the values are dropped or finished.
fn start_load(
    load: Load,
    out: &std::path::Path,
) -> anyhow::Result<(Option<Tool>, Option<aya::Ebpf>)> {
    Ok(match load {
        Load::Tool(kind, args) => (Some(start(kind, args, out)?), None),
        Load::EmptyHooks => (None, Some(empty_hooks(&Hook::DEFAULT)?)),
        Load::EmptyHops => (None, Some(empty_hooks(&Hook::HOPS)?)),
        Load::Nothing => (None, None),
    })
}

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Pktpath => "pktpath",
        Kind::Bpftrace => "bpftrace",
    }
}

fn startup(kind: Kind, dir: &Scratch) -> anyhow::Result<Startup> {
    let mut runs = Vec::new();
    for _ in 0..STARTUP_RUNS {
        check_stop()?;
        let out = dir.0.join("startup.out");
        // Not pinned: a user's start-up, with every CPU for loading and attaching.
        let mut t = match kind {
            Kind::Pktpath => Tool::pktpath_on(&[NOTHING], &out, None)?,
            Kind::Bpftrace => Tool::bpftrace_on(&out, None)?,
        };
        runs.push(t.wait_ready(READY_LIMIT)?.as_secs_f64());
        t.finish()?;
    }
    eprintln!("trace: {} start-up {runs:.3?} s", label(kind));
    Ok(Startup {
        median: median(&runs),
        runs_s: runs,
    })
}

/// The ladder of [`LADDER`]'s rates for `kind` tracing UDP with the extra arguments `args`
/// (pktpath only), up to the first step that loses an event.
fn lossless(
    kind: Kind,
    args: &[&str],
    lab: &Lab,
    tg: &std::path::Path,
    dir: &Scratch,
) -> anyhow::Result<Lossless> {
    let mut steps = Vec::new();
    let mut stopped = None;
    for pps in LADDER {
        check_stop()?;
        let out = dir.0.join("ladder.out");
        let t = start(kind, &[&["udp"], args].concat(), &out)?;
        let cpu0 = t.cpu_seconds()?;
        let seconds = match lab.send_paced_timed(tg, pps, pps) {
            Ok((_, seconds)) => seconds,
            Err(e) => {
                // The tool stops with `t` dropped; a Ctrl-C is not a ceiling.
                check_stop()?;
                let reason = format!("{e:#}");
                eprintln!(
                    "trace: {} at {pps} pps: {reason}; ladder stopped",
                    label(kind)
                );
                stopped = Some(Stopped { pps, reason });
                break;
            }
        };
        let cpu = t.cpu_seconds()? - cpu0;
        let (events, lost) = t.finish()?;
        let _ = std::fs::remove_file(&out);
        let step = Step::new(pps, seconds, cpu, events, lost);
        eprintln!(
            "trace: {} at {pps} pps: {events} events, {lost} lost, {:.0} events/s, \
             {:.0} ns of tool CPU per event",
            label(kind),
            step.events_per_s,
            step.tool_cpu_ns_per_event
        );
        let lossy = lost > 0;
        steps.push(step);
        if lossy {
            break;
        }
    }
    let max = steps
        .iter()
        .filter(|s| s.lost == 0)
        .map(|s| s.events_per_s)
        .fold(0.0, f64::max);
    Ok(Lossless {
        steps,
        max_lossless_events_per_s: max,
        stopped,
    })
}

/// Only pktpath's lossless ladder of part 4, in the same lab (`pktpath-bench trace-ladder
/// [ARGS...]`, e.g. `--summary`): the figure to watch while working on the tracer's event
/// rate, without the start-up, bpftrace and forwarding runs around it.
pub fn ladder_only(args: &[&str]) -> anyhow::Result<Lossless> {
    let (lab, dir, tg, _routing) = forwarding_lab("trace-ladder")?;
    lossless(Kind::Pktpath, args, &lab, &tg, &dir)
}

/// Forwarding rate in each of `modes` (the first is the reference), alternating the modes
/// within each of [`ROUNDS`] rounds.
fn throughput(
    lab: &Lab,
    tg: &std::path::Path,
    dir: &Scratch,
    modes: &[Mode],
) -> anyhow::Result<Vec<Throughput>> {
    let mut pps = vec![Vec::new(); modes.len()];
    let mut lost = vec![0u64; modes.len()];
    let mut events = vec![0u64; modes.len()];
    for round in 0..ROUNDS {
        for (i, (name, load)) in modes.iter().enumerate() {
            check_stop()?;
            let out = dir.0.join("throughput.out");
            let (t, empty) = start_load(*load, &out)?;
            let rate = lab.measure_pps(tg, WARMUP, WINDOW)?;
            drop(empty);
            if let Some(t) = t {
                let (e, l) = t.finish()?;
                events[i] += e;
                lost[i] += l;
            }
            let _ = std::fs::remove_file(&out);
            eprintln!("trace: round {} {name:<34} {rate:>10.0} pps", round + 1);
            pps[i].push(rate);
        }
    }
    let off = pps[0].clone();
    Ok(modes
        .iter()
        .zip(pps)
        .enumerate()
        .map(|(i, ((name, _), v))| Throughput {
            mode: (*name).to_owned(),
            median_pps: median(&v),
            vs_off: median(&v.iter().zip(&off).map(|(m, o)| m / o).collect::<Vec<_>>()),
            pps: v,
            lost: lost[i],
            events: events[i],
        })
        .collect())
}

/// Kernel time per hit of each pktpath hook while the lab forwards with the filter matching
/// nothing running, then of each empty program of the floor: the kernel's BPF run-time
/// statistics, on for these runs only (they add a clock read or two to every hit, which the
/// empty programs' figures show; the throughput runs go without).
fn hook_cost(lab: &Lab, tg: &std::path::Path, dir: &Scratch) -> anyhow::Result<Vec<HookCost>> {
    let out = dir.0.join("hook-cost.out");
    let t = start(Kind::Pktpath, &[NOTHING], &out)?;
    let mut costs = costs_while_forwarding(lab, tg, "trace_")?;
    t.finish()?;
    let _ = std::fs::remove_file(&out);
    let empty = empty_hooks(&Hook::DEFAULT)?;
    costs.extend(costs_while_forwarding(lab, tg, "floor_")?);
    drop(empty);
    for c in &costs {
        eprintln!(
            "trace: hook cost {:<28} {:>9} hits {:>6.0} ns",
            c.program, c.hits, c.ns_per_hit
        );
    }
    Ok(costs)
}

/// Run time per hit of the loaded programs named `prefix*` over one forwarding window.
fn costs_while_forwarding(
    lab: &Lab,
    tg: &std::path::Path,
    prefix: &str,
) -> anyhow::Result<Vec<HookCost>> {
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let before = hook_stats(prefix)?;
    lab.measure_pps(tg, WARMUP, WINDOW)?;
    let after = hook_stats(prefix)?;
    drop(stats);
    let mut costs: Vec<HookCost> = after
        .into_iter()
        .filter_map(|(program, (ns, hits))| {
            let (ns0, hits0) = before.get(&program).copied().unwrap_or((0, 0));
            let hits = hits.checked_sub(hits0)?;
            (hits > 0).then(|| HookCost {
                ns_per_hit: (ns - ns0) as f64 / hits as f64,
                program,
                hits,
            })
        })
        .collect();
    costs.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.program.cmp(&b.program)));
    Ok(costs)
}

/// Run time (ns) and run count of each loaded program named `prefix*`, by name.
fn hook_stats(prefix: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let mut m = BTreeMap::new();
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if let Some(name) = p.name_as_str().filter(|n| n.starts_with(prefix)) {
            let e = m.entry(name.to_owned()).or_insert((0, 0));
            e.0 += p.run_time().as_nanos() as u64;
            e.1 += p.run_count();
        }
    }
    Ok(m)
}

/// Part 4's forwarding runs alone (tracing off, with the filter matching nothing, with no
/// filter) and the hooks' cost: the figures to watch while working on the tracer's
/// overhead.
pub fn overhead_only() -> anyhow::Result<Overhead> {
    let (lab, dir, tg, _routing) = forwarding_lab("trace-overhead")?;
    Ok(Overhead {
        throughput: throughput(&lab, &tg, &dir, &MODES[..6])?,
        hook_cost: hook_cost(&lab, &tg, &dir)?,
    })
}

/// The filter matching nothing on the hop hooks (`--hooks hops`: one receive and one
/// transmit hook per device, and the frees), without the intermediate hooks and routing
/// lookups.
const HOP_HOOKS_NOTHING: [&str; 3] = ["--hooks", "hops", NOTHING];

/// The filter matching nothing on the hop hooks only.
const HOP_MODE: Mode = (
    "pktpath, filter matching nothing, hop hooks",
    Load::Tool(Kind::Pktpath, &HOP_HOOKS_NOTHING),
);

/// The floor of the hop hooks: empty programs on them.
const HOP_FLOOR_MODE: Mode = ("empty programs on the hop hooks", Load::EmptyHops);

/// A filter matching nothing (trafgen sends from port 4000 to 5000) that names no address,
/// so its guard tests the ports (see docs/trace.md).
const PORT_MODE: Mode = (
    "pktpath, `port 7` (guard on ports)",
    Load::Tool(Kind::Pktpath, &["port 7"]),
);

/// A filter matching nothing (trafgen sends UDP to port 5000) whose guard every frame
/// passes (`udp`): what a filter the guard cannot help costs, every hook hit going on to
/// the remembered verdicts. (`ip and not net 10.0.0.0/8`, with no guard at all, matched
/// frames in this lab, whose addresses are all in that prefix.)
const UNGUARDED_MODE: Mode = (
    "pktpath, `udp and not port 5000` (a guard every frame passes)",
    Load::Tool(Kind::Pktpath, &["udp and not port 5000"]),
);

/// A filter that matches the one ping [`profile`] sends before a tracking mode (client to
/// the router) and none of trafgen's frames: once a packet matched, each hook hit the
/// filter rejects pays tracking's lookup of its skb (unless `--no-track`).
const ONE_PING: &str = "host 192.0.2.99 or host 10.1.0.1";
const ONE_PING_NO_TRACK: [&str; 2] = [ONE_PING, "--no-track"];

/// Tracking's cost: the filter matching nothing after one ping matched it, with tracking
/// (the default) and without.
const TRACK_MODES: [Mode; 2] = [
    (
        "pktpath, nothing after one match, tracking",
        Load::Tool(Kind::Pktpath, &[ONE_PING]),
    ),
    (
        "pktpath, nothing after one match, --no-track",
        Load::Tool(Kind::Pktpath, &ONE_PING_NO_TRACK),
    ),
];

/// How many seconds each mode of [`profile_only`] is profiled.
const PROFILE_WINDOW: Duration = Duration::from_secs(3);

/// Where the forwarding CPU's time went in one mode (`pktpath-bench trace-profile`).
#[derive(Debug, Serialize)]
pub struct Profile {
    pub mode: String,
    pub pps: f64,
    /// Samples of the forwarding CPU over the window.
    pub samples: u64,
    /// Share of them inside the kernel's runs of tracepoint programs: the dispatch
    /// (`bpf_trace_runN` and what it calls), the programs and what they call.
    pub in_tracepoint_runs: f64,
    /// Share in the programs' own code (`bpf_prog_*`, exclusive).
    pub in_programs: f64,
    /// `in_tracepoint_runs` per forwarded frame: that CPU forwards at full load, so a frame
    /// takes 1 s / pps of it.
    pub tracepoint_ns_per_frame: f64,
    /// The symbols with the most samples, inclusive (percent).
    pub top: Vec<(String, f64)>,
}

/// Profiles the CPU that forwards (`GEN_CPU`: trafgen and the whole path run there) with
/// `perf record` in each mode up to the filter matching nothing: what share of its time the
/// tracepoints' programs take, the kernel's dispatch included. Unlike throughput ratios,
/// which vary 20-30% between rounds here, this splits one run's time, so the floor (empty
/// programs) and pktpath's own cost above it can be told apart.
pub fn profile_only() -> anyhow::Result<Vec<Profile>> {
    let (lab, dir, tg, _routing) = forwarding_lab("trace-profile")?;
    profile(&lab, &tg, &dir)
}

/// [`profile_only`] in a lab already set up.
fn profile(lab: &Lab, tg: &std::path::Path, dir: &Scratch) -> anyhow::Result<Vec<Profile>> {
    let mut out = Vec::new();
    for (name, load) in MODES[..4]
        .iter()
        .chain(&[PORT_MODE, UNGUARDED_MODE, HOP_FLOOR_MODE, HOP_MODE])
        .chain(&TRACK_MODES)
    {
        check_stop()?;
        let tool_out = dir.0.join("profile.out");
        let (t, empty) = start_load(*load, &tool_out)?;
        if TRACK_MODES.iter().any(|m| m.0 == *name) {
            pktpath_tests::run::in_ns(
                &lab.client.name,
                "ping",
                &["-c", "1", "-W", "1", "10.1.0.1"],
            )
            .map_err(|e| anyhow::anyhow!("ping the router before `{name}`: {e}"))?;
        }
        let data = dir.0.join("perf.data");
        let pps = lab.measure_pps_observed(tg, WARMUP, PROFILE_WINDOW, |window| {
            Ok(Some(crate::perf::record(&data, &[], window)?))
        })?;
        // Read while the programs are still loaded: perf annotates them from the kernel.
        let p = perf_shares(name, pps, &data)?;
        if let Some(keep) = std::env::var_os("PKTPATH_BENCH_KEEP_PERF") {
            keep_annotated(&data, std::path::Path::new(&keep), out.len())?;
        }
        drop(empty);
        if let Some(t) = t {
            t.finish()?;
        }
        let _ = std::fs::remove_file(&tool_out);
        let _ = std::fs::remove_file(&data);
        eprintln!(
            "trace: profile {name:<34} {pps:>9.0} pps, {:>5.1}% in tracepoint runs \
             ({:.0} ns/frame), {:>5.1}% in programs",
            p.in_tracepoint_runs, p.tracepoint_ns_per_frame, p.in_programs
        );
        out.push(p);
    }
    Ok(out)
}

/// With `PKTPATH_BENCH_KEEP_PERF=DIR`: the profile of mode `i` as `DIR/i.data`, the
/// samples in BPF programs by instruction offset as `DIR/i.hist`, and those programs'
/// machine code, read while they are loaded, as `DIR/i.NAME.ID.bin` and disassembled
/// (objdump) as `.asm` (Debian's bpftool cannot disassemble).
fn keep_annotated(data: &std::path::Path, dir: &std::path::Path, i: usize) -> anyhow::Result<()> {
    std::fs::copy(data, dir.join(format!("{i}.data"))).context("keep perf.data")?;
    let o = std::process::Command::new("perf")
        .args(["script", "-F", "ip,sym,symoff", "-G", "-i"])
        .arg(data)
        .output()
        .context("perf script")?;
    let mut hist: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        // "ffffffffc00043f0 bpf_prog_<tag>_<name>+0x184"
        let l = l.trim().split_once(' ').map_or("", |(_, rest)| rest);
        if let Some((sym, off)) = l.split_once("+0x")
            && sym.starts_with("bpf_prog_")
        {
            *hist.entry((sym.to_owned(), off.to_owned())).or_default() += 1;
        }
    }
    let mut text = String::new();
    let mut names = std::collections::BTreeSet::new();
    for ((sym, off), n) in &hist {
        text.push_str(&format!("{sym} 0x{off} {n}\n"));
        // A function's symbol carries its own tag; programs are matched by name.
        if let Some((_, name)) = sym
            .strip_prefix("bpf_prog_")
            .and_then(|r| r.split_once('_'))
        {
            names.insert(name.to_owned());
        }
    }
    std::fs::write(dir.join(format!("{i}.hist")), text).context("write hist")?;
    for p in aya::programs::loaded_programs() {
        let p = p?;
        // The kernel keeps the first 15 bytes of a program's name.
        let Some(name) = p
            .name_as_str()
            .filter(|n| !n.is_empty() && names.iter().any(|full| full.starts_with(n)))
        else {
            continue;
        };
        let bin = dir.join(format!("{i}.{name}.{}.bin", p.id()));
        std::fs::write(&bin, jited_image(p.id())?).context("write the machine code")?;
        let o = std::process::Command::new("objdump")
            .args(["-b", "binary", "-m", "i386:x86-64", "-D"])
            .arg(&bin)
            .output()
            .context("objdump")?;
        std::fs::write(bin.with_extension("asm"), o.stdout).context("write asm")?;
    }
    Ok(())
}

/// The JIT's machine code of the loaded program `id` (its main function and subprograms).
fn jited_image(id: u32) -> anyhow::Result<Vec<u8>> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info: jited_prog_len at 16, jited_prog_insns at 24.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    // SAFETY: attr is a zeroed bpf_attr holding prog_id.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_mut_ptr(), 128) };
    anyhow::ensure!(fd >= 0, "program {id}: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel returned a new descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let info = |buf: &mut [u8]| -> anyhow::Result<[u8; 256]> {
        let mut info = [0u8; 256];
        info[16..20].copy_from_slice(&(buf.len() as u32).to_ne_bytes());
        info[24..32].copy_from_slice(&(buf.as_mut_ptr() as u64).to_ne_bytes());
        let mut attr = [0u64; 16];
        attr[0] = std::os::fd::AsRawFd::as_raw_fd(&fd) as u64 | (256u64 << 32);
        attr[1] = info.as_mut_ptr() as u64;
        // SAFETY: bpf_attr.info: fd, info_len, info pointer; `info` and `buf` outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                128,
            )
        };
        anyhow::ensure!(
            r == 0,
            "program {id} info: {}",
            std::io::Error::last_os_error()
        );
        Ok(info)
    };
    let first = info(&mut [])?;
    let len = u32::from_ne_bytes(first[16..20].try_into()?) as usize;
    let mut code = vec![0u8; len];
    info(&mut code)?;
    Ok(code)
}

/// Reads a `perf record -g` file into a [`Profile`].
fn perf_shares(mode: &str, pps: f64, data: &std::path::Path) -> anyhow::Result<Profile> {
    let perf = |args: &[&str]| crate::perf::read(data, args);
    let is_run = |s: &str| {
        s.strip_prefix("bpf_trace_run")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    // Sample by sample, from the call chains ("ADDR SYMBOL+OFF" lines, a blank line after
    // each sample): a sample is in a tracepoint's run when any frame is the kernel's
    // dispatch (`bpf_trace_runN`) or a program (`bpf_prog_*`). Both, because the kernel's
    // unwinder stops at a program's frame: a sample in a program, or in a helper it called,
    // often has no frame below it, and a report of what runs under `bpf_trace_runN` alone
    // misses it.
    let script = perf(&["script", "-F", "ip,sym"])?;
    let (mut samples, mut in_runs, mut in_programs) = (0u64, 0u64, 0u64);
    let (mut depth, mut run, mut leaf_program) = (0, false, false);
    for line in script.lines().chain(std::iter::once("")) {
        let Some(sym) = line.split_whitespace().nth(1) else {
            if depth > 0 {
                samples += 1;
                in_runs += u64::from(run);
                in_programs += u64::from(leaf_program);
            }
            (depth, run, leaf_program) = (0, false, false);
            continue;
        };
        let sym = sym.split_once('+').map_or(sym, |(s, _)| s);
        let program = sym.starts_with("bpf_prog_");
        run |= program || is_run(sym);
        leaf_program |= depth == 0 && program;
        depth += 1;
    }
    let share = |n: u64| 100.0 * n as f64 / samples.max(1) as f64;
    let (in_runs, in_programs) = (share(in_runs), share(in_programs));
    // The symbols with the most samples under them, for a look at where the time went.
    // Rows: "  12.34%  0.10%  [k] symbol".
    let report = perf(&[
        "report",
        "--stdio",
        "--children",
        "--sort",
        "sym",
        "-g",
        "none",
        "--percent-limit",
        "0",
    ])?;
    let inclusive: Vec<(f64, String)> = report
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let pct = w.next()?.strip_suffix('%')?.parse().ok()?;
            let sym = w.skip_while(|t| !t.starts_with('[')).nth(1)?;
            Some((pct, sym.to_owned()))
        })
        .collect();
    Ok(Profile {
        mode: mode.to_owned(),
        pps,
        samples,
        in_tracepoint_runs: in_runs,
        in_programs,
        tracepoint_ns_per_frame: in_runs / 100.0 * 1e9 / pps,
        top: inclusive
            .into_iter()
            .take(25)
            .map(|(p, s)| (s, p))
            .collect(),
    })
}

/// The lab forwarding by Linux routing, its scratch directory and the trafgen
/// configuration in it; the routing set-up lives as long as the last value.
pub(crate) fn forwarding_lab(
    label: &str,
) -> anyhow::Result<(Lab, Scratch, std::path::PathBuf, Box<dyn std::any::Any>)> {
    let lab = Lab::new()?;
    let dir = Scratch::new(label)?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    let routing = forward::setup(
        &lab,
        forward::Config {
            kind: Fwd::Linux,
            ahead: 0,
        },
        &dir,
    )?;
    Ok((lab, dir, tg, routing))
}

pub fn run() -> anyhow::Result<Results> {
    // bpftrace resolves tracepoints through tracefs; mounted here if missing, unmounted
    // at the end if this mounted it.
    let _tracefs = pktpath_core::sys::mounts::PseudoFs::Trace.ensure()?;
    let (lab, dir, tg, _routing) = forwarding_lab("trace")?;

    let mut startup_s = BTreeMap::new();
    let mut lossless_by = BTreeMap::new();
    for kind in [Kind::Pktpath, Kind::Bpftrace] {
        startup_s.insert(label(kind).to_owned(), startup(kind, &dir)?);
        lossless_by.insert(
            label(kind).to_owned(),
            lossless(kind, &[], &lab, &tg, &dir)?,
        );
    }

    let throughput = throughput(&lab, &tg, &dir, &MODES)?;
    let nothing_vs_off = throughput
        .iter()
        .find(|t| t.mode == MODES[2].0)
        .map_or(0.0, |t| t.vs_off);
    let hook_cost = hook_cost(&lab, &tg, &dir)?;
    let profile = profile(&lab, &tg, &dir)?;
    let goals = vec![
        Goal::at_most(
            "pktpath trace start-up, median (s)",
            startup_s["pktpath"].median,
            0.5,
        ),
        Goal::at_least(
            "pktpath trace lossless events/s (JSON to a file)",
            lossless_by["pktpath"].max_lossless_events_per_s,
            1e6,
        ),
        Goal::at_least(
            "forwarding with a filter matching nothing / off",
            nothing_vs_off,
            0.95,
        ),
    ];
    Ok(Results {
        tool_cpu: crate::lab::TOOL_CPU,
        startup_s,
        lossless: lossless_by,
        throughput,
        hook_cost,
        profile,
        goals,
    })
}
