//! Hop-latency histograms: the agent's optional in-kernel aggregator (the `hoplat` eBPF
//! object) that times each packet from its receive on one of the router's interfaces
//! (`netif_receive_skb`) to its transmit on one of them (`net_dev_start_xmit`), both tp_btf,
//! and counts the time per CPU in log-scale buckets keyed by (input, output) interface.
//! Nothing is copied to user space per packet: [`HopLatency::read`] sums the per-CPU
//! histograms when asked (the agent does at scrape time).
//!
//! Which interfaces: the names given at start, in the network namespace given (the
//! agent's own). Their ifindexes are written into the kernel's table at start and again
//! by [`HopLatency::refresh`] (the agent calls it every second), so that an interface
//! deleted and made again is followed. The programs are attached for the life of the
//! [`HopLatency`] and detached when it is dropped; nothing is pinned.

use std::sync::Mutex;

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray},
    programs::ProgramError,
};
use pktpath_common::hop::{
    GLOBAL_HOP_IFACES, GLOBAL_HOP_NETNS, HOP_BUCKETS, HOP_IFACES_MAX, HOP_IFINDEX_MAX,
    HOP_MIN_SHIFT, HopHistogram, MAP_HOP_HIST, MAP_HOP_IFACES,
};

use crate::{
    btf::{self, Btf, BtfError},
    loader::{self, GlobalValue, LoadError, Object},
    sys::{SysError, iface, netns::NetNs},
};

/// The programs in the object (and in `bpftool prog show`), with their tracepoints.
pub const PROGRAMS: [(&str, &str); 2] = [
    ("hop_rx", "netif_receive_skb"),
    ("hop_tx", "net_dev_start_xmit"),
];

/// The hop-latency aggregator could not start or be read.
#[derive(Debug, thiserror::Error)]
pub enum HopLatencyError {
    #[error("reading the kernel's BTF for the hop-latency histograms failed")]
    Btf(#[from] BtfError),
    #[error("reading the kernel's BTF (aya) for the hop-latency histograms failed")]
    AyaBtf(#[from] aya::BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("no interface to measure hop latency on")]
    NoInterface,
    #[error(
        "loading or attaching the hop-latency programs on netif_receive_skb and net_dev_start_xmit failed (needs CAP_BPF and CAP_PERFMON; leave out --hop-latency to run without them)"
    )]
    Program(#[source] ProgramError),
    #[error("the hop-latency map {name} cannot be used")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// The upper bound of bucket `i`, in seconds: `2^(HOP_MIN_SHIFT + i)` ns, infinite for the
/// last (Prometheus' `le`).
pub fn bucket_bound_seconds(i: usize) -> f64 {
    if i + 1 >= HOP_BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << (HOP_MIN_SHIFT + i as u32)) as f64 / 1e9
    }
}

/// One (input, output) pair's latencies, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopRow {
    /// The interfaces' names as configured.
    pub iif: String,
    pub oif: String,
    /// Packets per bucket (not cumulative): bucket `i` counts latencies above bucket
    /// `i - 1`'s bound and at most [`bucket_bound_seconds`]`(i)`.
    pub buckets: [u64; HOP_BUCKETS],
    /// The sum of the latencies counted, in nanoseconds.
    pub sum_ns: u64,
}

impl HopRow {
    /// Packets counted: the sum of the buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// (upper bound in seconds, packets in that bucket alone), the last bound infinite: what
    /// a Prometheus histogram's encoder takes (it makes the buckets cumulative).
    pub fn buckets_by_bound(&self) -> Vec<(f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| (bucket_bound_seconds(i), n))
            .collect()
    }

    /// Adds one CPU's histogram.
    pub fn add(&mut self, h: &HopHistogram) {
        for (sum, n) in self.buckets.iter_mut().zip(h.buckets) {
            *sum += n;
        }
        self.sum_ns += h.sum_ns;
    }
}

