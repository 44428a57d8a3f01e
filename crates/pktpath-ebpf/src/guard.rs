//! The filter expression's guard in a hook (see `pktpath_common::guard`): the tracer's
//! first test of an IPv4 packet, before anything of its own is looked up.

use aya_ebpf::Global;
use pktpath_common::{
    filter::ETH_P_IP,
    guard::{GUARD_PORTS, GUARD_PROTO, V4Guard},
};

use crate::kernel::{Offsets, load_at, network_header};

/// Whether `guard` rejects `skb` (at a hook on the receive path when `receive`): an IPv4 packet
/// none of whose guard atoms holds for the addresses, protocol or ports in its header,
/// which the expression cannot match (see `pktpath_common::guard`). Where the expression's
/// parser finds no addresses and protocol (fewer than 20 linear bytes, not version 4), its
/// address and protocol tests all fail and it cannot match either; where it finds no
/// ports (another protocol, a later fragment, a transport header past the linear data), its
/// port tests fail. Whatever the bytes read there hold, a rejection is right and a pass
/// only goes on to the expression. So the header is not checked, only read (once, twice
/// with the protocol, two more loads with ports: the IHL, then the ports where it says). A
/// narrow filter's rejections skip the remembered verdicts' hash and line, and the per-CPU
/// state.
#[inline(always)]
pub fn rejects(guard: &'static Global<V4Guard>, off: Offsets, skb: u64, receive: bool) -> bool {
    // The guard through a pointer the compiler cannot trace back to the static, so that its
    // fields are read from the map (a read-only global's reads would fold into its initial
    // value, `OFF`); the verifier still knows them, and drops what they rule out.
    let p: *const V4Guard = core::ptr::from_ref(guard).cast();
    // SAFETY: reads a local; `Global<T>` is a transparent wrapper of an initialised `T`.
    let g = unsafe { &*core::ptr::read_volatile(&raw const p) };
    if g.on == 0 {
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
        match network_header(off, skb) {
            0 => return true, // no network header: no addresses
            nh => nh,
        }
    };
    // The verifier knows `words` and keeps one of the two ways.
    let (proto, src, dst) = if g.words & GUARD_PROTO != 0 {
        let w: u64 = load_at(start, 8);
        (w as u32, (w >> 32) as u32, load_at::<u32>(start, 16))
    } else {
        let w: u64 = load_at(start, 12);
        (0, w as u32, (w >> 32) as u32)
    };
    let ports = if g.words & GUARD_PORTS != 0 {
        let ihl = u64::from(load_at::<u8>(start, 0) & 0x0f) * 4;
        load_at::<u32>(start + ihl, 0)
    } else {
        0
    };
    !g.holds(proto, src, dst, ports)
}
