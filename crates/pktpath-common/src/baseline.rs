//! The baseline programs the data path is measured against (benches `classify` and
//! `forward`): the floor, a program that only rewrites the Ethernet addresses and
//! redirects (at TC and at XDP), and the naive classifier, a linear scan over the policies
//! in priority order.

/// The floor program at TC: rewrites the MAC addresses and redirects to `FLOOR_IFINDEX`.
pub const PROG_FLOOR: &str = "pktpath_floor";
/// The same at XDP, in the same object.
pub const PROG_XDP_FLOOR: &str = "pktpath_xdp_floor";
/// Load-time global of the floor programs: the interface they redirect to.
pub const GLOBAL_FLOOR_IFINDEX: &str = "FLOOR_IFINDEX";
/// The destination MAC the floor programs write.
pub const FLOOR_DMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The source MAC the floor programs write.
pub const FLOOR_SMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The linear scan program: parses like the data path, then checks the rules of
/// [`MAP_LINEAR_RULES`] one after the other (through `bpf_loop`); the first match wins.
pub const PROG_LINEAR: &str = "pktpath_linear";
/// Array of `route::RuleMatch`: the IPv4 rules best priority first, then the IPv6 ones.
pub const MAP_LINEAR_RULES: &str = "LINEAR_RULES";
/// Array of two u32: how many IPv4 and IPv6 rules [`MAP_LINEAR_RULES`] holds.
pub const MAP_LINEAR_COUNT: &str = "LINEAR_COUNT";
/// Capacity of [`MAP_LINEAR_RULES`] (a policy without a family takes two entries).
pub const MAX_LINEAR_RULES: u32 = 1 << 18;
