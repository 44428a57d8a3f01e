//! `pktpath demo`: both tools at work on a lab of network namespaces, in one command.
//!
//! The run lives in the library (`pktpath_core::lab::demo`: the lab, the fast path, the
//! tracer, the traffic, and what was found); this module turns the arguments into it, shows
//! its steps on stderr, stops it on Ctrl-C / SIGTERM, and prints what happened: the
//! policies with their counters, a few journeys hop by hop, the kernel's forwarding against
//! the fast path's for the same flow, and the drops with their reasons. Everything is undone
//! on exit, on an error and on a signal, unless `--keep`.

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pktpath_core::{
    lab::{
        self,
        demo::{self, Demo, DemoError, Findings, Kept, RUNTIME_NAME, Steps},
    },
    route::datapath::attach::{self, DEFAULT_WAIT, Writer},
    sys::caps::{Capability, Privileges},
    trace::event::{endpoint, human_ns},
};

use crate::{exit, signal};

/// Show pktpath at work on a lab of network namespaces, in one command.
///
/// Builds a lab (client, router, two upstreams), attaches the fast path to the router with
/// examples/demo/*.json, sends real traffic (ping, a TCP transfer, UDP to several ports),
/// traces it, and prints the policies with their counters, journeys hop by hop, the
/// kernel's forwarding against the fast path's for the same flow, and the drops with their
/// reasons.
///
/// Everything is removed on exit, on error and on Ctrl-C (namespaces, links, pins, state
/// under /run/pktpath). With --keep the lab stays and the demo prints how to explore it;
/// `pktpath demo --cleanup` removes it later. Runs as root; takes about five seconds.
///
/// Examples:
///   pktpath demo
///   pktpath demo --keep          # leave the lab up and explore it
///   pktpath demo --cleanup       # remove labs left by --keep
///   NO_COLOR=1 pktpath demo | less
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Leave the lab (namespaces, fast path) in place and print how to explore it.
    #[arg(long)]
    keep: bool,
    /// Remove the labs left by `--keep` (or by a demo that was killed), then exit.
    #[arg(long, conflicts_with = "keep")]
    cleanup: bool,
    #[command(flatten)]
    state: super::state_dir::StateDirArg,
    /// Datagrams in each run of the latency flow (kernel, then fast path).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    latency_packets: u32,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    Privileges::current().require(
        &[
            Capability::SysAdmin,
            Capability::NetAdmin,
            Capability::Bpf,
            Capability::Perfmon,
        ],
        "the demo creates network namespaces, attaches the fast path and traces packets",
    )?;
    if args.cleanup {
        return cleanup(&args.state);
    }
    signal::install()?;
    let style = Style::detect();
    let options = demo::Options {
        state_root: args.state.root(),
        latency_packets: args.latency_packets,
    };
    let demo = match demo::run(std::process::id(), &options, &Progress) {
        Ok(demo) => demo,
        Err(DemoError::Interrupted) => return Ok(interrupted()),
        Err(DemoError::Attach(e)) if crate::cmd::attach_kernel_error(&e) => {
            return Err(crate::cmd::with_doctor_verdict(e.into(), &["route"]));
        }
        Err(DemoError::StartTracer(e)) if crate::cmd::trace_kernel_error(&e) => {
            return Err(crate::cmd::with_doctor_verdict(e.into(), &["trace"]));
        }
        Err(e) => return Err(e.into()),
    };
    finish(demo, args.keep, &style)
}

/// Prints the report, then keeps the lab (and says how to explore it) or removes it.
fn finish(demo: Demo, keep: bool, style: &Style) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    print_report(&mut out, style, &demo)?;
    out.flush()?;
    drop(out);
    if keep {
        print_keep(&demo.keep())?;
        return Ok(exit::OK);
    }
    match Progress.step("removing the lab", || {
        drop(demo);
        Ok(())
    }) {
        Ok(()) => Ok(exit::OK),
        Err(DemoError::Interrupted) => Ok(interrupted()),
        Err(e) => Err(e.into()),
    }
}

/// Says the demo was stopped by a signal (its lab removed); the exit code.
fn interrupted() -> u8 {
    eprintln!("pktpath demo: interrupted; the lab was removed");
    exit::INTERRUPTED
}

/// Colour for headings, only when stdout is a terminal and NO_COLOR is not set.
struct Style {
    color: bool,
}

impl Style {
    fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn heading(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1;36m== {text} ==\x1b[0m")
        } else {
            format!("== {text} ==")
        }
    }

