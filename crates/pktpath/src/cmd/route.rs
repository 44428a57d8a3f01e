//! `pktpath route`: the policy-routing fast path. `check` (validate the configuration files,
//! compile them as `apply` would and show what would be applied), `schema` (the files' JSON
//! Schema), `object` (the data path object, for attaching it by hand with tc), and on the
//! running system `attach`, `apply`, `show`, `stats`, `get` and `detach`.

use std::{io::Write as _, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use pktpath_common::route::DATAPATH_SECTION;
use pktpath_core::{
    access,
    route::datapath::{
        attach::{self, DEFAULT_PIN_DIR, Layout, Writer},
        object,
        policy::{self, ClassifierSummary, Interfaces, Slots},
        xdp_rules,
    },
    route::{
        compile::{PolicySet, Topology},
        config::{Protocol, Source, schema::SchemaKind},
        diff::Diff,
        packet::{Ifindex, PacketFields},
        summary::{self, Summary},
    },
    sys::caps::Privileges,
};

use super::writer_args::{HookArg, TcModeArg, WaitArg, XdpModeArg};
use crate::exit;

/// Policy routing in a TC eBPF fast path, configured from JSON.
///
/// Examples:
///   pktpath route check --config configuration.json runtimeConfiguration.json
///   pktpath route attach --config configuration.json
///   pktpath route apply runtimeConfiguration.json
///   pktpath route stats
///   pktpath route get iif eth1 from 10.1.0.2 to 10.9.0.1 proto udp dport 53
///   pktpath route detach
///   pktpath route object -o pktpath.o
///   nsenter --net=/run/netns/router pktpath route --pin-dir /sys/fs/bpf/lab stats
///   pktpath route --state-dir /run/user/$UID/pktpath --pin-dir /sys/fs/bpf/$USER/pktpath attach --config configuration.json
///
/// State: the pins under --pin-dir (bpffs), the JSON state files under --state-dir
/// (PKTPATH_STATE_DIR, else systemd's $RUNTIME_DIRECTORY, else /run/pktpath); every verb
/// on one data path takes the same two directories.
///
/// Privileges: root, or any user holding exactly these capabilities: attach CAP_BPF,
/// CAP_NET_ADMIN and CAP_PERFMON; apply CAP_BPF; show, stats, get none; detach none, but
/// CAP_NET_ADMIN for a data path with a slow path (the default) or in netlink mode; check
/// and object none; apply --config (a
/// data path attached by hand with tc) root. The pins and state files belong to the user
/// who attached (mode 0600): only that user, or root, runs the other verbs. A user other
/// than root needs a state directory it can write and a pin directory under a bpffs
/// directory it can write (`install -d -m 0700 -o USER /sys/fs/bpf/USER` as root).
/// See docs/route.md.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bpffs directory the data path is pinned under.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "PKTPATH_PIN_DIR",
        default_value = DEFAULT_PIN_DIR
    )]
    pin_dir: PathBuf,

    #[command(flatten)]
    wait: WaitArg,

    #[command(flatten)]
    state: super::state_dir::StateDirArg,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Check(CheckArgs),
    Schema(SchemaArgs),
    Attach(AttachArgs),
    Apply(ApplyArgs),
    /// Print the policy set last applied, in priority order (as `route check` prints it).
    #[command(
        after_help = "Examples:\n  pktpath route show\n  pktpath route show --json | jq '.policies[].id'"
    )]
    Show(OutputArgs),
    /// Print packets and bytes per policy (priority order, summed over CPUs) and per
    /// interface passed / forwarded / dropped / errors.
    #[command(
        after_help = "Examples:\n  pktpath route stats\n  watch -n1 pktpath route stats\n  pktpath route stats --json | jq '.policies[] | {id, packets}'"
    )]
    Stats(OutputArgs),
    /// Detach the data path from every interface and remove its pins and state files.
    #[command(
        after_help = "Examples:\n  pktpath route detach\n  pktpath route --pin-dir /sys/fs/bpf/lab detach --json"
    )]
    Detach(OutputArgs),
    Get(GetArgs),
    Object(ObjectArgs),
}

/// Write the data path's eBPF object, for attaching it by hand with iproute2's `tc`
/// instead of `route attach`. Its maps are pinned by name where tc pins them
/// (/sys/fs/bpf/tc/globals/): every interface it is attached to shares them, and
/// `route --pin-dir /sys/fs/bpf/tc/globals apply --config FILE RUNTIME` fills them.
///
/// The program is the first of section `classifier` (tc's default: `sec classifier` may be
/// left out). Attach it with direct-action: its return codes are TC actions.
///
/// Examples:
///   pktpath route object -o pktpath.o
///   tc qdisc add dev eth1 clsact
///   tc filter add dev eth1 ingress bpf direct-action obj pktpath.o sec classifier
///   pktpath route --pin-dir /sys/fs/bpf/tc/globals apply --config configuration.json runtimeConfiguration.json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct ObjectArgs {
    /// Write the object to FILE (replacing it) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Say what the attached data path does with one packet, in the spirit of `ip route get`:
