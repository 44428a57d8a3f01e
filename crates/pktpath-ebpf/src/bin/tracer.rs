//! The tracer object: hooks on the kernel's networking tracepoints that describe each packet
//! they see in a compact [`TraceEvent`], and each routing table lookup in a [`FibEvent`],
//! written to one ring buffer.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use aya_ebpf::{
    Global,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    programs::BtfTracePointContext,
};
use pktpath_common::{
    filter::{
        ETH_P_IP, ETH_P_IPV6, FilterProgram, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_ADDR_V4,
        KEY_ADDR_V6, KEY_IP, KEY_PORTS, PacketKey, SIGNATURE_WORDS, key_from_l3_onto,
        signature_covers, signature_mask, signature_span,
    },
    guard::V4Guard,
    kernel::KernelOffsets,
    trace::{
        EVENT_DELIVERED, FIB_FAMILY_V4, FIB_FAMILY_V6, FibEvent, HEADER_BYTES, Hook, RecordHead,
        TraceEvent,
    },
};
use pktpath_ebpf::kernel::{
    Offsets, SkbInfo, dev_netns, load_addr6, load_at, load_name, network_header, read_at,
    read_bytes, read_dev, read_ifname, read_skb,
};
use pktpath_ebpf::{atomic, guard, mem};

#[unsafe(no_mangle)]
static PKTPATH_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNSET);

/// Only packets whose device is in this network namespace (inode) are reported; 0 = all.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_NETNS: Global<u32> = Global::new(0);

/// Only packets whose device has this ifindex are reported; 0 = any.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_IFINDEX: Global<u32> = Global::new(0);

/// With `PKTPATH_FILTER_MARK_ON` = 1, only packets with this `skb->mark` are reported.
#[unsafe(no_mangle)]
static PKTPATH_FILTER_MARK: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static PKTPATH_FILTER_MARK_ON: Global<u32> = Global::new(0);

/// 1 when a routing lookup hook and `netif_receive_skb` are attached: that hook then notes
/// the packet it saw in [`CpuState`] for the input lookups that follow it (else the lookups
/// do not look for it).
#[unsafe(no_mangle)]
static PKTPATH_FIB_ON: Global<u32> = Global::new(0);

/// 1 when the filter expression is the only filter (set by user space from the four above
/// and [`PKTPATH_FILTER_EXPR_ON`]): see [`expression_verdict`].
#[unsafe(no_mangle)]
static PKTPATH_FILTER_EXPR_ALONE: Global<u32> = Global::new(0);

/// The filter expression's guard for IPv4 packets: addresses, protocol, ports (see
/// `pktpath_ebpf::guard`).
#[unsafe(no_mangle)]
static PKTPATH_FILTER_V4_GUARD: Global<V4Guard> = Global::new(V4Guard::OFF);

/// 1 when a packet that passed the filters is reported at every later hook until it is
/// freed even when its headers no longer pass the expression (NAT, tunnels): tracking. 0
/// with `--no-track`, and without an expression (nothing to track).
#[unsafe(no_mangle)]
static PKTPATH_TRACK: Global<u32> = Global::new(0);

/// 1 when a filter expression is installed in [`PKTPATH_FILTER`]; 0 lets the verifier
/// drop the whole evaluator from every hook (the global is read-only, its value known).
#[unsafe(no_mangle)]
static PKTPATH_FILTER_EXPR_ON: Global<u32> = Global::new(0);

/// 64 MiB: about 330,000 packet records, 0.6 s of 500,000 events/s with the reader stalled.
/// The reader keeps up with such rates on average but stalls now and then (output
/// write-back, scheduling): 16 MiB lost events at 250,000 events/s in most runs of the
/// benchmark's ladder once the hooks got fast enough to offer that much; 64 MiB lost none
/// up to 500,000-640,000 (4 MiB had held 20,815 records, which a burst of 5,000 frames at
/// 11 events each overran).
#[map(name = "TRACE_EVENTS")]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 26, 0);

/// The filter expression (slot 0), written by user space before the hooks are attached; an
/// empty program (the never-written slot) matches every packet.
#[map(name = "PKTPATH_FILTER")]
static PKTPATH_FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);

/// With a filter on: the skbs that passed it and are not yet freed, so that their free is
/// reported wherever it happens (a packet sent from the traced namespace into another one is
/// freed there), user space sees each journey end, and (tracking) their later hooks are
/// reported whatever their headers. The value is the skb's data buffer (`head`) when it
/// passed: an skb freed where no tracepoint fires (TCP) and reused for another packet has
/// another buffer, and is not tracked as the packet that passed.
#[map(name = "TRACE_SKBS")]
static TRACE_SKBS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65_536, 0);

/// How many skbs [`TRACE_SKBS`] may hold: raised when one is put in, lowered when one is
/// taken out at its free. While it is 0 no hook needs to look an skb up (with a filter that
/// matches nothing, never; with one that matched a few packets, once they are freed).
/// Entries the LRU map drops, or skbs freed where no tracepoint fires, leave it too high:
/// the lookups then go on, as they must when unsure.
///
/// A global in `.bss` rather than a map of its own: every hook hit that a filter rejects
/// reads it, and a global is one load where a map needs a lookup (its key spilled to the
/// stack and read back, its index checked). User space reads it as the `.bss` map's only
/// value.
#[unsafe(no_mangle)]
static TRACE_SKBS_LIVE: LiveCount = LiveCount(UnsafeCell::new(0));

