//! The forwarding CPU's time per forwarded frame, split between the sender and the router
//! (bench `forward`). In the lab the whole path runs on one CPU (`GEN_CPU`):
//! trafgen's worker is pinned there, and a veth hands each frame on in the softirq of the
//! CPU that transmitted it, so the router's and the sink's receive work runs on that CPU
//! too, and the rate is what that CPU manages. Which part of it the router takes decides
//! how far any router can raise the rate: a frame costs at least the sender's share.
//!
//! One window per configuration and round, after the throughput window (the sampling
//! interrupts cost the CPU a little), with `perf record -e cpu-clock -g -C GEN_CPU`
//! (this VM exposes no hardware counters: cpu-clock samples every 0.25 ms of that CPU's
//! time, idle included). A sample is
//! - **receive** (router and sink) when its call chain holds the network receive softirq
//!   (`net_rx_action`, a NAPI poll, `__netif_receive_skb_core`) or a BPF program (the
//!   kernel's unwinder often stops at a program's frame, so samples in an XDP or TC
//!   program or its helpers may show nothing below it);
//! - **sender** when it is trafgen's otherwise: its user space and its `sendto` down to
//!   the client veth's transmit, which hands the frame over;
//! - **idle** when in the idle loop, and **other** for the rest (other processes,
//!   timers, RCU: other work on a shared machine).
//!
//! Each class's share of the samples times 1 s over the window's rate is nanoseconds of
//! that CPU per forwarded frame (the CPU is busy all the time: the idle share shows it).
//! The receive share holds the sink's work too (its veth's receive and the netdev drop,
//! the same skb path for every configuration, plus turning the XDP frame back into an skb
//! when XDP redirected it natively), so it bounds the router's from above.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    lab::{self, Lab},
    perf,
};

/// perf's sampling period of cpu-clock, in ns.
const PERIOD_NS: u64 = 250_000;
/// How many of the receive side's functions to keep.
const TOP: usize = 12;

/// Nanoseconds of the forwarding CPU per forwarded frame, by who spent them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuSplit {
    /// Frames the sink received per second in the profiled window.
    pub pps: f64,
    /// Samples of the forwarding CPU in the window.
    pub samples: u64,
    /// The router's and the sink's receive work (softirq, programs).
    pub receive_ns: f64,
    /// trafgen: user space and its transmit down to the client's veth.
    pub sender_ns: f64,
    pub idle_ns: f64,
    pub other_ns: f64,
    /// Busy share of each CPU over the window (/proc/stat: all but idle and iowait).
    pub busy: Vec<f64>,
    /// Where the receive side's time went: the functions its samples were in (their own
    /// time, not what they called), ns per frame, the largest first.
    pub receive_top: Vec<(String, f64)>,
}

impl CpuSplit {
    /// One line for the benchmark's log.
    pub fn summary(&self) -> String {
        let busy: Vec<String> = self
            .busy
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect();
        format!(
            "; profiled at {:.0} pps, ns per frame: receive {:.0}, sender {:.0}, idle {:.0}, other {:.0}; CPUs busy {}",
            self.pps,
            self.receive_ns,
            self.sender_ns,
            self.idle_ns,
            self.other_ns,
            busy.join(" ")
        )
    }

    /// Median of each field over rounds.
    pub fn median(rounds: &[CpuSplit]) -> CpuSplit {
        let m = |f: fn(&CpuSplit) -> f64| lab::median(&rounds.iter().map(f).collect::<Vec<_>>());
        let cpus = rounds.iter().map(|r| r.busy.len()).min().unwrap_or(0);
        CpuSplit {
            pps: m(|r| r.pps),
            samples: rounds.iter().map(|r| r.samples).sum::<u64>() / rounds.len().max(1) as u64,
            receive_ns: m(|r| r.receive_ns),
            sender_ns: m(|r| r.sender_ns),
            idle_ns: m(|r| r.idle_ns),
            other_ns: m(|r| r.other_ns),
            busy: (0..cpus)
                .map(|c| lab::median(&rounds.iter().map(|r| r.busy[c]).collect::<Vec<_>>()))
                .collect(),
            // Not a median: the round with the median receive time's list.
            receive_top: rounds
                .iter()
                .min_by(|a, b| {
                    let m = m(|r| r.receive_ns);
                    (a.receive_ns - m)
                        .abs()
                        .total_cmp(&(b.receive_ns - m).abs())
                })
                .map(|r| r.receive_top.clone())
                .unwrap_or_default(),
        }
    }
}