/// a frame is synthesized and run through the pinned program (BPF_PROG_TEST_RUN). Prints
/// the policy that matched (or none), the action, egress interface, next hop, verdict and
/// the rewritten header fields. The test run counts like one packet in `route stats`.
///
/// The packet is never a fragment. Without `proto` it is an ICMP echo request (ICMPv6 for
/// IPv6); `proto` takes a name or a number 0-255, but not, for IPv6, an extension header
/// (0 hop-by-hop, 43 routing, 44 fragment, 51 authentication, 60 destination options): the
/// data path reads past those to the protocol after them. A TCP, UDP or SCTP packet carries
/// the `sport` and `dport` given (0-65535), 40000 for one not given.
///
/// Examples:
///   pktpath route get iif to-client from 10.1.0.2 to 10.9.0.1 proto udp dport 53
///   pktpath route get iif to-client from fd01::2 to fd09::1 proto tcp sport 40000 dport 443 --json
///   pktpath route get --hook xdp iif to-client from 10.1.0.2 to 10.9.0.1 proto udp dport 53
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct GetArgs {
    /// `iif IF from SRC to DST` and optionally `proto P`, `sport N`, `dport N`, `dscp N`,
    /// `mark N`.
    #[arg(value_name = "KEY VALUE", num_args = 1.., required = true)]
    words: Vec<String>,
    /// `xdp`: run the XDP program (a data path attached with --hook xdp), then the TC
    /// program when XDP passes the packet on; XDP sees no mark.
    #[arg(long, value_enum, value_name = "HOOK", default_value = "tc")]
    hook: HookArg,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Load the data path and attach it to every interface and direction the static
/// configuration names, in the current network namespace; pin it under --pin-dir so it
/// keeps forwarding after pktpath exits. Starts with no policies (every packet passes).
///
/// TC mode: TCX links where the kernel has TCX (probed), otherwise a clsact qdisc with a
/// cls_bpf direct-action filter per hook; --tc-mode forces one. Installs the slow path
/// (configuration.json's `slow_path`): per next hop a routing table with a route to it and
/// an `ip rule fwmark ... lookup TABLE`, and per table of `tables` a rule that looks it
/// up, so packets a `forward` or `lookup_table` policy matched that the fast path hands
/// to the kernel stack are forwarded by the stack as the policy says.
/// Detach removes exactly what attach created (a clsact qdisc only if attach added it).
///
/// Idempotent: attaching the same configuration again changes nothing. A different
/// configuration, or a --tc-mode other than the running one, is refused until
/// `pktpath route detach`.
///
/// In a named network namespace run `nsenter --net=/run/netns/NAME pktpath route attach ...`,
/// not `ip netns exec`: that gives the command a private bpffs, and the pins (so the data
/// path) would vanish when it exits.
///
/// Examples:
///   pktpath route attach --config configuration.json
///   pktpath route --pin-dir /sys/fs/bpf/lab attach --config configuration.json --json
///   pktpath route attach --config configuration.json --hook xdp --xdp-mode native
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct AttachArgs {
    /// The static configuration (interfaces, next hops, tables).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How to hook into TC: `auto` probes the kernel and takes TCX when it works.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    tc_mode: TcModeArg,
    /// Which hook runs the fast path: `xdp` adds XDP in front of TC on each ingress
    /// interface (docs/route.md#xdp).
    #[arg(long, value_enum, value_name = "HOOK", default_value = "tc")]
    hook: HookArg,
    /// With --hook xdp: native (in the driver), generic, or auto (native where the driver
    /// has it). Default: auto.
    #[arg(long, value_enum, value_name = "MODE")]
    xdp_mode: Option<XdpModeArg>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Validate runtimeConfiguration.json against the attached configuration and swap it in
/// atomically: each packet sees the old policy set or the new one, never a mix. A rejected
/// file leaves the running set untouched (exit 1).
///
/// With --config, the data path is one attached by hand with tc (the object of `pktpath
/// route object`; --pin-dir where tc pinned its maps, /sys/fs/bpf/tc/globals): the first
/// apply takes it in with that static configuration and fills its next hops; the next
/// ones need not repeat it. Warns about configured hooks that run no filter of the object.
///
/// Examples:
///   pktpath route apply runtimeConfiguration.json
///   pktpath route apply runtimeConfiguration.json --dry-run
///   pktpath route --pin-dir /sys/fs/bpf/tc/globals apply --config configuration.json runtimeConfiguration.json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct ApplyArgs {
    /// The policy set.
    #[arg(value_name = "RUNTIME_CONFIGURATION")]
    runtime: PathBuf,
    /// The static configuration of a data path attached by hand with tc.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only print what would change (policies added, removed, changed).
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Output options.
#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Validate configuration.json (and runtimeConfiguration.json), compile the policies as
/// `route apply` would, and print what would be applied.
///
/// Prints the interfaces, next hops, tables, the policies in priority order, and the
/// classifier's rules, trees and table size. The interfaces need not exist: stand-ins take
/// their place (with the real ones the tables' size may differ slightly).
///
/// Examples:
///   pktpath route check --config examples/configuration.json
///   pktpath route check --config examples/configuration.json examples/runtimeConfiguration.json
///   pktpath route check --config configuration.json runtime.json --json | jq '.policies[].id'
///   pktpath route check --config configuration.json runtime.json --json | jq .classifier
///
/// Exit status: 0 when the files are valid; 1 with one line on stderr naming the file, line,
/// column and field when they are not, or with what `route apply` would say when the data
/// path cannot hold the policy set. Needs no privileges and touches nothing.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct CheckArgs {
    /// The static configuration (interfaces, next hops, tables).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The runtime configuration (policies), checked against --config.
    #[arg(value_name = "RUNTIME_CONFIGURATION")]
    runtime: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Print the JSON Schema of the configuration files.
///
/// Without an argument prints one object holding both schemas, keyed by file name; with
/// `configuration` or `runtime` prints that schema alone, exactly as committed under
/// schema/ in the source tree.
///
/// Examples:
///   pktpath route schema runtime > runtimeConfiguration.schema.json
///   pktpath route schema | jq 'keys'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct SchemaArgs {
    /// Which file's schema.
    #[arg(value_enum)]
    which: Option<Which>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Which {
    /// configuration.json
    Configuration,
    /// runtimeConfiguration.json
    Runtime,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let layout = args.state.layout(&args.pin_dir);
    match args.command {
        Command::Check(args) => check(args),
        Command::Schema(args) => schema(args),
        Command::Attach(a) => attach_cmd(&layout, args.wait.wait, a),
        Command::Apply(a) => apply_cmd(&layout, args.wait.wait, a),
        Command::Show(a) => show_cmd(&layout, a),
        Command::Stats(a) => stats_cmd(&layout, a),
        Command::Detach(a) => detach_cmd(&layout, args.wait.wait, a),
        Command::Get(a) => get_cmd(&layout, a),
        Command::Object(a) => object_cmd(a),
    }
}

fn object_cmd(args: ObjectArgs) -> anyhow::Result<u8> {
    let (bytes, maps) = object::tc_object()?;
    let Some(path) = args.output else {
        let mut out = std::io::stdout().lock();
        if std::io::IsTerminal::is_terminal(&out) {
            anyhow::bail!("not writing a binary object to a terminal: give -o FILE or redirect");
        }
        out.write_all(&bytes)?;
        out.flush()?;
        return Ok(exit::OK);
    };
    std::fs::write(&path, &bytes).with_context(|| format!("writing {} failed", path.display()))?;
    eprintln!(
        "wrote {} ({} bytes, {maps} maps pinned by name under {}); attach it with:\n  tc qdisc add dev IFACE clsact\n  tc filter add dev IFACE ingress bpf direct-action obj {} sec {DATAPATH_SECTION}",
        path.display(),
        bytes.len(),
        object::TC_PIN_DIR,
        path.display(),
    );
    Ok(exit::OK)
}

/// What `command` needs before it touches anything: its capabilities (exactly those, see
/// docs/privileges.md) and access to the data path's pins and state files.
fn require(command: access::Command, layout: &Layout) -> anyhow::Result<()> {
    command.require(&Privileges::current())?;
    access::check_files(command, layout)?;
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Takes the writer lock, and says on stderr what was done about a writer killed before it
/// finished.
fn writer(layout: &Layout, wait: Duration) -> anyhow::Result<Writer> {
    let writer = Writer::lock(layout, wait)?;
    for line in writer.recovered() {
        eprintln!("pktpath: {line}");
    }
    Ok(writer)
}

fn attach_cmd(layout: &Layout, wait: Duration, args: AttachArgs) -> anyhow::Result<u8> {
    require(access::Command::RouteAttach, layout)?;
    let mode = args.tc_mode.mode();
    let xdp = args.hook.xdp(args.xdp_mode)?;
    let source = Source::read(&args.config)?;
    let writer = writer(layout, wait)?;
    let report = attach::attach_with(&writer, &source, mode, xdp).map_err(|e| {
        if super::attach_kernel_error(&e) {
            super::with_doctor_verdict(e.into(), &["route"])
        } else {
            e.into()
        }
    })?;
    for w in &report.warnings {
        eprintln!("pktpath: warning: {w}");
    }
    let hooks = hooks_text(report.mode, &report.xdp);
    if args.json {
        print_json(&report)?;
    } else if report.attached.is_empty() {
        println!(
            "already attached at {} ({hooks}, {}): nothing changed",
            report.pin_dir,
            report.unchanged.join(", ")
        );
    } else {
        println!(
            "attached at {} ({hooks}): {}",
            report.pin_dir,
            report.attached.join(", ")
        );
    }
    Ok(exit::OK)
}

/// `tcx`, or `tcx; xdp native on eth1, generic on eth2`.
fn hooks_text(mode: attach::TcMode, xdp: &[attach::XdpHook]) -> String {
    if xdp.is_empty() {
        return mode.to_string();
    }
    let on: Vec<String> = xdp
        .iter()
        .map(|h| format!("{} on {}", h.mode.name(), h.interface))
        .collect();
    format!("{mode}; xdp {}", on.join(", "))
}

fn apply_cmd(layout: &Layout, wait: Duration, args: ApplyArgs) -> anyhow::Result<u8> {
    require(access::Command::RouteApply, layout)?;
    // A dry run only reads; an apply holds the lock from reading the running set on.
    let writer = if args.dry_run {
        None
    } else {
        Some(writer(layout, wait)?)
    };
    if let Some(config) = &args.config {
        let Some(writer) = &writer else {
            anyhow::bail!("--dry-run with --config: take the data path in with an apply first");
        };
        // A file that does not fit the configuration is refused before anything changes.
        let topology = Topology::from_source(&Source::read(config)?)?;
        PolicySet::from_source(&topology, &Source::read(&args.runtime)?)?;
        let adopted = attach::adopt(writer, config)?;
        if adopted.new {
            eprintln!(
                "pktpath: took in the data path attached with tc at {}",
                layout.pin_dir.display()
            );
        }
        for hook in adopted.unhooked {
            eprintln!(
                "pktpath: warning: no filter of the data path object on {hook} (tc filter add dev IFACE ingress|egress bpf direct-action obj FILE)"
            );
        }
    }
    let mut attached = attach::open(layout)?;
    let source = Source::read(&args.runtime)?;
    let set = PolicySet::from_source(&attached.topology, &source)?;
    let diff = Diff::between(&attached.active()?.set, &set);
    if args.dry_run {
        if args.json {
            print_json(&serde_json::json!({ "dry_run": true, "changes": diff }))?;
        } else {
            print_diff(&diff);
        }
        return Ok(exit::OK);
    }
    let writer = writer.expect("taken unless a dry run");
    let report = attached.apply(&writer, &set, &source)?;
    if !report.slow_path_restored.is_empty() {
        let tables: Vec<String> = report
            .slow_path_restored
            .iter()
            .map(u32::to_string)
            .collect();
        eprintln!(
            "pktpath: put back the slow path's routes in tables {} (an interface they go through was deleted and is back)",
            tables.join(", ")
        );
    }
    for c in &report.xdp_egress_changed {
        let level = if c.takes_xdp { "" } else { "warning: " };
        eprintln!("pktpath: {level}{}", c.describe());
    }
    if args.json {
        print_json(&serde_json::json!({ "applied": report, "changes": diff }))?;
    } else {
        println!(
            "applied {}: {} policies ({} added, {} removed, {} changed), {} rules in {} trees ({} KiB in the kernel), generation {}",
            args.runtime.display(),
            report.policies,
            diff.added.len(),
            diff.removed.len(),
            diff.changed.len(),
            report.rules,
            report.trees,
            report.table_bytes / 1024,
            report.generation
        );
    }
    Ok(exit::OK)
}

fn print_diff(diff: &Diff) {
    if diff.is_empty() {
        println!("no change: the running policy set is the same");
        return;
    }
    for p in &diff.added {
        println!(
            "+ {:<8} {:<24} {}  ->  {}",
            p.priority, p.id, p.matches, p.action
        );
    }
    for p in &diff.removed {
        println!(
            "- {:<8} {:<24} {}  ->  {}",
            p.priority, p.id, p.matches, p.action
        );
    }
    for c in &diff.changed {
        let (b, a) = (&c.before, &c.after);
        println!(
            "~ {:<8} {:<24} {}  ->  {}",
            b.priority, b.id, b.matches, b.action
        );
        println!(
            "  {:<8} {:<24} {}  ->  {}",
            a.priority, "", a.matches, a.action
        );
    }
    println!(
        "{} added, {} removed, {} changed, {} unchanged (dry run: nothing applied)",
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len(),
        diff.unchanged.len()
    );
}

fn show_cmd(layout: &Layout, args: OutputArgs) -> anyhow::Result<u8> {
    require(access::Command::RouteShow, layout)?;
    let attached = attach::open(layout)?;
    let active = attached.active()?;
    let set = active.set;
    let runtime = active.source.map(|s| s.name().to_owned());
    let summary = Summary::new(&set, runtime.as_deref());
    let hooks = attach::hooks(layout)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            hooks: &'a attach::Hooks,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        let shown = Shown {
            hooks: &hooks,
            summary: &summary,
        };
        serde_json::to_writer_pretty(&mut out, &shown)?;
        writeln!(out)?;
    } else {
        let xdp = hooks.xdp.as_ref().map_or(&[][..], |x| &x.hooks[..]);
        writeln!(out, "hooks: {}", hooks_text(hooks.tc_mode, xdp))?;
        print_check(&mut out, &set, &summary, None)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

fn stats_cmd(layout: &Layout, args: OutputArgs) -> anyhow::Result<u8> {
    require(access::Command::RouteStats, layout)?;
    let attached = attach::open(layout)?;
    let stats = attached.stats()?;
    if args.json {
        print_json(&stats)?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    print_stats(&mut out, &stats)?;
    out.flush()?;
    Ok(exit::OK)
}

/// The `route stats` tables: policies in priority order, then interfaces.
pub(crate) fn print_stats(
    out: &mut impl std::io::Write,
    stats: &pktpath_core::route::datapath::attach::Stats,
) -> std::io::Result<()> {
    table(
        out,
        "policies (priority order)",
        &["PRIORITY", "ID", "PACKETS", "BYTES"],
        stats
            .policies
            .iter()
            .map(|p| {
                vec![
                    p.priority.to_string(),
                    p.id.clone(),
                    p.packets.to_string(),
                    p.bytes.to_string(),
                ]
            })
            .collect(),
    )?;
    table(
        out,
        "interfaces (packets)",
        &[
            "NAME",
            "PASSED",
            "FORWARDED",
            "DROPPED",
            "ERRORS",
            "INVALID",
        ],
        stats
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.passed_packets.to_string(),
                    i.forwarded_packets.to_string(),
                    i.dropped_packets.to_string(),
                    i.error_packets.to_string(),
                    i.invalid_packets.to_string(),
                ]
            })
            .collect(),
    )?;
    Ok(())
}

fn detach_cmd(layout: &Layout, wait: Duration, args: OutputArgs) -> anyhow::Result<u8> {
    require(access::Command::RouteDetach, layout)?;
    let report = attach::detach(&writer(layout, wait)?).map_err(detach_error)?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "detached ({}) from {} and removed {} pins from {}",
            report.mode,
            report.links.join(", "),
            report.pins,
            report.pin_dir
        );
        if !report.clsact_removed.is_empty() {
            println!(
                "removed the clsact qdisc attach added on {}",
                report.clsact_removed.join(", ")
            );
        }
        let slow = report.slow_path;
        if slow.rules + slow.routes > 0 {
            let tables: Vec<String> = report.slow_path_tables.iter().map(u32::to_string).collect();
            println!(
                "removed the slow path's {} ip rules and {} routes (tables {})",
                slow.rules,
                slow.routes,
                tables.join(", ")
            );
        }
    }
    Ok(exit::OK)
}

