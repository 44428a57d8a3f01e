//! The data path object: the TC classifier attached to each configured interface.
//!
//! Per packet: parse Ethernet + IPv4/IPv6 (+ ports), classify against the active policy
//! set by tuple space search (see pktpath_common::route), apply the action, count.
//! Anything the fast path does not handle itself (TTL about to expire, too big for the
//! egress MTU, IPv4 options, unresolvable headers) goes to the kernel stack unchanged, which
//! answers with the right ICMP error or forwards it the slow way: never a silent drop.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_TBID, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_loop, bpf_redirect, bpf_redirect_neigh,
    },
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use pktpath_common::route::{
    ACTION_DROP, ACTION_FORWARD, ACTION_PASS, ACTION_TABLE, BUCKET_RULES, Bucket, ClassKey,
    Decision, FAMILY_V4, GENERATIONS, IfaceCounters, MATCH_DSCP, MATCH_IIF, MATCH_PROTO,
    MAX_IFACES, MAX_NEXTHOPS, MAX_POLICY_SLOTS, MAX_RULE_ENTRIES, MAX_TUPLES, NextHop,
    OUTCOME_DROPPED, OUTCOME_ERROR, OUTCOME_FORWARDED, OUTCOME_PASSED, PolicyCounters,
    RULE_SET_DSCP, RULE_SET_MARK, RuleMatch, RuleValue, STATE_ACTIVE_GEN, STATE_ENTRIES,
    STATE_TUPLE_COUNT, TupleMask,
};
use pktpath_ebpf as _; // links the shared panic handler
use pktpath_ebpf::packet::{self, Malformed, Parsed};

#[map(name = "IFACE_STATS")]
static IFACE_STATS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "ROUTE_TUPLES")]
static ROUTE_TUPLES: Array<TupleMask> = Array::with_max_entries(MAX_TUPLES * GENERATIONS, 0);

#[map(name = "ROUTE_RULES")]
static ROUTE_RULES: HashMap<ClassKey, Bucket> =
    HashMap::with_max_entries(MAX_RULE_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "ROUTE_NEXTHOPS")]
static ROUTE_NEXTHOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

#[map(name = "ROUTE_STATE")]
static ROUTE_STATE: Array<u32> = Array::with_max_entries(STATE_ENTRIES, 0);

#[map(name = "POLICY_STATS")]
static POLICY_STATS: PerCpuArray<PolicyCounters> =
    PerCpuArray::with_max_entries(MAX_POLICY_SLOTS, 0);

/// Per-CPU scratch space: the BPF stack (512 bytes) is too small for the lookup key and
/// the FIB lookup parameters on top of the parsed packet.
#[repr(C)]
pub struct Scratch {
    key: ClassKey,
    fib: bpf_fib_lookup,
}

/// What the program did with the last packet on each CPU (read by `pktpath route get`).
#[map(name = "ROUTE_DECISION")]
static DECISION: PerCpuArray<Decision> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "ROUTE_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

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
}

/// Bytes made linear before parsing when the skb's linear part is shorter: Ethernet, an
/// IPv4 header with options or an IPv6 header, and the ports.
const PULL_LEN: u32 = 128;

#[classifier]
pub fn pktpath_tc(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed; reading fields is allowed.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = ctx.len();
    let rec = DECISION.get_ptr_mut(0);
    if let Some(r) = rec {
        // SAFETY: this CPU's entry; cb[0] is a readable context field.
        unsafe {
            (*r).nonce = (*ctx.skb.skb).cb[0];
            (*r).matched = 0;
            (*r).egress_ifindex = 0;
        }
    }
    let (verdict, outcome) = match try_route(&ctx, ifindex, rec) {
        Ok(r) => r,
        Err(Malformed) => (TC_ACT_OK, Outcome::Error),
    };
    count_iface(ifindex, len, outcome);
    if let Some(r) = rec {
        // SAFETY: as above.
        unsafe {
            (*r).verdict = verdict;
            (*r).outcome = outcome as u8;
        }
    }
    verdict
}

/// Notes the interface a forwarded packet leaves by.
#[inline(always)]
fn note_egress(rec: Option<*mut Decision>, ifindex: u32) {
    if let Some(r) = rec {
        // SAFETY: this CPU's entry of the decision map.
        unsafe { (*r).egress_ifindex = ifindex };
    }
}

