//! Part 2: forwarding through a router namespace. 64-byte UDP from trafgen, delivered
//! frames per second at the sink, for each way of steering the flow, each with the
//! matching rule alone and behind 1,000 rules that do not match. Configurations alternate
//! (every round visits each once, in order), and each is set up and torn down per round.
//! `pktpath-drops-1` adds the agent's kernel drop monitor to `pktpath-1` (the sink drops every
//! frame: one `skb:kfree_skb` event per frame, the monitor's worst case), beside an empty
//! program on the same tracepoint (`pktpath-kfree-empty-1`), the floor of any program there.
//! `pktpath-hoplat-1` adds the agent's hop-latency programs (`--hop-latency`) on the
//! router's two interfaces: every forwarded frame is timed from receive to transmit.
//! `xdp-floor-1` (native) and `xdp-floor-generic-1` are the cheapest XDP forwarder there
//! is (rewrite the MACs, redirect to the sink's interface, nothing else), attached on the
//! router's ingress as `--hook xdp` attaches pktpath's: the ceiling of any XDP mode here.
//! After each throughput window a second one is profiled (`fwdcpu`): the forwarding CPU's
//! time per frame, sender against receive side (`PKTPATH_BENCH_CPU=0` skips it).

use std::{any::Any, time::Duration};

use anyhow::Context as _;
use pktpath_tests::{
    ClsactGuard, EthtoolFlag, EthtoolGuard,
    objects::{self, TestObject},
};
use serde::Serialize;

use aya::programs::{BtfTracePoint, Xdp, XdpMode};
use pktpath_common::baseline::{GLOBAL_FLOOR_IFINDEX, PROG_XDP_FLOOR};
use pktpath_core::{
    dropmon::DropMonitor,
    hoplat::HopLatency,
    loader::GlobalValue,
    sys::{iface, netns::NetNs},
};

use crate::{
    fwdcpu::{self, CpuSplit},
    lab::{self, Lab, NftNetdev, ROUTE_TABLE, Scratch, check_stop, ip_batch, median, tc_batch},
    routecli,
};

/// Non-matching rules ahead of the matching one in the "1k" configurations.
pub const AHEAD: usize = 1000;
const ROUNDS: usize = 3;
const WARMUP: Duration = Duration::from_millis(400);
const WINDOW: Duration = Duration::from_millis(1500);

/// How the router steers the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ip rule ... lookup 100` and kernel forwarding.
    Linux,
    /// nftables netdev ingress: rewrite MACs, `fwd to` the sink's interface.
    Nft,
    /// tc u32 on clsact ingress: mirred redirect to the sink's interface. The MACs stay as
    /// they came (this kernel has no tc `pedit`; the sink takes the frame anyway).
    Tc,
    /// `pktpath route attach` + `apply`.
    Pktpath,
    /// [`Kind::Pktpath`] attached with `--hook xdp` (native on the veth; GRO on the sink's
    /// end so that it takes the frames XDP redirects).
    PktpathXdp,
    /// [`Kind::Pktpath`] attached with `--hook xdp --xdp-mode generic`.
    PktpathXdpGeneric,
    /// The XDP floor program (MACs, `bpf_redirect`) native on the router's ingress, GRO on
    /// the sink's end as for [`Kind::PktpathXdp`].
    XdpFloor,
    /// The XDP floor program in generic mode.
    XdpFloorGeneric,
    /// [`Kind::Pktpath`] with the agent's kernel drop monitor attached (every frame the
    /// sink drops is one `skb:kfree_skb` event it counts).
    PktpathDrops,
    /// [`Kind::Pktpath`] with an empty program on `skb:kfree_skb` (tp_btf): the floor any
    /// program there costs, against which [`Kind::PktpathDrops`] is judged.
    PktpathKfreeFloor,
    /// [`Kind::Pktpath`] with the agent's hop-latency programs on the router's two
    /// interfaces (`pktpath agent --hop-latency`).
    PktpathHopLatency,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Linux => "linux",
            Kind::Nft => "nft",
            Kind::Tc => "tc",
            Kind::Pktpath => "pktpath",
            Kind::PktpathXdp => "pktpath-xdp",
            Kind::PktpathXdpGeneric => "pktpath-xdp-generic",
            Kind::XdpFloor => "xdp-floor",
            Kind::XdpFloorGeneric => "xdp-floor-generic",
            Kind::PktpathDrops => "pktpath-drops",
            Kind::PktpathKfreeFloor => "pktpath-kfree-empty",
            Kind::PktpathHopLatency => "pktpath-hoplat",
        }
    }
}

