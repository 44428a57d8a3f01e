//! `pktpath trace`: follow packets through the kernel's network stack, hop by hop.

use std::{
    fs::File,
    io::BufWriter,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use pktpath_common::route::TAP_MAP;
use pktpath_core::{
    access,
    route::datapath::attach::DEFAULT_PIN_DIR as DEFAULT_ROUTE_PIN_DIR,
    sys::caps::Privileges,
    sys::clock::MonotonicToRealtime,
    trace::{
        Collector, ConfigError, JsonSink, PcapngSink, Session, SessionError, SessionOptions,
        TextSink, TraceRequest,
        filter::compile_filter,
        pcapng::PcapngWriter,
        saved::{SavedFilter, SavedTrace},
        session::replay,
        sink,
        tap::Tap,
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
    /// Show the decisions of `pktpath route`'s data path pinned at DIR (hook `tc:pktpath`,
    /// and `xdp:pktpath` with `--hook xdp`: policy, action, outcome) in the packets'
    /// journeys. Default: the data path at
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
    let pcapng = match &args.write {
        Some(path) => Some(open_pcapng(path)?),
        None => None,
    };
    crate::signal::install()?;
    // Read alongside the loading, for the drop locations.
    let kallsyms = pktpath_core::trace::event::prefetch_kallsyms();
    let collector = Collector::start(&cfg).map_err(|e| {
        if super::trace_kernel_error(&e) {
            super::with_doctor_verdict(e.into(), &["trace"])
        } else {
            e.into()
        }
    })?;
    let route_dir = args
        .route_pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROUTE_PIN_DIR));
    // The default directory is followed when a data path is attached there; a directory
    // given on the command line must hold one.
    let tap = if args.route_pin_dir.is_some() || route_dir.join(TAP_MAP).exists() {
        Some(Tap::open_at(&args.state.layout(&route_dir))?)
    } else {
        None
    };
    let options = SessionOptions {
        count: args.count,
        duration: args.duration.map(Duration::from_secs_f64),
        filtered: !args.filter.is_empty(),
        summary: args.summary,
    };
    let session = Session::new(collector, kallsyms, tap, options);
    eprintln!("{}", banner(&args, &cfg, session.collector()));
    log::debug!("start-up: {:#?}", session.collector().startup());
    let stdout = std::io::stdout().lock();
    let mut out = match (pcapng, &args.write, args.output) {
        (Some(w), Some(path), _) => sink::Output::Pcapng(PcapngSink::new(w, path.clone(), stdout)),
        (_, _, Output::Json) => sink::Output::Json(JsonSink::new(stdout)),
        (_, _, Output::Text) => sink::Output::Text(TextSink::new(stdout)),
    };
    let ran = session.run(&mut out, crate::signal::stopped, note);
    ran.map_err(output_error)?;
    Ok(exit::OK)
}

/// A session's note to the user, on stderr.
fn note(line: String) {
    eprintln!("pktpath: {line}");
}

/// The error a session failed with, as itself: a broken pipe stays an `io::Error` in the
/// chain, which `exit::report` takes for success.
fn output_error(e: SessionError) -> anyhow::Error {
    match e {
        SessionError::Trace(e) => e.into(),
        SessionError::Pcapng(e) => e.into(),
        SessionError::Io(e) => e.into(),
    }
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
    let options = SessionOptions {
        count: args.count,
        summary: args.summary,
        ..SessionOptions::default()
    };
    let stdout = std::io::stdout().lock();
    let mut out: sink::Output<_, std::io::Sink> = match args.output {
        Output::Json => sink::Output::Json(JsonSink::new(stdout)),
        Output::Text => sink::Output::Text(TextSink::new(stdout)),
    };
    let replayed = replay(&saved, &mut filter, options, &mut out, note);
    replayed.map_err(output_error)?;
    Ok(exit::OK)
}