#[inline(always)]
fn try_route(
    ctx: &TcContext,
    ifindex: u32,
    rec: Option<*mut Decision>,
) -> Result<(i32, Outcome), Malformed> {
    // Headers outside the linear area (frames an AF_PACKET TX_RING sender built, some
    // GRO and tunnel skbs) are not reachable by direct access: pull them in first. This
    // costs nothing for the usual skb whose headers are already linear.
    let want = ctx.len().min(PULL_LEN);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        // On failure the parse below finds the headers short and reports Malformed.
        let _ = ctx.pull_data(want);
    }
    let Some(p) = packet::parse(ctx)? else {
        return Ok((TC_ACT_OK, Outcome::Passed));
    };
    // SAFETY: reading the context's mark.
    let mark = unsafe { (*ctx.skb.skb).mark };
    let Some(rule) = classify(&p, ifindex, mark) else {
        return Ok((TC_ACT_OK, Outcome::Passed));
    };
    if let Some(r) = rec {
        // SAFETY: this CPU's entry of the decision map.
        unsafe {
            (*r).matched = 1;
            (*r).action = rule.action;
            (*r).priority = rule.priority;
            (*r).slot = rule.slot;
            (*r).nexthop = rule.nexthop;
        }
    }
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
    Ok(match rule.action {
        ACTION_DROP => (TC_ACT_SHOT, Outcome::Dropped),
        ACTION_FORWARD => forward_nexthop(ctx, &p, rule.nexthop, rec)?,
        ACTION_TABLE => forward_table(ctx, &p, ifindex, rule.table, rec)?,
        ACTION_PASS => (TC_ACT_OK, Outcome::Passed),
        _ => (TC_ACT_OK, Outcome::Error),
    })
}

/// State of one classification, shared with the `bpf_loop` callback.
struct SearchCtx {
    p: *const Parsed,
    key: *mut Scratch,
    ifindex: u32,
    mark: u32,
    generation: u32,
    count: u32,
    /// Index of the tuple the loop index 0 stands for.
    first: u32,
    found: bool,
    best: RuleValue,
}

/// Tuple space search over the active generation; the best (lowest) priority wins.
/// The tuple loop runs through `bpf_loop`, so the verifier checks one tuple's work once
/// rather than once per tuple and per path.
#[inline(always)]
fn classify(p: &Parsed, ifindex: u32, mark: u32) -> Option<RuleValue> {
    let generation = *ROUTE_STATE.get(STATE_ACTIVE_GEN)? & 1;
    let count = *ROUTE_STATE.get(STATE_TUPLE_COUNT + generation)?;
    if count == 0 {
        return None;
    }
    let key = SCRATCH.get_ptr_mut(0)?;
    let mut ctx = SearchCtx {
        p,
        key,
        ifindex,
        mark,
        generation,
        count,
        first: 0,
        found: false,
        best: RuleValue::default(),
    };
    // SAFETY: `search_step` has the callback signature bpf_loop expects; `ctx` outlives it.
    unsafe {
        bpf_loop(
            MAX_TUPLES,
            search_step as *mut c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    ctx.found.then_some(ctx.best)
}

/// `bpf_loop` callback: tuple `index`; returns 1 to stop.
extern "C" fn search_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the SearchCtx `classify` passed, alive for the whole loop; `p` points
    // at the caller's parsed packet and `key` at this CPU's scratch slot.
    let ctx = unsafe { &mut *ctx.cast::<SearchCtx>() };
    let i = index as u32 + ctx.first;
    if i >= ctx.count || i >= MAX_TUPLES {
        return 1;
    }
    let Some(t) = ROUTE_TUPLES.get(ctx.generation * MAX_TUPLES + i) else {
        return 1;
    };
    if ctx.found && t.min_priority >= ctx.best.priority {
        return 1; // tuples are sorted by their best priority: nothing later can win
    }
    let p = unsafe { &*ctx.p };
    if t.family != p.family {
        return 0;
    }
    // SAFETY: the scratch slot holds a ClassKey; fields are written one by one so no
    // key-sized temporary lands on the stack.
    let k = unsafe { &mut (*ctx.key).key };
    k.tuple = i as u8;
    k.generation = ctx.generation as u8;
    k.family = p.family;
    k.proto = p.proto & t.proto;
    k.dscp = p.dscp & t.dscp;
    k._pad = [0];
    k.sport = p.sport & t.sport;
    k.dport = p.dport & t.dport;
    k._pad2 = 0;
    k.iif = ctx.ifindex & t.iif;
    k.mark = ctx.mark & t.mark;
    mask16(&mut k.src, &p.src, &t.src);
    mask16(&mut k.dst, &p.dst, &t.dst);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the key must stay in the scratch map, not be copied to the stack"
    )]
    let Some(bucket) = ROUTE_RULES.get_ptr(&*k) else {
        return 0;
    };
    // SAFETY: a map value pointer, valid while the program runs.
    let bucket = unsafe { &*bucket };
    let count = bucket.count as usize;
    for c in 0..BUCKET_RULES {
        if c >= count {
            break;
        }
        let r = &bucket.rules[c];
        if ctx.found && r.value.priority >= ctx.best.priority {
            break; // candidates are sorted: none later in this bucket can win
        }
        if candidate_matches(r, p, ctx.ifindex, ctx.mark) {
            ctx.found = true;
            ctx.best = r.value;
            break;
        }
    }
    0
}

