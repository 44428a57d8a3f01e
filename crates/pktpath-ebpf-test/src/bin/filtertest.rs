//! The filter test object: TC classifiers that extract the [`PacketKey`] of an Ethernet
//! frame and run the filter in the `PKTPATH_FILTER` map on it, with the same code the
//! tracer uses: `filter_test` through `bpf_loop` (pktpath_ebpf::filter::eval),
//! `filter_test_unrolled` through the plain loop (pktpath_common::filter::eval). Run through
//! BPF_PROG_TEST_RUN, they show that the kernel's verdict equals user space's.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_skb_load_bytes,
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use pktpath_common::filter::{FILTER_TEST_HEADER_BYTES, FilterProgram, PacketKey, key_from_l3};

/// Ethernet header length; the network header follows it.
const ETH_HLEN: u32 = 14;

#[map(name = "PKTPATH_FILTER")]
static PKTPATH_FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);

#[map(name = "FILTER_LAST_KEY")]
static FILTER_LAST_KEY: Array<PacketKey> = Array::with_max_entries(1, 0);

/// The frame's header bytes: as many as the tracer copies do not fit on the BPF stack next
/// to the key (the tracer keeps them in map memory too).
#[map(name = "FILTER_TEST_SCRATCH")]
static FILTER_TEST_SCRATCH: PerCpuArray<[u8; FILTER_TEST_HEADER_BYTES]> =
    PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn filter_test(ctx: TcContext) -> i32 {
    verdict(try_filter_test(&ctx, false))
}

#[classifier]
pub fn filter_test_unrolled(ctx: TcContext) -> i32 {
    verdict(try_filter_test(&ctx, true))
}

#[inline(always)]
fn verdict(r: Result<bool, i64>) -> i32 {
    match r {
        Ok(true) => TC_ACT_OK,
        Ok(false) | Err(_) => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn try_filter_test(ctx: &TcContext, unrolled: bool) -> Result<bool, i64> {
    let ethertype = u16::from_be(ctx.load::<u16>(12)?);
    // SAFETY: this CPU's slot; a program run does not nest on one CPU.
    let header = unsafe { &mut *FILTER_TEST_SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    let avail = ctx.len().saturating_sub(ETH_HLEN);
    let n = if avail > FILTER_TEST_HEADER_BYTES as u32 {
        FILTER_TEST_HEADER_BYTES as u32
    } else {
        avail
    };
    // The verifier must see 0 < n <= FILTER_TEST_HEADER_BYTES on the very register passed to
    // the helper; read `n` back opaquely so LLVM cannot fold these checks into ones on
    // `ctx.len()`.
    // SAFETY: reads a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = if n == 0 || n > FILTER_TEST_HEADER_BYTES as u32 {
        0
    } else {
        // SAFETY: `header` is a buffer of FILTER_TEST_HEADER_BYTES bytes and
        // 0 < n <= FILTER_TEST_HEADER_BYTES.
        let ret = unsafe {
            bpf_skb_load_bytes(ctx.skb.skb.cast(), ETH_HLEN, header.as_mut_ptr().cast(), n)
        };
        if ret != 0 {
            return Err(ret);
        }
        n
    };
    let key = key_from_l3(header, n as usize, ethertype);
    if let Some(slot) = FILTER_LAST_KEY.get_ptr_mut(0) {
        // SAFETY: array slot 0 exists; test runs are not concurrent with readers that care.
        unsafe { *slot = key };
    }
    Ok(match PKTPATH_FILTER.get(0) {
        Some(prog) if unrolled => pktpath_common::filter::eval(prog, &key),
        Some(prog) => pktpath_ebpf::filter::eval(prog, &key),
        None => true,
    })
}
