//! `perf` as the benchmarks run it: call chains of the forwarding CPU recorded over a
//! measured window, and the record read back.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::Context as _;

use crate::lab::{self, GEN_CPU, Proc, TOOL_CPU};

/// Starts `perf record -q -g EXTRA -C GEN_CPU -o DATA -- sleep WINDOW` on the tool CPU:
/// the forwarding CPU's call chains (trafgen and the whole path run there) for `window`.
pub fn record(data: &Path, extra: &[&str], window: Duration) -> anyhow::Result<Proc> {
    let mut c = lab::command("perf", Some(TOOL_CPU));
    c.args(["record", "-q", "-g"])
        .args(extra)
        .args(["-C", &GEN_CPU.to_string(), "-o"])
        .arg(data)
        .args(["--", "sleep", &window.as_secs_f64().to_string()])
        .stdout(Stdio::null());
    Proc::spawn(c, "perf record")
}

/// The standard output of `perf ARGS -i DATA`; perf's own message when it fails.
pub fn read(data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let o = std::process::Command::new("perf")
        .args(args)
        .arg("-i")
        .arg(data)
        .output()
        .context("perf")?;
    anyhow::ensure!(
        o.status.success(),
        "perf {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}
