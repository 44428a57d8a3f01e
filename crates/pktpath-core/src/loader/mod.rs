//! The eBPF objects built into pktpath, and loading them with this kernel's layout.
//!
//! Objects are compiled by build.rs (aya-build) and embedded; nothing is compiled at run
//! time. Every object that reads kernel structs gets [`KernelOffsets`] resolved from the
//! running kernel's BTF through a load-time global. The objects that exist only for tests
//! and benchmarks are not among them: `pktpath-tests` embeds those and loads them through
//! [`load_elf`].

use aya::{Ebpf, EbpfLoader};
use pktpath_common::{
    kernel::{KERNEL_OFFSETS_SYMBOL, KernelOffsets},
    trace::MAP_CPU,
};

use crate::btf::{self, Btf, BtfError};

/// One of pktpath's eBPF objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// Tiny programs for `pktpath doctor`.
    Probe,
    /// The tracer's hooks.
    Tracer,
    /// The agent's kernel drop monitor (`skb:kfree_skb` counters).
    Drops,
    /// The agent's hop-latency histograms (receive to transmit on the router's interfaces).
    HopLatency,
    /// The TC data path.
    Datapath,
}

impl Object {
    /// The object's ELF bytes, as built for this pktpath.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Probe => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe")),
            Self::Tracer => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer")),
            Self::Drops => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drops")),
            Self::HopLatency => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hoplat")),
            Self::Datapath => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath")),
        }
    }

    /// Whether the object reads kernel structs and so needs [`KernelOffsets`].
    pub fn needs_offsets(self) -> bool {
        matches!(self, Self::Tracer | Self::Drops | Self::HopLatency)
    }

    /// The array with a slot per CPU the object holds, which loading sizes to the
    /// possible CPUs.
    pub fn cpu_slot_map(self) -> Option<&'static str> {
        matches!(self, Self::Tracer).then_some(MAP_CPU)
    }
}

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading kernel struct layouts from BTF failed")]
    Btf(#[from] BtfError),
    #[error("cannot count the possible CPUs (/sys/devices/system/cpu/possible)")]
    Cpus(#[source] std::io::Error),
    #[error("loading the {object:?} eBPF object failed")]
    Ebpf {
        object: Object,
        #[source]
        source: Box<aya::EbpfError>,
    },
}

/// A load-time value for a global in an object.
#[derive(Debug, Clone, Copy)]
pub enum GlobalValue {
    U32(u32),
    U64(u64),
    V4Guard(pktpath_common::guard::V4Guard),
}

/// Resolves this kernel's struct offsets from /sys/kernel/btf/vmlinux.
pub fn kernel_offsets() -> Result<KernelOffsets, LoadError> {
    let btf = Btf::from_sys_fs()?;
    Ok(btf::offsets::resolve(&btf)?)
}

/// Loads `object` (creating its maps; programs are loaded by the caller), setting the
/// kernel offsets when it needs them and the given globals.
pub fn load(object: Object, globals: &[(&str, GlobalValue)]) -> Result<Ebpf, LoadError> {
    let offsets = if object.needs_offsets() {
        Some(kernel_offsets()?)
    } else {
        None
    };
    load_with(object, offsets.as_ref(), globals)
}

/// Like [`load`] with offsets supplied by the caller.
pub fn load_with(
    object: Object,
    offsets: Option<&KernelOffsets>,
    globals: &[(&str, GlobalValue)],
) -> Result<Ebpf, LoadError> {
    load_sized(object, offsets, globals, &[])
}

/// Like [`load_with`], also setting the `max_entries` of named maps (for a ring buffer: its
/// size in bytes, a power of two and a multiple of the page size).
pub fn load_sized(
    object: Object,
    offsets: Option<&KernelOffsets>,
    globals: &[(&str, GlobalValue)],
    max_entries: &[(&str, u32)],
) -> Result<Ebpf, LoadError> {
    load_with_loader(EbpfLoader::new(), object, offsets, globals, max_entries)
}

/// Like [`load_sized`] with a loader the caller made: `EbpfLoader::new` parses the kernel's
/// BTF (tens of milliseconds), which a caller in a hurry can have done on another thread.
pub fn load_with_loader<'a>(
    mut loader: EbpfLoader<'a>,
    object: Object,
    offsets: Option<&'a KernelOffsets>,
    globals: &'a [(&'a str, GlobalValue)],
    max_entries: &[(&'a str, u32)],
) -> Result<Ebpf, LoadError> {
    for (name, n) in max_entries {
        loader.map_max_entries(name, *n);
    }
    if let Some(map) = object.cpu_slot_map() {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| LoadError::Cpus(e))?;
        loader.map_max_entries(map, cpus as u32);
    }
    if let Some(off) = offsets {
        loader.override_global(KERNEL_OFFSETS_SYMBOL, off, true);
    }
    set_globals(&mut loader, globals);
    loader.load(object.bytes()).map_err(|e| LoadError::Ebpf {
        object,
        source: Box::new(e),
    })
}

