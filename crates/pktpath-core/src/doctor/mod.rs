//! `pktpath doctor`: what the running kernel offers, learned by loading and attaching tiny
//! programs (never by version number), which pktpath features depend on each answer, and
//! what this user, with these capabilities, may run (see [`crate::access`]).
//!
//! Probes that attach in a scratch network namespace (TC, TCX, XDP) need CAP_SYS_ADMIN to
//! create it; without it they judge by what needs no namespace (the program loads, the hook
//! answers a query, the capability is held). kprobes and fentry are informational: pktpath
//! uses neither. Tunnel link types (`tunnel_gre`, ...) are informational too: each is
//! created in a scratch namespace.

mod probes;
mod tunnels;

pub use tunnels::KINDS as TUNNEL_KINDS;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    access::{self, Command},
    route::datapath::{attach, state_root},
    sys::{
        caps::{Capability, Privileges},
        mounts::PseudoFs,
    },
};

/// The pktpath features a kernel feature is needed by.
pub mod uses {
    pub const TRACE: &str = "trace";
    pub const TRACE_DROPS: &str = "trace drop reasons";
    pub const ROUTE: &str = "route";
    pub const ROUTE_GET: &str = "route get";
    pub const ROUTE_PERSIST: &str = "route attach (pinning)";
    pub const FUTURE_HOOKS: &str = "extra trace hooks (not needed here)";
    pub const TRACE_TUNNELS: &str = "trace through tunnels";
    pub const ROUTE_XDP: &str = "route attach --hook xdp";
}

/// The answer for one kernel feature.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Stable identifier (`tp_btf`, `tcx`, ...).
    pub id: &'static str,
    /// What a person reads.
    pub feature: &'static str,
    pub available: bool,
    /// Why not, as the kernel said it.
    pub error: Option<String>,
    /// Extra facts learned by the probe.
    pub detail: Option<String>,
    /// pktpath features that need it.
    pub used_by: Vec<&'static str>,
    /// Whether `ready` depends on it (false: informational, pktpath does not need it).
    pub needed: bool,
}

impl Check {
    fn new(id: &'static str, feature: &'static str, used_by: &[&'static str]) -> Self {
        Self {
            id,
            feature,
            available: false,
            error: None,
            detail: None,
            used_by: used_by.to_vec(),
            needed: NEEDED.contains(&id),
        }
    }

    fn result<E: std::fmt::Display>(mut self, r: Result<Option<String>, E>) -> Self {
        match r {
            Ok(detail) => {
                self.available = true;
                self.detail = detail;
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }
}

/// The checks `ready` depends on: what `pktpath trace` and `pktpath route` need, and the
/// directories route attach writes.
pub const NEEDED: [&str; 8] = [
    "btf",
    "tp_btf",
    "tracepoint",
    "ringbuf",
    "tc_netlink",
    "prog_test_run",
    "state_dir",
    "pin_dir",
];

/// Whether this process may run one command, by its capabilities.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CommandAccess {
    /// `route attach`, `trace`, ...
    pub command: &'static str,
    /// The capabilities it needs (none: file access to the data path only).
    pub needs: Vec<&'static str>,
    /// Those this process lacks.
    pub missing: Vec<&'static str>,
    /// What else it takes.
    pub note: &'static str,
}

/// Everything doctor found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel_release: String,
    pub checks: Vec<Check>,
    /// What this user may run with the capabilities it has.
    pub commands: Vec<CommandAccess>,
}

impl Report {
    /// The check with this id.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The needed checks that failed (informational ones never count).
    pub fn missing(&self) -> Vec<&'static str> {
        NEEDED
            .iter()
            .copied()
            .filter(|id| !self.get(id).is_some_and(|c| c.available))
            .collect()
    }

    /// Whether everything `pktpath trace` and `pktpath route` need is available.
    pub fn ready(&self) -> bool {
        self.missing().is_empty()
    }
}

/// Runs one kernel probe of [`run`] on its own (`tcx`, `tc_netlink`, ...): Ok with what it
/// learned when the kernel offers the feature, Err with the kernel's reason otherwise.
/// `route attach` uses it to pick its TC attach mode.
pub fn probe(id: &str) -> Result<Option<String>, String> {
    match tunnels::KINDS.iter().find(|(tid, ..)| *tid == id) {
        Some((_, kind, _)) => tunnels::probe(kind),
        None => probes::run_one(id),
    }
}