/// One configuration: a kind and the number of non-matching rules ahead of the match.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub kind: Kind,
    pub ahead: usize,
}

impl Config {
    pub fn name(&self) -> String {
        let n = if self.ahead == 0 {
            "1".to_owned()
        } else {
            format!("{}k", self.ahead / 1000)
        };
        format!("{}-{n}", self.kind.label())
    }
}

pub fn all() -> Vec<Config> {
    let mut v = Vec::new();
    for kind in [
        Kind::Linux,
        Kind::Nft,
        Kind::Tc,
        Kind::Pktpath,
        Kind::PktpathXdp,
        Kind::PktpathXdpGeneric,
    ] {
        for ahead in [0, AHEAD] {
            v.push(Config { kind, ahead });
        }
    }
    // No policies: the floor forwards every frame.
    for kind in [Kind::XdpFloor, Kind::XdpFloorGeneric] {
        v.push(Config { kind, ahead: 0 });
    }
    // Right after pktpath-1 in each round: the monitor's cost is the ratio of the two.
    let at = v
        .iter()
        .position(|c| c.kind == Kind::Pktpath && c.ahead == 0)
        .map_or(v.len(), |i| i + 1);
    for kind in [
        Kind::PktpathHopLatency,
        Kind::PktpathKfreeFloor,
        Kind::PktpathDrops,
    ] {
        v.insert(at, Config { kind, ahead: 0 });
    }
    v
}

/// pktpath's data path with an empty program on `skb:kfree_skb`; both removed on drop.
pub struct WithKfreeFloor {
    pub route: routecli::Route,
    pub ebpf: aya::Ebpf,
}

/// Loads the benchmark's empty `skb:kfree_skb` program and attaches it (tp_btf, as the
/// drop monitor is); detached when the returned object is dropped.
fn empty_kfree_skb() -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = objects::load(TestObject::HookFloor, &[]).context("load the empty hooks")?;
    let btf = aya::Btf::from_sys_fs().context("kernel BTF")?;
    let p: &mut BtfTracePoint = ebpf
        .program_mut("floor_kfree_skb")
        .context("program floor_kfree_skb")?
        .try_into()?;
    p.load("kfree_skb", &btf).context("load floor_kfree_skb")?;
    p.attach().context("attach floor_kfree_skb")?;
    Ok(ebpf)
}

/// pktpath's data path with the XDP hook, and GRO on the sink's end of its link; both
/// undone on drop.
pub struct WithXdp {
    pub route: routecli::Route,
    _gro: EthtoolGuard,
}

/// The XDP floor program attached on the router's ingress, and in native mode GRO on the
/// sink's end; detached (the program's link closes with the object) and undone on drop,
/// in that order.
pub struct WithXdpFloor {
    _ebpf: aya::Ebpf,
    _gro: Option<EthtoolGuard>,
}

/// Loads the XDP floor program, redirecting to the router's sink-side interface, and
/// attaches it on the router's client-side one (a bpf_link, like `--hook xdp`).
fn xdp_floor(lab: &Lab, mode: XdpMode) -> anyhow::Result<aya::Ebpf> {
    let router = lab.router.handle();
    let out = router
        .run(|| iface::index(lab.r_out()))
        .context("enter the router's namespace")??;
    let mut ebpf = objects::load(
        TestObject::Floor,
        &[(GLOBAL_FLOOR_IFINDEX, GlobalValue::U32(out))],
    )?;
    let p: &mut Xdp = ebpf
        .program_mut(PROG_XDP_FLOOR)
        .context("program pktpath_xdp_floor")?
        .try_into()?;
    p.load().context("load the XDP floor program")?;
    router
        .run(|| p.attach(lab.r_in(), mode))
        .context("enter the router's namespace")?
        .with_context(|| format!("attach the XDP floor program on {}", lab.r_in()))?;
    Ok(ebpf)
}

