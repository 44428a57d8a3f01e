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
//! on it.
//!
//! Pin layout under the pin directory (default [`DEFAULT_PIN_DIR`]):
//!
//! ```text
//! prog                      the pktpath_tc program
//! ROUTE_TUPLES ROUTE_RULES ROUTE_RULES_V4 ROUTE_STATE ROUTE_NEXTHOPS POLICY_STATS
//! IFACE_STATS IFACE_STATS_HIGH
//!                           the maps user space reads and writes
//! link_<ifname>_ingress     one TCX link per interface and direction (TCX mode)
//! link_<ifname>_egress
//! ROUTE_TAP ROUTE_TAP_SOCKS ROUTE_TAP_RINGS ROUTE_TAP_PROG ROUTE_TAP_SCRATCH
//!                           the decision taps of `pktpath trace` (see `trace::tap`); the
//!                           program array holds the pktpath_tap program, loaded here
//! ROUTE_SCRATCH             (pinned too, with every other map of the object)
//! ```
//!
//! bpffs holds pins only, not regular files, so the JSON state sits in a plain directory
//! under [`STATE_ROOT`] named after the pin directory (see [`Layout::state_dir`]):
//! `configuration.json` (a copy of the static configuration attached with; `apply` needs
//! it), `runtimeConfiguration.json` (the policy set last applied; absent before the first
//! apply), `slots.json` (the counter slot of each applied policy id, see `policy`) and
//! `attach.json` (the TC mode and, in netlink mode, the filters and qdiscs created).
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

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
};
use pktpath_common::route::{IfaceCounters, PROG_DATAPATH, PROG_TAP, PolicyCounters, TAP_PROG_MAP};
use serde::{Deserialize, Serialize};

use super::{
    classifier::TreeStats,
    policy::{self, Interfaces, LinkInfo, PolicyError, Slots},
    tables::{Applied, DatapathMaps, TableError},
};
use crate::{
    loader::{self, LoadError, Object},
    route::{
        compile::{PolicySet, Topology},
        config::{ConfigError, Source},
    },
    sys::{SysError, iface, mounts::PseudoFs, tc},
};

/// Where `route attach` pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/pktpath";
/// Where the state files of pin directories live.
pub const STATE_ROOT: &str = "/run/pktpath";

const CONFIG_FILE: &str = "configuration.json";
const RUNTIME_FILE: &str = "runtimeConfiguration.json";
const SLOTS_FILE: &str = "slots.json";
const ATTACH_FILE: &str = "attach.json";
const PROG_PIN: &str = "prog";

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
    #[error("no data path is attached at {dir}; run `pktpath route attach --config FILE` first")]
    NotAttached { dir: String },
    #[error("loading the data path failed")]
    Load(#[from] LoadError),
    #[error("the data path object has no program {0}")]
    NoProgram(&'static str),
    #[error("putting {PROG_TAP} into {TAP_PROG_MAP} failed")]
    TapProgram(#[source] aya::maps::MapError),
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
    Policy(#[from] PolicyError),
    #[error("{what} {path} failed")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
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
}

impl TcMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
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

/// `attach.json`: how the data path is hooked in, and in netlink mode what attach created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachState {
    mode: TcMode,
    /// Netlink mode: one cls_bpf filter per hook.
    #[serde(default)]
    filters: Vec<NlFilter>,
    /// Netlink mode: the clsact qdiscs attach added (those that existed before stay).
    #[serde(default)]
    clsact_created: Vec<NlQdisc>,
}

impl AttachState {
    fn new(mode: TcMode) -> Self {
        Self {
            mode,
            filters: Vec::new(),
            clsact_created: Vec::new(),
        }
    }

    /// The state of the data path at `layout`; TCX when there is no `attach.json` (data
    /// paths attached before the file existed were TCX only).
    fn read(layout: &Layout) -> Result<Self, AttachError> {
        let path = layout.state(ATTACH_FILE);
        if !path.exists() {
            return Ok(Self::new(TcMode::Tcx));
        }
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        serde_json::from_str(&text).map_err(|source| AttachError::State {
            path: path.display().to_string(),
            source,
        })
    }

    fn write(&self, layout: &Layout) -> Result<(), AttachError> {
        let text = serde_json::to_string_pretty(self).expect("attach state serializes");
        write_atomic(&layout.state(ATTACH_FILE), &text)
    }
}

/// A cls_bpf filter attach created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NlFilter {
    interface: String,
    /// The interface's index when the filter was added: a recreated interface with the
    /// same name is another device, whose filters are not ours.
    ifindex: u32,
    direction: Direction,
    priority: u16,
    handle: u32,
}

/// A clsact qdisc attach added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NlQdisc {
    interface: String,
    ifindex: u32,
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

/// The links one configuration calls for: (interface position, name, direction).
fn wanted_links(topology: &Topology) -> Vec<(usize, String, Direction)> {
    let mut out = Vec::new();
    for (i, iface) in topology.interfaces.iter().enumerate() {
        if iface.ingress {
            out.push((i, iface.name.clone(), Direction::Ingress));
        }
        if iface.egress {
            out.push((i, iface.name.clone(), Direction::Egress));
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
}

/// Removes, on drop, what a failing attach created.
struct Undo {
    dirs: Vec<PathBuf>,
    /// Netlink filters and qdiscs created so far (TCX links go with their pins).
    state: AttachState,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.armed {
            for f in &self.state.filters {
                let egress = f.direction == Direction::Egress;
                if let Err(e) = tc::del_filter(f.ifindex, egress, f.priority, f.handle) {
                    log::warn!("cleaning up a filter after a failed attach: {e}");
                }
            }
            for q in &self.state.clsact_created {
                if let Err(e) = tc::del_clsact(q.ifindex) {
                    log::warn!("cleaning up a clsact qdisc after a failed attach: {e}");
                }
            }
            for d in &self.dirs {
                if let Err(e) = std::fs::remove_dir_all(d)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    log::warn!("cleaning up {} after a failed attach: {e}", d.display());
                }
            }
        }
    }
}

/// Writes a state file readable by its owner only (it holds the policies), through a
/// temporary file renamed into place so readers see the old text or the new one.
fn write_atomic(path: &Path, text: &str) -> Result<(), AttachError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into", path))
}

