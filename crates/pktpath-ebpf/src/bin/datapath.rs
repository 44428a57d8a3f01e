//! The data path object: the TC classifier attached to each configured interface.
//!
//! This first version counts every packet per interface and passes it to the stack; policy
//! classification and forwarding build on it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use pktpath_common::route::{IfaceCounters, MAX_IFACES};
use pktpath_ebpf as _; // links the shared panic handler

#[map(name = "IFACE_STATS")]
static IFACE_STATS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);

#[classifier]
pub fn pktpath_tc(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed; reading ifindex is allowed.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    count_passed(ifindex, ctx.len());
    TC_ACT_OK
}

#[inline(always)]
fn count_passed(ifindex: u32, len: u32) {
    if let Some(c) = IFACE_STATS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, written only by this CPU.
        unsafe {
            (*c).passed_packets += 1;
            (*c).passed_bytes += len as u64;
        }
        return;
    }
    let first = IfaceCounters {
        passed_packets: 1,
        passed_bytes: len as u64,
        ..Default::default()
    };
    let _ = IFACE_STATS.insert(ifindex, first, 0);
}