/// pktpath's data path with the kernel drop monitor attached; both removed on drop.
pub struct WithDropMonitor {
    pub route: routecli::Route,
    pub monitor: DropMonitor,
}

/// pktpath's data path with the hop-latency programs attached; both removed on drop.
pub struct WithHopLatency {
    pub route: routecli::Route,
    /// Held for its programs: detached when dropped.
    pub _hops: HopLatency,
}

/// The agent's hop-latency programs on the router's two interfaces, as `pktpath agent
/// --hop-latency` attaches them in the router's namespace.
pub fn hop_latency(lab: &Lab) -> anyhow::Result<HopLatency> {
    let router = NetNs::from_name(&lab.router.name).context("open the router's namespace")?;
    HopLatency::start_in(router, &[lab.r_in().to_owned(), lab.r_out().to_owned()])
        .context("start the hop-latency programs")
}

/// `ip rule`s in the router; deleted (by preference) on drop.
struct IpRules {
    ns: String,
    prefs: Vec<u32>,
}

impl Drop for IpRules {
    fn drop(&mut self) {
        let lines: Vec<String> = self
            .prefs
            .iter()
            .map(|p| format!("rule del pref {p}"))
            .collect();
        if let Err(e) = ip_batch(&self.ns, &lines) {
            eprintln!("cleanup of ip rules: {e}");
        }
    }
}

/// The i-th non-matching source address: 10.200.0.0 + i.
fn other_src(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(((10u32 << 24) | (200 << 16)) + i as u32)
}