/// The kernel's table of measured interfaces, and the ifindex written for each slot.
struct Table {
    map: Array<MapData, u32>,
    written: Vec<Option<u32>>,
}

/// The attached aggregator; detached when dropped.
pub struct HopLatency {
    names: Vec<String>,
    /// The namespace of the interfaces, when not the calling thread's.
    netns: Option<NetNs>,
    table: Mutex<Table>,
    hist: PerCpuArray<MapData, HopHistogram>,
    program_ids: Vec<(&'static str, u32)>,
    /// Owns the programs and their links.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for HopLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HopLatency({})", self.names.join(", "))
    }
}

impl HopLatency {
    /// Loads the programs with this kernel's layout (from /sys/kernel/btf/vmlinux) to
    /// measure the interfaces named `names` of the calling thread's network namespace (the
    /// first [`HOP_IFACES_MAX`]) and attaches them.
    pub fn start(names: &[String]) -> Result<Self, HopLatencyError> {
        Self::start_with(names, None)
    }

    /// Like [`HopLatency::start`] for interfaces of namespace `ns`.
    pub fn start_in(ns: NetNs, names: &[String]) -> Result<Self, HopLatencyError> {
        Self::start_with(names, Some(ns))
    }

    fn start_with(names: &[String], netns: Option<NetNs>) -> Result<Self, HopLatencyError> {
        if names.is_empty() {
            return Err(HopLatencyError::NoInterface);
        }
        let mut names = names.to_vec();
        if names.len() > HOP_IFACES_MAX as usize {
            log::warn!(
                "hop latency is measured on the first {HOP_IFACES_MAX} interfaces only, not on {}",
                names[HOP_IFACES_MAX as usize..].join(", ")
            );
            names.truncate(HOP_IFACES_MAX as usize);
        }
        let n = names.len() as u32;
        let inode = match &netns {
            Some(ns) => ns.inode(),
            None => NetNs::current()?.inode(),
        };
        let kernel = Btf::from_sys_fs()?;
        let offsets = btf::offsets::resolve(&kernel)?;
        let globals = [
            (GLOBAL_HOP_NETNS, GlobalValue::U32(inode as u32)),
            (GLOBAL_HOP_IFACES, GlobalValue::U32(n)),
        ];
        let mut ebpf = loader::load_sized(
            Object::HopLatency,
            Some(&offsets),
            &globals,
            &[(MAP_HOP_HIST, n * n)],
        )?;
        let table = Table {
            map: take_map(&mut ebpf, MAP_HOP_IFACES)?,
            written: vec![None; names.len()],
        };
        let hist = take_map(&mut ebpf, MAP_HOP_HIST)?;
        let mut me = Self {
            names,
            netns,
            table: Mutex::new(table),
            hist,
            program_ids: Vec::new(),
            _ebpf: ebpf,
        };
        // The table first: the programs count from their first run.
        for (measured, line) in me.refresh()? {
            if measured {
                log::info!("{line}");
            } else {
                log::warn!("{line}");
            }
        }
        let btf = aya::Btf::from_sys_fs()?;
        for (name, tracepoint) in PROGRAMS {
            let id = attach(&mut me._ebpf, name, tracepoint, &btf)?;
            me.program_ids.push((name, id));
        }
        Ok(me)
    }

    /// The interfaces measured, in slot order.
    pub fn interfaces(&self) -> &[String] {
        &self.names
    }

