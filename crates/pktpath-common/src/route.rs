//! Data path (TC) map types: per-interface counters.

/// Name of the per-CPU array of [`IfaceCounters`] indexed by ifindex, for ifindexes below
/// [`MAX_IFACES`].
pub const MAP_IFACE_STATS: &str = "IFACE_STATS";
/// Name of the per-CPU hash of [`IfaceCounters`] keyed by ifindex (`u32`), for the
/// ifindexes of [`MAX_IFACES`] and above (rare: an index lookup costs less than a hash's).
pub const MAP_IFACE_STATS_HIGH: &str = "IFACE_STATS_HIGH";
/// Name of the data path classifier program (for kernels with `may_goto`, 6.9 or later).
pub const PROG_DATAPATH: &str = "pktpath_tc";
/// [`PROG_DATAPATH`] for older kernels: its classifier loops with `bpf_loop` (section
/// `classifier/old`, for `tc ... obj FILE sec classifier/old`).
pub const PROG_DATAPATH_OLD: &str = "pktpath_tc_old";
/// Name of the program [`PROG_DATAPATH`] tail-calls (through [`TAP_PROG_MAP`]) to hand its
/// decision to the tracers listening.
pub const PROG_TAP: &str = "pktpath_tap";

/// The data path's XDP program, on the same maps as [`PROG_DATAPATH`].
pub const PROG_XDP: &str = "pktpath_xdp";
/// [`PROG_XDP`] for kernels without `may_goto`, as [`PROG_DATAPATH_OLD`] is.
pub const PROG_XDP_OLD: &str = "pktpath_xdp_old";
/// Name of the program [`PROG_XDP`] tail-calls (through [`XDP_TAP_PROG_MAP`]) to hand its
/// decision to the tracers listening: [`PROG_TAP`]'s twin for XDP (a tail call goes only
/// to a program of the caller's type).
pub const PROG_XDP_TAP: &str = "pktpath_xdp_tap";
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
    /// Packets the program could not handle (a helper failed); passed on.
    pub error_packets: u64,
    /// Packets whose headers the kernel's IP input would refuse (bad checksum, lengths
    /// beyond the frame, cut headers); passed on untouched (the stack drops them). Also
    /// counted in `passed_*`.
    pub invalid_packets: u64,
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
        self.invalid_packets += other.invalid_packets;
    }
}

// ---------------------------------------------------------------------------------------
// Policy classification: decision trees over the packet's key words, in an arena of
// 64-byte lines that user space builds per generation.
//
// User space compiles each family's rules into a few decision trees (see pktpath-core's
// `route::datapath::classifier`). A tree's inner node cuts one key word: it takes `mask + 1`
// equal slices of the word (`(word >> shift) & mask`) and names the block of child nodes
// the slice indexes. A leaf holds a short list of rules, best priority first, each with its
// complete match, which the data path checks in order. Per packet the program walks each
// tree from its root to a leaf (a few array reads per tree, whatever the number of
// policies) and checks that leaf's rules; trees are searched in order of the best priority
// they hold, and the search stops when no tree left can beat the match in hand.
//
// The arena of a generation lives in chunks of 16 MiB, each an array map of one value held
// by the map-in-map ROUTE_ARENA, so its memory grows with the compiled set, not with a
// capacity fixed at load. Two generations exist; `RouteState::active % 2` says which one
// packets use. An apply builds the inactive generation's chunks and root table, then flips
// that one word: each packet sees the old set or the new one, never a mix.
// ---------------------------------------------------------------------------------------

/// Table generations (double buffering).
pub const GENERATIONS: u32 = 2;
/// Next hops the static configuration may name.
pub const MAX_NEXTHOPS: u32 = 256;
/// Policies with counters (counter slots).
pub const MAX_POLICY_SLOTS: u32 = 1 << 17;

