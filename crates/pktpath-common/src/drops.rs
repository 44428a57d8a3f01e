//! The kernel drop monitor's maps: per-CPU counters of `skb:kfree_skb` keyed by drop
//! reason, device and network namespace, read by user space at scrape time.

use crate::kernel::IFNAMSIZ;

/// Counters by [`DropKey`] (a per-CPU hash of `u64`).
pub const MAP_DROPS: &str = "DROP_COUNTS";
/// Slot 0: per CPU, the drops that found [`MAP_DROPS`] full and were not counted by key.
pub const MAP_DROPS_OVERFLOW: &str = "DROP_OVERFLOW";
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
