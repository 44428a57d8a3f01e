//! The tracer object: hooks on the kernel's networking tracepoints that describe each packet
//! they see in a compact [`TraceEvent`] written to a ring buffer.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use pktpath_common::{
    filter::{FilterProgram, key_from_l3},
    kernel::KernelOffsets,
    trace::{HEADER_BYTES, Hook, TraceEvent},
};
use pktpath_ebpf::kernel::{SkbInfo, read_at, read_bytes, read_ifname, read_skb};

#[unsafe(no_mangle)]
static PKTPATH_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    magic: 0,
    skb_size: 0,
    skb_len: 0,
    skb_data_len: 0,
    skb_data: 0,
    skb_head: 0,
    skb_end: 0,
    skb_mac_header: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_protocol: 0,
    skb_mark: 0,
    skb_dev: 0,
    skb_skb_iif: 0,
    skb_hash: 0,
    skb_tstamp: 0,
    net_device_name: 0,
    net_device_ifindex: 0,
    net_device_nd_net: 0,
    possible_net_t_net: 0,
    net_ns_inum: 0,
    _pad: 0,
});

/// Only packets whose device is in this network namespace (inode) are reported; 0 = all.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_NETNS: Global<u32> = Global::new(0);

/// Only packets whose device has this ifindex are reported; 0 = any.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_IFINDEX: Global<u32> = Global::new(0);

/// With `PKTPATH_FILTER_MARK_ON` = 1, only packets with this `skb->mark` are reported.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_MARK: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static PKTPATH_FILTER_MARK_ON: Global<u32> = Global::new(0);

/// 1 when a filter expression is installed in [`PKTPATH_FILTER`]; 0 lets the verifier
/// drop the whole evaluator from every hook (the global is read-only, its value known).
#[unsafe(no_mangle)]
static PKTPATH_FILTER_EXPR_ON: Global<u32> = Global::new(0);

#[map(name = "TRACE_EVENTS")]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// The filter expression (slot 0), written by user space before the hooks are attached; an
/// empty program (the never-written slot) matches every packet.
#[map(name = "PKTPATH_FILTER")]
static PKTPATH_FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);

/// With a filter on: the skbs that passed it and are not yet freed, so that their free is
/// reported wherever it happens (a packet sent from the traced namespace into another one is
/// freed there) and user space sees each journey end.
#[map(name = "TRACE_SKBS")]
static TRACE_SKBS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65_536, 0);

/// Slot 0: per-CPU scratch for the header bytes of the event being built.
#[map(name = "TRACE_SCRATCH")]
static TRACE_SCRATCH: PerCpuArray<[u8; HEADER_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0 counts, per CPU, the events produced (reserved or lost).
#[map(name = "TRACE_SEEN")]
static TRACE_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0 counts, per CPU, the events lost because the ring buffer was full.
#[map(name = "TRACE_LOST")]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn trace_netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetifReceiveSkb, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "netif_rx")]
pub fn trace_netif_rx(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetifRx, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn trace_napi_gro_receive_entry(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NapiGroReceiveEntry, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn trace_net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevQueue, 0, 0, 0);
    0
}

/// `net_dev_start_xmit(skb, dev)`: reported on `dev`, the device transmitting.
#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn trace_net_dev_start_xmit(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevStartXmit, 0, 0, ctx.arg(1));
    0
}

/// `net_dev_xmit(skb, rc, dev, skb_len)`: reported on `dev`, the device that transmitted
/// (a veth has already handed the skb to its peer, so `skb->dev` names the peer).
#[btf_tracepoint(function = "net_dev_xmit")]
pub fn trace_net_dev_xmit(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevXmit, 0, 0, ctx.arg(2));
    0
}

/// `kfree_skb(skb, location, reason[, rx_sk])`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn trace_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    let _ = emit(ctx.arg(0), Hook::KfreeSkb, ctx.arg(1), reason as u32, 0);
    0
}

/// `consume_skb(skb, location)`.
#[btf_tracepoint(function = "consume_skb")]
pub fn trace_consume_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::ConsumeSkb, ctx.arg(1), 0, 0);
    0
}

/// The first bytes of a packet from its network header on, read once per event: the filter
/// tests them and the event carries them.
struct Header {
    /// Per-CPU scratch (the BPF stack is too small to hold it next to the filter's state).
    bytes: *mut [u8; HEADER_BYTES],
    /// How many of `bytes` are packet data; `u16::MAX` until read.
    len: u16,
}

