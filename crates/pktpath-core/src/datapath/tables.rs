//! Writing compiled tables into the data path's maps, and reading its counters.
//!
//! An apply writes the inactive generation completely (tuples, rule entries, tuple count)
//! and then flips `RouteState::active` in ROUTE_STATE: every packet classifies against the
//! old set or the new one, never a mix. Each write of the state entry changes one 32-bit
//! word (see [`RouteState`]). Entries of the generation being rewritten are removed
//! first; they have been unused since the previous apply.

use std::{collections::HashSet, hash::Hash, path::Path};

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use pktpath_common::route::{
    Bucket, ClassKey, ClassKeyV4, FAMILY_V4, GENERATIONS, IfaceCounters, MAP_IFACE_STATS,
    MAP_IFACE_STATS_HIGH, MAP_NEXTHOPS, MAP_POLICY_STATS, MAP_RULES, MAP_RULES_V4, MAP_STATE,
    MAP_TUPLES, MAX_IFACES, MAX_TUPLES, NextHop, PolicyCounters, RouteState, TupleMask,
};

use super::tuples::Tables;

/// A map operation on the data path failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the data path object has no map {0}")]
    MissingMap(&'static str),
    #[error("{op} on map {map} failed")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "opening the pinned map {path} failed; is the data path attached (`pktpath route attach`)?"
    )]
    Pin {
        path: String,
        #[source]
        source: MapError,
    },
    #[error("too many next hops: {0}")]
    TooManyNextHops(usize),
}

fn map_err(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map { op, map, source }
}

/// Makes generation `generation` of a rule hash hold exactly `entries`: deletes its keys
/// the new entries do not have (the others are overwritten, so deleting them first would
/// be wasted syscalls), then writes the entries.
fn rewrite_generation<'a, K: Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, Bucket>,
    name: &'static str,
    generation: u32,
    entries: impl Iterator<Item = (K, &'a Bucket)>,
    generation_of: impl Fn(&K) -> u8,
) -> Result<(), TableError> {
    let entries: Vec<(K, &Bucket)> = entries.collect();
    let fresh: HashSet<K> = entries.iter().map(|(k, _)| *k).collect();
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| generation_of(k) as u32 == generation && !fresh.contains(k))
        .collect();
    for k in &stale {
        match map.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("delete", name)(e)),
        }
    }
    for (k, v) in entries {
        map.insert(k, v, 0).map_err(map_err("insert", name))?;
    }
    Ok(())
}

/// Handles on the data path's maps.
pub struct DatapathMaps {
    tuples: Array<MapData, TupleMask>,
    /// IPv6 entries.
    rules: HashMap<MapData, ClassKey, Bucket>,
    rules_v4: HashMap<MapData, ClassKeyV4, Bucket>,
    state: Array<MapData, RouteState>,
    nexthops: Array<MapData, NextHop>,
    policy_stats: PerCpuArray<MapData, PolicyCounters>,
    iface_stats: PerCpuArray<MapData, IfaceCounters>,
    iface_stats_high: PerCpuHashMap<MapData, u32, IfaceCounters>,
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The generation now active.
    pub generation: u32,
    pub tuples: usize,
    pub entries: usize,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, TableError> {
    ebpf.take_map(name).ok_or(TableError::MissingMap(name))
}

/// The maps user space reads and writes (all pinned by `attach`).
pub const MAP_NAMES: [&str; 8] = [
    MAP_TUPLES,
    MAP_RULES,
    MAP_RULES_V4,
    MAP_STATE,
    MAP_NEXTHOPS,
    MAP_POLICY_STATS,
    MAP_IFACE_STATS,
    MAP_IFACE_STATS_HIGH,
];

impl DatapathMaps {
    /// Takes the maps out of a loaded data path object (its programs keep using them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, TableError> {
        Self::from_source(|name| take(ebpf, name))
    }

