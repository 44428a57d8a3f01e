//! `pktpath demo`: both tools at work on a lab of network namespaces, in one command.
//!
//! Builds the lab (`pktpath_core::lab`), attaches the fast path to the router with the
//! configuration files of examples/demo/ (built into the binary), starts the tracer in this
//! process, sends real traffic, and prints what happened: the policies with their counters,
//! a few journeys hop by hop, the kernel's forwarding against the fast path's for the same
//! flow, and the drops with their reasons. Everything is undone on exit, on an error and on
//! Ctrl-C / SIGTERM (guards dropped in reverse order: tracer, data path, bpffs mount, lab),
//! unless `--keep`.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pktpath_common::trace::Hook;
use pktpath_core::{
    datapath::attach::{self, DEFAULT_WAIT, Layout, Stats, Writer},
    lab::{self, Lab, traffic},
    route::{compile::PolicySet, config::Source},
    sys::{
        caps::{Capability, Privileges},
        mounts::{MountGuard, PseudoFs},
    },
    trace::{Collector, Event, EventBuilder, TraceRequest, event::human_ns, summary::percentile},
};

use crate::{exit, signal};

const CONFIG_NAME: &str = "examples/demo/configuration.json";
const CONFIG: &str = include_str!("../../../../examples/demo/configuration.json");
const RUNTIME_NAME: &str = "examples/demo/runtimeConfiguration.json";
const RUNTIME: &str = include_str!("../../../../examples/demo/runtimeConfiguration.json");

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

/// The demo was stopped by SIGINT or SIGTERM.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

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
    match demo(&args, &style) {
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("pktpath demo: interrupted; the lab was removed");
            Ok(exit::INTERRUPTED)
        }
        other => other,
    }
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

/// Runs one step, saying on stderr what it does and how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    if signal::stopped() {
        return Err(Interrupted.into());
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
        return Err(Interrupted.into());
    }
    r
}

/// The data path attached in the router; detached on drop unless kept.
struct Datapath {
    layout: Layout,
    keep: bool,
}

impl Drop for Datapath {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) =
                Writer::lock(&self.layout, DEFAULT_WAIT).and_then(|w| attach::detach(&w))
        {
            eprintln!("pktpath demo: removing the data path: {e}");
        }
    }
}

/// bpffs at /sys/fs/bpf if the demo had to mount it: unmounted on drop when only the
/// kernel's own files are left in it.
struct Bpffs(Option<MountGuard>);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        let only_kernel = std::fs::read_dir(PseudoFs::Bpf.path()).is_ok_and(|d| {
            d.flatten()
                .all(|e| matches!(e.file_name().to_str(), Some("progs.debug" | "maps.debug")))
        });
        if only_kernel {
            drop(guard);
        } else {
            guard.keep();
        }
    }
}

/// The hooks the demo traces: the default set without the routing lookups, so that each
/// journey starts with its packet (a sender's lookup comes before its skb exists).
fn demo_hooks() -> impl Iterator<Item = Hook> {
    Hook::DEFAULT.into_iter().filter(|h| !h.is_fib())
}

/// The tracer, with the lab's namespaces: events elsewhere are dropped.
struct Tracer {
    collector: Collector,
    builder: EventBuilder,
    inodes: Vec<u64>,
}

impl Tracer {
    fn start(lab: &Lab) -> anyhow::Result<Self> {
        let cfg = TraceRequest {
            filter: format!("net {}", lab::LAB_NET),
            hooks: demo_hooks().map(|h| h.name().to_owned()).collect(),
            ..TraceRequest::default()
        }
        .resolve()?;
        let collector = Collector::start(&cfg).map_err(|e| {
            if crate::cmd::trace_kernel_error(&e) {
                crate::cmd::with_doctor_verdict(e.into(), &["trace"])
            } else {
                e.into()
            }
        })?;
        let builder = EventBuilder::new(collector.drop_reasons().clone());
        Ok(Self {
            collector,
            builder,
            inodes: lab.roles().into_iter().map(|(i, _)| i).collect(),
        })
    }

    /// The lab's events that arrived so far.
    fn drain(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            let (builder, inodes) = (&mut self.builder, &self.inodes);
            let n = self.collector.poll(Duration::from_millis(100), |raw| {
                let ev = builder.build_record(&raw);
                if inodes.contains(&u64::from(ev.netns)) {
                    events.push(ev);
                }
            })?;
            if n == 0 {
                return Ok(events);
            }
        }
    }
}

