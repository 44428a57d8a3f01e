//! The agent's hop-latency histograms: two programs that time each packet from its receive
//! on one of the router's measured interfaces (`netif_receive_skb`, tp_btf) to its transmit
//! on one of them (`net_dev_start_xmit`), and count the time, per CPU, in log-scale buckets
//! of the (input, output) pair. Nothing is sent to user space per packet; the agent reads
//! the sums when Prometheus scrapes it.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use pktpath_common::{
    hop::{
        HOP_BUCKETS, HOP_IFACES_MAX, HOP_IFINDEX_MAX, HOP_PENDING_SLOTS, HopHistogram, HopStart,
        hop_bucket, hop_check, hop_pending_slot,
    },
    kernel::KernelOffsets,
};
use pktpath_ebpf::kernel::{Offsets, dev_netns, load_at};

#[unsafe(no_mangle)]
static PKTPATH_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNSET);

/// The inode of the namespace whose interfaces are measured (set by user space).
#[unsafe(no_mangle)]
static PKTPATH_HOP_NETNS: Global<u32> = Global::new(0);

/// How many interfaces are measured: slots `0..n` (set by user space).
#[unsafe(no_mangle)]
static PKTPATH_HOP_IFACES: Global<u32> = Global::new(0);

/// By ifindex: the interface's slot plus one, 0 when it is not measured.
#[map(name = "HOP_IFACES")]
static HOP_IFACES: Array<u32> = Array::with_max_entries(HOP_IFINDEX_MAX, 0);

/// The packets received on a measured interface and not transmitted yet, each in the slot
/// its `sk_buff` address picks, shared by the CPUs (a packet is most often transmitted on
/// the CPU that received it, not always: a queue between them). A slot is cleared at the
/// packet's transmit; a packet never transmitted (delivered to the router itself, dropped)
/// stays until another takes its slot. A hash map (LRU) did the same at about 330 ns more
/// per forwarded packet: its update and delete are helper calls that take locks.
#[map(name = "HOP_PENDING")]
static HOP_PENDING: Array<HopStart> = Array::with_max_entries(HOP_PENDING_SLOTS, 0);

/// Slot 0, per CPU: where a pointer (an `sk_buff`'s, its data buffer's) is stored and
/// loaded back, as a number the verifier lets a program hash (it refuses arithmetic other
/// than adding to a pointer).
#[map(name = "HOP_SCRATCH")]
static HOP_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A pointer's value as a number (see [`HOP_SCRATCH`]).
#[inline(always)]
fn address(ptr: u64) -> Option<u64> {
    let p = HOP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU array; volatile, so that the load is made.
    unsafe {
        p.write_volatile(ptr);
        Some(p.read_volatile())
    }
}

/// Per CPU, a histogram per (input slot, output slot) at `input * n + output` (user space
/// sizes it to `n * n`).
#[map(name = "HOP_HIST")]
static HOP_HIST: PerCpuArray<HopHistogram> =
    PerCpuArray::with_max_entries(HOP_IFACES_MAX * HOP_IFACES_MAX, 0);

/// `netif_receive_skb(skb)`: notes when a measured interface received `skb`.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn hop_rx(ctx: BtfTracePointContext) -> i32 {
    received(ctx.arg(0));
    0
}

/// `net_dev_start_xmit(skb, dev)`: counts the time since `skb`'s receive when `dev` is a
/// measured interface.
#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn hop_tx(ctx: BtfTracePointContext) -> i32 {
    transmitted(ctx.arg(0), ctx.arg(1));
    0
}

/// The (ifindex, slot) of `dev` when it is a measured interface.
#[inline(always)]
fn measured(off: Offsets, dev: u64) -> Option<(u32, u32)> {
    if dev == 0 {
        return None;
    }
    let ifindex: u32 = load_at(dev, off.net_device_ifindex());
    let slot = *HOP_IFACES.get(ifindex)?;
    if slot == 0 || dev_netns(off, dev) != PKTPATH_HOP_NETNS.load() {
        return None;
    }
    Some((ifindex, slot - 1))
}

