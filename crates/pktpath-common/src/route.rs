//! Data path (TC) map types: per-interface counters.

/// Name of the per-CPU hash map of [`IfaceCounters`] keyed by ifindex (`u32`).
pub const MAP_IFACE_STATS: &str = "IFACE_STATS";
/// Name of the data path classifier program.
pub const PROG_DATAPATH: &str = "pktpath_tc";
/// Maximum number of interfaces with counters.
pub const MAX_IFACES: u32 = 1024;

/// Per-interface, per-CPU packet and byte counters kept by the data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Packets handed to the kernel stack unchanged.
    pub passed_packets: u64,
    pub passed_bytes: u64,
    /// Packets redirected by a policy.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Packets dropped by a policy.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Packets the program could not handle (malformed, helper failure); passed on.
    pub error_packets: u64,
    pub _reserved: u64,
}
crate::assert_size!(IfaceCounters, 64);
crate::impl_pod!(IfaceCounters);

impl IfaceCounters {
    /// Adds another CPU's counters to these.
    pub fn accumulate(&mut self, other: &Self) {
        self.passed_packets += other.passed_packets;
        self.passed_bytes += other.passed_bytes;
        self.forwarded_packets += other.forwarded_packets;
        self.forwarded_bytes += other.forwarded_bytes;
        self.dropped_packets += other.dropped_packets;
        self.dropped_bytes += other.dropped_bytes;
        self.error_packets += other.error_packets;
    }
}