/// Options for [`run`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Mount bpffs and tracefs where missing, and leave them mounted.
    pub mount: bool,
    /// The state root route attach would write (None: [`state_root::choose`]'s default).
    pub state_root: Option<PathBuf>,
    /// The pin directory route attach would create (None: the default pin directory).
    pub pin_dir: Option<PathBuf>,
}

/// Probes the running kernel.
pub fn run(opts: Options) -> Report {
    let privs = Privileges::current();
    let mut checks = Vec::new();

    checks.push(
        Check::new("root", "running as root", &[]).result(if privs.euid == 0 {
            Ok(None)
        } else {
            Err(format!("effective uid is {}", privs.euid))
        }),
    );
    for (id, cap, used_by) in [
        ("cap_bpf", Capability::Bpf, &[uses::TRACE, uses::ROUTE][..]),
        ("cap_net_admin", Capability::NetAdmin, &[uses::ROUTE][..]),
        (
            "cap_perfmon",
            Capability::Perfmon,
            &[uses::TRACE, uses::ROUTE][..],
        ),
    ] {
        let r = if privs.has(cap) {
            Ok(None)
        } else {
            Err(format!("{cap} is not in the effective set"))
        };
        checks.push(Check::new(id, cap.name(), used_by).result(r));
    }

    for (id, fs, used_by) in [
        ("bpffs", PseudoFs::Bpf, &[uses::ROUTE_PERSIST][..]),
        ("tracefs", PseudoFs::Trace, &[uses::TRACE][..]),
    ] {
        let mut check = Check::new(
            id,
            if id == "bpffs" {
                "bpffs mounted"
            } else {
                "tracefs mounted"
            },
            used_by,
        );
        let r = if fs.is_mounted() {
            Ok(Some(format!("at {}", fs.path().display())))
        } else if opts.mount {
            match fs.ensure() {
                Ok(guard) => {
                    if let Some(g) = guard {
                        g.keep();
                    }
                    Ok(Some(format!("mounted now at {}", fs.path().display())))
                }
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err(format!(
                "not mounted at {}; `pktpath doctor --mount` mounts it",
                fs.path().display()
            ))
        };
        check = check.result(r);
        checks.push(check);
    }

    let root = state_root::choose(opts.state_root.as_deref());
    checks.push(
        Check::new(
            "state_dir",
            "state directory writable",
            &[uses::ROUTE_PERSIST],
        )
        .result(writable_dir(&root, "pass --state-dir DIR (or set PKTPATH_STATE_DIR) naming a directory this user can write")),
    );
    let pin_dir = opts
        .pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(attach::DEFAULT_PIN_DIR));
    checks.push(
        Check::new("pin_dir", "pin directory writable", &[uses::ROUTE_PERSIST]).result(
            if pin_dir.exists() {
                writable_dir(&pin_dir, "run as the user who attached the data path there")
            } else {
                writable_dir(
                    pin_dir.parent().unwrap_or(Path::new("/")),
                    "have root create a directory for this user under it (install -d -m 0700 -o USER DIR) and pass --pin-dir DIR/pktpath",
                )
                .map(|d| d.map(|d| format!("{d}; {} can be created", pin_dir.display())))
            },
        ),
    );

    checks.extend(probes::run());
    checks.extend(tunnels::run());
    let commands = Command::ALL
        .iter()
        .map(|&c| CommandAccess {
            command: c.name(),
            needs: c.needs().iter().map(|n| n.name()).collect(),
            missing: privs.lacking(c.needs()).iter().map(|n| n.name()).collect(),
            note: c.note(),
        })
        .collect();
    Report {
        kernel_release: kernel_release(),
        checks,
        commands,
    }
}

/// Ok when this process may create entries in `dir`, or in its nearest existing ancestor
/// when `dir` does not exist yet; the error says what to do (`fix`).
fn writable_dir(dir: &Path, fix: &str) -> Result<Option<String>, String> {
    let uid = Privileges::current().euid;
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    if access::may_write_dir(existing) {
        Ok(Some(if existing == dir {
            format!("{} (uid {uid})", dir.display())
        } else {
            format!("{} can be created (uid {uid})", dir.display())
        }))
    } else {
        Err(format!(
            "{} is not writable by uid {uid}; {fix}",
            existing.display()
        ))
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
