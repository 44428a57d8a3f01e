//! The data path object: the TC classifier attached to each configured interface, and
//! the XDP program (`xdp`) that runs before it on the interfaces attached with the XDP hook.
//!
//! Per packet: parse Ethernet + IPv4/IPv6 (+ ports), classify against the active policy
//! set by tuple space search (see pktpath_common::route), apply the action, count.
//! Anything the fast path does not handle itself (TTL about to expire, too big for the
//! egress MTU, IPv4 options, broadcast or multicast destinations, unresolvable headers)
//! goes to the kernel stack (with no change but the policy's mark and DSCP), which answers
//! with the right ICMP error or forwards it the slow way: never a silent drop. A packet of a
//! `forward` or `lookup_table` policy goes with its next hop's or table's slow-path mark too
//! (`NextHop::slow_mark`), for which `route attach` installed a rule: the stack forwards it
//! as the policy says.
#![no_std]
#![no_main]

mod classify;
mod xdp;

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{
        BPF_F_MMAPABLE, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_DIRECT,
        BPF_FIB_LOOKUP_TBID, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup, bpf_redir_neigh,
    },
    btf_maps,
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_loop, bpf_map_lookup_elem, bpf_redirect,
        bpf_redirect_neigh, bpf_sk_release,
    },
    macros::{btf_map, classifier},
    programs::TcContext,
};
use pktpath_common::route::{
    ACTION_DROP, ACTION_FORWARD, ACTION_PASS, ACTION_TABLE, Chunk, DECISION_VIA_STACK, Decision,
    FAMILY_V4, GENERATIONS, GET_MAGIC, GenTables, IfaceCounters, MAX_CHUNKS, MAX_IFACES,
    MAX_NEXTHOPS, MAX_POLICY_SLOTS, NextHop, OUTCOME_DROPPED, OUTCOME_ERROR, OUTCOME_FORWARDED,
    OUTCOME_INVALID, OUTCOME_PASSED, PolicyCounters, RULE_SET_DSCP, RULE_SET_MARK, RouteState,
    RuleValue, TAP_HOOK_TC, TAP_RING_BYTES, TAP_SLOTS, TapEvent, TapLive,
};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::{
    mem,
    packet::{self, Malformed, Parsed},
    pinned::{self, Array, ArrayOfMaps, PerCpuArray, PerCpuHashMap, ProgramArray, SockMap},
};

use crate::classify::{LoopKind, Scratch, classify};

/// The license the kernel checks before it lets a program call GPL-only helpers
/// (`bpf_fib_lookup`...). aya assumes "GPL" for an object without one; libbpf (`tc ... obj`)
/// reads this section. pktpath is MIT or Apache-2.0, and MIT is GPL-compatible.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Counters of interfaces with an ifindex below MAX_IFACES (an inlined index lookup).
#[btf_map(name = "IFACE_STATS")]
static IFACE_STATS: PerCpuArray<IfaceCounters, { MAX_IFACES as usize }, 0> = PerCpuArray::new();

/// Counters of the other interfaces (a hash lookup).
#[btf_map(name = "IFACE_STATS_HIGH")]
static IFACE_STATS_HIGH: PerCpuHashMap<u32, IfaceCounters, { MAX_IFACES as usize }, 0> =
    PerCpuHashMap::new();

/// One arena chunk: the type of ROUTE_ARENA's inner maps.
type ChunkMap = btf_maps::Array<Chunk, 1, { BPF_F_MMAPABLE as usize }>;

/// The arenas of both generations, in chunks (`pktpath_common::route::MAP_ARENA`).
#[btf_map]
static ROUTE_ARENA: ArrayOfMaps<ChunkMap, { (GENERATIONS * MAX_CHUNKS) as usize }, 0> =
    ArrayOfMaps::new();

/// Each generation's tree roots (`pktpath_common::route::MAP_TREES`).
#[btf_map(name = "ROUTE_TREES")]
static ROUTE_TREES: Array<GenTables, { GENERATIONS as usize }, 0> = Array::new();

#[btf_map(name = "ROUTE_NEXTHOPS")]
static ROUTE_NEXTHOPS: Array<NextHop, { MAX_NEXTHOPS as usize }, 0> = Array::new();

