//! The kernel drop monitor: an always-on aggregator on `skb:kfree_skb` (the `drops` eBPF
//! object) that counts dropped packets per CPU in the kernel by (drop reason, device,
//! network namespace). Nothing is copied to user space per event: [`DropMonitor::read`]
//! sums the per-CPU counters when asked (the agent does at scrape time). Each CPU counts in
//! a few cache slots in front of the hash of keys, whose lookup cost more than the rest of
//! the program (see [`DropCacheSlot`](pktpath_common::drops::DropCacheSlot)); a key's count is its hash value plus its slots'.
//!
//! Frees that are not drops are not counted: `SKB_CONSUMED` (the kernel reports those on
//! `skb:consume_skb` anyway), `SKB_NOT_DROPPED_YET`, and deliveries: the free of a packet
//! a socket got a clone of (a second program, on `sk_data_ready`, notes those). The
//! programs are attached for the life of the [`DropMonitor`] and detached when it is
//! dropped; nothing is pinned.

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::ProgramError,
};
use std::{collections::HashMap, sync::Mutex};

use pktpath_common::drops::{
    DROP_KEYS_MAX, DropCache, DropKey, GLOBAL_REASON_CONSUMED, GLOBAL_REASON_NOT_DROPPED,
    MAP_DROP_CACHE, MAP_DROP_CACHE_SEQ, MAP_DROPS, MAP_DROPS_OVERFLOW,
};

use crate::{
    btf::{self, Btf, BtfError},
    loader::{self, GlobalValue, LoadError, Object},
    trace::drops::DropReasons,
};

/// The program's name in the object (and in `bpftool prog show`).
pub const PROGRAM: &str = "drops_kfree_skb";
/// The tracepoint it is attached to.
const TRACEPOINT: &str = "kfree_skb";
/// The program that notes clones handed to sockets, so that the original's free with a
/// drop reason (a ping reply's `NO_SOCKET` once ping's raw socket had its copy) is not
/// counted: it is a delivery.
const DELIVERIES: &str = "drops_sk_data_ready";
const DELIVERIES_TRACEPOINT: &str = "sk_data_ready";

/// The drop monitor could not start or be read.
#[derive(Debug, thiserror::Error)]
pub enum DropMonitorError {
    #[error("reading the kernel's BTF for the drop monitor failed")]
    Btf(#[from] BtfError),
    #[error("reading the kernel's BTF (aya) for the drop monitor failed")]
    AyaBtf(#[from] aya::BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "loading or attaching the drop monitor on skb:kfree_skb failed (needs CAP_BPF and CAP_PERFMON; --no-drop-monitor turns it off)"
    )]
    Program(#[source] ProgramError),
    #[error("the drop monitor's map {name} cannot be used")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Packets dropped at one (reason, device, namespace), summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRow {
    /// The reason's name (`NETFILTER_DROP`, ...), the kernel's enum value without its
    /// `SKB_DROP_REASON_` prefix.
    pub reason: String,
    /// The device's name and index; empty and 0 for an skb that had none.
    pub interface: String,
    pub ifindex: u32,
    /// Inode number of the device's network namespace; 0 without a device.
    pub netns: u32,
    pub packets: u64,
}

/// One read of the monitor's counters.
#[derive(Debug, Clone, Default)]
pub struct DropCounts {
    pub rows: Vec<DropRow>,
    /// Drops that found the map full and were counted without a key.
    pub overflow: u64,
}

/// The attached aggregator; detached when dropped.
pub struct DropMonitor {
    counts: PerCpuHashMap<MapData, DropKey, u64>,
    cache: PerCpuArray<MapData, DropCache>,
    seq: PerCpuArray<MapData, u64>,
    overflow: PerCpuArray<MapData, u64>,
    /// What [`DropMonitor::read`] last reported per key: a count moving from a cache slot
    /// to the hash between the two reads is seen in neither, and a counter must not go
    /// down.
    reported: Mutex<HashMap<DropKey, u64>>,
    reasons: DropReasons,
    /// The kernel's id of the loaded program (`bpftool prog show id N`).
    program_id: u32,
    /// Owns the program and its link.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for DropMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DropMonitor({} reasons known)", self.reasons.len())
    }
}

impl DropMonitor {
    /// Loads the aggregator with this kernel's layout and drop reasons (from
    /// /sys/kernel/btf/vmlinux) and attaches it to `skb:kfree_skb`, with room for
    /// [`DROP_KEYS_MAX`] keys.
    pub fn start() -> Result<Self, DropMonitorError> {
        Self::with_capacity(DROP_KEYS_MAX)
    }

