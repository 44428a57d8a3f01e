//! `pktpath route`: the policy-routing fast path. Today: `check` (validate the configuration
//! files and show what would be applied) and `schema` (the files' JSON Schema).

use std::{io::Write as _, path::PathBuf};

use pktpath_core::route::{
    compile::{PolicySet, Topology},
    config::schema::SchemaKind,
    summary::{self, Summary},
};

use crate::exit;

/// Policy routing in a TC eBPF fast path, configured from JSON.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Check(CheckArgs),
    Schema(SchemaArgs),
}

/// Validate configuration.json (and runtimeConfiguration.json) and print what would be
/// applied: interfaces, next hops, tables, and the policies in priority order.
///
/// Examples:
///   pktpath route check --config examples/configuration.json
///   pktpath route check --config examples/configuration.json examples/runtimeConfiguration.json
///   pktpath route check --config configuration.json runtime.json --json | jq '.policies[].id'
///
/// Exit status: 0 when the files are valid; 1 with one line on stderr naming the file, line,
/// column and field when they are not. Needs no privileges and touches nothing.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct CheckArgs {
    /// The static configuration (interfaces, next hops, tables).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The runtime configuration (policies), checked against --config.
    #[arg(value_name = "RUNTIME_CONFIGURATION")]
    runtime: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Print the JSON Schema of the configuration files.
///
/// Without an argument prints one object holding both schemas, keyed by file name; with
/// `configuration` or `runtime` prints that schema alone, exactly as committed under
/// schema/ in the source tree.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
struct SchemaArgs {
    /// Which file's schema.
    #[arg(value_enum)]
    which: Option<Which>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Which {
    /// configuration.json
    Configuration,
    /// runtimeConfiguration.json
    Runtime,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        Command::Check(args) => check(args),
        Command::Schema(args) => schema(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let topology = Topology::load(&args.config)?;
    let set = match &args.runtime {
        Some(path) => PolicySet::load(&topology, path)?,
        None => PolicySet::empty(topology),
    };
    let runtime_name = args.runtime.as_ref().map(|p| p.display().to_string());
    let summary = Summary::new(&set, runtime_name.as_deref());
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        print_check(&mut out, &set, &summary)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

fn print_check(
    out: &mut impl std::io::Write,
    set: &PolicySet,
    summary: &Summary,
) -> std::io::Result<()> {
    let topology = &set.topology;
    writeln!(
        out,
        "{}: valid: {} interfaces, {} next hops, {} tables",
        summary.configuration,
        summary.interfaces.len(),
        summary.next_hops.len(),
        summary.tables.len()
    )?;
    if let Some(runtime) = &summary.runtime_configuration {
        writeln!(out, "{runtime}: valid: {} policies", summary.policies.len())?;
    }

    writeln!(out)?;
    let yes = |b: bool| if b { "yes" } else { "no" };
    table(
        out,
        "interfaces",
        &["NAME", "INGRESS", "EGRESS"],
        summary
            .interfaces
            .iter()
            .map(|i| vec![i.name.clone(), yes(i.ingress).into(), yes(i.egress).into()])
            .collect(),
    )?;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    table(
        out,
        "next hops",
        &["NAME", "INTERFACE", "GATEWAY4", "GATEWAY6", "MAC"],
        summary
            .next_hops
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.interface.clone(),
                    or_dash(h.gateway4.map(|g| g.to_string())),
                    or_dash(h.gateway6.map(|g| g.to_string())),
                    or_dash(h.mac.map(|m| m.to_string())),
                ]
            })
            .collect(),
    )?;
    table(
        out,
        "tables",
        &["NAME", "ID"],
        summary
            .tables
            .iter()
            .map(|t| vec![t.name.clone(), t.id.to_string()])
            .collect(),
    )?;
    if summary.runtime_configuration.is_some() {
        table(
            out,
            "policies (tried in this order; a packet no policy matches is passed)",
            &["PRIORITY", "ID", "MATCH", "ACTION"],
            set.policies
                .iter()
                .map(|p| {
                    vec![
                        p.priority.to_string(),
                        p.id.clone(),
                        summary::match_text(topology, &p.matches),
                        summary::action_text(topology, &p.action),
                    ]
                })
                .collect(),
        )?;
    }
    Ok(())
}

/// A titled table with left-aligned columns; `(none)` when empty.
fn table(
    out: &mut impl std::io::Write,
    title: &str,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> std::io::Result<()> {
    writeln!(out, "{}:", title)?;
    if rows.is_empty() {
        writeln!(out, "  (none)")?;
        writeln!(out)?;
        return Ok(());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::from("  ");
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    writeln!(out)
}

fn schema(args: SchemaArgs) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match args.which {
        Some(which) => {
            let kind = match which {
                Which::Configuration => SchemaKind::Configuration,
                Which::Runtime => SchemaKind::Runtime,
            };
            out.write_all(kind.render().as_bytes())?;
        }
        None => {
            let both = serde_json::json!({
                "configuration.json": SchemaKind::Configuration.schema(),
                "runtimeConfiguration.json": SchemaKind::Runtime.schema(),
            });
            serde_json::to_writer_pretty(&mut out, &both)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}