/// Whether a bucket candidate's complete match accepts the packet.
#[inline(always)]
fn candidate_matches(r: &RuleMatch, p: &Parsed, ifindex: u32, mark: u32) -> bool {
    r.family == p.family
        && (r.flags & MATCH_PROTO == 0 || r.proto == p.proto)
        && (r.flags & MATCH_DSCP == 0 || r.dscp == p.dscp)
        && (r.flags & MATCH_IIF == 0 || r.iif == ifindex)
        && mark & r.mark_mask == r.mark_value
        && r.sport_lo <= p.sport
        && p.sport <= r.sport_hi
        && r.dport_lo <= p.dport
        && p.dport <= r.dport_hi
        && masked_eq16(&p.src, &r.src_mask, &r.src)
        && masked_eq16(&p.dst, &r.dst_mask, &r.dst)
}

/// `a & mask == want`, 16 bytes, as four 32-bit words.
#[inline(always)]
fn masked_eq16(a: &[u8; 16], mask: &[u8; 16], want: &[u8; 16]) -> bool {
    let (a, m, w) = (
        a.as_ptr() as *const u32,
        mask.as_ptr() as *const u32,
        want.as_ptr() as *const u32,
    );
    let mut diff = 0u32;
    for i in 0..4 {
        // SAFETY: all three are 16-byte arrays; unaligned reads are used.
        unsafe {
            diff |=
                (a.add(i).read_unaligned() & m.add(i).read_unaligned()) ^ w.add(i).read_unaligned();
        }
    }
    diff == 0
}

/// `out = a & mask`, 16 bytes, as four 32-bit words.
#[inline(always)]
fn mask16(out: &mut [u8; 16], a: &[u8; 16], mask: &[u8; 16]) {
    let (o, a, m) = (
        out.as_mut_ptr() as *mut u32,
        a.as_ptr() as *const u32,
        mask.as_ptr() as *const u32,
    );
    for w in 0..4 {
        // SAFETY: all three are 16-byte arrays; unaligned accesses are used.
        unsafe {
            o.add(w)
                .write_unaligned(a.add(w).read_unaligned() & m.add(w).read_unaligned())
        };
    }
}