/// The interfaces XDP may redirect into (`pktpath_common::route::MAP_XDP_EGRESS`).
#[btf_map(name = "ROUTE_XDP_EGRESS")]
static ROUTE_XDP_EGRESS: Array<u32, { MAX_IFACES as usize }, 0> = Array::new();

#[btf_map(name = "ROUTE_STATE")]
static ROUTE_STATE: Array<RouteState, 1, 0> = Array::new();

#[btf_map(name = "POLICY_STATS")]
static POLICY_STATS: PerCpuArray<PolicyCounters, { MAX_POLICY_SLOTS as usize }, 0> =
    PerCpuArray::new();

/// What the program did with a packet, for `pktpath route get`: written only for a packet
/// whose `__sk_buff.cb[0]` is non-zero (the nonce route get's test run sets), so ordinary
/// traffic does not pay for it.
#[btf_map(name = "ROUTE_DECISION")]
static DECISION: PerCpuArray<Decision, 1, 0> = PerCpuArray::new();

#[btf_map(name = "ROUTE_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch, 1, 0> = PerCpuArray::new();

/// `__sk_buff.tc_index` of a packet this program forwarded, until the program sees it again.
///
/// A packet redirected to an egress where the data path is attached too must leave as it
/// is, not be classified a second time: a policy without `iif` would match it again and
/// redirect it again, in a loop the kernel ends by dropping it. The mark travels with the
/// skb, so it also holds for a packet `bpf_redirect_neigh` queued until the neighbour was
/// resolved (it reaches the egress later, from another context) and for a locally generated
/// packet redirected at one egress to another. Nothing else on this kernel sets `tc_index`
/// (the dsmark qdisc and tcindex classifier are gone; TC leaves it alone on a redirect), and
/// every run of the program clears the mark, so it does not outlive the packet's next hook.
/// At an ingress hook (input interface = the hook's own) the mark is only cleared: it is
/// stale there, from a packet that left marked and came back. A packet sent back out of the
/// interface it came in by (hairpin) looks the same at that egress: it carries
/// [`HAIRPIN`] instead.
const FORWARDED: u32 = 0x7070;

/// `__sk_buff.tc_index` of a packet this program forwarded back out of the interface it
/// came in by, until the program sees it again: at that egress the packet's input interface
/// is the hook's own, as at an ingress hook, and this mark tells them apart. It is stale,
/// and the packet passed to the stack unclassified, only if the packet left by an egress
/// where the data path is not attached and came straight back in by the same interface.
const HAIRPIN: u32 = 0x7071;

/// Which tap slots may hold a live tracer, one byte each (`pktpath_common::route::TAP_MAP`,
/// where [`TapLive`] says who sets and clears them).
#[btf_map(name = "ROUTE_TAP")]
pub(crate) static TAP: Array<TapLive, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// The tracers' registrations: slot `i` holds a socket of the tracer in slot `i` until that
/// socket is closed (`pktpath_common::route::TAP_SOCKS_MAP`).
#[btf_map]
static ROUTE_TAP_SOCKS: SockMap<{ TAP_SLOTS as usize }, 0> = SockMap::new();

/// One tracer's decision ring: the type of ROUTE_TAP_RINGS's inner maps.
type TapRing = pinned::RingBuf<{ TAP_RING_BYTES as usize }>;

/// Each registered tracer's own ring, by slot (`pktpath_common::route::TAP_RINGS_MAP`).
#[btf_map]
static ROUTE_TAP_RINGS: ArrayOfMaps<TapRing, { TAP_SLOTS as usize }, 0> = ArrayOfMaps::new();

/// The tap program ([`pktpath_tap`]) at index 0 (`pktpath_common::route::TAP_PROG_MAP`).
///
/// The decision goes to the tracers by a tail call: the verifier checks the tap's work in
/// a program of its own instead of once more for each way a packet reaches the end of this
/// one (this program is close to the verifier's million-instruction budget).
#[btf_map(name = "ROUTE_TAP_PROG")]
static TAP_PROG: ProgramArray<1, 0> = ProgramArray::new();

