//! `pktpath_xdp`: the data path at the XDP hook, on the same tables and counters as
//! `pktpath_tc`, so one apply swaps the policy set for both.
//!
//! It decides only what it can decide whole: a drop, or a forward it can finish itself
//! (fixed next-hop MACs, or a FIB answer with the neighbour known: for a gateway, the main
//! table's route to it, out of the next hop's interface; an egress that takes XDP frames,
//! the TTL surviving, the frame within the egress MTU, no IPv4 options, one host
//! addressed). Everything else leaves it untouched and uncounted (XDP_PASS) for the TC
//! program, which decides and counts it as it would without XDP: no match, `pass`, rules
//! XDP cannot judge (marks: [`RULE_XDP_PASS`], [`RULE_SET_MARK`]), headers the kernel must
//! see (invalid ones, TTL expiring, too big), next hops whose neighbour must be resolved.
//!
//! While a tracer listens (`ROUTE_TAP`, one read per frame otherwise), each decision goes
//! to [`pktpath_xdp_tap`], which adds the frame's headers (there is no skb yet for the
//! tracer to know the packet by) and writes it to the tracers as `pktpath_tap` does TC's.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_TBID, bpf_fib_lookup,
        xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_load_bytes,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use pktpath_common::route::{
    ACTION_DROP, ACTION_FORWARD, ACTION_TABLE, DECISION_TO_TC, FAMILY_V4, GET_MAGIC, MAX_IFACES,
    RULE_SET_DSCP, RULE_SET_MARK, RULE_XDP_PASS, RuleValue, TAP_HOOK_XDP, TapEvent,
    XDP_TAP_HEADER_BYTES, XdpTapEvent,
};
use pktpath_ebpf::{
    mem,
    packet::{self, Frame as _, Malformed, Parsed},
    pinned::{PerCpuArray, ProgramArray},
    xdp as rewrite,
};

use crate::{
    AF_INET, AF_INET6, Outcome, POLICY_STATS, ROUTE_NEXTHOPS, ROUTE_XDP_EGRESS, Routed, SCRATCH,
    TAP,
    classify::{LoopKind, classify},
    count_iface, fib_query, record, tap_all, tap_decision, tap_live,
};

/// [`pktpath_xdp_tap`] at index 0 (`pktpath_common::route::XDP_TAP_PROG_MAP`): the XDP twin
/// of `ROUTE_TAP_PROG` (a program array serves programs of one type).
#[btf_map(name = "ROUTE_XDP_TAP_PROG")]
static XDP_TAP_PROG: ProgramArray<1, 0> = ProgramArray::new();

/// The decision handed from [`pktpath_xdp`] to [`pktpath_xdp_tap`] on this CPU, and the
/// headers the latter adds (`pktpath_common::route::XDP_TAP_SCRATCH_MAP`).
#[btf_map(name = "ROUTE_XDP_TAP_SCRATCH")]
static XDP_TAP_SCRATCH: PerCpuArray<XdpTapEvent, 1, 0> = PerCpuArray::new();

/// Bytes of the Ethernet header, before the headers an [`XdpTapEvent`] carries.
const ETH_HLEN: u32 = 14;

/// Where a packet XDP forwards goes: the egress, and where the MACs to write are (in a map
/// value: the next hop's, or this CPU's FIB lookup answer). Pointers rather than copies:
/// moving 6-byte arrays around compiles to calls of the object's byte-wise memmove.
struct Egress {
    ifindex: u32,
    dmac: *const [u8; 6],
    smac: *const [u8; 6],
}

#[xdp]
pub fn pktpath_xdp(ctx: XdpContext) -> u32 {
    route_xdp(&ctx, LoopKind::MayGoto)
}

/// [`pktpath_xdp`] for kernels without `may_goto` (before 6.9).
#[xdp]
pub fn pktpath_xdp_old(ctx: XdpContext) -> u32 {
    route_xdp(&ctx, LoopKind::BpfLoop)
}

