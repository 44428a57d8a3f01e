//! The XDP hook (`route attach --hook xdp`): the data path's XDP program on the ingress of
//! each interface attached at ingress, in front of the TC program, which stays attached
//! and decides every packet XDP passes (see the eBPF side, `bin/datapath/xdp.rs`).
//!
//! Each XDP hook is a bpf_link pinned as `link_<ifname>_xdp` beside the TC links, so detach
//! and the rollback of a killed attach remove it like them, and an attach killed between
//! creating a link and pinning it leaves nothing (the link dies with the process). The
//! requested mode and what each interface got are recorded in `attach.json`.
//!
//! Native XDP redirects a frame only to a device that takes XDP frames (NDO_XMIT in its
//! `xdp-features`; a veth only while its peer runs XDP or has GRO on): `ROUTE_XDP_EGRESS`
//! holds the interfaces XDP may forward to, and packets to the others go on to TC, which
//! forwards them. Generic XDP hands the skb to the device's transmit, which any device takes.

use std::path::PathBuf;

use aya::{
    maps::{Array, Map, MapData},
    programs::{Xdp, XdpMode as AyaXdpMode, links::FdLink},
};
use aya_obj::programs::XdpAttachType;
use pktpath_common::route::{MAP_XDP_EGRESS, MAX_IFACES, PROG_XDP_TAP, XDP_TAP_PROG_MAP};
use serde::{Deserialize, Serialize};

use super::{AttachError, Layout};
use crate::{
    route::compile::Topology,
    route::datapath::{policy::Interfaces, tables::TableError},
    sys::{
        iface,
        netdev::{XDP_ACT_BASIC, XDP_ACT_NDO_XMIT, driver, xdp_features},
    },
};

const PROG_XDP_PIN: &str = "prog_xdp";

/// The XDP mode asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver has it (its `xdp-features`), generic otherwise.
    #[default]
    Auto,
    /// In the driver; refused on an interface whose driver lacks it.
    Native,
    /// In the kernel's receive path, on the skb (any device).
    Generic,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// The mode an interface's XDP hook runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpRunMode {
    Native,
    Generic,
}

impl XdpRunMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// `attach.json`'s record of the XDP hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpState {
    pub requested: XdpMode,
    /// The interfaces with an XDP link, and the mode each got.
    #[serde(default)]
    pub hooks: Vec<XdpHook>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpHook {
    pub interface: String,
    pub mode: XdpRunMode,
}

impl XdpState {
    /// Whether every XDP hook runs generic (then XDP may redirect into any device).
    fn all_generic(&self) -> bool {
        self.hooks.iter().all(|h| h.mode == XdpRunMode::Generic)
    }
}

impl Layout {
    /// The pin of the XDP program.
    pub fn xdp_prog(&self) -> PathBuf {
        self.pin_dir.join(PROG_XDP_PIN)
    }

    /// The pin of the XDP link on `iface`.
    pub fn xdp_link(&self, iface: &str) -> PathBuf {
        self.pin_dir.join(format!("link_{iface}_xdp"))
    }
}

/// The mode `requested` gives interface `name`.
pub(super) fn resolve_mode(requested: XdpMode, name: &str) -> Result<XdpRunMode, AttachError> {
    let native = || -> Result<bool, AttachError> {
        Ok(xdp_features(iface::index(name)?)? & XDP_ACT_BASIC != 0)
    };
    match requested {
        XdpMode::Generic => Ok(XdpRunMode::Generic),
        XdpMode::Auto => Ok(if native()? {
            XdpRunMode::Native
        } else {
            XdpRunMode::Generic
        }),
        XdpMode::Native if native()? => Ok(XdpRunMode::Native),
        XdpMode::Native => Err(AttachError::NoNativeXdp {
            iface: name.to_owned(),
        }),
    }
}

/// Loads the XDP program of the loaded object and pins it, and loads its tap program into
/// the program array it tail-calls (`pktpath trace` hears XDP's decisions through it).
pub(super) fn load_and_pin(ebpf: &mut aya::Ebpf, layout: &Layout) -> Result<(), AttachError> {
    load_tap(ebpf)?;
    let prog = program(ebpf)?;
    prog.load().map_err(|source| AttachError::Program {
        what: "loading the XDP program into the kernel (verifier)".to_owned(),
        source,
    })?;
    prog.pin(layout.xdp_prog())
        .map_err(|source| AttachError::Pin {
            what: format!("pinning the XDP program at {}", layout.xdp_prog().display()),
            source,
        })
}

