//! The kernel drop monitor's maps: per-CPU counters of `skb:kfree_skb` keyed by drop
//! reason, device and network namespace, read by user space at scrape time.

use crate::kernel::IFNAMSIZ;

/// Counters by [`DropKey`] (a per-CPU hash of `u64`).
pub const MAP_DROPS: &str = "DROP_COUNTS";
/// Slot 0: per CPU, the drops that found [`MAP_DROPS`] full and were not counted by key.
pub const MAP_DROPS_OVERFLOW: &str = "DROP_OVERFLOW";
/// Per CPU, one [`DropCache`] of [`DROP_CACHE_SLOTS`] slots in front of [`MAP_DROPS`] (one
/// value, so that user space reads every slot of every CPU in one lookup): a drop at a
/// key a slot holds is counted there; a slot's count moves to [`MAP_DROPS`] when another
/// key takes the slot. A key's count is its [`MAP_DROPS`] value plus its slots' counts.
pub const MAP_DROP_CACHE: &str = "DROP_CACHE";
/// Slot 0: per CPU, a sequence count of the moves between [`MAP_DROP_CACHE`] and
/// [`MAP_DROPS`]: odd while a slot changes key, so that a reader can tell that its reads of
/// both saw no move in between.
pub const MAP_DROP_CACHE_SEQ: &str = "DROP_CACHE_SEQ";
/// Slots of [`MAP_DROP_CACHE`] per CPU (a power of two).
pub const DROP_CACHE_SLOTS: u32 = 64;

/// The slot of [`MAP_DROP_CACHE`] a key is counted in. Devices whose indexes differ by a
/// multiple of [`DROP_CACHE_SLOTS`] share their slots (in one namespace, for one reason).
#[inline(always)]
pub const fn drop_cache_slot(reason: u32, ifindex: u32, netns: u32) -> u32 {
    (reason.wrapping_mul(0x9e37_79b9) ^ ifindex.wrapping_mul(0x85eb_ca6b) ^ netns)
        & (DROP_CACHE_SLOTS - 1)
}
/// How many (reason, device, namespace) keys [`MAP_DROPS`] holds. A node with hundreds of
/// pod interfaces and a few dozen reasons on each fits; what does not is counted in
/// [`MAP_DROPS_OVERFLOW`].
pub const DROP_KEYS_MAX: u32 = 16_384;

/// Global: the value of `SKB_CONSUMED` on this kernel (a free that is not a drop), from
/// its BTF. Frees with this reason or `SKB_NOT_DROPPED_YET` are not counted.
pub const GLOBAL_REASON_CONSUMED: &str = "PKTPATH_REASON_CONSUMED";
/// Global: the value of `SKB_NOT_DROPPED_YET` on this kernel.
pub const GLOBAL_REASON_NOT_DROPPED: &str = "PKTPATH_REASON_NOT_DROPPED";

/// Where a packet was dropped and why: the key of [`MAP_DROPS`].
///
/// The device is the skb's at the free (the receiving device on input, the transmitting
/// one on output); `ifindex`, `netns` and `ifname` are 0 / empty for an skb with none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// `enum skb_drop_reason` value.
    pub reason: u32,
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    pub _pad: u32,
    /// The device's name, read with the key so user space need not enter its namespace.
    pub ifname: [u8; IFNAMSIZ],
}
crate::assert_size!(DropKey, 32);
crate::impl_pod!(DropKey);

/// One slot of [`MAP_DROP_CACHE`]: drops counted at `key` since the slot took it.
///
/// Why a cache: a lookup in the per-CPU hash of [`MAP_DROPS`] (hashing the 32-byte key)
/// cost 63 ns per drop on a kernel with retpolines and SRSO, more than the rest of the
/// program; a slot is an array element picked from the reason, device and namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCacheSlot {
    pub key: DropKey,
    /// Drops counted here and not yet moved to [`MAP_DROPS`]; 0 for an empty slot.
    pub count: u64,
}
crate::assert_size!(DropCacheSlot, 40);
crate::impl_pod!(DropCacheSlot);

/// The one value of [`MAP_DROP_CACHE`] (per CPU); the key of slot `i` is counted in
/// `slots[i]`, `i` from [`drop_cache_slot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropCache {
    pub slots: [DropCacheSlot; DROP_CACHE_SLOTS as usize],
}
crate::assert_size!(DropCache, 40 * DROP_CACHE_SLOTS as usize);
crate::impl_pod!(DropCache);
