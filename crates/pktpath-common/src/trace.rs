//! Tracer wire format: the compact record each hook writes into the ring buffer, the hooks
//! that write it, and the names of the tracer's maps and load-time filter globals.

use crate::kernel::IFNAMSIZ;

/// Name of the tracer's ring buffer map.
pub const MAP_EVENTS: &str = "TRACE_EVENTS";
/// Name of the per-CPU array (one `u64` slot) counting failed ring buffer reservations.
pub const MAP_LOST: &str = "TRACE_LOST";
/// Name of the per-CPU array (one `u64` slot) counting events the hooks produced (passed the
/// filters), whether or not the ring buffer had room: received + lost = seen.
pub const MAP_SEEN: &str = "TRACE_SEEN";
/// Name of the tracer's `.bss` map: its one value is the global (`u64`) counting the skbs
/// its table of tracked skbs may hold, 0 once every tracked packet's free was seen.
pub const MAP_TRACKED: &str = ".bss";
/// Name of the tracer's array with one slot per possible CPU (what each CPU keeps from one
/// hook hit to the next); the loader sizes it to the CPUs.
pub const MAP_CPU: &str = "TRACE_CPU";
/// Bytes of packet header copied into each event, starting at the network header: enough
/// for every tunnel user space follows (`identity`), over IPv6 as over IPv4, to show the
/// carried packet's IP header and the first 8 bytes of its transport header. The longest,
/// ip6gretap with checksum, key and sequence number and its encapsulation limit, carrying
/// IPv6, needs 126 (40 + 8 + 16 + 14 + 40 + 8); VXLAN over IPv6 carrying IPv4 98.
pub const HEADER_BYTES: usize = 128;

/// Global (`u32`): only packets whose device is in the network namespace with this inode
/// are reported; 0 reports every namespace.
pub const FILTER_NETNS: &str = "PKTPATH_FILTER_NETNS";
/// Global (`u32`): only packets whose device has this ifindex are reported; 0 = any.
pub const FILTER_IFINDEX: &str = "PKTPATH_FILTER_IFINDEX";
/// Global (`u32`): the `skb->mark` to match when [`FILTER_MARK_ON`] is 1.
pub const FILTER_MARK: &str = "PKTPATH_FILTER_MARK";
/// Global (`u32`): 1 to report only packets whose mark equals [`FILTER_MARK`].
pub const FILTER_MARK_ON: &str = "PKTPATH_FILTER_MARK_ON";
/// Global (`u32`): 1 when a filter expression is installed in the filter map. With 0 the
/// verifier, which knows read-only globals, drops the evaluator from every hook: a trace
/// without an expression loads ten times faster.
pub const FILTER_EXPR_ON: &str = "PKTPATH_FILTER_EXPR_ON";
/// Global: 1 when the filter expression is the only filter (no namespace, interface or
/// mark): a packet's remembered verdict then decides it alone, which each hook hit tests
/// with this one load instead of four.
pub const FILTER_EXPR_ALONE: &str = "PKTPATH_FILTER_EXPR_ALONE";
/// Global ([`V4Guard`](crate::guard::V4Guard)): the filter expression's guard for IPv4
/// packets (addresses, protocol, ports); off without an expression, or when it has none.
pub const FILTER_V4_GUARD: &str = "PKTPATH_FILTER_V4_GUARD";
/// Global: 1 when a routing lookup hook and `netif_receive_skb` are attached: that hook
/// then notes each packet's verdict and namespace for the input lookups that follow it.
pub const FIB_ON: &str = "PKTPATH_FIB_ON";
/// Global: 1 when a packet the filter expression matched once is reported at every later
/// hook until freed (tracking; `--no-track` sets 0).
pub const TRACK: &str = "PKTPATH_TRACK";

/// Which kernel hook produced an event. Every hook is a BTF tracepoint; all but the two
/// routing lookups (which see a flow, not a packet, and write a [`FibEvent`]) carry a typed
/// skb and write a [`TraceEvent`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    NetifReceiveSkb = 1,
    NetDevXmit = 2,
    NetifRx = 3,
    NapiGroReceiveEntry = 4,
    NetDevQueue = 5,
    NetDevStartXmit = 6,
    KfreeSkb = 7,
    ConsumeSkb = 8,
    QdiscEnqueue = 9,
    QdiscDequeue = 10,
    FibTableLookup = 11,
    Fib6TableLookup = 12,
    SkDataReady = 13,
}