/// Loads the XDP tap program and puts it where the XDP program tail-calls it. The pinned
/// program array keeps it loaded after this process exits.
fn load_tap(ebpf: &mut aya::Ebpf) -> Result<(), AttachError> {
    let tap: &mut Xdp = ebpf
        .program_mut(PROG_XDP_TAP)
        .ok_or(AttachError::NoProgram(PROG_XDP_TAP))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{PROG_XDP_TAP} as an XDP program"),
            source,
        })?;
    tap.load().map_err(|source| AttachError::Program {
        what: "loading the XDP tap program into the kernel (verifier)".to_owned(),
        source,
    })?;
    let fd = super::tap_fd(PROG_XDP_TAP, tap.fd())?;
    super::put_tap(ebpf, XDP_TAP_PROG_MAP, &fd, AttachError::XdpTapProgram)
}

/// The XDP program of the loaded object.
pub(super) fn program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp, AttachError> {
    let name = super::loop_kind()?.xdp_program();
    ebpf.program_mut(name)
        .ok_or(AttachError::NoProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{name} as an XDP program"),
            source,
        })
}

/// The pinned XDP program (to re-create hooks that went missing).
pub(super) fn pinned_program(layout: &Layout) -> Result<Xdp, AttachError> {
    Xdp::from_pin(layout.xdp_prog(), XdpAttachType::Interface).map_err(|source| {
        AttachError::Program {
            what: format!(
                "opening the pinned XDP program {} (was the data path attached with --hook xdp?)",
                layout.xdp_prog().display()
            ),
            source,
        }
    })
}

/// Attaches `prog` to `name` in `mode` over a bpf_link and pins the link.
pub(super) fn attach_link(
    prog: &mut Xdp,
    layout: &Layout,
    name: &str,
    mode: XdpRunMode,
) -> Result<(), AttachError> {
    let what = format!("XDP ({}) attach on {name}", mode.name());
    let err = |source| AttachError::Program {
        what: what.clone(),
        source,
    };
    let flags = match mode {
        XdpRunMode::Native => AyaXdpMode::Driver,
        XdpRunMode::Generic => AyaXdpMode::Skb,
    };
    let id = prog
        .attach(name, flags)
        .map_err(|e| busy_or(e, name, &err))?;
    let link = prog.take_link(id).map_err(err)?;
    // Dropping a netlink attachment (a kernel without XDP links) detaches it: nothing
    // stays behind when this refuses.
    let fd: FdLink = link.try_into().map_err(|source| AttachError::Link {
        what: format!("{what}: the kernel made no XDP link (Linux 5.9+ makes them)"),
        source,
    })?;
    let path = layout.xdp_link(name);
    fd.pin(&path).map_err(|source| AttachError::Pin {
        what: format!("pinning the XDP link of {name} at {}", path.display()),
        source,
    })?;
    Ok(())
}

/// An attach refused because another XDP program holds the hook says so.
fn busy_or(
    e: aya::programs::ProgramError,
    name: &str,
    err: &impl Fn(aya::programs::ProgramError) -> AttachError,
) -> AttachError {
    let busy = matches!(&e, aya::programs::ProgramError::SyscallError(s)
        if s.io_error.raw_os_error() == Some(libc::EBUSY) || s.io_error.raw_os_error() == Some(libc::EEXIST));
    if busy {
        return AttachError::XdpBusy {
            iface: name.to_owned(),
        };
    }
    err(e)
}

