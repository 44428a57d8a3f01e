//! The tracer object: hooks on the kernel's networking tracepoints that describe each packet
//! they see in a compact [`TraceEvent`] written to a ring buffer.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use pktpath_common::{
    kernel::KernelOffsets,
    trace::{HEADER_BYTES, Hook, TraceEvent},
};
use pktpath_ebpf::kernel::{read_at, read_bytes, read_ifname, read_skb};

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

#[map(name = "TRACE_EVENTS")]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Slot 0 counts, per CPU, the events lost because the ring buffer was full.
#[map(name = "TRACE_LOST")]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn trace_netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let _ = emit(skb, Hook::NetifReceiveSkb);
    0
}

#[btf_tracepoint(function = "net_dev_xmit")]
pub fn trace_net_dev_xmit(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let _ = emit(skb, Hook::NetDevXmit);
    0
}

#[inline(always)]
fn emit(skb: u64, hook: Hook) -> Result<(), i32> {
    let off = PKTPATH_KERNEL_OFFSETS.load();
    let info = read_skb(&off, skb)?;
    let want_netns = PKTPATH_FILTER_NETNS.load();
    if want_netns != 0 && info.netns != want_netns {
        return Ok(());
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
        (*ev).netns = info.netns;
        (*ev).ifindex = info.ifindex;
        (*ev).len = info.len;
        (*ev).mark = info.mark;
        (*ev).hook = hook as u16;
        (*ev).protocol = info.protocol;
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        (*ev).ifname = [0; 16];
        read_ifname(&off, info.dev, &mut (*ev).ifname);
        let data: u64 = read_at(skb, off.skb_data).unwrap_or(0);
        let avail = if info.network_header >= data {
            info.len.saturating_sub((info.network_header - data) as u32)
        } else {
            info.len + (data - info.network_header) as u32
        };
        let copied = read_bytes(info.network_header, &mut (*ev).header);
        (*ev).header_len = if copied == 0 {
            0
        } else if avail < HEADER_BYTES as u32 {
            avail as u16
        } else {
            HEADER_BYTES as u16
        };
    }
    entry.submit(0);
    Ok(())
}
