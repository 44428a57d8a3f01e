//! The attached data path: the TC program loaded, attached to the interfaces the static
//! configuration names (in the caller's network namespace), and pinned in bpffs so
//! forwarding continues after the process exits.
//!
//! Two ways into TC ([`TcMode`]): TCX links (Linux 6.6+; pinned, one per hook) or, where
//! the kernel lacks TCX, a clsact qdisc with one cls_bpf direct-action filter per hook
//! (netlink). Without a choice, [`attach`] probes the kernel (the `tcx` probe of
//! `pktpath doctor`) and takes TCX when it works. Netlink filters cannot be pinned, so
//! what was created (each filter's priority and handle, and which clsact qdiscs attach
//! added) is recorded in `attach.json` in the state directory; [`detach`] removes exactly
//! that: the filters, and a clsact qdisc only if attach created it and no filter is left
//! on it. A third mode, [`TcMode::Tc`], is a data path the operator attached by hand with
//! `tc` and `apply --config` took in (see `adopt`): pktpath fills its maps and never
//! touches its filters or pins.
//!
//! Pin layout under the pin directory (default [`DEFAULT_PIN_DIR`]):
//!
//! ```text
//! prog                      the pktpath_tc program
//! ROUTE_ARENA ROUTE_TREES ROUTE_STATE ROUTE_NEXTHOPS POLICY_STATS IFACE_STATS
//! IFACE_STATS_HIGH ROUTE_DECISION
//!                           the maps user space reads and writes
//! link_<ifname>_ingress     one TCX link per interface and direction (TCX mode)
//! link_<ifname>_egress
//! ROUTE_TAP ROUTE_TAP_SOCKS ROUTE_TAP_RINGS ROUTE_TAP_PROG ROUTE_TAP_SCRATCH
//!                           the decision taps of `pktpath trace` (see `trace::tap`); the
//!                           program array holds the pktpath_tap program, loaded here
//! ROUTE_XDP_TAP_PROG ROUTE_XDP_TAP_SCRATCH
//!                           the XDP program's tap: pktpath_xdp_tap, loaded with --hook xdp
//!                           (empty otherwise)
//! ROUTE_SCRATCH             (pinned too, with every other map of the object)
//! ```
//!
//! bpffs holds pins only, not regular files, so the JSON state sits in a plain directory
//! under the state root (default [`STATE_ROOT`]) named after the pin directory (see
//! [`Layout::state_dir`]): `configuration.json` (a copy of the static configuration
//! attached with; `apply` needs it), `set-0.json` and `set-1.json` (the policy set and
//! counter slots of each table generation, see `state`) and `attach.json` (the TC mode, the
//! phase attach or detach got to, the slow path's routes and rules (see `slow_path`) and,
//! in netlink mode, the filters and qdiscs created).
//! Writers hold the lock of `lock`; what a killed one left is handled by `recover`.
//!
//! [`attach`] is idempotent: the same configuration again changes nothing (links missing
//! since, say after an interface was recreated, are re-created from the pinned program, in
//! the mode the data path runs in). A different configuration, or a different forced mode,
//! is refused until [`detach`]. A failed attach removes what it created. [`detach`] removes
//! the links or filters (which detaches the program), the pins, the state files and both
//! directories.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{SchedClassifier, TcAttachType};
use pktpath_common::route::{PROG_TAP, PROG_XDP_TAP, TAP_PROG_MAP, XDP_TAP_PROG_MAP};
use serde::{Deserialize, Serialize};

use super::{
    loops::LoopKind,
    policy::{self, Interfaces, LinkInfo, PolicyError},
    slow_path::{self, SlowPathError, SlowPlan},
    tables::{DatapathMaps, TableError},
};
use crate::{
    loader::{self, LoadError, Object},
    route::{
        compile::Topology,
        config::{ConfigError, Hook as IfaceHook, Source},
    },
    sys::{SysError, iface, mounts::PseudoFs, tc},
};

/// Where `route attach` pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/pktpath";
/// Where the state files of pin directories live.
pub const STATE_ROOT: &str = "/run/pktpath";

const CONFIG_FILE: &str = "configuration.json";
const ATTACH_FILE: &str = "attach.json";
const PROG_PIN: &str = "prog";

mod adopt;
mod detach;
mod hooks;
mod lock;
mod recover;
mod running;
mod state;
mod xdp;