#[repr(transparent)]
struct LiveCount(UnsafeCell<u64>);
// SAFETY: written only by the atomic add of `count_live`, read whole.
unsafe impl Sync for LiveCount {}

/// Whether [`TRACE_SKBS`] may hold an skb.
#[inline(always)]
fn tracking_live() -> bool {
    // SAFETY: an aligned u64 of this program's `.bss`, read whole: a read racing another
    // CPU's atomic add sees the count before or after it, as a read of a map value did.
    unsafe { core::ptr::read_volatile(TRACE_SKBS_LIVE.0.get()) != 0 }
}

/// Adds `v` (wrapping: `u64::MAX` takes one away) to [`TRACE_SKBS_LIVE`].
#[inline(always)]
fn count_live(v: u64) {
    // SAFETY: this program's own global.
    unsafe { atomic::add(TRACE_SKBS_LIVE.0.get(), v) };
}

/// Per CPU, the data buffer (`sk_buff.head`) of the clone `sk_data_ready` saw queued to an
/// IP socket last: the original's free with a drop reason right after is a delivery
/// ([`EVENT_DELIVERED`]; see `pktpath_ebpf::delivery`).
#[map(name = "TRACE_DELIVERED")]
static TRACE_DELIVERED: PerCpuArray<pktpath_ebpf::delivery::Noted> =
    PerCpuArray::with_max_entries(1, 0);

/// How many verdicts [`CpuState::verdicts`] holds.
const VERDICTS: usize = 256;

/// The filter expression's verdict on the headers with one signature (see
/// [`CpuState::verdicts`]).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Verdict {
    signature: [u64; SIGNATURE_WORDS],
    /// The EtherType; 0 = empty.
    protocol: u16,
    pass: u16,
    _pad: u32,
    /// [`verdict_check`] of the rest, written last: an entry torn by a program that
    /// preempted its writer on this CPU (or wrote it meanwhile) fails it and is a miss.
    check: u64,
}

/// What [`Verdict::check`] holds for a signature whose words and EtherType XOR to `sum`.
#[inline(always)]
fn verdict_check(sum: u64, pass: u16) -> u64 {
    sum ^ (u64::from(pass) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What each CPU keeps from one hook hit to the next, in the slot of its number (user space
/// sizes the array to the possible CPUs). One map, so that a hook hit looks one up: a
/// lookup is a load or two that the forwarding path between two hits has most likely
/// pushed out of the cache.
///
/// An array, not a per-CPU one, for its alignment: the kernel places a mmapable array's
/// values at a page boundary, so every slot, and each 64-byte verdict in it, starts a cache
/// line (a per-CPU map's values are only 8-byte aligned, and a verdict read there spanned
/// two lines in 7 layouts of 8: two cache misses per hook hit instead of one).
#[map(name = "TRACE_CPU")]
static TRACE_CPU: Array<CpuState> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// `BPF_F_MMAPABLE`: the array's values can be mapped by user space, and so are
/// page-aligned.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// This CPU's [`TRACE_CPU`] slot.
#[inline(always)]
fn this_cpu() -> Option<*mut CpuState> {
    // SAFETY: no preconditions (the verifier inlines it into a per-CPU read).
    TRACE_CPU.get_ptr_mut(unsafe { bpf_get_smp_processor_id() })
}

#[repr(C, align(64))]
struct CpuState {
    /// The filter expression's verdicts on recent headers, by signature (direct-mapped): the
    /// bytes of the network and transport headers the expression can test, which stay the
    /// same from hook to hook of one packet and from packet to packet of one flow
    /// (`signature_mask`). A hook that finds its packet's signature here takes the verdict
    /// from it instead of copying, parsing and testing the headers. First, for the line
    /// alignment.
    verdicts: [Verdict; VERDICTS],
    /// The namespace (inode) of the packet `netif_receive_skb` saw last, when it was
    /// reported or no filter expression is installed (else 0). An IPv4 route lookup that finds
    /// nothing names no namespace; on input it runs in the receive path of that packet, on
    /// this CPU.
    rx_netns: u32,
    /// 1 when the packet `netif_receive_skb` saw last was reported (passed the filters).
    /// An input route lookup follows its packet's verdict: it runs right after that hook
    /// on this CPU.
    rx_pass: u32,
    /// The header bytes of the event being built.
    scratch: [u8; HEADER_BYTES],
    /// The filter's view of those headers (see `key_from_l3_onto` on why not a local).
    key: KeySlot,
}

/// A [`PacketKey`] that can be zeroed a word at a time.
#[repr(C, align(8))]
struct KeySlot(PacketKey);
const KEY_WORDS: usize = size_of::<KeySlot>() / 8;
const _: () = assert!(size_of::<KeySlot>() == size_of::<PacketKey>());
const _: () = assert!(size_of::<Verdict>() == 64 && size_of::<CpuState>().is_multiple_of(64));

/// Slot 0 counts, per CPU, the events produced (reserved or lost).
#[map(name = "TRACE_SEEN")]
static TRACE_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0 counts, per CPU, the events lost because the ring buffer was full.
#[map(name = "TRACE_LOST")]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn trace_netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetifReceiveSkb, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "netif_rx")]
pub fn trace_netif_rx(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetifRx, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn trace_napi_gro_receive_entry(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NapiGroReceiveEntry, 0, 0, 0);
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn trace_net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevQueue, 0, 0, 0);
    0
}

/// `net_dev_start_xmit(skb, dev)`: reported on `dev`, the device transmitting.
#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn trace_net_dev_start_xmit(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevStartXmit, 0, 0, ctx.arg(1));
    0
}

/// `net_dev_xmit(skb, rc, dev, skb_len)`: reported on `dev`, the device that transmitted
/// (a veth has already handed the skb to its peer, so `skb->dev` names the peer).
#[btf_tracepoint(function = "net_dev_xmit")]
pub fn trace_net_dev_xmit(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::NetDevXmit, 0, 0, ctx.arg(2));
    0
}