/// The decision handed from [`pktpath_tc`] to [`pktpath_tap`] on this CPU
/// (`pktpath_common::route::TAP_SCRATCH_MAP`).
#[btf_map(name = "ROUTE_TAP_SCRATCH")]
static TAP_SCRATCH: PerCpuArray<TapEvent, 1, 0> = PerCpuArray::new();

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// How the packet left the program, for the interface counters.
/// The discriminants are the `OUTCOME_*` values `route get` reads from the decision record.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Outcome {
    Passed = OUTCOME_PASSED,
    Forwarded = OUTCOME_FORWARDED,
    Dropped = OUTCOME_DROPPED,
    Error = OUTCOME_ERROR,
    Invalid = OUTCOME_INVALID,
}

/// Bytes made linear before parsing when the skb's linear part is shorter: Ethernet, an
/// IPv4 header with options or an IPv6 header, and the ports.
const PULL_LEN: u32 = 128;

/// What happened to one packet, filled in as the program goes.
struct Routed {
    verdict: i32,
    outcome: Outcome,
    /// The matching policy, when `matched`.
    matched: bool,
    rule: RuleValue,
    /// Interface the packet is redirected to (0 when not).
    egress: u32,
    /// `DECISION_*` bits.
    flags: u8,
}

#[classifier]
pub fn pktpath_tc(ctx: TcContext) -> i32 {
    route(&ctx, LoopKind::MayGoto)
}

/// [`pktpath_tc`] for kernels without `may_goto` (before 6.9). Written out rather than with
/// `#[classifier]`, for the reason [`pktpath_tap`] gives.
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier/old")]
pub fn pktpath_tc_old(ctx: *mut aya_ebpf::bindings::__sk_buff) -> i32 {
    route(&TcContext::new(ctx), LoopKind::BpfLoop)
}

/// Routes one packet at TC, with the classifier's loop of `kind`.
#[inline(always)]
fn route(ctx: &TcContext, kind: LoopKind) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed; reading fields is allowed.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: reading context fields.
    let (iif, cb) = unsafe { ((*ctx.skb.skb).ingress_ifindex, (*ctx.skb.skb).cb) };
    // A `route get` test run: no input interface, and its marks beside the nonce.
    let nonce = if iif == 0 && cb[1] == GET_MAGIC[0] && cb[2] == GET_MAGIC[1] {
        cb[0]
    } else {
        0
    };
    let len = ctx.len();
    // SAFETY: reading and writing `tc_index`, which TC programs may do.
    let mark = unsafe { (*ctx.skb.skb).tc_index };
    if mark == FORWARDED || mark == HAIRPIN {
        // SAFETY: as above.
        unsafe { (*ctx.skb.skb).tc_index = 0 };
        if ifindex != iif || mark == HAIRPIN {
            // At an egress, a packet this program forwarded: counted as forwarded where it
            // came in, it leaves unchanged.
            return TC_ACT_OK;
        }
    }
    // Field by field and used in place, for the reason `classify` gives.
    let mut slot = MaybeUninit::<Routed>::uninit();
    let rp = slot.as_mut_ptr();
    // SAFETY: every field is written before the reference is made.
    let r = unsafe {
        (&raw mut (*rp).verdict).write(TC_ACT_OK);
        (&raw mut (*rp).outcome).write(Outcome::Passed);
        (&raw mut (*rp).matched).write(false);
        mem::zero::<u32, _>(&raw mut (*rp).rule);
        (&raw mut (*rp).egress).write(0);
        (&raw mut (*rp).flags).write(0);
        &mut *rp
    };
    if try_route(ctx, kind, ifindex, r).is_err() {
        r.verdict = TC_ACT_OK;
        r.outcome = Outcome::Error;
    }
    count_iface(ifindex, len, r.outcome);
    if let Outcome::Forwarded = r.outcome {
        let mark = if r.egress == iif { HAIRPIN } else { FORWARDED };
        // SAFETY: as above.
        unsafe { (*ctx.skb.skb).tc_index = mark };
    }
    if nonce != 0 {
        record(nonce, r);
    } else if tap_live() {
        tap(ctx, ifindex, len, r);
    }
    r.verdict
}