pub(crate) use adopt::hand_programs;
pub use adopt::{Adopted, adopt};
pub use detach::{DetachReport, detach};
use hooks::{Hook, TcBackend};
pub use lock::{DEFAULT_WAIT, Writer};
pub use running::{
    ActiveFile, ActiveSet, ApplyReport, Attached, IfaceStats, PolicyStats, Stats, open,
    refresh_xdp_egress,
};
use state::{AttachState, NlFilter, Phase, SetFile, create_private_dir, write_atomic};
pub use xdp::{EgressChange, EgressRefresh, XdpHook, XdpMode, XdpRunMode, XdpState};

/// Attaching, opening, applying to or detaching the data path failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(
        "interface {name} (named in {config}) is not in this network namespace; create it or run pktpath in the namespace that has it"
    )]
    NoInterface {
        name: String,
        config: String,
        #[source]
        source: SysError,
    },
    #[error("{dir} is not on a bpf filesystem; pin under /sys/fs/bpf")]
    NotBpffs { dir: String },
    #[error(
        "the data path at {dir} is attached with a different configuration; run `pktpath route detach` first"
    )]
    OtherConfig { dir: String },
    #[error(
        "{dir} exists but holds no pktpath data path (no {state}); remove it or pick another --pin-dir"
    )]
    Foreign { dir: String, state: String },
    #[error(
        "the data path at {dir} is attached in {running} mode, not {requested}; run `pktpath route detach` first, or leave out --tc-mode"
    )]
    OtherMode {
        dir: String,
        running: TcMode,
        requested: TcMode,
    },
    #[error(
        "the data path at {dir} is attached with hook {running}, not {requested}; run `pktpath route detach` first, or attach with the same --hook and --xdp-mode"
    )]
    OtherHook {
        dir: String,
        running: String,
        requested: String,
    },
    #[error(
        "the driver of {iface} has no native XDP (its xdp-features lack `basic`); use --xdp-mode generic, or auto (native where the driver has it)"
    )]
    NoNativeXdp { iface: String },
    #[error(
        "{iface} already runs another XDP program; remove it first (`ip link set dev {iface} xdp off`, or detach whatever attached it)"
    )]
    XdpBusy { iface: String },
    #[error(
        "the data path at {dir} runs no XDP program (attached without --hook xdp); leave out --hook xdp"
    )]
    NoXdp { dir: String },
    #[error("no data path is attached at {dir}; run `pktpath route attach --config FILE` first")]
    NotAttached { dir: String },
    #[error(
        "no map {map} is pinned at {dir}: attach the object of `pktpath route object -o FILE` with `tc filter add dev IFACE ingress bpf direct-action obj FILE` first"
    )]
    NoHandMaps { dir: String, map: String },
    #[error(
        "map {map} at {dir} was pinned by another pktpath's object (key/value size/entries {found}, this pktpath's {want}): `tc filter del` its filters, remove the pins, and attach the object of this pktpath (`pktpath route object`)"
    )]
    OlderMaps {
        dir: String,
        map: String,
        found: String,
        want: String,
    },
    #[error(
        "the data path's filter on {hook} (pref {priority}) is attached without direct-action, so its return codes would be read as classids: `tc filter del` it and add it again with `bpf direct-action obj FILE`"
    )]
    NotDirectAction { hook: String, priority: u16 },
    #[error(
        "the data path at {dir} was attached by hand with tc: add or remove its filters with tc, and fill it with `pktpath route apply --config FILE`"
    )]
    ByHand { dir: String },
    #[error(
        "no program uses the data path maps pinned at {dir}: attach the object with `tc filter add dev IFACE ingress bpf direct-action obj FILE`"
    )]
    NoHandProgram { dir: String },
    #[error("loading the data path failed")]
    Load(#[from] LoadError),
    #[error("the data path object has no program {0}")]
    NoProgram(&'static str),
    /// A bad `PKTPATH_DATAPATH_LOOP`.
    #[error("{0}")]
    LoopKind(String),
    #[error("putting {PROG_TAP} into {TAP_PROG_MAP} failed")]
    TapProgram(#[source] aya::maps::MapError),
    #[error("putting {PROG_XDP_TAP} into {XDP_TAP_PROG_MAP} failed")]
    XdpTapProgram(#[source] aya::maps::MapError),
    #[error("{what} failed")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what} failed")]
    Pin {
        what: String,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{what} failed")]
    Link {
        what: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Object(#[from] crate::route::datapath::object::ObjectError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    SlowPath(#[from] SlowPathError),
    #[error("{what} {path} failed")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "another pktpath is changing the data path at {dir}: {holder}; gave up after waiting {waited:.1} s (wait longer with --wait SECONDS)"
    )]
    Busy {
        dir: String,
        holder: String,
        waited: f64,
    },
    #[error(
        "applies at {dir} flipped generations faster than the counters could be read; try again"
    )]
    Unsettled { dir: String },
    #[error("changing the data path at {dir} needs its writer lock")]
    NotWriter { dir: String },
    #[error(
        "no state file {path} for the tables in use (generation {generation}); a data path attached by an older pktpath: `pktpath route detach` and attach again"
    )]
    NoSetFile { path: String, generation: u32 },
    #[error("state file {path} is damaged; `pktpath route detach` and attach again")]
    State {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AttachError {
    let path = path.display().to_string();
    move |source| AttachError::Io { what, path, source }
}

/// How the program is hooked into TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcMode {
    /// bpf_link based TC (Linux 6.6+): one link per hook, pinned.
    Tcx,
    /// A clsact qdisc with a cls_bpf direct-action filter per hook, set up over netlink.
    Netlink,
    /// Filters the operator added with `tc` (the object of `pktpath route object`); pktpath
    /// fills the maps tc pinned and never touches the filters.
    Tc,
}

impl TcMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
            Self::Tc => "tc",
        }
    }

    /// TCX when the kernel offers it (the `tcx` probe of `pktpath doctor` attaches a tiny
    /// program with TCX in a scratch namespace), netlink clsact otherwise.
    pub fn probe() -> Self {
        match crate::doctor::probe("tcx") {
            Ok(_) => Self::Tcx,
            Err(why) => {
                log::info!("TCX unavailable ({why}): attaching with netlink clsact");
                Self::Netlink
            }
        }
    }
}

