//! The tracer object: hooks on the kernel's networking tracepoints that describe each packet
//! they see in a compact [`TraceEvent`], and each routing table lookup in a [`FibEvent`],
//! written to one ring buffer.
#![no_std]
#![no_main]

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
        KEY_ADDR_V6, KEY_IP, KEY_PORTS, PacketKey, key_from_l3,
    },
    kernel::KernelOffsets,
    trace::{FIB_FAMILY_V4, FIB_FAMILY_V6, FibEvent, HEADER_BYTES, Hook, TraceEvent},
};
use pktpath_ebpf::kernel::{SkbInfo, read_at, read_bytes, read_dev, read_ifname, read_skb};

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

/// 1 when a routing lookup hook is attached: receive hooks then note the namespace of the
/// packet they saw in [`TRACE_RX_NETNS`] (else they skip reading it).
#[unsafe(no_mangle)]
static PKTPATH_FIB_ON: Global<u32> = Global::new(0);

/// 1 when a filter expression is installed in [`PKTPATH_FILTER`]; 0 lets the verifier
/// drop the whole evaluator from every hook (the global is read-only, its value known).
#[unsafe(no_mangle)]
static PKTPATH_FILTER_EXPR_ON: Global<u32> = Global::new(0);

/// 16 MiB: about 83,000 packet records, a burst of 80 ms at 1M events/s with the reader
/// stalled (4 MiB held 20,815, which a burst of 5,000 frames at 11 events each overran).
#[map(name = "TRACE_EVENTS")]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 24, 0);

/// The filter expression (slot 0), written by user space before the hooks are attached; an
/// empty program (the never-written slot) matches every packet.
#[map(name = "PKTPATH_FILTER")]
static PKTPATH_FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);

/// With a filter on: the skbs that passed it and are not yet freed, so that their free is
/// reported wherever it happens (a packet sent from the traced namespace into another one is
/// freed there) and user space sees each journey end.
#[map(name = "TRACE_SKBS")]
static TRACE_SKBS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65_536, 0);