    fn bad(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[31m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Runs the demo's steps, saying on stderr what each does and how long it took; stops the
/// demo after SIGINT or SIGTERM.
struct Progress;

impl Steps for Progress {
    fn step<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, DemoError>,
    ) -> Result<T, DemoError> {
        step(what, f)
    }
}

/// Runs one step, saying on stderr what it does and how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T, DemoError>) -> Result<T, DemoError> {
    if signal::stopped() {
        return Err(DemoError::Interrupted);
    }
    eprint!("pktpath demo: {what} ... ");
    let _ = std::io::stderr().flush();
    let started = Instant::now();
    // A dot each second while a step runs, so a slow one visibly progresses.
    let finished = std::sync::atomic::AtomicBool::new(false);
    let (r, dotted) = std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            let mut dotted = false;
            let mut next = started + Duration::from_secs(1);
            while !finished.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= next {
                    eprint!(".");
                    dotted = true;
                    next += Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            dotted
        });
        let r = f();
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, ticker.join().unwrap_or(false))
    });
    let took = started.elapsed().as_secs_f64();
    let sep = if dotted { " " } else { "" };
    match &r {
        Ok(_) => eprintln!("{sep}done ({took:.1}s)"),
        Err(_) => eprintln!("{sep}failed ({took:.1}s)"),
    }
    if r.is_ok() && signal::stopped() {
        return Err(DemoError::Interrupted);
    }
    r
}

fn print_report(out: &mut impl std::io::Write, style: &Style, demo: &Demo) -> anyhow::Result<()> {
    let r = &demo.findings;
    let id = &demo.lab.id;
    writeln!(out, "{}", style.heading("lab"))?;
    writeln!(
        out,
        "  client {id}-client   eth0 10.80.1.2/24 (+ 10.80.1.66), default via 10.80.1.1"
    )?;
    writeln!(
        out,
        "  router {id}-router   to-client 10.80.1.1, to-up1 10.80.2.1, to-up2 10.80.3.1; fast path at the ingress of all three (TCX), pinned at {}",
        demo.lab.pin_dir().display()
    )?;
    writeln!(
        out,
        "  up1    {id}-up1      eth0 10.80.2.2, lo 10.80.9.1 (the kernel's route to 10.80.9.0/24)"
    )?;
    writeln!(out, "  up2    {id}-up2      eth0 10.80.3.2, lo 10.80.9.1")?;
    writeln!(out)?;

    writeln!(out, "{}", style.heading("traffic"))?;
    let w = r.outcomes.iter().map(|o| o.what.len()).max().unwrap_or(0);
    for o in &r.outcomes {
        let result = if o.ok {
            o.result.clone()
        } else {
            style.bad(&format!("{} (unexpected)", o.result))
        };
        writeln!(out, "  {:<w$}  {result}", o.what)?;
    }
    writeln!(out)?;

    writeln!(
        out,
        "{}",
        style.heading(&format!("policies and counters ({RUNTIME_NAME})"))
    )?;
    super::route::print_stats(out, &r.stats)?;

    writeln!(out, "{}", style.heading("journeys (traced in the kernel)"))?;
    print_journeys(out, r)?;

    writeln!(
        out,
        "{}",
        style.heading("latency: kernel forwarding vs fast path, same flow")
    )?;
    print_latency(out, r)?;

    writeln!(out, "{}", style.heading("drops"))?;
    print_drops(out, r)?;
    writeln!(
        out,
        "trace: {} events in the lab, {} lost",
        r.events, r.lost
    )?;
    Ok(())
}