impl std::fmt::Display for TcMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// TC direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }
}

/// Paths of everything an attached data path keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub pin_dir: PathBuf,
    /// The directory holding the state directories of pin directories ([`STATE_ROOT`]
    /// unless set with [`Layout::with_state_root`]).
    pub state_root: PathBuf,
}

impl Layout {
    /// The data path pinned at `pin_dir`, its state under [`STATE_ROOT`].
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
            state_root: PathBuf::from(STATE_ROOT),
        }
    }

    /// The same data path with its state under `root` instead.
    #[must_use]
    pub fn with_state_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.state_root = root.into();
        self
    }

    /// The program pin.
    pub fn prog(&self) -> PathBuf {
        self.pin_dir.join(PROG_PIN)
    }

    /// The pin of the link on `iface` in `dir`.
    pub fn link(&self, iface: &str, dir: Direction) -> PathBuf {
        self.pin_dir.join(format!("link_{iface}_{}", dir.name()))
    }

    /// The plain directory holding the JSON state: bpffs only holds pins. The pin
    /// directory's path with `/` as `-` under the state root.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(self.escaped())
    }

    /// The file writers lock, beside the state directory (which detach removes).
    pub fn lock_file(&self) -> PathBuf {
        self.state_root.join(format!("{}.lock", self.escaped()))
    }

    fn escaped(&self) -> String {
        self.pin_dir
            .display()
            .to_string()
            .trim_matches('/')
            .replace('/', "-")
    }

    fn state(&self, file: &str) -> PathBuf {
        self.state_dir().join(file)
    }
}

/// How the data path at `layout` is hooked in, as `route show` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// `tc`, or `xdp` (XDP in front of TC's ingress hooks).
    pub hook: &'static str,
    pub tc_mode: TcMode,
    /// With the XDP hook: the mode asked for and each interface's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpState>,
}

/// The hooks of the data path at `layout` (from `attach.json`).
pub fn hooks(layout: &Layout) -> Result<Hooks, AttachError> {
    let state = AttachState::read(layout)?;
    Ok(Hooks {
        hook: if state.xdp.is_some() { "xdp" } else { "tc" },
        tc_mode: state.mode,
        xdp: state.xdp,
    })
}

/// The kernel id of the pinned program.
fn pinned_prog_id(layout: &Layout) -> Result<u32, AttachError> {
    let what = || format!("reading the pinned program {}", layout.prog().display());
    let prog = SchedClassifier::from_pin(layout.prog()).map_err(|source| AttachError::Program {
        what: what(),
        source,
    })?;
    let info = prog.info().map_err(|source| AttachError::Program {
        what: what(),
        source,
    })?;
    Ok(info.id())
}