/// Trees per family and generation.
pub const MAX_TREES: u32 = 8;
/// Longest path from a root to a leaf (inner nodes).
pub const MAX_DEPTH: u32 = 24;
/// Most rules one leaf holds.
pub const MAX_LEAF_RULES: u32 = 256;
/// Rules the builder lets a leaf hold before it tries to cut it (a leaf no cut shrinks may
/// hold twice as many, up to [`MAX_LEAF_RULES`] where cuts stop helping).
pub const LEAF_TARGET: u32 = 32;
/// Rules of a leaf one walk checks: a longer leaf goes on as a leaf of its remaining rules,
/// walked next (see [`MAX_WALKS`]). Fewer than [`LEAF_TARGET`] because the verifier checks
/// each rule of a walk's bounded loop on its own: its work grows by some 20k instructions
/// per rule (32 rules took the data path past the 1M instruction limit on kernel 6.18.44),
/// while a continuation walk costs a few nanoseconds.
pub const LEAF_SEGMENT: u32 = 8;
/// Most inner nodes with a side subtree on one path from a root to a leaf.
pub const MAX_PATH_SIDES: u32 = 6;
/// Most side subtrees nested in one another (a side subtree's own nodes may have sides).
pub const MAX_SIDE_NESTING: u32 = 3;
/// Steps of the search one packet may take (a step walks a subtree): the roots, the side
/// subtrees of the nodes on their paths, the rest of each leaf longer than
/// [`LEAF_SEGMENT`]. The limits above bound it well below (the trees of three roots with
/// every path at its limits: a few hundred).
pub const MAX_WALKS: u32 = 4096;
/// Subtrees a step walks, at most, in the programs for kernels without `may_goto`, where a
/// step is a call of a `bpf_loop` callback: a call costs more than the work of most walks,
/// and the verifier checks each walk of a call once. (With `may_goto` a step walks one.)
pub const WALKS_PER_CALL: u32 = 2;
/// Popped subtrees a step may drop, by their priority bound, before it walks one: pruning
/// costs a comparison, a step more.
pub const PRUNE_PER_STEP: u32 = 8;
/// Subtrees waiting to be walked, at most: the roots, a side per nesting level and path
/// position, and per nesting level one walk's continuation (its path in another chunk, or
/// a leaf's rest): 3 + 4 * (6 + 1) within.
pub const MAX_PENDING: u32 = 32;
/// log2 of the 8-byte slots of one arena chunk.
pub const CHUNK_SLOT_BITS: u32 = 21;
/// Slots of one arena chunk (16 MiB: a chunk per walk, see [`NODE_FAR`]).
pub const CHUNK_SLOTS: u32 = 1 << CHUNK_SLOT_BITS;
/// Chunks one generation's arena may use (512 MiB).
pub const MAX_CHUNKS: u32 = 32;

/// Map-in-map (array of maps, `GENERATIONS * MAX_CHUNKS` entries): entry
/// `gen * MAX_CHUNKS + c` is chunk `c` of generation `gen`, an array map of one [`Chunk`]
/// (BPF_F_MMAPABLE, so user space fills it through mmap). One value per chunk lets the
/// program reach any slot of it by an offset from one lookup.
pub const MAP_ARENA: &str = "ROUTE_ARENA";
/// Array of [`GenTables`], one per generation.
pub const MAP_TREES: &str = "ROUTE_TREES";
/// Array of [`NextHop`] by index.
pub const MAP_NEXTHOPS: &str = "ROUTE_NEXTHOPS";
/// Array of one [`RouteState`].
pub const MAP_STATE: &str = "ROUTE_STATE";
/// Per-CPU array of [`PolicyCounters`] by slot.
pub const MAP_POLICY_STATS: &str = "POLICY_STATS";

/// Which generation packets use: the one entry of ROUTE_STATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteState {
    /// How many applies the data path has seen; packets use table generation
    /// `active % GENERATIONS`. User space tags the state of each generation with it, to
    /// read the state files consistently with the tables.
    pub active: u32,
    pub _pad: u32,
}
crate::assert_size!(RouteState, 8);
crate::impl_pod!(RouteState);