/// Sets `cfg` up in the lab's router; the returned guard undoes it.
pub fn setup(lab: &Lab, cfg: Config, dir: &Scratch) -> anyhow::Result<Box<dyn Any>> {
    let r = lab.router.name.as_str();
    let (r_in, r_out) = (lab.r_in(), lab.r_out());
    Ok(match cfg.kind {
        Kind::Linux => {
            let mut prefs = Vec::new();
            let mut lines = Vec::new();
            for i in 0..cfg.ahead {
                let pref = 1000 + i as u32;
                lines.push(format!(
                    "rule add pref {pref} from {} lookup {ROUTE_TABLE}",
                    other_src(i)
                ));
                prefs.push(pref);
            }
            let pref = 1000 + cfg.ahead as u32;
            lines.push(format!(
                "rule add pref {pref} iif {r_in} to 10.9.0.0/24 lookup {ROUTE_TABLE}"
            ));
            prefs.push(pref);
            let guard = IpRules {
                ns: r.to_owned(),
                prefs,
            };
            ip_batch(r, &lines)?;
            Box::new(guard)
        }
        Kind::Nft => {
            let mut body = format!(
                "chain ingress {{\n type filter hook ingress device \"{r_in}\" priority 0; policy accept;\n"
            );
            for i in 0..cfg.ahead {
                body.push_str(&format!(" ip saddr {} drop\n", other_src(i)));
            }
            body.push_str(&format!(
                " ip daddr 10.9.0.0/24 ether saddr set {} ether daddr set {} fwd to \"{r_out}\"\n}}",
                lab.router_out_mac, lab.sink_mac
            ));
            Box::new(NftNetdev::new(r, "fwd", &body)?)
        }
        Kind::Tc => {
            let guard = ClsactGuard::new(r, r_in);
            let mut lines = Vec::new();
            for i in 0..cfg.ahead {
                lines.push(format!(
                    "filter add dev {r_in} ingress prio {} protocol ip u32 match ip src {}/32 \
                     action mirred egress redirect dev {r_out}",
                    i + 1,
                    other_src(i)
                ));
            }
            lines.push(format!(
                "filter add dev {r_in} ingress prio {} protocol ip u32 match ip dst 10.9.0.0/24 \
                 action mirred egress redirect dev {r_out}",
                cfg.ahead + 1,
            ));
            tc_batch(r, &lines)?;
            Box::new(guard)
        }
        Kind::Pktpath => Box::new(routecli::setup(lab, dir, cfg.ahead)?),
        Kind::PktpathXdp => {
            let gro = EthtoolGuard::set(&lab.sink.name, &lab.sink_link.b, EthtoolFlag::Gro, true);
            let route = routecli::setup_with(lab, dir, cfg.ahead, &["--hook", "xdp"])?;
            Box::new(WithXdp { route, _gro: gro })
        }
        Kind::PktpathXdpGeneric => Box::new(routecli::setup_with(
            lab,
            dir,
            cfg.ahead,
            &["--hook", "xdp", "--xdp-mode", "generic"],
        )?),
        Kind::XdpFloor => {
            let gro = EthtoolGuard::set(&lab.sink.name, &lab.sink_link.b, EthtoolFlag::Gro, true);
            Box::new(WithXdpFloor {
                _ebpf: xdp_floor(lab, XdpMode::Driver)?,
                _gro: Some(gro),
            })
        }
        Kind::XdpFloorGeneric => Box::new(WithXdpFloor {
            _ebpf: xdp_floor(lab, XdpMode::Skb)?,
            _gro: None,
        }),
        Kind::PktpathDrops => {
            let route = routecli::setup(lab, dir, cfg.ahead)?;
            let monitor = DropMonitor::start().context("start the drop monitor")?;
            Box::new(WithDropMonitor { route, monitor })
        }
        Kind::PktpathHopLatency => {
            let route = routecli::setup(lab, dir, cfg.ahead)?;
            let hops = hop_latency(lab)?;
            Box::new(WithHopLatency { route, _hops: hops })
        }
        Kind::PktpathKfreeFloor => {
            let route = routecli::setup(lab, dir, cfg.ahead)?;
            Box::new(WithKfreeFloor {
                route,
                ebpf: empty_kfree_skb()?,
            })
        }
    })
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub config: String,
    pub ahead: usize,
    /// Delivered frames per second, one figure per round.
    pub pps: Vec<f64>,
    pub median_pps: f64,
    /// Median over the median of `linux-1` in the same run.
    pub vs_linux_1: f64,
    /// Median over the median of Linux policy routing with the same number of rules ahead.
    pub vs_linux_same: f64,
    /// The forwarding CPU's time per frame, sender against receive side, one per round
    /// (empty with `PKTPATH_BENCH_CPU=0`).
    pub cpu: Vec<CpuSplit>,
    /// Their medians.
    pub cpu_median: Option<CpuSplit>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub frame_bytes: u32,
    pub rounds: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub generator: String,
    pub rows: Vec<Row>,
    /// The drop monitor's program, timed by the kernel over one extra window of
    /// `pktpath-drops-1` (None when that configuration was not run).
    pub drop_monitor: Option<DropMonitorCost>,
    pub goals: Vec<crate::report::Goal>,
}

#[derive(Debug, Serialize)]
pub struct DropMonitorCost {
    /// Runs of the program (drops counted) in the window.
    pub events: u64,
    /// Frames the sink received (and dropped) in the window.
    pub frames: u64,
    /// The program's mean run time per event (`kernel.bpf_stats_enabled`: run_time_ns /
    /// run_cnt).
    pub ns_per_event: f64,
    /// The same for an empty program on `kfree_skb`, in another window of the same run.
    pub empty_ns_per_event: f64,
}

/// One window of `pktpath-drops-1` and one of `pktpath-kfree-empty-1` with BPF run-time
/// statistics on: the monitor's time per event as the kernel measures it, beside an empty
/// program's (what the measurement itself adds: two clock reads per run).
fn drop_monitor_cost(
    lab: &Lab,
    dir: &Scratch,
    tg: &std::path::Path,
) -> anyhow::Result<DropMonitorCost> {
    let (events, frames, ns) = timed_window(lab, dir, tg, Kind::PktpathDrops)?;
    let (empty_events, _, empty_ns) = timed_window(lab, dir, tg, Kind::PktpathKfreeFloor)?;
    Ok(DropMonitorCost {
        events,
        frames,
        ns_per_event: ns as f64 / events.max(1) as f64,
        empty_ns_per_event: empty_ns as f64 / empty_events.max(1) as f64,
    })
}

