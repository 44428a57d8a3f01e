//! pktpath benchmarks. Run as root, normally through `bash bench/run.sh [PART...]`,
//! which builds this and `pktpath` in release mode first.
//!
//! `pktpath-bench [PART...]` runs the named parts (default: all), in this order:
//! - `classify`: classification cost against policy count, on the rule-set generator's
//!   profiles and the one-shape best case (BPF_PROG_TEST_RUN);
//! - `forward`: forwarding through a router namespace, pktpath against Linux policy
//!   routing, nftables `fwd` and tc `mirred`;
//! - `update`: `pktpath route apply` time, and packets lost while applying under load;
//! - `trace`: the tracer's start-up, lossless event rate, and cost to forwarding, beside
//!   bpftrace;
//! - `latency`: per-hop latency the tracer reports, kernel forwarding against pktpath.
//!
//! Each part writes bench/results/<part>.json; then every part present is merged into
//! bench/results/latest.json and shown as a table. `pktpath-bench table` only merges and
//! shows; `pktpath-bench cleanup` removes what a killed run may have left.
//! `pktpath-bench hop-cost [ROUNDS]` times the agent's hop-latency programs (not a part).

mod classify;
mod cleanup;
mod forward;
mod fwdcpu;
mod hopcost;
mod lab;
mod latency;
mod perf;
mod report;
mod routecli;
mod shapes;
mod soak;
mod sustain;
mod tools;
mod tracer;
mod update;

use anyhow::bail;

fn usage() -> String {
    format!(
        "usage: pktpath-bench [PART...] | table | cleanup | shapes [PROFILE[:N]...] | trace-ladder [--summary] | trace-overhead | trace-profile | trace-soak [SECS] | trace-sustain [SECS] | hop-cost [ROUNDS]\nparts: {}",
        report::PARTS.join(" ")
    )
}

fn run_part(part: &str) -> anyhow::Result<()> {
    match part {
        "classify" => report::write_part(part, &classify::run()?),
        "forward" => report::write_part(part, &forward::run()?),
        "update" => report::write_part(part, &update::run()?),
        "trace" => report::write_part(part, &tracer::run()?),
        "latency" => report::write_part(part, &latency::run()?),
        _ => bail!("unknown part {part}\n{}", usage()),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pktpath-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{}", usage());
            return Ok(());
        }
        Some("cleanup") => return cleanup::run(),
        Some("shapes") => return shapes::run(&args[1..]),
        Some(
            cmd @ ("trace-ladder" | "trace-overhead" | "trace-profile" | "trace-soak"
            | "trace-sustain" | "hop-cost"),
        ) => {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                bail!("run as root (namespaces, links, eBPF)");
            }
            lab::install_signal_handlers();
            pktpath_tests::names::sweep_stale();
            let r = match cmd {
                "trace-ladder" => {
                    let extra: Vec<&str> = args[1..].iter().map(String::as_str).collect();
                    serde_json::to_value(tracer::ladder_only(&extra)?)?
                }
                "trace-profile" => serde_json::to_value(tracer::profile_only()?)?,
                "hop-cost" => serde_json::to_value(hopcost::run(whole_arg(
                    args.get(1),
                    "hop-cost ROUNDS",
                    3,
                )?)?)?,
                "trace-soak" => serde_json::to_value(soak::run(whole_arg(
                    args.get(1),
                    "trace-soak SECS",
                    600,
                )?)?)?,
                "trace-sustain" => serde_json::to_value(sustain::run(whole_arg(
                    args.get(1),
                    "trace-sustain SECS",
                    30,
                )?)?)?,
                _ => serde_json::to_value(tracer::overhead_only()?)?,
            };
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        Some("table") => {
            print!("{}", report::table(&report::merge()?));
            return Ok(());
        }
        _ => {}
    }
    let parts: Vec<&str> = if args.is_empty() {
        report::PARTS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for p in &parts {
        if !report::PARTS.contains(p) {
            bail!("unknown part {p}\n{}", usage());
        }
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root (namespaces, links, eBPF): sudo bash bench/run.sh");
    }
    lab::install_signal_handlers();
    pktpath_tests::names::sweep_stale();
    // Mounted for the parts that pin (route attach); unmounted at the end if this mounted it.
    let _bpffs = pktpath_tests::BpffsGuard::ensure();
    let mut failed = Vec::new();
    for part in parts {
        eprintln!("== {part}");
        if let Err(e) = run_part(part) {
            eprintln!("{part} failed: {e:#}");
            report::write_failed(part, &e)?;
            failed.push(part);
            if lab::check_stop().is_err() {
                break;
            }
        }
    }
    print!("{}", report::table(&report::merge()?));
    if !failed.is_empty() {
        bail!("parts failed: {}", failed.join(", "));
    }
    Ok(())
}

/// An optional whole-number argument (`what` names it in the error), or `default`.
fn whole_arg<T: std::str::FromStr>(
    arg: Option<&String>,
    what: &str,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    arg.map_or(Ok(default), |s| {
        anyhow::Context::with_context(s.parse::<T>(), || format!("{what}: a whole number"))
    })
}
