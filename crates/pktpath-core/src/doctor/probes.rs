//! The kernel feature probes: each loads, attaches or runs one of the tiny programs of the
//! probe object, then undoes what it did.

use std::error::Error as StdError;

use aya::{
    Ebpf,
    maps::RingBuf,
    programs::{
        BtfTracePoint, FEntry, KProbe, LinkOrder, RawTracePoint, SchedClassifier, TcAttachType,
        TestRun as _, TestRunOptions, TracePoint, Xdp, XdpMode,
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use pktpath_common::probe::{
    MAP_RING, PROBE_KERNEL_FUNCTION, PROG_CLASSIFIER, PROG_FENTRY, PROG_KPROBE, PROG_MAY_GOTO,
    PROG_RAW_TRACEPOINT, PROG_TP_BTF, PROG_TRACEPOINT, PROG_XDP, RING_RECORD,
};
use pktpath_common::route::{self, PROG_DATAPATH, PROG_DATAPATH_OLD, PROG_XDP_OLD};

use super::{Check, uses};
use crate::{
    btf::{Btf, offsets},
    loader::{self, Object},
    sys::{
        caps::{Capability, Privileges},
        iface, link,
        mounts::{self, PseudoFs},
        netdev, netns, tcxquery,
    },
};

/// A probe's outcome: a detail on success, the reason on failure.
type Outcome = Result<Option<String>, String>;

/// Formats an error with its chain of causes, as one line.
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

fn e<E: StdError>(err: E) -> String {
    let s = chain(&err);
    // aya appends the verifier log even when it is empty.
    s.trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end()
        .trim_end_matches('.')
        .to_owned()
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probe object"))?
        .try_into()
        .map_err(e)
}

pub(super) fn run() -> Vec<Check> {
    let mut out = Vec::new();

    out.push(
        Check::new(
            "btf",
            "kernel BTF (/sys/kernel/btf/vmlinux)",
            &[uses::TRACE, uses::TRACE_DROPS],
        )
        .result(
            Btf::from_sys_fs()
                .and_then(|b| offsets::resolve(&b).map(|_| b.len()))
                .map(|n| {
                    Some(format!(
                        "{n} types; sk_buff/net_device/net offsets resolved"
                    ))
                })
                .map_err(e),
        ),
    );

    let specs: [(&str, &str, &[&str]); 13] = [
        ("tracepoint", "classic tracepoints", &[uses::TRACE]),
        (
            "tp_btf",
            "BTF tracepoints (tp_btf)",
            &[uses::TRACE, uses::TRACE_DROPS],
        ),
        ("raw_tracepoint", "raw tracepoints", &[uses::TRACE]),
        ("kprobe", "kprobes", &[uses::FUTURE_HOOKS]),
        ("fentry", "fentry (BPF trampolines)", &[uses::FUTURE_HOOKS]),
        ("ringbuf", "BPF ring buffer", &[uses::TRACE]),
        (
            "prog_test_run",
            "BPF_PROG_TEST_RUN (sched_cls)",
            &[uses::ROUTE_GET],
        ),
        (
            "tc_netlink",
            "TC clsact + cls_bpf direct-action (netlink)",
            &[uses::ROUTE],
        ),
        ("tcx", "TCX (bpf_link TC attach)", &[uses::ROUTE]),
        ("xdp", "XDP (generic)", &[uses::ROUTE_XDP]),
        ("xdp_native", "XDP native on veth", &[uses::ROUTE_XDP]),
        (
            "may_goto",
            "bounded loops with may_goto (6.9 or later)",
            &[uses::ROUTE],
        ),
        (
            "pinning",
            "pinning programs in bpffs",
            &[uses::ROUTE_PERSIST],
        ),
    ];

    let outcomes: Vec<Outcome> = match loader::load(Object::Probe, &[]) {
        Ok(mut ebpf) => specs.iter().map(|(id, ..)| probe(&mut ebpf, id)).collect(),
        Err(err) => {
            let msg = format!("the probe object did not load: {}", e(err));
            specs.iter().map(|_| Err(msg.clone())).collect()
        }
    };
    for ((id, feature, used_by), outcome) in specs.iter().zip(outcomes) {
        out.push(Check::new(id, feature, used_by).result(outcome));
    }
    out
}

/// Runs the one kernel probe `id` (`tcx`, `tc_netlink`, ...) on its own: loads the probe
/// object, runs the probe, unloads. Ok(detail) when the feature works, Err(why) otherwise.
pub(super) fn run_one(id: &str) -> Outcome {
    let mut ebpf = loader::load(Object::Probe, &[])
        .map_err(|err| format!("the probe object did not load: {}", e(err)))?;
    probe(&mut ebpf, id)
}

fn probe(ebpf: &mut Ebpf, id: &str) -> Outcome {
    match id {
        "tracepoint" => tracepoint(ebpf),
        "tp_btf" => tp_btf(ebpf),
        "raw_tracepoint" => {
            let p: &mut RawTracePoint = program(ebpf, PROG_RAW_TRACEPOINT)?;
            p.load().map_err(e)?;
            let link = p.attach("net_dev_xmit").map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok(Some("attached to net_dev_xmit".into()))
        }
        "kprobe" => {
            let p: &mut KProbe = program(ebpf, PROG_KPROBE)?;
            p.load().map_err(e)?;
            if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
                return Err("no kprobe event source (/sys/bus/event_source/devices/kprobe): kernel built without CONFIG_KPROBES".into());
            }
            let link = p.attach(PROBE_KERNEL_FUNCTION, 0).map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok(Some(format!("attached to {PROBE_KERNEL_FUNCTION}")))
        }
        "fentry" => {
            let btf = aya::Btf::from_sys_fs().map_err(e)?;
            let p: &mut FEntry = program(ebpf, PROG_FENTRY)?;
            p.load(PROBE_KERNEL_FUNCTION, &btf).map_err(e)?;
            let link = p.attach().map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok(Some(format!("attached to {PROBE_KERNEL_FUNCTION}")))
        }
        "ringbuf" => ringbuf(ebpf),
        "prog_test_run" => {
            let p = classifier(ebpf)?;
            let packet = [0u8; 64];
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(&packet),
                    repeat: 1,
                    ..Default::default()
                })
                .map_err(e)?;
            Ok(Some(format!(
                "returned {} for a 64-byte frame",
                r.return_value
            )))
        }
        "tc_netlink" => in_fresh_netns_or(
            ebpf,
            |ebpf| {
                let p = classifier(ebpf)?;
                tc::qdisc_add_clsact("lo").map_err(e)?;
                let link = p
                    .attach_with_options(
                        "lo",
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                    .map_err(e)?;
                p.detach(link).map_err(e)?;
                Ok(Some(
                    "clsact qdisc + direct-action filter on lo of a scratch netns".into(),
                ))
            },
            |ebpf| {
                classifier(ebpf)?;
                net_admin()?;
                Ok(Some(format!(
                    "sched_cls program loaded, CAP_NET_ADMIN held; {NOT_TRIED}"
                )))
            },
        ),
        "tcx" => in_fresh_netns_or(
            ebpf,
            |ebpf| {
                let p = classifier(ebpf)?;
                let link = p
                    .attach_with_options(
                        "lo",
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(e)?;
                p.detach(link).map_err(e)?;
                Ok(Some("tcx ingress link on lo of a scratch netns".into()))
            },
            |ebpf| {
                classifier(ebpf)?;
                net_admin()?;
                let lo = iface::index("lo").map_err(e)?;
                let (_, revision) = tcxquery::tcx_query(lo, true).map_err(e)?;
                Ok(Some(format!(
                    "the TCX ingress hook of lo answers a query (revision {revision}); {NOT_TRIED}"
                )))
            },
        ),
        "xdp" => in_fresh_netns_or(
            ebpf,
            |ebpf| {
                let p: &mut Xdp = program(ebpf, PROG_XDP)?;
                p.load().map_err(e)?;
                let link = p.attach("lo", XdpMode::Skb).map_err(e)?;
                p.detach(link).map_err(e)?;
                Ok(Some("generic XDP on lo of a scratch netns".into()))
            },
            |ebpf| {
                let p: &mut Xdp = program(ebpf, PROG_XDP)?;
                p.load().map_err(e)?;
                Ok(Some(format!("XDP program loaded; {NOT_TRIED}")))
            },
        ),
        "xdp_native" => in_fresh_netns_or(
            ebpf,
            |ebpf| {
                let p: &mut Xdp = program(ebpf, PROG_XDP)?;
                if p.fd().is_err() {
                    p.load().map_err(e)?;
                }
                add_veth("pktpath-probe0", "pktpath-probe1")?;
                let features =
                    netdev::xdp_features(iface::index("pktpath-probe0").map_err(e)?).map_err(e)?;
                if features & netdev::XDP_ACT_BASIC == 0 {
                    return Err(format!(
                        "the veth driver announces no native XDP (xdp-features {features:#x}): --xdp-mode auto attaches generic"
                    ));
                }
                let link = p.attach("pktpath-probe0", XdpMode::Driver).map_err(e)?;
                p.detach(link).map_err(e)?;
                Ok(Some(
                    "native XDP on a veth of a scratch netns; --xdp-mode auto picks native where the driver announces it (xdp-features), generic elsewhere".into(),
                ))
            },
            |_| Err(format!("not judged: {NOT_TRIED}")),
        ),
        "may_goto" => {
            let p: &mut SchedClassifier = program(ebpf, PROG_MAY_GOTO)?;
            p.load().map_err(|err| {
                format!(
                    "{}: route runs {PROG_DATAPATH_OLD} and {PROG_XDP_OLD}, whose classifier calls a bpf_loop callback per step (slower)",
                    e(err)
                )
            })?;
            Ok(Some(format!(
                "route runs {PROG_DATAPATH} and {}, whose classifier loops without a call per step",
                route::PROG_XDP
            )))
        }
        "pinning" => pinning(ebpf),
        other => Err(format!("no probe for {other}")),
    }
}

/// Creates the veth pair `a` and `b` (down) in the calling thread's network namespace.
fn add_veth(a: &str, b: &str) -> Result<(), String> {
    const VETH_INFO_PEER: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    // The peer: a `struct ifinfomsg` (16 bytes, all zero), then its name attribute.
    let mut peer = vec![0u8; 16];
    let mut name = b.as_bytes().to_vec();
    name.push(0);
    let len = 4 + name.len();
    peer.extend_from_slice(&(len as u16).to_ne_bytes());
    peer.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    peer.extend_from_slice(&name);
    peer.resize(peer.len().div_ceil(4) * 4, 0);
    link::add(a, "veth", &[(VETH_INFO_PEER, &peer)]).map_err(e)
}

/// Why a probe judged by loading alone did not attach.
const NOT_TRIED: &str =
    "attach not tried: a scratch network namespace needs CAP_SYS_ADMIN (route does not)";

/// Runs `attach` in a scratch network namespace; where this process may not create one
/// (EPERM: no CAP_SYS_ADMIN), judges by `without`, which changes nothing on the system.
fn in_fresh_netns_or(
    ebpf: &mut Ebpf,
    attach: impl FnOnce(&mut Ebpf) -> Outcome + Send,
    without: impl FnOnce(&mut Ebpf) -> Outcome,
) -> Outcome {
    match netns::run_in_fresh(|| attach(&mut *ebpf)) {
        Ok(outcome) => outcome,
        Err(err) if err.source.raw_os_error() == Some(libc::EPERM) => without(ebpf),
        Err(err) => Err(e(err)),
    }
}

fn net_admin() -> Result<(), String> {
    if Privileges::current().has(Capability::NetAdmin) {
        Ok(())
    } else {
        Err(format!(
            "{} is not in the effective set",
            Capability::NetAdmin
        ))
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, String> {
    let p: &mut SchedClassifier = program(ebpf, PROG_CLASSIFIER)?;
    if p.fd().is_err() {
        p.load().map_err(e)?;
    }
    Ok(p)
}

fn tracepoint(ebpf: &mut Ebpf) -> Outcome {
    // Attaching needs the tracepoint's id from tracefs; it is mounted for the probe only
    // (privately) when the host has not mounted it.
    let attached = mounts::with_mounted(PseudoFs::Trace, || {
        let p: &mut TracePoint = program(&mut *ebpf, PROG_TRACEPOINT)?;
        p.load().map_err(e)?;
        let link = p.attach("net", "netif_receive_skb").map_err(e)?;
        p.detach(link).map_err(e)?;
        Ok(Some("attached to net:netif_receive_skb".into()))
    });
    match attached {
        Ok(outcome) => outcome,
        // No tracefs, and no CAP_SYS_ADMIN to mount it privately: judge by loading.
        Err(err) if err.source.raw_os_error() == Some(libc::EPERM) => {
            let p: &mut TracePoint = program(ebpf, PROG_TRACEPOINT)?;
            p.load().map_err(e)?;
            Ok(Some(
                "tracepoint program loaded; attach not tried: tracefs is not mounted and mounting it needs CAP_SYS_ADMIN".into(),
            ))
        }
        Err(err) => Err(e(err)),
    }
}

fn tp_btf(ebpf: &mut Ebpf) -> Outcome {
    let btf = aya::Btf::from_sys_fs().map_err(e)?;
    let p: &mut BtfTracePoint = program(ebpf, PROG_TP_BTF)?;
    p.load("net_dev_xmit", &btf).map_err(e)?;
    let link = p.attach().map_err(e)?;
    p.detach(link).map_err(e)?;
    Ok(Some("attached to net_dev_xmit".into()))
}

fn ringbuf(ebpf: &mut Ebpf) -> Outcome {
    // The map exists once the object loaded; prove a record travels through it.
    let p = classifier(ebpf)?;
    let packet = [0u8; 64];
    p.test_run(TestRunOptions {
        data_in: Some(&packet),
        repeat: 1,
        ..Default::default()
    })
    .map_err(|err| {
        format!(
            "ring buffer created, but the writer could not run: {}",
            e(err)
        )
    })?;
    let map = ebpf
        .map_mut(MAP_RING)
        .ok_or("ring buffer map missing from the probe object")?;
    let mut ring = RingBuf::try_from(map).map_err(e)?;
    let item = ring
        .next()
        .ok_or("ring buffer created, but the record written into it never arrived")?;
    let value = u64::from_ne_bytes(
        item[..8]
            .try_into()
            .map_err(|_| "short ring buffer record")?,
    );
    if value != RING_RECORD {
        return Err(format!(
            "ring buffer returned {value:#x}, expected {RING_RECORD:#x}"
        ));
    }
    Ok(Some("record written by a program and read back".into()))
}

fn pinning(ebpf: &mut Ebpf) -> Outcome {
    let _bpffs = PseudoFs::Bpf.ensure().map_err(e)?;
    let path = PseudoFs::Bpf
        .path()
        .join(format!("pktpath-doctor-{}", std::process::id()));
    let p = classifier(ebpf)?;
    p.pin(&path).map_err(e)?;
    let r = std::fs::metadata(&path)
        .map(|_| ())
        .map_err(|err| format!("pin not visible: {err}"));
    let _ = std::fs::remove_file(&path);
    r.map(|()| Some("pinned and unpinned a program".into()))
}
