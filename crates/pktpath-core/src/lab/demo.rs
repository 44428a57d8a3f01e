//! `pktpath demo`'s run: builds the lab, attaches the fast path to the router with the
//! configuration files of examples/demo/ (built in), starts the tracer in this process,
//! sends real traffic and gathers what happened ([`Findings`]): what each kind of traffic
//! did, the policies' counters, a few journeys, the router's forwarding latency for the
//! same flow through the kernel and through the fast path, and the drops by place, the
//! last two from the trace summary ([`Summary`]).
//!
//! Each step goes through the caller's [`Steps`] (the CLI prints progress and stops on a
//! signal there). What the run set up is owned by the returned [`Demo`]: dropped, it is
//! undone in reverse order (tracer, data path, bpffs mount, lab); [`Demo::keep`] leaves it.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use pktpath_common::trace::Hook;

use super::{Lab, LabError, traffic};
use crate::{
    route::datapath::attach::{self, AttachError, DEFAULT_WAIT, Layout, Stats, Writer},
    route::{self, compile::PolicySet, config::Source},
    sys::{
        SysError,
        mounts::{MountGuard, PseudoFs},
    },
    trace::{
        self, Collector, Event, EventBuilder, TraceError, TraceRequest,
        summary::{HopLatency, Summary},
    },
};

/// The static configuration the router's fast path is attached with.
pub const CONFIG_NAME: &str = "examples/demo/configuration.json";
pub const CONFIG: &str = include_str!("../../../../examples/demo/configuration.json");
/// The policies applied before the fast path's run.
pub const RUNTIME_NAME: &str = "examples/demo/runtimeConfiguration.json";
pub const RUNTIME: &str = include_str!("../../../../examples/demo/runtimeConfiguration.json");

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("mounting bpffs at /sys/fs/bpf")]
    Bpffs(#[source] SysError),
    /// Attaching the fast path failed (perhaps for a kernel feature this kernel lacks).
    #[error(transparent)]
    Attach(AttachError),
    /// Applying, reading or removing the attached fast path failed.
    #[error(transparent)]
    Route(#[from] AttachError),
    #[error(transparent)]
    Config(#[from] route::config::ConfigError),
    #[error(transparent)]
    TraceConfig(#[from] trace::ConfigError),
    /// Starting the tracer failed (perhaps for a kernel feature this kernel lacks).
    #[error(transparent)]
    StartTracer(TraceError),
    /// Reading the trace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("the lab does not forward: no ping reply from {0} (see `pktpath doctor`)")]
    NoForwarding(Ipv4Addr),
    /// The caller's [`Steps`] stopped the run (a signal).
    #[error("interrupted")]
    Interrupted,
}

/// How the caller runs each step of the demo.
pub trait Steps {
    /// Runs `f`, the step `what` names. An error, the step's or the caller's own
    /// ([`DemoError::Interrupted`]), stops the demo.
    fn step<T>(&self, what: &str, f: impl FnOnce() -> Result<T, DemoError>)
    -> Result<T, DemoError>;
}

/// What the demo is run with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The state root of the data path's state files.
    pub state_root: PathBuf,
    /// Datagrams in each run of the latency flow (kernel, then fast path).
    pub latency_packets: u32,
}

/// What one kind of traffic did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub what: String,
    pub result: String,
    /// Whether that is what the policies should have done.
    pub ok: bool,
}

/// A journey the report shows: its title and its events (None when it was not traced).
#[derive(Clone, Debug)]
pub struct Shown {
    pub title: &'static str,
    pub events: Option<Vec<Event>>,
}

/// The router's forwarding latency for the latency flow on one path.
#[derive(Clone, Debug)]
pub struct Latency {
    pub label: &'static str,
    pub latency: Option<HopLatency>,
}

/// Drops of lab packets at one place, with one reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dropped {
    pub reason: String,
    pub location: String,
    /// The namespace's role in the lab (`client`, `router`, ...).
    pub role: &'static str,
    pub ifname: String,
    pub count: u64,
}

/// What the demo found, for its report.
#[derive(Clone, Debug)]
pub struct Findings {
    pub outcomes: Vec<Outcome>,
    pub stats: Stats,
    /// Namespace inode to role.
    pub roles: BTreeMap<u32, &'static str>,
    pub journeys: Vec<Shown>,
    /// Kernel forwarding, then the fast path.
    pub latency: [Latency; 2],
    /// By reason, location, role and interface.
    pub drops: Vec<Dropped>,
    /// Events traced in the lab.
    pub events: usize,
    pub lost: u64,
}