/// (runs, frames delivered, run time in ns) of the `kfree_skb` program `kind` attaches,
/// over one forwarding window.
fn timed_window(
    lab: &Lab,
    dir: &Scratch,
    tg: &std::path::Path,
    kind: Kind,
) -> anyhow::Result<(u64, u64, u64)> {
    let guard = setup(lab, Config { kind, ahead: 0 }, dir)?;
    let id = if let Some(w) = guard.downcast_ref::<WithDropMonitor>() {
        w.monitor.program_id()
    } else if let Some(w) = guard.downcast_ref::<WithKfreeFloor>() {
        w.ebpf
            .programs()
            .find(|(name, _)| *name == "floor_kfree_skb")
            .context("floor_kfree_skb")?
            .1
            .info()?
            .id()
    } else {
        anyhow::bail!("{kind:?} attaches no kfree_skb program");
    };
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let run = |id: u32| -> anyhow::Result<(u64, u64)> {
        for p in aya::programs::loaded_programs() {
            let p = p?;
            if p.id() == id {
                return Ok((p.run_time().as_nanos() as u64, p.run_count()));
            }
        }
        anyhow::bail!("program {id} is not loaded")
    };
    let (ns0, n0) = run(id)?;
    let d0 = lab.delivered()?;
    lab.measure_pps(tg, WARMUP, WINDOW)?;
    let (ns1, n1) = run(id)?;
    let d1 = lab.delivered()?;
    drop(stats);
    drop(guard);
    Ok((n1 - n0, d1 - d0, ns1 - ns0))
}

