//! Data path (TC) map types: per-interface counters.

/// Name of the per-CPU array of [`IfaceCounters`] indexed by ifindex, for ifindexes below
/// [`MAX_IFACES`].
pub const MAP_IFACE_STATS: &str = "IFACE_STATS";
/// Name of the per-CPU hash of [`IfaceCounters`] keyed by ifindex (`u32`), for the
/// ifindexes of [`MAX_IFACES`] and above (rare: an index lookup costs less than a hash's).
pub const MAP_IFACE_STATS_HIGH: &str = "IFACE_STATS_HIGH";
/// Name of the data path classifier program.
pub const PROG_DATAPATH: &str = "pktpath_tc";
/// Interfaces whose counters sit in the array (ifindex below this), and capacity of the
/// hash for the others.
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

// ---------------------------------------------------------------------------------------
// Policy classification: tuple space search with merged tuples, over double-buffered
// tables.
//
// User space compiles the policy set into a few "tuples" (masks: family, prefix lengths,
// protocol or not, exact ports or not, ...). Each policy lives in one tuple whose masks are
// no more specific than its own match, under the hash key its fields give once masked; the
// hash value is a small bucket of candidate policies (sorted by priority), each with its
// complete match. Per packet the program masks its fields with each tuple's masks, looks
// the key up, and checks the bucket's candidates: the cost is a few hash lookups and a few
// candidate checks, growing with neither the number of policies nor their variety.
// Tuples are sorted by the best priority they hold, so the search stops as soon as no
// later tuple can beat the match in hand.
//
// Two generations of tables exist; `RouteState::active` (ROUTE_STATE) says which one
// packets use. An apply fills the other generation, then flips that one word: each packet
// sees the old set or the new one, never a mix.
// ---------------------------------------------------------------------------------------

/// Most distinct match shapes one policy set may need.
pub const MAX_TUPLES: u32 = 32;
/// Table generations (double buffering).
pub const GENERATIONS: u32 = 2;
/// Capacity of the rule hash (both generations together).
pub const MAX_RULE_ENTRIES: u32 = 1 << 21;
/// Next hops the static configuration may name.
pub const MAX_NEXTHOPS: u32 = 256;
/// Policies with counters (counter slots).
pub const MAX_POLICY_SLOTS: u32 = 1 << 17;

/// Hash of [`ClassKeyV4`] to [`Bucket`]: the IPv4 entries.
pub const MAP_RULES_V4: &str = "ROUTE_RULES_V4";
/// Array of [`TupleMask`], index `gen * MAX_TUPLES + i`.
pub const MAP_TUPLES: &str = "ROUTE_TUPLES";
/// Hash of [`ClassKey`] to [`Bucket`]: the IPv6 entries.
pub const MAP_RULES: &str = "ROUTE_RULES";
/// Array of [`NextHop`] by index.
pub const MAP_NEXTHOPS: &str = "ROUTE_NEXTHOPS";
/// Array of one [`RouteState`].
pub const MAP_STATE: &str = "ROUTE_STATE";
/// Per-CPU array of [`PolicyCounters`] by slot.
pub const MAP_POLICY_STATS: &str = "POLICY_STATS";

/// Which generation packets use and how many tuples each generation has: the one entry
/// of ROUTE_STATE, read with a single lookup per packet.
///
/// User space changes one 32-bit word per update (a generation's tuple count while that
/// generation is inactive, then `active`), so a packet reading the entry while it is
/// written sees the old value or the new one of that word and the same values of the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteState {
    /// The active generation (0 or 1).
    pub active: u32,
    /// Tuples of each generation.
    pub tuples: [u32; GENERATIONS as usize],
    pub _pad: u32,
}
crate::assert_size!(RouteState, 16);
crate::impl_pod!(RouteState);

/// Address families, as stored in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// The packet fields policies match on, masked by a tuple; also the rule hash key.
/// IPv4 addresses sit in the first 4 bytes of `src`/`dst`, the rest zero.
/// Ports are 0 when the packet has none (not TCP/UDP/SCTP, or a non-first fragment); no
/// policy can match port 0, so such packets never match a port constraint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassKey {
    pub tuple: u8,
    pub generation: u8,
    pub family: u8,
    pub proto: u8,
    pub dscp: u8,
    pub _pad: [u8; 1],
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub iif: u32,
    pub mark: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
crate::assert_size!(ClassKey, 52);
crate::impl_pod!(ClassKey);

