//! The `pktpath` command: parses arguments, runs a subcommand, maps errors to exit codes.
//!
//! Exit codes: 0 success; 1 error; 2 bad usage; 3 missing privilege; 4 kernel lacks a
//! feature the command needs; 130 interrupted (demo). Data goes to stdout, diagnostics to
//! stderr. A closed stdout (`pktpath ... | head`) is success.

mod cmd;
mod exit;
mod signal;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_level()))
        .format_timestamp(None)
        .init();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => exit::report(&err),
    };
    ExitCode::from(code)
}
