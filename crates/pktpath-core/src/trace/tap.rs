//! The fast path's decisions in a trace. `pktpath route attach` pins, with the data path,
//! a sockmap of registrations, an array of per-tracer rings and a byte per slot saying who
//! may listen (see `pktpath_common::route::TAP_MAP`). [`Tap::open`] registers in a free
//! slot with a socket of its own, puts a ring of its own beside it and sets its byte; the
//! data path then writes every decision into the ring of each registered tracer, so several
//! traces see all decisions, and pays one 64-bit read per packet when nobody traces. Its
//! TC program's decisions come as [`Record::Tc`]; its XDP program's, with the frame's
//! headers (there is no skb yet to know the packet by), as [`Record::Xdp`].
//!
//! The registration ends with the process however it ends: the kernel removes a closed
//! socket from the sockmap, and the data path clears the byte of a slot whose socket is
//! gone at the next packet. A clean stop ([`Tap`]'s drop) clears its byte and takes its
//! ring out at once; the ring a killed trace leaves in its slot receives nothing and is
//! replaced by the next trace taking that slot (or freed by `route detach`).

use std::{
    collections::HashMap,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd, RawFd},
        unix::net::UnixDatagram,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU8, Ordering},
};

use aya::maps::{ArrayOfMaps, Map, MapData, MapError, RingBuf, SockMap};
use pktpath_common::route::{
    TAP_HOOK_XDP, TAP_MAP, TAP_RING_BYTES, TAP_RINGS_MAP, TAP_SLOTS, TAP_SOCKS_MAP, TapEvent,
    TapLive, XdpTapEvent,
};

use super::wire::Record;
use crate::{
    route::datapath::attach::{self, Layout},
    sys::{
        SysError,
        bpfmap::{Mapped, create_ringbuf, delete_array_entry},
    },
};

/// `BPF_NOEXIST`: insert only into an empty slot.
const BPF_NOEXIST: u64 = 1;

/// Why the data path's decisions cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "no data path pinned at {0} (attach it with `pktpath route attach`, or name its pin directory with --route-pin-dir)"
    )]
    NotAttached(PathBuf),
    #[error(
        "opening the data path's map {path} failed (a data path attached by an older pktpath: detach and attach it again)"
    )]
    Map {
        path: String,
        #[source]
        source: MapError,
    },
    #[error(
        "all {TAP_SLOTS} tap slots of the data path at {0} are held by running traces (stop one of them)"
    )]
    Full(PathBuf),
    #[error("registering with the data path at {dir} failed ({what})")]
    Register {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the registration socket could not be created")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// A listener on the data path's decisions, registered in one slot of its tap.
pub struct Tap {
    slot: u32,
    ring: RingBuf<MapData>,
    /// The data path's rings by slot (`TAP_RINGS_MAP`), to take this tap's out with.
    rings_fd: OwnedFd,
    live: Mapped,
    /// Policy ids by priority (unique within a set), from the set last applied.
    ids: HashMap<u32, String>,
    pin_dir: PathBuf,
    /// The registration: in the sockmap's slot until closed, last (fields drop in order,
    /// after [`Drop::drop`] has cleared the slot's byte and ring).
    _sock: UnixDatagram,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("pin_dir", &self.pin_dir)
            .field("slot", &self.slot)
            .finish()
    }
}

fn open_map(dir: &Path, name: &str) -> Result<Map, TapError> {
    let path = dir.join(name);
    let err = |source| TapError::Map {
        path: path.display().to_string(),
        source,
    };
    MapData::from_pin(&path)
        .map_err(err)
        .and_then(|d| Map::from_map_data(d).map_err(err))
}

impl Tap {
    /// Opens the decisions of the data path pinned at `pin_dir` and starts them flowing to
    /// this listener (besides any others).
    pub fn open(pin_dir: &Path) -> Result<Self, TapError> {
        Self::open_at(&Layout::new(pin_dir))
    }

