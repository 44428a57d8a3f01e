//! The naive classifier of the classification benchmark: the same parsing as the data path,
//! then every policy checked in priority order until one matches (a linear scan through
//! `bpf_loop`, so any number of rules passes the verifier). Its cost grows with the number
//! of policies; the data path's must not (bench `classify`).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_loop,
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use pktpath_common::{
    baseline::MAX_LINEAR_RULES,
    route::{ClassKey, FAMILY_V4, RuleMatch},
};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::{
    packet,
    rule::{candidate_matches, fill_key},
};

#[map(name = "LINEAR_RULES")]
static LINEAR_RULES: Array<RuleMatch> = Array::with_max_entries(MAX_LINEAR_RULES, 0);

/// IPv4 rules (entry 0) and IPv6 rules (entry 1): the IPv6 rules follow the IPv4 ones.
#[map(name = "LINEAR_COUNT")]
static LINEAR_COUNT: Array<u32> = Array::with_max_entries(2, 0);

#[map(name = "LINEAR_KEY")]
static LINEAR_KEY: PerCpuArray<ClassKey> = PerCpuArray::with_max_entries(1, 0);

/// State of one scan, shared with the `bpf_loop` callback.
struct ScanCtx {
    key: *const ClassKey,
    v6: bool,
    first: u32,
    count: u32,
    found: bool,
}

#[classifier]
pub fn pktpath_linear(ctx: TcContext) -> i32 {
    let Ok(Some(p)) = packet::parse(&ctx) else {
        return TC_ACT_OK;
    };
    let v4 = LINEAR_COUNT.get(0).copied().unwrap_or(0);
    let v6 = p.family != FAMILY_V4;
    let count = if v6 {
        LINEAR_COUNT.get(1).copied().unwrap_or(0)
    } else {
        v4
    };
    // SAFETY: reading context fields.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    let Some(key) = LINEAR_KEY.get_ptr_mut(0) else {
        return TC_ACT_OK;
    };
    // SAFETY: this CPU's scratch slot.
    fill_key(unsafe { &mut *key }, &p, ifindex, mark);
    let mut scan = ScanCtx {
        key,
        v6,
        first: if v6 { v4 } else { 0 },
        count,
        found: false,
    };
    // SAFETY: `scan_step` has the callback signature bpf_loop expects; `scan` outlives it.
    unsafe {
        bpf_loop(
            MAX_LINEAR_RULES,
            scan_step as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    // What the first match does is not this baseline's concern: a match drops.
    if scan.found { TC_ACT_SHOT } else { TC_ACT_OK }
}

/// `bpf_loop` callback: rule `index`; returns 1 to stop.
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the ScanCtx the program passed, alive for the whole loop; `key`
    // points at this CPU's key slot.
    let ctx = unsafe { &mut *ctx.cast::<ScanCtx>() };
    let i = index as u32;
    if i >= ctx.count {
        return 1;
    }
    let Some(r) = LINEAR_RULES.get(ctx.first + i) else {
        return 1;
    };
    // SAFETY: as above.
    if candidate_matches(r, ctx.v6, unsafe { &*ctx.key }) {
        ctx.found = true;
        return 1;
    }
    0
}
