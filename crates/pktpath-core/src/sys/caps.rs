//! Privileges: the effective user and the capabilities pktpath's features need.

use std::fmt;

/// The Linux capabilities pktpath cares about, with their kernel numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// The capability's name as in capabilities(7).
    pub fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability the current process lacks.
#[derive(Debug, thiserror::Error)]
#[error("missing capability {cap}: {why}; {}", hint(*.cap, .needs))]
pub struct MissingCapability {
    pub cap: Capability,
    pub why: &'static str,
    /// Every capability the command needs (the one missing among them).
    pub needs: &'static [Capability],
}

/// What to do about a missing capability: root, or exactly the capabilities `needs`.
fn hint(cap: Capability, needs: &[Capability]) -> String {
    if cap == Capability::SysAdmin || needs.contains(&Capability::SysAdmin) {
        // Namespaces under /run/netns and mounts: root, not a file capability.
        return "run pktpath as root (sudo)".into();
    }
    let names: Vec<&str> = needs.iter().map(|c| c.name()).collect();
    let lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    format!(
        "run pktpath as root (sudo), or with exactly {} (systemd: AmbientCapabilities={}; or `setcap {}+ep $(command -v pktpath)`)",
        names.join(", "),
        names.join(" "),
        lower.join(",")
    )
}

/// The effective user and capability set of this process.
#[derive(Clone, Copy, Debug)]
pub struct Privileges {
    pub euid: u32,
    effective: u64,
}

impl Privileges {
    /// Reads the effective uid and the effective capability set (`CapEff` in /proc/self/status).
    pub fn current() -> Self {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        let effective = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_cap_eff(&s))
            .unwrap_or(0);
        Self { euid, effective }
    }

    /// Builds a value from known parts (for tests and reports).
    pub fn from_parts(euid: u32, effective: u64) -> Self {
        Self { euid, effective }
    }

    /// Whether the effective set holds `cap`. CAP_SYS_ADMIN stands in for CAP_BPF and
    /// CAP_PERFMON on kernels that predate them, as the kernel itself allows.
    pub fn has(&self, cap: Capability) -> bool {
        let bit = |c: Capability| self.effective & (1u64 << c as u32) != 0;
        bit(cap)
            || (matches!(cap, Capability::Bpf | Capability::Perfmon) && bit(Capability::SysAdmin))
    }

    /// Fails with the first of `caps` this process lacks.
    pub fn require(
        &self,
        caps: &'static [Capability],
        why: &'static str,
    ) -> Result<(), MissingCapability> {
        match caps.iter().find(|&&c| !self.has(c)) {
            Some(&cap) => Err(MissingCapability {
                cap,
                why,
                needs: caps,
            }),
            None => Ok(()),
        }
    }

    /// The capabilities of `caps` this process lacks.
    pub fn lacking(&self, caps: &[Capability]) -> Vec<Capability> {
        caps.iter().copied().filter(|&c| !self.has(c)).collect()
    }
}

/// Extracts the `CapEff:` hex mask from the text of /proc/PID/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn missing_capability_is_named_with_what_to_do() {
        let p = Privileges::from_parts(1000, 1 << Capability::NetAdmin as u32);
        let err = p
            .require(&[Capability::NetAdmin, Capability::Bpf], "loading programs")
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("missing capability CAP_BPF: loading programs"),
            "{msg}"
        );
        assert!(msg.contains("sudo"), "{msg}");
        assert!(
            msg.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_BPF")
                && msg.contains("setcap cap_net_admin,cap_bpf+ep"),
            "{msg}"
        );
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let p = Privileges::from_parts(0, 1 << Capability::SysAdmin as u32);
        assert!(p.has(Capability::Bpf) && p.has(Capability::Perfmon));
        assert!(!p.has(Capability::NetAdmin));
    }
}
