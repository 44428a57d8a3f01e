//! `pktpath man`: manual pages (roff) generated from the CLI definition.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::exit;

/// Print pktpath's manual page (roff), or a subcommand's, generated from the same
/// definitions as `--help`; or write every page to a directory.
///
/// Examples:
///   pktpath man | man -l -
///   pktpath man route get | man -l -
///   pktpath man --out-dir /usr/local/share/man/man1     # pktpath.1, pktpath-route.1, ...
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The subcommand whose page to print (e.g. `route get`); none: pktpath(1).
    #[arg(value_name = "COMMAND")]
    command: Vec<String>,
    /// Write pktpath.1 and one page per subcommand (pktpath-route-get.1, ...) into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    out_dir: Option<PathBuf>,
}

/// The man page of `path` (subcommand names below `pktpath`), as roff.
pub fn render(path: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut page = &cmd;
    for (i, name) in path.iter().enumerate() {
        page = page.find_subcommand(name).with_context(|| {
            let parent: Vec<&str> = std::iter::once("pktpath")
                .chain(path[..i].iter().map(String::as_str))
                .collect();
            format!(
                "`{}` has no subcommand `{name}`; see `{} --help`",
                parent.join(" "),
                parent.join(" ")
            )
        })?;
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(page.clone()).render(&mut out)?;
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(super::Cli::command(), dir)
            .with_context(|| format!("cannot write the pages into {}", dir.display()))?;
        return Ok(exit::OK);
    }
    let page = render(&args.command)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &page)?;
    Ok(exit::OK)
}