/// The hash key of an IPv4 entry: a [`ClassKey`] without the family and the twelve
/// always-zero address bytes. The kernel hashes and compares a lookup's whole key byte by
/// byte, so 24 bytes instead of 52 is most of an IPv4 lookup's cost saved.
/// `src` and `dst` hold the address bytes in packet order (`u32::from_ne_bytes`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassKeyV4 {
    pub tuple: u8,
    pub generation: u8,
    pub proto: u8,
    pub dscp: u8,
    pub sport: u16,
    pub dport: u16,
    pub iif: u32,
    pub mark: u32,
    pub src: u32,
    pub dst: u32,
}
crate::assert_size!(ClassKeyV4, 24);
crate::impl_pod!(ClassKeyV4);

impl ClassKey {
    /// The IPv4 key of an IPv4 entry (`family` is [`FAMILY_V4`]).
    pub fn v4(&self) -> ClassKeyV4 {
        let word = |a: &[u8; 16]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        ClassKeyV4 {
            tuple: self.tuple,
            generation: self.generation,
            proto: self.proto,
            dscp: self.dscp,
            sport: self.sport,
            dport: self.dport,
            iif: self.iif,
            mark: self.mark,
            src: word(&self.src),
            dst: word(&self.dst),
        }
    }
}

/// One match shape: the masks applied to a packet's fields before the hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleMask {
    pub family: u8,
    pub proto: u8,
    pub dscp: u8,
    pub _pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub iif: u32,
    pub mark: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The best (lowest) priority of the policies in this tuple.
    pub min_priority: u32,
    pub _pad2: u32,
}
crate::assert_size!(TupleMask, 56);
crate::impl_pod!(TupleMask);

/// What a matching policy does.
pub const ACTION_PASS: u8 = 0;
pub const ACTION_DROP: u8 = 1;
/// Forward to `RuleValue::nexthop`.
pub const ACTION_FORWARD: u8 = 2;
/// Look up routing table `RuleValue::table` (bpf_fib_lookup) and forward.
pub const ACTION_TABLE: u8 = 3;

/// `RuleValue::flags`: also set the packet mark / DSCP.
pub const RULE_SET_MARK: u8 = 1;
pub const RULE_SET_DSCP: u8 = 2;

/// `RuleMatch::flags`: which optional fields the policy constrains.
pub const MATCH_PROTO: u8 = 1;
pub const MATCH_DSCP: u8 = 2;
pub const MATCH_IIF: u8 = 4;

/// Candidates one bucket holds.
pub const BUCKET_RULES: usize = 8;

/// The policy a rule hash entry belongs to, and its action.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub priority: u32,
    /// Counter slot of the policy (stable across applies).
    pub slot: u32,
    pub action: u8,
    pub flags: u8,
    pub dscp: u8,
    pub _pad: u8,
    pub nexthop: u32,
    pub table: u32,
    pub mark: u32,
}
crate::assert_size!(RuleValue, 24);
crate::impl_pod!(RuleValue);

/// One policy's complete match, checked against a packet found in its bucket.
/// Port ranges are inclusive; an unconstrained port is 0..=65535.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleMatch {
    pub family: u8,
    pub proto: u8,
    pub dscp: u8,
    /// MATCH_* bits.
    pub flags: u8,
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    pub iif: u32,
    pub mark_value: u32,
    pub mark_mask: u32,
    pub src: [u8; 16],
    pub src_mask: [u8; 16],
    pub dst: [u8; 16],
    pub dst_mask: [u8; 16],
    pub value: RuleValue,
}
crate::assert_size!(RuleMatch, 112);
crate::impl_pod!(RuleMatch);

/// The candidates under one hash key, best priority first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub count: u32,
    pub _pad: u32,
    pub rules: [RuleMatch; BUCKET_RULES],
}
crate::assert_size!(Bucket, 8 + 112 * BUCKET_RULES);
crate::impl_pod!(Bucket);

impl Default for Bucket {
    fn default() -> Self {
        Self {
            count: 0,
            _pad: 0,
            rules: [RuleMatch::default(); BUCKET_RULES],
        }
    }
}

/// A next hop: egress interface, gateway, and optionally fixed MAC addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// FAMILY_V4 / FAMILY_V6 for a gateway, 0 for none (the destination is on-link).
    pub gw_family: u8,
    /// 1 when `dmac`/`smac` are fixed and the frame is rewritten and redirected directly.
    pub has_mac: u8,
    pub _pad: [u8; 2],
    pub gateway: [u8; 16],
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Egress MTU (bytes of L3 packet) when the set was applied; informational: the data
    /// path asks the kernel for the device's MTU per packet (bpf_check_mtu), so an MTU
    /// changed later counts, and packets that do not fit go to the stack.
    pub mtu: u32,
}
crate::assert_size!(NextHop, 40);
crate::impl_pod!(NextHop);