#[inline(always)]
fn received(skb: u64) {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    if !off.set() || skb == 0 {
        return;
    }
    let Some((ifindex, slot)) = measured(off, load_at(skb, off.skb_dev())) else {
        return;
    };
    let Some(addr) = address(skb) else {
        return;
    };
    let Some(entry) = HOP_PENDING.get_ptr_mut(hop_pending_slot(addr)) else {
        return;
    };
    // SAFETY: no preconditions.
    let rx_ns = unsafe { bpf_ktime_get_ns() };
    let Some(head) = address(load_at(skb, off.skb_head())) else {
        return;
    };
    // The check last: a reader that finds it matching the rest read an entry whole (or one
    // torn so that it matches, which the checks at the transmit make harmless).
    // SAFETY: a slot of an array map; volatile, so that the stores stay in this order.
    unsafe {
        (&raw mut (*entry).skb).write_volatile(addr);
        (&raw mut (*entry).rx_ns).write_volatile(rx_ns);
        (&raw mut (*entry).head).write_volatile(head);
        (&raw mut (*entry).ifindex).write_volatile(ifindex);
        (&raw mut (*entry).slot).write_volatile(slot);
        (&raw mut (*entry).check).write_volatile(hop_check(addr, rx_ns, head, ifindex, slot));
    }
}

#[inline(always)]
fn transmitted(skb: u64, dev: u64) {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    if !off.set() || skb == 0 {
        return;
    }
    let Some((_, out)) = measured(off, dev) else {
        return;
    };
    let Some(addr) = address(skb) else {
        return;
    };
    let Some(entry) = HOP_PENDING.get_ptr_mut(hop_pending_slot(addr)) else {
        return;
    };
    // SAFETY: a slot of an array map, read field by field (a copy of the whole struct may
    // become a byte-wise memcpy call).
    let start = unsafe {
        if (&raw const (*entry).skb).read_volatile() != addr {
            return;
        }
        HopStart {
            skb: addr,
            rx_ns: (&raw const (*entry).rx_ns).read_volatile(),
            head: (&raw const (*entry).head).read_volatile(),
            ifindex: (&raw const (*entry).ifindex).read_volatile(),
            slot: (&raw const (*entry).slot).read_volatile(),
            check: (&raw const (*entry).check).read_volatile(),
        }
    };
    if start.check != hop_check(addr, start.rx_ns, start.head, start.ifindex, start.slot) {
        return;
    }
    // Transmitted: counted once.
    // SAFETY: as above.
    unsafe { (&raw mut (*entry).skb).write_volatile(0) };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The packet received then, and not another one that got the skb of a packet freed
    // without a transmit: the same data buffer, and the kernel's note of the receiving
    // device (0 for a packet the router made).
    let Some(head) = address(load_at(skb, off.skb_head())) else {
        return;
    };
    let iif: u32 = load_at(skb, off.skb_skb_iif());
    if head != start.head || iif != start.ifindex {
        return;
    }
    let n = PKTPATH_HOP_IFACES.load();
    if start.slot >= n || out >= n {
        return;
    }
    let Some(h) = HOP_HIST.get_ptr_mut(start.slot * n + out) else {
        return;
    };
    let ns = now.saturating_sub(start.rx_ns);
    let b = hop_bucket(ns);
    if b >= HOP_BUCKETS {
        return;
    }
    // Tracing programs do not nest on one CPU (the kernel skips a recursive run), so this
    // CPU's histogram is ours for the increments: no atomic needed.
    // SAFETY: this CPU's value of a per-CPU array; `b` is within its buckets.
    unsafe {
        let bucket = (&raw mut (*h).buckets).cast::<u64>().add(b);
        *bucket += 1;
        (*h).sum_ns += ns;
    }
}