/// `qdisc_enqueue(qdisc, txq, skb)`.
#[btf_tracepoint(function = "qdisc_enqueue")]
pub fn trace_qdisc_enqueue(ctx: BtfTracePointContext) -> i32 {
    let q: u64 = ctx.arg(0);
    let _ = emit_at(ctx.arg(2), Hook::QdiscEnqueue, 0, 0, 0, q);
    0
}

/// `qdisc_dequeue(qdisc, txq, packets, skb)`: `skb` is the first of `packets` (none when
/// the qdisc had nothing to send, which is not reported).
#[btf_tracepoint(function = "qdisc_dequeue")]
pub fn trace_qdisc_dequeue(ctx: BtfTracePointContext) -> i32 {
    let q: u64 = ctx.arg(0);
    let _ = emit_at(ctx.arg(3), Hook::QdiscDequeue, 0, 0, 0, q);
    0
}

/// `fib_table_lookup(tb_id, flp, nhc, err)`.
#[btf_tracepoint(function = "fib_table_lookup")]
pub fn trace_fib_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let table: u64 = ctx.arg(0);
    let err: i64 = ctx.arg(3);
    let _ = emit_fib(Fib {
        hook: Hook::FibTableLookup,
        table: table as u32,
        flow: ctx.arg(1),
        nhc: ctx.arg(2),
        err: err as i32,
        net: 0,
        route_type: 0,
    });
    0
}

/// `fib6_table_lookup(net, res, table, flp)`.
#[btf_tracepoint(function = "fib6_table_lookup")]
pub fn trace_fib6_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    let res: u64 = ctx.arg(1);
    let table: u64 = ctx.arg(2);
    let nh: u64 = load_at(res, off.fib6_result_nh());
    let _ = emit_fib(Fib {
        hook: Hook::Fib6TableLookup,
        table: load_at(table, off.fib6_table_id()),
        flow: ctx.arg(3),
        nhc: if nh == 0 {
            0
        } else {
            nh + off.fib6_nh_common() as u64
        },
        err: 0,
        net: ctx.arg(0),
        route_type: load_at(res, off.fib6_result_type()),
    });
    0
}

/// `kfree_skb(skb, location, reason[, rx_sk])`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn trace_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    let _ = emit(ctx.arg(0), Hook::KfreeSkb, ctx.arg(1), reason as u32, 0);
    0
}

/// `consume_skb(skb, location)`.
#[btf_tracepoint(function = "consume_skb")]
pub fn trace_consume_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = emit(ctx.arg(0), Hook::ConsumeSkb, ctx.arg(1), 0, 0);
    0
}

/// `sk_data_ready(sk)`: a socket was handed data. Reports nothing itself: when the skb it
/// queued last is a clone (a raw socket's copy of a packet that goes on to its protocol
/// handler), notes the clone's data buffer in [`TRACE_DELIVERED`], so that the original's
/// free is reported as the delivery it is, not as the drop its reason says.
#[btf_tracepoint(function = "sk_data_ready")]
pub fn trace_sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    let _ = pktpath_ebpf::delivery::note(off, ctx.arg(0), &TRACE_DELIVERED);
    0
}

/// [`EVENT_DELIVERED`] when `skb`, freed with a drop reason, shares its data with a clone a
/// socket was handed (see [`trace_sk_data_ready`]); else 0.
#[inline(always)]
fn delivered_flag(off: Offsets, skb: u64, hook: Hook, drop_reason: u32) -> u32 {
    if hook != Hook::KfreeSkb || drop_reason == 0 {
        return 0;
    }
    if pktpath_ebpf::delivery::take(off, skb, &TRACE_DELIVERED) {
        EVENT_DELIVERED
    } else {
        0
    }
}

/// The first bytes of a packet from its network header on, read once per event: the filter
/// tests them and the event carries them.
struct Header {
    /// This CPU's state.
    cpu: *mut CpuState,
    /// Its scratch (the BPF stack is too small to hold it next to the filter's state).
    bytes: *mut [u8; HEADER_BYTES],
    /// How many of `bytes` are packet data; `u16::MAX` until read.
    len: u16,
    /// The verdict [`expression_verdict`] found remembered, if it looked: not looked up again.
    known: Option<bool>,
}

/// Reads up to [`HEADER_BYTES`] of `skb`'s linear data from its network header on.
#[inline(always)]
fn read_header(off: Offsets, skb: u64, hook: Hook, l3: L3, dst: &mut Header) {
    let data: u64 = load_at(skb, off.skb_data());
    let start = l3.start(hook, data);
    let avail = linear_from(off, skb, l3, data, start);
    // SAFETY: `bytes` is this CPU's scratch slot; programs do not nest on one CPU for these
    // tracepoints while the slot is in use (a nested run would only garble its own event).
    let copied = read_bytes(start, unsafe { &mut *dst.bytes });
    dst.len = if copied == 0 {
        0
    } else if avail < HEADER_BYTES as u32 {
        avail as u16
    } else {
        HEADER_BYTES as u16
    };
}