    /// [`Tap::open`] for the data path at `layout`: its pins, and the policy ids in its
    /// state directory (`--state-dir`).
    pub fn open_at(layout: &Layout) -> Result<Self, TapError> {
        let pin_dir = layout.pin_dir.as_path();
        if !pin_dir.exists() {
            return Err(TapError::NotAttached(pin_dir.to_path_buf()));
        }
        let map_err = |name: &str| {
            let path = pin_dir.join(name).display().to_string();
            move |source| TapError::Map { path, source }
        };
        let mut socks: SockMap<MapData> =
            SockMap::try_from(open_map(pin_dir, TAP_SOCKS_MAP)?).map_err(map_err(TAP_SOCKS_MAP))?;
        let rings_map = open_map(pin_dir, TAP_RINGS_MAP)?;
        let Map::ArrayOfMaps(rings_data) = &rings_map else {
            return Err(map_err(TAP_RINGS_MAP)(MapError::InvalidMapType {
                map_type: 0,
            }));
        };
        let rings_fd = rings_data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SysError::io(format!("dup of the {TAP_RINGS_MAP} descriptor"), e))?;
        let mut rings: ArrayOfMaps<MapData, MapData> =
            ArrayOfMaps::try_from(rings_map).map_err(map_err(TAP_RINGS_MAP))?;
        let live_map = open_map(pin_dir, TAP_MAP)?;
        let Map::Array(live_data) = &live_map else {
            return Err(map_err(TAP_MAP)(MapError::InvalidMapType { map_type: 0 }));
        };
        let live = Mapped::new(live_data.fd().as_fd(), size_of::<TapLive>())?;
        let register = |what, source| TapError::Register {
            dir: pin_dir.to_path_buf(),
            what,
            source,
        };
        let ring_data = MapData::from_fd(create_ringbuf(TAP_RING_BYTES, "pktpath_tap")?)
            .map_err(|e| register("open the new ring", e))?;
        let sock = UnixDatagram::unbound().map_err(TapError::Socket)?;
        let mut slot = None;
        for i in 0..TAP_SLOTS {
            match socks.set(i, &sock, BPF_NOEXIST) {
                Ok(()) => {
                    slot = Some(i);
                    break;
                }
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(register("insert into the sockmap", e)),
            }
        }
        let Some(slot) = slot else {
            return Err(TapError::Full(pin_dir.to_path_buf()));
        };
        // The slot is ours from here on (until `sock` closes): its ring first, then its
        // byte. A ring a killed trace left there is replaced (and freed by the kernel).
        rings
            .set(slot, &ring_data, 0)
            .map_err(|e| register("put the ring into its slot", e))?;
        let ring = RingBuf::try_from(Map::RingBuf(ring_data))
            .map_err(|e| register("read the new ring", e))?;
        let tap = Self {
            slot,
            ring,
            rings_fd,
            live,
            ids: policy_ids(layout),
            pin_dir: pin_dir.to_path_buf(),
            _sock: sock,
        };
        tap.live_byte().store(1, Ordering::SeqCst);
        Ok(tap)
    }

    /// This tap's byte of the data path's `TapLive`.
    fn live_byte(&self) -> &AtomicU8 {
        // SAFETY: the mapping holds TAP_SLOTS bytes and `slot` is below TAP_SLOTS; the
        // data path writes the byte as a whole too; the mapping lives as long as `self`.
        unsafe { AtomicU8::from_ptr(self.live.as_ptr().add(self.slot as usize)) }
    }

    /// The slot this tap holds (0 to `TAP_SLOTS` - 1).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The ring buffer's descriptor, to wait on.
    pub fn fd(&self) -> RawFd {
        self.ring.as_fd().as_raw_fd()
    }

    /// The next decision, if one is waiting: [`Record::Tc`] or, by its `hook`,
    /// [`Record::Xdp`]. When none is, the tap's byte is set again if the data path cleared
    /// it in a race with this tap's registration.
    pub fn next_event(&mut self) -> Option<Record> {
        let Some(item) = self.ring.next() else {
            let byte = self.live_byte();
            if byte.load(Ordering::Relaxed) == 0 {
                byte.store(1, Ordering::SeqCst);
            }
            return None;
        };
        decode(&item)
    }

    /// Policy ids by priority, to build events with.
    pub fn ids(&self) -> &HashMap<u32, String> {
        &self.ids
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // Nothing more for this slot, its ring out; the socket, closed after this, frees
        // the slot for the next trace.
        self.live_byte().store(0, Ordering::SeqCst);
        let _ = delete_array_entry(self.rings_fd.as_fd(), self.slot);
    }
}

/// The record a tap ring holds: a [`TapEvent`] whose `hook` says whether an
/// [`XdpTapEvent`] it begins follows. None for a record too short for its kind.
fn decode(bytes: &[u8]) -> Option<Record> {
    let read = |want: usize| (bytes.len() >= want).then_some(bytes.as_ptr());
    // SAFETY: the data path writes whole records of the kind the head's `hook` names; both
    // are plain data, read unaligned after their length was checked.
    unsafe {
        let ev = read(size_of::<TapEvent>())?
            .cast::<TapEvent>()
            .read_unaligned();
        if ev.hook != TAP_HOOK_XDP {
            return Some(Record::Tc(ev));
        }
        let x = read(size_of::<XdpTapEvent>())?
            .cast::<XdpTapEvent>()
            .read_unaligned();
        Some(Record::Xdp(x))
    }
}

/// Policy ids by priority in the policy set the data path at `layout` runs (empty when none
/// was applied, or it cannot be read: the decisions then show priorities).
fn policy_ids(layout: &Layout) -> HashMap<u32, String> {
    let Ok(active) = attach::open(layout).and_then(|a| a.active()) else {
        return HashMap::new();
    };
    active
        .set
        .policies
        .iter()
        .map(|p| (p.priority, p.id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use pktpath_common::route::{TAP_HOOK_TC, XDP_TAP_HEADER_BYTES};

    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: viewing a repr(C) plain-data value as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn a_ring_record_is_told_by_its_hook() {
        let tc = TapEvent {
            ts_ns: 5,
            skb: 0xffff_8880_0000_0100,
            hook: TAP_HOOK_TC,
            ..TapEvent::default()
        };
        assert_eq!(decode(&bytes_of(&tc)), Some(Record::Tc(tc)));
        let xdp = XdpTapEvent {
            tap: TapEvent {
                ts_ns: 6,
                hook: TAP_HOOK_XDP,
                ..TapEvent::default()
            },
            protocol: 0x0800,
            header_len: 20,
            _pad: 0,
            header: [0x45; XDP_TAP_HEADER_BYTES],
        };
        let bytes = bytes_of(&xdp);
        assert_eq!(decode(&bytes), Some(Record::Xdp(xdp)));
        // Cut short: neither kind.
        assert_eq!(decode(&bytes[..size_of::<TapEvent>()]), None);
        assert_eq!(decode(&bytes[..10]), None);
    }
}
