//! `pktpath trace`: follow packets through the kernel's network stack, hop by hop.

use std::{
    fs::File,
    io::BufWriter,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pktpath_common::route::TAP_MAP;
use pktpath_core::{
    access,
    datapath::attach::DEFAULT_PIN_DIR as DEFAULT_ROUTE_PIN_DIR,
    sys::caps::Privileges,
    sys::clock::MonotonicToRealtime,
    trace::{
        Collector, ConfigError, EventBuilder, Summary, TraceRequest,
        filter::compile_filter,
        pcapng::{PcapngWriter, Written},
        saved::{SavedFilter, SavedTrace},
        tap::Tap,
        wire::Record,
    },
};

use anyhow::Context as _;

use crate::exit;

/// Follow packets through the kernel's network stack: every hook a packet meets (receive,
/// queue, transmit, free, drop), across interfaces and network namespaces, with the time
/// since its previous hop and the kernel's own drop reasons.
///
/// Filters are applied in the kernel: nothing is copied for a packet that fails them.
/// FILTER is a pcap-like expression (several words are joined, as with tcpdump):
/// host, net, port, portrange with src/dst; ip, ip6, tcp, udp, icmp, icmp6, arp;
/// and, or, not, parentheses. A syntax error exits with status 2.
///
/// Examples:
///   pktpath trace udp and dst port 53
///   pktpath trace 'host 10.0.0.1 and (tcp or icmp)'
///   pktpath trace --netns blue
///   pktpath trace --netns blue --iface veth0 -c 20
///   pktpath trace --hooks kfree_skb --output json | jq 'select(.drop_reason == "NO_SOCKET")'
///   pktpath trace --netns blue -w blue.pcapng -c 100 && tshark -r blue.pcapng
///   pktpath trace --netns blue --output json --summary > blue.jsonl
///   pktpath trace --read blue.jsonl 'tcp and port 443' --summary
///   pktpath trace diff working.jsonl failing.jsonl
///
/// Hooks (BTF tracepoints): napi_gro_receive_entry, netif_rx, netif_receive_skb,
/// fib_table_lookup, fib6_table_lookup (routing decisions: table, result, output device,
/// gateway; joined to the packet's journey by its addresses and time), net_dev_queue,
/// qdisc_enqueue, qdisc_dequeue, net_dev_start_xmit, net_dev_xmit, sk_data_ready (tells a
/// packet a socket got a clone of from a drop), kfree_skb, consume_skb.
/// Default: all but the qdisc pair (two more events per packet on every device with a
/// queue, and more to verify at start-up); `--hooks default,qdisc_enqueue,qdisc_dequeue`
/// or `--hooks all` adds them. `--hooks hops` (netif_receive_skb, net_dev_start_xmit,
/// sk_data_ready and the frees) shows every hop of each journey with its latency at about half the
/// default hooks' cost to forwarding; add fib_table_lookup for the routing decisions.
///
/// Privileges: root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN too for --iface with
/// --netns, which enters the namespace). Following a route data path (--route-pin-dir)
/// takes the user who attached it, and its --state-dir for the policy ids.
///
/// The banner line on stderr ends with the start-up time (process start excluded):
/// `ready in 180 ms (btf .., maps .., hooks ..; verifier N-M insns/hook)`.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<TraceCommand>,
    /// Filter expression, e.g. `udp and dst port 53` (default: every packet).
    #[arg(value_name = "FILTER")]
    filter: Vec<String>,
    /// Only packets in this network namespace: a name under /run/netns, a path, a pid or
    /// an inode number.
    #[arg(long, value_name = "NS")]
    netns: Option<String>,
    /// Only packets on this interface (looked up in --netns, else in the current namespace).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Only packets with this skb mark (decimal or 0x hex).
    #[arg(long, value_name = "N", value_parser = parse_mark)]
    mark: Option<u32>,
    /// Hooks to attach, comma separated (`net:`, `skb:`, `qdisc:`, `fib:`, `fib6:` prefixes
    /// optional); `all`, `default`, `hops`.
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    hooks: Vec<String>,
    /// Stop after this many events.
    #[arg(short = 'c', long, value_name = "COUNT")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Output format: one line of text per event, or JSON Lines.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Write the packets to FILE as pcapng (for tshark/Wireshark) instead of printing
    /// events: raw IP from the network header, one interface per (netns, device), a comment
    /// per packet with hook, netns, journey and drop reason. Non-IP packets are skipped.
    #[arg(
        short = 'w',
        long = "write",
        value_name = "FILE",
        conflicts_with = "output"
    )]
    write: Option<PathBuf>,
    /// At exit, print the summary to stdout: hop-pair latency, drops, packets per interface,
    /// events lost (with --output json: one `{"summary": {...}}` object as the last line).
    /// A short form is always printed to stderr.
    #[arg(long)]
    summary: bool,
    /// Judge every hook by the filter expression alone: without it, a packet the expression
    /// matched once is followed until freed, whatever NAT or a tunnel makes of its headers.
    #[arg(long)]
    no_track: bool,
    /// Ring buffer size in bytes (power of two, at least one page). Advanced: small sizes
    /// lose events under load (counted and reported).
    #[arg(long, value_name = "BYTES", hide = true)]
    ring_size: Option<u32>,
    /// Show the decisions of `pktpath route`'s data path pinned at DIR (hook `tc:pktpath`:
    /// policy, action, outcome) in the packets' journeys. Default: the data path at
    /// /sys/fs/bpf/pktpath when one is attached there.
    #[arg(long, value_name = "DIR")]
    route_pin_dir: Option<PathBuf>,
    #[command(flatten)]
    state: super::state_dir::StateDirArg,
    /// Print the JSON Schema of the events `--output json` writes (one per line) and exit;
    /// needs no privileges.
    #[arg(long, exclusive = true)]
    print_schema: bool,
    /// Read a trace `--output json` saved (`-`: standard input) instead of tracing, and
    /// print its events, `--summary`, or those FILTER, --netns, --iface and --mark select,
    /// as the live trace would have (tracking too, unless --no-track). Needs no privileges.
    #[arg(
        short = 'r',
        long,
        value_name = "FILE",
        conflicts_with_all = ["write", "hooks", "duration", "ring_size", "route_pin_dir"]
    )]
    read: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum TraceCommand {
    Diff(DiffArgs),
}

