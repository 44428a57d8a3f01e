//! Options shared by the commands that change a data path (`route attach/apply/detach`,
//! `agent`): the TC mode to attach in, and how long to wait for another writer.

use std::time::Duration;

use pktpath_core::route::datapath::attach::{TcMode, XdpMode};

/// How to hook the data path into TC.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TcModeArg {
    /// TCX where the kernel has it (probed), netlink clsact otherwise.
    Auto,
    /// TCX links (bpf_link, Linux 6.6+), pinned.
    Tcx,
    /// A clsact qdisc and cls_bpf direct-action filters, over netlink.
    Netlink,
}

impl TcModeArg {
    /// The mode forced, or None to probe.
    pub fn mode(self) -> Option<TcMode> {
        match self {
            Self::Auto => None,
            Self::Tcx => Some(TcMode::Tcx),
            Self::Netlink => Some(TcMode::Netlink),
        }
    }
}

/// Which hook runs the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookArg {
    /// TC only (ingress and egress, as configured).
    Tc,
    /// XDP on each ingress interface in front of TC, which stays attached and decides
    /// what XDP passes on (marks, packets the stack must see).
    Xdp,
}

/// Where XDP runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native where the driver has it (veth does), generic otherwise.
    Auto,
    /// In the driver; refused where the driver lacks it.
    Native,
    /// On the skb in the kernel's receive path (any device; slower).
    Generic,
}

impl HookArg {
    /// The XDP mode to attach with, None for TC only; `--xdp-mode` without `--hook xdp` is
    /// a mistake.
    pub fn xdp(self, mode: Option<XdpModeArg>) -> anyhow::Result<Option<XdpMode>> {
        let mode = match mode {
            None | Some(XdpModeArg::Auto) => XdpMode::Auto,
            Some(XdpModeArg::Native) => XdpMode::Native,
            Some(XdpModeArg::Generic) => XdpMode::Generic,
        };
        match self {
            Self::Xdp => Ok(Some(mode)),
            Self::Tc if matches!(mode, XdpMode::Auto) => Ok(None),
            Self::Tc => anyhow::bail!("--xdp-mode applies to --hook xdp; add --hook xdp"),
        }
    }
}

/// `--wait SECONDS`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArg {
    /// How long to wait for another pktpath changing the same data path (one writer at a
    /// time) before giving up.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = "PKTPATH_WAIT",
        default_value = "20",
        value_parser = parse_wait
    )]
    pub wait: Duration,
}

/// A number of seconds, fractions allowed, up to a day.
fn parse_wait(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0 to 86400 (e.g. 20, or 0.5)"
        )),
    }
}
