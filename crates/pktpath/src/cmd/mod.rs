//! Command-line definition (clap derive): one module per subcommand.

mod agent;
mod completions;
mod demo;
mod doctor;
mod man;
mod route;
mod state_dir;
mod trace;
mod writer_args;

use clap::{Parser, Subcommand};

/// Linux packet-path toolkit: trace packets through the kernel's network stack and route
/// them in an eBPF fast path.
#[derive(Debug, Parser)]
#[command(
    name = "pktpath",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  pktpath demo                       # both tools at work on a lab of network namespaces
  pktpath doctor                     # what this kernel offers
  pktpath trace --netns blue icmp    # follow packets hop by hop
  pktpath route attach --config configuration.json && pktpath route apply runtimeConfiguration.json
  pktpath agent --config configuration.json --runtime runtimeConfiguration.json --metrics-listen 127.0.0.1:9471
  pktpath completions bash > /etc/bash_completion.d/pktpath
  pktpath man | man -l -

Exit status: 0 success; 1 error; 2 bad usage; 3 missing privilege; 4 the kernel lacks a feature
the command needs (as `pktpath doctor` reports it); 130 interrupted (demo)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The env_logger filter for the chosen verbosity (RUST_LOG overrides it).
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            // The agent logs one line per event (reloads, signals) by default.
            0 if matches!(self.command, Command::Agent(_)) => "info",
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    Doctor(doctor::Args),
    Route(route::Args),
    Trace(trace::Args),
    Demo(demo::Args),
    Agent(agent::Args),
    Completions(completions::Args),
    Man(man::Args),
}

/// A kernel feature the command needs is missing (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("this kernel lacks {feature}: {reason} (see `pktpath doctor`)")]
pub struct Unsupported {
    pub feature: String,
    pub reason: String,
}

/// Runs the chosen subcommand; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Route(args) => route::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// Checks that are not kernel features: privileges, directories and mounts (pktpath mounts
/// what it needs).
const NOT_KERNEL_FEATURES: [&str; 8] = [
    "root",
    "cap_bpf",
    "cap_net_admin",
    "cap_perfmon",
    "bpffs",
    "tracefs",
    "state_dir",
    "pin_dir",
];

/// Whether a tracer start-up error may come from a missing kernel feature (not from the
/// user's input).
pub fn trace_kernel_error(e: &pktpath_core::trace::TraceError) -> bool {
    use pktpath_core::trace::TraceError as E;
    matches!(
        e,
        E::Btf(_) | E::AyaBtf(_) | E::Load(_) | E::Attach { .. } | E::Map { .. }
    )
}

/// Whether a data path attach error may come from a missing kernel feature.
pub fn attach_kernel_error(e: &pktpath_core::route::datapath::attach::AttachError) -> bool {
    use pktpath_core::route::datapath::attach::AttachError as E;
    matches!(
        e,
        E::Load(_) | E::Program { .. } | E::Link { .. } | E::Pin { .. } | E::NotBpffs { .. }
    )
}

/// Turns `err`, from a step that needs the kernel features `doctor` lists as used by one of
/// `needs` (`trace`, `route`), into doctor's verdict for the first such feature this kernel
/// lacks (exit code 4). When doctor finds them all, or privileges are what is missing, `err`
/// is returned unchanged.
pub fn with_doctor_verdict(err: anyhow::Error, needs: &[&str]) -> anyhow::Error {
    use pktpath_core::{doctor, sys::caps::MissingCapability};

    if err
        .chain()
        .any(|c| c.downcast_ref::<MissingCapability>().is_some())
    {
        return err;
    }
    let report = doctor::run(doctor::Options::default());
    match verdict(&report, needs) {
        Some(unsupported) => {
            log::info!("{err:#}");
            unsupported.into()
        }
        None => err,
    }
}