/// Creates `dir` and its missing parents, each new one accessible by its owner only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn same_topology(a: &Topology, b: &Topology) -> bool {
    a.interfaces == b.interfaces && a.next_hops == b.next_hops && a.tables == b.tables
}

/// Attaches the data path for the static configuration at `config` (a file), pinning under
/// `layout`, in TC mode `mode` (None: probe, TCX where the kernel has it). Mounts bpffs at
/// /sys/fs/bpf when it is missing and leaves it mounted (the pins live there).
pub fn attach(
    layout: &Layout,
    config: &Path,
    mode: Option<TcMode>,
) -> Result<AttachReport, AttachError> {
    attach_source(layout, &Source::read(config)?, mode)
}

/// [`attach`] for a static configuration already read (or built in, as `pktpath demo`'s).
pub fn attach_source(
    layout: &Layout,
    source: &Source,
    mode: Option<TcMode>,
) -> Result<AttachReport, AttachError> {
    let topology = Topology::from_source(source)?;
    let ifaces = resolve(&topology)?;
    if let Some(guard) = PseudoFs::Bpf.ensure()? {
        guard.keep();
    }
    let pin_dir = &layout.pin_dir;
    let dir_text = pin_dir.display().to_string();
    let state_config = layout.state(CONFIG_FILE);

    if pin_dir.exists() {
        if !state_config.exists() {
            return Err(AttachError::Foreign {
                dir: dir_text,
                state: state_config.display().to_string(),
            });
        }
        let running = open(layout)?;
        if !same_topology(&running.topology, &topology) {
            return Err(AttachError::OtherConfig { dir: dir_text });
        }
        let mut state = AttachState::read(layout)?;
        if let Some(requested) = mode
            && requested != state.mode
        {
            return Err(AttachError::OtherMode {
                dir: dir_text,
                running: state.mode,
                requested,
            });
        }
        // Same configuration: only re-create links (filters) that went missing.
        let mut report = AttachReport {
            pin_dir: dir_text,
            mode: state.mode,
            attached: Vec::new(),
            unchanged: Vec::new(),
        };
        let prog_id = match state.mode {
            TcMode::Tcx => 0,
            TcMode::Netlink => pinned_prog_id(layout)?,
        };
        let mut missing = Vec::new();
        for (_, name, d) in wanted_links(&topology) {
            let present = match state.mode {
                TcMode::Tcx => layout.link(&name, d).exists(),
                TcMode::Netlink => match state
                    .filters
                    .iter()
                    .find(|f| f.interface == name && f.direction == d)
                {
                    Some(f) => filter_present(f, prog_id)?,
                    None => false,
                },
            };
            if present {
                report.unchanged.push(format!("{name}/{}", d.name()));
            } else {
                missing.push((name, d));
            }
        }
        if !missing.is_empty() {
            let mut prog = SchedClassifier::from_pin(layout.prog()).map_err(|source| {
                AttachError::Program {
                    what: format!("opening the pinned program {}", layout.prog().display()),
                    source,
                }
            })?;
            for (name, d) in missing {
                match state.mode {
                    TcMode::Tcx => attach_link(&mut prog, layout, &name, d)?,
                    TcMode::Netlink => {
                        state
                            .filters
                            .retain(|f| !(f.interface == name && f.direction == d));
                        attach_filter(&mut prog, &name, d, &mut state)?;
                        state.write(layout)?;
                    }
                }
                report.attached.push(format!("{name}/{}", d.name()));
            }
        }
        return Ok(report);
    }

    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if !PseudoFs::Bpf.holds(parent) {
        return Err(AttachError::NotBpffs {
            dir: parent.display().to_string(),
        });
    }
    let mode = mode.unwrap_or_else(TcMode::probe);
    let mut undo = Undo {
        dirs: Vec::new(),
        state: AttachState::new(mode),
        armed: true,
    };
    std::fs::create_dir(pin_dir).map_err(io_err("create pin directory", pin_dir))?;
    undo.dirs.push(pin_dir.clone());
    let state_dir = layout.state_dir();
    if state_dir.exists() {
        // Left from a data path whose pins are gone (bpffs remounted): stale.
        std::fs::remove_dir_all(&state_dir).map_err(io_err("remove stale state", &state_dir))?;
    }
    create_private_dir(&state_dir).map_err(io_err("create state directory", &state_dir))?;
    undo.dirs.push(state_dir);

    let mut ebpf = loader::load(Object::Datapath, &[])?;
    for (name, map) in ebpf.maps() {
        let path = pin_dir.join(name);
        map.pin(&path).map_err(|source| AttachError::Pin {
            what: format!("pinning map {name} at {}", path.display()),
            source,
        })?;
    }
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DATAPATH)
        .ok_or(AttachError::NoProgram(PROG_DATAPATH))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{PROG_DATAPATH} as a TC classifier"),
            source,
        })?;
    prog.load().map_err(|source| AttachError::Program {
        what: "loading the data path program into the kernel (verifier)".to_owned(),
        source,
    })?;
    prog.pin(layout.prog()).map_err(|source| AttachError::Pin {
        what: format!("pinning the program at {}", layout.prog().display()),
        source,
    })?;
    load_tap(&mut ebpf)?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DATAPATH)
        .ok_or(AttachError::NoProgram(PROG_DATAPATH))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{PROG_DATAPATH} as a TC classifier"),
            source,
        })?;

    // Tables before links: next hops known, no policies (every packet passes).
    let mut maps = DatapathMaps::from_pins(pin_dir)?;
    maps.set_nexthops(&policy::next_hops(&topology, &ifaces)?)?;
    write_atomic(&layout.state(SLOTS_FILE), &slots_json(&Slots::default()))?;

    let mut report = AttachReport {
        pin_dir: dir_text,
        mode,
        attached: Vec::new(),
        unchanged: Vec::new(),
    };
    undo.state.write(layout)?;
    for (_, name, d) in wanted_links(&topology) {
        match mode {
            TcMode::Tcx => attach_link(prog, layout, &name, d)?,
            TcMode::Netlink => {
                attach_filter(prog, &name, d, &mut undo.state)?;
                undo.state.write(layout)?;
            }
        }
        report.attached.push(format!("{name}/{}", d.name()));
    }
    write_atomic(&state_config, source.text())?;
    undo.armed = false;
    Ok(report)
}

