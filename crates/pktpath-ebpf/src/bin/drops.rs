//! The kernel drop monitor: one program on `skb:kfree_skb` (tp_btf) that counts every
//! dropped skb, per CPU, by (drop reason, device, network namespace). Nothing is sent to
//! user space per event; the agent reads the sums when Prometheus scrapes it.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use pktpath_common::{
    drops::{DROP_CACHE_SLOTS, DROP_KEYS_MAX, DropCache, DropCacheSlot, DropKey, drop_cache_slot},
    kernel::KernelOffsets,
};
use pktpath_ebpf::kernel::{Offsets, load_at, read_dev};

#[unsafe(no_mangle)]
static PKTPATH_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNSET);

/// `SKB_CONSUMED` on this kernel (set from its BTF): a free that is not a drop.
#[unsafe(no_mangle)]
static PKTPATH_REASON_CONSUMED: Global<u32> = Global::new(u32::MAX);

/// `SKB_NOT_DROPPED_YET` on this kernel (set from its BTF).
#[unsafe(no_mangle)]
static PKTPATH_REASON_NOT_DROPPED: Global<u32> = Global::new(u32::MAX);

#[map(name = "DROP_COUNTS")]
static DROP_COUNTS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(DROP_KEYS_MAX, 0);

#[map(name = "DROP_OVERFLOW")]
static DROP_OVERFLOW: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "DROP_CACHE_SEQ")]
static DROP_CACHE_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "DROP_CACHE")]
static DROP_CACHE: PerCpuArray<DropCache> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_NOEXIST`: insert only a key not yet present.
const BPF_NOEXIST: u64 = 1;
/// `-EEXIST`: another CPU inserted the key between our lookup and insert.
const EEXIST: i32 = -17;

/// Per CPU, the clone last handed to an IP socket (see `pktpath_ebpf::delivery`): the
/// original's free with a drop reason right after is a delivery, not counted.
#[map(name = "DROP_DELIVERED")]
static DROP_DELIVERED: PerCpuArray<pktpath_ebpf::delivery::Noted> =
    PerCpuArray::with_max_entries(1, 0);

/// `sk_data_ready(sk)`: notes a clone queued to an IP socket.
#[btf_tracepoint(function = "sk_data_ready")]
pub fn drops_sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    let _ = pktpath_ebpf::delivery::note(off, ctx.arg(0), &DROP_DELIVERED);
    0
}

/// `kfree_skb(skb, location, reason[, rx_sk])`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn drops_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let reason: u64 = ctx.arg(2);
    count(skb, reason as u32);
    0
}

#[inline(always)]
fn count(skb: u64, reason: u32) {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    if !off.set()
        || skb == 0
        || reason == PKTPATH_REASON_CONSUMED.load()
        || reason == PKTPATH_REASON_NOT_DROPPED.load()
        || pktpath_ebpf::delivery::take(off, skb, &DROP_DELIVERED)
    {
        return;
    }
    let dev: u64 = load_at(skb, off.skb_dev());
    let (ifindex, netns) = read_dev(off, dev);
    // The name as two words, compared and stored without a byte-wise copy.
    let name: [u64; 2] = if dev == 0 {
        [0; 2]
    } else {
        [
            load_at(dev, off.net_device_name()),
            load_at(dev, off.net_device_name() + 8),
        ]
    };
    let Some(cache) = DROP_CACHE.get_ptr_mut(0) else {
        return;
    };
    let i = drop_cache_slot(reason, ifindex, netns) & (DROP_CACHE_SLOTS - 1);
    // SAFETY: slot `i` (masked within the array) of this CPU's cache.
    let slot = unsafe {
        (&raw mut (*cache).slots)
            .cast::<DropCacheSlot>()
            .add(i as usize)
    };
    // Tracing programs do not nest on one CPU (the kernel skips a recursive run), so this
    // CPU's slots and values are ours for the increment: no atomic needed.
    // SAFETY: this CPU's slot of a per-CPU array.
    let s = unsafe { &mut *slot };
    // SAFETY: the name field is 16 bytes at an 8-byte aligned offset of the slot.
    let held = unsafe { *(&raw const s.key.ifname).cast::<[u64; 2]>() };
    if s.count != 0
        && s.key.reason == reason
        && s.key.ifindex == ifindex
        && s.key.netns == netns
        && held[0] == name[0]
        && held[1] == name[1]
    {
        s.count += 1;
        return;
    }
    // Another key's slot, or an empty one: the slot's count moves to the hash, and the
    // slot takes this drop's key, once the hash holds it too (so that a count always has
    // a key to move to); when the hash is full, the drop is counted without its key. The
    // sequence count is odd meanwhile.
    let Some(seq) = DROP_CACHE_SEQ.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; volatile, so that the count's changes
    // stay between the two increments.
    unsafe { core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1) };
    move_slot(s, reason, ifindex, netns, name);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1) };
}

/// Moves the slot's count to the hash and gives the slot this drop's key, counted once.
#[inline(always)]
fn move_slot(s: &mut DropCacheSlot, reason: u32, ifindex: u32, netns: u32, name: [u64; 2]) {
    if s.count != 0 {
        add(&s.key, s.count);
        // SAFETY: a field of this CPU's slot.
        unsafe { core::ptr::write_volatile(&raw mut s.count, 0) };
    }
    let key = DropKey {
        reason,
        ifindex,
        netns,
        _pad: 0,
        // SAFETY: two words are the 16 name bytes.
        ifname: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(name) },
    };
    if !register(&key) {
        count_overflow(1);
        return;
    }
    s.key.reason = reason;
    s.key.ifindex = ifindex;
    s.key.netns = netns;
    s.key._pad = 0;
    // SAFETY: the name field is 16 bytes at an 8-byte aligned offset of the slot.
    let held = unsafe { &mut *(&raw mut s.key.ifname).cast::<[u64; 2]>() };
    held[0] = name[0];
    held[1] = name[1];
    // SAFETY: a field of this CPU's slot.
    unsafe { core::ptr::write_volatile(&raw mut s.count, 1) };
}

/// Makes sure the hash has an entry for `key` (of 0 drops when new); false when it is
/// full.
#[inline(always)]
fn register(key: &DropKey) -> bool {
    if DROP_COUNTS.get_ptr_mut(key).is_some() {
        return true;
    }
    matches!(
        DROP_COUNTS.insert(key, 0u64, BPF_NOEXIST),
        Ok(()) | Err(EEXIST)
    )
}

/// Adds `n` drops to `key`'s entry in the hash, which [`register`] made.
#[inline(always)]
fn add(key: &DropKey, n: u64) {
    match DROP_COUNTS.get_ptr_mut(key) {
        // SAFETY: a per-CPU value of a live entry (entries are never removed).
        Some(v) => unsafe { *v += n },
        None => count_overflow(n),
    }
}

/// Counts `n` drops without their key.
#[inline(always)]
fn count_overflow(n: u64) {
    if let Some(v) = DROP_OVERFLOW.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *v += n };
    }
}
