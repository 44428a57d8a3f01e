//! Harness for pktpath's privileged integration tests: RAII guards for every kernel change a
//! test makes (network namespaces, veth pairs, addresses, routes, sysctls, clsact qdiscs,
//! nftables tables, bpffs pins) and ready-made topologies.
//!
//! Every guard undoes its change on drop, panics included. Names are unique per process and
//! per call, so tests run in parallel. Namespaces left by a test process that was killed are
//! swept by the next run (their names carry the dead process's pid).

pub mod datapath;
pub mod guards;
pub mod names;
pub mod objects;
pub mod rulesets;
pub mod run;
pub mod topo;
pub mod trace;
pub mod txring;

pub use guards::{
    AddrGuard, BpffsGuard, ClsactGuard, EthtoolFlag, EthtoolGuard, LinkGuard, NetnsGuard,
    NftTableGuard, OwnedDirGuard, PinGuard, RootQdiscGuard, RouteGuard, SysctlGuard, VethGuard,
};
pub use topo::{RouterLab, TwoHosts};

/// Panics with a clear message unless running as root: privileged tests are never skipped.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged test: run the suite as root (the README's test command does); it is never skipped"
    );
    names::sweep_stale();
}