/// What the filter expression and the header copy need of an `sk_buff`.
#[derive(Clone, Copy)]
struct L3 {
    len: u32,
    protocol: u16,
    /// Address of the network header, 0 when unset.
    network_header: u64,
}

impl L3 {
    #[inline(always)]
    fn of(info: &SkbInfo) -> Self {
        Self {
            len: info.len,
            protocol: info.protocol,
            network_header: info.network_header,
        }
    }

    /// Reads them alone (the device and its namespace are not needed to judge a packet by
    /// its headers); the network header only where [`Self::start`] uses it.
    #[inline(always)]
    fn read(off: Offsets, skb: u64, hook: Hook) -> Self {
        Self {
            len: load_at(skb, off.skb_len()),
            protocol: u16::from_be(load_at(skb, off.skb_protocol())),
            network_header: if hook.is_receive() {
                0
            } else {
                network_header(off, skb)
            },
        }
    }

    /// Where the packet's network header starts at `hook`, given `skb->data`: on the way
    /// in the link-layer header has been pulled and data is at the network header, which
    /// the kernel has not (re)set yet; elsewhere the network header offset is valid.
    #[inline(always)]
    fn start(self, hook: Hook, data: u64) -> u64 {
        if hook.is_receive() {
            data
        } else {
            self.network_header
        }
    }
}

/// Bytes of linear packet data from `start` on, given `skb->data`.
#[inline(always)]
fn linear_from(off: Offsets, skb: u64, l3: L3, data: u64, start: u64) -> u32 {
    // Only the linear part (len - data_len bytes from data) is contiguous in memory.
    let data_len: u32 = load_at(skb, off.skb_data_len());
    let linear = l3.len.saturating_sub(data_len);
    if start == 0 {
        0
    } else if start >= data {
        linear.saturating_sub((start - data) as u32)
    } else {
        linear + (data - start) as u32
    }
}

/// Where `skb`'s headers start at `hook`, how many bytes of them are linear from there,
/// and their EtherType. With no network header nothing is captured; `data` then stands in
/// for the null start, which the verifier would not let a signature load from.
#[inline(always)]
fn headers_of(off: Offsets, skb: u64, hook: Hook) -> (u64, usize, u16) {
    let l3 = L3::read(off, skb, hook);
    let data: u64 = load_at(skb, off.skb_data());
    let start = l3.start(hook, data);
    let captured = linear_from(off, skb, l3, data, start) as usize;
    (if start == 0 { data } else { start }, captured, l3.protocol)
}

/// Where `skb`'s headers start at `hook`, the mask of their signature (see
/// `signature_mask`) and their EtherType; `None` when the headers were not captured far
/// enough to have a signature.
#[inline(always)]
fn signature_of(
    off: Offsets,
    skb: u64,
    hook: Hook,
) -> Option<(u64, &'static [u64; SIGNATURE_WORDS], u16)> {
    let (start, captured, protocol) = headers_of(off, skb, hook);
    Some((start, signature_mask(protocol, captured)?, protocol))
}

/// IPv4's signature mask and the bytes it needs, as constants (see [`remembered`]).
const V4_SIGNATURE: ([u64; SIGNATURE_WORDS], usize) = match signature_span(ETH_P_IP) {
    Some((mask, need)) => (*mask, need),
    None => panic!("IPv4 has a signature"),
};

/// The entry of `cpu`'s [`CpuState::verdicts`] for the signature whose words `word`
/// gives, and the XOR of the words and the EtherType, for [`verdict_check`].
#[inline(always)]
fn verdict_slot(
    cpu: *mut CpuState,
    protocol: u16,
    word: impl Fn(usize) -> u64,
) -> (*mut Verdict, u64) {
    let mut sum = protocol as u64;
    for i in 0..SIGNATURE_WORDS {
        sum ^= word(i);
    }
    let mut fold = sum ^ (sum >> 32);
    fold ^= fold >> 16;
    let i = (fold ^ (fold >> 8)) as usize % VERDICTS;
    // SAFETY: this CPU's state, `i` in bounds.
    (
        unsafe { (&raw mut (*cpu).verdicts).cast::<Verdict>().add(i) },
        sum,
    )
}

/// The filter expression's verdict on `skb` at `hook` from `cpu`'s
/// [`CpuState::verdicts`], when this CPU has judged headers with the same signature.
///
/// IPv4, the usual case, takes its own path with the mask as constants: three loads and
/// the words the mask clears known to be zero, where the general path reads the mask and
/// tests each word of it. Every hook hit of a trace that rejects runs this, so its length
/// is the rejection's cost.
#[inline(always)]
fn remembered(off: Offsets, skb: u64, hook: Hook, cpu: *mut CpuState) -> Option<bool> {
    let (start, captured, protocol) = headers_of(off, skb, hook);
    let (v4, v4_need) = V4_SIGNATURE;
    if protocol == ETH_P_IP && captured >= v4_need {
        let words: [u64; SIGNATURE_WORDS] = core::array::from_fn(|i| {
            if v4[i] == 0 {
                0
            } else {
                load_at::<u64>(start, (i * 8) as u32) & v4[i]
            }
        });
        return remembered_words(cpu, protocol, words);
    }
    let mask = signature_mask(protocol, captured)?;
    // Only the words the mask keeps are read.
    let words: [u64; SIGNATURE_WORDS] = core::array::from_fn(|i| {
        if mask[i] == 0 {
            0
        } else {
            load_at::<u64>(start, (i * 8) as u32) & mask[i]
        }
    });
    remembered_words(cpu, protocol, words)
}

