//! Who may run what: the capabilities each pktpath command needs (found by running each one
//! as an unprivileged user with capabilities only, see docs/privileges.md), and the file
//! access the route verbs need to a data path's pins and state files.
//!
//! The state files (mode 0600, directories 0700) and the pins (bpffs creates them 0600)
//! belong to the user who attached the data path: that user, with the capabilities below,
//! or root runs the other verbs on it.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::{
    route::datapath::attach::Layout,
    sys::caps::{Capability, MissingCapability, Privileges},
};

/// A command whose privileges pktpath knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    RouteCheck,
    RouteAttach,
    RouteApply,
    RouteShow,
    RouteStats,
    RouteGet,
    RouteDetach,
    Trace,
    Doctor,
}

use Capability::{Bpf, NetAdmin, Perfmon};

impl Command {
    /// Every command, in the order `pktpath doctor` lists them.
    pub const ALL: [Self; 9] = [
        Self::RouteCheck,
        Self::RouteAttach,
        Self::RouteApply,
        Self::RouteShow,
        Self::RouteStats,
        Self::RouteGet,
        Self::RouteDetach,
        Self::Trace,
        Self::Doctor,
    ];

    /// The command as typed (`route attach`).
    pub fn name(self) -> &'static str {
        match self {
            Self::RouteCheck => "route check",
            Self::RouteAttach => "route attach",
            Self::RouteApply => "route apply",
            Self::RouteShow => "route show",
            Self::RouteStats => "route stats",
            Self::RouteGet => "route get",
            Self::RouteDetach => "route detach",
            Self::Trace => "trace",
            Self::Doctor => "doctor",
        }
    }

    /// The capabilities the command needs, and no more.
    pub fn needs(self) -> &'static [Capability] {
        match self {
            // Loading the data path: CAP_BPF; CAP_PERFMON because the verifier admits its
            // packet-pointer arithmetic only then; TCX links or tc filters: CAP_NET_ADMIN.
            Self::RouteAttach => &[Bpf, NetAdmin, Perfmon],
            // A new generation of tables is new maps.
            Self::RouteApply => &[Bpf],
            // Opening pins and state files the user owns, reading maps, a test run of the
            // pinned program, unpinning TCX links: file permissions only.
            Self::RouteCheck
            | Self::RouteShow
            | Self::RouteStats
            | Self::RouteGet
            | Self::RouteDetach => &[],
            Self::Trace => &[Bpf, Perfmon],
            Self::Doctor => &[Bpf, NetAdmin, Perfmon],
        }
    }

    /// What else it takes, beyond [`Self::needs`], in a few words.
    pub fn note(self) -> &'static str {
        match self {
            Self::RouteCheck => "reads only the files it is given",
            Self::RouteShow | Self::RouteStats | Self::RouteGet | Self::RouteApply => {
                "as the user who attached the data path (owner of its pins and state files)"
            }
            Self::RouteDetach => {
                "as the user who attached the data path; CAP_NET_ADMIN too with a slow path (the default) or in netlink mode"
            }
            Self::RouteAttach => {
                "a writable state directory and pin directory parent (see doctor's checks)"
            }
            Self::Trace => {
                "CAP_SYS_ADMIN too for --iface with --netns; following a data path: its owner"
            }
            Self::Doctor => "CAP_SYS_ADMIN lets it attach in scratch network namespaces",
        }
    }

    /// Why, in a few words (the reason in a missing-capability error).
    pub fn why(self) -> &'static str {
        match self {
            Self::RouteAttach => {
                "route attach loads the data path (CAP_BPF, and CAP_PERFMON for the verifier to accept its packet arithmetic) and hooks it into TC (CAP_NET_ADMIN)"
            }
            Self::RouteApply => "route apply creates the maps of the new tables (CAP_BPF)",
            Self::Trace => {
                "trace loads BPF programs (CAP_BPF) and attaches them to BTF tracepoints (CAP_PERFMON)"
            }
            Self::Doctor => {
                "doctor loads and attaches probe programs (CAP_BPF, CAP_PERFMON) and judges TC attach (CAP_NET_ADMIN)"
            }
            _ => "",
        }
    }

    /// Fails with the first capability the command needs that this process lacks.
    pub fn require(self, privs: &Privileges) -> Result<(), MissingCapability> {
        privs.require(self.needs(), self.why())
    }
}

/// What `route detach` needs besides file access for a data path attached in netlink mode:
/// removing tc filters.
pub const DETACH_NETLINK_NEEDS: &[Capability] = &[NetAdmin];