fn print_journeys(out: &mut impl std::io::Write, r: &Findings) -> anyhow::Result<()> {
    for shown in &r.journeys {
        let title = shown.title;
        let Some(j) = &shown.events else {
            writeln!(out, "  {title}: (not traced)")?;
            continue;
        };
        let e0 = &j[0];
        let total = j[j.len() - 1].ts_ns.saturating_sub(e0.ts_ns);
        writeln!(
            out,
            "  {title}\n  {} {} > {}, {} hops in {}:",
            e0.proto,
            endpoint(&e0.src, e0.sport),
            endpoint(&e0.dst, e0.dport),
            j.len(),
            human_ns(total)
        )?;
        for ev in j {
            let role = r.roles.get(&ev.netns).copied().unwrap_or("?");
            let delta = ev
                .delta_ns
                .map(|d| format!("+{}", human_ns(d)))
                .unwrap_or_default();
            let mut line = format!("    {role:<7} {:<10} {:<20} {delta:>9}", ev.ifname, ev.hook);
            if let Some(reason) = &ev.drop_reason {
                line.push_str(&format!(
                    "  DROP {reason} at {}",
                    ev.drop_location.as_deref().unwrap_or("?")
                ));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn print_latency(out: &mut impl std::io::Write, r: &Findings) -> anyhow::Result<()> {
    writeln!(
        out,
        "  udp 10.80.1.2 -> 10.80.9.1:5000, router netif_receive_skb@to-client -> net_dev_xmit@to-up1"
    )?;
    writeln!(
        out,
        "  {:<44} {:>7} {:>9} {:>9}",
        "PATH", "PACKETS", "P50", "P99"
    )?;
    let mut medians = Vec::new();
    for demo::Latency { label, latency } in &r.latency {
        let Some(l) = latency else {
            writeln!(out, "  {label:<44} {:>7} {:>9} {:>9}", 0, "-", "-")?;
            continue;
        };
        medians.push(l.p50_ns);
        writeln!(
            out,
            "  {label:<44} {:>7} {:>9} {:>9}",
            l.count,
            human_ns(l.p50_ns),
            human_ns(l.p99_ns)
        )?;
    }
    if let [kernel, fast] = medians[..]
        && fast > 0
    {
        writeln!(
            out,
            "  fast path / kernel, medians: {:.2} (this run; on a busy machine it varies from run to run)",
            fast as f64 / kernel as f64
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn print_drops(out: &mut impl std::io::Write, r: &Findings) -> anyhow::Result<()> {
    if r.drops.is_empty() {
        writeln!(out, "  (none)")?;
    } else {
        let w = r
            .drops
            .iter()
            .map(|d| d.location.len())
            .max()
            .unwrap_or(0)
            .max(8);
        writeln!(
            out,
            "  {:<16} {:<w$} {:<7} {:<10} {:>5}",
            "REASON", "LOCATION", "NETNS", "INTERFACE", "COUNT"
        )?;
        for demo::Dropped {
            reason,
            location,
            role,
            ifname,
            count,
        } in &r.drops
        {
            writeln!(
                out,
                "  {reason:<16} {location:<w$} {role:<7} {ifname:<10} {count:>5}"
            )?;
        }
    }
    let dropped_by_policy: u64 = r.stats.interfaces.iter().map(|i| i.dropped_packets).sum();
    writeln!(
        out,
        "  the fast path counted {dropped_by_policy} dropped packets (route stats above)"
    )?;
    writeln!(out)?;
    Ok(())
}

fn print_keep(kept: &Kept) -> anyhow::Result<()> {
    let Kept { id, layout } = kept;
    let pin = &layout.pin_dir;
    let pin = if layout.state_root == Path::new(attach::STATE_ROOT) {
        pin.display().to_string()
    } else {
        format!(
            "{} --state-dir {}",
            pin.display(),
            layout.state_root.display()
        )
    };
    let exe = command_name();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "The lab is still up (--keep). Explore it:
  ip netns exec {id}-client ping -c 3 10.80.9.1
  ip netns exec {id}-router ip route
  {exe} trace --netns {id}-router icmp
  nsenter --net=/run/netns/{id}-router {exe} route --pin-dir {pin} stats
  nsenter --net=/run/netns/{id}-router {exe} route --pin-dir {pin} get iif to-client from 10.80.1.2 to 10.80.9.1 proto udp dport 53
  nsenter --net=/run/netns/{id}-router {exe} route --pin-dir {pin} apply examples/demo/runtimeConfiguration.json
(`nsenter --net`, not `ip netns exec`, for `route`: the latter gives the command a bpffs of
its own without the pins.)
Remove it:
  {exe} demo --cleanup"
    )?;
    out.flush()?;
    Ok(())
}

/// How the user runs this binary: `pktpath` when that name on `PATH` is this very file,
/// else its full path, so the printed commands work when pasted as they are.
fn command_name() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "pktpath".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pktpath"))
            .find(|candidate| candidate.is_file())
    });
    match on_path.and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(found) if found == exe => "pktpath".into(),
        _ => exe.to_str().map_or_else(|| "pktpath".into(), str::to_owned),
    }
}

/// `--cleanup`: removes the labs whose demo process is gone.
fn cleanup(state: &super::state_dir::StateDirArg) -> anyhow::Result<u8> {
    let found = lab::stale();
    if found.is_empty() {
        println!("no demo lab to remove");
        return Ok(exit::OK);
    }
    for f in &found {
        let pin_dir = Path::new("/sys/fs/bpf").join(&f.id);
        let mut removed = Vec::new();
        if pin_dir.exists() {
            let layout = state.layout(&pin_dir);
            let report = Writer::lock(&layout, DEFAULT_WAIT)
                .and_then(|w| attach::detach(&w))
                .with_context(|| {
                    format!("removing the data path pinned at {}", pin_dir.display())
                })?;
            removed.push(format!(
                "data path at {} ({} pins)",
                report.pin_dir, report.pins
            ));
        }
        lab::remove_namespaces(f)?;
        if !f.namespaces.is_empty() {
            removed.push(format!("namespaces {}", f.namespaces.join(", ")));
        }
        println!("removed lab {}: {}", f.id, removed.join("; "));
    }
    Ok(exit::OK)
}