pub fn run() -> anyhow::Result<Results> {
    let lab = Lab::new()?;
    let dir = Scratch::new("forward")?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    // PKTPATH_BENCH_CONFIGS=linux-1,pktpath-1 runs a subset (ratios need linux-*).
    let configs: Vec<Config> = match std::env::var("PKTPATH_BENCH_CONFIGS") {
        Ok(list) => all()
            .into_iter()
            .filter(|c| list.split(',').any(|n| n.trim() == c.name()))
            .collect(),
        Err(_) => all(),
    };
    // PKTPATH_BENCH_ROUNDS=N: more rounds, for ratios closer than the noise of three.
    let rounds = std::env::var("PKTPATH_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS);
    let profile_cpu = std::env::var("PKTPATH_BENCH_CPU").map_or(true, |v| v != "0");
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut cpu: Vec<Vec<CpuSplit>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (i, cfg) in configs.iter().enumerate() {
            check_stop()?;
            let guard =
                setup(&lab, *cfg, &dir).with_context(|| format!("set up {}", cfg.name()))?;
            let rate = lab.measure_pps(&tg, WARMUP, WINDOW)?;
            // pktpath's own count: proof that its data path, not the kernel, forwarded.
            let route = guard.downcast_ref::<routecli::Route>().or_else(|| {
                guard
                    .downcast_ref::<WithDropMonitor>()
                    .map(|w| &w.route)
                    .or_else(|| guard.downcast_ref::<WithKfreeFloor>().map(|w| &w.route))
                    .or_else(|| guard.downcast_ref::<WithHopLatency>().map(|w| &w.route))
                    .or_else(|| guard.downcast_ref::<WithXdp>().map(|w| &w.route))
            });
            let by_pktpath = match route {
                Some(route) => format!(", pktpath forwarded {}", route.forwarded(lab.r_in())?),
                None => String::new(),
            };
            let split = if profile_cpu {
                let s = fwdcpu::profile(&lab, &tg, &dir, WARMUP, WINDOW)?;
                let line = s.summary();
                cpu[i].push(s);
                line
            } else {
                String::new()
            };
            drop(guard);
            eprintln!(
                "forward: round {} {:<12} {:>10.0} pps{by_pktpath}{split}",
                round + 1,
                cfg.name(),
                rate
            );
            pps[i].push(rate);
        }
    }
    let drop_monitor = if configs.iter().any(|c| c.kind == Kind::PktpathDrops) {
        check_stop()?;
        let cost = drop_monitor_cost(&lab, &dir, &tg)?;
        eprintln!(
            "forward: drop monitor {:.1} ns per event ({} events for {} frames); an empty kfree_skb program {:.1} ns",
            cost.ns_per_event, cost.events, cost.frames, cost.empty_ns_per_event
        );
        Some(cost)
    } else {
        None
    };
    let med: Vec<f64> = pps.iter().map(|v| median(v)).collect();
    let linux = |ahead: usize| {
        configs
            .iter()
            .position(|c| c.kind == Kind::Linux && c.ahead == ahead)
            .map(|i| med[i])
            .unwrap_or(f64::NAN)
    };
    let rows: Vec<Row> = configs
        .iter()
        .zip(pps)
        .zip(&med)
        .zip(cpu)
        .map(|(((c, pps), m), cpu)| Row {
            config: c.name(),
            ahead: c.ahead,
            pps,
            median_pps: *m,
            vs_linux_1: m / linux(0),
            vs_linux_same: m / linux(c.ahead),
            cpu_median: (!cpu.is_empty()).then(|| CpuSplit::median(&cpu)),
            cpu,
        })
        .collect();
    let get = |name: &str| rows.iter().find(|r| r.config == name).map(|r| r.median_pps);
    let (p1, pk, pd) = (
        get("pktpath-1").unwrap_or(f64::NAN),
        get("pktpath-1k").unwrap_or(f64::NAN),
        get("pktpath-drops-1").unwrap_or(f64::NAN),
    );
    let receive_ns = |name: &str| {
        rows.iter()
            .find(|r| r.config == name)
            .and_then(|r| r.cpu_median.as_ref())
            .map_or(f64::NAN, |c| c.receive_ns)
    };
    for floor in ["xdp-floor-1", "xdp-floor-generic-1"] {
        if let Some(pps) = get(floor) {
            eprintln!(
                "forward: {floor} / linux-1 = {:.3} (the ceiling of XDP here); receive CPU per frame {:.3} of linux-1's",
                pps / linux(0),
                receive_ns(floor) / receive_ns("linux-1")
            );
        }
    }
    if let Some(hops) = get("pktpath-hoplat-1") {
        eprintln!("forward: pktpath-hoplat-1 / pktpath-1 = {:.3}", hops / p1);
    }
    if let Some(floor) = get("pktpath-kfree-empty-1") {
        eprintln!(
            "forward: pktpath-drops-1 / pktpath-1 = {:.3}; an empty kfree_skb program alone: {:.3}",
            pd / p1,
            floor / p1
        );
    }
    let goals = vec![
        crate::report::Goal::at_least("pktpath-1 / linux-1", p1 / linux(0), 1.3),
        crate::report::Goal::at_least("pktpath-1k / linux-1k", pk / linux(AHEAD), 5.0),
        crate::report::Goal::at_least("pktpath-1k / pktpath-1", pk / p1, 0.9),
        // XDP mode: at least twice the kernel's forwarding.
        crate::report::Goal::at_least(
            "pktpath-xdp-1 / linux-1",
            get("pktpath-xdp-1").unwrap_or(f64::NAN) / linux(0),
            2.0,
        ),
        crate::report::Goal::at_least(
            "pktpath-xdp-1k / linux-1k",
            get("pktpath-xdp-1k").unwrap_or(f64::NAN) / linux(AHEAD),
            2.0,
        ),
        // The router's CPU per forwarded frame, where the lab is bound by the CPU that sends
        // and forwards: XDP mode at most half the kernel's. The receive side
        // (router and sink) of the forwarding CPU, perf.
        crate::report::Goal::at_most(
            "pktpath-xdp-1 / linux-1 receive CPU per frame",
            receive_ns("pktpath-xdp-1") / receive_ns("linux-1"),
            0.5,
        ),
        // The drop monitor costs at most 3% of forwarding throughput.
        crate::report::Goal::at_least("pktpath-drops-1 / pktpath-1", pd / p1, 0.97),
    ];
    Ok(Results {
        frame_bytes: 60,
        rounds,
        warmup_s: WARMUP.as_secs_f64(),
        window_s: WINDOW.as_secs_f64(),
        generator: format!(
            "trafgen -P 1 -H (one worker, CPU {}), full speed",
            lab::GEN_CPU
        ),
        rows,
        drop_monitor,
        goals,
    })
}
