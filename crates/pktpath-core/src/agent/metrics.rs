//! The agent's metrics: a prometheus-client collector that reads the data path's counters
//! from the pinned maps at scrape time (nothing is copied on a timer), beside what the
//! agent's loop records about its reloads ([`Status`]).
//!
//! Metric names and labels (documented in docs/agent.md):
//!
//! ```text
//! pktpath_policy_packets_total{id,priority}      counter  packets matched per policy
//! pktpath_policy_bytes_total{id,priority}        counter  bytes matched per policy
//! pktpath_interface_packets_total{interface,outcome}  counter  outcome: passed|forwarded|dropped|error|invalid
//! pktpath_interface_bytes_total{interface,outcome}    counter  outcome: passed|forwarded|dropped
//! pktpath_attached                               gauge    1 when the data path is attached
//! pktpath_generation                             gauge    the apply serial of the tables in use
//! pktpath_policies                               gauge    policies in the set in use
//! pktpath_rules / pktpath_trees / pktpath_table_bytes  gauge  of the agent's last apply
//! pktpath_reloads_total / pktpath_reload_failures_total  counter
//! pktpath_last_reload_timestamp_seconds / pktpath_last_reload_success  gauge
//! pktpath_apply_duration_seconds                 gauge    of the last successful apply
//! pktpath_scrape_read_seconds                    gauge    time this scrape took reading the maps
//! process_resident_memory_bytes                  gauge    the agent's resident memory
//! pktpath_kernel_drops_total{reason,interface,netns,netns_name}  counter  kernel drops (skb:kfree_skb)
//! pktpath_kernel_drops_unkeyed_total             counter  drops that found the key map full
//! pktpath_kernel_drop_keys                       gauge    keys in use in the kernel's map
//! pktpath_hop_latency_seconds{iif,oif}           histogram  receive to transmit (--hop-latency)
//! ```

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    sync::{Arc, Mutex},
    time::{Instant, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use super::status::Status;
use crate::{
    dropmon::DropMonitor,
    hoplat::{HopLatency, HopRow},
    route::datapath::attach::{self, AttachError, IfaceStats, Layout},
    sys::netns,
};

/// One policy's counters at scrape time.
struct PolicyRow {
    id: String,
    priority: String,
    packets: u64,
    bytes: u64,
}

/// The data path's counters, read consistently with one generation.
struct Snapshot {
    generation: u32,
    policies: Vec<PolicyRow>,
    interfaces: Vec<IfaceStats>,
}

/// (id, priority, counter slot) of each policy of one generation, parsed once from the set
/// file and kept while that generation is in use.
struct PolicyIndex {
    /// The generation and the state directory's change time (a detach and a new attach
    /// start generations again in a new directory).
    key: (u32, i64, i64),
    rows: Vec<(String, String, u32)>,
}

/// Reads the data path at scrape time.
#[derive(Debug)]
pub struct DatapathCollector {
    layout: Layout,
    status: Arc<Status>,
    index: Mutex<Option<PolicyIndexBox>>,
    /// The kernel drop monitor, when on.
    drops: Option<Arc<DropMonitor>>,
    /// The hop-latency histograms, when on.
    hops: Option<Arc<HopLatency>>,
}

/// [`PolicyIndex`] behind a Debug the collector trait needs.
struct PolicyIndexBox(PolicyIndex);

impl std::fmt::Debug for PolicyIndexBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PolicyIndex(generation {}, {} policies)",
            self.0.key.0,
            self.0.rows.len()
        )
    }
}

/// How often a scrape reads again when an apply flipped generations meanwhile.
const READ_TRIES: usize = 20;

impl DatapathCollector {
    pub fn new(
        layout: Layout,
        status: Arc<Status>,
        drops: Option<Arc<DropMonitor>>,
        hops: Option<Arc<HopLatency>>,
    ) -> Self {
        Self {
            layout,
            status,
            index: Mutex::new(None),
            drops,
            hops,
        }
    }