/// A detach refused (EPERM) for want of CAP_NET_ADMIN: a data path with a slow path has ip
/// rules and routes to remove, one attached in netlink mode tc filters (TCX links need no
/// capability to detach).
fn detach_error(e: attach::AttachError) -> anyhow::Error {
    let eperm = {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut found = false;
        while let Some(c) = cur {
            if c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
            {
                found = true;
            }
            cur = c.source();
        }
        found
    };
    match Privileges::current().require(
        access::DETACH_NETLINK_NEEDS,
        "route detach removes the tc filters of a data path attached in netlink mode, and the ip rules and routes of its slow path",
    ) {
        Err(missing) if eperm => {
            log::info!("{e}");
            missing.into()
        }
        _ => e.into(),
    }
}

/// `route check --json`: the summary and what the classifier made of the policies.
#[derive(serde::Serialize)]
struct CheckReport<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    classifier: ClassifierSummary,
    /// Policies the XDP hook (`attach --hook xdp`) leaves to TC, and why.
    xdp_fallback: &'a [xdp_rules::Fallback],
}

/// What `route check` checks: the files parse and `route apply` would compile the set on
/// a freshly attached data path (with stand-ins for the interfaces).
pub(super) fn validate(
    config: &std::path::Path,
    runtime: Option<&std::path::Path>,
) -> anyhow::Result<(PolicySet, ClassifierSummary)> {
    let topology = Topology::load(config)?;
    let set = match runtime {
        Some(path) => PolicySet::load(&topology, path)?,
        None => PolicySet::empty(topology),
    };
    // A set `route apply` would refuse fails here with its error.
    let plan = Slots::default().plan(&set)?;
    let ifaces = Interfaces::placeholder(&set.topology);
    let classifier = policy::compile_set(&set, &ifaces, &plan.slots)?.summary();
    Ok((set, classifier))
}

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let (set, classifier) = validate(&args.config, args.runtime.as_deref())?;
    let runtime_name = args.runtime.as_ref().map(|p| p.display().to_string());
    let summary = Summary::new(&set, runtime_name.as_deref());
    let plan = Slots::default().plan(&set)?;
    let ifaces = Interfaces::placeholder(&set.topology);
    let rules = policy::rules(&set, &ifaces, &plan.slots)?;
    let fallback = xdp_rules::fallbacks(&set, &rules, &plan.slots);
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = CheckReport {
            summary: &summary,
            classifier,
            xdp_fallback: &fallback,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_check(&mut out, &set, &summary, Some(&classifier))?;
        if summary.runtime_configuration.is_some() {
            print_xdp_fallback(&mut out, set.policies.len(), &fallback)?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Which policies XDP decides and which it leaves to TC (docs/route.md#xdp).
fn print_xdp_fallback(
    out: &mut impl std::io::Write,
    policies: usize,
    fallback: &[xdp_rules::Fallback],
) -> std::io::Result<()> {
    writeln!(
        out,
        "with --hook xdp: {} of {policies} policies decided at XDP, {} left to TC{}",
        policies - fallback.len(),
        fallback.len(),
        if fallback.is_empty() { "" } else { ":" }
    )?;
    for f in fallback {
        writeln!(out, "  {}: {}", f.id, f.reason)?;
    }
    Ok(())
}

/// The `route check` text (also `route show`'s, which has no `classifier`).
fn print_check(
    out: &mut impl std::io::Write,
    set: &PolicySet,
    summary: &Summary,
    classifier: Option<&ClassifierSummary>,
) -> std::io::Result<()> {
    let topology = &set.topology;
    writeln!(
        out,
        "{}: valid: {} interfaces, {} next hops, {} tables",
        summary.configuration,
        summary.interfaces.len(),
        summary.next_hops.len(),
        summary.tables.len()
    )?;
    if let Some(runtime) = &summary.runtime_configuration {
        writeln!(out, "{runtime}: valid: {} policies", summary.policies.len())?;
        if let Some(c) = classifier {
            writeln!(
                out,
                "classifier: {} rules in {} trees ({} KiB of tables, {} KiB in the kernel)",
                c.rules,
                c.trees,
                c.arena_bytes.div_ceil(1024),
                c.table_bytes / 1024
            )?;
        }
    }

    writeln!(out)?;
    let yes = |b: bool| if b { "yes" } else { "no" };
    table(
        out,
        "interfaces",
        &["NAME", "INGRESS", "EGRESS"],
        summary
            .interfaces
            .iter()
            .map(|i| vec![i.name.clone(), yes(i.ingress).into(), yes(i.egress).into()])
            .collect(),
    )?;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    table(
        out,
        "next hops",
        &["NAME", "INTERFACE", "GATEWAY4", "GATEWAY6", "MAC"],
        summary
            .next_hops
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.interface.clone(),
                    or_dash(h.gateway4.map(|g| g.to_string())),
                    or_dash(h.gateway6.map(|g| g.to_string())),
                    or_dash(h.mac.map(|m| m.to_string())),
                ]
            })
            .collect(),
    )?;
    table(
        out,
        "tables",
        &["NAME", "ID"],
        summary
            .tables
            .iter()
            .map(|t| vec![t.name.clone(), t.id.to_string()])
            .collect(),
    )?;
    if summary.runtime_configuration.is_some() {
        table(
            out,
            "policies (tried in this order; a packet no policy matches is passed)",
            &["PRIORITY", "ID", "MATCH", "ACTION"],
            set.policies
                .iter()
                .map(|p| {
                    vec![
                        p.priority.to_string(),
                        p.id.clone(),
                        summary::match_text(topology, &p.matches),
                        summary::action_text(topology, &p.action),
                    ]
                })
                .collect(),
        )?;
    }
    Ok(())
}