/// Whether a tracer may listen: the one read a packet pays when nobody traces, all slots'
/// bytes as one word (a map value is 8-byte aligned).
#[inline(always)]
pub(crate) fn tap_live() -> bool {
    TAP.get_ptr_mut(0).is_some_and(|live| {
        // SAFETY: the map's value, 8 bytes.
        unsafe { core::ptr::read_volatile(live.cast::<u64>()) != 0 }
    })
}

/// The decision `r` as a tracer receives it.
#[inline(always)]
pub(crate) fn tap_decision(r: &Routed) -> Decision {
    Decision {
        nonce: 0,
        matched: r.matched as u8,
        action: r.rule.action,
        outcome: r.outcome as u8,
        flags: r.flags,
        priority: r.rule.priority,
        slot: r.rule.slot,
        nexthop: r.rule.nexthop,
        egress_ifindex: r.egress,
        verdict: r.verdict,
    }
}

/// Hands the decision to [`pktpath_tap`], which reports it to each live tracer; when that
/// program is not there (a data path loaded without it), nobody hears of it. Either way the
/// packet gets `r.verdict`.
#[inline(always)]
fn tap(ctx: &TcContext, ifindex: u32, len: u32, r: &Routed) {
    let Some(ev) = TAP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry, used by this packet's programs only.
    unsafe {
        ev.write(TapEvent {
            ts_ns: aya_ebpf::helpers::bpf_ktime_get_ns(),
            // The context of a TC program is the kernel's sk_buff (`__sk_buff` is its view).
            skb: ctx.skb.skb as u64,
            ifindex,
            len,
            decision: tap_decision(r),
            hook: TAP_HOOK_TC,
        });
        // Returns only when there is no program to go to.
        TAP_PROG.tail_call(ctx, 0);
    }
}

/// The tail of [`pktpath_tc`] while a tracer may listen: writes the decision in this CPU's
/// scratch entry into the ring of each live tracer (a full ring loses it: that tracer
/// counts nothing for it, the packet is not affected) and returns the packet's verdict.
/// A slot whose socket is gone (its tracer died without clearing its byte) gets its byte
/// cleared, so the packets after this one pay the one read again.
///
/// Written out rather than with `#[classifier]`, which puts every program in section
/// `classifier`: `tc ... bpf obj FILE` attaches the first program of that section, which
/// must be [`pktpath_tc`]. aya reads `classifier/tap` as a TC classifier too.
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier/tap")]
pub fn pktpath_tap(_ctx: *mut aya_ebpf::bindings::__sk_buff) -> i32 {
    let (Some(ev), Some(live)) = (TAP_SCRATCH.get_ptr_mut(0), TAP.get_ptr_mut(0)) else {
        return TC_ACT_OK;
    };
    tap_all(ev, live);
    // SAFETY: this CPU's scratch entry, which pktpath_tc wrote just before.
    unsafe { (*ev).decision.verdict }
}

/// Writes the record `ev` (a [`TapEvent`], or an XDP decision with its headers) into the
/// ring of each live tracer, clearing the bytes of slots whose tracer died.
#[inline(always)]
pub(crate) fn tap_all<T>(ev: *mut T, live: *mut TapLive) {
    let mut slots = TapSlots { ev, live };
    // One slot per iteration, as a bpf_loop callback: the verifier checks one slot's work
    // once rather than TAP_SLOTS times over.
    // SAFETY: `tap_slot` has the callback signature bpf_loop expects; `slots` outlives it.
    unsafe {
        bpf_loop(
            TAP_SLOTS,
            tap_slot::<T> as *mut c_void,
            (&raw mut slots).cast(),
            0,
        )
    };
}

/// What each slot's turn of [`tap_all`] needs: the record and the slots' bytes.
#[repr(C)]
struct TapSlots<T> {
    ev: *mut T,
    live: *mut TapLive,
}

