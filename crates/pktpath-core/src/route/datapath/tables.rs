//! Writing compiled tables into the data path's maps, and reading its counters.
//!
//! An apply builds the inactive generation completely (its arena chunks, then its entry of
//! ROUTE_TREES) and then flips `RouteState::active` in ROUTE_STATE: every packet classifies
//! against the old set or the new one, never a mix. It then waits until no program can
//! still be walking the old generation and releases that generation's chunks, so the arena
//! holds one policy set between applies.

use std::{
    os::fd::{AsFd as _, OwnedFd},
    sync::atomic::{Ordering, fence},
};

use aya::{
    Ebpf,
    maps::{
        Array, ArrayOfMaps, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
        PerCpuValues,
    },
    util::nr_cpus,
};
use pktpath_common::route::{
    CHUNK_SLOTS, Chunk, GENERATIONS, GenTables, IfaceCounters, MAP_ARENA, MAP_IFACE_STATS,
    MAP_IFACE_STATS_HIGH, MAP_NEXTHOPS, MAP_POLICY_STATS, MAP_STATE, MAP_TREES, MAX_CHUNKS,
    MAX_IFACES, NextHop, PolicyCounters, RouteState,
};

use super::classifier::{Tables, TreeStats};
use crate::sys::{
    SysError,
    bpfmap::{Mapped, array_of_maps_entry, delete_array_entry, synchronize_programs},
};

/// `BPF_F_MMAPABLE`: the arena chunks are filled through a shared mapping.
const BPF_F_MMAPABLE: u32 = 1 << 10;

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
    #[error(
        "the classifier tables take {needed} chunks of {chunk_mib} MiB, the data path holds {max}"
    )]
    TooManyChunks {
        needed: usize,
        max: u32,
        chunk_mib: u32,
    },
    #[error(
        "another writer changed the data path while this apply ran (generation {expected} became {found}); nothing was applied, run the command again"
    )]
    Raced { expected: u32, found: u32 },
    #[error(transparent)]
    Sys(#[from] SysError),
}

fn map_err(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map { op, map, source }
}

/// Arena chunks `tables` take.
pub fn chunks(tables: &Tables) -> usize {
    tables.slots.len().div_ceil(CHUNK_SLOTS as usize)
}

/// Bytes `tables` take in the kernel: their arena chunks, whole.
pub fn kernel_bytes(tables: &Tables) -> u64 {
    (chunks(tables) * CHUNK_BYTES) as u64
}

/// Handles on the data path's maps.
pub struct DatapathMaps {
    arena: ArrayOfMaps<MapData, Array<MapData, Chunk>>,
    /// The arena's descriptor again, for the deletes aya's `ArrayOfMaps` does not offer.
    arena_fd: OwnedFd,
    trees: Array<MapData, GenTables>,
    state: Array<MapData, RouteState>,
    nexthops: Array<MapData, NextHop>,
    policy_stats: PerCpuArray<MapData, PolicyCounters>,
    iface_stats: PerCpuArray<MapData, IfaceCounters>,
    iface_stats_high: PerCpuHashMap<MapData, u32, IfaceCounters>,
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The apply count now active (its tables are generation `generation % GENERATIONS`).
    pub generation: u32,
    pub stats: TreeStats,
    /// Arena chunks the set takes, and their bytes.
    pub chunks: usize,
    pub arena_bytes: u64,
}

/// Tables written into the inactive generation, not yet seen by packets.
#[derive(Debug)]
#[must_use = "staged tables take effect only when flipped"]
pub struct Staged {
    /// The serial active when they were staged (they become active as the next one).
    from: u32,
    applied: Applied,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, TableError> {
    ebpf.take_map(name).ok_or(TableError::MissingMap(name))
}

/// The maps user space reads and writes (all pinned by `attach`).
pub const MAP_NAMES: [&str; 7] = [
    MAP_ARENA,
    MAP_TREES,
    MAP_STATE,
    MAP_NEXTHOPS,
    MAP_POLICY_STATS,
    MAP_IFACE_STATS,
    MAP_IFACE_STATS_HIGH,
];

/// Bytes of one arena chunk.
pub const CHUNK_BYTES: usize = size_of::<Chunk>();

impl DatapathMaps {
    /// Takes the maps out of a loaded data path object (its programs keep using them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, TableError> {
        Self::from_source(|name| take(ebpf, name))
    }