/// What XDP on the configured interfaces needs that attach cannot see or change, as
/// warnings: native XDP on a veth cannot finish the checksums the peer's stack leaves to
/// the receiver (veth offloads them), and the kernel's FIB lookups (a gateway's MAC, a
/// `lookup_table` action) answer only on interfaces that forward.
pub(super) fn needs(topology: &Topology, state: &XdpState) -> Vec<String> {
    let mut out = Vec::new();
    for h in &state.hooks {
        if h.mode == XdpRunMode::Native && driver(&h.interface).is_ok_and(|d| d == "veth") {
            out.push(format!(
                "{} is a veth with native XDP: turn TX checksum offload off on its peer (`ethtool -K PEER tx off`), or packets XDP forwards from there keep the unfinished checksums the peer's stack leaves to the receiver, which drops them; or attach with --xdp-mode generic",
                h.interface
            ));
        }
    }
    for i in &topology.interfaces {
        for (family, key) in [("ipv4", "forwarding"), ("ipv6", "forwarding")] {
            let path = format!("/proc/sys/net/{family}/conf/{}/{key}", i.name);
            if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
                out.push(format!(
                    "{family} forwarding is off on {} ({path}): the kernel's FIB lookups answer XDP nothing through it (gateway MACs, lookup_table), so TC forwards those packets",
                    i.name
                ));
            }
        }
    }
    out
}

/// A configured interface whose place in `ROUTE_XDP_EGRESS` changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressChange {
    pub interface: String,
    /// Whether XDP now redirects into it (otherwise TC forwards what goes out of it).
    pub takes_xdp: bool,
}

impl EgressChange {
    /// One line for a log or the terminal.
    pub fn describe(&self) -> String {
        if self.takes_xdp {
            format!(
                "{} takes native XDP frames again: XDP forwards into it",
                self.interface
            )
        } else {
            format!(
                "{} no longer takes native XDP frames (a veth takes them while its peer runs an XDP program or has GRO on): TC forwards what goes out of it",
                self.interface
            )
        }
    }
}

/// What [`fill_egress`] found: a warning for each configured interface XDP may not
/// redirect into, and the interfaces whose answer changed since the map was last filled.
#[derive(Clone, Debug, Default)]
pub struct EgressRefresh {
    pub warnings: Vec<String>,
    pub changed: Vec<EgressChange>,
}

/// Fills `ROUTE_XDP_EGRESS` with the configured interfaces XDP may redirect into, as their
/// drivers say now: a veth takes native XDP frames only while its peer runs an XDP program
/// or has GRO on, which its owner may change at any time, so apply and the agent call this
/// again (a redirect into a device that does not take the frame drops it).
pub(super) fn fill_egress(
    layout: &Layout,
    topology: &Topology,
    ifaces: &Interfaces,
    state: &XdpState,
) -> Result<EgressRefresh, AttachError> {
    let path = layout.pin_dir.join(MAP_XDP_EGRESS);
    let pin_err = |source| TableError::Pin {
        path: path.display().to_string(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(pin_err)?;
    let map = Map::from_map_data(data).map_err(pin_err)?;
    let mut egress: Array<MapData, u32> =
        Array::try_from(map).map_err(|source| TableError::Map {
            op: "open",
            map: MAP_XDP_EGRESS,
            source,
        })?;
    let mut out = EgressRefresh::default();
    for (i, link) in topology.interfaces.iter().zip(&ifaces.links) {
        if link.ifindex >= MAX_IFACES {
            out.warnings.push(format!(
                "{} has ifindex {} (XDP forwards to ifindexes below {MAX_IFACES}): TC forwards what goes out of it",
                i.name, link.ifindex
            ));
            continue;
        }
        let takes = state.all_generic() || xdp_features(link.ifindex)? & XDP_ACT_NDO_XMIT != 0;
        if !takes {
            out.warnings.push(format!(
                "{} does not take native XDP frames (a veth takes them when its peer runs an XDP program or has GRO on: `ethtool -K PEER gro on`): TC forwards what goes out of it",
                i.name
            ));
        }
        let was = egress
            .get(&link.ifindex, 0)
            .map_err(|source| TableError::Map {
                op: "read",
                map: MAP_XDP_EGRESS,
                source,
            })?;
        if was == u32::from(takes) {
            continue;
        }
        egress
            .set(link.ifindex, u32::from(takes), 0)
            .map_err(|source| TableError::Map {
                op: "update",
                map: MAP_XDP_EGRESS,
                source,
            })?;
        out.changed.push(EgressChange {
            interface: i.name.clone(),
            takes_xdp: takes,
        });
    }
    Ok(out)
}
