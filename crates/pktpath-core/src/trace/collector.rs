//! The collector: loads the tracer with this kernel's layout, the filters as load-time
//! globals and the filter expression in its map, attaches the selected hooks, and reads
//! their records from the ring buffer.
//!
//! Dropping the collector detaches and unloads every program (aya closes the links and
//! program file descriptors it owns); nothing outlives it.

use std::{os::fd::AsRawFd as _, time::Duration};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError},
};
use pktpath_common::trace::{
    FILTER_IFINDEX, FILTER_MARK, FILTER_MARK_ON, FILTER_NETNS, Hook, MAP_EVENTS, MAP_LOST,
    MAP_SEEN, TraceEvent,
};

use super::{
    config::TraceConfig,
    drops::DropReasons,
    filter::{self, InstallError},
    wire::{self, WireError},
};
use crate::{
    btf::{self, Btf, BtfError},
    loader::{self, GlobalValue, LoadError, Object},
    sys::SysError,
};

/// Why tracing could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading the kernel's BTF failed")]
    Btf(#[from] BtfError),
    #[error("reading the kernel's BTF for aya failed")]
    AyaBtf(#[from] aya::BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the tracer object has no program or map `{0}`: tracer and pktpath versions differ")]
    Missing(&'static str),
    #[error("attaching the {hook} hook (tp_btf) failed")]
    Attach {
        hook: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("opening the tracer's map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("installing the filter expression failed")]
    Filter(#[from] InstallError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// A running trace: the loaded tracer with its hooks attached.
pub struct Collector {
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    seen: PerCpuArray<MapData, u64>,
    reasons: DropReasons,
    hooks: Vec<Hook>,
    // Last: programs and links are released after the maps are closed.
    _ebpf: Ebpf,
}

impl Collector {
    /// Loads the tracer and attaches `cfg.hooks`. On error, whatever was attached is
    /// detached again.
    pub fn start(cfg: &TraceConfig) -> Result<Self, TraceError> {
        let kernel_btf = Btf::from_sys_fs()?;
        let offsets = btf::offsets::resolve(&kernel_btf)?;
        let reasons = DropReasons::from_btf(&kernel_btf).unwrap_or_else(|e| {
            log::warn!("drop reasons will be shown as numbers: {e}");
            DropReasons::default()
        });
        drop(kernel_btf);
        let globals = [
            (FILTER_NETNS, GlobalValue::U32(cfg.netns.unwrap_or(0))),
            (FILTER_IFINDEX, GlobalValue::U32(cfg.ifindex.unwrap_or(0))),
            (FILTER_MARK, GlobalValue::U32(cfg.mark.unwrap_or(0))),
            (
                FILTER_MARK_ON,
                GlobalValue::U32(u32::from(cfg.mark.is_some())),
            ),
        ];
        let sizes: Vec<(&str, u32)> = cfg
            .ring_bytes
            .map(|n| (MAP_EVENTS, n))
            .into_iter()
            .collect();
        let mut ebpf = loader::load_sized(Object::Tracer, Some(&offsets), &globals, &sizes)?;
        // Before any hook runs, so no packet is judged by the empty (match-all) program.
        filter::install(&mut ebpf, &cfg.filter)?;
        let aya_btf = aya::Btf::from_sys_fs()?;
        // The verifier checks each program on its own: spread them over the CPUs (start-up
        // is mostly verification).
        let mut progs = Vec::with_capacity(cfg.hooks.len());
        for (name, prog) in ebpf.programs_mut() {
            if let Some(&hook) = cfg.hooks.iter().find(|h| h.program() == name) {
                progs.push((hook, prog));
            }
        }
        for &hook in &cfg.hooks {
            if !progs.iter().any(|(h, _)| *h == hook) {
                return Err(TraceError::Missing(hook.program()));
            }
        }
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = progs.len().div_ceil(workers).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = progs
                .chunks_mut(per)
                .map(|chunk| {
                    let btf = &aya_btf;
                    s.spawn(move || -> Result<(), TraceError> {
                        for (hook, prog) in chunk.iter_mut() {
                            let hook = *hook;
                            let attach_err = |source| TraceError::Attach {
                                hook: hook.name(),
                                source,
                            };
                            let prog: &mut BtfTracePoint =
                                (&mut **prog).try_into().map_err(attach_err)?;
                            prog.load(hook.name(), btf).map_err(attach_err)?;
                            prog.attach().map_err(attach_err)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<()>, _>>()
        })?;
        let ring = RingBuf::try_from(
            ebpf.take_map(MAP_EVENTS)
                .ok_or(TraceError::Missing(MAP_EVENTS))?,
        )
        .map_err(|source| TraceError::Map {
            name: MAP_EVENTS,
            source,
        })?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map(MAP_LOST)
                .ok_or(TraceError::Missing(MAP_LOST))?,
        )
        .map_err(|source| TraceError::Map {
            name: MAP_LOST,
            source,
        })?;
        let seen = PerCpuArray::try_from(
            ebpf.take_map(MAP_SEEN)
                .ok_or(TraceError::Missing(MAP_SEEN))?,
        )
        .map_err(|source| TraceError::Map {
            name: MAP_SEEN,
            source,
        })?;
        Ok(Self {
            ring,
            lost,
            seen,
            reasons,
            hooks: cfg.hooks.clone(),
            _ebpf: ebpf,
        })
    }

    /// The drop reason names of the running kernel.
    pub fn drop_reasons(&self) -> &DropReasons {
        &self.reasons
    }

    /// The attached hooks.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// Waits up to `timeout` for records, then hands every available record to `f` in ring
    /// order. Returns how many were read. A signal ends the wait early; records that arrived
    /// before it are still read.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(TraceEvent),
    ) -> Result<usize, TraceError> {
        let mut n = self.drain(&mut f)?;
        if n > 0 {
            return Ok(n);
        }
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            // A signal (the user stopping the trace): still read what arrived before it.
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(SysError::io("poll(ring buffer)", err).into());
            }
        }
        n += self.drain(&mut f)?;
        Ok(n)
    }

    fn drain(&mut self, f: &mut impl FnMut(TraceEvent)) -> Result<usize, TraceError> {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            let ev = wire::decode(&item)?;
            drop(item);
            f(ev);
            n += 1;
        }
        Ok(n)
    }

    /// Events lost so far because the ring buffer was full: the sum over CPUs.
    pub fn lost(&self) -> Result<u64, TraceError> {
        sum(&self.lost, MAP_LOST)
    }

    /// Events the hooks produced so far (written or lost): the sum over CPUs.
    pub fn seen(&self) -> Result<u64, TraceError> {
        sum(&self.seen, MAP_SEEN)
    }
}

fn sum(map: &PerCpuArray<MapData, u64>, name: &'static str) -> Result<u64, TraceError> {
    let per_cpu = map
        .get(&0, 0)
        .map_err(|source| TraceError::Map { name, source })?;
    Ok(per_cpu.iter().sum())
}
