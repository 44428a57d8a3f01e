//! `pktpath agent`: the data path as a long-running service with live reload and
//! Prometheus metrics (the loop lives in `pktpath_core::agent`).

use std::{net::SocketAddr, path::PathBuf};

use pktpath_core::{
    access,
    agent::{self, Options},
    route::datapath::attach::DEFAULT_PIN_DIR,
    sys::caps::Privileges,
};

use super::writer_args::{TcModeArg, WaitArg};
use crate::exit;

/// Run the data path as a service: attach (or adopt the data path already attached with
/// the same configuration), apply the runtime configuration, then re-apply it whenever
/// either file changes (inotify on their directories) or on SIGHUP. A file that cannot be
/// applied is logged (`file:line:col: field: ...`, as `route apply` says it), counted in
/// pktpath_reload_failures_total, and the running policy set stays.
///
/// Each reload takes the data path's writer lock for its own duration only, so
/// `pktpath route apply/show/stats/...` work beside the agent. SIGTERM or SIGINT stop the
/// agent and leave the data path forwarding (pins stay; a restarted agent adopts it and no
/// counter is lost), unless --detach-on-exit. Logs: one line per event on stderr (info
/// level unless -v or RUST_LOG say otherwise).
///
/// With --metrics-listen: /metrics (Prometheus text format, or OpenMetrics when asked for),
/// /healthz (the process runs), /readyz (attached, and the last reload succeeded).
///
/// Kernel drops: unless --no-drop-monitor, a program on skb:kfree_skb counts every packet
/// the kernel drops, per CPU in the kernel, by drop reason, interface and network
/// namespace (pktpath_kernel_drops_total); detached when the agent stops.
///
/// Hop latency: with --hop-latency, two programs (netif_receive_skb, net_dev_start_xmit)
/// time each packet from its receive on one of the configured interfaces to its transmit
/// on one of them and count it, per CPU in the kernel, in log-scale buckets by input and
/// output interface (the pktpath_hop_latency_seconds histograms); off by default.
///
/// Examples:
///   pktpath agent --config /etc/pktpath/configuration.json --runtime /etc/pktpath/runtimeConfiguration.json
///   pktpath agent --config c.json --runtime r.json --metrics-listen 127.0.0.1:9471
///   kill -HUP $(pidof pktpath)      # re-apply now
///
/// Needs what `route attach` needs: CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, a writable
/// state directory (--state-dir) and pin directory parent.
///
/// Exit status: 0 after SIGTERM/SIGINT; 1 when the data path, the drop monitor or the
/// hop-latency programs cannot be attached or the metrics address cannot be bound; 3
/// without those capabilities.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The static configuration (interfaces, next hops, tables).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The runtime configuration (policies), re-applied when it changes.
    #[arg(long, value_name = "FILE")]
    runtime: PathBuf,
    /// Serve /metrics, /healthz and /readyz on this address (port 0: any free port, logged).
    #[arg(long, value_name = "ADDR:PORT", env = "PKTPATH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The bpffs directory the data path is pinned under.
    #[arg(
        long,
        value_name = "DIR",
        env = "PKTPATH_PIN_DIR",
        default_value = DEFAULT_PIN_DIR
    )]
    pin_dir: PathBuf,
    #[command(flatten)]
    state: super::state_dir::StateDirArg,
    /// How to hook into TC: `auto` probes the kernel (in a scratch network namespace) and
    /// takes TCX when it works.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    tc_mode: TcModeArg,
    /// Detach the data path (remove its pins) when the agent stops.
    #[arg(long)]
    detach_on_exit: bool,
    /// Do not attach the kernel drop monitor (skb:kfree_skb): no pktpath_kernel_drops_* metrics.
    #[arg(long)]
    no_drop_monitor: bool,
    /// Time each packet from its receive on a configured interface to its transmit on one
    /// (tp_btf on netif_receive_skb and net_dev_start_xmit): pktpath_hop_latency_seconds.
    #[arg(long)]
    hop_latency: bool,
    #[command(flatten)]
    wait: WaitArg,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let layout = args.state.layout(&args.pin_dir);
    // What `route attach` needs (the agent attaches, applies and reads).
    access::Command::RouteAttach.require(&Privileges::current())?;
    access::check_files(access::Command::RouteAttach, &layout)?;
    agent::run(Options {
        config: args.config,
        runtime: args.runtime,
        layout,
        metrics_listen: args.metrics_listen,
        tc_mode: args.tc_mode.mode(),
        detach_on_exit: args.detach_on_exit,
        wait: args.wait.wait,
        drop_monitor: !args.no_drop_monitor,
        hop_latency: args.hop_latency,
    })?;
    Ok(exit::OK)
}

#[cfg(test)]
mod k8s_tests;