    /// Like [`DropMonitor::start`] with room for `keys` (reason, device, namespace) keys.
    pub fn with_capacity(keys: u32) -> Result<Self, DropMonitorError> {
        let kernel = Btf::from_sys_fs()?;
        let offsets = btf::offsets::resolve(&kernel)?;
        let reasons = DropReasons::from_btf(&kernel).unwrap_or_else(|e| {
            log::warn!("drop reasons will be shown as numbers: {e}");
            DropReasons::default()
        });
        // Not drops: never counted. u32::MAX (no such reason) on a kernel without them.
        let consumed = reasons.value("CONSUMED").unwrap_or(u32::MAX);
        let not_dropped = reasons.value("NOT_DROPPED_YET").unwrap_or(u32::MAX);
        let globals = [
            (GLOBAL_REASON_CONSUMED, GlobalValue::U32(consumed)),
            (GLOBAL_REASON_NOT_DROPPED, GlobalValue::U32(not_dropped)),
        ];
        let mut ebpf = loader::load_sized(
            Object::Drops,
            Some(&offsets),
            &globals,
            &[(MAP_DROPS, keys)],
        )?;
        let aya_btf = aya::Btf::from_sys_fs()?;
        // Deliveries first: a delivery is never counted as a drop in between.
        attach(&mut ebpf, DELIVERIES, DELIVERIES_TRACEPOINT, &aya_btf)?;
        let program_id = attach(&mut ebpf, PROGRAM, TRACEPOINT, &aya_btf)?;
        let counts = take_map(&mut ebpf, MAP_DROPS)?;
        let cache = take_map(&mut ebpf, MAP_DROP_CACHE)?;
        let seq = take_map(&mut ebpf, MAP_DROP_CACHE_SEQ)?;
        let overflow = take_map(&mut ebpf, MAP_DROPS_OVERFLOW)?;
        Ok(Self {
            counts,
            cache,
            seq,
            overflow,
            reported: Mutex::default(),
            reasons,
            program_id,
            _ebpf: ebpf,
        })
    }

    /// The kernel's id of the monitor's program (its run time with
    /// `kernel.bpf_stats_enabled=1`: `bpftool prog show id N`).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// The counters now, summed over CPUs, one row per key: each key's hash value plus
    /// what the CPUs' cache slots hold for it, read between two reads of the sequence
    /// counts of the moves between them (retried while a move happens). A row never
    /// reports less than it did before, even from a read that kept meeting moves.
    pub fn read(&self) -> Result<DropCounts, DropMonitorError> {
        let map_err = |name| move |source| DropMonitorError::Map { name, source };
        // The hash, then the slots, between two reads of the CPUs' sequence counts: when
        // both are even and equal, no count moved from a slot to the hash meanwhile and the
        // sums are exact. A read that keeps meeting moves (keys that share slots and drop
        // all the time) is taken as it is: a moved count is then missed in it.
        let mut sums = HashMap::new();
        for _attempt in 0..8 {
            let before = self.moves()?;
            sums = self.sums()?;
            if before.iter().all(|s| s % 2 == 0) && self.moves()? == before {
                break;
            }
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::with_capacity(sums.len());
        for (key, now) in sums {
            let last = reported.entry(key).or_default();
            *last = (*last).max(now);
            let len = key.ifname.iter().position(|&b| b == 0).unwrap_or(16);
            rows.push(DropRow {
                reason: self.reasons.name(key.reason),
                interface: String::from_utf8_lossy(&key.ifname[..len]).into_owned(),
                ifindex: key.ifindex,
                netns: key.netns,
                packets: *last,
            });
        }
        rows.sort_by(|a, b| {
            (a.netns, &a.interface, &a.reason).cmp(&(b.netns, &b.interface, &b.reason))
        });
        let overflow = self
            .overflow
            .get(&0, 0)
            .map_err(map_err(MAP_DROPS_OVERFLOW))?
            .iter()
            .sum();
        Ok(DropCounts { rows, overflow })
    }
}

impl DropMonitor {
    /// Each CPU's count of the moves between its cache slots and the hash.
    fn moves(&self) -> Result<Vec<u64>, DropMonitorError> {
        let seq = self
            .seq
            .get(&0, 0)
            .map_err(|source| DropMonitorError::Map {
                name: MAP_DROP_CACHE_SEQ,
                source,
            })?;
        Ok(seq.iter().copied().collect())
    }

    /// Each key's hash value plus what the CPUs' cache slots hold for it. A slot is only
    /// counted for a key the hash holds (the kernel registers a key there before a slot
    /// takes it).
    fn sums(&self) -> Result<HashMap<DropKey, u64>, DropMonitorError> {
        let map_err = |name| move |source| DropMonitorError::Map { name, source };
        let mut sums: HashMap<DropKey, u64> = HashMap::new();
        for entry in self.counts.iter() {
            let (key, values) = match entry {
                Ok(e) => e,
                // A key deleted between listing and lookup: entries are never deleted, but
                // iteration must not fail on it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(MAP_DROPS)(e)),
            };
            *sums.entry(key).or_default() += values.iter().sum::<u64>();
        }
        let caches = self.cache.get(&0, 0).map_err(map_err(MAP_DROP_CACHE))?;
        for slot in caches
            .iter()
            .flat_map(|c| &c.slots)
            .filter(|s| s.count != 0)
        {
            if let Some(sum) = sums.get_mut(&slot.key) {
                *sum += slot.count;
            }
        }
        Ok(sums)
    }
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, DropMonitorError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    crate::loader::take_map(ebpf, name)
        .map_err(|(name, source)| DropMonitorError::Map { name, source })
}

fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<u32, DropMonitorError> {
    crate::loader::attach_tp_btf(ebpf, name, tracepoint, btf).map_err(DropMonitorError::Program)
}