    /// Opens the maps pinned as `dir/NAME` (see [`MAP_NAMES`]).
    pub fn from_pins(dir: &Path) -> Result<Self, TableError> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let pin_err = |source| TableError::Pin {
                path: path.display().to_string(),
                source,
            };
            let data = MapData::from_pin(&path).map_err(pin_err)?;
            Map::from_map_data(data).map_err(pin_err)
        })
    }

    fn from_source(
        mut get: impl FnMut(&'static str) -> Result<Map, TableError>,
    ) -> Result<Self, TableError> {
        let conv = |name: &'static str| map_err("open", name);
        Ok(Self {
            tuples: Array::try_from(get(MAP_TUPLES)?).map_err(conv(MAP_TUPLES))?,
            rules: HashMap::try_from(get(MAP_RULES)?).map_err(conv(MAP_RULES))?,
            rules_v4: HashMap::try_from(get(MAP_RULES_V4)?).map_err(conv(MAP_RULES_V4))?,
            state: Array::try_from(get(MAP_STATE)?).map_err(conv(MAP_STATE))?,
            nexthops: Array::try_from(get(MAP_NEXTHOPS)?).map_err(conv(MAP_NEXTHOPS))?,
            policy_stats: PerCpuArray::try_from(get(MAP_POLICY_STATS)?)
                .map_err(conv(MAP_POLICY_STATS))?,
            iface_stats: PerCpuArray::try_from(get(MAP_IFACE_STATS)?)
                .map_err(conv(MAP_IFACE_STATS))?,
            iface_stats_high: PerCpuHashMap::try_from(get(MAP_IFACE_STATS_HIGH)?)
                .map_err(conv(MAP_IFACE_STATS_HIGH))?,
        })
    }

    fn state(&self) -> Result<RouteState, TableError> {
        self.state.get(&0, 0).map_err(map_err("read", MAP_STATE))
    }

    fn set_state(&mut self, state: &RouteState) -> Result<(), TableError> {
        self.state
            .set(0, state, 0)
            .map_err(map_err("write", MAP_STATE))
    }

    /// The generation packets use now.
    pub fn active_generation(&self) -> Result<u32, TableError> {
        Ok(self.state()?.active & 1)
    }

    /// Writes `tables` into the inactive generation, then makes it the active one.
    pub fn apply(&mut self, tables: &Tables) -> Result<Applied, TableError> {
        let mut state = self.state()?;
        let active = state.active & 1;
        let next = (active + 1) % GENERATIONS;
        // Readers of `next` stop at its tuple count; zero it while rewriting.
        state.tuples[next as usize] = 0;
        self.set_state(&state)?;
        for (i, t) in tables.tuples.iter().enumerate() {
            self.tuples
                .set(next * MAX_TUPLES + i as u32, t, 0)
                .map_err(map_err("write", MAP_TUPLES))?;
        }
        let gen_key = |k: &ClassKey| ClassKey {
            generation: next as u8,
            ..*k
        };
        let (v4, v6): (Vec<_>, Vec<_>) = tables
            .entries
            .iter()
            .partition(|(k, _)| k.family == FAMILY_V4);
        rewrite_generation(
            &mut self.rules_v4,
            MAP_RULES_V4,
            next,
            v4.iter().map(|(k, v)| (gen_key(k).v4(), v)),
            |k| k.generation,
        )?;
        rewrite_generation(
            &mut self.rules,
            MAP_RULES,
            next,
            v6.iter().map(|(k, v)| (gen_key(k), v)),
            |k| k.generation,
        )?;
        state.tuples[next as usize] = tables.tuples.len() as u32;
        self.set_state(&state)?;
        // The flip: the only word this write changes.
        state.active = next;
        self.set_state(&state)?;
        Ok(Applied {
            generation: next,
            tuples: tables.tuples.len(),
            entries: tables.entries.len(),
        })
    }

    /// Replaces the next hop table.
    pub fn set_nexthops(&mut self, hops: &[NextHop]) -> Result<(), TableError> {
        if hops.len() > self.nexthops.len() as usize {
            return Err(TableError::TooManyNextHops(hops.len()));
        }
        for (i, h) in hops.iter().enumerate() {
            self.nexthops
                .set(i as u32, h, 0)
                .map_err(map_err("write", MAP_NEXTHOPS))?;
        }
        Ok(())
    }

    /// A policy slot's counters, summed over CPUs.
    pub fn policy_counters(&self, slot: u32) -> Result<PolicyCounters, TableError> {
        let per_cpu = self
            .policy_stats
            .get(&slot, 0)
            .map_err(map_err("read", MAP_POLICY_STATS))?;
        Ok(per_cpu
            .iter()
            .fold(PolicyCounters::default(), |mut acc, c| {
                acc.accumulate(c);
                acc
            }))
    }

    /// Zeroes policy slots' counters (before giving the slots to new policies). The CPU
    /// count is read once for all of them.
    pub fn reset_policy_counters(
        &mut self,
        slots: impl IntoIterator<Item = u32>,
    ) -> Result<(), TableError> {
        let n = nr_cpus()
            .map_err(|(_, e)| map_err("count CPUs for", MAP_POLICY_STATS)(MapError::IoError(e)))?;
        let zeros = vec![PolicyCounters::default(); n];
        for slot in slots {
            let values = PerCpuValues::try_from(zeros.clone())
                .map_err(|e| map_err("zero", MAP_POLICY_STATS)(MapError::IoError(e)))?;
            self.policy_stats
                .set(slot, values, 0)
                .map_err(map_err("write", MAP_POLICY_STATS))?;
        }
        Ok(())
    }

    /// An interface's counters, summed over CPUs (zero when it saw no packet).
    pub fn iface_counters(&self, ifindex: u32) -> Result<IfaceCounters, TableError> {
        let sum = |per_cpu: PerCpuValues<IfaceCounters>| {
            per_cpu.iter().fold(IfaceCounters::default(), |mut acc, c| {
                acc.accumulate(c);
                acc
            })
        };
        if ifindex < MAX_IFACES {
            return self
                .iface_stats
                .get(&ifindex, 0)
                .map(sum)
                .map_err(map_err("read", MAP_IFACE_STATS));
        }
        match self.iface_stats_high.get(&ifindex, 0) {
            Ok(per_cpu) => Ok(sum(per_cpu)),
            Err(MapError::KeyNotFound) => Ok(IfaceCounters::default()),
            Err(e) => Err(map_err("read", MAP_IFACE_STATS_HIGH)(e)),
        }
    }
}
