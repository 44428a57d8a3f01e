//! Which variant of the data path's programs this kernel runs.
//!
//! The classifier walks a packet's subtrees in a loop the verifier checks once. Where the
//! kernel has the `may_goto` instruction (6.9 or later), a step of that loop costs a
//! counter's decrement; elsewhere each step is a call of a `bpf_loop` callback, some 11 ns
//! on a kernel with retpolines and the SRSO mitigation. The data path object holds each
//! program in both variants (`pktpath_tc` and `pktpath_tc_old`, `pktpath_xdp` and
//! `pktpath_xdp_old`, same maps); `route attach` loads the one `pktpath doctor`'s
//! `may_goto` probe finds the kernel runs.

use std::sync::OnceLock;

use pktpath_common::route::{PROG_DATAPATH, PROG_DATAPATH_OLD, PROG_XDP, PROG_XDP_OLD};
use serde::Serialize;

/// Environment variable that picks the variant instead of the probe: `may_goto` or
/// `bpf_loop` (to compare them, or to run the older one on any kernel).
pub const LOOP_ENV: &str = "PKTPATH_DATAPATH_LOOP";

/// How the classifier of a data path program loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopKind {
    MayGoto,
    BpfLoop,
}

impl LoopKind {
    /// The TC program of this variant.
    pub fn tc_program(self) -> &'static str {
        match self {
            Self::MayGoto => PROG_DATAPATH,
            Self::BpfLoop => PROG_DATAPATH_OLD,
        }
    }

    /// The XDP program of this variant.
    pub fn xdp_program(self) -> &'static str {
        match self {
            Self::MayGoto => PROG_XDP,
            Self::BpfLoop => PROG_XDP_OLD,
        }
    }

    /// As [`LOOP_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::MayGoto => "may_goto",
            Self::BpfLoop => "bpf_loop",
        }
    }

    /// The variant for the running kernel: [`LOOP_ENV`] when set, otherwise `may_goto`
    /// where the kernel loads it. Probed once per process.
    pub fn for_kernel() -> Result<Self, String> {
        static KIND: OnceLock<Result<LoopKind, String>> = OnceLock::new();
        KIND.get_or_init(|| match std::env::var(LOOP_ENV) {
            Ok(v) => [Self::MayGoto, Self::BpfLoop]
                .into_iter()
                .find(|k| k.name() == v)
                .ok_or_else(|| format!("{LOOP_ENV}={v}: write may_goto or bpf_loop")),
            Err(_) => Ok(match crate::doctor::probe("may_goto") {
                Ok(_) => Self::MayGoto,
                Err(_) => Self::BpfLoop,
            }),
        })
        .clone()
    }
}
