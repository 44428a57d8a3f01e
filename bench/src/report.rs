//! Results on disk and on screen: each part to bench/results/<part>.json (with the machine
//! it ran on), every part present merged into bench/results/latest.json, and a human table.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

/// A goal of the issue, the figure measured against it, and whether it is met.
#[derive(Debug, Serialize)]
pub struct Goal {
    pub what: String,
    pub measured: f64,
    /// `>=` or `<=`.
    pub cmp: &'static str,
    pub target: f64,
    pub met: bool,
}

impl Goal {
    pub fn at_least(what: &str, measured: f64, target: f64) -> Self {
        Self {
            what: what.to_owned(),
            measured,
            cmp: ">=",
            target,
            met: measured >= target,
        }
    }

    pub fn at_most(what: &str, measured: f64, target: f64) -> Self {
        Self {
            what: what.to_owned(),
            measured,
            cmp: "<=",
            target,
            met: measured <= target,
        }
    }
}

pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

fn first_line(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Kernel, CPU model, cores, date (UTC) and the git commit of the tree that was built.
pub fn machine() -> Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = first_line("git", &["rev-parse", "--short=12", "HEAD"], &repo);
    let dirty = first_line(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        &repo,
    )
    .is_some_and(|s| !s.is_empty());
    json!({
        "kernel": kernel,
        "cpu": cpu,
        "cores": cores,
        "date": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], &repo),
        "git_commit": commit.map(|c| if dirty { format!("{c}-dirty") } else { c }),
    })
}