/// Routes one frame at XDP, with the classifier's loop of `kind`.
#[inline(always)]
fn route_xdp(ctx: &XdpContext, kind: LoopKind) -> u32 {
    // SAFETY: reading a field of the context the kernel passed.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // Field by field and used in place, as pktpath_tc does.
    let mut slot = MaybeUninit::<Routed>::uninit();
    let rp = slot.as_mut_ptr();
    // SAFETY: every field is written before the reference is made.
    let r = unsafe {
        (&raw mut (*rp).verdict).write(XDP_PASS as i32);
        (&raw mut (*rp).outcome).write(Outcome::Passed);
        (&raw mut (*rp).matched).write(false);
        mem::zero::<u32, _>(&raw mut (*rp).rule);
        (&raw mut (*rp).egress).write(0);
        (&raw mut (*rp).flags).write(DECISION_TO_TC);
        &mut *rp
    };
    decide(ctx, kind, ifindex, r);
    if r.flags & DECISION_TO_TC == 0 {
        // Decided here: counted here (one call site, for the reason `Egress` gives), and
        // never again by TC.
        count_iface(ifindex, ctx.frame_len(), r.outcome);
    }
    let nonce = get_nonce(ctx);
    if nonce != 0 {
        record(nonce, r);
    } else if tap_live() {
        tap(ctx, ifindex, r);
    }
    r.verdict as u32
}

/// Hands the decision to [`pktpath_xdp_tap`] (a tail call: returns only when that program
/// is not there, and nobody hears of it). Either way the frame gets `r.verdict`.
#[inline(always)]
fn tap(ctx: &XdpContext, ifindex: u32, r: &Routed) {
    let Some(ev) = XDP_TAP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry, used by this frame's programs only.
    unsafe {
        (&raw mut (*ev).tap).write(TapEvent {
            ts_ns: bpf_ktime_get_ns(),
            skb: 0,
            ifindex,
            len: ctx.frame_len(),
            decision: tap_decision(r),
            hook: TAP_HOOK_XDP,
        });
        XDP_TAP_PROG.tail_call(ctx, 0);
    }
}

/// The tail of [`pktpath_xdp`] while a tracer may listen: adds the frame's EtherType and
/// headers (from the network header on, as the program left them) to the decision in this
/// CPU's scratch entry, writes it into the ring of each live tracer (see `pktpath_tap`) and
/// returns the frame's verdict.
#[xdp]
pub fn pktpath_xdp_tap(ctx: XdpContext) -> u32 {
    let (Some(ev), Some(live)) = (XDP_TAP_SCRATCH.get_ptr_mut(0), TAP.get_ptr_mut(0)) else {
        return XDP_PASS;
    };
    let avail = ctx.frame_len();
    let mut n = 0;
    let mut protocol = 0;
    if avail > ETH_HLEN {
        n = avail - ETH_HLEN;
        if n > XDP_TAP_HEADER_BYTES as u32 {
            n = XDP_TAP_HEADER_BYTES as u32;
        }
        let at = ctx.data() + 12;
        if at + 2 <= ctx.data_end() {
            // SAFETY: the two bytes were checked to lie in the frame.
            protocol = u16::from_be_bytes(unsafe { (at as *const [u8; 2]).read_unaligned() });
        }
    }
    // SAFETY: this CPU's scratch entry; `n` bytes (1 to XDP_TAP_HEADER_BYTES) from the
    // network header on lie in the frame (`avail` counted them).
    unsafe {
        // 1 to XDP_TAP_HEADER_BYTES (a power of 2) in a form the verifier bounds.
        if n > 0
            && bpf_xdp_load_bytes(
                ctx.ctx.cast(),
                ETH_HLEN,
                (&raw mut (*ev).header).cast(),
                ((n - 1) & (XDP_TAP_HEADER_BYTES as u32 - 1)) + 1,
            ) != 0
        {
            n = 0;
        }
        (&raw mut (*ev).protocol).write(protocol);
        (&raw mut (*ev).header_len).write(n as u16);
    }
    tap_all(ev, live);
    // SAFETY: this CPU's scratch entry, which pktpath_xdp wrote just before.
    unsafe { (*ev).tap.decision.verdict as u32 }
}