impl Hook {
    /// Every hook, in the order a received-then-forwarded packet would meet them.
    pub const ALL: [Hook; 13] = [
        Self::NapiGroReceiveEntry,
        Self::NetifRx,
        Self::NetifReceiveSkb,
        Self::FibTableLookup,
        Self::Fib6TableLookup,
        Self::NetDevQueue,
        Self::QdiscEnqueue,
        Self::QdiscDequeue,
        Self::NetDevStartXmit,
        Self::NetDevXmit,
        Self::SkDataReady,
        Self::KfreeSkb,
        Self::ConsumeSkb,
    ];

    /// The hooks attached when none are named: all but the qdisc pair, which doubles the
    /// events of every packet leaving through a device with a queue (most real NICs) and
    /// adds to start-up; `--hooks all` or naming them adds them.
    pub const DEFAULT: [Hook; 11] = [
        Self::NapiGroReceiveEntry,
        Self::NetifRx,
        Self::NetifReceiveSkb,
        Self::FibTableLookup,
        Self::Fib6TableLookup,
        Self::NetDevQueue,
        Self::NetDevStartXmit,
        Self::NetDevXmit,
        Self::SkDataReady,
        Self::KfreeSkb,
        Self::ConsumeSkb,
    ];

    /// The hooks of `--hooks hops`: one where each device receives a packet, one where it
    /// transmits it, and the frees: every hop of a journey with its latency, at about half
    /// the default hooks' cost to forwarding (no route lookups, no intermediate receive
    /// and transmit steps). `sk_data_ready`, which tells deliveries from drops, runs only
    /// when a socket is handed data, never on the forwarding path.
    pub const HOPS: [Hook; 5] = [
        Self::NetifReceiveSkb,
        Self::NetDevStartXmit,
        Self::SkDataReady,
        Self::KfreeSkb,
        Self::ConsumeSkb,
    ];

    /// Decodes a hook number from the wire.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::NetifReceiveSkb),
            2 => Some(Self::NetDevXmit),
            3 => Some(Self::NetifRx),
            4 => Some(Self::NapiGroReceiveEntry),
            5 => Some(Self::NetDevQueue),
            6 => Some(Self::NetDevStartXmit),
            7 => Some(Self::KfreeSkb),
            8 => Some(Self::ConsumeSkb),
            9 => Some(Self::QdiscEnqueue),
            10 => Some(Self::QdiscDequeue),
            11 => Some(Self::FibTableLookup),
            12 => Some(Self::Fib6TableLookup),
            13 => Some(Self::SkDataReady),
            _ => None,
        }
    }

    /// The hook named `name` (as [`Hook::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The tracepoint name, as the kernel spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetifReceiveSkb => "netif_receive_skb",
            Self::NetDevXmit => "net_dev_xmit",
            Self::NetifRx => "netif_rx",
            Self::NapiGroReceiveEntry => "napi_gro_receive_entry",
            Self::NetDevQueue => "net_dev_queue",
            Self::NetDevStartXmit => "net_dev_start_xmit",
            Self::KfreeSkb => "kfree_skb",
            Self::ConsumeSkb => "consume_skb",
            Self::QdiscEnqueue => "qdisc_enqueue",
            Self::QdiscDequeue => "qdisc_dequeue",
            Self::FibTableLookup => "fib_table_lookup",
            Self::Fib6TableLookup => "fib6_table_lookup",
            Self::SkDataReady => "sk_data_ready",
        }
    }

    /// The tracepoint's subsystem (`net`, `skb`, `qdisc`, `fib`, `fib6` or `sock`).
    pub fn subsystem(self) -> &'static str {
        match self {
            Self::KfreeSkb | Self::ConsumeSkb => "skb",
            Self::QdiscEnqueue | Self::QdiscDequeue => "qdisc",
            Self::FibTableLookup => "fib",
            Self::Fib6TableLookup => "fib6",
            Self::SkDataReady => "sock",
            _ => "net",
        }
    }

    /// Whether the hook is a routing table lookup (a [`FibEvent`], no skb).
    #[inline(always)]
    pub fn is_fib(self) -> bool {
        matches!(self, Self::FibTableLookup | Self::Fib6TableLookup)
    }

    /// The name of the program in the tracer object that implements this hook.
    pub fn program(self) -> &'static str {
        match self {
            Self::NetifReceiveSkb => "trace_netif_receive_skb",
            Self::NetDevXmit => "trace_net_dev_xmit",
            Self::NetifRx => "trace_netif_rx",
            Self::NapiGroReceiveEntry => "trace_napi_gro_receive_entry",
            Self::NetDevQueue => "trace_net_dev_queue",
            Self::NetDevStartXmit => "trace_net_dev_start_xmit",
            Self::KfreeSkb => "trace_kfree_skb",
            Self::ConsumeSkb => "trace_consume_skb",
            Self::QdiscEnqueue => "trace_qdisc_enqueue",
            Self::QdiscDequeue => "trace_qdisc_dequeue",
            Self::FibTableLookup => "trace_fib_table_lookup",
            Self::Fib6TableLookup => "trace_fib6_table_lookup",
            Self::SkDataReady => "trace_sk_data_ready",
        }
    }

    /// Whether the hook sees packets on their way in, after the link-layer header was pulled
    /// (`skb->data` is at the network header).
    #[inline(always)]
    pub fn is_receive(self) -> bool {
        matches!(
            self,
            Self::NetifReceiveSkb | Self::NetifRx | Self::NapiGroReceiveEntry
        )
    }

    /// Whether the hook marks the end of the skb's life (its address may be reused after).
    #[inline(always)]
    pub fn ends_skb(self) -> bool {
        matches!(self, Self::KfreeSkb | Self::ConsumeSkb)
    }
}