#[inline(always)]
fn forward_nexthop(
    ctx: &TcContext,
    p: &Parsed,
    index: u32,
    rec: Option<*mut Decision>,
) -> Result<(i32, Outcome), Malformed> {
    let Some(nh) = ROUTE_NEXTHOPS.get(index) else {
        return Ok((TC_ACT_OK, Outcome::Error));
    };
    if nh.ifindex == 0 || !packet::fast_forwardable(p) || (nh.mtu != 0 && p.l3_len > nh.mtu) {
        return Ok((TC_ACT_OK, Outcome::Passed));
    }
    packet::decrement_ttl(ctx, p)?;
    note_egress(rec, nh.ifindex);
    if nh.has_mac != 0 {
        packet::set_macs(ctx, &nh.dmac, &nh.smac)?;
        // SAFETY: plain helper call.
        let r = unsafe { bpf_redirect(nh.ifindex, 0) };
        return Ok((r as i32, Outcome::Forwarded));
    }
    let mut params = bpf_redir_neigh {
        nh_family: 0,
        __bindgen_anon_1: unsafe { core::mem::zeroed() },
    };
    let with_gateway = nh.gw_family != 0;
    if with_gateway {
        params.nh_family = if nh.gw_family == FAMILY_V4 {
            AF_INET
        } else {
            AF_INET6
        };
        // SAFETY: writing plain bytes into a union of byte-compatible arrays.
        unsafe {
            core::ptr::copy_nonoverlapping(
                nh.gateway.as_ptr(),
                &mut params.__bindgen_anon_1 as *mut _ as *mut u8,
                16,
            )
        };
    }
    let (pp, plen) = if with_gateway {
        (
            &mut params as *mut bpf_redir_neigh,
            size_of::<bpf_redir_neigh>() as i32,
        )
    } else {
        (core::ptr::null_mut(), 0)
    };
    // SAFETY: params is valid for plen bytes (or null with 0).
    let r = unsafe { bpf_redirect_neigh(nh.ifindex, pp, plen, 0) };
    Ok((r as i32, Outcome::Forwarded))
}

#[inline(always)]
fn forward_table(
    ctx: &TcContext,
    p: &Parsed,
    ifindex: u32,
    table: u32,
    rec: Option<*mut Decision>,
) -> Result<(i32, Outcome), Malformed> {
    if !packet::fast_forwardable(p) {
        return Ok((TC_ACT_OK, Outcome::Passed));
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Ok((TC_ACT_OK, Outcome::Error));
    };
    // SAFETY: this CPU's scratch slot; all-zero is a valid bpf_fib_lookup.
    let fib: &mut bpf_fib_lookup = unsafe {
        (*scratch).fib = core::mem::zeroed();
        &mut (*scratch).fib
    };
    fib.family = if p.family == FAMILY_V4 {
        AF_INET as u8
    } else {
        AF_INET6 as u8
    };
    fib.l4_protocol = p.proto;
    fib.sport = p.sport.to_be();
    fib.dport = p.dport.to_be();
    fib.__bindgen_anon_1.tot_len = p.l3_len as u16;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_5.tbid = table;
    // SAFETY: writing plain bytes into unions of byte arrays.
    unsafe {
        if p.family == FAMILY_V4 {
            fib.__bindgen_anon_2.tos = p.dscp << 2;
            fib.__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([p.src[0], p.src[1], p.src[2], p.src[3]]);
            fib.__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]);
        } else {
            core::ptr::copy_nonoverlapping(
                p.src.as_ptr(),
                &mut fib.__bindgen_anon_3 as *mut _ as *mut u8,
                16,
            );
            core::ptr::copy_nonoverlapping(
                p.dst.as_ptr(),
                &mut fib.__bindgen_anon_4 as *mut _ as *mut u8,
                16,
            );
        }
    }
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
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        packet::decrement_ttl(ctx, p)?;
        note_egress(rec, fib.ifindex);
        packet::set_macs(ctx, &fib.dmac, &fib.smac)?;
        // SAFETY: plain helper call.
        let r = unsafe { bpf_redirect(fib.ifindex, 0) };
        return Ok((r as i32, Outcome::Forwarded));
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
        note_egress(rec, fib.ifindex);
        // SAFETY: params is valid for its size.
        let r = unsafe {
            bpf_redirect_neigh(
                fib.ifindex,
                &mut params,
                size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        };
        return Ok((r as i32, Outcome::Forwarded));
    }
    // Too big, blackhole, unreachable, no route...: the stack says what to say.
    Ok((TC_ACT_OK, Outcome::Passed))
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
    };
    if let Some(c) = IFACE_STATS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, written only by this CPU.
        bump(unsafe { &mut *c });
        return;
    }
    let mut first = IfaceCounters::default();
    bump(&mut first);
    let _ = IFACE_STATS.insert(ifindex, first, 0);
}