/// The verdict `cpu` remembers for the signature `words` of an EtherType `protocol`
/// header, if any.
#[inline(always)]
fn remembered_words(
    cpu: *mut CpuState,
    protocol: u16,
    words: [u64; SIGNATURE_WORDS],
) -> Option<bool> {
    let (v, sum) = verdict_slot(cpu, protocol, |i| words[i]);
    // SAFETY: this CPU's entry; see `read_header` on nesting.
    let seen = unsafe { &*v };
    let mut diff =
        u64::from(seen.protocol ^ protocol) | (seen.check ^ verdict_check(sum, seen.pass));
    for (seen, word) in seen.signature.iter().zip(words) {
        diff |= seen ^ word;
    }
    (diff == 0).then_some(seen.pass != 0)
}

/// Remembers `pass`, the verdict on `skb` at `hook` whose headers `hdr` holds, in
/// its CPU's [`CpuState::verdicts`] (when its signature covers them).
///
/// Takes nothing from [`remembered`], and the signature from `hdr`: what the two shared
/// would be live across the parser, and split the verifier's walk of it in as many paths.
#[inline(always)]
fn remember(off: Offsets, skb: u64, hook: Hook, hdr: &Header, pass: bool) {
    let Some((_, mask, protocol)) = signature_of(off, skb, hook) else {
        return;
    };
    // SAFETY: see `read_header`.
    let bytes = unsafe { &*hdr.bytes };
    // Headers that could not be copied have no signature to remember (the scratch holds
    // an older packet's).
    if (mask[0] != 0 && hdr.len == 0) || !signature_covers(mask, bytes, protocol) {
        return;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w) & mask[i]
    };
    let (v, sum) = verdict_slot(hdr.cpu, protocol, word);
    let pass = u16::from(pass);
    // SAFETY: this CPU's entry; see `read_header` on nesting. Volatile stores keep the
    // check last.
    unsafe {
        for i in 0..SIGNATURE_WORDS {
            core::ptr::write_volatile(&raw mut (*v).signature[i], word(i));
        }
        core::ptr::write_volatile(&raw mut (*v).protocol, protocol);
        core::ptr::write_volatile(&raw mut (*v).pass, pass);
        core::ptr::write_volatile(&raw mut (*v).check, verdict_check(sum, pass));
    }
}

/// The filter expression's verdict on `skb` at `hook`: the one remembered for its headers'
/// signature, else the expression's on the headers it reads into `hdr`.
#[inline(always)]
fn judge(off: Offsets, skb: u64, hook: Hook, prog: &FilterProgram, hdr: &mut Header) -> bool {
    if let Some(pass) = hdr.known.or_else(|| remembered(off, skb, hook, hdr.cpu)) {
        return pass;
    }
    let l3 = L3::read(off, skb, hook);
    read_header(off, skb, hook, l3, hdr);
    // The verifier must see len <= HEADER_BYTES on the very register the parser compares
    // indexes with; read it back opaquely so LLVM cannot fold the check into earlier ones
    // it was derived from (the verifier loses those bounds).
    // SAFETY: reads a local.
    let len = unsafe { core::ptr::read_volatile(&hdr.len) } as usize;
    let len = if len > HEADER_BYTES { 0 } else { len };
    // SAFETY: this CPU's slot, as for `bytes` (see `read_header`); zeroed word by word
    // (`write_bytes` would be a call to memset).
    let key = unsafe {
        let slot = &raw mut (*hdr.cpu).key;
        for i in 0..KEY_WORDS {
            slot.cast::<u64>().add(i).write_volatile(0);
        }
        &mut (*slot).0
    };
    // SAFETY: see `read_header`.
    key_from_l3_onto(unsafe { &*hdr.bytes }, len, l3.protocol, key);
    let pass = pktpath_ebpf::filter::eval(prog, key);
    remember(off, skb, hook, hdr, pass);
    pass
}