fn slots_json(slots: &Slots) -> String {
    serde_json::to_string_pretty(slots).expect("slots serialize")
}

/// Attaches `prog` on hook `dir` of `iface` and takes the link out of the program, so that
/// dropping the program does not detach it.
fn attach_and_take(
    prog: &mut SchedClassifier,
    iface: &str,
    dir: Direction,
    options: TcAttachOptions,
    what: &str,
) -> Result<SchedClassifierLink, AttachError> {
    let err = |source| AttachError::Program {
        what: what.to_owned(),
        source,
    };
    let id = prog
        .attach_with_options(iface, dir.attach_type(), options)
        .map_err(err)?;
    prog.take_link(id).map_err(err)
}

/// Loads the tap program and puts it where the data path tail-calls it. The pinned program
/// array keeps it loaded after this process exits.
fn load_tap(ebpf: &mut aya::Ebpf) -> Result<(), AttachError> {
    let tap: &mut SchedClassifier = ebpf
        .program_mut(PROG_TAP)
        .ok_or(AttachError::NoProgram(PROG_TAP))?
        .try_into()
        .map_err(|source| AttachError::Program {
            what: format!("{PROG_TAP} as a TC classifier"),
            source,
        })?;
    tap.load().map_err(|source| AttachError::Program {
        what: "loading the tap program into the kernel (verifier)".to_owned(),
        source,
    })?;
    let fd = tap
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|source| AttachError::Program {
            what: format!("a descriptor of {PROG_TAP}"),
            source,
        })?;
    let map = ebpf.map_mut(TAP_PROG_MAP).ok_or(AttachError::TapProgram(
        aya::maps::MapError::InvalidName {
            name: TAP_PROG_MAP.to_owned(),
        },
    ))?;
    let mut progs = aya::maps::ProgramArray::try_from(map).map_err(AttachError::TapProgram)?;
    progs.set(0, &fd, 0).map_err(AttachError::TapProgram)
}