/// `bpf_loop` callback: the record for the tracer in slot `index`, if one lives there;
/// returns 0 to go on.
extern "C" fn tap_slot<T>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the TapSlots `tap_all` passed, alive for the whole loop.
    let slots = unsafe { &*ctx.cast::<TapSlots<T>>() };
    let i = (index as u32) & (TAP_SLOTS - 1);
    // SAFETY: byte `i` of the map's value (TAP_SLOTS bytes, a power of 2).
    let byte = unsafe { (&raw mut (*slots.live).live).cast::<u8>().add(i as usize) };
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(byte) } == 0 {
        return 0;
    }
    if !tracer_registered(i) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(byte, 0) };
        // A tracer that registered between the two looks has its byte back.
        if !tracer_registered(i) {
            return 0;
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(byte, 1) };
    }
    if let Some(ring) = ROUTE_TAP_RINGS.get(i) {
        // SAFETY: this CPU's scratch entry, a whole record (output copies it from there).
        let ev: &T = unsafe { &*slots.ev };
        let _ = ring.output_untyped::<T>(ev, 0);
    }
    0
}

/// Whether slot `i` of the tap's sockmap holds a socket (a tracer that has not died).
#[inline(always)]
fn tracer_registered(i: u32) -> bool {
    let map = core::ptr::from_ref(&ROUTE_TAP_SOCKS)
        .cast_mut()
        .cast::<c_void>();
    // SAFETY: a lookup in a sockmap returns a counted reference to the socket, or null.
    let sk = unsafe { bpf_map_lookup_elem(map, (&raw const i).cast()) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: releasing the reference the lookup took.
    unsafe { bpf_sk_release(sk) };
    true
}

/// Writes the decision record `route get` reads.
#[inline(always)]
fn record(nonce: u32, r: &Routed) {
    let Some(d) = DECISION.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry of the decision map.
    let d = unsafe { &mut *d };
    d.nonce = nonce;
    d.matched = r.matched as u8;
    d.action = r.rule.action;
    d.outcome = r.outcome as u8;
    d.flags = r.flags;
    d.priority = r.rule.priority;
    d.slot = r.rule.slot;
    d.nexthop = r.rule.nexthop;
    d.egress_ifindex = r.egress;
    d.verdict = r.verdict;
}

#[inline(always)]
fn try_route(
    ctx: &TcContext,
    kind: LoopKind,
    ifindex: u32,
    r: &mut Routed,
) -> Result<(), Malformed> {
    // Headers outside the linear area (frames an AF_PACKET TX_RING sender built, some
    // GRO and tunnel skbs) are not reachable by direct access: pull them in first. This
    // costs nothing for the usual skb whose headers are already linear.
    let want = ctx.len().min(PULL_LEN);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        // On failure the parse below finds the headers short and reports Malformed.
        let _ = ctx.pull_data(want);
    }
    // A header the kernel's IP input would refuse goes to the stack untouched (which
    // drops it and counts why), counted here as invalid.
    let p = match packet::parse(ctx) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(()),
        Err(Malformed) => {
            r.outcome = Outcome::Invalid;
            return Ok(());
        }
    };
    // SAFETY: reading the context's mark.
    let mark = unsafe { (*ctx.skb.skb).mark };
    let Some(value) = classify(kind, &p, ifindex, mark) else {
        return Ok(());
    };
    r.matched = true;
    // SAFETY: both are RuleValues; the source is in a map value.
    unsafe { mem::copy::<u32, _>(&raw mut r.rule, value) };
    let rule = r.rule;
    if let Some(c) = POLICY_STATS.get_ptr_mut(rule.slot) {
        // SAFETY: per-CPU slot, written only by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += ctx.len() as u64;
        }
    }
    if rule.flags & RULE_SET_MARK != 0 {
        ctx.set_mark(rule.mark);
    }
    if rule.flags & RULE_SET_DSCP != 0 {
        packet::set_dscp(ctx, &p, rule.dscp)?;
    }
    (r.verdict, r.outcome) = match rule.action {
        ACTION_DROP => (TC_ACT_SHOT, Outcome::Dropped),
        ACTION_FORWARD => forward_nexthop(ctx, &p, rule.nexthop, &mut r.egress, &mut r.flags)?,
        ACTION_TABLE => match forward_table(ctx, &p, ifindex, rule.table, &mut r.egress)? {
            Some(done) => done,
            // To the stack, with the mark of the rule `route attach` installed for the
            // table (`rule.nexthop` is its entry): the stack looks it up there too.
            None => match ROUTE_NEXTHOPS.get(rule.nexthop) {
                Some(nh) => to_stack(ctx, &p, nh, &mut r.flags),
                None => (TC_ACT_OK, Outcome::Passed),
            },
        },
        ACTION_PASS => (TC_ACT_OK, Outcome::Passed),
        _ => (TC_ACT_OK, Outcome::Error),
    };
    Ok(())
}

