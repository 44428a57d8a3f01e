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
    maps::Array,
    programs::TcContext,
};
use pktpath_common::{
    baseline::MAX_LINEAR_RULES,
    route::{ACTION_DROP, RuleMatch},
};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::{
    packet::{self, Parsed},
    rule::candidate_matches,
};

#[map(name = "LINEAR_RULES")]
static LINEAR_RULES: Array<RuleMatch> = Array::with_max_entries(MAX_LINEAR_RULES, 0);

#[map(name = "LINEAR_COUNT")]
static LINEAR_COUNT: Array<u32> = Array::with_max_entries(1, 0);

/// State of one scan, shared with the `bpf_loop` callback.
struct ScanCtx {
    p: *const Parsed,
    ifindex: u32,
    mark: u32,
    count: u32,
    /// Action of the first matching rule, when `found`.
    found: bool,
    action: u8,
}

#[classifier]
pub fn pktpath_linear(ctx: TcContext) -> i32 {
    let Ok(Some(p)) = packet::parse(&ctx) else {
        return TC_ACT_OK;
    };
    let count = LINEAR_COUNT.get(0).copied().unwrap_or(0);
    // SAFETY: reading context fields.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    let mut scan = ScanCtx {
        p: &p,
        ifindex,
        mark,
        count,
        found: false,
        action: 0,
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
    if scan.found && scan.action == ACTION_DROP {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

/// `bpf_loop` callback: rule `index`; returns 1 to stop.
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the ScanCtx the program passed, alive for the whole loop; `p` points
    // at its parsed packet.
    let ctx = unsafe { &mut *ctx.cast::<ScanCtx>() };
    let i = index as u32;
    if i >= ctx.count {
        return 1;
    }
    let Some(r) = LINEAR_RULES.get(i) else {
        return 1;
    };
    // SAFETY: as above.
    let p = unsafe { &*ctx.p };
    if candidate_matches(r, p, ctx.ifindex, ctx.mark) {
        ctx.found = true;
        ctx.action = r.value.action;
        return 1;
    }
    0
}