    /// (name, kernel id) of each program (their run time with `kernel.bpf_stats_enabled=1`:
    /// `bpftool prog show id N`).
    pub fn program_ids(&self) -> &[(&'static str, u32)] {
        &self.program_ids
    }

    /// Looks the interfaces' ifindexes up again and writes those that changed into the
    /// kernel's table (an interface deleted is no longer measured; one made again is, under
    /// its new index). Returns a line per change, with whether the interface is measured now.
    pub fn refresh(&self) -> Result<Vec<(bool, String)>, HopLatencyError> {
        let lookup = || -> Vec<Option<u32>> {
            self.names
                .iter()
                .map(|name| iface::index(name).ok())
                .collect()
        };
        let now = match &self.netns {
            Some(ns) => ns.run(lookup)?,
            None => lookup(),
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::new();
        for (slot, (name, ifindex)) in self.names.iter().zip(now).enumerate() {
            let ifindex = ifindex.filter(|&i| {
                let fits = i < HOP_IFINDEX_MAX;
                if !fits {
                    log::warn!(
                        "hop latency is not measured on {name}: its ifindex {i} is {HOP_IFINDEX_MAX} or more"
                    );
                }
                fits
            });
            if table.written[slot] == ifindex {
                continue;
            }
            if let Some(old) = table.written[slot] {
                set(&mut table.map, old, 0)?;
            }
            match ifindex {
                Some(i) => {
                    set(&mut table.map, i, slot as u32 + 1)?;
                    changes.push((
                        true,
                        format!("hop latency measured on {name} (ifindex {i})"),
                    ));
                }
                None => changes.push((
                    false,
                    format!("hop latency not measured on {name}: no such interface"),
                )),
            }
            table.written[slot] = ifindex;
        }
        Ok(changes)
    }

    /// The histograms now, summed over CPUs: one row per (input, output) pair that has
    /// counted a packet (a pair's count never goes down, so its series never goes away
    /// once there).
    pub fn read(&self) -> Result<Vec<HopRow>, HopLatencyError> {
        let n = self.names.len();
        let mut rows = Vec::new();
        for (i, iif) in self.names.iter().enumerate() {
            for (o, oif) in self.names.iter().enumerate() {
                let values = self.hist.get(&((i * n + o) as u32), 0).map_err(|source| {
                    HopLatencyError::Map {
                        name: MAP_HOP_HIST,
                        source,
                    }
                })?;
                let mut row = HopRow {
                    iif: iif.clone(),
                    oif: oif.clone(),
                    buckets: [0; HOP_BUCKETS],
                    sum_ns: 0,
                };
                for h in values.iter() {
                    row.add(h);
                }
                if row.count() > 0 {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }
}

fn set(map: &mut Array<MapData, u32>, ifindex: u32, value: u32) -> Result<(), HopLatencyError> {
    map.set(ifindex, value, 0)
        .map_err(|source| HopLatencyError::Map {
            name: MAP_HOP_IFACES,
            source,
        })
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, HopLatencyError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    crate::loader::take_map(ebpf, name)
        .map_err(|(name, source)| HopLatencyError::Map { name, source })
}

fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<u32, HopLatencyError> {
    crate::loader::attach_tp_btf(ebpf, name, tracepoint, btf).map_err(HopLatencyError::Program)
}

#[cfg(test)]
mod tests {
    use pktpath_common::hop::{
        HOP_MAX_SHIFT, HOP_PENDING_SLOTS, ceil_log2, hop_bucket, hop_check, hop_pending_slot,
    };
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_powers_of_two_from_512_ns_to_4_s_then_infinity() {
        assert_eq!(HOP_BUCKETS, 25);
        assert_eq!(bucket_bound_seconds(0), 512e-9);
        assert_eq!(bucket_bound_seconds(1), 1024e-9);
        assert_eq!(bucket_bound_seconds(HOP_BUCKETS - 2), 4.294967296);
        assert_eq!(bucket_bound_seconds(HOP_BUCKETS - 1), f64::INFINITY);
        for i in 1..HOP_BUCKETS - 1 {
            assert_eq!(bucket_bound_seconds(i), 2.0 * bucket_bound_seconds(i - 1));
        }
    }

    #[test]
    fn bucket_edges() {
        for (ns, want) in [
            (0, 0),
            (1, 0),
            (511, 0),
            (512, 0),
            (513, 1),
            (1024, 1),
            (1025, 2),
            (2048, 2),
            (1 << 20, 11),
            ((1 << 20) + 1, 12),
            (1 << HOP_MAX_SHIFT, HOP_BUCKETS - 2),
            ((1 << HOP_MAX_SHIFT) + 1, HOP_BUCKETS - 1),
            (u64::MAX, HOP_BUCKETS - 1),
        ] {
            assert_eq!(hop_bucket(ns), want, "{ns} ns");
        }
    }

    proptest! {
        /// The halving agrees with the count of leading zeros the host has.
        #[test]
        fn ceil_log2_is_the_bit_length_of_n_minus_one(ns in any::<u64>()) {
            let want = if ns <= 1 { 0 } else { 64 - (ns - 1).leading_zeros() };
            prop_assert_eq!(ceil_log2(ns), want);
        }

        /// A latency lies within its bucket's bound and above the previous one's.
        #[test]
        fn a_latency_lies_between_its_buckets_bounds(ns in any::<u64>()) {
            let b = hop_bucket(ns);
            let s = ns as f64 / 1e9;
            prop_assert!(s <= bucket_bound_seconds(b), "{} ns in bucket {}", ns, b);
            if b > 0 {
                prop_assert!(s > bucket_bound_seconds(b - 1), "{} ns in bucket {}", ns, b);
            }
        }
    }

    /// `sk_buff`s one slab object (256 bytes) apart, as the kernel hands them out, land in
    /// different slots of the pending table.
    #[test]
    fn neighbouring_skbs_take_different_pending_slots() {
        let base = 0xffff_8881_0a3c_0000_u64;
        let slots: std::collections::HashSet<u32> = (0..4096)
            .map(|i| hop_pending_slot(base + i * 256))
            .collect();
        assert!(slots.iter().all(|&s| s < HOP_PENDING_SLOTS));
        assert!(
            slots.len() >= 4000,
            "{} distinct slots of 4096",
            slots.len()
        );
    }

    /// An entry whose fields come from two packets fails the check.
    #[test]
    fn a_torn_pending_entry_fails_its_check() {
        let whole = hop_check(0xffff_8881_0000_1000, 5_000, 0xffff_8882_0000_0000, 2, 0);
        assert_ne!(whole, 0);
        assert_ne!(
            whole,
            hop_check(0xffff_8881_0000_1000, 6_000, 0xffff_8882_0000_0000, 2, 0)
        );
        assert_ne!(
            whole,
            hop_check(0xffff_8881_0000_1000, 5_000, 0xffff_8882_0000_0800, 2, 0)
        );
        assert_ne!(
            whole,
            hop_check(0xffff_8881_0000_1000, 5_000, 0xffff_8882_0000_0000, 3, 1)
        );
    }

    #[test]
    fn rows_sum_cpus_and_count_their_buckets() {
        let mut row = HopRow {
            iif: "a".into(),
            oif: "b".into(),
            buckets: [0; HOP_BUCKETS],
            sum_ns: 0,
        };
        let mut cpu0 = HopHistogram::default();
        cpu0.buckets[hop_bucket(700)] += 1;
        cpu0.buckets[hop_bucket(3_000)] += 2;
        cpu0.sum_ns = 6_700;
        let mut cpu1 = HopHistogram::default();
        cpu1.buckets[hop_bucket(10_000_000_000)] += 1;
        cpu1.sum_ns = 10_000_000_000;
        row.add(&cpu0);
        row.add(&cpu1);
        assert_eq!(row.count(), 4);
        assert_eq!(row.sum_ns, 10_000_006_700);
        let by_bound = row.buckets_by_bound();
        assert_eq!(by_bound.len(), HOP_BUCKETS);
        assert_eq!(by_bound[1], (1024e-9, 1));
        assert_eq!(by_bound[3], (4096e-9, 2));
        assert_eq!(by_bound[HOP_BUCKETS - 1], (f64::INFINITY, 1));
    }
}
