//! The agent's hop-latency histograms: the maps of the `hoplat` object, which times each
//! packet from its receive (`netif_receive_skb`) to its transmit (`net_dev_start_xmit`) on
//! the router's configured interfaces and counts the time in per-CPU log-scale buckets
//! keyed by (input interface, output interface), read by user space at scrape time.

/// Name of the array indexed by ifindex (below [`HOP_IFINDEX_MAX`]) whose value is the
/// interface's slot plus one (0: not measured). Written by user space.
pub const MAP_HOP_IFACES: &str = "HOP_IFACES";
/// Name of the array of [`HOP_PENDING_SLOTS`] [`HopStart`], shared by the CPUs: the
/// packets received and not transmitted yet, each in the slot [`hop_pending_slot`] picks
/// from its `sk_buff` address (a packet received later into the same slot takes it).
pub const MAP_HOP_PENDING: &str = "HOP_PENDING";
/// Name of the per-CPU array of [`HopHistogram`], one per (input slot, output slot) pair
/// at `input * n + output`, `n` the interfaces measured ([`GLOBAL_HOP_IFACES`]).
pub const MAP_HOP_HIST: &str = "HOP_HIST";

/// Global: the inode of the network namespace whose interfaces are measured.
pub const GLOBAL_HOP_NETNS: &str = "PKTPATH_HOP_NETNS";
/// Global: how many interfaces are measured (slots `0..n`).
pub const GLOBAL_HOP_IFACES: &str = "PKTPATH_HOP_IFACES";

/// Interfaces measured at most (the histogram array holds `n * n` pairs).
pub const HOP_IFACES_MAX: u32 = 64;
/// Interfaces with an ifindex of this or above are not measured.
pub const HOP_IFINDEX_MAX: u32 = 65_536;
/// Slots of [`MAP_HOP_PENDING`] (a power of two).
pub const HOP_PENDING_SLOTS: u32 = 65_536;

/// The slot of [`MAP_HOP_PENDING`] the packet of `sk_buff` address `skb` is noted in: the
/// top bits of a multiplicative hash of the address without its low 8 bits (`sk_buff`s
/// come from a slab of 256-byte objects).
#[inline(always)]
pub const fn hop_pending_slot(skb: u64) -> u32 {
    ((skb >> 8).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u32 & (HOP_PENDING_SLOTS - 1)
}

/// What [`HopStart::check`] holds for the other fields: an entry two CPUs wrote at once
/// (two packets received into one slot) fails it and is not used.
#[inline(always)]
pub const fn hop_check(skb: u64, rx_ns: u64, head: u64, ifindex: u32, slot: u32) -> u64 {
    (skb ^ rx_ns.rotate_left(21) ^ head.rotate_left(42) ^ (((ifindex as u64) << 32) | slot as u64))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        | 1
}

/// Bucket `i` (below the last) counts latencies of at most `2^(HOP_MIN_SHIFT + i)` ns.
pub const HOP_MIN_SHIFT: u32 = 9;
/// The last finite bucket's bound: `2^HOP_MAX_SHIFT` ns (4.29 s).
pub const HOP_MAX_SHIFT: u32 = 32;
/// Buckets per histogram: one per power of two from `2^HOP_MIN_SHIFT` ns (512 ns) to
/// `2^HOP_MAX_SHIFT` ns, and the last for everything above.
pub const HOP_BUCKETS: usize = (HOP_MAX_SHIFT - HOP_MIN_SHIFT + 2) as usize;

/// The smallest `k` with `ns <= 2^k` (0 for 0 and 1), by halving: the BPF target has no
/// instruction that counts leading zeros.
#[inline(always)]
pub const fn ceil_log2(ns: u64) -> u32 {
    if ns <= 1 {
        return 0;
    }
    let mut x = ns - 1;
    let mut bits = 0;
    if x >> 32 != 0 {
        bits += 32;
        x >>= 32;
    }
    if x >> 16 != 0 {
        bits += 16;
        x >>= 16;
    }
    if x >> 8 != 0 {
        bits += 8;
        x >>= 8;
    }
    if x >> 4 != 0 {
        bits += 4;
        x >>= 4;
    }
    if x >> 2 != 0 {
        bits += 2;
        x >>= 2;
    }
    if x >> 1 != 0 {
        bits += 1;
        x >>= 1;
    }
    bits + x as u32
}

/// The bucket a latency of `ns` nanoseconds is counted in: the first whose bound
/// (`2^(HOP_MIN_SHIFT + i)` ns) it does not exceed, the last when it exceeds them all.
#[inline(always)]
pub const fn hop_bucket(ns: u64) -> usize {
    let k = ceil_log2(ns);
    if k <= HOP_MIN_SHIFT {
        0
    } else if k > HOP_MAX_SHIFT {
        HOP_BUCKETS - 1
    } else {
        (k - HOP_MIN_SHIFT) as usize
    }
}

/// A packet received on a measured interface: a slot of [`MAP_HOP_PENDING`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopStart {
    /// The `sk_buff`'s address; 0 for an empty slot (or one whose packet was transmitted).
    pub skb: u64,
    /// `bpf_ktime_get_ns` at the receive.
    pub rx_ns: u64,
    /// The skb's data buffer (`sk_buff.head`) at the receive: an skb freed without being
    /// transmitted and reused for another packet has another buffer, mostly.
    pub head: u64,
    /// The receiving device's ifindex, which the kernel keeps in `sk_buff.skb_iif`.
    pub ifindex: u32,
    /// Its slot (`0..n`).
    pub slot: u32,
    /// [`hop_check`] of the fields above, written last.
    pub check: u64,
}
crate::assert_size!(HopStart, 40);
crate::impl_pod!(HopStart);

/// One (input, output) pair's latencies on one CPU: the value of [`MAP_HOP_HIST`].
/// Buckets are not cumulative here; their sum is the count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopHistogram {
    pub buckets: [u64; HOP_BUCKETS],
    /// The sum of the latencies counted, in nanoseconds.
    pub sum_ns: u64,
}
crate::assert_size!(HopHistogram, (HOP_BUCKETS + 1) * 8);
crate::impl_pod!(HopHistogram);

impl Default for HopHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; HOP_BUCKETS],
            sum_ns: 0,
        }
    }
}
