//! pktpath benchmarks. Run as root: `cargo run --release -p pktpath-bench`.
//!
//! Classification cost against policy count: ns per packet of the data path program via
//! BPF_PROG_TEST_RUN, over a set of distinct flows (each flow its own frame, each run
//! repeated), for 10, 100, 1k, 10k and 100k policies; and the time to apply each set.
//! Results go to stdout as a table and to bench/results/latest.json.

mod classify;

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let results = classify::run()?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