/// Whether a packet at `hook` is reported: it passes the load-time filters and the filter
/// expression, or it is the free of an skb that passed them earlier. Keeps [`TRACE_SKBS`]
/// up to date. Reads the header into `hdr` when the expression needs it (`hdr.len` stays
/// `u16::MAX` otherwise).
///
/// Runs on every hook hit that `emit_at` did not settle by [`expression_verdict`], before
/// anything else is read, and reads only what each test needs, cheapest first: the mark
/// (one load), the device's ifindex and namespace (three), then for the expression the
/// verdict remembered for the headers' signature (unless `emit_at` found it already: a few
/// loads and a compare), or else a copy of the headers, parsed and tested. A packet the filters reject
/// costs no more than that (plus, on a free once anything was tracked, the lookup of
/// [`TRACE_SKBS`]).
///
/// A function of its own (a BPF subprogram): inlined, its filter state and the caller's
/// event state together exceeded the stack of the qdisc hooks.
#[inline(never)]
fn wanted(off: Offsets, skb: u64, hook: Hook, dev: u64, hdr: &mut Header) -> bool {
    let netns = PKTPATH_FILTER_NETNS.load();
    let ifindex = PKTPATH_FILTER_IFINDEX.load();
    let mark_on = PKTPATH_FILTER_MARK_ON.load();
    let prog = if PKTPATH_FILTER_EXPR_ON.load() != 0 {
        PKTPATH_FILTER.get(0).filter(|p| p.len != 0)
    } else {
        None
    };
    if netns == 0 && ifindex == 0 && mark_on == 0 && prog.is_none() {
        return true;
    }
    let mut pass =
        mark_on == 0 || load_at::<u32>(skb, off.skb_mark()) == PKTPATH_FILTER_MARK.load();
    if pass && (netns != 0 || ifindex != 0) {
        let dev = if dev != 0 {
            dev
        } else {
            load_at(skb, off.skb_dev())
        };
        let (ix, ns) = read_dev(off, dev);
        pass = (netns == 0 || ns == netns) && (ifindex == 0 || ix == ifindex);
    }
    if pass && let Some(prog) = prog {
        pass = judge(off, skb, hook, prog, hdr);
        // Tracking: the expression does not judge a packet it matched before (and the
        // other filters passed, here and then).
        if !pass && !hook.ends_skb() && PKTPATH_TRACK.load() != 0 && tracking_live() {
            let head: u64 = load_at(skb, off.skb_head());
            // SAFETY: a map value of this program's type, read once.
            pass = unsafe { TRACE_SKBS.get(skb) }.is_some_and(|h| *h == head);
        }
    }
    if hook.ends_skb() {
        // SAFETY: the value is only tested for presence, never read through.
        let tracked = tracking_live() && unsafe { TRACE_SKBS.get(skb) }.is_some();
        if tracked && TRACE_SKBS.remove(skb).is_ok() {
            count_live(u64::MAX);
        }
        pass || tracked
    } else {
        // Inserted once per skb, at its first reported hook: an LRU map update costs several
        // times a lookup, and a packet passes some ten hooks. Counted only when new (an skb
        // reused for another packet replaces its entry).
        if pass {
            let head: u64 = load_at(skb, off.skb_head());
            // SAFETY: a map value of this program's type, read once.
            let known = unsafe { TRACE_SKBS.get(skb) }.copied();
            if known != Some(head) && TRACE_SKBS.insert(skb, head, 0).is_ok() && known.is_none() {
                count_live(1);
            }
        }
        pass
    }
}

/// When the filter expression alone decides (no `--netns`, `--iface` or `--mark`): the
/// verdict this CPU remembers for the packet's headers, if any. A rejection is acted on
/// before the call into [`wanted`] and the scratch it needs (the usual case of a trace that
/// selects a little of a busy host's traffic: about half of what a rejected hook hit cost);
/// a pass goes to [`judge`] in [`Header::known`].
#[inline(always)]
fn expression_verdict(off: Offsets, skb: u64, hook: Hook, cpu: *mut CpuState) -> Option<bool> {
    if PKTPATH_FILTER_EXPR_ALONE.load() != 0 {
        remembered(off, skb, hook, cpu)
    } else {
        None
    }
}

/// On `netif_receive_skb`, when routing lookups are traced: the verdict on the packet and, when
/// a lookup may need it, its namespace, for the input lookups that follow it on this CPU
/// (see `emit_fib`). With a filter expression a lookup after a rejected packet is dropped
/// unread: the namespace is read only for a packet that passed (its `net_device` and `net`
/// are two more loads the cache seldom holds).
#[inline(always)]
fn note_rx(off: Offsets, skb: u64, hook: Hook, dev: u64, cpu: *mut CpuState, pass: bool) {
    if hook != Hook::NetifReceiveSkb || PKTPATH_FIB_ON.load() == 0 {
        return;
    }
    let netns = if pass || PKTPATH_FILTER_EXPR_ON.load() == 0 {
        let dev = if dev != 0 {
            dev
        } else {
            load_at(skb, off.skb_dev())
        };
        if dev == 0 { 0 } else { dev_netns(off, dev) }
    } else {
        0
    };
    // SAFETY: this CPU's state, only this CPU writes it while the program runs.
    unsafe {
        (*cpu).rx_pass = u32::from(pass);
        (*cpu).rx_netns = netns;
    }
}

/// A ring buffer record for one event, counted in [`TRACE_SEEN`]; a failed reservation is
/// counted in [`TRACE_LOST`].
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    if let Some(seen) = TRACE_SEEN.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *seen += 1 };
    }
    let entry = TRACE_EVENTS.reserve::<T>(0);
    if entry.is_none()
        && let Some(lost) = TRACE_LOST.get_ptr_mut(0)
    {
        // SAFETY: as above.
        unsafe { *lost += 1 };
    }
    entry
}

#[inline(always)]
/// Reports `skb` at `hook`; `dev`, when not 0, is the device the hook names (else the
/// skb's own device). Filters run before a ring buffer slot is reserved.
fn emit(skb: u64, hook: Hook, location: u64, drop_reason: u32, dev: u64) -> Result<(), i32> {
    emit_at(skb, hook, location, drop_reason, dev, 0)
}