    /// A registry serving this collector.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        registry
    }

    /// Reads the data path once, so that the first scrape after an apply finds the policy
    /// index built (parsing a set of 100k policies takes about a second).
    pub fn warm(&self) {
        if let Err(e) = self.snapshot() {
            log::debug!("reading the data path after an apply: {e}");
        }
    }

    fn snapshot(&self) -> Result<Snapshot, AttachError> {
        let attached = attach::open(&self.layout)?;
        let stamp = std::fs::metadata(self.layout.state_dir())
            .map(|m| (m.ctime(), m.ctime_nsec()))
            .unwrap_or((0, 0));
        for _ in 0..READ_TRIES {
            let generation = attached.maps.serial()?;
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if index
                .as_ref()
                .is_none_or(|i| i.0.key != (generation, stamp.0, stamp.1))
            {
                // The set as read is consistent with its own generation (see `active`).
                let active = attached.active()?;
                let mut rows = Vec::with_capacity(active.set.policies.len());
                for p in &active.set.policies {
                    if let Some(&slot) = active.slots.by_id.get(&p.id) {
                        rows.push((p.id.clone(), p.priority.to_string(), slot));
                    }
                }
                let key = (active.generation, stamp.0, stamp.1);
                *index = Some(PolicyIndexBox(PolicyIndex { key, rows }));
            }
            let index = &index.as_ref().expect("just set").0;
            if index.key.0 != generation {
                continue;
            }
            let mut policies = Vec::with_capacity(index.rows.len());
            for (id, priority, slot) in &index.rows {
                let c = attached.maps.policy_counters(*slot)?;
                policies.push(PolicyRow {
                    id: id.clone(),
                    priority: priority.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
            let interfaces = attached.interface_stats()?;
            if attached.maps.serial()? == generation {
                return Ok(Snapshot {
                    generation,
                    policies,
                    interfaces,
                });
            }
        }
        Err(AttachError::Unsettled {
            dir: self.layout.pin_dir.display().to_string(),
        })
    }
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, f64>(&value, None)
}

/// The hop-latency histogram family: one histogram per (input, output) interface pair,
/// cumulative buckets in seconds ending with `+Inf`, `_count` the `+Inf` bucket.
pub fn hop_histograms(
    encoder: &mut DescriptorEncoder,
    rows: &[HopRow],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "pktpath_hop_latency_seconds",
        "Time from a packet's receive on one of the router's interfaces (netif_receive_skb) to its transmit on one of them (net_dev_start_xmit), by input (iif) and output (oif) interface.",
        None,
        MetricType::Histogram,
    )?;
    for row in rows {
        family
            .encode_family(&[("iif", row.iif.as_str()), ("oif", row.oif.as_str())])?
            .encode_histogram::<NoLabelSet>(
                row.sum_ns as f64 / 1e9,
                row.count(),
                &row.buckets_by_bound(),
                None,
            )?;
    }
    Ok(())
}

/// A counter family: one sample per label set.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, f64>(&value, None)?;
    }
    Ok(())
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let start = Instant::now();
        let snapshot = match self.snapshot() {
            Ok(s) => Some(s),
            Err(e) => {
                log::debug!("scrape: the data path cannot be read: {e}");
                None
            }
        };
        let read = start.elapsed();
        let e = &mut encoder;
        gauge(
            e,
            "pktpath_attached",
            "Whether the data path is attached and readable (1) or not (0).",
            u32::from(snapshot.is_some()),
        )?;
        if let Some(s) = &snapshot {
            gauge(
                e,
                "pktpath_generation",
                "Apply serial of the policy tables in use.",
                s.generation,
            )?;
            gauge(
                e,
                "pktpath_policies",
                "Policies in the set in use.",
                s.policies.len() as u64,
            )?;
            counters(
                e,
                "pktpath_policy_packets",
                "Packets matched by each policy of the set in use.",
                s.policies.iter().map(|p| {
                    (
                        [("id", p.id.as_str()), ("priority", p.priority.as_str())],
                        p.packets,
                    )
                }),
            )?;
            counters(
                e,
                "pktpath_policy_bytes",
                "Bytes matched by each policy of the set in use.",
                s.policies.iter().map(|p| {
                    (
                        [("id", p.id.as_str()), ("priority", p.priority.as_str())],
                        p.bytes,
                    )
                }),
            )?;
            counters(
                e,
                "pktpath_interface_packets",
                "Packets the data path saw on each interface, by outcome (passed to the kernel, forwarded, dropped, error; invalid: headers the kernel would refuse, passed on and also counted as passed).",
                s.interfaces.iter().flat_map(|i| {
                    [
                        ("passed", i.passed_packets),
                        ("forwarded", i.forwarded_packets),
                        ("dropped", i.dropped_packets),
                        ("error", i.error_packets),
                        ("invalid", i.invalid_packets),
                    ]
                    .map(|(outcome, v)| ([("interface", i.name.as_str()), ("outcome", outcome)], v))
                }),
            )?;
            counters(
                e,
                "pktpath_interface_bytes",
                "Bytes the data path saw on each interface, by outcome (passed to the kernel, forwarded, dropped).",
                s.interfaces.iter().flat_map(|i| {
                    [
                        ("passed", i.passed_bytes),
                        ("forwarded", i.forwarded_bytes),
                        ("dropped", i.dropped_bytes),
                    ]
                    .map(|(outcome, v)| ([("interface", i.name.as_str()), ("outcome", outcome)], v))
                }),
            )?;
        }
        let record = self.status.get();
        if let Some(a) = &record.applied {
            gauge(
                e,
                "pktpath_rules",
                "Classifier rules of the agent's last successful apply.",
                a.rules as u64,
            )?;
            gauge(
                e,
                "pktpath_match_shapes",
                "Distinct match shapes (prefix lengths, fields named, port kinds) among the rules of the agent's last successful apply.",
                a.match_shapes as u64,
            )?;
            gauge(
                e,
                "pktpath_trees",
                "Decision trees (IPv4 and IPv6) of the agent's last successful apply.",
                a.trees as u64,
            )?;
            gauge(
                e,
                "pktpath_table_bytes",
                "Bytes of classifier tables in the kernel after the agent's last successful apply.",
                a.table_bytes,
            )?;
            gauge(
                e,
                "pktpath_apply_duration_seconds",
                "How long the agent's last successful apply took (compile, write, swap).",
                a.duration.as_secs_f64(),
            )?;
        }
        counter(
            e,
            "pktpath_reloads",
            "Reloads the agent tried (the apply at start included).",
            record.reloads,
        )?;
        counter(
            e,
            "pktpath_reload_failures",
            "Reloads that failed (a bad file, a refused policy set, a busy writer lock); the running set stayed.",
            record.failures,
        )?;
        if let Some((when, ok)) = record.last_reload {
            gauge(
                e,
                "pktpath_last_reload_timestamp_seconds",
                "When the last reload ended (Unix time).",
                when.duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            )?;
            gauge(
                e,
                "pktpath_last_reload_success",
                "Whether the last reload succeeded (1) or failed (0).",
                u32::from(ok),
            )?;
        }
        gauge(
            e,
            "pktpath_scrape_read_seconds",
            "How long this scrape took to read the data path's maps.",
            read.as_secs_f64(),
        )?;
        if let Some(monitor) = &self.drops {
            match monitor.read() {
                Ok(drops) => {
                    // Inode and name (under /run/netns) of each namespace, looked up once
                    // per scrape: a name reads better, an inode names every namespace.
                    let mut names: HashMap<u32, String> = HashMap::new();
                    let netns: Vec<(String, String)> = drops
                        .rows
                        .iter()
                        .map(|r| {
                            if r.netns == 0 {
                                return (String::new(), String::new());
                            }
                            let name = names.entry(r.netns).or_insert_with(|| {
                                netns::name_of_inode(u64::from(r.netns)).unwrap_or_default()
                            });
                            (r.netns.to_string(), name.clone())
                        })
                        .collect();
                    counters(
                        e,
                        "pktpath_kernel_drops",
                        "Packets the kernel dropped (skb:kfree_skb), by drop reason, the device the packet had, the inode of that device's network namespace and its name under /run/netns (empty without a device, or without a name).",
                        drops.rows.iter().zip(&netns).map(|(r, (ns, name))| {
                            (
                                [
                                    ("reason", r.reason.as_str()),
                                    ("interface", r.interface.as_str()),
                                    ("netns", ns.as_str()),
                                    ("netns_name", name.as_str()),
                                ],
                                r.packets,
                            )
                        }),
                    )?;
                    counter(
                        e,
                        "pktpath_kernel_drops_unkeyed",
                        "Kernel drops counted without reason, interface and netns because the monitor's key map was full.",
                        drops.overflow,
                    )?;
                    gauge(
                        e,
                        "pktpath_kernel_drop_keys",
                        "(reason, interface, netns) keys in use in the drop monitor's kernel map.",
                        drops.rows.len() as u64,
                    )?;
                }
                Err(err) => log::warn!(
                    "scrape: the drop monitor cannot be read: {}",
                    super::one_line(&err)
                ),
            }
        }
        if let Some(hops) = &self.hops {
            match hops.read() {
                Ok(rows) => hop_histograms(e, &rows)?,
                Err(err) => log::warn!(
                    "scrape: the hop-latency histograms cannot be read: {}",
                    super::one_line(&err)
                ),
            }
        }
        if let Some(rss) = resident_bytes() {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory of the agent process.",
                rss,
            )?;
        }
        Ok(())
    }
}

