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
/// Bytes of packet header copied into each event, starting at the network header.
pub const HEADER_BYTES: usize = 96;

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

/// Which kernel hook produced an event. Every hook is a BTF tracepoint with a typed skb.
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
}

impl Hook {
    /// Every hook, in the order a received-then-forwarded packet would meet them.
    pub const ALL: [Hook; 8] = [
        Self::NapiGroReceiveEntry,
        Self::NetifRx,
        Self::NetifReceiveSkb,
        Self::NetDevQueue,
        Self::NetDevStartXmit,
        Self::NetDevXmit,
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
            _ => None,
        }
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
        }
    }

    /// The tracepoint's subsystem (`net` or `skb`).
    pub fn subsystem(self) -> &'static str {
        match self {
            Self::KfreeSkb | Self::ConsumeSkb => "skb",
            _ => "net",
        }
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

/// One event as written by a hook into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// `bpf_ktime_get_ns()` at the hook.
    pub ts_ns: u64,
    /// Kernel address of the `sk_buff`: with `ts_ns` of its first sighting, the packet id.
    pub skb_addr: u64,
    /// `kfree_skb`/`consume_skb`: the kernel code address that freed the skb; else 0.
    pub location: u64,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    pub ifindex: u32,
    /// `skb->len` at the hook.
    pub len: u32,
    /// `skb->mark`.
    pub mark: u32,
    /// `kfree_skb`: the kernel's `enum skb_drop_reason` value; else 0.
    pub drop_reason: u32,
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
}
crate::assert_size!(TraceEvent, 8 * 3 + 4 * 6 + 2 * 4 + IFNAMSIZ + HEADER_BYTES);
crate::impl_pod!(TraceEvent);