#[inline(always)]
fn forward_nexthop(
    ctx: &TcContext,
    p: &Parsed,
    index: u32,
    egress: &mut u32,
    flags: &mut u8,
) -> Result<(i32, Outcome), Malformed> {
    let Some(nh) = ROUTE_NEXTHOPS.get(index) else {
        return Ok((TC_ACT_OK, Outcome::Error));
    };
    if nh.ifindex == 0 || !packet::fast_forwardable(ctx, p) || !packet::fits_mtu(ctx, nh.ifindex) {
        return Ok(to_stack(ctx, p, nh, flags));
    }
    packet::decrement_ttl(ctx, p)?;
    *egress = nh.ifindex;
    if nh.has_mac != 0 {
        packet::set_macs(ctx, &nh.dmac, &nh.smac)?;
        // SAFETY: plain helper call.
        let r = unsafe { bpf_redirect(nh.ifindex, 0) };
        return Ok((r as i32, Outcome::Forwarded));
    }
    // Filled only with a gateway, then completely (family and all 16 address bytes): no
    // zeroing first, which would be a call to the object's byte-wise memset.
    let mut params = MaybeUninit::<bpf_redir_neigh>::uninit();
    let with_gateway = nh.gw_family != 0;
    let (pp, plen) = if with_gateway {
        let pp = params.as_mut_ptr();
        // SAFETY: writing plain data into the parameters: the family, then the address
        // bytes over the whole 16-byte union of byte-compatible arrays.
        unsafe {
            (&raw mut (*pp).nh_family).write(if nh.gw_family == FAMILY_V4 {
                AF_INET
            } else {
                AF_INET6
            });
            core::ptr::copy_nonoverlapping(
                nh.gateway.as_ptr(),
                (&raw mut (*pp).__bindgen_anon_1).cast::<u8>(),
                16,
            );
        }
        (pp, size_of::<bpf_redir_neigh>() as i32)
    } else {
        (core::ptr::null_mut(), 0)
    };
    // SAFETY: params is valid for plen bytes (or null with 0).
    let r = unsafe { bpf_redirect_neigh(nh.ifindex, pp, plen, 0) };
    Ok((r as i32, Outcome::Forwarded))
}

/// Passes a packet of a policy to the stack with the slow-path mark of `nh` (a next hop's
/// or a table's entry), which the stack's rule for that mark routes as the policy says
/// (see `route::datapath::slow_path`). Group destinations go unmarked: never sent to a next hop.
#[inline(always)]
fn to_stack(ctx: &TcContext, p: &Parsed, nh: &NextHop, flags: &mut u8) -> (i32, Outcome) {
    if nh.slow_mask != 0 && !packet::group_destination(ctx, p) {
        // SAFETY: reading the context's mark.
        let mark = unsafe { (*ctx.skb.skb).mark };
        ctx.set_mark((mark & !nh.slow_mask) | nh.slow_mark);
        *flags |= DECISION_VIA_STACK;
    }
    (TC_ACT_OK, Outcome::Passed)
}

/// Fills in what a lookup of the packet in routing table `table` asks (family, protocol,
/// ports, addresses, DSCP, input interface), for the TC and the XDP program alike; the
/// caller sets `tot_len`.
#[inline(always)]
pub(crate) fn fib_query(fib: &mut bpf_fib_lookup, p: &Parsed, ifindex: u32, table: u32) {
    fib.family = if p.family == FAMILY_V4 {
        AF_INET as u8
    } else {
        AF_INET6 as u8
    };
    fib.l4_protocol = p.proto;
    fib.sport = p.sport.to_be();
    fib.dport = p.dport.to_be();
    fib.ifindex = ifindex;
    fib.__bindgen_anon_5.tbid = table;
    if p.family == FAMILY_V4 {
        fib.__bindgen_anon_2.tos = p.dscp << 2;
        fib.__bindgen_anon_3.ipv4_src = p.src[0];
        fib.__bindgen_anon_4.ipv4_dst = p.dst[0];
    } else {
        fib.__bindgen_anon_3.ipv6_src = p.src;
        fib.__bindgen_anon_4.ipv6_dst = p.dst;
    }
}

