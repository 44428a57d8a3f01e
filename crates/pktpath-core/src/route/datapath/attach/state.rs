//! The state files of an attached data path (in [`Layout::state_dir`]): `attach.json`
//! (how the program is hooked in) and one `set-G.json` per table generation G (the policy
//! set whose tables that generation holds).
//!
//! An apply writes the set file before the generation's tables, and tags it with the apply
//! serial (`RouteState::active`) it becomes active as. A reader takes the serial,
//! then the file of generation `serial % 2`, and accepts it when the file carries that
//! serial and the serial has not moved: the file and the tables are then the same set.

use std::{
    io,
    path::{Path, PathBuf},
};

use pktpath_common::route::GENERATIONS;
use serde::{Deserialize, Serialize};

use super::{ATTACH_FILE, AttachError, Direction, Layout, TcMode, XdpState, io_err};
use crate::route::datapath::{policy::Slots, slow_path::SlowPlan};

/// `attach.json`: how the data path is hooked in, and in netlink mode what attach created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttachState {
    pub(super) mode: TcMode,
    /// Whether attach or detach finished; a writer killed midway leaves the phase it was in.
    #[serde(default)]
    pub(super) phase: Phase,
    /// The interfaces attach hooks into (where a rollback looks for filters it had not
    /// recorded yet).
    #[serde(default)]
    pub(super) interfaces: Vec<String>,
    /// Netlink mode: one cls_bpf filter per hook.
    #[serde(default)]
    pub(super) filters: Vec<NlFilter>,
    /// Netlink mode: the clsact qdiscs attach added (those that existed before stay).
    #[serde(default)]
    pub(super) clsact_created: Vec<NlQdisc>,
    /// The slow path's routes and rules (see `datapath::slow_path`), recorded before any is
    /// installed: a rollback or detach removes those that exist.
    #[serde(default, skip_serializing_if = "SlowPlan::is_empty")]
    pub(super) slow_path: SlowPlan,
    /// With the XDP hook (`route attach --hook xdp`): the mode asked for and each
    /// interface's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) xdp: Option<XdpState>,
}

impl AttachState {
    pub(super) fn new(mode: TcMode) -> Self {
        Self {
            mode,
            phase: Phase::Attached,
            interfaces: Vec::new(),
            filters: Vec::new(),
            clsact_created: Vec::new(),
            slow_path: SlowPlan::default(),
            xdp: None,
        }
    }

    /// The state of the data path at `layout`; TCX when there is no `attach.json` (data
    /// paths attached before the file existed were TCX only).
    pub(super) fn read(layout: &Layout) -> Result<Self, AttachError> {
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

    pub(super) fn write(&self, layout: &Layout) -> Result<(), AttachError> {
        let text = serde_json::to_string_pretty(self).expect("attach state serializes");
        write_atomic(&layout.state(ATTACH_FILE), &text)
    }
}

/// How far attach or detach got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    /// Attach began; until it finishes, the next writer rolls it back.
    Attaching,
    #[default]
    Attached,
    /// Detach began; the next writer finishes it.
    Detaching,
}

/// A cls_bpf filter attach created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NlFilter {
    pub(super) interface: String,
    /// The interface's index when the filter was added: a recreated interface with the
    /// same name is another device, whose filters are not ours.
    pub(super) ifindex: u32,
    pub(super) direction: Direction,
    pub(super) priority: u16,
    pub(super) handle: u32,
}

/// A clsact qdisc attach added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NlQdisc {
    pub(super) interface: String,
    pub(super) ifindex: u32,
}

/// Writes a state file readable by its owner only (it holds the policies), through a
/// temporary file renamed into place so readers see the old text or the new one.
pub(super) fn write_atomic(path: &Path, text: &str) -> Result<(), AttachError> {
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
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `set-G.json`: the policy set generation G holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetFile {
    /// The apply serial that made (or makes) this generation active.
    pub(super) serial: u32,
    /// The runtime configuration as `apply` was given it (None before the first apply).
    pub(super) name: Option<String>,
    pub(super) text: Option<String>,
    /// The counter slot of each policy id.
    pub(super) slots: Slots,
}

impl SetFile {
    pub(super) fn path(layout: &Layout, serial: u32) -> PathBuf {
        layout
            .state_dir()
            .join(format!("set-{}.json", serial % GENERATIONS))
    }

    /// The file of the generation `serial` uses, if there is one.
    pub(super) fn read(layout: &Layout, serial: u32) -> Result<Option<Self>, AttachError> {
        let path = Self::path(layout, serial);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| AttachError::State {
                path: path.display().to_string(),
                source,
            })
    }

    pub(super) fn write(&self, layout: &Layout) -> Result<(), AttachError> {
        let text = serde_json::to_string(self).expect("set file serializes");
        write_atomic(&Self::path(layout, self.serial), &text)
    }
}