fn attach_link(
    prog: &mut SchedClassifier,
    layout: &Layout,
    iface: &str,
    dir: Direction,
) -> Result<(), AttachError> {
    let what = format!("TCX {} attach on {iface}", dir.name());
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    let link = attach_and_take(prog, iface, dir, options, &what)?;
    let fd: FdLink = link.try_into().map_err(|source| AttachError::Link {
        what: format!("{what}: the link is not a TCX link"),
        source,
    })?;
    let path = layout.link(iface, dir);
    fd.pin(&path).map_err(|source| AttachError::Pin {
        what: format!(
            "pinning the {} link of {iface} at {}",
            dir.name(),
            path.display()
        ),
        source,
    })?;
    Ok(())
}

/// Adds the clsact qdisc to `name` unless it has one, then a cls_bpf direct-action filter
/// running `prog` on hook `dir` (priority and handle picked by the kernel); both are
/// recorded in `state`.
fn attach_filter(
    prog: &mut SchedClassifier,
    name: &str,
    dir: Direction,
    state: &mut AttachState,
) -> Result<(), AttachError> {
    let ifindex = iface::index(name)?;
    if tc::add_clsact(ifindex)? {
        state.clsact_created.push(NlQdisc {
            interface: name.to_owned(),
            ifindex,
        });
    }
    let what = format!("netlink clsact {} attach on {name}", dir.name());
    let options = TcAttachOptions::Netlink(NlOptions::default());
    let link = attach_and_take(prog, name, dir, options, &what)?;
    let (priority, handle) = match (link.priority(), link.handle()) {
        (Ok(p), Ok(h)) => (p, u32::from(h)),
        (Err(source), _) | (_, Err(source)) => return Err(AttachError::Program { what, source }),
    };
    // Dropping the link would delete the filter: it must outlive this process, and is
    // found again through the state file.
    std::mem::forget(link);
    state.filters.push(NlFilter {
        interface: name.to_owned(),
        ifindex,
        direction: dir,
        priority,
        handle,
    });
    Ok(())
}

/// An attached data path, opened from its pins.
pub struct Attached {
    pub layout: Layout,
    pub topology: Topology,
    pub maps: DatapathMaps,
}

/// Opens the data path attached at `layout`.
pub fn open(layout: &Layout) -> Result<Attached, AttachError> {
    let state_config = layout.state(CONFIG_FILE);
    if !layout.pin_dir.exists() || !state_config.exists() {
        return Err(AttachError::NotAttached {
            dir: layout.pin_dir.display().to_string(),
        });
    }
    let source = Source::read(&state_config)?;
    let topology = Topology::from_source(&source)?;
    let maps = DatapathMaps::from_pins(&layout.pin_dir)?;
    Ok(Attached {
        layout: layout.clone(),
        topology,
        maps,
    })
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub policies: usize,
    pub rules: usize,
    /// Decision trees (IPv4 and IPv6 together) and their shape.
    pub trees: usize,
    pub tree_stats: TreeStats,
    /// Bytes of classifier tables the set takes in the kernel.
    pub table_bytes: u64,
    pub generation: u32,
    /// Counter slots given to new policy ids (zeroed before the swap).
    pub fresh_slots: usize,
}