fn svc(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(lab::SERVICE, port)
}

/// What one kind of traffic did.
struct Outcome {
    what: String,
    result: String,
    ok: bool,
}

fn demo(args: &Args, style: &Style) -> anyhow::Result<u8> {
    let mut lab = step(
        "building the lab (4 network namespaces, 3 veth pairs)",
        || Ok(Lab::build(std::process::id())?),
    )?;
    let bpffs = Bpffs(
        PseudoFs::Bpf
            .ensure()
            .context("mounting bpffs at /sys/fs/bpf")?,
    );
    let layout = args.state.layout(&lab.pin_dir());
    let mut datapath = step(
        &format!("attaching the fast path to the router ({CONFIG_NAME})"),
        || {
            let source = Source::new(CONFIG_NAME, CONFIG);
            // A failed attach removes what it created.
            lab.router
                .handle
                .run(|| {
                    let writer = Writer::lock(&layout, DEFAULT_WAIT)?;
                    attach::attach_source(&writer, &source, None)
                })?
                .map_err(|e| {
                    if crate::cmd::attach_kernel_error(&e) {
                        crate::cmd::with_doctor_verdict(e.into(), &["route"])
                    } else {
                        e.into()
                    }
                })?;
            Ok(Datapath {
                layout: layout.clone(),
                keep: false,
            })
        },
    )?;
    let loading = format!("loading the tracer ({} hooks)", demo_hooks().count());
    let mut tracer = step(&loading, || Tracer::start(&lab))?;

    // Warm up neighbour entries so the latency runs measure forwarding, not ARP.
    // (through up1, the kernel's route, and to up2's own address).
    step(
        "ping 10.80.9.1 and 10.80.3.2 from the client (warm-up)",
        || {
            for dst in [lab::SERVICE, lab::UP2] {
                let replies = traffic::ping(&lab.client.handle, dst, 2, Duration::from_millis(50))?;
                if replies == 0 {
                    anyhow::bail!(
                        "the lab does not forward: no ping reply from {dst} (see `pktpath doctor`)"
                    );
                }
            }
            Ok(())
        },
    )?;
    tracer.drain()?;

    let n = args.latency_packets;
    let mut flow = |label: &str| -> anyhow::Result<(u64, Vec<Event>)> {
        step(
            &format!("{label}: {n} UDP datagrams 10.80.1.2 -> 10.80.9.1:5000"),
            || {
                let sink = traffic::UdpSink::bind(&lab.up1.handle, 5000)?;
                traffic::udp_send(
                    &lab.client.handle,
                    lab::CLIENT,
                    svc(5000),
                    n,
                    64,
                    Duration::from_millis(2),
                )?;
                std::thread::sleep(Duration::from_millis(100));
                let got = sink.drain();
                Ok((got, tracer.drain()?))
            },
        )
    };
    let (kernel_got, kernel_events) =
        flow("kernel forwarding (no policy yet: passed to the kernel)")?;

    let runtime = Source::new(RUNTIME_NAME, RUNTIME);
    step(&format!("applying {RUNTIME_NAME}"), || {
        lab.router.handle.run(|| -> anyhow::Result<()> {
            let writer = Writer::lock(&layout, DEFAULT_WAIT)?;
            let mut attached = attach::open(&layout)?;
            let set = PolicySet::from_source(&attached.topology, &runtime)?;
            attached.apply(&writer, &set, &runtime)?;
            Ok(())
        })?
    })?;
    let (fast_got, fast_events) = flow("fast path (policy clients-via-up1)")?;

    let mut outcomes = vec![
        Outcome {
            what: "udp 10.80.1.2 -> 10.80.9.1:5000, kernel forwarding".into(),
            result: format!("{kernel_got}/{n} arrived at up1"),
            ok: kernel_got == u64::from(n),
        },
        Outcome {
            what: "udp 10.80.1.2 -> 10.80.9.1:5000, fast path".into(),
            result: format!("{fast_got}/{n} arrived at up1"),
            ok: fast_got == u64::from(n),
        },
    ];
    let mut events = step(
        "traffic: ping, a TCP transfer, UDP to ports 53, 6000 and 5000, UDP from a quarantined address",
        || traffic_mix(&lab, &mut tracer, &mut outcomes),
    )?;
    std::thread::sleep(Duration::from_millis(50));
    events.extend(tracer.drain()?);
    let lost = tracer.collector.lost().unwrap_or(0);

    let stats = lab
        .router
        .handle
        .run(|| attach::open(&layout).and_then(|a| a.stats()))??;

    let roles: BTreeMap<u32, &'static str> = lab
        .roles()
        .into_iter()
        .map(|(i, r)| (i as u32, r))
        .collect();
    let mut out = std::io::stdout().lock();
    print_report(
        &mut out,
        style,
        &Report {
            lab: &lab,
            outcomes: &outcomes,
            stats: &stats,
            roles: &roles,
            events: &events,
            kernel_events: &kernel_events,
            fast_events: &fast_events,
            lost,
        },
    )?;
    out.flush()?;
    drop(out);

    if args.keep {
        lab.keep();
        datapath.keep = true;
        if let Some(guard) = { bpffs }.0.take() {
            guard.keep();
        }
        drop(tracer);
        print_keep(&lab, &layout)?;
        return Ok(exit::OK);
    }
    step("removing the lab", || {
        drop(tracer);
        drop(datapath);
        drop(bpffs);
        drop(lab);
        Ok(())
    })?;
    Ok(exit::OK)
}