/// Reads up to [`HEADER_BYTES`] of `skb`'s linear data from its network header on.
#[inline(always)]
fn read_header(off: &KernelOffsets, skb: u64, hook: Hook, info: &SkbInfo, dst: &mut Header) {
    // On the way in the link-layer header has been pulled: data is at the network header,
    // which the kernel has not (re)set yet. Elsewhere the network header offset is valid.
    let data: u64 = read_at(skb, off.skb_data).unwrap_or(0);
    // Only the linear part (len - data_len bytes from data) is contiguous in memory.
    let data_len: u32 = read_at(skb, off.skb_data_len).unwrap_or(0);
    let linear = info.len.saturating_sub(data_len);
    let l3 = if hook.is_receive() {
        data
    } else {
        info.network_header
    };
    // Bytes of linear packet data from l3 on.
    let avail = if l3 == 0 {
        0
    } else if l3 >= data {
        linear.saturating_sub((l3 - data) as u32)
    } else {
        linear + (data - l3) as u32
    };
    // SAFETY: `bytes` is this CPU's scratch slot; programs do not nest on one CPU for these
    // tracepoints while the slot is in use (a nested run would only garble its own event).
    let copied = read_bytes(l3, unsafe { &mut *dst.bytes });
    dst.len = if copied == 0 {
        0
    } else if avail < HEADER_BYTES as u32 {
        avail as u16
    } else {
        HEADER_BYTES as u16
    };
}

/// Whether a packet at `hook` is reported: it passes the load-time filters and the filter
/// expression, or it is the free of an skb that passed them earlier. Keeps [`TRACE_SKBS`]
/// up to date. Reads the header into `hdr` when the expression needs it (`hdr.len` stays
/// `u16::MAX` otherwise).
#[inline(always)]
fn wanted(off: &KernelOffsets, skb: u64, hook: Hook, info: &SkbInfo, hdr: &mut Header) -> bool {
    let netns = PKTPATH_FILTER_NETNS.load();
    let ifindex = PKTPATH_FILTER_IFINDEX.load();
    let mark_on = PKTPATH_FILTER_MARK_ON.load();
    let prog = if PKTPATH_FILTER_EXPR_ON.load() != 0 {
        PKTPATH_FILTER.get(0).filter(|p| p.len != 0)
    } else {
        None
    };
    if netns == 0 && ifindex == 0 && mark_on == 0 && prog.is_none() {
        return true;
    }
    let mut pass = (netns == 0 || info.netns == netns)
        && (ifindex == 0 || info.ifindex == ifindex)
        && (mark_on == 0 || info.mark == PKTPATH_FILTER_MARK.load());
    if pass && let Some(prog) = prog {
        read_header(off, skb, hook, info, hdr);
        // The verifier must see len <= HEADER_BYTES on the very register the parser compares
        // indexes with; read it back opaquely so LLVM cannot fold the check into earlier
        // ones it was derived from (the verifier loses those bounds).
        // SAFETY: reads a local.
        let len = unsafe { core::ptr::read_volatile(&hdr.len) } as usize;
        let len = if len > HEADER_BYTES { 0 } else { len };
        // SAFETY: see `read_header`.
        let key = key_from_l3(unsafe { &*hdr.bytes }, len, info.protocol);
        pass = pktpath_ebpf::filter::eval(prog, &key);
    }
    if hook.ends_skb() {
        // SAFETY: the value is only tested for presence, never read through.
        let tracked = unsafe { TRACE_SKBS.get(skb) }.is_some();
        if tracked {
            let _ = TRACE_SKBS.remove(skb);
        }
        pass || tracked
    } else {
        if pass {
            let _ = TRACE_SKBS.insert(skb, 1, 0);
        }
        pass
    }
}

#[inline(always)]
/// Reports `skb` at `hook`; `dev`, when not 0, is the device the hook names (else the
/// skb's own device). Filters run before a ring buffer slot is reserved.
fn emit(skb: u64, hook: Hook, location: u64, drop_reason: u32, dev: u64) -> Result<(), i32> {
    let off = PKTPATH_KERNEL_OFFSETS.load();
    let info = read_skb(&off, skb, dev)?;
    let mut hdr = Header {
        bytes: TRACE_SCRATCH.get_ptr_mut(0).ok_or(-1)?,
        len: u16::MAX,
    };
    if !wanted(&off, skb, hook, &info, &mut hdr) {
        return Ok(());
    }
    if hdr.len == u16::MAX {
        read_header(&off, skb, hook, &info, &mut hdr);
    }
    if let Some(seen) = TRACE_SEEN.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *seen += 1 };
    }
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        if let Some(lost) = TRACE_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *lost += 1 };
        }
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer record of the right size; every field
    // is written before submit.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).skb_addr = skb;
        (*ev).location = location;
        (*ev).netns = info.netns;
        (*ev).ifindex = info.ifindex;
        (*ev).len = info.len;
        (*ev).mark = info.mark;
        (*ev).drop_reason = drop_reason;
        (*ev)._pad = 0;
        (*ev).hook = hook as u16;
        (*ev).protocol = info.protocol;
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        (*ev).ifname = [0; 16];
        read_ifname(&off, info.dev, &mut (*ev).ifname);
        (*ev).header = *hdr.bytes;
        (*ev).header_len = hdr.len;
    }
    entry.submit(0);
    Ok(())
}