/// Writes one part's results to bench/results/<part>.json.
pub fn write_part(part: &str, results: &impl Serialize) -> anyhow::Result<()> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let doc = json!({ "part": part, "machine": machine(), "results": results });
    let path = dir.join(format!("{part}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Marks a part failed in bench/results/<part>.json: the error and the date, so that no
/// figure of an earlier run is shown as this run's (see [`failed_doc`]).
pub fn write_failed(part: &str, error: &anyhow::Error) -> anyhow::Result<()> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{part}.json"));
    let previous = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let doc = failed_doc(part, &format!("{error:#}"), previous, machine());
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {} (failed)", path.display());
    Ok(())
}

/// A failed part's document: no results; the previous run's document is kept whole under
/// `last_good` (its own date says how old it is), and a part failing again keeps the last
/// good run rather than the failure before.
fn failed_doc(part: &str, error: &str, previous: Option<Value>, machine: Value) -> Value {
    let last_good = previous.and_then(|p| match p.get("last_good") {
        Some(good) => (!good.is_null()).then(|| good.clone()),
        None => Some(p),
    });
    json!({ "part": part, "machine": machine, "failed": error, "last_good": last_good })
}

/// The parts in the order they are run and shown.
pub const PARTS: [&str; 5] = ["classify", "forward", "update", "trace", "latency"];

/// Merges every bench/results/<part>.json present into latest.json and returns it.
pub fn merge() -> anyhow::Result<Value> {
    let dir = results_dir();
    let mut parts = serde_json::Map::new();
    for part in PARTS {
        let path = dir.join(format!("{part}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        parts.insert(part.to_owned(), v);
    }
    let doc = json!({ "machine": machine(), "parts": parts });
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(doc)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn goals(out: &mut String, r: &Value) {
    for g in r["goals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  goal {:<50} {:>12.3} {} {:<8} {}",
            g["what"].as_str().unwrap_or(""),
            f(&g["measured"]),
            g["cmp"].as_str().unwrap_or(""),
            f(&g["target"]),
            if g["met"] == true { "met" } else { "MISSED" }
        );
    }
}

/// The human table of every part in `doc` (as written by [`merge`]).
pub fn table(doc: &Value) -> String {
    let mut out = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        out,
        "machine: {}, {} cores, kernel {}, commit {}, {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["git_commit"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?")
    );
    for part in PARTS {
        let Some(p) = doc["parts"].get(part) else {
            continue;
        };
        let r = &p["results"];
        let when = p["machine"]["date"].as_str().unwrap_or("?");
        if let Some(error) = p["failed"].as_str() {
            let good = p["last_good"]["machine"]["date"].as_str();
            let _ = writeln!(out, "\n== {part} FAILED {when}: {error}");
            let _ = writeln!(
                out,
                "  no figures of this run; the last good run ({}) is kept in bench/results/{part}.json under last_good",
                good.unwrap_or("none")
            );
            continue;
        }
        let _ = writeln!(out, "\n== {part} (measured {when})");
        match part {
            "forward" => {
                let _ = writeln!(
                    out,
                    "  {:<12} {:>12} {:>10} {:>14}  rounds",
                    "config", "median pps", "vs linux-1", "vs linux same"
                );
                // The forwarding CPU's split per frame, for the rows that were profiled.
                let mut cpu = String::new();
                for row in r["rows"].as_array().into_iter().flatten() {
                    let rounds: Vec<String> = row["pps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| format!("{:.0}", f(x)))
                        .collect();
                    let name = row["config"].as_str().unwrap_or("");
                    let _ = writeln!(
                        out,
                        "  {name:<12} {:>12.0} {:>10.2} {:>14.2}  {}",
                        f(&row["median_pps"]),
                        f(&row["vs_linux_1"]),
                        f(&row["vs_linux_same"]),
                        rounds.join(" ")
                    );
                    let c = &row["cpu_median"];
                    if c.is_object() {
                        let ns: Vec<String> = ["receive_ns", "sender_ns", "other_ns", "idle_ns"]
                            .iter()
                            .map(|k| format!("{:>8.0}", f(&c[*k])))
                            .collect();
                        let _ = writeln!(cpu, "  {name:<43} {}", ns.join(" "));
                    }
                }
                if !cpu.is_empty() {
                    let _ = writeln!(
                        out,
                        "  forwarding CPU per frame (perf, median ns)  {:>8} {:>8} {:>8} {:>8}",
                        "receive", "sender", "other", "idle"
                    );
                    out.push_str(&cpu);
                }
            }
            "update" => {
                for row in r["apply"].as_array().into_iter().flatten() {
                    let runs: Vec<String> = row["ms"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| match x.as_f64() {
                            Some(ms) => format!("{ms:.0}"),
                            None => format!("killed after {} s", row["limit_s"]),
                        })
                        .collect();
                    // Results from before profiles were measured have none: this part's own set.
                    let profile = row["profile"].as_str().unwrap_or("synthetic");
                    let head = format!(
                        "  apply {:>7} {profile:<9} policies:",
                        row["policies"].as_u64().unwrap_or(0)
                    );
                    let refused = row["refused"].as_str();
                    if !runs.is_empty() {
                        let _ = writeln!(
                            out,
                            "{head} median {:>8.1} ms (runs: {} ms)",
                            f(&row["median_ms"]),
                            runs.join(", ")
                        );
                    }
                    if let Some(why) = refused {
                        let which = if runs.is_empty() { "" } else { " the next set" };
                        let _ = writeln!(out, "{head} refused{which}: {why}");
                    }
                }
                for row in r["loss"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {:<22} sent {:>8} delivered {:>8} lost {:>6} applies {:>3}",
                        row["case"].as_str().unwrap_or(""),
                        row["sent"],
                        row["delivered"],
                        row["lost"],
                        row["applies"]
                    );
                }
            }
            "trace" => {
                for (k, v) in r["startup_s"].as_object().into_iter().flatten() {
                    let _ = writeln!(out, "  start-up {k:<10} median {:.3} s", f(&v["median"]));
                }
                for (k, v) in r["lossless"].as_object().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {k:<10} highest lossless event rate: {:.0} events/s",
                        f(&v["max_lossless_events_per_s"])
                    );
                    if let Some(why) = v["stopped"]["reason"].as_str() {
                        let _ = writeln!(
                            out,
                            "  {k:<10} ladder stopped at {} frames/s: {why}",
                            v["stopped"]["pps"]
                        );
                    }
                }
                let _ = writeln!(
                    out,
                    "  {:<34} {:>12} {:>8} {:>12}",
                    "forwarding while", "median pps", "vs off", "events lost"
                );
                for row in r["throughput"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {:<34} {:>12.0} {:>8.3} {:>12}",
                        row["mode"].as_str().unwrap_or(""),
                        f(&row["median_pps"]),
                        f(&row["vs_off"]),
                        row["lost"]
                    );
                }
                for row in r["hook_cost"].as_array().into_iter().flatten() {
                    let program = row["program"].as_str().unwrap_or("");
                    let what = if program.starts_with("floor_") {
                        "empty program"
                    } else {
                        "filter matching nothing"
                    };
                    let _ = writeln!(
                        out,
                        "  hook {program:<18} {:>10} hits {:>6.0} ns/hit ({what})",
                        row["hits"],
                        f(&row["ns_per_hit"])
                    );
                }
                let profile = r["profile"].as_array().into_iter().flatten();
                for (i, row) in profile.enumerate() {
                    if i == 0 {
                        let _ = writeln!(
                            out,
                            "  {:<50} {:>17} {:>11}",
                            "forwarding CPU's time (perf) while", "in tracepoints", "in programs"
                        );
                    }
                    let _ = writeln!(
                        out,
                        "  {:<50} {:>16.1}% {:>10.1}%",
                        row["mode"].as_str().unwrap_or(""),
                        f(&row["in_tracepoint_runs"]),
                        f(&row["in_programs"])
                    );
                }
            }
            "latency" => {
                for row in r["rows"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {:<10} {:>7} packets  p50 {:>7} ns  p99 {:>7} ns  ({} -> {})",
                        row["path"].as_str().unwrap_or(""),
                        row["packets"],
                        row["p50_ns"],
                        row["p99_ns"],
                        row["from"].as_str().unwrap_or(""),
                        row["to"].as_str().unwrap_or("")
                    );
                }
            }
            "classify" => {
                let _ = writeln!(out, "  {}", classify_header());
                for row in r["rows"].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "  {}", classify_line(row));
                }
            }
            _ => {}
        }
        goals(&mut out, r);
    }
    out
}