/// The first field of every record the tracer writes into its ring buffer: what the record
/// is, so that user space decodes it by its kind, never by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead {
    /// [`RECORD_SKB`] or [`RECORD_FIB`].
    pub kind: u32,
    pub _pad: u32,
}
crate::assert_size!(RecordHead, 8);
crate::impl_pod!(RecordHead);

/// [`RecordHead::kind`] of a [`TraceEvent`].
pub const RECORD_SKB: u32 = 1;
/// [`RecordHead::kind`] of a [`FibEvent`].
pub const RECORD_FIB: u32 = 2;

impl RecordHead {
    /// The head of a [`TraceEvent`].
    pub const SKB: Self = Self {
        kind: RECORD_SKB,
        _pad: 0,
    };
    /// The head of a [`FibEvent`].
    pub const FIB: Self = Self {
        kind: RECORD_FIB,
        _pad: 0,
    };
}

/// One event as written by a hook into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// [`RecordHead::SKB`].
    pub head: RecordHead,
    /// `bpf_ktime_get_ns()` at the hook.
    pub ts_ns: u64,
    /// Kernel address of the `sk_buff`: with `ts_ns` of its first sighting, the packet id.
    pub skb_addr: u64,
    /// `kfree_skb`/`consume_skb`: the kernel code address that freed the skb; else 0.
    pub location: u64,
    /// `skb->head`, the packet's data buffer: clones of an skb share it (a capture's copy,
    /// a raw socket's), so user space joins them to the journey of the skb they copy.
    pub buffer: u64,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    pub ifindex: u32,
    /// `skb->len` at the hook.
    pub len: u32,
    /// `skb->mark`.
    pub mark: u32,
    /// `kfree_skb`: the kernel's `enum skb_drop_reason` value; else 0.
    pub drop_reason: u32,
    /// `qdisc_*`: the qdisc's handle (major:minor in the high:low 16 bits); else 0.
    pub qdisc_handle: u32,
    /// [`EVENT_DELIVERED`] and other flags; 0 when none applies.
    pub flags: u32,
    pub _pad: u32,
    /// One of [`Hook`].
    pub hook: u16,
    /// `skb->protocol`, in host byte order (an EtherType).
    pub protocol: u16,
    /// How many bytes of `header` are valid.
    pub header_len: u16,
    pub cpu: u16,
    pub ifname: [u8; IFNAMSIZ],
    /// Packet bytes from the network header on.
    pub header: [u8; HEADER_BYTES],
    /// `qdisc_*`: the qdisc's kind (`fq_codel`, `pfifo`, ...), NUL padded; else zero.
    pub qdisc_kind: [u8; QDISC_KIND_LEN],
}
crate::assert_size!(
    TraceEvent,
    8 + 8 * 4 + 4 * 8 + 2 * 4 + IFNAMSIZ + HEADER_BYTES + QDISC_KIND_LEN
);
crate::impl_pod!(TraceEvent);
// The hooks copy and clear these arrays 8 bytes at a time.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(TraceEvent, ifname) % 8 == 0);
    assert!(offset_of!(TraceEvent, header) % 8 == 0);
    assert!(offset_of!(TraceEvent, qdisc_kind) % 8 == 0);
};

