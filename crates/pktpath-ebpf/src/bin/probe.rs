//! Tiny programs `pktpath doctor` loads and attaches to learn what the running kernel offers.
//! Each does the least its program type allows.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{btf_tracepoint, classifier, fentry, kprobe, map, raw_tracepoint, tracepoint, xdp},
    maps::RingBuf,
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, TcContext,
        TracePointContext, XdpContext,
    },
};
use pktpath_common::probe::RING_RECORD;
use pktpath_ebpf::looping::can_loop; // and links the shared panic handler

#[map(name = "PROBE_RING")]
static PROBE_RING: RingBuf = RingBuf::with_byte_size(4096, 0);

#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "net_dev_xmit")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "net_dev_xmit")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "ip_rcv")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// Writes one record into the ring buffer, so a test run proves ring buffers work end to end.
#[classifier]
pub fn probe_classifier(_ctx: TcContext) -> i32 {
    if let Some(mut entry) = PROBE_RING.reserve::<u64>(0) {
        entry.write(RING_RECORD);
        entry.submit(0);
    }
    TC_ACT_OK
}

#[xdp]
pub fn probe_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Loads only where the verifier knows `may_goto` (6.9 or later): the data path then runs
/// its programs whose classifier loops with it.
#[classifier]
pub fn probe_may_goto(_ctx: TcContext) -> i32 {
    if can_loop() { TC_ACT_OK } else { TC_ACT_SHOT }
}