/// Address families, as stored in rules and next hops.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// The key words a packet is classified by (indexes into [`ClassKey::words`]). Addresses
/// are in host order, most significant word first (IPv4 uses word 0 of each); a packet
/// without ports (not TCP/UDP/SCTP, or a fragment) has [`NO_PORT`] in both port words.
pub const KEY_SRC: usize = 0;
pub const KEY_DST: usize = 4;
pub const KEY_SPORT: usize = 8;
pub const KEY_DPORT: usize = 9;
pub const KEY_PROTO: usize = 10;
pub const KEY_IIF: usize = 11;
pub const KEY_DSCP: usize = 12;
pub const KEY_MARK: usize = 13;
/// The packet's class ([`packet_class`]), computed once per packet: no rule names it, but
/// trees may cut on it (a rule goes to the slices of the classes it may match), and
/// subtrees keep a priority bound per class.
pub const KEY_CLASS: usize = 14;
/// Words of a [`ClassKey`] (a power of two: a node's word index is masked with
/// `KEY_WORDS - 1`).
pub const KEY_WORDS: usize = 16;
/// The port word of a packet that carries no ports: outside every port range.
pub const NO_PORT: u32 = 0x1_0000;

/// Classes of packets, by protocol and ports ([`packet_class`]). Subtrees keep a priority
/// bound per class: the best priority among their rules that a packet of the class may
/// match (a side subtree of broad addresses often holds only rules for other protocols or
/// ports than the packet's, and is then skipped without a walk). Trees may also cut on the
/// class, so that a leaf holds only rules a packet reaching it may match: most rules a
/// leaf checks in vain differ from the packet in protocol or ports, not in addresses.
pub const BOUND_CLASSES: usize = 10;

/// A packet's class: TCP (0-3) and UDP (4-7) by destination port (bit 0) and source
/// port (bit 1) at or above 1024 (a packet without ports, [`NO_PORT`], counts as below),
/// ICMP (1 or 58: 8), the rest (9).
#[inline(always)]
pub const fn packet_class(proto: u32, sport: u32, dport: u32) -> u32 {
    let ports = high_port(dport) | high_port(sport) << 1;
    match proto {
        6 => ports,
        17 => 4 + ports,
        1 | 58 => 8,
        _ => 9,
    }
}

/// 1 for a port word at or above 1024 (and not [`NO_PORT`]).
#[inline(always)]
const fn high_port(port: u32) -> u32 {
    (port >= 1024 && port < NO_PORT) as u32
}

/// A packet's key words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassKey {
    pub words: [u32; KEY_WORDS],
}
crate::assert_size!(ClassKey, 4 * KEY_WORDS);
crate::impl_pod!(ClassKey);

/// `Node::op` of a leaf; otherwise the low bits of `op` ([`NODE_WORD`]) name the key word an
/// inner node cuts.
pub const NODE_LEAF: u8 = 0x80;
/// `Node::op` of an inner node whose block starts with a side subtree: the rules of the node
/// that every slice would hold, walked by every packet passing through.
pub const NODE_SIDE: u8 = 0x40;
/// `Node::op` of a child (inner node or leaf) whose block lies in another arena chunk than
/// its parent's: the walk ends there and the child is walked next, as a walk of its own.
/// A walk reads one chunk only, the one its first node's block is in (see
/// `route::datapath::classifier::encode`).
pub const NODE_FAR: u8 = 0x20;
/// `Node::op` of an inner node whose cut also takes the packet's class: the child index
/// is the cut's slice times [`CLASS_SLICES`] plus the class ([`KEY_CLASS`]). The builder
/// folds a child that cuts on the class alone into its parent this way, which saves the
/// walk a node read.
pub const NODE_CLASS: u8 = 0x10;
/// Children per slice of a [`NODE_CLASS`] node: the class takes the low bits of the index.
pub const CLASS_SLICES: u32 = 16;
/// The key word bits of `Node::op`.
pub const NODE_WORD: u8 = 0x0f;
/// Slots before an inner node's children when it has a side subtree: the side's root and
/// its priority bounds.
pub const SIDE_SLOTS: u32 = 1 + BOUND_CLASSES as u32;

