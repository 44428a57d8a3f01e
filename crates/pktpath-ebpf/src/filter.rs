//! Packet filters in eBPF: [`eval`] runs a [`FilterProgram`] through the `bpf_loop` helper
//! (kernel 5.17+), one [`eval_step`] per iteration, so the verifier checks the step once
//! instead of once per possible instruction. Same verdicts as
//! [`pktpath_common::filter::eval`], which unrolls into the program and costs the verifier
//! tens of thousands of instructions per hook.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use pktpath_common::filter::{
    EvalState, FILTER_MAX_INSNS, FilterProgram, PacketKey, VERDICT_MATCH, eval_step,
};

/// What the loop callback needs; lives on the caller's stack.
struct LoopCtx {
    prog: *const FilterProgram,
    key: *const PacketKey,
    state: EvalState,
}

/// `bpf_loop` callback: one instruction; 1 stops the loop.
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    let ctx = ctx.cast::<LoopCtx>();
    // SAFETY: `ctx` is the LoopCtx `eval` passed to bpf_loop, alive for the whole loop;
    // `prog` and `key` point at the references `eval` was given.
    unsafe {
        let (prog, key) = (&*(*ctx).prog, &*(*ctx).key);
        i64::from(eval_step(prog, key, &mut (*ctx).state))
    }
}

/// Runs `prog` on `key`: true when the packet matches (an empty program matches all).
#[inline(always)]
pub fn eval(prog: &FilterProgram, key: &PacketKey) -> bool {
    if prog.len == 0 {
        return true;
    }
    // Every step runs in the loop, none inline: each inline step multiplies the paths the
    // verifier walks (four of them cost ~15k verified instructions per hook, 40% of a
    // filtered trace's start-up), while the helper call costs nanoseconds per packet.
    let mut ctx = LoopCtx {
        prog,
        key,
        state: EvalState::default(),
    };
    // SAFETY: `step` has the callback signature bpf_loop expects and `ctx` outlives the call.
    unsafe {
        bpf_loop(
            FILTER_MAX_INSNS as u32,
            step as *mut c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    ctx.state.verdict == VERDICT_MATCH
}
