//! The filter expression's address guard in a hook (see `pktpath_common::guard`): the
//! tracer's first test of an IPv4 packet, before anything of its own is looked up.

use aya_ebpf::Global;
use pktpath_common::{
    filter::ETH_P_IP,
    guard::{GUARD_ATOMS, GUARD_DST, GUARD_PROTO, GUARD_SRC, V4Guard},
};

use crate::kernel::{Offsets, load_at};

/// Whether `guard` rejects `skb` (at a hook on the receive path when `receive`): an IPv4 packet
/// none of whose guard atoms holds for the addresses or protocol in its header, which the
/// expression cannot match (see `pktpath_common::guard`). Where the expression's parser
/// finds no addresses and protocol (fewer than 20 linear bytes, not version 4), its
/// address and protocol tests all fail and it cannot match either: whatever the bytes read
/// there hold, a rejection is right and a pass only goes on to the expression. So the
/// header is not checked, only read (once, or twice when the guard tests the protocol). A
/// narrow filter's rejections skip the remembered verdicts' hash and line, and the per-CPU
/// state.
#[inline(always)]
pub fn rejects(guard: &'static Global<V4Guard>, off: Offsets, skb: u64, receive: bool) -> bool {
    // SAFETY: `Global<T>` is a transparent wrapper of an initialised `T`; its fields are read
    // one at a time.
    let g = unsafe { &*core::ptr::from_ref(guard).cast::<V4Guard>() };
    // SAFETY: fields of a static.
    let on = unsafe { core::ptr::read_volatile(&g.on) };
    if on == 0 {
        return false;
    }
    let protocol = u16::from_be(load_at(skb, off.skb_protocol()));
    if protocol != ETH_P_IP {
        return false;
    }
    // Where the network header starts (as the tracer's headers do: on the receive path the
    // link-layer header is pulled and the network header offset not yet set).
    let start = if receive {
        load_at::<u64>(skb, off.skb_data())
    } else {
        let nh: u16 = load_at(skb, off.skb_network_header());
        if nh == u16::MAX {
            return true; // no network header: no addresses
        }
        load_at::<u64>(skb, off.skb_head()) + u64::from(nh)
    };
    // SAFETY: as above.
    let (count, words) = unsafe {
        (
            core::ptr::read_volatile(&g.count),
            core::ptr::read_volatile(&g.words),
        )
    };
    // The verifier knows `words` (a read-only global) and keeps one of the two ways.
    let (proto, src, dst) = if words & GUARD_PROTO != 0 {
        let w: u64 = load_at(start, 8);
        (w as u32, (w >> 32) as u32, load_at::<u32>(start, 16))
    } else {
        let w: u64 = load_at(start, 12);
        (0, w as u32, (w >> 32) as u32)
    };
    for i in 0..GUARD_ATOMS {
        if i as u32 >= count {
            break;
        }
        let a = &g.atoms[i];
        // SAFETY: as above.
        let (dirs, mask, value) = unsafe {
            (
                core::ptr::read_volatile(&a.dirs),
                core::ptr::read_volatile(&a.mask),
                core::ptr::read_volatile(&a.value),
            )
        };
        if (dirs & GUARD_SRC != 0 && src & mask == value)
            || (dirs & GUARD_DST != 0 && dst & mask == value)
            || (dirs & GUARD_PROTO != 0 && proto & mask == value)
        {
            return false;
        }
    }
    true
}
