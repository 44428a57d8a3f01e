//! Builds the eBPF objects (probe, tracer, drops, datapath, ...) with the nightly toolchain and
//! bpf-linker, into OUT_DIR, where `loader` embeds them.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest
        .parent()
        .ok_or_else(|| anyhow!("pktpath-core has no parent directory"))?
        .join("pktpath-ebpf");
    let root_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [Package { name: "pktpath-ebpf", root_dir, ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the eBPF objects failed; run scripts/bootstrap.sh to install rust-src and bpf-linker")
}