/// A tree node, 8 bytes (one arena slot).
///
/// Inner node (`op` without [`NODE_LEAF`]): the child for a packet is the node in arena
/// slot `base + side + ((words[op & NODE_WORD] >> shift) & mask)` (with [`NODE_CLASS`],
/// that slice times [`CLASS_SLICES`] plus the packet's class), where `side` is
/// [`SIDE_SLOTS`] when `op` has [`NODE_SIDE`] (slot `base` then holds the side subtree's
/// root, slot `base + 1 + c` its priority bound for packet class `c` as a `u64`) and 0
/// otherwise. Leaf:
/// `mask` rules, [`RuleMatch`]es in the lines starting at slot `base` (a multiple of 8),
/// best priority first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: u8,
    pub shift: u8,
    pub mask: u16,
    pub base: u32,
}
crate::assert_size!(Node, 8);
const _: () = assert!(BOUND_CLASSES as u32 <= CLASS_SLICES);
crate::impl_pod!(Node);

/// One arena chunk: [`CHUNK_SLOTS`] 8-byte slots, holding [`Node`]s (one a slot),
/// [`RuleMatch`]es (eight slots, a 64-byte line each) and [`RuleValue`]s (four slots each),
/// by what points into it.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct Chunk {
    pub slots: [u64; CHUNK_SLOTS as usize],
}
crate::assert_size!(Chunk, 8 * CHUNK_SLOTS as usize);
crate::impl_pod!(Chunk);

/// A tree's root and, per packet class ([`packet_class`]), the best (lowest) priority among
/// its rules that a packet of the class may match (`u32::MAX`: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeRoot {
    pub node: Node,
    pub bounds: [u32; BOUND_CLASSES],
}
crate::assert_size!(TreeRoot, 8 + 4 * BOUND_CLASSES);
crate::impl_pod!(TreeRoot);

/// A generation's trees: the entry of ROUTE_TREES the program reads once per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenTables {
    /// Arena slot of the first [`RuleValue`] (4 slots each: value `i` at `values + 4 * i`).
    pub values: u32,
    /// Trees of IPv4 ([0]) and IPv6 ([1]).
    pub counts: [u32; 2],
    pub _pad: u32,
    /// Roots by family, best priority first.
    pub roots: [[TreeRoot; MAX_TREES as usize]; 2],
}
crate::assert_size!(
    GenTables,
    16 + 2 * (8 + 4 * BOUND_CLASSES) * MAX_TREES as usize
);
crate::impl_pod!(GenTables);

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
/// `RuleValue::flags`: the XDP program passes a packet this rule wins for to TC untouched,
/// because XDP cannot decide it: the rule sets a mark, matches on the mark (XDP has none),
/// or a rule matching on the mark with a better priority overlaps it (with the packet's
/// real mark that rule could win in TC). Set by user space when it compiles the rules.
pub const RULE_XDP_PASS: u8 = 4;

/// `RuleMatch::flags`: which optional fields the policy constrains.
pub const MATCH_PROTO: u8 = 1;
pub const MATCH_DSCP: u8 = 2;
pub const MATCH_IIF: u8 = 4;
pub const MATCH_SPORT: u8 = 8;
pub const MATCH_DPORT: u8 = 16;

/// The policy a rule belongs to, and its action.
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
    /// Index in the next hop table: the next hop's entry for a `forward` rule, the
    /// table's entry (its slow-path mark only) for a `lookup_table` rule.
    pub nexthop: u32,
    pub table: u32,
    pub mark: u32,
}
crate::assert_size!(RuleValue, 24);
crate::impl_pod!(RuleValue);