/// Compare two traces saved with `--output json` (a working and a failing case, before and
/// after a change): the flows whose packets took another path and where the paths part,
/// the flows one trace has only, the drop reasons one trace has only, and the hop pairs
/// whose latency moved (by 20% or more in text; all of them with --json). Needs no
/// privileges. Exits 0 whether or not the traces differ.
///
/// A flow is `proto src > dst` with its ports or ICMP type, as its packets' first event
/// shows it; its path is the most common hop sequence of its packets (`hook@interface`,
/// a drop with its reason).
///
/// Examples:
///   pktpath trace diff working.jsonl failing.jsonl
///   pktpath trace diff before.jsonl after.jsonl --json | jq '.diverging'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct DiffArgs {
    /// The first trace (A).
    #[arg(value_name = "A")]
    a: PathBuf,
    /// The second trace (B).
    #[arg(value_name = "B")]
    b: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `trace diff A B`.
fn diff(args: &DiffArgs) -> anyhow::Result<u8> {
    let (a, b) = (SavedTrace::read(&args.a)?, SavedTrace::read(&args.b)?);
    let d = pktpath_core::trace::diff::diff(&a.events, &b.events);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", d.to_text())?;
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a 32-bit mark: {e}"))
}

/// Bytes of output gathered before a write(2) (also written at the end of each poll round).
const OUT_BUFFER: usize = 256 * 1024;

/// A poll round of fewer records than this is followed by a [`COALESCE`] pause.
const COALESCE_BELOW: usize = 256;

/// How long the reader lets records gather after a small round.
const COALESCE: Duration = Duration::from_millis(1);

pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.print_schema {
        let mut out = std::io::stdout().lock();
        out.write_all(pktpath_core::trace::schema::render().as_bytes())?;
        out.flush()?;
        return Ok(exit::OK);
    }
    if let Some(TraceCommand::Diff(d)) = &args.command {
        return diff(d);
    }
    if let Some(path) = &args.read {
        return read_saved(&args, path);
    }
    access::Command::Trace.require(&Privileges::current())?;
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        anyhow::bail!("--duration must be a positive number of seconds, not {d}");
    }
    let request = TraceRequest {
        netns: args.netns.clone(),
        iface: args.iface.clone(),
        mark: args.mark,
        hooks: args.hooks.clone(),
        filter: args.filter.join(" "),
        ring_bytes: args.ring_size,
        no_track: args.no_track,
    };
    let cfg = match request.resolve() {
        Ok(cfg) => cfg,
        Err(e @ ConfigError::Filter(_)) => {
            eprintln!("pktpath: {e}");
            return Ok(exit::USAGE);
        }
        Err(ConfigError::Privilege(missing)) => return Err(missing.into()),
        Err(e) => return Err(e.into()),
    };
    let mut pcapng = match &args.write {
        Some(path) => Some(open_pcapng(path)?),
        None => None,
    };
    let mut skipped: u64 = 0;
    crate::signal::install()?;
    // Read alongside the loading, for the drop locations.
    let kallsyms = pktpath_core::trace::event::prefetch_kallsyms();
    let mut collector = Collector::start(&cfg).map_err(|e| {
        if super::trace_kernel_error(&e) {
            super::with_doctor_verdict(e.into(), &["trace"])
        } else {
            e.into()
        }
    })?;
    let mut builder =
        EventBuilder::new(collector.drop_reasons().clone()).with_kallsyms_loading(kallsyms);
    let route_dir = args
        .route_pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROUTE_PIN_DIR));
    // The default directory is followed when a data path is attached there; a directory
    // given on the command line must hold one.
    if args.route_pin_dir.is_some() || route_dir.join(TAP_MAP).exists() {
        let tap = Tap::open_at(&args.state.layout(&route_dir))?;
        builder = builder.with_policies(tap.ids().clone());
        collector.follow(tap);
    }
    eprintln!("{}", banner(&args, &cfg, &collector));
    log::debug!("start-up: {:#?}", collector.startup());

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    // Rust's stdout is line buffered: one write(2) per event, and a scan of every piece
    // serde writes for a newline. Buffered here instead, flushed after every poll round
    // (live output stays live: a round ends when the ring buffer is empty, or after
    // `Collector::poll`'s batch limit).
    let mut out = BufWriter::with_capacity(OUT_BUFFER, std::io::stdout().lock());
    let mut events: u64 = 0;
    // JSON lines are written straight into this buffer (not one by one into `out`, a copy
    // per event), which goes to `out` when full and at the end of every poll round.
    let mut json = Vec::with_capacity(OUT_BUFFER + 4096);
    let mut t0: Option<u64> = None;
    let mut summary = Summary::new();
    let mut lost_reported = 0;
    let mut lost_checked = Instant::now();
    let mut result: anyhow::Result<()> = Ok(());
    while !crate::signal::stopped()
        && args.count.is_none_or(|c| events < c)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let wait = deadline.map_or(Duration::from_millis(200), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200))
        });
        let mut write_err = None;
        let polled = collector.poll(wait, |rec| {
            if write_err.is_some() || args.count.is_some_and(|c| events >= c) {
                return;
            }
            if let Record::Tc(t) = &rec
                && !builder.follows(t.skb)
            {
                return;
            }
            let ev = builder.build_record(&rec);
            if !args.filter.is_empty() && EventBuilder::is_unjudged_lookup(&ev) {
                return;
            }
            summary.add(&ev);
            let t = *t0.get_or_insert(ev.ts_ns);
            let written: anyhow::Result<()> = match (&mut pcapng, args.output, &rec) {
                (Some(_), _, Record::Tc(_)) => return,
                (Some(w), _, Record::Fib(_)) => {
                    w.note_route(&ev);
                    return;
                }
                (Some(w), _, Record::Skb(raw)) => match w.write(raw, &ev) {
                    Ok(Written::Packet { .. }) => Ok(()),
                    Ok(Written::Skipped(_)) => {
                        skipped += 1;
                        return;
                    }
                    Err(e) => Err(e.into()),
                },
                (None, Output::Json, _) => {
                    ev.write_json(&mut json);
                    json.push(b'\n');
                    if json.len() < OUT_BUFFER {
                        Ok(())
                    } else {
                        let w = out.write_all(&json);
                        json.clear();
                        w.map_err(Into::into)
                    }
                }
                (None, Output::Text, _) => writeln!(out, "{}", ev.to_text(t)).map_err(Into::into),
            };
            match written {
                Ok(()) => events += 1,
                Err(e) => write_err = Some(e),
            }
        });
        let round = match polled {
            Ok(n) => n,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        // Live: once a second, when the count grew.
        if lost_checked.elapsed() >= Duration::from_secs(1) {
            lost_checked = Instant::now();
            if let Ok(lost) = collector.lost()
                && lost > lost_reported
            {
                eprintln!("pktpath: {lost} lost");
                lost_reported = lost;
            }
        }
        let flushed = match &mut pcapng {
            Some(w) => w.flush().map_err(anyhow::Error::from),
            None => {
                let w = out.write_all(&json).and_then(|()| out.flush());
                json.clear();
                w.map_err(anyhow::Error::from)
            }
        };
        if let Some(e) = write_err.or_else(|| flushed.err()) {
            result = Err(e);
            break;
        }
        // A small round means the reader caught up with the hooks. Waiting a moment before
        // the next makes each round (a poll, a wake-up, an output write) carry a
        // millisecond of a steady stream rather than one packet's few hops: at a few
        // hundred thousand events a second, those per-round costs were what the reader ran
        // out of time on. Output stays live.
        if (1..COALESCE_BELOW).contains(&round) {
            std::thread::sleep(COALESCE);
        }
    }
    // Lines of a round a poll error ended before its flush.
    if !json.is_empty() {
        let written = out.write_all(&json).and_then(|()| out.flush());
        result = result.and(written.map_err(Into::into));
    }
    let lost = collector.lost();
    drop(collector);
    if let (Some(w), Some(path)) = (pcapng, &args.write) {
        let interfaces = w.interfaces();
        if let Err(e) = w.finish() {
            result = result.and(Err(e.into()));
        }
        eprintln!(
            "pktpath: {events} packets on {interfaces} interfaces written to {}, {skipped} non-IP events skipped",
            path.display()
        );
    }
    let report = summary.report(lost.as_ref().ok().copied());
    if args.summary && result.is_ok() {
        let written = match args.output {
            Output::Json => {
                serde_json::to_writer(&mut out, &serde_json::json!({ "summary": report }))
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            }
            Output::Text => write!(out, "{}", report.to_text()),
        };
        result = written.and_then(|()| out.flush()).map_err(Into::into);
    }
    eprintln!("pktpath: summary: {}", report.short());
    match lost {
        Ok(lost) => eprintln!("pktpath: {events} events, {lost} lost"),
        Err(e) => eprintln!("pktpath: {events} events, lost count unavailable: {e}"),
    }
    result?;
    Ok(exit::OK)
}