/// One window of the lab under its current configuration, profiled.
pub fn profile(
    lab: &Lab,
    tg: &Path,
    dir: &lab::Scratch,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<CpuSplit> {
    let data = dir.0.join("fwdcpu.data");
    let mut stat0 = None;
    let pps = lab.measure_pps_observed(tg, warmup, window, |window| {
        stat0 = Some(cpu_times()?);
        let period = PERIOD_NS.to_string();
        let event = ["-e", "cpu-clock", "-c", &period];
        Ok(Some(perf::record(&data, &event, window)?))
    })?;
    let stat1 = cpu_times()?;
    let busy = stat0
        .context("no /proc/stat reading")?
        .iter()
        .zip(&stat1)
        .map(|(a, b)| {
            let total = b.total.saturating_sub(a.total).max(1) as f64;
            b.busy.saturating_sub(a.busy) as f64 / total
        })
        .collect();
    let script = perf::read(&data, &["script", "-F", "comm,tid,ip,sym"]);
    let _ = std::fs::remove_file(&data);
    let (counts, leaves) = classify(&script?);
    // Shares of the samples times the CPU's time per frame: perf's sampling starts a moment
    // after the sink's count does (and ends as much later), so the shares, not the sample
    // counts over the counted frames, are what belongs to the window's rate.
    let total: u64 = counts.iter().sum();
    let ns = |n: u64| n as f64 / total.max(1) as f64 * 1e9 / pps.max(1.0);
    let mut top: Vec<(String, u64)> = leaves.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(CpuSplit {
        pps,
        samples: counts.iter().sum(),
        receive_ns: ns(counts[Class::Receive as usize]),
        sender_ns: ns(counts[Class::Sender as usize]),
        idle_ns: ns(counts[Class::Idle as usize]),
        other_ns: ns(counts[Class::Other as usize]),
        busy,
        receive_top: top.into_iter().take(TOP).map(|(s, n)| (s, ns(n))).collect(),
    })
}

#[derive(Clone, Copy)]
enum Class {
    Receive,
    Sender,
    Idle,
    Other,
}

/// Samples per [`Class`] in `perf script -F comm,tid,ip,sym` output: a line with the
/// command and thread opens a sample, its call chain follows one frame a line
/// (`\tADDR SYMBOL`), a blank line ends it.
/// Also the receive samples per leaf function (BPF programs under one name).
fn classify(script: &str) -> ([u64; 4], HashMap<String, u64>) {
    let mut counts = [0u64; 4];
    let mut leaves: HashMap<String, u64> = HashMap::new();
    let mut leaf = String::new();
    let mut sample: Option<(bool, bool, bool)> = None; // (trafgen, receive, idle)
    let mut end = |s: &mut Option<(bool, bool, bool)>, leaf: &str| {
        if let Some((trafgen, receive, idle)) = s.take() {
            if receive {
                *leaves.entry(leaf.to_owned()).or_default() += 1;
            }
            let class = if receive {
                Class::Receive
            } else if trafgen {
                Class::Sender
            } else if idle {
                Class::Idle
            } else {
                Class::Other
            };
            counts[class as usize] += 1;
        }
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            end(&mut sample, &leaf);
            continue;
        }
        if !line.starts_with('\t') {
            end(&mut sample, &leaf);
            sample = Some((line.trim_start().starts_with("trafgen "), false, false));
            leaf.clear();
            continue;
        }
        let Some((_, receive, idle)) = sample.as_mut() else {
            continue;
        };
        let sym = line.split_whitespace().nth(1).unwrap_or("");
        let sym = sym.split_once('+').map_or(sym, |(s, _)| s);
        if leaf.is_empty() {
            leaf.push_str(if sym.starts_with("bpf_prog_") {
                "(BPF programs)"
            } else {
                sym
            });
        }
        *receive |= matches!(
            sym,
            "net_rx_action"
                | "__napi_poll"
                | "process_backlog"
                | "veth_poll"
                | "__netif_receive_skb_core"
        ) || sym.starts_with("bpf_prog_");
        *idle |= matches!(sym, "do_idle" | "cpu_startup_entry" | "default_idle_call");
    }
    end(&mut sample, &leaf);
    (counts, leaves)
}

/// Per CPU: (busy, total) jiffies from /proc/stat.
struct CpuTimes {
    busy: u64,
    total: u64,
}

fn cpu_times() -> anyhow::Result<Vec<CpuTimes>> {
    let text = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            CpuTimes {
                busy: total - idle,
                total,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_classified_by_their_call_chain() {
        let script = "\
trafgen  1234/1234 
\tffffffff81000001 veth_xmit+0x10
\tffffffff81000002 packet_sendmsg+0x20

trafgen  1234/1234 
\tffffffffc0000001 bpf_prog_abc_pktpath_xdp_floor+0x4

trafgen  1234/1234 
\tffffffff81000003 ip_forward+0x1
\tffffffff81000004 net_rx_action+0x2

swapper     0/0   
\tffffffff81000005 pv_native_safe_halt+0x1
\tffffffff81000006 do_idle+0x1

kworker/0:1    77/77   
\tffffffff81000007 process_one_work+0x1
";
        let (c, leaves) = classify(script);
        assert_eq!(leaves.get("ip_forward"), Some(&1), "{leaves:?}");
        assert_eq!(leaves.get("(BPF programs)"), Some(&1), "{leaves:?}");
        assert_eq!(c[Class::Receive as usize], 2, "{c:?}");
        assert_eq!(c[Class::Sender as usize], 1, "{c:?}");
        assert_eq!(c[Class::Idle as usize], 1, "{c:?}");
        assert_eq!(c[Class::Other as usize], 1, "{c:?}");
    }
}
