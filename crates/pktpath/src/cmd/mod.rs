//! Command-line definition (clap derive): one module per subcommand.

mod doctor;
mod route;
mod trace;

use clap::{Parser, Subcommand};

/// Linux packet-path toolkit: trace packets through the kernel's network stack and route
/// them in an eBPF fast path.
#[derive(Debug, Parser)]
#[command(name = "pktpath", version, about, propagate_version = true)]
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
}

/// A kernel feature the command needs is missing (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("this kernel lacks {feature}: {reason} (see `pktpath doctor`)")]
pub struct Unsupported {
    pub feature: String,
    pub reason: String,
}

/// Runs the chosen subcommand; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Route(args) => route::run(args),
        Command::Trace(args) => trace::run(args),
    }
}