/// One policy's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyStats {
    pub id: String,
    pub priority: u32,
    pub slot: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// One interface's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IfaceStats {
    pub name: String,
    pub ifindex: u32,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    pub error_packets: u64,
}

impl IfaceStats {
    fn new(name: &str, ifindex: u32, c: IfaceCounters) -> Self {
        Self {
            name: name.to_owned(),
            ifindex,
            passed_packets: c.passed_packets,
            passed_bytes: c.passed_bytes,
            forwarded_packets: c.forwarded_packets,
            forwarded_bytes: c.forwarded_bytes,
            dropped_packets: c.dropped_packets,
            dropped_bytes: c.dropped_bytes,
            error_packets: c.error_packets,
        }
    }
}

/// Counters of the running data path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// In priority order.
    pub policies: Vec<PolicyStats>,
    pub interfaces: Vec<IfaceStats>,
}

impl Attached {
    /// The source text of the policy set last applied, if any.
    pub fn runtime_source(&self) -> Result<Option<Source>, AttachError> {
        let path = self.layout.state(RUNTIME_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Source::read(&path)?))
    }

    /// The policy set last applied (an empty one before the first apply).
    pub fn active(&self) -> Result<PolicySet, AttachError> {
        Ok(match self.runtime_source()? {
            Some(src) => PolicySet::from_source(&self.topology, &src)?,
            None => PolicySet::empty(self.topology.clone()),
        })
    }

    pub(crate) fn slots(&self) -> Result<Slots, AttachError> {
        let path = self.layout.state(SLOTS_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        serde_json::from_str(&text).map_err(|source| AttachError::State {
            path: path.display().to_string(),
            source,
        })
    }

    /// Swaps in `set` (validated against this data path's topology; `source` is its text,
    /// kept for `show`). Packets see the old set or the new one, never a mix. On error the
    /// running set stays.
    pub fn apply(&mut self, set: &PolicySet, source: &Source) -> Result<ApplyReport, AttachError> {
        let ifaces = resolve(&self.topology)?;
        let plan = self.slots()?.plan(set)?;
        let compiled = policy::compile_set(set, &ifaces, &plan.slots)?;
        self.maps
            .reset_policy_counters(plan.fresh.iter().copied())?;
        self.maps.set_nexthops(&compiled.next_hops)?;
        let Applied {
            generation,
            stats,
            arena_bytes,
            ..
        } = self.maps.apply(&compiled.tables)?;
        write_atomic(&self.layout.state(RUNTIME_FILE), source.text())?;
        write_atomic(&self.layout.state(SLOTS_FILE), &slots_json(&plan.slots))?;
        Ok(ApplyReport {
            policies: set.policies.len(),
            rules: compiled.rules.len(),
            trees: stats.trees[0] + stats.trees[1],
            tree_stats: stats,
            table_bytes: arena_bytes,
            generation,
            fresh_slots: plan.fresh.len(),
        })
    }

    /// Per-policy (priority order) and per-interface counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, AttachError> {
        let set = self.active()?;
        let slots = self.slots()?;
        let mut policies = Vec::with_capacity(set.policies.len());
        for p in &set.policies {
            let slot = slots
                .by_id
                .get(&p.id)
                .copied()
                .ok_or_else(|| AttachError::State {
                    path: self.layout.state(SLOTS_FILE).display().to_string(),
                    source: serde::de::Error::custom(format!("no slot for policy {}", p.id)),
                })?;
            let PolicyCounters { packets, bytes } = self.maps.policy_counters(slot)?;
            policies.push(PolicyStats {
                id: p.id.clone(),
                priority: p.priority,
                slot,
                packets,
                bytes,
            });
        }
        let ifaces = resolve(&self.topology)?;
        let mut interfaces = Vec::new();
        for (i, link) in self.topology.interfaces.iter().zip(&ifaces.links) {
            let c = self.maps.iface_counters(link.ifindex)?;
            interfaces.push(IfaceStats::new(&i.name, link.ifindex, c));
        }
        Ok(Stats {
            policies,
            interfaces,
        })
    }
}

