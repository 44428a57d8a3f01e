//! The fast path's decisions in a trace: `pktpath route attach` pins, with the data path, a
//! ring buffer the program writes its decision into while a listener count is not 0.
//! [`Tap::open`] finds those pins, raises the count for as long as the [`Tap`] lives and
//! lowers it on drop (also when the trace ends on a signal or an error), so the data path
//! pays one array read per packet when nobody traces it.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, MapError, RingBuf};
use pktpath_common::route::{TAP_EVENTS_MAP, TAP_MAP, TapEvent};

use crate::datapath::attach::{self, Layout};

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
}

/// A listener on the data path's decisions.
pub struct Tap {
    ring: RingBuf<MapData>,
    count: Array<MapData, u32>,
    /// Policy ids by priority (unique within a set), from the set last applied.
    ids: HashMap<u32, String>,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("pin_dir", &self.pin_dir)
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
    /// Opens the decisions of the data path pinned at `pin_dir` and starts them flowing.
    pub fn open(pin_dir: &Path) -> Result<Self, TapError> {
        if !pin_dir.exists() {
            return Err(TapError::NotAttached(pin_dir.to_path_buf()));
        }
        let map_err = |name: &str| {
            let path = pin_dir.join(name).display().to_string();
            move |source| TapError::Map { path, source }
        };
        let ring = RingBuf::try_from(open_map(pin_dir, TAP_EVENTS_MAP)?)
            .map_err(map_err(TAP_EVENTS_MAP))?;
        let mut count: Array<MapData, u32> =
            Array::try_from(open_map(pin_dir, TAP_MAP)?).map_err(map_err(TAP_MAP))?;
        let n = count.get(&0, 0).map_err(map_err(TAP_MAP))?;
        count
            .set(0, n.saturating_add(1), 0)
            .map_err(map_err(TAP_MAP))?;
        Ok(Self {
            ring,
            count,
            ids: policy_ids(&Layout::new(pin_dir)),
            pin_dir: pin_dir.to_path_buf(),
        })
    }

    /// The ring buffer's descriptor, to wait on.
    pub fn fd(&self) -> RawFd {
        self.ring.as_fd().as_raw_fd()
    }

    /// The next decision, if one is waiting.
    pub fn next_event(&mut self) -> Option<TapEvent> {
        let item = self.ring.next()?;
        (item.len() >= size_of::<TapEvent>()).then(|| {
            // SAFETY: the data path writes whole TapEvents; read unaligned from the ring.
            unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<TapEvent>()) }
        })
    }

    /// Policy ids by priority, to build events with.
    pub fn ids(&self) -> &HashMap<u32, String> {
        &self.ids
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Ok(n) = self.count.get(&0, 0) {
            let _ = self.count.set(0, n.saturating_sub(1), 0);
        }
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