/// Ping, TCP, UDP to several ports and from the quarantined address; what arrived where.
fn traffic_mix(
    lab: &Lab,
    tracer: &mut Tracer,
    outcomes: &mut Vec<Outcome>,
) -> anyhow::Result<Vec<Event>> {
    let replies = traffic::ping(
        &lab.client.handle,
        lab::SERVICE,
        3,
        Duration::from_millis(100),
    )?;
    outcomes.push(Outcome {
        what: "ping 10.80.9.1 (icmp-to-stack: the kernel forwards)".into(),
        result: format!("{replies}/3 replies"),
        ok: replies == 3,
    });
    let mut events = tracer.drain()?;

    let bytes = 256 * 1024;
    let transfer = traffic::tcp_transfer(
        &lab.client.handle,
        &lab.up1.handle,
        svc(80),
        bytes,
        Duration::from_secs(3),
    );
    outcomes.push(Outcome {
        what: "tcp 10.80.1.2 -> 10.80.9.1:80 (web-via-up1)".into(),
        result: match &transfer {
            Ok(t) => format!(
                "{} bytes sent, {} received by up1, {}",
                t.sent,
                t.received,
                if t.intact { "intact" } else { "DAMAGED" }
            ),
            Err(e) => format!("failed: {e}"),
        },
        ok: transfer.is_ok_and(|t| t.intact),
    });
    events.extend(tracer.drain()?);

    // Each upstream listens on every port: where a datagram arrives shows the policy.
    let ports = [53u16, 6000, 5000];
    let mut sinks = Vec::new();
    for port in ports {
        sinks.push((
            port,
            traffic::UdpSink::bind(&lab.up1.handle, port)?,
            traffic::UdpSink::bind(&lab.up2.handle, port)?,
        ));
    }
    for port in ports {
        traffic::udp_send(
            &lab.client.handle,
            lab::CLIENT,
            svc(port),
            5,
            100,
            Duration::from_millis(5),
        )?;
    }
    traffic::udp_send(
        &lab.client.handle,
        lab::QUARANTINED,
        svc(5000),
        5,
        100,
        Duration::from_millis(5),
    )?;
    std::thread::sleep(Duration::from_millis(100));
    for (port, up1, up2) in &sinks {
        let (a, b) = (up1.drain(), up2.drain());
        let (policy, expect_up2) = match port {
            53 => ("dns-via-up2", true),
            6000 => ("games-via-up2", true),
            _ => ("clients-via-up1", false),
        };
        // The quarantined host's 5 datagrams went to port 5000 too: none may arrive.
        outcomes.push(Outcome {
            what: format!("udp -> 10.80.9.1:{port} ({policy})"),
            result: format!("up1 got {a}, up2 got {b}"),
            ok: if expect_up2 {
                a == 0 && b == 5
            } else {
                a == 5 && b == 0
            },
        });
    }
    events.extend(tracer.drain()?);
    // None of these may arrive (the port 5000 line above counts them): the trace says
    // where they went.
    let quarantined = lab::QUARANTINED.to_string();
    let drops: Vec<&Event> = events
        .iter()
        .filter(|e| e.src.as_deref() == Some(quarantined.as_str()) && e.drop_reason.is_some())
        .collect();
    let at_router = drops
        .iter()
        .filter(|e| e.ifname == "to-client" && e.drop_reason.as_deref() == Some("TC_INGRESS"))
        .count();
    outcomes.push(Outcome {
        what: "udp 10.80.1.66 -> 10.80.9.1:5000 (block-quarantined-host)".into(),
        result: format!(
            "5 sent, {at_router} dropped at the router's ingress (TC_INGRESS), {} elsewhere",
            drops.len() - at_router
        ),
        ok: at_router == 5 && drops.len() == 5,
    });
    Ok(events)
}

