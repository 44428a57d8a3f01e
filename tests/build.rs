//! Builds the eBPF objects that exist only for tests and benchmarks (crates/pktpath-ebpf-test:
//! filtertest, floor, linear, hookfloor) with the nightly toolchain and bpf-linker, into
//! OUT_DIR, where `objects` embeds them. pktpath-core's build.rs builds the shipped ones.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest
        .parent()
        .ok_or_else(|| anyhow!("pktpath-tests has no parent directory"))?
        .join("crates/pktpath-ebpf-test");
    let root_dir = ebpf_dir
        .to_str()
        .context("eBPF test crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [Package { name: "pktpath-ebpf-test", root_dir, ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the test eBPF objects failed; run scripts/bootstrap.sh to install rust-src and bpf-linker")
}