/// Doctor's verdict on the first kernel feature used by one of `needs` that `report` found
/// missing.
fn verdict(report: &pktpath_core::doctor::Report, needs: &[&str]) -> Option<Unsupported> {
    let check = report.checks.iter().find(|c| {
        !c.available
            && !NOT_KERNEL_FEATURES.contains(&c.id)
            && c.used_by.iter().any(|u| needs.contains(u))
    })?;
    Some(Unsupported {
        feature: check.feature.to_owned(),
        reason: check.error.clone().unwrap_or_else(|| "unavailable".into()),
    })
}

#[cfg(test)]
mod doc_tests;

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every command below `cmd`, with its path (`route get`); not clap's `help`.
    fn all(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let p = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((p.clone(), sub.clone()));
            all(sub, &p, out);
        }
    }

    fn commands() -> Vec<(String, clap::Command)> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = vec![(String::new(), cmd.clone())];
        all(&cmd, "", &mut out);
        out
    }

    #[test]
    fn kernel_feature_missing_gives_doctors_verdict() {
        use pktpath_core::doctor::{Check, Report};
        let check = |id, feature, available, used_by: &[&'static str]| Check {
            id,
            feature,
            available,
            error: (!available).then(|| format!("{feature} refused")),
            detail: None,
            used_by: used_by.to_vec(),
            needed: false,
        };
        let report = Report {
            kernel_release: "test".into(),
            checks: vec![
                // Privileges and mounts are not the kernel's features.
                check("cap_bpf", "CAP_BPF", false, &["trace", "route"]),
                check("tracefs", "tracefs mounted", false, &["trace"]),
                check(
                    "fentry",
                    "fentry",
                    false,
                    &["extra trace hooks (not needed here)"],
                ),
                check(
                    "tp_btf",
                    "BTF tracepoints (tp_btf)",
                    false,
                    &["trace", "trace drop reasons"],
                ),
                check("tcx", "TCX", true, &["route"]),
            ],
            commands: Vec::new(),
        };
        let v = super::verdict(&report, &["trace"]).expect("tp_btf is missing");
        assert_eq!(v.feature, "BTF tracepoints (tp_btf)");
        assert_eq!(
            v.to_string(),
            "this kernel lacks BTF tracepoints (tp_btf): BTF tracepoints (tp_btf) refused (see `pktpath doctor`)"
        );
        assert!(
            super::verdict(&report, &["route"]).is_none(),
            "route has all it needs"
        );
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_help_has_examples() {
        let missing: Vec<String> = commands()
            .into_iter()
            .filter_map(|(path, mut c)| {
                let help = c.render_long_help().to_string();
                (!help.contains("Example")).then_some(format!("pktpath {path}"))
            })
            .collect();
        assert!(missing.is_empty(), "--help without examples: {missing:?}");
    }

    #[test]
    fn man_pages_name_every_subcommand() {
        let top = String::from_utf8(super::man::render(&[]).expect("render pktpath.1"))
            .expect("roff is UTF-8");
        assert!(top.contains(".TH pktpath 1"), "{top}");
        // groff parses it without a warning.
        let mut groff = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run groff (Debian package groff-base)");
        std::io::Write::write_all(&mut groff.stdin.take().expect("stdin"), top.as_bytes())
            .expect("feed groff");
        let done = groff.wait_with_output().expect("groff runs");
        assert!(
            done.status.success() && done.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        for (path, c) in commands().into_iter().skip(1) {
            let words: Vec<String> = path.split(' ').map(str::to_owned).collect();
            if words.len() == 1 {
                assert!(
                    top.contains(&format!("pktpath\\-{}", c.get_name())),
                    "pktpath.1 does not list `{path}`"
                );
            }
            let page = String::from_utf8(super::man::render(&words).expect("render page"))
                .expect("roff is UTF-8");
            let title = format!(".TH pktpath-{} 1", words.join("-"));
            assert!(
                page.contains(&title),
                "page of `{path}` lacks `{title}`:\n{page}"
            );
        }
    }

    #[test]
    fn completions_cover_every_subcommand() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pktpath", &mut out);
            let script = String::from_utf8(out).expect("UTF-8 script");
            for (path, c) in commands().into_iter().skip(1) {
                assert!(
                    script.contains(c.get_name()),
                    "{shell} completion lacks `{path}`"
                );
            }
        }
    }
}