/// Whether the recorded filter `f` is still on its hook and runs program `prog_id`.
fn filter_present(f: &NlFilter, prog_id: u32) -> Result<bool, AttachError> {
    if iface::index(&f.interface).ok() != Some(f.ifindex) {
        return Ok(false);
    }
    Ok(tc::filters(f.ifindex, f.direction == Direction::Egress)?
        .iter()
        .any(|x| {
            x.kind == "bpf"
                && x.priority == f.priority
                && x.handle == f.handle
                && x.prog_id == Some(prog_id)
        }))
}

/// The hooks one configuration calls for, in the order attach makes them.
fn wanted_hooks(topology: &Topology) -> Vec<Hook> {
    let mut out = Vec::new();
    for iface in &topology.interfaces {
        if iface.ingress {
            out.push((iface.name.clone(), Direction::Ingress));
        }
        if iface.egress {
            out.push((iface.name.clone(), Direction::Egress));
        }
    }
    out
}

/// Resolves the topology's interfaces in the calling thread's network namespace.
pub fn resolve(topology: &Topology) -> Result<Interfaces, AttachError> {
    let mut links = Vec::with_capacity(topology.interfaces.len());
    for i in &topology.interfaces {
        let found = iface::lookup(&i.name).map_err(|source| AttachError::NoInterface {
            name: i.name.clone(),
            config: topology.file.clone(),
            source,
        })?;
        links.push(LinkInfo {
            ifindex: found.ifindex,
            mtu: found.mtu,
            mac: found.mac,
        });
    }
    Ok(Interfaces { links })
}

