//! Part 5: the tracer as a performance tool. For a paced UDP flow forwarded by the kernel
//! (Linux policy routing, one rule) and by pktpath's fast path (one policy), `pktpath
//! trace --output json --netns ROUTER udp` records every hook; per packet, the time from
//! `netif_receive_skb` on the router's ingress interface to `net_dev_start_xmit` on its
//! egress interface, p50 and p99 over the packets, computed as the trace summary computes
//! its own (`pktpath_core::trace::latency`, within 0.1 % of the exact value).

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use pktpath_core::trace::latency::Latencies;
use serde::Serialize;

use crate::{
    forward::{self, Config, Kind as Fwd},
    lab::{Lab, Scratch, check_stop},
    tools::Tool,
};

/// Slow enough for the tracer to keep up (part 4) even on a busy machine: every packet
/// should be seen at both ends.
const FRAMES: u64 = 6_000;
const PPS: u64 = 2_000;
const FROM: &str = "netif_receive_skb";
const TO: &str = "net_dev_start_xmit";

#[derive(Debug, Serialize)]
pub struct Row {
    pub path: String,
    pub from: String,
    pub to: String,
    pub packets: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub events: u64,
    pub lost: u64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub frames: u64,
    pub pps: u64,
    pub rows: Vec<Row>,
}

/// Per packet: the time from its receive on `r_in` to its first start of transmit on
/// `r_out`.
fn hop_latencies(file: &Path, r_in: &str, r_out: &str) -> anyhow::Result<Latencies> {
    let mut rx: HashMap<u64, u64> = HashMap::new();
    let mut out = Latencies::new();
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("not a JSON event: {line}"))?;
        let (Some(id), Some(ts), Some(hook), Some(ifname)) = (
            v["packet_id"].as_u64(),
            v["ts_ns"].as_u64(),
            v["hook"].as_str(),
            v["ifname"].as_str(),
        ) else {
            continue;
        };
        if hook == FROM && ifname == r_in {
            rx.insert(id, ts);
        } else if hook == TO
            && ifname == r_out
            && let Some(t0) = rx.remove(&id)
        {
            out.add(ts.saturating_sub(t0));
        }
    }
    Ok(out)
}

pub fn run() -> anyhow::Result<Results> {
    let lab = Lab::new()?;
    let dir = Scratch::new("latency")?;
    let tg = dir.write("udp64.trafgen", &lab.trafgen_config())?;
    let mut rows = Vec::new();
    for (path, kind) in [("kernel", Fwd::Linux), ("pktpath", Fwd::Pktpath)] {
        check_stop()?;
        let _cfg = forward::setup(&lab, Config { kind, ahead: 0 }, &dir)?;
        let out = dir.0.join(format!("{path}.jsonl"));
        let mut t = Tool::pktpath(&["--netns", &lab.router.name, "udp"], &out)?;
        t.wait_ready(Duration::from_secs(60))?;
        let delivered = lab.send_paced(&tg, FRAMES, PPS)?;
        let (events, lost) = t.finish()?;
        if delivered < FRAMES * 9 / 10 {
            bail!("{path}: only {delivered} of {FRAMES} frames delivered");
        }
        let latencies = hop_latencies(&out, lab.r_in(), lab.r_out())?;
        if latencies.count() == 0 {
            bail!(
                "{path}: no packet seen at both {FROM}@{} and {TO}@{}",
                lab.r_in(),
                lab.r_out()
            );
        }
        let [p50_ns, p99_ns] = latencies.percentiles([50, 99]);
        let row = Row {
            path: path.to_owned(),
            from: format!("{FROM}@router-ingress"),
            to: format!("{TO}@router-egress"),
            packets: latencies.count() as usize,
            p50_ns,
            p99_ns,
            max_ns: latencies.max(),
            events,
            lost,
        };
        eprintln!(
            "latency: {path}: {} packets, p50 {} ns, p99 {} ns ({events} events, {lost} lost)",
            row.packets, row.p50_ns, row.p99_ns
        );
        rows.push(row);
        let _ = std::fs::remove_file(&out);
    }
    Ok(Results {
        frames: FRAMES,
        pps: PPS,
        rows,
    })
}