/// The hop the latency flow is timed from, and the one it is timed to, in the router.
pub const LATENCY_FROM: (&str, &str) = ("netif_receive_skb", "to-client");
pub const LATENCY_TO: (&str, &str) = ("net_dev_xmit", "to-up1");

/// A demo that ran: the lab and what is attached to it, and what was found.
pub struct Demo {
    // Fields drop in order: tracer, data path, bpffs, lab. The tracer is only held, so
    // that it traces until the demo is done with.
    _tracer: Tracer,
    datapath: Datapath,
    bpffs: Bpffs,
    pub lab: Lab,
    pub layout: Layout,
    pub findings: Findings,
}

impl Demo {
    /// Leaves the lab, the fast path and bpffs in place; stops the tracer.
    pub fn keep(mut self) -> Kept {
        self.lab.keep();
        self.datapath.keep = true;
        if let Some(guard) = self.bpffs.0.take() {
            guard.keep();
        }
        Kept {
            id: self.lab.id.clone(),
            layout: self.layout.clone(),
        }
    }
}

/// A lab left in place by [`Demo::keep`].
#[derive(Clone, Debug)]
pub struct Kept {
    /// The lab's id (its namespaces' prefix, its pin directory's name).
    pub id: String,
    /// Where its data path is pinned and keeps its state.
    pub layout: Layout,
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
            log::warn!("removing the demo's data path: {e}");
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
pub fn hooks() -> impl Iterator<Item = Hook> {
    Hook::DEFAULT.into_iter().filter(|h| !h.is_fib())
}

/// The tracer, with the lab's namespaces: events elsewhere are dropped.
struct Tracer {
    collector: Collector,
    builder: EventBuilder,
    inodes: Vec<u64>,
}

impl Tracer {
    fn start(lab: &Lab) -> Result<Self, DemoError> {
        let cfg = TraceRequest {
            filter: format!("net {}", super::LAB_NET),
            hooks: hooks().map(|h| h.name().to_owned()).collect(),
            ..TraceRequest::default()
        }
        .resolve()?;
        let collector = Collector::start(&cfg).map_err(DemoError::StartTracer)?;
        let builder = EventBuilder::new(collector.drop_reasons().clone());
        Ok(Self {
            collector,
            builder,
            inodes: lab.roles().into_iter().map(|(i, _)| i).collect(),
        })
    }

    /// The lab's events that arrived so far.
    fn drain(&mut self) -> Result<Vec<Event>, TraceError> {
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
    SocketAddrV4::new(super::SERVICE, port)
}

/// Runs the demo for process `pid`: the lab, the fast path, the tracer, the traffic.
pub fn run(pid: u32, options: &Options, steps: &impl Steps) -> Result<Demo, DemoError> {
    let lab = steps.step(
        "building the lab (4 network namespaces, 3 veth pairs)",
        || Ok(Lab::build(pid)?),
    )?;
    let bpffs = Bpffs(PseudoFs::Bpf.ensure().map_err(DemoError::Bpffs)?);
    let layout = Layout::new(lab.pin_dir()).with_state_root(options.state_root.clone());
    let datapath = steps.step(
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
                .map_err(DemoError::Attach)?;
            Ok(Datapath {
                layout: layout.clone(),
                keep: false,
            })
        },
    )?;
    let loading = format!("loading the tracer ({} hooks)", hooks().count());
    let mut tracer = steps.step(&loading, || Tracer::start(&lab))?;

    // Warm up neighbour entries so the latency runs measure forwarding, not ARP.
    // (through up1, the kernel's route, and to up2's own address).
    steps.step(
        "ping 10.80.9.1 and 10.80.3.2 from the client (warm-up)",
        || {
            for dst in [super::SERVICE, super::UP2] {
                let replies = traffic::ping(&lab.client.handle, dst, 2, Duration::from_millis(50))?;
                if replies == 0 {
                    return Err(DemoError::NoForwarding(dst));
                }
            }
            Ok(())
        },
    )?;
    tracer.drain()?;