/// What [`attach`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachReport {
    pub pin_dir: String,
    /// How the program is hooked into TC.
    pub mode: TcMode,
    /// Links created by this call (`ifname/direction`); empty when nothing changed.
    pub attached: Vec<String>,
    /// Links that were already in place.
    pub unchanged: Vec<String>,
    /// What was done about writers killed before they finished (see [`Writer::lock`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// With the XDP hook: the interfaces that run it, and in which mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xdp: Vec<XdpHook>,
    /// What works, but not as fast as asked (say an egress XDP cannot forward to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AttachReport {
    /// A report of nothing done yet, for the pin directory of `writer`.
    fn empty(writer: &Writer, mode: TcMode) -> Self {
        Self {
            pin_dir: writer.layout().pin_dir.display().to_string(),
            mode,
            attached: Vec::new(),
            unchanged: Vec::new(),
            recovered: writer.recovered().to_vec(),
            xdp: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Rolls back, on drop, what a failing attach created (as the next writer would after a
/// killed one, see `recover`).
struct Undo<'a> {
    layout: &'a Layout,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = recover::roll_back_attach(self.layout)
        {
            log::warn!("cleaning up after a failed attach: {e}");
        }
    }
}

/// Whether two static configurations are the same data path; the hooks aside (`--hook xdp`
/// sets them after the file is read; the running ones are compared in `reattach`).
fn same_topology(a: &Topology, b: &Topology) -> bool {
    let ifaces = |t: &Topology| -> Vec<(String, bool, bool)> {
        t.interfaces
            .iter()
            .map(|i| (i.name.clone(), i.ingress, i.egress))
            .collect()
    };
    ifaces(a) == ifaces(b)
        && a.next_hops == b.next_hops
        && a.tables == b.tables
        && a.slow_path == b.slow_path
}

/// Attaches the data path for the static configuration at `config` (a file), pinning under
/// `layout`, in TC mode `mode` (None: probe, TCX where the kernel has it). Mounts bpffs at
/// /sys/fs/bpf when it is missing and leaves it mounted (the pins live there).
pub fn attach(
    writer: &Writer,
    config: &Path,
    mode: Option<TcMode>,
) -> Result<AttachReport, AttachError> {
    attach_source(writer, &Source::read(config)?, mode)
}

/// [`attach`] for a static configuration already read (or built in, as `pktpath demo`'s).
pub fn attach_source(
    writer: &Writer,
    source: &Source,
    mode: Option<TcMode>,
) -> Result<AttachReport, AttachError> {
    attach_with(writer, source, mode, None)
}

/// [`attach_source`], with the XDP hook in front of TC's ingress hooks (see `xdp`) on the
/// interfaces whose configuration says `"hook": "xdp"`, or on all attached at ingress when
/// `xdp` is given (the mode; `auto` for the configuration's alone).
pub fn attach_with(
    writer: &Writer,
    source: &Source,
    mode: Option<TcMode>,
    xdp: Option<XdpMode>,
) -> Result<AttachReport, AttachError> {
    let mut topology = Topology::from_source(source)?;
    if xdp.is_some() {
        for i in topology.interfaces.iter_mut().filter(|i| i.ingress) {
            i.hook = IfaceHook::Xdp;
        }
    }
    let any_xdp = topology.interfaces.iter().any(|i| i.hook == IfaceHook::Xdp);
    let xdp = any_xdp.then(|| xdp.unwrap_or_default());
    let ifaces = resolve(&topology)?;
    if let Some(guard) = PseudoFs::Bpf.ensure()? {
        guard.keep();
    }
    if writer.layout().pin_dir.exists() {
        return reattach(writer, &topology, &ifaces, mode, xdp);
    }
    attach_new(writer, source, &topology, &ifaces, mode, xdp)
}

/// A data path is pinned already: checks it runs `topology` in the mode asked for, and
/// re-creates only what went missing (say after an interface was recreated: its hooks, its
/// slow-path routes, its next hops' ifindexes).
fn reattach(
    writer: &Writer,
    topology: &Topology,
    ifaces: &Interfaces,
    mode: Option<TcMode>,
    xdp: Option<XdpMode>,
) -> Result<AttachReport, AttachError> {
    let layout = writer.layout();
    let dir_text = layout.pin_dir.display().to_string();
    let state_config = layout.state(CONFIG_FILE);
    if !state_config.exists() {
        return Err(AttachError::Foreign {
            dir: dir_text,
            state: state_config.display().to_string(),
        });
    }
    let running = open(layout)?;
    if !same_topology(&running.topology, topology) {
        return Err(AttachError::OtherConfig { dir: dir_text });
    }
    let mut state = AttachState::read(layout)?;
    if state.mode == TcMode::Tc {
        return Err(AttachError::ByHand { dir: dir_text });
    }
    if let Some(requested) = mode
        && requested != state.mode
    {
        return Err(AttachError::OtherMode {
            dir: dir_text,
            running: state.mode,
            requested,
        });
    }
    let running_hook = state.xdp.as_ref().map(|x| x.requested);
    let running_ifaces: Vec<&str> = state
        .xdp
        .iter()
        .flat_map(|x| x.hooks.iter().map(|h| h.interface.as_str()))
        .collect();
    let wanted_ifaces: Vec<&str> = topology
        .interfaces
        .iter()
        .filter(|i| i.hook == IfaceHook::Xdp)
        .map(|i| i.name.as_str())
        .collect();
    if xdp != running_hook || running_ifaces != wanted_ifaces {
        return Err(AttachError::OtherHook {
            dir: dir_text,
            running: hook_text(running_hook),
            requested: hook_text(xdp),
        });
    }
    // Routes through an interface recreated since went with it: put them back.
    let slow = slow_path::plan(topology, ifaces);
    if slow != state.slow_path {
        state.slow_path = slow;
        state.write(layout)?;
    }
    slow_path::install(&state.slow_path)?;
    // A next hop's interface created again has another ifindex: the running set's next
    // hops (they depend on the interfaces only) follow it.
    DatapathMaps::from_pins(&layout.pin_dir)?
        .set_nexthops(&policy::next_hops(topology, ifaces)?)?;
    let backend = TcBackend::new(layout, state.mode);
    let mut report = AttachReport::empty(writer, state.mode);
    let (present, missing) = backend.in_place(&state, wanted_hooks(topology))?;
    report.unchanged = present
        .iter()
        .map(|(name, d)| hook_name(name, *d))
        .collect();
    if !missing.is_empty() {
        let mut prog =
            SchedClassifier::from_pin(layout.prog()).map_err(|source| AttachError::Program {
                what: format!("opening the pinned program {}", layout.prog().display()),
                source,
            })?;
        for (name, d) in missing {
            backend.attach(&mut prog, &mut state, &name, d)?;
            report.attached.push(hook_name(&name, d));
        }
    }
    if let Some(x) = state.xdp.clone() {
        report.warnings = xdp::fill_egress(layout, topology, ifaces, &x)?.warnings;
        report.warnings.extend(xdp::needs(topology, &x));
        let missing: Vec<&XdpHook> = x
            .hooks
            .iter()
            .filter(|h| !layout.xdp_link(&h.interface).exists())
            .collect();
        if !missing.is_empty() {
            let mut prog = xdp::pinned_program(layout)?;
            for h in missing {
                xdp::attach_link(&mut prog, layout, &h.interface, h.mode)?;
                report.attached.push(format!("{}/xdp", h.interface));
            }
        }
        report.xdp = x.hooks;
    }
    Ok(report)
}

/// How a data path's hook is named in errors: `tc`, or `xdp (MODE)`.
fn hook_text(xdp: Option<XdpMode>) -> String {
    match xdp {
        None => "tc".to_owned(),
        Some(m) => format!("xdp (--xdp-mode {})", m.name()),
    }
}

/// Attaches a new data path. The order is what makes a writer killed midway recoverable
/// (see `recover`): `attach.json` (phase attaching, the interfaces, the slow path's plan)
/// before the pin directory; maps and program pinned; the slow path installed and the
/// tables filled before any hook; each hook recorded
/// as it is made (see [`TcBackend::attach`]); the configuration copy, then phase attached,
/// last.
fn attach_new(
    writer: &Writer,
    source: &Source,
    topology: &Topology,
    ifaces: &Interfaces,
    mode: Option<TcMode>,
    xdp: Option<XdpMode>,
) -> Result<AttachReport, AttachError> {
    let layout = writer.layout();
    let pin_dir = &layout.pin_dir;
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if !PseudoFs::Bpf.holds(parent) {
        return Err(AttachError::NotBpffs {
            dir: parent.display().to_string(),
        });
    }
    let mode = mode.unwrap_or_else(TcMode::probe);
    let slow = slow_path::plan(topology, ifaces);
    slow_path::check_free(&slow, &topology.file)?;
    let mut state = begin_attach(layout, topology, mode, slow)?;
    if let Err(e) = std::fs::create_dir(pin_dir) {
        // Nothing of ours in it (it may not even be ours): only the state goes.
        let _ = std::fs::remove_dir_all(layout.state_dir());
        return Err(io_err("create pin directory", pin_dir)(e));
    }
    let mut undo = Undo {
        layout,
        armed: true,
    };

    let mut ebpf = load_and_pin(layout)?;
    if xdp.is_some() {
        xdp::load_and_pin(&mut ebpf, layout)?;
    }
    let prog = classifier(&mut ebpf, loop_kind()?.tc_program())?;
    // Before the next hops that carry its marks, and before any packet meets the program.
    slow_path::install(&state.slow_path)?;
    fill_tables(layout, topology, ifaces)?;

    let backend = TcBackend::new(layout, mode);
    let mut report = AttachReport::empty(writer, mode);
    for (name, d) in wanted_hooks(topology) {
        backend.attach(prog, &mut state, &name, d)?;
        report.attached.push(hook_name(&name, d));
    }
    if let Some(requested) = xdp {
        // In front of TC's ingress hooks, once those decide what XDP passes.
        let mut x = XdpState {
            requested,
            hooks: Vec::new(),
        };
        for i in topology
            .interfaces
            .iter()
            .filter(|i| i.hook == IfaceHook::Xdp)
        {
            let mode = xdp::resolve_mode(requested, &i.name)?;
            x.hooks.push(XdpHook {
                interface: i.name.clone(),
                mode,
            });
        }
        state.xdp = Some(x.clone());
        state.write(layout)?;
        report.warnings = xdp::fill_egress(layout, topology, ifaces, &x)?.warnings;
        report.warnings.extend(xdp::needs(topology, &x));
        let prog = xdp::program(&mut ebpf)?;
        for h in &x.hooks {
            xdp::attach_link(prog, layout, &h.interface, h.mode)?;
            report.attached.push(format!("{}/xdp", h.interface));
        }
        report.xdp = x.hooks;
    }
    write_atomic(&layout.state(CONFIG_FILE), source.text())?;
    state.phase = Phase::Attached;
    state.write(layout)?;
    undo.armed = false;
    Ok(report)
}

/// Makes a fresh state directory and records in it, before anything else is created, that
/// an attach in `mode` on the interfaces of `topology`, with the slow path `slow`, began: a
/// writer killed from here on is rolled back by the next one.
fn begin_attach(
    layout: &Layout,
    topology: &Topology,
    mode: TcMode,
    slow: SlowPlan,
) -> Result<AttachState, AttachError> {
    let state_dir = layout.state_dir();
    if state_dir.exists() {
        // Left from a data path whose pins are gone (bpffs remounted): stale.
        std::fs::remove_dir_all(&state_dir).map_err(io_err("remove stale state", &state_dir))?;
    }
    create_private_dir(&state_dir).map_err(io_err("create state directory", &state_dir))?;
    let mut state = AttachState::new(mode);
    state.phase = Phase::Attaching;
    state.interfaces = topology.interfaces.iter().map(|i| i.name.clone()).collect();
    state.slow_path = slow;
    state.write(layout)?;
    Ok(state)
}

/// Loads the data path object, pins its maps, loads the tap program into its program
/// array, and loads (verifier) and pins the data path program.
fn load_and_pin(layout: &Layout) -> Result<aya::Ebpf, AttachError> {
    let mut ebpf = loader::load(Object::Datapath, &[])?;
    for (name, map) in ebpf.maps() {
        let path = layout.pin_dir.join(name);
        map.pin(&path).map_err(|source| AttachError::Pin {
            what: format!("pinning map {name} at {}", path.display()),
            source,
        })?;
    }
    load_tap(&mut ebpf)?;
    let prog = classifier(&mut ebpf, loop_kind()?.tc_program())?;
    prog.load().map_err(|source| AttachError::Program {
        what: "loading the data path program into the kernel (verifier)".to_owned(),
        source,
    })?;
    prog.pin(layout.prog()).map_err(|source| AttachError::Pin {
        what: format!("pinning the program at {}", layout.prog().display()),
        source,
    })?;
    Ok(ebpf)
}

/// Tables before hooks: next hops known, no policies (every packet passes); the set file
/// of the generation in use says so.
fn fill_tables(
    layout: &Layout,
    topology: &Topology,
    ifaces: &Interfaces,
) -> Result<(), AttachError> {
    let mut maps = DatapathMaps::from_pins(&layout.pin_dir)?;
    maps.set_nexthops(&policy::next_hops(topology, ifaces)?)?;
    SetFile {
        serial: maps.serial()?,
        ..SetFile::default()
    }
    .write(layout)
}

/// `ifname/direction`, as reports name a hook.
fn hook_name(name: &str, d: Direction) -> String {
    format!("{name}/{}", d.name())
}

/// The TC program `name` of the data path object.
/// The variant of the data path's programs this kernel runs.
pub(super) fn loop_kind() -> Result<LoopKind, AttachError> {
    LoopKind::for_kernel().map_err(AttachError::LoopKind)
}

fn classifier<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, AttachError> {
    ebpf.program_mut(name)
        .ok_or(AttachError::NoProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{name} as a TC classifier"),
            source,
        })
}

