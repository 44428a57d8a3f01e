//! `pktpath doctor`: report what this kernel and this process can do.

use std::io::Write as _;

use pktpath_core::{
    doctor::{self, Report},
    sys::caps::{Capability, Privileges},
};

use crate::exit;

/// Probe the running kernel by loading and attaching tiny eBPF programs, and say which
/// pktpath features each result enables.
///
/// Examples:
///   pktpath doctor
///   pktpath doctor --json | jq '.checks[] | select(.available | not)'
///   pktpath doctor --mount      # mount bpffs and tracefs where missing
///
/// Exit status: 0 when everything trace and route need is available, 3 when privileges are
/// missing, 1 otherwise.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Mount bpffs (/sys/fs/bpf) and tracefs (/sys/kernel/tracing) where missing, and leave
    /// them mounted.
    #[arg(long)]
    mount: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let report = doctor::run(doctor::Options { mount: args.mount });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report)?;
    }
    out.flush()?;
    // Without privileges most probes fail for that reason alone: say so in one line.
    Privileges::current().require(
        &[Capability::Bpf, Capability::Perfmon, Capability::NetAdmin],
        "probing the kernel loads and attaches BPF programs",
    )?;
    if !report.ready() {
        let missing: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| !c.available && !c.used_by.is_empty())
            .map(|c| c.id)
            .collect();
        eprintln!(
            "pktpath: not ready: {} unavailable (see the table above)",
            missing.join(", ")
        );
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}

fn print_table(out: &mut impl std::io::Write, report: &Report) -> std::io::Result<()> {
    writeln!(out, "pktpath doctor: kernel {}", report.kernel_release)?;
    writeln!(out)?;
    let used_by = |c: &doctor::Check| {
        if c.used_by.is_empty() {
            "-".to_owned()
        } else {
            c.used_by.join(", ")
        }
    };
    let w = report
        .checks
        .iter()
        .map(|c| c.feature.len())
        .max()
        .unwrap_or(10);
    let u = report
        .checks
        .iter()
        .map(|c| used_by(c).len())
        .max()
        .unwrap_or(10);
    writeln!(
        out,
        "{:<w$}  {:<3}  {:<u$}  DETAIL / ERROR",
        "FEATURE", "OK", "USED BY"
    )?;
    for c in &report.checks {
        let used = used_by(c);
        let note = match (&c.error, &c.detail) {
            (Some(err), _) => err.as_str(),
            (None, Some(d)) => d.as_str(),
            (None, None) => "",
        };
        let ok = if c.available { "yes" } else { "no" };
        writeln!(out, "{:<w$}  {:<3}  {:<u$}  {}", c.feature, ok, used, note)?;
    }
    writeln!(out)?;
    let verdict = if report.ready() {
        "ready: trace and route can run here"
    } else {
        "not ready"
    };
    writeln!(out, "{verdict}")
}