/// Creates `path` and starts a pcapng section in it, with the clock offset measured now.
fn open_pcapng(path: &Path) -> anyhow::Result<PcapngWriter<BufWriter<File>>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let clock = MonotonicToRealtime::measure()?;
    let app = concat!("pktpath ", env!("CARGO_PKG_VERSION"));
    PcapngWriter::new(BufWriter::new(file), clock, app)
        .with_context(|| format!("cannot write to {}", path.display()))
}

fn banner(args: &Args, cfg: &pktpath_core::trace::TraceConfig, collector: &Collector) -> String {
    let mut what = Vec::new();
    if let (Some(spec), Some(ino)) = (&args.netns, cfg.netns) {
        what.push(format!("netns {spec} ({ino})"));
    }
    if let (Some(iface), Some(ix)) = (&args.iface, cfg.ifindex) {
        what.push(format!("iface {iface} (ifindex {ix})"));
    }
    if let Some(m) = cfg.mark {
        what.push(format!("mark {m:#x}"));
    }
    if !args.filter.is_empty() {
        what.push(format!("filter `{}`", args.filter.join(" ")));
    }
    let scope = if what.is_empty() {
        "all namespaces".to_owned()
    } else {
        what.join(", ")
    };
    format!(
        "pktpath: tracing {scope} on {} hooks, ready in {} (Ctrl-C to stop)",
        collector.hooks().len(),
        collector.startup().to_text()
    )
}

/// `--read FILE`: the saved events through the same filters, output and summary as a live
/// trace.
fn read_saved(args: &Args, path: &Path) -> anyhow::Result<u8> {
    let program = if args.filter.is_empty() {
        None
    } else {
        match compile_filter(&args.filter.join(" ")) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("pktpath: {}", ConfigError::Filter(e));
                return Ok(exit::USAGE);
            }
        }
    };
    let saved = SavedTrace::read(path)?;
    let mut filter = SavedFilter::new(program, args.no_track);
    filter.netns = args.netns.clone();
    filter.iface = args.iface.clone();
    filter.mark = args.mark;
    let mut out = BufWriter::with_capacity(OUT_BUFFER, std::io::stdout().lock());
    let mut summary = Summary::new();
    let mut json = Vec::new();
    let mut events: u64 = 0;
    let t0 = saved.events.first().map_or(0, |e| e.ts_ns);
    for ev in &saved.events {
        if args.count.is_some_and(|c| events >= c) {
            break;
        }
        if !filter.wants(ev) {
            continue;
        }
        summary.add(ev);
        match args.output {
            Output::Json => {
                json.clear();
                ev.write_json(&mut json);
                json.push(b'\n');
                out.write_all(&json)?;
            }
            Output::Text => writeln!(out, "{}", ev.to_text(t0))?,
        }
        events += 1;
    }
    let report = summary.report(saved.lost);
    if args.summary {
        match args.output {
            Output::Json => {
                serde_json::to_writer(&mut out, &serde_json::json!({ "summary": report }))?;
                writeln!(out)?;
            }
            Output::Text => write!(out, "{}", report.to_text())?,
        }
    }
    out.flush()?;
    eprintln!("pktpath: summary: {}", report.short());
    match saved.lost {
        Some(lost) => eprintln!("pktpath: {events} events, {lost} lost when recorded"),
        None => eprintln!("pktpath: {events} events (the file does not say how many were lost)"),
    }
    Ok(exit::OK)
}