/// Loads the tap program and puts it where the data path tail-calls it. The pinned program
/// array keeps it loaded after this process exits.
fn load_tap(ebpf: &mut aya::Ebpf) -> Result<(), AttachError> {
    let tap = classifier(ebpf, PROG_TAP)?;
    tap.load().map_err(|source| AttachError::Program {
        what: "loading the tap program into the kernel (verifier)".to_owned(),
        source,
    })?;
    let fd = tap_fd(PROG_TAP, tap.fd())?;
    put_tap(ebpf, TAP_PROG_MAP, &fd, AttachError::TapProgram)
}

/// An owned descriptor of the loaded tap program `name`, so that its program array can be
/// borrowed from the object next.
pub(super) fn tap_fd(
    name: &str,
    fd: Result<&aya::programs::ProgramFd, aya::programs::ProgramError>,
) -> Result<aya::programs::ProgramFd, AttachError> {
    fd.and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|source| AttachError::Program {
            what: format!("a descriptor of {name}"),
            source,
        })
}

/// Puts a tap program in slot 0 of the program array `map`, where its data path program
/// tail-calls it. The pinned array keeps it loaded after this process exits.
pub(super) fn put_tap(
    ebpf: &mut aya::Ebpf,
    map: &str,
    fd: &aya::programs::ProgramFd,
    err: fn(aya::maps::MapError) -> AttachError,
) -> Result<(), AttachError> {
    let data = ebpf
        .map_mut(map)
        .ok_or(err(aya::maps::MapError::InvalidName {
            name: map.to_owned(),
        }))?;
    let mut progs = aya::maps::ProgramArray::try_from(data).map_err(err)?;
    progs.set(0, fd, 0).map_err(err)
}
