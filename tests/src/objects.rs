//! The eBPF objects that exist only for tests and benchmarks (crates/pktpath-ebpf-test),
//! built by this crate's build.rs and embedded here, never in the `pktpath` binary; loaded
//! through `pktpath_core::loader::load_elf`.

use anyhow::Context as _;
use aya::Ebpf;
use pktpath_core::loader::{self, GlobalValue};

/// One of the test and benchmark objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestObject {
    /// A classifier that runs a packet filter on a frame (filter tests).
    FilterTest,
    /// Benchmark baselines: rewrite MACs and redirect, nothing else (at TC and at XDP).
    Floor,
    /// Benchmark baseline: classify by a linear scan over the policies.
    Linear,
    /// Benchmark baseline: an empty program for each tracer hook (`floor_<tracepoint>`).
    HookFloor,
}

impl TestObject {
    /// The object's ELF bytes.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::FilterTest => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filtertest"))
            }
            Self::Floor => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor")),
            Self::Linear => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linear")),
            Self::HookFloor => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookfloor")),
        }
    }
}

/// Loads `object` (creating its maps; programs are loaded by the caller) with the given
/// load-time globals.
pub fn load(object: TestObject, globals: &[(&str, GlobalValue)]) -> anyhow::Result<Ebpf> {
    loader::load_elf(object.bytes(), globals)
        .with_context(|| format!("loading the {object:?} eBPF object failed"))
}
