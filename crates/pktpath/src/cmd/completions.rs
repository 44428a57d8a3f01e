//! `pktpath completions SHELL`: shell completion scripts generated from the CLI definition.

use clap::CommandFactory as _;

use crate::exit;

/// Print a completion script for bash, zsh or fish (generated from pktpath's own argument
/// definitions, so it always matches this binary).
///
/// Examples:
///   source <(pktpath completions bash)
///   pktpath completions bash > /etc/bash_completion.d/pktpath
///   pktpath completions zsh > "${fpath[1]}/_pktpath"
///   pktpath completions fish > ~/.config/fish/completions/pktpath.fish
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "pktpath", &mut out);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
    Ok(exit::OK)
}