    let n = options.latency_packets;
    let mut flow = |label: &str| -> Result<(u64, Vec<Event>), DemoError> {
        steps.step(
            &format!("{label}: {n} UDP datagrams 10.80.1.2 -> 10.80.9.1:5000"),
            || {
                let sink = traffic::UdpSink::bind(&lab.up1.handle, 5000)?;
                traffic::udp_send(
                    &lab.client.handle,
                    super::CLIENT,
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
    steps.step(&format!("applying {RUNTIME_NAME}"), || {
        lab.router.handle.run(|| -> Result<(), DemoError> {
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
    let mut events = steps.step(
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
    let findings = Findings {
        journeys: shown_journeys(&events, &fast_events),
        latency: [
            Latency {
                label: "kernel forwarding (fast path passes)",
                latency: router_latency(&kernel_events),
            },
            Latency {
                label: "fast path (clients-via-up1 forwards in TC)",
                latency: router_latency(&fast_events),
            },
        ],
        drops: drops(
            events.iter().chain(&kernel_events).chain(&fast_events),
            &roles,
        ),
        events: events.len() + kernel_events.len() + fast_events.len(),
        outcomes,
        stats,
        roles,
        lost,
    };
    Ok(Demo {
        _tracer: tracer,
        datapath,
        bpffs,
        lab,
        layout,
        findings,
    })
}

/// Ping, TCP, UDP to several ports and from the quarantined address; what arrived where.
fn traffic_mix(
    lab: &Lab,
    tracer: &mut Tracer,
    outcomes: &mut Vec<Outcome>,
) -> Result<Vec<Event>, DemoError> {
    let replies = traffic::ping(
        &lab.client.handle,
        super::SERVICE,
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
            super::CLIENT,
            svc(port),
            5,
            100,
            Duration::from_millis(5),
        )?;
    }
    traffic::udp_send(
        &lab.client.handle,
        super::QUARANTINED,
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
    let quarantined = super::QUARANTINED.to_string();
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

/// The events of the first journey (in order of first appearance) whose first event
/// `pick` accepts and that has more than two events.
fn first_journey(events: &[Event], pick: impl Fn(&Event) -> bool) -> Option<Vec<Event>> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.packet_id) && pick(e))
        .map(|first| {
            events
                .iter()
                .filter(|e| e.packet_id == first.packet_id)
                .cloned()
                .collect::<Vec<_>>()
        })
        .find(|j| j.len() > 2)
}

/// One journey of each kind of traffic: from the mix, and (UDP to port 5000) from the fast
/// path's run of the latency flow.
fn shown_journeys(all: &[Event], fast: &[Event]) -> Vec<Shown> {
    vec![
        Shown {
            title: "ping: icmp-to-stack passes it to the kernel, which forwards it to up1",
            events: first_journey(all, |e| e.proto == "icmp" && e.icmp_type == Some(8)),
        },
        Shown {
            title: "TCP SYN to port 80: web-via-up1 forwards it in TC (DSCP set to 10)",
            events: first_journey(all, |e| {
                e.proto == "tcp" && e.tcp_flags.as_deref() == Some("S")
            }),
        },
        Shown {
            title: "UDP to port 53: dns-via-up2 forwards it to up2",
            events: first_journey(all, |e| e.proto == "udp" && e.dport == Some(53)),
        },
        Shown {
            title: "UDP to port 5000: clients-via-up1 forwards it to up1",
            events: first_journey(fast, |e| e.proto == "udp" && e.dport == Some(5000)),
        },
        Shown {
            title: "UDP from 10.80.1.66: block-quarantined-host drops it",
            events: first_journey(all, |e| {
                e.proto == "udp" && e.src.as_deref() == Some("10.80.1.66")
            }),
        },
    ]
}

/// The router's receive on to-client to its transmit on to-up1, over the datagrams of the
/// latency flow (the trace summary's span); None when none made it.
fn router_latency(events: &[Event]) -> Option<HopLatency> {
    let mut summary = Summary::new().with_span(LATENCY_FROM, LATENCY_TO);
    for ev in events {
        summary.add(ev);
    }
    summary.span().filter(|l| l.count > 0)
}

/// The drops of the lab's own packets (IPv4 in 10.80/16, not the namespaces' IPv6 chatter
/// whose frees the tracer may report when an skb address it remembered is reused), from
/// the trace summary, by reason, location, role and interface.
fn drops<'a>(
    events: impl Iterator<Item = &'a Event>,
    roles: &BTreeMap<u32, &'static str>,
) -> Vec<Dropped> {
    let mut summary = Summary::new();
    for ev in events.filter(|e| e.src.as_deref().is_some_and(|s| s.starts_with("10.80."))) {
        summary.add(ev);
    }
    let mut drops: Vec<Dropped> = summary
        .drops_by_place()
        .into_iter()
        .map(|d| Dropped {
            location: if d.location.is_empty() {
                "?".to_owned()
            } else {
                d.location
            },
            reason: d.reason,
            role: roles.get(&d.netns).copied().unwrap_or("?"),
            ifname: d.ifname,
            count: d.count,
        })
        .collect();
    drops.sort();
    drops
}

#[cfg(test)]
mod tests {
    use super::{CONFIG, CONFIG_NAME, RUNTIME, RUNTIME_NAME};
    use crate::route::{
        compile::{PolicySet, Topology},
        config::Source,
    };

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