#[inline(always)]
/// [`emit`], with the `Qdisc` the packet is in (qdisc hooks; else 0).
fn emit_at(
    skb: u64,
    hook: Hook,
    location: u64,
    drop_reason: u32,
    dev: u64,
    qdisc: u64,
) -> Result<(), i32> {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    if !off.set() || skb == 0 {
        return Err(-1);
    }
    // Rejections, first by the guard and then by the remembered verdict; not for a
    // free once skbs are tracked: a tracked skb's free is reported whatever its headers;
    // with tracking, nor for any hook of a tracked skb. The count of tracked skbs first:
    // while it is 0 (a narrow filter's usual case) `PKTPATH_TRACK`, on a cache line of its
    // own, is not read.
    let settled = |known: Option<bool>| {
        known == Some(false)
            && (!tracking_live() || (!hook.ends_skb() && PKTPATH_TRACK.load() == 0))
    };
    let guarded =
        guard::rejects(&PKTPATH_FILTER_V4_GUARD, off, skb, hook.is_receive()).then_some(false);
    if settled(guarded) {
        // The per-CPU state only where the input route lookups need the verdict.
        if hook == Hook::NetifReceiveSkb
            && PKTPATH_FIB_ON.load() != 0
            && let Some(cpu) = this_cpu()
        {
            note_rx(off, skb, hook, dev, cpu, false);
        }
        return Ok(());
    }
    let cpu = this_cpu().ok_or(-1)?;
    let known = guarded.or_else(|| expression_verdict(off, skb, hook, cpu));
    if settled(known) {
        note_rx(off, skb, hook, dev, cpu, false);
        return Ok(());
    }
    let mut hdr = Header {
        cpu,
        // SAFETY: this CPU's state.
        bytes: unsafe { &raw mut (*cpu).scratch },
        len: u16::MAX,
        known,
    };
    let pass = wanted(off, skb, hook, dev, &mut hdr);
    note_rx(off, skb, hook, dev, cpu, pass);
    if !pass {
        return Ok(());
    }
    // Only now, for a packet that is reported: all the rest.
    let info = read_skb(off, skb, dev);
    let flags = delivered_flag(off, skb, hook, drop_reason);
    if hdr.len == u16::MAX {
        read_header(off, skb, hook, L3::of(&info), &mut hdr);
    }
    let Some(mut entry) = reserve::<TraceEvent>() else {
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer record of the right size; every field
    // is written before submit.
    unsafe {
        (*ev).head = RecordHead::SKB;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).skb_addr = skb;
        (*ev).location = location;
        (*ev).buffer = info.head;
        (*ev).netns = info.netns;
        (*ev).ifindex = info.ifindex;
        (*ev).len = info.len;
        (*ev).mark = info.mark;
        (*ev).drop_reason = drop_reason;
        // Volatile: next to the other zeroed fields, plain stores were merged into a call
        // to a byte-wise memset.
        core::ptr::write_volatile(&raw mut (*ev).flags, flags);
        core::ptr::write_volatile(&raw mut (*ev)._pad, 0);
        (*ev).qdisc_handle = 0;
        mem::zero::<u64, _>(&raw mut (*ev).qdisc_kind);
        if qdisc != 0 {
            (*ev).qdisc_handle = load_at(qdisc, off.qdisc_handle());
            let ops: u64 = load_at(qdisc, off.qdisc_ops());
            if ops != 0 {
                load_name(ops, off.qdisc_ops_id(), &mut (*ev).qdisc_kind);
            }
        }
        (*ev).hook = hook as u16;
        (*ev).protocol = info.protocol;
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        mem::zero::<u64, _>(&raw mut (*ev).ifname);
        read_ifname(off, info.dev, &mut (*ev).ifname);
        mem::copy::<u64, _>(&raw mut (*ev).header, hdr.bytes);
        (*ev).header_len = hdr.len;
    }
    entry.submit(0);
    Ok(())
}

/// The kernel's loopback ifindex, which output route lookups carry as their input device.
const LOOPBACK_IFINDEX: u32 = 1;

/// The network namespace (inode) of the task running the program.
#[inline(always)]
fn task_netns(off: Offsets) -> u32 {
    // SAFETY: returns the current task's address; only read through bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let nsproxy: u64 = read_at(task, off.task_struct_nsproxy()).unwrap_or(0);
    if nsproxy == 0 {
        return 0;
    }
    let net: u64 = read_at(nsproxy, off.nsproxy_net_ns()).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    read_at(net, off.net_ns_inum()).unwrap_or(0)
}

/// What a routing lookup hook hands to [`emit_fib`].
struct Fib {
    hook: Hook,
    table: u32,
    /// `flowi4 *` or `flowi6 *`.
    flow: u64,
    /// The result's `fib_nh_common *` (0 when none).
    nhc: u64,
    err: i32,
    /// IPv6: the lookup's `struct net *`; IPv4: 0 (the namespace comes from the result's
    /// device).
    net: u64,
    route_type: u8,
}

