//! The floor of the classification benchmark: a TC program that does what any forwarding
//! program must (rewrite the Ethernet addresses, redirect) and nothing else. The data path
//! is measured against it (bench `classify`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::generated::bpf_redirect, macros::classifier, programs::TcContext,
};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::packet;

/// The interface packets are redirected to (set at load).
#[unsafe(no_mangle)]
static FLOOR_IFINDEX: u32 = 1;

const DMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

#[classifier]
pub fn pktpath_floor(ctx: TcContext) -> i32 {
    if packet::set_macs(&ctx, &DMAC, &SMAC).is_err() {
        return TC_ACT_OK;
    }
    // SAFETY: a load-time constant.
    let ifindex = unsafe { core::ptr::read_volatile(&FLOOR_IFINDEX) };
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}