/// The column heads of the classify part's rows.
pub fn classify_header() -> String {
    format!(
        "{:<9} {:>8} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>11}",
        "profile",
        "policies",
        "rules",
        "pairs",
        "trees",
        "depth",
        "nodes",
        "cands",
        "ns mean",
        "ns p99",
        "floor",
        "linear",
        "compile",
        "apply",
        "maps",
        "tables",
        "as model",
    ) + "\n"
        + &format!(
            "{:<9} {:>8} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>11}",
            "",
            "",
            "",
            "",
            "",
            "max",
            "mean",
            "mean",
            "",
            "",
            "ns",
            "ns",
            "ms",
            "ms",
            "MiB",
            "MiB",
            ""
        )
}

/// One row of the classify part (a refused set shows the compiler's message).
pub fn classify_line(row: &Value) -> String {
    // Integers through u64: a JSON value's Display ignores the width.
    let int = |v: &Value| v.as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string());
    let head = format!(
        "{:<9} {:>8} {:>7} {:>5}",
        row["profile"].as_str().unwrap_or("?"),
        int(&row["policies"]),
        int(&row["rules"]),
        int(&row["len_pairs"]),
    );
    if let Some(why) = row["refused"].as_str() {
        return format!(
            "{head} refused after {:.1} ms: {why}",
            f(&row["compile_ms"])
        );
    }
    let linear = match row["linear_ns_mean"].as_f64() {
        Some(ns) => format!("{ns:.0}"),
        None => "-".to_owned(),
    };
    let mib = |v: &Value| f(v) / (1024.0 * 1024.0);
    let agree = format!("{}/{}", int(&row["agree"]), int(&row["headers"]));
    format!(
        "{head} {:>5} {:>5} {:>5.1} {:>5.1} {:>7.0} {:>7.0} {:>6.0} {:>8} {:>8.1} {:>8.1} {:>7.2} {:>7.2} {:>11}",
        int(&row["trees"]),
        int(&row["tree_stats"]["max_depth"]),
        f(&row["nodes_mean"]),
        f(&row["candidates_mean"]),
        f(&row["ns_mean"]),
        f(&row["ns_p99"]),
        f(&row["floor_ns_mean"]),
        linear,
        f(&row["compile_ms"]),
        f(&row["apply_ms"]),
        mib(&row["map_bytes"]),
        mib(&row["table_bytes"]),
        agree,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine_at(date: &str) -> Value {
        json!({ "date": date })
    }

    #[test]
    fn a_failed_part_shows_no_figures_and_keeps_the_last_good_run() {
        let good = json!({
            "part": "trace",
            "machine": machine_at("2026-11-26T06:00:00Z"),
            "results": { "lossless": { "pktpath": { "max_lossless_events_per_s": 1.23e6 } } }
        });
        let failed = failed_doc(
            "trace",
            "trafgen did not finish",
            Some(good.clone()),
            machine_at("2026-12-05T03:00:00Z"),
        );
        assert_eq!(failed["last_good"], good);
        // Failing again keeps the good run, not the first failure.
        let again = failed_doc(
            "trace",
            "again",
            Some(failed),
            machine_at("2026-12-06T03:00:00Z"),
        );
        assert_eq!(again["last_good"], good);
        let doc =
            json!({ "machine": machine_at("2026-12-06T03:00:00Z"), "parts": { "trace": again } });
        let text = table(&doc);
        assert!(
            text.contains("== trace FAILED 2026-12-06T03:00:00Z: again"),
            "{text}"
        );
        assert!(text.contains("(2026-11-26T06:00:00Z)"), "{text}");
        assert!(!text.contains("highest lossless"), "{text}");
    }

    #[test]
    fn a_ladder_stopped_by_the_sender_is_shown_with_its_ceiling() {
        let doc = json!({
            "machine": machine_at("2026-12-05T03:00:00Z"),
            "parts": { "trace": {
                "machine": machine_at("2026-12-05T03:00:00Z"),
                "results": { "lossless": { "bpftrace": {
                    "max_lossless_events_per_s": 300000.0,
                    "stopped": { "pps": 150000, "reason": "trafgen did not finish" }
                } } }
            } }
        });
        let text = table(&doc);
        assert!(
            text.contains("bpftrace   highest lossless event rate: 300000 events/s"),
            "{text}"
        );
        assert!(
            text.contains("bpftrace   ladder stopped at 150000 frames/s: trafgen did not finish"),
            "{text}"
        );
    }
}
