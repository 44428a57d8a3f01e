//! The collector: loads the tracer with this kernel's layout, the filters as load-time
//! globals and the filter expression in its map, attaches the selected hooks, and reads
//! their records from the ring buffer.
//!
//! Dropping the collector detaches and unloads every program (aya closes the links and
//! program file descriptors it owns); nothing outlives it.

use std::{
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError},
};
use pktpath_common::{
    kernel::KernelOffsets,
    trace::{
        FIB_ON, FILTER_EXPR_ALONE, FILTER_EXPR_ON, FILTER_IFINDEX, FILTER_MARK, FILTER_MARK_ON,
        FILTER_NETNS, FILTER_V4_GUARD, Hook, MAP_EVENTS, MAP_LOST, MAP_SEEN, MAP_TRACKED, TRACK,
    },
};

use super::{
    config::TraceConfig,
    drops::DropReasons,
    filter::{self, InstallError},
    wire::{self, Record, WireError},
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

/// Where start-up time went (wall clock, measured by [`Collector::start`]).
#[derive(Clone, Debug, Default)]
pub struct Startup {
    /// From the call to attached and ready.
    pub total: Duration,
    /// Reading the kernel's BTF (pktpath's own parse for struct offsets and drop reasons;
    /// aya's two parses run alongside it on other threads).
    pub btf: Duration,
    /// Creating the tracer's maps and installing the filter, after the BTF.
    pub object: Duration,
    /// Loading (verifying) and attaching the hooks, spread over the CPUs.
    pub programs: Duration,
    /// Per hook: the time its load (verification) and attach took, and the instructions
    /// the verifier processed.
    pub hooks: Vec<HookStartup>,
}

/// One hook's share of start-up.
#[derive(Clone, Debug)]
pub struct HookStartup {
    pub hook: Hook,
    pub load: Duration,
    pub attach: Duration,
    /// The verifier's processed-instruction count (None when the kernel does not say).
    pub verified_insns: Option<u32>,
}

impl Startup {
    /// One line: `total 212 ms (btf 80, maps 20, hooks 110; verifier 2.1k-2.5k insns/hook)`.
    pub fn to_text(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let insns: Vec<u32> = self.hooks.iter().filter_map(|h| h.verified_insns).collect();
        let verifier = match (insns.iter().min(), insns.iter().max()) {
            (Some(lo), Some(hi)) => format!("; verifier {lo}-{hi} insns/hook"),
            _ => String::new(),
        };
        format!(
            "{:.0} ms (btf {:.0}, maps {:.0}, hooks {:.0}{verifier})",
            ms(self.total),
            ms(self.btf),
            ms(self.object),
            ms(self.programs)
        )
    }
}

/// Most records one [`Collector::poll`] hands over.
pub const MAX_BATCH: usize = 65_536;

/// How long a record of one ring waits for older records of the other (a trace following
/// the data path's decisions reads two rings): far more than a record takes from its time
/// to its ring.
const HOLD_NS: u64 = 2_000_000;

/// A running trace: the loaded tracer with its hooks attached.
pub struct Collector {
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    seen: PerCpuArray<MapData, u64>,
    tracked: Array<MapData, u64>,
    reasons: DropReasons,
    hooks: Vec<Hook>,
    startup: Startup,
    /// The data path's decisions, when the trace follows them.
    tap: Option<super::tap::Tap>,
    /// Records of both rings read but not handed over yet: younger than [`HOLD_NS`], so
    /// the other ring may still hold an older one (see `drain`).
    held: Vec<Record>,
    /// Hand over every held record at the next read (the trace is ending).
    release: bool,
    // Last: programs and links are released after the maps are closed.
    _ebpf: Ebpf,
}

impl Collector {
    /// Loads the tracer and attaches `cfg.hooks`. On error, whatever was attached is
    /// detached again.
    pub fn start(cfg: &TraceConfig) -> Result<Self, TraceError> {
        let t0 = Instant::now();
        // aya parses the kernel's BTF twice (the loader always does; attaching tp_btf needs
        // a parse of its own) and pktpath once (offsets, drop reasons): all three at once.
        let (parsed, loader, aya_btf) = std::thread::scope(|s| {
            let loader = s.spawn(EbpfLoader::new);
            let aya_btf = s.spawn(aya::Btf::from_sys_fs);
            let parsed = kernel_layout();
            (parsed, join(loader), join(aya_btf))
        });
        let (offsets, reasons) = parsed?;
        let aya_btf = aya_btf?;
        let mut startup = Startup {
            btf: t0.elapsed(),
            ..Startup::default()
        };
        let expr_on = cfg.filter.len != 0;
        let globals = [
            (FILTER_NETNS, GlobalValue::U32(cfg.netns.unwrap_or(0))),
            (FILTER_IFINDEX, GlobalValue::U32(cfg.ifindex.unwrap_or(0))),
            (FILTER_MARK, GlobalValue::U32(cfg.mark.unwrap_or(0))),
            (
                FILTER_MARK_ON,
                GlobalValue::U32(u32::from(cfg.mark.is_some())),
            ),
            (FILTER_EXPR_ON, GlobalValue::U32(u32::from(expr_on))),
            (
                FILTER_EXPR_ALONE,
                GlobalValue::U32(u32::from(
                    expr_on && cfg.netns.is_none() && cfg.ifindex.is_none() && cfg.mark.is_none(),
                )),
            ),
            (FIB_ON, GlobalValue::U32(u32::from(rx_noted(&cfg.hooks)))),
            (TRACK, GlobalValue::U32(u32::from(cfg.track && expr_on))),
            (
                FILTER_V4_GUARD,
                GlobalValue::V4Guard(filter::v4_guard(&cfg.filter)),
            ),
        ];
        let sizes: Vec<(&str, u32)> = cfg
            .ring_bytes
            .map(|n| (MAP_EVENTS, n))
            .into_iter()
            .collect();
        let mut ebpf =
            loader::load_with_loader(loader, Object::Tracer, Some(&offsets), &globals, &sizes)?;
        // Before any hook runs, so no packet is judged by the empty (match-all) program.
        if expr_on {
            filter::install(&mut ebpf, &cfg.filter)?;
        }
        startup.object = t0.elapsed() - startup.btf;
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
        // The hooks' verification costs differ: deal them out one at a time from a shared
        // queue rather than in fixed chunks.
        let queue = std::sync::Mutex::new(progs);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let timings = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (btf, queue) = (&aya_btf, &queue);
                    s.spawn(move || -> Result<Vec<HookStartup>, TraceError> {
                        let mut done = Vec::new();
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                            let Some((hook, prog)) = next else {
                                return Ok(done);
                            };
                            done.push(load_and_attach(hook, prog, btf)?);
                        }
                    })
                })
                .collect();
            handles.into_iter().map(join).collect::<Result<Vec<_>, _>>()
        })?;
        startup.hooks = timings.into_iter().flatten().collect();
        startup.hooks.sort_by_key(|h| h.hook);
        startup.programs = t0.elapsed() - startup.btf - startup.object;
        let ring = take_map(&mut ebpf, MAP_EVENTS)?;
        let lost = take_map(&mut ebpf, MAP_LOST)?;
        let seen = take_map(&mut ebpf, MAP_SEEN)?;
        let tracked = take_map(&mut ebpf, MAP_TRACKED)?;
        Ok(Self {
            ring,
            lost,
            seen,
            tracked,
            reasons,
            hooks: cfg.hooks.clone(),
            startup: Startup {
                total: t0.elapsed(),
                ..startup
            },
            tap: None,
            held: Vec::new(),
            release: false,
            _ebpf: ebpf,
        })
    }

    /// How long start-up took, and where the time went.
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// The drop reason names of the running kernel.
    pub fn drop_reasons(&self) -> &DropReasons {
        &self.reasons
    }

    /// The attached hooks.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// Waits up to `timeout` for records, then hands the available records (at most
    /// [`MAX_BATCH`]) to `f` in ring order. Returns how many were read. A signal ends the wait early; records that arrived
    /// before it are still read.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Record),
    ) -> Result<usize, TraceError> {
        let mut n = self.drain(&mut f)?;
        if n > 0 {
            return Ok(n);
        }
        let mut pfds = [
            self.ring.as_raw_fd(),
            self.tap.as_ref().map_or(-1, |t| t.fd()),
        ]
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let count = if self.tap.is_some() { 2 } else { 1 };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `count` valid pollfds, for the duration of the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), count, ms) };
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

    /// Hands over the records held back at the next read, however young: the trace
    /// ends, nothing older can come.
    pub fn release_held(&mut self) {
        self.release = true;
    }

    /// Follows the decisions of the data path `tap` listens to: they arrive as
    /// [`Record::Tc`] and [`Record::Xdp`], in time order with the hooks' records of the
    /// same poll round.
    pub fn follow(&mut self, tap: super::tap::Tap) {
        self.tap = Some(tap);
    }

    /// The data path being followed, if any.
    pub fn tap(&self) -> Option<&super::tap::Tap> {
        self.tap.as_ref()
    }

    fn drain(&mut self, f: &mut impl FnMut(Record)) -> Result<usize, TraceError> {
        let Some(tap) = &mut self.tap else {
            return Self::drain_ring(&mut self.ring, f);
        };
        // Two rings: merged by time, so a decision lands between the hooks the packet met
        // before and after the program. A record is written within microseconds of its
        // time, so every record older than HOLD_NS before this read began is in one ring
        // or the other by now: those are handed over in time order, the younger ones held
        // for the next read. (Handed over as read, a decision could come a round before
        // the hooks its packet met first, or after its whole journey.)
        let cutoff = if self.release {
            u64::MAX
        } else {
            crate::sys::clock::monotonic_ns()
                .map_err(TraceError::from)?
                .saturating_sub(HOLD_NS)
        };
        let mut round = std::mem::take(&mut self.held);
        while round.len() < MAX_BATCH
            && let Some(ev) = tap.next_event()
        {
            round.push(ev);
        }
        Self::drain_ring(&mut self.ring, &mut |r| round.push(r))?;
        round.sort_by_key(Record::ts_ns);
        let ready = round.partition_point(|r| r.ts_ns() <= cutoff);
        self.held = round.split_off(ready);
        let n = round.len();
        round.into_iter().for_each(f);
        Ok(n)
    }

    fn drain_ring(
        ring: &mut RingBuf<MapData>,
        f: &mut impl FnMut(Record),
    ) -> Result<usize, TraceError> {
        let mut n = 0;
        // Bounded: under a steady flood the ring never runs empty, and the caller must get
        // to flush its output, check for signals and report losses now and then.
        while n < MAX_BATCH
            && let Some(item) = ring.next()
        {
            let ev = wire::decode_record(&item)?;
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

    /// Skbs the tracer may still track (tracking, see `TraceConfig::track`): 0 once the
    /// free of every packet that matched was seen, when the hooks stop looking skbs up.
    pub fn tracked(&self) -> Result<u64, TraceError> {
        self.tracked.get(&0, 0).map_err(|source| TraceError::Map {
            name: MAP_TRACKED,
            source,
        })
    }

    /// Events the hooks produced so far (written or lost): the sum over CPUs.
    pub fn seen(&self) -> Result<u64, TraceError> {
        sum(&self.seen, MAP_SEEN)
    }
}

/// A scoped thread's result; its panic goes on in the caller.
/// Whether `netif_receive_skb` notes each packet for the input route lookups (`FIB_ON`):
/// with a lookup hook to read the notes and that hook, which every received packet meets
/// right before its input lookup, to write them. Without it, a lookup hook would read
/// notes nobody writes (and with a filter expression, drop every input lookup as
/// following a rejected packet).
fn rx_noted(hooks: &[Hook]) -> bool {
    hooks
        .iter()
        .any(|h| matches!(h, Hook::FibTableLookup | Hook::Fib6TableLookup))
        && hooks.contains(&Hook::NetifReceiveSkb)
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// This kernel's struct offsets and drop reason names, from one parse of its BTF.
fn kernel_layout() -> Result<(KernelOffsets, DropReasons), TraceError> {
    let kernel_btf = Btf::from_sys_fs()?;
    let offsets = btf::offsets::resolve(&kernel_btf)?;
    let reasons = DropReasons::from_btf(&kernel_btf).unwrap_or_else(|e| {
        log::warn!("drop reasons will be shown as numbers: {e}");
        DropReasons::default()
    });
    Ok((offsets, reasons))
}

/// Loads (the verifier runs) and attaches one hook's program, timing both.
fn load_and_attach(
    hook: Hook,
    prog: &mut aya::programs::Program,
    btf: &aya::Btf,
) -> Result<HookStartup, TraceError> {
    let attach_err = |source| TraceError::Attach {
        hook: hook.name(),
        source,
    };
    let prog: &mut BtfTracePoint = prog.try_into().map_err(attach_err)?;
    let t = Instant::now();
    prog.load(hook.name(), btf).map_err(attach_err)?;
    let load = t.elapsed();
    prog.attach().map_err(attach_err)?;
    let attach = t.elapsed() - load;
    let verified_insns = prog
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count());
    Ok(HookStartup {
        hook,
        load,
        attach,
        verified_insns,
    })
}

/// Takes map `name` out of the tracer's object as a `M`.
fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, TraceError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    crate::loader::take_map(ebpf, name).map_err(|(name, source)| TraceError::Map { name, source })
}

fn sum(map: &PerCpuArray<MapData, u64>, name: &'static str) -> Result<u64, TraceError> {
    let per_cpu = map
        .get(&0, 0)
        .map_err(|source| TraceError::Map { name, source })?;
    Ok(per_cpu.iter().sum())
}
