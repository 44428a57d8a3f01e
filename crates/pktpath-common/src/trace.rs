//! Tracer wire format: the compact record each hook writes into the ring buffer.

use crate::kernel::IFNAMSIZ;

/// Name of the tracer's ring buffer map.
pub const MAP_EVENTS: &str = "TRACE_EVENTS";
/// Name of the per-CPU array (one `u64` slot) counting failed ring buffer reservations.
pub const MAP_LOST: &str = "TRACE_LOST";
/// Bytes of packet header copied into each event, starting at the network header.
pub const HEADER_BYTES: usize = 96;

/// Which kernel hook produced an event.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    NetifReceiveSkb = 1,
    NetDevXmit = 2,
}

impl Hook {
    /// Decodes a hook number from the wire.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::NetifReceiveSkb),
            2 => Some(Self::NetDevXmit),
            _ => None,
        }
    }

    /// The tracepoint name, as the kernel spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetifReceiveSkb => "netif_receive_skb",
            Self::NetDevXmit => "net_dev_xmit",
        }
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
    /// Inode number of the device's network namespace.
    pub netns: u32,
    pub ifindex: u32,
    /// `skb->len` at the hook.
    pub len: u32,
    /// `skb->mark`.
    pub mark: u32,
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
crate::assert_size!(TraceEvent, 8 + 8 + 4 * 4 + 2 * 4 + IFNAMSIZ + HEADER_BYTES);
crate::impl_pod!(TraceEvent);