/// This process's resident memory (/proc/self/statm).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use pktpath_common::hop::{HOP_BUCKETS, hop_bucket};
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::hop_histograms;
    use crate::hoplat::HopRow;

    #[derive(Debug)]
    struct Rows(Vec<HopRow>);

    impl Collector for Rows {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            hop_histograms(&mut encoder, &self.0)
        }
    }

    /// The exposition of two pairs: cumulative buckets from 512 ns, `+Inf` last and equal
    /// to `_count`, `_sum` in seconds.
    #[test]
    fn hop_histograms_are_cumulative_with_count_and_sum() {
        let mut a = HopRow {
            iif: "eth0".into(),
            oif: "eth1".into(),
            buckets: [0; HOP_BUCKETS],
            sum_ns: 0,
        };
        for ns in [300, 1_500, 1_600, 40_000, 9_000_000_000] {
            a.buckets[hop_bucket(ns)] += 1;
            a.sum_ns += ns;
        }
        let mut b = a.clone();
        b.iif = "eth1".into();
        b.oif = "eth0".into();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Rows(vec![a, b])));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE pktpath_hop_latency_seconds histogram",
            "pktpath_hop_latency_seconds_sum{iif=\"eth0\",oif=\"eth1\"} 9.0000434",
            "pktpath_hop_latency_seconds_count{iif=\"eth0\",oif=\"eth1\"} 5",
            "pktpath_hop_latency_seconds_bucket{le=\"5.12e-7\",iif=\"eth0\",oif=\"eth1\"} 1",
            "pktpath_hop_latency_seconds_bucket{le=\"0.000001024\",iif=\"eth0\",oif=\"eth1\"} 1",
            "pktpath_hop_latency_seconds_bucket{le=\"0.000002048\",iif=\"eth0\",oif=\"eth1\"} 3",
            "pktpath_hop_latency_seconds_bucket{le=\"4.294967296\",iif=\"eth0\",oif=\"eth1\"} 4",
            "pktpath_hop_latency_seconds_bucket{le=\"+Inf\",iif=\"eth0\",oif=\"eth1\"} 5",
            "pktpath_hop_latency_seconds_count{iif=\"eth1\",oif=\"eth0\"} 5",
        ] {
            assert!(lines.contains(&want), "{want} in:\n{text}");
        }
        let buckets: Vec<u64> = lines
            .iter()
            .filter(|l| {
                l.starts_with("pktpath_hop_latency_seconds_bucket{") && l.contains("iif=\"eth0\"")
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), HOP_BUCKETS);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }
}