/// Reports one routing lookup: its flow, table and result. The flow passes the same
/// filters as packets (namespace, interface as input, output or result device, mark, and
/// the filter expression on the flow's addresses, protocol and ports when it names a
/// protocol).
#[inline(always)]
fn emit_fib(f: Fib) -> Result<(), i32> {
    let off = Offsets::of(&PKTPATH_KERNEL_OFFSETS);
    if !off.set() || f.flow == 0 {
        return Err(-1);
    }
    let v6 = f.hook == Hook::Fib6TableLookup;
    let fl = f.flow;
    let iif: u32 = load_at(fl, off.flowi_iif());
    let proto: u8 = load_at(fl, off.flowi_proto());
    // An input lookup runs right after its packet's `netif_receive_skb` on this CPU, and
    // follows the filter expression's verdict on that packet when that hook noted it (its flow has no
    // protocol unless policy rules need one, and so could not be judged by protocol or port
    // tests). Tested first: most lookups are input ones, and a rejected one then costs a
    // few loads. Input lookups name the receiving device; output ones the loopback; the
    // kernel's own (address type checks, as ARP's before a request) none, and follow no
    // packet.
    let input = iif != LOOPBACK_IFINDEX && iif != 0 && PKTPATH_FIB_ON.load() != 0;
    // A packet that passed the expression is counted in `TRACE_SKBS_LIVE` until its free
    // (after its lookups): while the count is 0, the packet received last did not pass,
    // and its lookups are dropped without the per-CPU state (a narrow filter's usual case).
    if input && PKTPATH_FILTER_EXPR_ON.load() != 0 && !tracking_live() {
        return Ok(());
    }
    let rx = if input {
        // SAFETY: this CPU's slot.
        this_cpu().map(|c| unsafe { &*c })
    } else {
        None
    };
    if PKTPATH_FILTER_EXPR_ON.load() != 0 && rx.is_some_and(|c| c.rx_pass == 0) {
        return Ok(());
    }
    let oif: u32 = load_at(fl, off.flowi_oif());
    let mark: u32 = load_at(fl, off.flowi_mark());
    let (src_off, dst_off, uli_off) = if v6 {
        (off.flowi6_saddr(), off.flowi6_daddr(), off.flowi6_uli())
    } else {
        (off.flowi4_saddr(), off.flowi4_daddr(), off.flowi4_uli())
    };
    // Two loads: the union's first member is a pair of 16-bit ports, and the verifier
    // checks each load against one member.
    let dport: [u8; 2] = load_at(fl, uli_off);
    let sport: [u8; 2] = load_at(fl, uli_off + 2);
    let uli = [dport[0], dport[1], sport[0], sport[1]];
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if v6 {
        load_addr6(fl, src_off, &mut src);
        load_addr6(fl, dst_off, &mut dst);
    } else {
        let s: [u8; 4] = load_at(fl, src_off);
        let d: [u8; 4] = load_at(fl, dst_off);
        src[..4].copy_from_slice(&s);
        dst[..4].copy_from_slice(&d);
    }
    let dev: u64 = if f.nhc != 0 {
        load_at(f.nhc, off.fib_nh_common_dev())
    } else {
        0
    };
    let (out_ifindex, dev_netns) = read_dev(off, dev);
    let netns = if f.net != 0 {
        load_at(f.net, off.net_ns_inum())
    } else if dev_netns != 0 {
        dev_netns
    } else if iif == LOOPBACK_IFINDEX {
        // An output lookup (the kernel gives those the loopback device as input) runs in
        // the sending task, in its namespace.
        task_netns(off)
    } else {
        rx.map_or(0, |c| c.rx_netns)
    };

    let want_ns = PKTPATH_FILTER_NETNS.load();
    let want_if = PKTPATH_FILTER_IFINDEX.load();
    if (want_ns != 0 && netns != want_ns)
        || (want_if != 0 && iif != want_if && oif != want_if && out_ifindex != want_if)
        || (PKTPATH_FILTER_MARK_ON.load() != 0 && mark != PKTPATH_FILTER_MARK.load())
    {
        return Ok(());
    }
    // The lookups that follow no packet's verdict are judged by their flow, when it names
    // a protocol; the kernel's own (no input device), which are no packet's, by their
    // addresses alone (a protocol test fails on them).
    if PKTPATH_FILTER_EXPR_ON.load() != 0
        && (proto != 0 || iif == 0)
        && rx.is_none()
        && let Some(prog) = PKTPATH_FILTER.get(0).filter(|p| p.len != 0)
    {
        let ip = if proto != 0 { KEY_IP } else { 0 };
        let mut key = PacketKey {
            ethertype: if v6 { ETH_P_IPV6 } else { ETH_P_IP },
            ip_proto: proto,
            flags: ip | if v6 { KEY_ADDR_V6 } else { KEY_ADDR_V4 },
            ..PacketKey::default()
        };
        if v6 {
            key.src = src;
            key.dst = dst;
        } else {
            // The key's IPv4-mapped form, ::ffff:a.b.c.d, built as one number (filling
            // the array byte by byte would call the object's byte-wise memset).
            let mapped = |a: &[u8; 16]| {
                (0xffff_u128 << 32 | u128::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])))
                    .to_be_bytes()
            };
            key.src = mapped(&src);
            key.dst = mapped(&dst);
        }
        if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
            key.dport = u16::from_be_bytes([uli[0], uli[1]]);
            key.sport = u16::from_be_bytes([uli[2], uli[3]]);
            key.flags |= KEY_PORTS;
        }
        if !pktpath_ebpf::filter::eval(prog, &key) {
            return Ok(());
        }
    }

    let Some(mut entry) = reserve::<FibEvent>() else {
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer record of the right size; every field
    // is written before submit.
    unsafe {
        (*ev).head = RecordHead::FIB;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).netns = netns;
        (*ev).table = f.table;
        (*ev).err = f.err;
        (*ev).iif = iif;
        (*ev).oif = oif;
        (*ev).mark = mark;
        (*ev).out_ifindex = out_ifindex;
        (*ev).hook = f.hook as u16;
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        (*ev).proto = proto;
        (*ev).family = if v6 { FIB_FAMILY_V6 } else { FIB_FAMILY_V4 };
        (*ev).gw_family = 0;
        (*ev).route_type = f.route_type;
        (*ev).uli = uli;
        (*ev).src = src;
        (*ev).dst = dst;
        mem::zero::<u64, _>(&raw mut (*ev).gw);
        mem::zero::<u64, _>(&raw mut (*ev).out_ifname);
        if f.nhc != 0 {
            let gw_family: u8 = load_at(f.nhc, off.fib_nh_common_gw_family());
            (*ev).gw_family = gw_family;
            if gw_family != 0 {
                read_bytes(f.nhc + off.fib_nh_common_gw() as u64, &mut (*ev).gw);
            }
        }
        read_ifname(off, dev, &mut (*ev).out_ifname);
    }
    entry.submit(0);
    Ok(())
}