/// The nonce of a `route get --hook xdp` test run: its metadata (before the frame) holds
/// `GET_MAGIC` and the nonce. 0 for everything else (a real frame has no metadata unless a
/// program before this one wrote some, and not these words).
#[inline(always)]
fn get_nonce(ctx: &XdpContext) -> u32 {
    let meta = ctx.metadata();
    if meta + 12 > ctx.data() {
        return 0;
    }
    // SAFETY: the 12 metadata bytes were checked to lie before the frame.
    let w = unsafe { (meta as *const [u32; 3]).read_unaligned() };
    if w[0] == GET_MAGIC[0] && w[1] == GET_MAGIC[1] {
        w[2]
    } else {
        0
    }
}

/// Decides the packet into `r`: left as it starts (pass to TC) unless XDP can finish it.
#[inline(always)]
fn decide(ctx: &XdpContext, kind: LoopKind, ifindex: u32, r: &mut Routed) {
    let Ok(Some(p)) = packet::parse(ctx) else {
        return; // TC counts what is not IP, and what is invalid
    };
    let Some(value) = classify(kind, &p, ifindex, 0) else {
        return;
    };
    r.matched = true;
    // SAFETY: both are RuleValues; the source is in a map value.
    unsafe { mem::copy::<u32, _>(&raw mut r.rule, value) };
    let rule = r.rule;
    if rule.flags & (RULE_XDP_PASS | RULE_SET_MARK) != 0 {
        return;
    }
    let egress = match rule.action {
        ACTION_DROP => None,
        ACTION_FORWARD => match nexthop_egress(ctx, &p, rule.nexthop) {
            Some(e) => Some(e),
            None => return,
        },
        ACTION_TABLE => match table_egress(ctx, &p, ifindex, rule.table) {
            Some(e) => Some(e),
            None => return,
        },
        _ => return,
    };
    r.flags = 0;
    let len = ctx.frame_len();
    if let Some(c) = POLICY_STATS.get_ptr_mut(rule.slot) {
        // SAFETY: per-CPU slot, written only by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    }
    let Some(e) = egress else {
        (r.verdict, r.outcome) = (XDP_DROP as i32, Outcome::Dropped);
        return;
    };
    if rewrite_for(ctx, &p, &rule, &e).is_err() {
        // Unreachable after the parse checked the headers; ABORTED shows in the kernel's
        // xdp:xdp_exception tracepoint, unlike a plain drop.
        (r.verdict, r.outcome) = (XDP_ABORTED as i32, Outcome::Error);
        return;
    }
    r.egress = e.ifindex;
    r.outcome = Outcome::Forwarded;
    // SAFETY: plain helper call.
    r.verdict = unsafe { bpf_redirect(e.ifindex, 0) } as i32;
}

#[inline(always)]
fn rewrite_for(
    ctx: &XdpContext,
    p: &Parsed,
    rule: &RuleValue,
    e: &Egress,
) -> Result<(), Malformed> {
    // SAFETY: both point into map values that outlive this program run (see `Egress`).
    packet::set_macs(ctx, unsafe { &*e.dmac }, unsafe { &*e.smac })?;
    if rule.flags & RULE_SET_DSCP != 0 {
        rewrite::set_dscp(ctx, p, rule.dscp)?;
    }
    rewrite::decrement_ttl(ctx, p)
}

/// Whether XDP may redirect into `ifindex` (see `ROUTE_XDP_EGRESS`).
#[inline(always)]
fn egress_takes_xdp(ifindex: u32) -> bool {
    ifindex < MAX_IFACES && ROUTE_XDP_EGRESS.get(ifindex).is_some_and(|v| *v == 1)
}

/// The egress of next hop `index` when XDP can forward the packet there itself.
#[inline(always)]
fn nexthop_egress(ctx: &XdpContext, p: &Parsed, index: u32) -> Option<Egress> {
    let nh = ROUTE_NEXTHOPS.get(index)?;
    if nh.ifindex == 0
        || (nh.has_mac == 0 && nh.gw_family == 0)
        || !egress_takes_xdp(nh.ifindex)
        || !packet::fast_forwardable(ctx, p)
        || !rewrite::fits_mtu(ctx, nh.ifindex)
    {
        return None;
    }
    if nh.has_mac != 0 {
        return Some(Egress {
            ifindex: nh.ifindex,
            dmac: &raw const nh.dmac,
            smac: &raw const nh.smac,
        });
    }
    // The gateway's MAC, from the kernel's neighbour table through a main-table lookup of
    // the gateway itself (on-link: the neighbour is the gateway). Unresolved, or reached
    // elsewhere, the TC program has the kernel resolve it (bpf_redirect_neigh, which XDP
    // lacks).
    let fib = fib_params(p.l3_len)?;
    if nh.gw_family == FAMILY_V4 {
        fib.family = AF_INET as u8;
        // SAFETY: an IPv4 gateway is the first 4 bytes of the 16.
        fib.__bindgen_anon_4.ipv4_dst =
            unsafe { nh.gateway.as_ptr().cast::<u32>().read_unaligned() };
    } else {
        fib.family = AF_INET6 as u8;
        let g = &nh.gateway;
        // Word by word: a 16-byte copy compiles to a call of the byte-wise memmove.
        for i in 0..4 {
            let w = u32::from_ne_bytes([g[4 * i], g[4 * i + 1], g[4 * i + 2], g[4 * i + 3]]);
            // SAFETY: writing a word of the IPv6 address member of the union.
            unsafe { fib.__bindgen_anon_4.ipv6_dst[i] = w };
        }
    }
    fib.ifindex = nh.ifindex;
    let e = lookup(ctx, fib, BPF_FIB_LOOKUP_DIRECT)?;
    (e.ifindex == nh.ifindex).then_some(e)
}

/// This CPU's FIB lookup parameters, zeroed, with the packet's L3 length (the lookup
/// checks it against the route's MTU).
#[inline(always)]
fn fib_params(l3_len: u32) -> Option<&'static mut bpf_fib_lookup> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; all-zero is a valid bpf_fib_lookup.
    let fib: &mut bpf_fib_lookup = unsafe {
        mem::zero::<u32, _>(&raw mut (*scratch).fib);
        &mut (*scratch).fib
    };
    fib.__bindgen_anon_1.tot_len = l3_len as u16;
    Some(fib)
}

/// Runs the lookup; the egress when it succeeded (neighbour known) into a device that
/// takes XDP frames.
#[inline(always)]
fn lookup(ctx: &XdpContext, fib: &mut bpf_fib_lookup, flags: u32) -> Option<Egress> {
    // SAFETY: ctx is the XDP context; fib is valid for its size.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            fib,
            size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) || !egress_takes_xdp(fib.ifindex) {
        return None;
    }
    Some(Egress {
        ifindex: fib.ifindex,
        dmac: &raw const fib.dmac,
        smac: &raw const fib.smac,
    })
}

/// The egress routing table `table` gives the packet, when the kernel knows the neighbour
/// and the packet fits (the lookup checks `tot_len` against the route's MTU).
#[inline(always)]
fn table_egress(ctx: &XdpContext, p: &Parsed, ifindex: u32, table: u32) -> Option<Egress> {
    if !packet::fast_forwardable(ctx, p) {
        return None;
    }
    let fib = fib_params(p.l3_len)?;
    fib_query(fib, p, ifindex, table);
    lookup(ctx, fib, BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID)
}