/// One rule's complete match, as a leaf holds it (one arena line). Addresses are host-order
/// words like the key's, zero beyond the prefix; port ranges are inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleMatch {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    pub iif: u32,
    pub mark_value: u32,
    pub mark_mask: u32,
    pub priority: u32,
    /// Low 24 bits: index of the rule's [`RuleValue`] in its generation's values; high 8
    /// bits: `MATCH_*` flags (see [`RuleMatch::flags`]).
    pub value_flags: u32,
    pub src_len: u8,
    pub dst_len: u8,
    pub proto: u8,
    pub dscp: u8,
}
crate::assert_size!(RuleMatch, 64);
crate::impl_pod!(RuleMatch);

/// Values one generation may hold (the index width of [`RuleMatch::value_flags`]).
pub const MAX_VALUES: u32 = 1 << 24;

impl RuleMatch {
    /// The `MATCH_*` bits.
    #[inline(always)]
    pub const fn flags(&self) -> u8 {
        (self.value_flags >> 24) as u8
    }

    /// The index of the rule's [`RuleValue`].
    #[inline(always)]
    pub const fn value_index(&self) -> u32 {
        self.value_flags & (MAX_VALUES - 1)
    }

    /// Whether some packet of class `class` ([`packet_class`]) may match the rule: what a
    /// subtree's priority bound for the class counts. Never false for a rule that matches a
    /// packet of the class.
    pub fn may_match_class(&self, class: u32) -> bool {
        let f = self.flags();
        let any_proto = f & MATCH_PROTO == 0;
        let dport_meets =
            |lo: u16, hi: u16| f & MATCH_DPORT == 0 || (self.dport_lo <= hi && lo <= self.dport_hi);
        let sport_meets =
            |lo: u16, hi: u16| f & MATCH_SPORT == 0 || (self.sport_lo <= hi && lo <= self.sport_hi);
        // The port ranges of a TCP or UDP class (bit 0: destination, bit 1: source high).
        let half = |high: bool| if high { (1024, 65535) } else { (0, 1023) };
        let ports = |c: u32| {
            let (d, s) = (half(c & 1 != 0), half(c & 2 != 0));
            dport_meets(d.0, d.1) && sport_meets(s.0, s.1)
        };
        match class {
            0..=3 => (any_proto || self.proto == 6) && ports(class),
            4..=7 => (any_proto || self.proto == 17) && ports(class),
            // No ports: a rule on a port never matches.
            8 => {
                (any_proto || self.proto == 1 || self.proto == 58)
                    && f & (MATCH_DPORT | MATCH_SPORT) == 0
            }
            _ => any_proto || !matches!(self.proto, 1 | 6 | 17 | 58),
        }
    }
}

/// The mask of word `i` (0-3) of an address prefix `len` bits long, in host order.
#[inline(always)]
pub const fn prefix_word_mask(len: u8, i: usize) -> u32 {
    let bits = len as i32 - 32 * i as i32;
    if bits <= 0 {
        0
    } else if bits >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - bits)
    }
}

/// A next hop: egress interface, gateway, and optionally fixed MAC addresses. The entries
/// after the next hops' (one per routing table of the configuration) carry only a
/// `lookup_table` rule's slow-path mark.
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
    /// The mark bits (within `slow_mask`) the data path sets on a packet of a `forward`
    /// policy to this next hop (or of a `lookup_table` policy, for a table's entry) that it
    /// hands to the kernel stack instead of forwarding it (TTL about to expire, too big for
    /// the egress MTU, IPv4 options): `route attach` installs an `ip rule fwmark
    /// slow_mark/slow_mask` that looks up a routing table holding a route to this next hop
    /// (or the policy's table), so the stack forwards such a packet as the policy says. The
    /// packet's other mark bits are kept.
    pub slow_mark: u32,
    /// The mark bits the slow path reserves; 0: no rule for this entry, the stack routes
    /// such packets by its own tables.
    pub slow_mask: u32,
}
crate::assert_size!(NextHop, 48);
crate::impl_pod!(NextHop);

/// Map of the interfaces the XDP program may redirect into (`u32` per ifindex below
/// [`MAX_IFACES`]; 1: yes). Native XDP can hand a frame only to a device that takes XDP
/// frames (a veth whose peer runs XDP or has GRO on); user space, which asks the kernel
/// (the device's `xdp-features`), fills it. A packet to any other egress goes to TC.
pub const MAP_XDP_EGRESS: &str = "ROUTE_XDP_EGRESS";

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
pub const OUTCOME_INVALID: u8 = 4;