struct Report<'a> {
    lab: &'a Lab,
    outcomes: &'a [Outcome],
    stats: &'a Stats,
    roles: &'a BTreeMap<u32, &'static str>,
    events: &'a [Event],
    kernel_events: &'a [Event],
    fast_events: &'a [Event],
    lost: u64,
}

fn print_report(out: &mut impl std::io::Write, style: &Style, r: &Report) -> anyhow::Result<()> {
    let id = &r.lab.id;
    writeln!(out, "{}", style.heading("lab"))?;
    writeln!(
        out,
        "  client {id}-client   eth0 10.80.1.2/24 (+ 10.80.1.66), default via 10.80.1.1"
    )?;
    writeln!(
        out,
        "  router {id}-router   to-client 10.80.1.1, to-up1 10.80.2.1, to-up2 10.80.3.1; fast path at the ingress of all three (TCX), pinned at {}",
        r.lab.pin_dir().display()
    )?;
    writeln!(
        out,
        "  up1    {id}-up1      eth0 10.80.2.2, lo 10.80.9.1 (the kernel's route to 10.80.9.0/24)"
    )?;
    writeln!(out, "  up2    {id}-up2      eth0 10.80.3.2, lo 10.80.9.1")?;
    writeln!(out)?;

    writeln!(out, "{}", style.heading("traffic"))?;
    let w = r.outcomes.iter().map(|o| o.what.len()).max().unwrap_or(0);
    for o in r.outcomes {
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
    super::route::print_stats(out, r.stats)?;

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
        r.events.len() + r.kernel_events.len() + r.fast_events.len(),
        r.lost
    )?;
    Ok(())
}

