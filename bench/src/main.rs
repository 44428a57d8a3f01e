//! pktpath benchmarks. Run as root: `cargo build --release -p pktpath-bench &&
//! ./target/release/pktpath-bench [classify]`.
//!
//! `classify` (the default): classification cost against policy count, for pktpath's data
//! path and two baselines (the floor: rewrite MACs and redirect; a linear scan over the
//! policies), ns per packet via BPF_PROG_TEST_RUN over distinct flows, the programs
//! alternating within the run; and the time to compile and apply each policy set.
//! Results go to stdout as a table and to bench/results/classify.json.

mod classify;

use std::path::PathBuf;

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let part = std::env::args().nth(1);
    match part.as_deref() {
        None | Some("classify") => {
            let results = classify::run()?;
            write("classify", &serde_json::to_string_pretty(&results)?)
        }
        Some(other) => bail!("unknown benchmark part {other:?}; known: classify"),
    }
}

/// Writes a part's results to bench/results/PART.json.
fn write(part: &str, json: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{part}.json"));
    std::fs::write(&path, format!("{json}\n"))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
