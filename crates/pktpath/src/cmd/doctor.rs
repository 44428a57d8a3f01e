//! `pktpath doctor`: report what this kernel and this process can do.

use std::io::Write as _;

use std::path::PathBuf;

use pktpath_core::{
    access,
    doctor::{self, Report},
    route::datapath::attach::DEFAULT_PIN_DIR,
    sys::caps::Privileges,
};

use crate::exit;

/// Probe the running kernel by loading and attaching tiny eBPF programs, and say which
/// pktpath features each result enables.
///
/// Examples:
///   pktpath doctor
///   pktpath doctor --json | jq '.checks[] | select(.available | not)'
///   pktpath doctor --mount      # mount bpffs and tracefs where missing
///   pktpath doctor --state-dir /run/user/$UID/pktpath --pin-dir /sys/fs/bpf/$USER/pktpath
///
/// Judges the setup it runs in: the kernel's features, and what this user with its
/// capabilities may run (COMMAND table), the state directory (--state-dir,
/// PKTPATH_STATE_DIR, $RUNTIME_DIRECTORY, /run/pktpath) and the pin directory (--pin-dir).
/// Without CAP_SYS_ADMIN the TC, TCX and XDP probes cannot attach in a scratch network
/// namespace and judge by loading a program and querying the hook instead. kprobes and
/// fentry are informational (`-`): pktpath uses neither.
///
/// Exit status: 0 when everything trace and route need is available, 3 when a capability
/// doctor needs (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) is missing, 1 otherwise.
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
    /// The pin directory `route attach` would create, judged for this user.
    #[arg(long, value_name = "DIR", env = "PKTPATH_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[command(flatten)]
    state: super::state_dir::StateDirArg,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let report = doctor::run(doctor::Options {
        mount: args.mount,
        state_root: Some(args.state.root()),
        pin_dir: Some(args.pin_dir.clone()),
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report)?;
    }
    out.flush()?;
    // Without privileges most probes fail for that reason alone: say so in one line.
    access::Command::Doctor.require(&Privileges::current())?;
    if !report.ready() {
        eprintln!(
            "pktpath: not ready: {} unavailable (see the table above)",
            report.missing().join(", ")
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
        let ok = match (c.available, c.needed) {
            (true, _) => "yes",
            (false, true) => "no",
            // Informational: pktpath does not need it.
            (false, false) => "-",
        };
        writeln!(out, "{:<w$}  {:<3}  {:<u$}  {}", c.feature, ok, used, note)?;
    }
    writeln!(out)?;
    let w = report
        .commands
        .iter()
        .map(|c| c.command.len())
        .max()
        .unwrap_or(10);
    writeln!(
        out,
        "{:<w$}  {:<3}  NEEDS (uid {})",
        "COMMAND",
        "OK",
        Privileges::current().euid
    )?;
    for c in &report.commands {
        let needs = if c.needs.is_empty() {
            format!("no capability; {}", c.note)
        } else {
            format!("{}; {}", c.needs.join(", "), c.note)
        };
        let (ok, note) = if c.missing.is_empty() {
            ("yes", needs)
        } else {
            ("no", format!("{needs}; lacks {}", c.missing.join(", ")))
        };
        writeln!(out, "{:<w$}  {:<3}  {}", c.command, ok, note)?;
    }
    writeln!(out)?;
    let verdict = if report.ready() {
        "ready: trace and route can run here"
    } else {
        "not ready"
    };
    writeln!(out, "{verdict}")
}