/// Looks the packet up in routing table `table` and forwards it by the route found; None
/// when the stack must have it (TTL about to expire, options, too big, no usable route).
#[inline(always)]
fn forward_table(
    ctx: &TcContext,
    p: &Parsed,
    ifindex: u32,
    table: u32,
    egress: &mut u32,
) -> Result<Option<(i32, Outcome)>, Malformed> {
    if !packet::fast_forwardable(ctx, p) {
        return Ok(None);
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Ok(Some((TC_ACT_OK, Outcome::Error)));
    };
    // SAFETY: this CPU's scratch slot; all-zero is a valid bpf_fib_lookup.
    let fib: &mut bpf_fib_lookup = unsafe {
        mem::zero::<u32, _>(&raw mut (*scratch).fib);
        &mut (*scratch).fib
    };
    fib_query(fib, p, ifindex, table);
    // tot_len 0: the kernel checks the skb itself (GSO-aware); fits_mtu below checks
    // segments exactly, also after NO_NEIGH, which returns before the kernel's check.
    fib.__bindgen_anon_1.tot_len = 0;
    let flags = BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID;
    // SAFETY: ctx is the skb context; fib is valid for its size.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut _,
            fib,
            size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    let fits = (rc == BPF_FIB_LKUP_RET_SUCCESS as i64 || rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64)
        && packet::fits_mtu(ctx, fib.ifindex);
    if !fits {
        // Too big, blackhole, unreachable, no route...: the stack says what to say.
        return Ok(None);
    }
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        packet::decrement_ttl(ctx, p)?;
        *egress = fib.ifindex;
        packet::set_macs(ctx, &fib.dmac, &fib.smac)?;
        // SAFETY: plain helper call.
        let r = unsafe { bpf_redirect(fib.ifindex, 0) };
        return Ok(Some((r as i32, Outcome::Forwarded)));
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        // The route is known but not the neighbour: let the kernel resolve it.
        let mut params = bpf_redir_neigh {
            nh_family: fib.family as u32,
            __bindgen_anon_1: unsafe { core::mem::zeroed() },
        };
        // SAFETY: after a lookup, the dst fields hold the next hop address.
        unsafe {
            core::ptr::copy_nonoverlapping(
                &fib.__bindgen_anon_4 as *const _ as *const u8,
                &mut params.__bindgen_anon_1 as *mut _ as *mut u8,
                16,
            )
        };
        packet::decrement_ttl(ctx, p)?;
        *egress = fib.ifindex;
        // SAFETY: params is valid for its size.
        let r = unsafe {
            bpf_redirect_neigh(
                fib.ifindex,
                &mut params,
                size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        };
        return Ok(Some((r as i32, Outcome::Forwarded)));
    }
    Ok(None)
}

#[inline(always)]
fn count_iface(ifindex: u32, len: u32, outcome: Outcome) {
    let bump = |c: &mut IfaceCounters| match outcome {
        Outcome::Passed => {
            c.passed_packets += 1;
            c.passed_bytes += len as u64;
        }
        Outcome::Forwarded => {
            c.forwarded_packets += 1;
            c.forwarded_bytes += len as u64;
        }
        Outcome::Dropped => {
            c.dropped_packets += 1;
            c.dropped_bytes += len as u64;
        }
        Outcome::Error => {
            c.error_packets += 1;
            c.passed_packets += 1;
            c.passed_bytes += len as u64;
        }
        Outcome::Invalid => {
            c.invalid_packets += 1;
            c.passed_packets += 1;
            c.passed_bytes += len as u64;
        }
    };
    if ifindex < MAX_IFACES {
        if let Some(c) = IFACE_STATS.get_ptr_mut(ifindex) {
            // SAFETY: per-CPU value, written only by this CPU.
            bump(unsafe { &mut *c });
        }
        return;
    }
    if let Some(c) = IFACE_STATS_HIGH.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, written only by this CPU.
        bump(unsafe { &mut *c });
        return;
    }
    let mut first = IfaceCounters::default();
    bump(&mut first);
    let _ = IFACE_STATS_HIGH.insert(ifindex, first, 0);
}