/// What [`detach`] removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DetachReport {
    pub pin_dir: String,
    pub mode: TcMode,
    /// The hooks the program was removed from (`ifname/direction`).
    pub links: Vec<String>,
    pub pins: usize,
    /// Netlink mode: interfaces whose clsact qdisc (added by attach) was removed.
    pub clsact_removed: Vec<String>,
}

/// Removes the data path attached at `layout`: links first (the program stops running on
/// every interface), then the program and map pins, the state files and both directories.
pub fn detach(layout: &Layout) -> Result<DetachReport, AttachError> {
    let pin_dir = &layout.pin_dir;
    let state_dir = layout.state_dir();
    if !pin_dir.exists() {
        return Err(AttachError::NotAttached {
            dir: pin_dir.display().to_string(),
        });
    }
    if !state_dir.join(CONFIG_FILE).exists() {
        return Err(AttachError::Foreign {
            dir: pin_dir.display().to_string(),
            state: state_dir.join(CONFIG_FILE).display().to_string(),
        });
    }
    let state = AttachState::read(layout)?;
    let mut report = DetachReport {
        pin_dir: pin_dir.display().to_string(),
        mode: state.mode,
        links: Vec::new(),
        pins: 0,
        clsact_removed: Vec::new(),
    };
    if state.mode == TcMode::Netlink {
        detach_filters(layout, &state, &mut report)?;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .map_err(io_err("list", pin_dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err("list", pin_dir))?;
    entries.sort();
    // Links first, explicitly detached (not only unpinned), so no packet meets a program
    // whose maps are going away.
    for path in entries.iter().filter(|p| is_link_pin(p)) {
        let link = PinnedLink::from_pin(path).map_err(|source| AttachError::Link {
            what: format!("opening the pinned link {}", path.display()),
            source,
        })?;
        let fd = link.unpin().map_err(io_err("unpin link", path))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let name = name.trim_start_matches("link_");
        report.links.push(match name.rsplit_once('_') {
            Some((iface, dir)) => format!("{iface}/{dir}"),
            None => name.to_owned(),
        });
        aya::programs::links::Link::detach(fd).map_err(|source| AttachError::Program {
            what: format!("detaching the link {}", path.display()),
            source,
        })?;
        report.pins += 1;
    }
    for path in entries.iter().filter(|p| !is_link_pin(p)) {
        std::fs::remove_file(path).map_err(io_err("unpin", path))?;
        report.pins += 1;
    }
    std::fs::remove_dir(pin_dir).map_err(io_err("remove pin directory", pin_dir))?;
    std::fs::remove_dir_all(&state_dir).map_err(io_err("remove state directory", &state_dir))?;
    // The root goes too once no data path is left (fails harmlessly while others remain).
    let _ = std::fs::remove_dir(&layout.state_root);
    Ok(report)
}

/// Netlink mode: deletes the filters attach recorded (those still running our program on
/// the same device), then each clsact qdisc attach added, unless a filter someone else
/// added is still on it.
fn detach_filters(
    layout: &Layout,
    state: &AttachState,
    report: &mut DetachReport,
) -> Result<(), AttachError> {
    let prog_id = pinned_prog_id(layout)?;
    for f in &state.filters {
        report
            .links
            .push(format!("{}/{}", f.interface, f.direction.name()));
        if filter_present(f, prog_id)? {
            tc::del_filter(
                f.ifindex,
                f.direction == Direction::Egress,
                f.priority,
                f.handle,
            )?;
        } else {
            log::info!(
                "the {} filter on {} is already gone",
                f.direction.name(),
                f.interface
            );
        }
    }
    for q in &state.clsact_created {
        if iface::index(&q.interface).ok() != Some(q.ifindex) {
            continue; // the device (and its qdisc) went away
        }
        let others = tc::filters(q.ifindex, false)?.len() + tc::filters(q.ifindex, true)?.len();
        if others > 0 {
            log::warn!(
                "keeping the clsact qdisc on {}: {others} filters not added by pktpath are on it",
                q.interface
            );
            continue;
        }
        tc::del_clsact(q.ifindex)?;
        report.clsact_removed.push(q.interface.clone());
    }
    Ok(())
}

fn is_link_pin(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
}