/// [`TraceEvent::flags`] of a `kfree_skb` whose packet reached a socket: a clone of it was
/// queued to an IP socket (`sk_data_ready` saw it) before the kernel freed the original with
/// a drop reason (a raw socket's copy of an ICMP echo reply, freed by `ping_rcv` as
/// `NO_SOCKET` when no ping socket wants it).
pub const EVENT_DELIVERED: u32 = 1;

/// Name of the tracer's LRU hash of data buffers (`sk_buff.head`) that a socket was handed
/// a clone of (see [`EVENT_DELIVERED`]).
pub const MAP_DELIVERED: &str = "TRACE_DELIVERED";

/// Length of a qdisc kind name (`Qdisc_ops.id`).
pub const QDISC_KIND_LEN: usize = 16;

/// `FibEvent::family` of an IPv4 lookup.
pub const FIB_FAMILY_V4: u8 = 4;
/// `FibEvent::family` of an IPv6 lookup.
pub const FIB_FAMILY_V6: u8 = 6;

/// One routing table lookup (`fib:fib_table_lookup`, `fib6:fib6_table_lookup`) as written
/// into the ring buffer: the flow looked up and the result. No skb: user space attaches it
/// to a packet's journey by the flow's header fields and time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibEvent {
    /// [`RecordHead::FIB`].
    pub head: RecordHead,
    pub ts_ns: u64,
    /// Inode of the network namespace of the lookup. IPv6: the lookup's own. IPv4: the
    /// result device's; when the lookup found nothing, for an output lookup the sending
    /// task's, for an input lookup that of the packet last received on the same CPU (the
    /// lookup runs in its receive path).
    pub netns: u32,
    /// The routing table id (254 main, 255 local, ...).
    pub table: u32,
    /// IPv4: `fib_table_lookup`'s return (0, or a negative errno: -EAGAIN when this table
    /// has no match and the next rule is tried, -ENETUNREACH, ...). IPv6: 0.
    pub err: i32,
    /// The flow's input interface (ifindex; 0 for locally generated traffic).
    pub iif: u32,
    /// The flow's output interface, when the caller fixed it (ifindex; else 0).
    pub oif: u32,
    /// The flow's mark.
    pub mark: u32,
    /// The result's output device (ifindex; 0 when none).
    pub out_ifindex: u32,
    /// One of [`Hook`].
    pub hook: u16,
    pub cpu: u16,
    /// The flow's transport protocol.
    pub proto: u8,
    /// [`FIB_FAMILY_V4`] or [`FIB_FAMILY_V6`].
    pub family: u8,
    /// The result's gateway family (`AF_INET` 2, `AF_INET6` 10; 0 when directly connected).
    pub gw_family: u8,
    /// IPv6: the result's route type (`RTN_UNICAST` 1, `RTN_UNREACHABLE` 7, ...); IPv4: 0.
    pub route_type: u8,
    /// The flow's `uli` bytes as the kernel holds them: TCP/UDP/SCTP destination then
    /// source port (network order); ICMP type and code.
    pub uli: [u8; 4],
    /// Flow addresses: 4 bytes for IPv4, 16 for IPv6 (network order, zero padded).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The result's gateway (as `gw_family` says), zero padded.
    pub gw: [u8; 16],
    /// The result's output device name.
    pub out_ifname: [u8; IFNAMSIZ],
}
crate::assert_size!(FibEvent, 8 + 8 + 4 * 7 + 2 * 2 + 4 + 4 + 16 * 3 + IFNAMSIZ);
crate::impl_pod!(FibEvent);
// The hook clears these 8 bytes at a time.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(FibEvent, gw) % 8 == 0);
    assert!(offset_of!(FibEvent, out_ifname) % 8 == 0);
};