    /// Opens the maps pinned as `dir/NAME` (see [`MAP_NAMES`]).
    pub fn from_pins(dir: &std::path::Path) -> Result<Self, TableError> {
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
        let arena = get(MAP_ARENA)?;
        let Map::ArrayOfMaps(data) = &arena else {
            return Err(map_err("open", MAP_ARENA)(MapError::InvalidMapType {
                map_type: 0,
            }));
        };
        let arena_fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SysError::io(format!("dup of the {MAP_ARENA} descriptor"), e))?;
        Ok(Self {
            arena: ArrayOfMaps::try_from(arena).map_err(conv(MAP_ARENA))?,
            arena_fd,
            trees: Array::try_from(get(MAP_TREES)?).map_err(conv(MAP_TREES))?,
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

    /// How many applies this data path has seen: packets use table generation
    /// `serial % GENERATIONS`.
    pub fn serial(&self) -> Result<u32, TableError> {
        Ok(self.state()?.active)
    }

    /// The table generation packets use now.
    pub fn active_generation(&self) -> Result<u32, TableError> {
        Ok(self.serial()? % GENERATIONS)
    }

    /// A new chunk holding `slots` (at most [`CHUNK_SLOTS`]).
    fn chunk(slots: &[u64]) -> Result<Array<MapData, Chunk>, TableError> {
        let chunk = Array::<MapData, Chunk>::create(1, BPF_F_MMAPABLE)
            .map_err(map_err("create a chunk for", MAP_ARENA))?;
        let mut mapped = Mapped::new(chunk.map().fd().as_fd(), CHUNK_BYTES)?;
        let bytes = mapped.bytes_mut();
        for (word, slot) in bytes.chunks_exact_mut(8).zip(slots) {
            word.copy_from_slice(&slot.to_ne_bytes());
        }
        Ok(chunk)
    }

    /// Removes generation `generation`'s chunks from index `from` on. Deleting tells
    /// whether an entry was there (ENOENT: the generation ends before it); reading it would
    /// open the chunk by id, which needs CAP_SYS_ADMIN.
    fn release(&mut self, generation: u32, from: u32) -> Result<(), TableError> {
        let base = generation * MAX_CHUNKS;
        for c in from..MAX_CHUNKS {
            match delete_array_entry(self.arena_fd.as_fd(), base + c) {
                Ok(()) => {}
                Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes `tables` into the inactive generation, then makes it the active one and
    /// releases the generation it replaced.
    pub fn apply(&mut self, tables: &Tables) -> Result<Applied, TableError> {
        let staged = self.stage(tables)?;
        self.flip(staged)
    }

    /// Writes `tables` into the inactive generation; packets do not see them until
    /// [`DatapathMaps::flip`]. Whatever an interrupted apply left there is replaced.
    pub fn stage(&mut self, tables: &Tables) -> Result<Staged, TableError> {
        let state = self.state()?;
        let serial = state.active.wrapping_add(1);
        let next = serial % GENERATIONS;
        let chunks = chunks(tables);
        if chunks > MAX_CHUNKS as usize {
            return Err(TableError::TooManyChunks {
                needed: chunks,
                max: MAX_CHUNKS,
                chunk_mib: (CHUNK_BYTES >> 20) as u32,
            });
        }
        for (c, part) in tables.slots.chunks(CHUNK_SLOTS as usize).enumerate() {
            let chunk = Self::chunk(part)?;
            self.arena
                .set(next * MAX_CHUNKS + c as u32, &chunk, 0)
                .map_err(map_err("insert a chunk into", MAP_ARENA))?;
        }
        // Chunks an interrupted apply may have left beyond the new set's.
        self.release(next, chunks as u32)?;
        self.trees
            .set(next, tables.roots, 0)
            .map_err(map_err("write", MAP_TREES))?;
        Ok(Staged {
            from: state.active,
            applied: Applied {
                generation: serial,
                stats: tables.stats,
                chunks,
                arena_bytes: kernel_bytes(tables),
            },
        })
    }

    /// Makes the staged generation the active one (one word written: each packet sees the
    /// old set or the new one), then releases the one it replaced.
    pub fn flip(&mut self, staged: Staged) -> Result<Applied, TableError> {
        let mut state = self.state()?;
        if state.active != staged.from {
            return Err(TableError::Raced {
                expected: staged.from,
                found: state.active,
            });
        }
        // The chunks were written through a mapping: make those stores visible before the
        // flip that publishes them.
        fence(Ordering::SeqCst);
        state.active = staged.from.wrapping_add(1);
        self.state
            .set(0, state, 0)
            .map_err(map_err("write", MAP_STATE))?;
        // No packet may still be walking the old generation when its chunks go.
        synchronize_programs()?;
        self.release(staged.from % GENERATIONS, 0)?;
        Ok(staged.applied)
    }

    /// Whether the inactive generation holds tables: an apply was interrupted (before its
    /// flip, or after it but before the old generation was released).
    pub fn inactive_in_use(&self) -> Result<bool, TableError> {
        let inactive = self.inactive_generation()?;
        // The entry's id only: opening the chunk by id would need CAP_SYS_ADMIN.
        Ok(array_of_maps_entry(self.arena_fd.as_fd(), inactive * MAX_CHUNKS)?.is_some())
    }

    /// The table generation packets do not use now (the next apply writes it).
    fn inactive_generation(&self) -> Result<u32, TableError> {
        Ok(self.serial()?.wrapping_add(1) % GENERATIONS)
    }

    /// Releases the inactive generation's tables (what an interrupted apply left), once no
    /// packet can still be walking them.
    pub fn release_inactive(&mut self) -> Result<(), TableError> {
        let inactive = self.inactive_generation()?;
        synchronize_programs()?;
        self.release(inactive, 0)
    }

    /// The arena chunks of the active generation (each opened anew).
    pub fn active_chunk_maps(&self) -> Result<Vec<Array<MapData, Chunk>>, TableError> {
        let base = self.active_generation()? * MAX_CHUNKS;
        let mut chunks = Vec::new();
        for c in 0..MAX_CHUNKS {
            match self.arena.get(&(base + c), 0) {
                Ok(chunk) => chunks.push(chunk),
                Err(MapError::KeyNotFound) => break,
                Err(e) => return Err(map_err("read", MAP_ARENA)(e)),
            }
        }
        Ok(chunks)
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
