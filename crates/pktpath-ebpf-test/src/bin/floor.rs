//! The floor of forwarding by a program: what any forwarding program must do (rewrite the
//! Ethernet addresses, redirect to the egress) and nothing else, once at each hook.
//! `pktpath_floor` (TC) is the baseline of the classification benchmark (bench `classify`);
//! `pktpath_xdp_floor` (XDP) is the cheapest XDP forwarder, the ceiling of any XDP mode in
//! the forwarding lab (bench `forward`, `xdp-floor-*`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action::XDP_ABORTED},
    helpers::generated::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use pktpath_common::baseline::{FLOOR_DMAC, FLOOR_SMAC};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::packet;

/// The interface packets are redirected to (set at load).
#[unsafe(no_mangle)]
static FLOOR_IFINDEX: u32 = 1;

#[inline(always)]
fn egress() -> u32 {
    // SAFETY: a load-time constant.
    unsafe { core::ptr::read_volatile(&FLOOR_IFINDEX) }
}

#[classifier]
pub fn pktpath_floor(ctx: TcContext) -> i32 {
    if packet::set_macs(&ctx, &FLOOR_DMAC, &FLOOR_SMAC).is_err() {
        return TC_ACT_OK;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(egress(), 0) as i32 }
}

#[xdp]
pub fn pktpath_xdp_floor(ctx: XdpContext) -> u32 {
    if packet::set_macs(&ctx, &FLOOR_DMAC, &FLOOR_SMAC).is_err() {
        return XDP_ABORTED;
    }
    // SAFETY: plain helper call; XDP_REDIRECT, or XDP_ABORTED for a bad interface.
    unsafe { bpf_redirect(egress(), 0) as u32 }
}