/// `Decision::flags`: the packet, matched by a `forward` or `lookup_table` policy, was
/// handed to the kernel stack with its next hop's or table's slow-path mark
/// ([`NextHop::slow_mark`]; `Decision::nexthop` is that entry), so the stack's forwarding
/// follows the policy.
pub const DECISION_VIA_STACK: u8 = 1;
/// `Decision::flags` of the XDP program: it passed the packet, untouched and uncounted, on
/// to the TC program, which decides it.
pub const DECISION_TO_TC: u8 = 2;

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
    /// `DECISION_*` bits.
    pub flags: u8,
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

/// How many `pktpath trace` runs can follow one data path at once: each holds a slot of
/// [`TAP_SOCKS_MAP`], [`TAP_RINGS_MAP`] and [`TapLive`].
pub const TAP_SLOTS: u32 = 8;

/// Bytes of each tracer's decision ring (the inner maps of [`TAP_RINGS_MAP`] must all have
/// this size: the kernel checks them against the template the data path was loaded with).
pub const TAP_RING_BYTES: u32 = 1 << 20;

/// Pinned map (array of [`TAP_SLOTS`] ring buffers of [`TAP_RING_BYTES`]): slot `i` holds
/// the ring of the tracer registered in slot `i` of [`TAP_SOCKS_MAP`], which the data path
/// writes each decision into while that tracer lives. The tracer creates its ring and puts
/// it there; one a killed tracer left is replaced by the next tracer taking the slot, and
/// freed with the data path at `route detach`.
pub const TAP_RINGS_MAP: &str = "ROUTE_TAP_RINGS";

/// Pinned map (sockmap, [`TAP_SLOTS`] entries): a tracer's registration. A tracer inserts
/// a socket of its own into a free slot (`BPF_NOEXIST`); the kernel removes a socket from
/// the map when it is closed, so a registration ends with its process however that ends
/// (`kill -9` included).
pub const TAP_SOCKS_MAP: &str = "ROUTE_TAP_SOCKS";

/// Pinned map (program array, one entry): [`PROG_TAP`], which the data path tail-calls
/// when [`TAP_MAP`] is not 0. Decided in a program of its own, the tap's work costs the
/// data path's verification nothing.
pub const TAP_PROG_MAP: &str = "ROUTE_TAP_PROG";

/// Pinned map (per-CPU array, one [`TapEvent`]): the decision [`PROG_DATAPATH`] hands to
/// [`PROG_TAP`].
pub const TAP_SCRATCH_MAP: &str = "ROUTE_TAP_SCRATCH";

/// Pinned map (program array, one entry): [`PROG_XDP_TAP`], which [`PROG_XDP`] tail-calls
/// when [`TAP_MAP`] is not 0 (filled by `route attach --hook xdp`; empty otherwise).
pub const XDP_TAP_PROG_MAP: &str = "ROUTE_XDP_TAP_PROG";

/// Pinned map (per-CPU array, one [`XdpTapEvent`]): the decision [`PROG_XDP`] hands to
/// [`PROG_XDP_TAP`], which adds the frame's headers.
pub const XDP_TAP_SCRATCH_MAP: &str = "ROUTE_XDP_TAP_SCRATCH";

/// Pinned map (array, one [`TapLive`], `BPF_F_MMAPABLE`): which slots may hold a live
/// tracer. The data path reads it as one 64-bit word per packet and does nothing more
/// when it is 0, the usual case.
pub const TAP_MAP: &str = "ROUTE_TAP";