/// Slot 0: per-CPU scratch for the header bytes of the event being built.
#[map(name = "TRACE_SCRATCH")]
static TRACE_SCRATCH: PerCpuArray<[u8; HEADER_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0 counts, per CPU, the events produced (reserved or lost).
#[map(name = "TRACE_SEEN")]
static TRACE_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: per CPU, the namespace (inode) of the packet a receive hook saw last. An IPv4
/// route lookup that finds nothing names no namespace; on input it runs in the receive path
/// of that packet, on this CPU.
#[map(name = "TRACE_RX_NETNS")]
static TRACE_RX_NETNS: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: per CPU, 1 when the packet a receive hook saw last was reported (passed the
/// filters). An input route lookup names no protocol, so the filter expression cannot judge
/// it; it runs right after its packet's receive hooks on this CPU, and follows their verdict.
#[map(name = "TRACE_RX_PASS")]
static TRACE_RX_PASS: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

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
    let off = PKTPATH_KERNEL_OFFSETS.load();
    let res: u64 = ctx.arg(1);
    let table: u64 = ctx.arg(2);
    let nh: u64 = read_at(res, off.fib6_result_nh).unwrap_or(0);
    let _ = emit_fib(Fib {
        hook: Hook::Fib6TableLookup,
        table: read_at(table, off.fib6_table_id).unwrap_or(0),
        flow: ctx.arg(3),
        nhc: if nh == 0 {
            0
        } else {
            nh + off.fib6_nh_common as u64
        },
        err: 0,
        net: ctx.arg(0),
        route_type: read_at(res, off.fib6_result_type).unwrap_or(0),
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

/// The first bytes of a packet from its network header on, read once per event: the filter
/// tests them and the event carries them.
struct Header {
    /// Per-CPU scratch (the BPF stack is too small to hold it next to the filter's state).
    bytes: *mut [u8; HEADER_BYTES],
    /// How many of `bytes` are packet data; `u16::MAX` until read.
    len: u16,
}

/// Reads up to [`HEADER_BYTES`] of `skb`'s linear data from its network header on.
#[inline(always)]
fn read_header(off: &KernelOffsets, skb: u64, hook: Hook, l3: L3, dst: &mut Header) {
    // On the way in the link-layer header has been pulled: data is at the network header,
    // which the kernel has not (re)set yet. Elsewhere the network header offset is valid.
    let data: u64 = read_at(skb, off.skb_data).unwrap_or(0);
    // Only the linear part (len - data_len bytes from data) is contiguous in memory.
    let data_len: u32 = read_at(skb, off.skb_data_len).unwrap_or(0);
    let linear = l3.len.saturating_sub(data_len);
    let l3 = if hook.is_receive() {
        data
    } else {
        l3.network_header
    };
    // Bytes of linear packet data from l3 on.
    let avail = if l3 == 0 {
        0
    } else if l3 >= data {
        linear.saturating_sub((l3 - data) as u32)
    } else {
        linear + (data - l3) as u32
    };
    // SAFETY: `bytes` is this CPU's scratch slot; programs do not nest on one CPU for these
    // tracepoints while the slot is in use (a nested run would only garble its own event).
    let copied = read_bytes(l3, unsafe { &mut *dst.bytes });
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
    /// its headers).
    #[inline(always)]
    fn read(off: &KernelOffsets, skb: u64) -> Result<Self, i32> {
        let len: u32 = read_at(skb, off.skb_len)?;
        let protocol: u16 = u16::from_be(read_at(skb, off.skb_protocol)?);
        let head: u64 = read_at(skb, off.skb_head)?;
        let nh: u16 = read_at(skb, off.skb_network_header)?;
        // The kernel marks an unset header offset with (u16)~0.
        let network_header = if nh == u16::MAX || head == 0 {
            0
        } else {
            head + nh as u64
        };
        Ok(Self {
            len,
            protocol,
            network_header,
        })
    }
}

/// Whether a packet at `hook` is reported: it passes the load-time filters and the filter
/// expression, or it is the free of an skb that passed them earlier. Keeps [`TRACE_SKBS`]
/// up to date. Reads the header into `hdr` when the expression needs it (`hdr.len` stays
/// `u16::MAX` otherwise).
///
/// Runs on every hook hit before anything else is read, and reads only what each test needs,
/// cheapest first: the mark (one read), the device's ifindex and namespace (three), then the
/// headers (five reads and a copy) for the expression. A packet the filters reject costs no
/// more than that (plus, on a free, the lookup of [`TRACE_SKBS`]).
///
/// A function of its own (a BPF subprogram): inlined, its filter state and the caller's
/// event state together exceeded the stack of the qdisc hooks.
#[inline(never)]
fn wanted(off: &KernelOffsets, skb: u64, hook: Hook, dev: u64, hdr: &mut Header) -> bool {
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
    let mut pass = mark_on == 0
        || read_at::<u32>(skb, off.skb_mark).is_ok_and(|m| m == PKTPATH_FILTER_MARK.load());
    if pass && (netns != 0 || ifindex != 0) {
        let dev = if dev != 0 {
            dev
        } else {
            read_at(skb, off.skb_dev).unwrap_or(0)
        };
        let (ix, ns) = read_dev(off, dev).unwrap_or((0, 0));
        pass = (netns == 0 || ns == netns) && (ifindex == 0 || ix == ifindex);
    }
    if pass && let Some(prog) = prog {
        pass = match L3::read(off, skb) {
            Ok(l3) => {
                read_header(off, skb, hook, l3, hdr);
                // The verifier must see len <= HEADER_BYTES on the very register the parser
                // compares indexes with; read it back opaquely so LLVM cannot fold the check
                // into earlier ones it was derived from (the verifier loses those bounds).
                // SAFETY: reads a local.
                let len = unsafe { core::ptr::read_volatile(&hdr.len) } as usize;
                let len = if len > HEADER_BYTES { 0 } else { len };
                // SAFETY: see `read_header`.
                let key = key_from_l3(unsafe { &*hdr.bytes }, len, l3.protocol);
                pktpath_ebpf::filter::eval(prog, &key)
            }
            Err(_) => false,
        };
    }
    if hook.ends_skb() {
        // SAFETY: the value is only tested for presence, never read through.
        let tracked = unsafe { TRACE_SKBS.get(skb) }.is_some();
        if tracked {
            let _ = TRACE_SKBS.remove(skb);
        }
        pass || tracked
    } else {
        if pass {
            let _ = TRACE_SKBS.insert(skb, 1, 0);
        }
        pass
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
    let off = PKTPATH_KERNEL_OFFSETS.load();
    if off.magic != pktpath_common::kernel::KERNEL_OFFSETS_MAGIC || skb == 0 {
        return Err(-1);
    }
    if hook.is_receive()
        && PKTPATH_FIB_ON.load() != 0
        && let Some(slot) = TRACE_RX_NETNS.get_ptr_mut(0)
    {
        let dev = if dev != 0 {
            dev
        } else {
            read_at(skb, off.skb_dev).unwrap_or(0)
        };
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot = read_dev(&off, dev).map_or(0, |(_, ns)| ns) };
    }
    let mut hdr = Header {
        bytes: TRACE_SCRATCH.get_ptr_mut(0).ok_or(-1)?,
        len: u16::MAX,
    };
    let pass = wanted(&off, skb, hook, dev, &mut hdr);
    if hook.is_receive()
        && PKTPATH_FIB_ON.load() != 0
        && let Some(slot) = TRACE_RX_PASS.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot = u32::from(pass) };
    }
    if !pass {
        return Ok(());
    }
    // Only now, for a packet that is reported: all the rest.
    let info = read_skb(&off, skb, dev)?;
    if hdr.len == u16::MAX {
        read_header(&off, skb, hook, L3::of(&info), &mut hdr);
    }
    let Some(mut entry) = reserve::<TraceEvent>() else {
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer record of the right size; every field
    // is written before submit.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).skb_addr = skb;
        (*ev).location = location;
        (*ev).netns = info.netns;
        (*ev).ifindex = info.ifindex;
        (*ev).len = info.len;
        (*ev).mark = info.mark;
        (*ev).drop_reason = drop_reason;
        (*ev).qdisc_handle = 0;
        (*ev).qdisc_kind = [0; 16];
        if qdisc != 0 {
            (*ev).qdisc_handle = read_at(qdisc, off.qdisc_handle).unwrap_or(0);
            let ops: u64 = read_at(qdisc, off.qdisc_ops).unwrap_or(0);
            if ops != 0 {
                read_bytes(ops + off.qdisc_ops_id as u64, &mut (*ev).qdisc_kind);
            }
        }
        (*ev).hook = hook as u16;
        (*ev).protocol = info.protocol;
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        (*ev).ifname = [0; 16];
        read_ifname(&off, info.dev, &mut (*ev).ifname);
        (*ev).header = *hdr.bytes;
        (*ev).header_len = hdr.len;
    }
    entry.submit(0);
    Ok(())
}

/// The kernel's loopback ifindex, which output route lookups carry as their input device.
const LOOPBACK_IFINDEX: u32 = 1;

/// The network namespace (inode) of the task running the program.
#[inline(always)]
fn task_netns(off: &KernelOffsets) -> u32 {
    // SAFETY: returns the current task's address; only read through bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let nsproxy: u64 = read_at(task, off.task_struct_nsproxy).unwrap_or(0);
    if nsproxy == 0 {
        return 0;
    }
    let net: u64 = read_at(nsproxy, off.nsproxy_net_ns).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    read_at(net, off.net_ns_inum).unwrap_or(0)
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
    let off = PKTPATH_KERNEL_OFFSETS.load();
    if off.magic != pktpath_common::kernel::KERNEL_OFFSETS_MAGIC || f.flow == 0 {
        return Err(-1);
    }
    let v6 = f.hook == Hook::Fib6TableLookup;
    let fl = f.flow;
    let iif: u32 = read_at(fl, off.flowi_iif)?;
    let oif: u32 = read_at(fl, off.flowi_oif)?;
    let mark: u32 = read_at(fl, off.flowi_mark)?;
    let proto: u8 = read_at(fl, off.flowi_proto)?;
    let (src_off, dst_off, uli_off) = if v6 {
        (off.flowi6_saddr, off.flowi6_daddr, off.flowi6_uli)
    } else {
        (off.flowi4_saddr, off.flowi4_daddr, off.flowi4_uli)
    };
    let uli: [u8; 4] = read_at(fl, uli_off)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if v6 {
        src = read_at(fl, src_off)?;
        dst = read_at(fl, dst_off)?;
    } else {
        let s: [u8; 4] = read_at(fl, src_off)?;
        let d: [u8; 4] = read_at(fl, dst_off)?;
        src[..4].copy_from_slice(&s);
        dst[..4].copy_from_slice(&d);
    }
    let dev: u64 = if f.nhc != 0 {
        read_at(f.nhc, off.fib_nh_common_dev).unwrap_or(0)
    } else {
        0
    };
    let (out_ifindex, dev_netns) = read_dev(&off, dev).unwrap_or((0, 0));
    let netns = if f.net != 0 {
        read_at(f.net, off.net_ns_inum).unwrap_or(0)
    } else if dev_netns != 0 {
        dev_netns
    } else if iif == LOOPBACK_IFINDEX {
        // An output lookup (the kernel gives those the loopback device as input) runs in
        // the sending task, in its namespace.
        task_netns(&off)
    } else {
        // An input lookup runs right after its packet's receive hooks on this CPU.
        TRACE_RX_NETNS.get(0).copied().unwrap_or(0)
    };

    let want_ns = PKTPATH_FILTER_NETNS.load();
    let want_if = PKTPATH_FILTER_IFINDEX.load();
    if (want_ns != 0 && netns != want_ns)
        || (want_if != 0 && iif != want_if && oif != want_if && out_ifindex != want_if)
        || (PKTPATH_FILTER_MARK_ON.load() != 0 && mark != PKTPATH_FILTER_MARK.load())
    {
        return Ok(());
    }
    // A flow without a protocol (the input route lookup's, unless policy rules need one)
    // cannot be judged by protocol or port tests: an input lookup follows the verdict on the
    // packet received last on this CPU (its own); an output one passes. User space keeps
    // either only when it joins the journey of a packet that passed.
    if PKTPATH_FILTER_EXPR_ON.load() != 0
        && proto == 0
        && iif != LOOPBACK_IFINDEX
        && TRACE_RX_PASS.get(0).copied().unwrap_or(1) == 0
    {
        return Ok(());
    }
    if PKTPATH_FILTER_EXPR_ON.load() != 0
        && proto != 0
        && let Some(prog) = PKTPATH_FILTER.get(0).filter(|p| p.len != 0)
    {
        let mut key = PacketKey {
            ethertype: if v6 { ETH_P_IPV6 } else { ETH_P_IP },
            ip_proto: proto,
            flags: KEY_IP | if v6 { KEY_ADDR_V6 } else { KEY_ADDR_V4 },
            ..PacketKey::default()
        };
        if v6 {
            key.src = src;
            key.dst = dst;
        } else {
            // The key's IPv4-mapped form, ::ffff:a.b.c.d.
            key.src[10] = 0xff;
            key.src[11] = 0xff;
            key.dst[10] = 0xff;
            key.dst[11] = 0xff;
            key.src[12..].copy_from_slice(&src[..4]);
            key.dst[12..].copy_from_slice(&dst[..4]);
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
        (*ev).gw = [0; 16];
        (*ev).out_ifname = [0; 16];
        if f.nhc != 0 {
            let gw_family: u8 = read_at(f.nhc, off.fib_nh_common_gw_family).unwrap_or(0);
            (*ev).gw_family = gw_family;
            if gw_family != 0 {
                read_bytes(f.nhc + off.fib_nh_common_gw as u64, &mut (*ev).gw);
            }
        }
        read_ifname(&off, dev, &mut (*ev).out_ifname);
    }
    entry.submit(0);
    Ok(())
}