/// Loads an object pktpath does not ship, from its ELF bytes (the test and benchmark
/// objects `pktpath-tests` embeds), setting the given globals; it gets no kernel offsets.
pub fn load_elf<'a>(
    elf: &[u8],
    globals: &'a [(&'a str, GlobalValue)],
) -> Result<Ebpf, aya::EbpfError> {
    let mut loader = EbpfLoader::new();
    set_globals(&mut loader, globals);
    loader.load(elf)
}

fn set_globals<'a>(loader: &mut EbpfLoader<'a>, globals: &'a [(&'a str, GlobalValue)]) {
    for (name, value) in globals {
        match value {
            GlobalValue::U32(v) => loader.override_global(name, v, true),
            GlobalValue::U64(v) => loader.override_global(name, v, true),
            GlobalValue::V4Guard(v) => loader.override_global(name, v, true),
        };
    }
}

/// Takes map `name` out of a loaded object as a `M`; on failure, the map's name and why.
pub fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<M, (&'static str, aya::maps::MapError)>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or((
        name,
        aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        },
    ))?;
    M::try_from(map).map_err(|source| (name, source))
}

/// Loads program `name` of a loaded object and attaches it to tp_btf `tracepoint`; returns
/// its kernel id. The link lives as long as the object.
pub fn attach_tp_btf(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<u32, aya::programs::ProgramError> {
    let prog: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(aya::programs::ProgramError::UnexpectedProgramType)?
        .try_into()?;
    prog.load(tracepoint, btf)?;
    prog.attach()?;
    Ok(prog.info()?.id())
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

    use super::Object;

    /// The functions of the object that copy, fill or compare memory one byte per
    /// iteration (built from compiler_builtins for the BPF target).
    const BYTEWISE: [&str; 5] = ["memcpy", "memmove", "memset", "memcmp", "bcmp"];

    /// The tracer's hooks, the data path and the hop-latency programs run for every packet:
    /// an array or struct copy that the compiler turned into a call to a byte-at-a-time
    /// function costs hundreds of instructions there (see `pktpath_ebpf::mem`). No such
    /// object calls one.
    #[test]
    fn per_packet_programs_call_no_bytewise_memory_function() {
        for obj in [Object::Tracer, Object::Datapath, Object::HopLatency] {
            let file = object::File::parse(obj.bytes()).unwrap();
            let mut calls = Vec::new();
            for section in file.sections() {
                for (at, reloc) in section.relocations() {
                    let RelocationTarget::Symbol(i) = reloc.target() else {
                        continue;
                    };
                    let name = file.symbol_by_index(i).unwrap().name().unwrap_or("");
                    if BYTEWISE.contains(&name) {
                        calls.push(format!(
                            "{}+{at:#x} -> {name}",
                            section.name().unwrap_or("?")
                        ));
                    }
                }
            }
            assert!(calls.is_empty(), "{obj:?} calls {calls:#?}");
        }
    }
}