/// The value of [`TAP_MAP`]: byte `i` is 1 while slot `i` may hold a live tracer.
///
/// A tracer sets its byte after registering in [`TAP_SOCKS_MAP`] and clears it when it
/// stops. A byte left set by a killed tracer is cleared by the data path, at the first
/// packet that finds the slot's socket gone (it then looks again, and sets the byte back
/// if a new tracer took the slot meanwhile); a live tracer sets its byte again whenever it
/// finds it clear, so a clear racing with its registration costs it one poll round at
/// most.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapLive {
    pub live: [u8; TAP_SLOTS as usize],
}
crate::assert_size!(TapLive, 8);
// One byte per slot in one 64-bit word; slot indexes are masked with TAP_SLOTS - 1.
const _: () = assert!(TAP_SLOTS == 8);
crate::impl_pod!(TapLive);

/// [`TapEvent::hook`] of a decision of [`PROG_DATAPATH`] (a data path's tap program from
/// before XDP decisions were tapped wrote 0 there too, as padding).
pub const TAP_HOOK_TC: u32 = 0;
/// [`TapEvent::hook`] of a decision of [`PROG_XDP`]: the record is an [`XdpTapEvent`].
pub const TAP_HOOK_XDP: u32 = 1;

/// One data-path decision as `pktpath trace` receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapEvent {
    /// `bpf_ktime_get_ns` when the program decided.
    pub ts_ns: u64,
    /// Kernel address of the `sk_buff` (the tracer's journeys are keyed by it); 0 for XDP,
    /// which runs before there is one.
    pub skb: u64,
    /// The interface the program ran on.
    pub ifindex: u32,
    /// `skb->len` when the program ran (XDP: the frame's length, Ethernet header included).
    pub len: u32,
    /// What it decided (`nonce` unused: 0).
    pub decision: Decision,
    /// Which program decided, the record's kind: [`TAP_HOOK_TC`] or [`TAP_HOOK_XDP`].
    pub hook: u32,
}
crate::assert_size!(TapEvent, 56);
crate::impl_pod!(TapEvent);

/// Header bytes an [`XdpTapEvent`] carries, from the network header on (as many as the
/// tracer's records carry: `trace::HEADER_BYTES`).
pub const XDP_TAP_HEADER_BYTES: usize = 128;
const _: () = assert!(XDP_TAP_HEADER_BYTES.is_power_of_two());

/// One decision of [`PROG_XDP`] as `pktpath trace` receives it: with no `sk_buff` to key
/// the packet's journey by, it carries the frame's headers, by which the trace finds the
/// journey (the skb seen just before, or made just after).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpTapEvent {
    /// The decision, `hook` [`TAP_HOOK_XDP`], `skb` 0.
    pub tap: TapEvent,
    /// The frame's EtherType (host order).
    pub protocol: u16,
    /// Valid bytes of `header` (the frame's length past the Ethernet header, at most
    /// [`XDP_TAP_HEADER_BYTES`]).
    pub header_len: u16,
    pub _pad: u32,
    /// The frame from its network header on, as the program left it (a forwarded packet's
    /// TTL already decremented).
    pub header: [u8; XDP_TAP_HEADER_BYTES],
}
crate::assert_size!(XdpTapEvent, 56 + 8 + XDP_TAP_HEADER_BYTES);
crate::impl_pod!(XdpTapEvent);

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
        OUTCOME_INVALID => "invalid",
        _ => "error",
    }
}

/// The `pinning` attribute the data path object's maps are built with: a value that is not
/// a pinning type. aya reads it as "no pinning" (`route attach` pins the maps itself under
/// its `--pin-dir`, tests load throwaway maps); `pktpath route object` rewrites it to
/// [`PIN_BY_NAME`] in the object it writes for `tc ... bpf obj`, so that libbpf pins
/// each map by name where iproute2 asks (`/sys/fs/bpf/tc/globals`).
pub const PIN_PLACEHOLDER: u32 = 0x0050_494e;
/// libbpf's `LIBBPF_PIN_BY_NAME`.
pub const PIN_BY_NAME: u32 = 1;
/// The ELF section holding [`PROG_DATAPATH`] (and [`PROG_TAP`]): `tc ... obj FILE sec`.
pub const DATAPATH_SECTION: &str = "classifier";