/// A route verb cannot reach the files it needs.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "cannot create the state directory {state_dir}: {denied} is not writable by uid {uid}; pass --state-dir DIR (or set PKTPATH_STATE_DIR) naming a directory this user can write"
    )]
    StateRoot {
        state_dir: PathBuf,
        denied: PathBuf,
        uid: u32,
    },
    #[error(
        "cannot create the pin directory {pin_dir}: {parent} is not writable by uid {uid}; have root create a directory for this user (`install -d -m 0700 -o USER {parent}/USER`) and pin under it (--pin-dir {parent}/USER/pktpath)"
    )]
    PinParent {
        pin_dir: PathBuf,
        parent: PathBuf,
        uid: u32,
    },
    #[error(
        "{path} belongs to uid {owner}, not to uid {uid}: run this as the user who attached the data path, or as root"
    )]
    NotOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "the data path pinned at {pin_dir} has no state under {state_root} that uid {uid} can read; give the --state-dir (or PKTPATH_STATE_DIR) it was attached with"
    )]
    NoState {
        pin_dir: PathBuf,
        state_root: PathBuf,
        uid: u32,
    },
}

/// Whether this process may access `path` in `mode` (`libc::R_OK`, ...), judged with its
/// effective ids and capabilities, as an open would be.
fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// Whether this process may create and remove entries in directory `dir`.
pub fn may_write_dir(dir: &Path) -> bool {
    may(dir, libc::W_OK | libc::X_OK)
}

fn owner(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.uid())
}

/// The nearest existing directory at or above `dir`.
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
}

/// Checks, before `command` touches anything, that this process can reach the pins and
/// state files of the data path at `layout`: one line saying what to fix when it cannot.
/// Capabilities are [`Command::require`]'s.
pub fn check_files(command: Command, layout: &Layout) -> Result<(), AccessError> {
    let uid = Privileges::current().euid;
    let prog = layout.prog();
    let state_dir = layout.state_dir();
    let attached = prog.exists();
    if attached {
        if !may(&prog, libc::R_OK | libc::W_OK) {
            return Err(AccessError::NotOwner {
                owner: owner(&prog),
                path: prog,
                uid,
            });
        }
        // The pins are this user's: a state root it cannot enter, or without the state
        // directory, is not the one the data path was attached with.
        let root = &layout.state_root;
        if (root.exists() && !may(root, libc::X_OK)) || !state_dir.exists() {
            return Err(AccessError::NoState {
                pin_dir: layout.pin_dir.clone(),
                state_root: root.clone(),
                uid,
            });
        }
        if !may(&state_dir, libc::R_OK | libc::W_OK | libc::X_OK) {
            return Err(AccessError::NotOwner {
                owner: owner(&state_dir),
                path: state_dir,
                uid,
            });
        }
        return Ok(());
    }
    if command != Command::RouteAttach {
        // A directory on the way this user may not enter hides the pins.
        let visible = existing_ancestor(&layout.pin_dir);
        if visible != layout.pin_dir.as_path() && !may(visible, libc::X_OK) {
            return Err(AccessError::NotOwner {
                owner: owner(visible),
                path: visible.to_path_buf(),
                uid,
            });
        }
        // Nothing attached: the verb says so itself.
        return Ok(());
    }
    let denied = existing_ancestor(&state_dir);
    if !may(denied, libc::W_OK | libc::X_OK) {
        return Err(AccessError::StateRoot {
            denied: denied.to_path_buf(),
            state_dir,
            uid,
        });
    }
    if !layout.pin_dir.exists()
        && let Some(parent) = layout.pin_dir.parent()
        && parent.exists()
        && !may(parent, libc::W_OK | libc::X_OK)
    {
        return Err(AccessError::PinParent {
            pin_dir: layout.pin_dir.clone(),
            parent: parent.to_path_buf(),
            uid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_needs_what_docs_say() {
        assert_eq!(Command::RouteAttach.needs(), &[Bpf, NetAdmin, Perfmon]);
        assert_eq!(Command::RouteApply.needs(), &[Bpf]);
        assert_eq!(Command::Trace.needs(), &[Bpf, Perfmon]);
        for c in [
            Command::RouteCheck,
            Command::RouteShow,
            Command::RouteStats,
            Command::RouteGet,
            Command::RouteDetach,
        ] {
            assert!(c.needs().is_empty(), "{}", c.name());
        }
    }

    #[test]
    fn missing_capability_names_the_command_and_all_it_needs() {
        let p = Privileges::from_parts(65534, 1 << Bpf as u32);
        let msg = Command::RouteAttach.require(&p).unwrap_err().to_string();
        assert!(
            msg.starts_with("missing capability CAP_NET_ADMIN: route attach loads"),
            "{msg}"
        );
        assert!(
            msg.contains("AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON"),
            "{msg}"
        );
        assert!(Command::RouteApply.require(&p).is_ok());
        assert!(
            Command::RouteShow
                .require(&Privileges::from_parts(65534, 0))
                .is_ok()
        );
    }

    #[test]
    fn state_root_not_writable_says_state_dir() {
        let err = AccessError::StateRoot {
            state_dir: "/run/pktpath/sys-fs-bpf-pktpath".into(),
            denied: "/run".into(),
            uid: 65534,
        };
        let msg = err.to_string();
        assert!(
            msg.contains("--state-dir") && msg.contains("PKTPATH_STATE_DIR"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
    }
}
