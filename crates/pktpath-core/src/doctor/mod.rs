//! `pktpath doctor`: what the running kernel offers, learned by loading and attaching tiny
//! programs (never by version number), and which pktpath features depend on each answer.

mod probes;

use serde::Serialize;

use crate::sys::{
    caps::{Capability, Privileges},
    mounts::PseudoFs,
};

/// The pktpath features a kernel feature is needed by.
pub mod uses {
    pub const TRACE: &str = "trace";
    pub const TRACE_DROPS: &str = "trace drop reasons";
    pub const ROUTE: &str = "route";
    pub const ROUTE_GET: &str = "route get";
    pub const ROUTE_PERSIST: &str = "route attach (pinning)";
    pub const FUTURE_HOOKS: &str = "extra trace hooks (not needed here)";
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

/// Everything doctor found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel_release: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// The check with this id.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Whether everything `pktpath trace` and `pktpath route` need is available.
    pub fn ready(&self) -> bool {
        [
            "btf",
            "tp_btf",
            "tracepoint",
            "ringbuf",
            "tc_netlink",
            "prog_test_run",
        ]
        .iter()
        .all(|id| self.get(id).is_some_and(|c| c.available))
    }
}

/// Runs one kernel probe of [`run`] on its own (`tcx`, `tc_netlink`, ...): Ok with what it
/// learned when the kernel offers the feature, Err with the kernel's reason otherwise.
/// `route attach` uses it to pick its TC attach mode.
pub fn probe(id: &str) -> Result<Option<String>, String> {
    probes::run_one(id)
}

/// Options for [`run`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Mount bpffs and tracefs where missing, and leave them mounted.
    pub mount: bool,
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
        ("cap_perfmon", Capability::Perfmon, &[uses::TRACE][..]),
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

    checks.extend(probes::run());
    Report {
        kernel_release: kernel_release(),
        checks,
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