/// Events grouped by journey, in order of first appearance.
fn journeys(events: &[Event]) -> Vec<Vec<&Event>> {
    let mut order: Vec<u64> = Vec::new();
    let mut by_id: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for ev in events {
        by_id
            .entry(ev.packet_id)
            .or_insert_with(|| {
                order.push(ev.packet_id);
                Vec::new()
            })
            .push(ev);
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

fn print_journeys(out: &mut impl std::io::Write, r: &Report) -> anyhow::Result<()> {
    let all = journeys(r.events);
    let fast = journeys(r.fast_events);
    fn first<'a>(js: &[Vec<&'a Event>], pick: &dyn Fn(&Event) -> bool) -> Option<Vec<&'a Event>> {
        js.iter()
            .find(|j| j.first().is_some_and(|e| pick(e)) && j.len() > 2)
            .cloned()
    }
    let picks: Vec<(&str, Option<Vec<&Event>>)> = vec![
        (
            "ping: icmp-to-stack passes it to the kernel, which forwards it to up1",
            first(&all, &|e| e.proto == "icmp" && e.icmp_type == Some(8)),
        ),
        (
            "TCP SYN to port 80: web-via-up1 forwards it in TC (DSCP set to 10)",
            first(&all, &|e| {
                e.proto == "tcp" && e.tcp_flags.as_deref() == Some("S")
            }),
        ),
        (
            "UDP to port 53: dns-via-up2 forwards it to up2",
            first(&all, &|e| e.proto == "udp" && e.dport == Some(53)),
        ),
        (
            "UDP to port 5000: clients-via-up1 forwards it to up1",
            first(&fast, &|e| e.proto == "udp" && e.dport == Some(5000)),
        ),
        (
            "UDP from 10.80.1.66: block-quarantined-host drops it",
            first(&all, &|e| {
                e.proto == "udp" && e.src.as_deref() == Some("10.80.1.66")
            }),
        ),
    ];
    for (title, journey) in picks {
        let Some(j) = journey else {
            writeln!(out, "  {title}: (not traced)")?;
            continue;
        };
        let ep = pktpath_core::trace::event::endpoint;
        let e0 = j[0];
        let total = j[j.len() - 1].ts_ns.saturating_sub(e0.ts_ns);
        writeln!(
            out,
            "  {title}\n  {} {} > {}, {} hops in {}:",
            e0.proto,
            ep(&e0.src, e0.sport),
            ep(&e0.dst, e0.dport),
            j.len(),
            human_ns(total)
        )?;
        for ev in &j {
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

/// Router ingress receive (netif_receive_skb on to-client) to egress transmit
/// (net_dev_xmit on to-up1) of each datagram of the flow, in ns.
fn router_latencies(events: &[Event], router: u32) -> Vec<u64> {
    let mut v: Vec<u64> = journeys(events)
        .into_iter()
        .filter_map(|j| {
            let rx = j.iter().find(|e| {
                e.netns == router
                    && e.ifname == "to-client"
                    && e.hook == "netif_receive_skb"
                    && e.proto == "udp"
                    && e.dport == Some(5000)
            })?;
            let tx = j.iter().find(|e| {
                e.netns == router
                    && e.ifname == "to-up1"
                    && e.hook == "net_dev_xmit"
                    && e.ts_ns >= rx.ts_ns
            })?;
            Some(tx.ts_ns - rx.ts_ns)
        })
        .collect();
    v.sort_unstable();
    v
}

fn print_latency(out: &mut impl std::io::Write, r: &Report) -> anyhow::Result<()> {
    let router = r
        .roles
        .iter()
        .find_map(|(i, role)| (*role == "router").then_some(*i))
        .unwrap_or_default();
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
    for (label, events) in [
        ("kernel forwarding (fast path passes)", r.kernel_events),
        ("fast path (clients-via-up1 forwards in TC)", r.fast_events),
    ] {
        let v = router_latencies(events, router);
        if v.is_empty() {
            writeln!(out, "  {label:<44} {:>7} {:>9} {:>9}", 0, "-", "-")?;
            continue;
        }
        let (p50, p99) = (percentile(&v, 50), percentile(&v, 99));
        medians.push(p50);
        writeln!(
            out,
            "  {label:<44} {:>7} {:>9} {:>9}",
            v.len(),
            human_ns(p50),
            human_ns(p99)
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

fn print_drops(out: &mut impl std::io::Write, r: &Report) -> anyhow::Result<()> {
    let mut drops: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    // The lab's own packets (IPv4 in 10.80/16), not the namespaces' IPv6 chatter whose
    // frees the tracer may report when an skb address it remembered is reused.
    let lab_packet = |ev: &&Event| ev.src.as_deref().is_some_and(|s| s.starts_with("10.80."));
    for ev in r
        .events
        .iter()
        .chain(r.kernel_events)
        .chain(r.fast_events)
        .filter(lab_packet)
    {
        if let Some(reason) = &ev.drop_reason {
            let role = r.roles.get(&ev.netns).copied().unwrap_or("?");
            *drops
                .entry((
                    reason.clone(),
                    ev.drop_location.clone().unwrap_or_else(|| "?".into()),
                    role.to_owned(),
                    ev.ifname.to_string(),
                ))
                .or_default() += 1;
        }
    }
    if drops.is_empty() {
        writeln!(out, "  (none)")?;
    } else {
        let w = drops.keys().map(|k| k.1.len()).max().unwrap_or(0).max(8);
        writeln!(
            out,
            "  {:<16} {:<w$} {:<7} {:<10} {:>5}",
            "REASON", "LOCATION", "NETNS", "INTERFACE", "COUNT"
        )?;
        for ((reason, location, role, ifname), count) in &drops {
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

fn print_keep(lab: &Lab, layout: &Layout) -> anyhow::Result<()> {
    let id = &lab.id;
    let pin = lab.pin_dir();
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

#[cfg(test)]
mod tests {
    use pktpath_core::route::{
        compile::{PolicySet, Topology},
        config::Source,
    };

    use super::{CONFIG, CONFIG_NAME, RUNTIME, RUNTIME_NAME};

    #[test]
    fn built_in_configuration_is_valid() {
        let topology = Topology::from_source(&Source::new(CONFIG_NAME, CONFIG))
            .unwrap_or_else(|e| panic!("{e}"));
        let set = PolicySet::from_source(&topology, &Source::new(RUNTIME_NAME, RUNTIME))
            .unwrap_or_else(|e| panic!("{e}"));
        // The demo's traffic is meant to meet each of these.
        let ids: Vec<&str> = set.policies.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "block-quarantined-host",
                "dns-via-up2",
                "web-via-up1",
                "games-via-up2",
                "icmp-to-stack",
                "clients-via-up1",
                "replies-by-main-table"
            ]
        );
    }
}