/// Per-policy, per-CPU counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    pub packets: u64,
    pub bytes: u64,
}
crate::assert_size!(PolicyCounters, 16);
crate::impl_pod!(PolicyCounters);

impl PolicyCounters {
    /// Adds another CPU's counters to these.
    pub fn accumulate(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

// ---------------------------------------------------------------------------------------
// The last decision, for `pktpath route get` (BPF_PROG_TEST_RUN on a synthesized frame).
// ---------------------------------------------------------------------------------------

/// Per-CPU array (one entry) of [`Decision`]: what the program did with the last packet it
/// saw on that CPU. A test run pins its thread to one CPU and reads that CPU's entry.
pub const MAP_DECISION: &str = "ROUTE_DECISION";

/// `Decision::outcome` values (how the interface counters counted the packet).
pub const OUTCOME_PASSED: u8 = 0;
pub const OUTCOME_FORWARDED: u8 = 1;
pub const OUTCOME_DROPPED: u8 = 2;
pub const OUTCOME_ERROR: u8 = 3;

/// `__sk_buff.cb[1..3]` of a `route get` test run, beside its nonce in `cb[0]`. A real
/// packet's control buffer holds whatever the layers before TC left there (the sender's IP
/// control block, for one): a nonzero `cb[0]` alone made the data path take a real packet
/// for a test run, write the test run's record and tell no tracer about it.
pub const GET_MAGIC: [u32; 2] = [0x7061_7468, 0x6765_7421]; // "path", "get!"

/// What the data path decided for one packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// `__sk_buff.cb[0]` of the packet: a test run sets a nonce there to recognise its own
    /// record.
    pub nonce: u32,
    /// 1 when a policy matched (the fields below are its rule), else 0.
    pub matched: u8,
    pub action: u8,
    /// One of `OUTCOME_*`.
    pub outcome: u8,
    pub _pad: u8,
    pub priority: u32,
    pub slot: u32,
    pub nexthop: u32,
    /// Interface the packet was redirected to (0 when not redirected).
    pub egress_ifindex: u32,
    /// The TC verdict returned (TC_ACT_*).
    pub verdict: i32,
}
crate::assert_size!(Decision, 28);
crate::impl_pod!(Decision);

/// Pinned map (ring buffer) through which the data path reports its decisions to
/// `pktpath trace`, while [`TAP_MAP`] says someone listens.
pub const TAP_EVENTS_MAP: &str = "ROUTE_TAP_EVENTS";
/// Pinned map (array, one `u32`): how many tracers listen to [`TAP_EVENTS_MAP`]; 0 (the
/// usual case) costs the data path one array read per packet.
pub const TAP_MAP: &str = "ROUTE_TAP";

/// One data-path decision as `pktpath trace` receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapEvent {
    /// `bpf_ktime_get_ns` when the program decided.
    pub ts_ns: u64,
    /// Kernel address of the `sk_buff` (the tracer's journeys are keyed by it).
    pub skb: u64,
    /// The interface the program ran on.
    pub ifindex: u32,
    /// `skb->len` when the program ran.
    pub len: u32,
    /// What it decided (`nonce` unused: 0).
    pub decision: Decision,
    pub _pad: u32,
}
crate::assert_size!(TapEvent, 56);
crate::impl_pod!(TapEvent);

/// What a decision did, by name: `forward`, `lookup_table`, `drop`, `pass` (also when no
/// policy matched).
pub fn action_name(matched: u8, action: u8) -> &'static str {
    match (matched, action) {
        (0, _) => "pass",
        (_, ACTION_FORWARD) => "forward",
        (_, ACTION_TABLE) => "lookup_table",
        (_, ACTION_DROP) => "drop",
        (_, ACTION_PASS) => "pass",
        _ => "unknown",
    }
}

/// How the packet left the program, by name (one of `OUTCOME_*`).
pub fn outcome_name(outcome: u8) -> &'static str {
    match outcome {
        OUTCOME_PASSED => "passed",
        OUTCOME_FORWARDED => "forwarded",
        OUTCOME_DROPPED => "dropped",
        _ => "error",
    }
}