/// A titled table with left-aligned columns; `(none)` when empty.
fn table(
    out: &mut impl std::io::Write,
    title: &str,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> std::io::Result<()> {
    writeln!(out, "{}:", title)?;
    if rows.is_empty() {
        writeln!(out, "  (none)")?;
        writeln!(out)?;
        return Ok(());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::from("  ");
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    writeln!(out)
}

fn schema(args: SchemaArgs) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match args.which {
        Some(which) => {
            let kind = match which {
                Which::Configuration => SchemaKind::Configuration,
                Which::Runtime => SchemaKind::Runtime,
            };
            out.write_all(kind.render().as_bytes())?;
        }
        None => {
            let both = serde_json::json!({
                "configuration.json": SchemaKind::Configuration.schema(),
                "runtimeConfiguration.json": SchemaKind::Runtime.schema(),
            });
            serde_json::to_writer_pretty(&mut out, &both)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Port of a TCP, UDP or SCTP packet `route get` synthesizes where none is given.
const DEFAULT_PORT: u16 = 40000;

/// The IPv6 extension headers the data path reads past to find the protocol, by next
/// header number.
const IPV6_EXTENSION_HEADERS: [(u8, &str); 5] = [
    (0, "hop-by-hop options"),
    (43, "routing"),
    (44, "fragment"),
    (51, "authentication"),
    (60, "destination options"),
];

/// The packet `route get` asks about.
/// The input interface, the packet's fields and its TTL / hop limit.
fn parse_get(words: &[String]) -> anyhow::Result<(String, PacketFields<Ifindex>, u8)> {
    use anyhow::{Context as _, bail};
    if !words.len().is_multiple_of(2) {
        bail!(
            "`{}` has no value: write `route get iif IF from SRC to DST [proto P] [sport N] [dport N] [dscp N] [mark N] [ttl N]`",
            words[words.len() - 1]
        );
    }
    let (mut iif, mut src, mut dst) = (None, None, None);
    let (mut proto, mut sport, mut dport) = (None, None, None);
    let (mut dscp, mut mark, mut ttl) = (0, 0, 64);
    for pair in words.chunks(2) {
        let (key, value) = (pair[0].as_str(), pair[1].as_str());
        let num = |max: u64| -> anyhow::Result<u64> {
            let n: u64 = value
                .parse()
                .with_context(|| format!("{key} {value}: not a number"))?;
            if n > max {
                bail!("{key} {value}: at most {max}");
            }
            Ok(n)
        };
        let addr = || {
            value
                .parse::<IpAddr>()
                .with_context(|| format!("{key} {value}: not an IP address"))
        };
        match key {
            "iif" => iif = Some(value.to_owned()),
            "from" => src = Some(addr()?),
            "to" => dst = Some(addr()?),
            "proto" => {
                proto = Some(
                    value
                        .parse::<Protocol>()
                        .map_err(|e| anyhow::anyhow!("proto {value}: {e}"))?
                        .0,
                )
            }
            "sport" => sport = Some(num(65535)? as u16),
            "dport" => dport = Some(num(65535)? as u16),
            "dscp" => dscp = num(63)? as u8,
            "mark" => mark = num(u32::MAX as u64)? as u32,
            "ttl" => ttl = num(255)? as u8,
            other => {
                bail!(
                    "unknown key `{other}`: use iif, from, to, proto, sport, dport, dscp, mark or ttl"
                )
            }
        }
    }
    let (Some(iif), Some(src), Some(dst)) = (iif, src, dst) else {
        bail!("`route get` needs iif IF, from SRC and to DST");
    };
    if src.is_ipv4() != dst.is_ipv4() {
        bail!("from {src} and to {dst} are of different families");
    }
    let v4 = src.is_ipv4();
    let proto = match proto {
        // Like `ip route get`: an ICMP echo request.
        None if v4 => 1,
        None => 58,
        Some(p) if !v4 => {
            if let Some((_, name)) = IPV6_EXTENSION_HEADERS.iter().find(|(n, _)| *n == p) {
                bail!(
                    "proto {p} is the IPv6 {name} extension header, not a protocol a packet is classified by: the data path reads past extension headers to the header after them; give that protocol (tcp, udp, sctp, icmpv6 or its number), or leave out proto for ICMPv6"
                );
            }
            p
        }
        Some(p) => p,
    };
    let carries_ports = matches!(proto, 6 | 17 | 132);
    if !carries_ports && (sport.is_some() || dport.is_some()) {
        bail!("sport/dport need proto tcp, udp or sctp");
    }
    let port = |given: Option<u16>| carries_ports.then(|| given.unwrap_or(DEFAULT_PORT));
    let fields = PacketFields {
        iif: 0,
        src,
        dst,
        proto,
        sport: port(sport),
        dport: port(dport),
        dscp,
        mark,
    };
    Ok((iif, fields, ttl))
}

fn get_cmd(layout: &Layout, args: GetArgs) -> anyhow::Result<u8> {
    let (iif, fields, ttl) = parse_get(&args.words)?;
    require(access::Command::RouteGet, layout)?;
    let attached = attach::open(layout)?;
    if args.hook == HookArg::Xdp {
        let e = attached.explain_xdp(&iif, &fields, ttl)?;
        if args.json {
            print_json(&e)?;
            return Ok(exit::OK);
        }
        print_explanation("xdp: ", &e.xdp);
        if let Some(tc) = &e.tc {
            print_explanation("tc:  ", tc);
        }
        return Ok(exit::OK);
    }
    let e = attached.explain(&iif, &fields, ttl)?;
    if args.json {
        print_json(&e)?;
        return Ok(exit::OK);
    }
    print_explanation("", &e);
    Ok(exit::OK)
}

/// `route get`'s two lines for one program's decision, the first after `prefix`.
fn print_explanation(prefix: &str, e: &pktpath_core::route::datapath::get::Explanation) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let via_stack = e
        .via_stack
        .as_ref()
        .map(|v| {
            let to = match &v.lookup_table {
                Some(name) => format!("lookup table {name}: table {}", v.table),
                None => format!("next hop {}: table {}", or_dash(&v.next_hop), v.table),
            };
            format!(
                ", via stack following policy {} ({to}, mark {:#x}/{:#x})",
                or_dash(&v.policy),
                v.mark,
                v.mask
            )
        })
        .unwrap_or_default();
    println!(
        "{prefix}policy {} action {} egress {} next_hop {} verdict {}{via_stack}",
        e.policy
            .as_ref()
            .map(|id| format!("{id} (priority {})", e.priority.unwrap_or_default()))
            .unwrap_or_else(|| "none".to_owned()),
        e.action,
        or_dash(&e.egress),
        or_dash(&e.next_hop),
        e.verdict
    );
    let r = &e.rewritten;
    println!(
        "{}    ttl {} dscp {} mark {} dst_mac {} src_mac {}",
        " ".repeat(prefix.len()),
        r.ttl,
        r.dscp,
        r.mark,
        r.dst_mac,
        r.src_mac
    );
}

#[cfg(test)]
mod tests {
    use pktpath_common::route::{FAMILY_V4, FAMILY_V6};

    use super::*;

    fn get(words: &str) -> anyhow::Result<PacketFields<Ifindex>> {
        let words: Vec<String> = words.split(' ').map(str::to_owned).collect();
        parse_get(&words).map(|(iif, fields, _)| {
            assert_eq!(iif, "lan");
            fields
        })
    }

    #[track_caller]
    fn refused(words: &str) -> String {
        match get(words) {
            Ok(p) => panic!("`{words}` should be refused, got {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn without_proto_the_packet_is_an_echo_request_of_its_family() {
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1").unwrap();
        assert_eq!(
            (p.family(), p.proto, p.sport, p.dport),
            (FAMILY_V4, 1, None, None)
        );
        assert_eq!(p.src, IpAddr::from([10, 1, 0, 2]));
        let p = get("iif lan from fd01::2 to fd09::1").unwrap();
        assert_eq!((p.family(), p.proto), (FAMILY_V6, 58));
        assert_eq!(p.dst, "fd09::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ttl_defaults_to_64_and_takes_0_to_255() {
        let ttl = |w: &str| {
            let words: Vec<String> = w.split(' ').map(str::to_owned).collect();
            parse_get(&words).map(|(_, _, ttl)| ttl)
        };
        assert_eq!(ttl("iif lan from 10.1.0.2 to 10.9.0.1").unwrap(), 64);
        assert_eq!(ttl("iif lan from 10.1.0.2 to 10.9.0.1 ttl 1").unwrap(), 1);
        assert_eq!(ttl("iif lan from fd01::2 to fd09::1 ttl 0").unwrap(), 0);
        let e = ttl("iif lan from 10.1.0.2 to 10.9.0.1 ttl 256").unwrap_err();
        assert!(e.to_string().contains("ttl 256: at most 255"), "{e}");
    }

    #[test]
    fn proto_0_stays_0_for_ipv4() {
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1 proto 0").unwrap();
        assert_eq!(p.proto, 0);
        assert!(!p.is_fragment() && p.ports().is_none(), "{p:?}");
    }

    #[test]
    fn ipv6_extension_headers_are_refused_as_proto() {
        let e = refused("iif lan from fd01::2 to fd09::1 proto 0");
        assert!(
            e.contains("proto 0 is the IPv6 hop-by-hop options extension header"),
            "{e}"
        );
        assert!(e.contains("leave out proto for ICMPv6"), "{e}");
        for (n, name) in [
            (43, "routing"),
            (44, "fragment"),
            (51, "authentication"),
            (60, "destination options"),
        ] {
            let e = refused(&format!("iif lan from fd01::2 to fd09::1 proto {n}"));
            assert!(
                e.contains(&format!("proto {n} is the IPv6 {name} extension header")),
                "{e}"
            );
        }
        let e = refused("iif lan from fd01::2 to fd09::1 proto ah");
        assert!(e.contains("proto 51 is the IPv6 authentication"), "{e}");
        // IPv4 has no extension headers: the same numbers are protocols there.
        for n in [0, 43, 44, 51, 60] {
            let p = get(&format!("iif lan from 10.1.0.2 to 10.9.0.1 proto {n}")).unwrap();
            assert_eq!(p.proto, n);
        }
        // Upper-layer protocols and "no next header" are what IPv6 packets are classified by.
        for (words, proto) in [("proto tcp", 6), ("proto icmpv6", 58), ("proto 59", 59)] {
            let p = get(&format!("iif lan from fd01::2 to fd09::1 {words}")).unwrap();
            assert_eq!(p.proto, proto, "{words}");
        }
    }

    #[test]
    fn ports_given_are_kept_even_0_and_absent_ones_are_40000() {
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1 proto udp sport 0").unwrap();
        assert_eq!((p.proto, p.sport, p.dport), (17, Some(0), Some(40000)));
        let p = get("iif lan from fd01::2 to fd09::1 proto tcp dport 0").unwrap();
        assert_eq!((p.proto, p.sport, p.dport), (6, Some(40000), Some(0)));
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1 proto sctp sport 0 dport 0").unwrap();
        assert_eq!(p.ports(), Some((0, 0)));
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1 proto udp").unwrap();
        assert_eq!(p.ports(), Some((40000, 40000)));
    }

    #[test]
    fn ports_need_a_protocol_that_carries_them() {
        for words in [
            "iif lan from 10.1.0.2 to 10.9.0.1 sport 0",
            "iif lan from 10.1.0.2 to 10.9.0.1 proto 0 dport 0",
            "iif lan from fd01::2 to fd09::1 proto icmpv6 dport 53",
        ] {
            let e = refused(words);
            assert!(
                e.contains("sport/dport need proto tcp, udp or sctp"),
                "{words}: {e}"
            );
        }
    }

    #[test]
    fn dscp_mark_and_malformed_words() {
        let p = get("iif lan from 10.1.0.2 to 10.9.0.1 dscp 46 mark 4294967295").unwrap();
        assert_eq!((p.dscp, p.mark), (46, u32::MAX));
        assert!(refused("iif lan from 10.1.0.2 to 10.9.0.1 dscp 64").contains("at most 63"));
        assert!(refused("iif lan from 10.1.0.2 to fd09::1").contains("different families"));
        assert!(refused("iif lan from 10.1.0.2").contains("needs iif IF, from SRC and to DST"));
        assert!(refused("iif lan from 10.1.0.2 to").contains("has no value"));
    }
}
