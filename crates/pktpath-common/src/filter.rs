//! Packet filters shared by user space and the eBPF programs: the [`PacketKey`] a hook
//! extracts from a packet, the compiled [`FilterProgram`] user space writes into a map, and
//! the one evaluator, [`eval`], that both sides run.
//!
//! # Program format
//!
//! A program is a list of up to [`FILTER_MAX_INSNS`] tests. Each test checks one predicate
//! of the key and jumps to `jt` when it holds, to `jf` when it does not. A jump target is
//! either a later instruction (jumps only go forward, so every run ends within
//! [`FILTER_MAX_INSNS`] steps) or one of the verdicts [`TARGET_MATCH`] / [`TARGET_NO_MATCH`].
//! An empty program (`len == 0`) matches every packet. A malformed program (a backward jump,
//! a target past the end) matches nothing.
//!
//! # Addresses in the key
//!
//! Addresses are stored as 16 bytes in network byte order. IPv6 addresses are stored as they
//! are; IPv4 addresses (of IPv4 packets and of IPv4-over-Ethernet ARP) are stored
//! IPv4-mapped, `::ffff:a.b.c.d`, and flagged [`KEY_ADDR_V4`], so an IPv4 test never
//! matches an IPv6 packet that happens to carry a mapped address (that one is flagged
//! [`KEY_ADDR_V6`]).
//!
//! Everything here is written for the BPF verifier: loops have constant bounds, every array
//! access is bounds-checked with `get` or a constant index, nothing recurses or panics.

/// Name of the one-entry `Array<FilterProgram>` map (key 0) a filtering object reads its
/// filter from. A program that finds no entry should treat the packet as matching.
pub const MAP_FILTER: &str = "PKTPATH_FILTER";
/// The filter test object's classifier: runs [`eval`] on a frame, returns 0 (`TC_ACT_OK`)
/// on a match and 2 (`TC_ACT_SHOT`) otherwise.
pub const PROG_FILTER_TEST: &str = "filter_test";
/// The same classifier evaluating with the plain (unrolled) [`eval`] instead of `bpf_loop`.
pub const PROG_FILTER_TEST_UNROLLED: &str = "filter_test_unrolled";
/// The filter test object's one-entry `Array<PacketKey>`: the key of the last frame run.
pub const MAP_FILTER_LAST_KEY: &str = "FILTER_LAST_KEY";
/// Bytes from the network header on that the filter test object hands to [`key_from_l3`]:
/// as many as the tracer copies into each event.
pub const FILTER_TEST_HEADER_BYTES: usize = crate::trace::HEADER_BYTES;

/// Most instructions a [`FilterProgram`] holds.
pub const FILTER_MAX_INSNS: usize = 64;
/// Jump target meaning "the packet matches".
pub const TARGET_MATCH: u8 = 0xfe;
/// Jump target meaning "the packet does not match".
pub const TARGET_NO_MATCH: u8 = 0xff;

/// `PacketKey::flags`: `src`/`dst` hold IPv4 addresses (IPv4 packet or IPv4 ARP).
pub const KEY_ADDR_V4: u8 = 1 << 0;
/// `PacketKey::flags`: `src`/`dst` hold IPv6 addresses.
pub const KEY_ADDR_V6: u8 = 1 << 1;
/// `PacketKey::flags`: an IPv4 or IPv6 header was parsed; `ip_proto` is valid.
pub const KEY_IP: u8 = 1 << 2;
/// `PacketKey::flags`: `sport`/`dport` are valid (TCP, UDP or SCTP, first fragment).
pub const KEY_PORTS: u8 = 1 << 3;
/// `PacketKey::flags`: the packet is a fragment other than the first (no L4 header).
pub const KEY_FRAGMENT: u8 = 1 << 4;

/// The EtherTypes and IP protocol numbers the filter language names (defined in [`crate::net`]).
pub use crate::net::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP,
};

/// How many IPv6 extension headers [`key_from_l3`] walks before giving up: enough for the
/// usual chain (hop-by-hop, destination options, routing, fragment). Each one more costs
/// every tracer hook about 4,000 verified instructions (with 6, start-up with a filter
/// took 0.5 s; with 4, 0.4 s).
pub const IPV6_MAX_EXT_HEADERS: usize = 4;

/// What a filter can test about one packet, extracted by [`key_from_l3`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketKey {
    /// Source address (see the module docs for the IPv4 mapping); zero when absent.
    pub src: [u8; 16],
    /// Destination address; zero when absent.
    pub dst: [u8; 16],
    /// The packet's EtherType (`skb->protocol`), host byte order.
    pub ethertype: u16,
    /// Source port, host byte order; valid with [`KEY_PORTS`].
    pub sport: u16,
    /// Destination port, host byte order; valid with [`KEY_PORTS`].
    pub dport: u16,
    /// Transport protocol (after IPv6 extension headers); valid with [`KEY_IP`].
    pub ip_proto: u8,
    /// `KEY_*` bits.
    pub flags: u8,
}
crate::assert_size!(PacketKey, 40);
crate::impl_pod!(PacketKey);

/// The predicates an instruction can test ([`FilterInsn::op`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    /// `key.ethertype == lo`.
    EtherType = 1,
    /// `key` has an IP header, `key.ip_proto == lo as u8`, and `hi == 0 || key.ethertype == hi`.
    IpProto = 2,
    /// Address test: `key.flags & lo != 0` (the family) and `(addr & mask) == insn.addr` for
    /// the address(es) `dir` selects.
    Addr = 3,
    /// Port test: `key` has ports and `lo <= port <= hi` for the port(s) `dir` selects.
    Port = 4,
}

impl FilterOp {
    /// Decodes an opcode byte.
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::EtherType),
            2 => Some(Self::IpProto),
            3 => Some(Self::Addr),
            4 => Some(Self::Port),
            _ => None,
        }
    }
}

/// [`FilterInsn::dir`]: test the source address or port.
pub const DIR_SRC: u8 = 1;
/// [`FilterInsn::dir`]: test the destination address or port.
pub const DIR_DST: u8 = 2;
/// [`FilterInsn::dir`]: the test holds when it holds for the source or the destination.
pub const DIR_EITHER: u8 = DIR_SRC | DIR_DST;

/// One test of a [`FilterProgram`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterInsn {
    /// A [`FilterOp`].
    pub op: u8,
    /// `DIR_*` for address and port tests, 0 otherwise.
    pub dir: u8,
    /// Next instruction (or verdict) when the test holds.
    pub jt: u8,
    /// Next instruction (or verdict) when it does not.
    pub jf: u8,
    /// Operand: EtherType, IP protocol, address family flag, or lowest port.
    pub lo: u16,
    /// Operand: required EtherType for `IpProto` (0 = IPv4 or IPv6), or highest port.
    pub hi: u16,
    /// Address to compare with (already masked), in the key's 16-byte form.
    pub addr: [u8; 16],
    /// Mask applied to the key's address before comparing.
    pub mask: [u8; 16],
}
crate::assert_size!(FilterInsn, 40);
crate::impl_pod!(FilterInsn);

/// A compiled filter, as written into the filter map.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterProgram {
    /// Instructions in use; 0 matches every packet.
    pub len: u16,
    pub _pad: u16,
    pub _pad2: u32,
    pub insns: [FilterInsn; FILTER_MAX_INSNS],
}
crate::assert_size!(FilterProgram, 8 + 40 * FILTER_MAX_INSNS);
// Addresses sit at 8-byte aligned offsets of 8-byte aligned types, so comparing them as
// two u64 words compiles to 8-byte loads (see `addr_in`).
const _: () = assert!(
    core::mem::offset_of!(PacketKey, src) % 8 == 0
        && core::mem::offset_of!(PacketKey, dst) % 8 == 0
        && core::mem::offset_of!(FilterInsn, addr) % 8 == 0
        && core::mem::offset_of!(FilterInsn, mask) % 8 == 0
        && core::mem::offset_of!(FilterProgram, insns) % 8 == 0
);
crate::impl_pod!(FilterProgram);
crate::assert_size!(EvalState, 8);

impl FilterProgram {
    /// The empty program, which matches every packet.
    pub const fn match_all() -> Self {
        Self {
            len: 0,
            _pad: 0,
            _pad2: 0,
            insns: [FilterInsn {
                op: 0,
                dir: 0,
                jt: 0,
                jf: 0,
                lo: 0,
                hi: 0,
                addr: [0; 16],
                mask: [0; 16],
            }; FILTER_MAX_INSNS],
        }
    }
}

impl Default for FilterProgram {
    fn default() -> Self {
        Self::match_all()
    }
}

/// [`EvalState::verdict`] while the program runs.
pub const VERDICT_RUNNING: u32 = 0;
/// [`EvalState::verdict`]: the packet matches.
pub const VERDICT_MATCH: u32 = 1;
/// [`EvalState::verdict`]: the packet does not match.
pub const VERDICT_NO_MATCH: u32 = 2;

/// Where a running filter stands; advanced one instruction at a time by [`eval_step`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalState {
    /// The next instruction.
    pub pc: u32,
    /// One of `VERDICT_*`.
    pub verdict: u32,
}

/// Runs `prog` on `key`: true when the packet matches.
///
/// This is [`eval_step`] repeated up to [`FILTER_MAX_INSNS`] times. eBPF programs with many
/// hooks may drive [`eval_step`] from the `bpf_loop` helper instead (pktpath-ebpf's
/// `filter::eval`), which the verifier checks once instead of once per iteration.
#[inline(always)]
pub fn eval(prog: &FilterProgram, key: &PacketKey) -> bool {
    if prog.len == 0 {
        return true;
    }
    let mut state = EvalState::default();
    // Jumps only go forward, so FILTER_MAX_INSNS steps always reach a verdict.
    for _ in 0..FILTER_MAX_INSNS {
        if eval_step(prog, key, &mut state) {
            break;
        }
    }
    state.verdict == VERDICT_MATCH
}

/// Runs the instruction at `state.pc`; returns true once `state.verdict` is final. A
/// program that runs off its end or jumps backwards ends with [`VERDICT_NO_MATCH`]; an
/// empty program is the caller's business (it matches everything).
#[inline(always)]
pub fn eval_step(prog: &FilterProgram, key: &PacketKey, state: &mut EvalState) -> bool {
    // An opaque copy: LLVM cannot fold the bounds check below into earlier comparisons of
    // the jump target (it did, into a masked form the BPF verifier cannot follow), so the
    // verifier sees the check on the very register that indexes the instructions.
    // SAFETY: reads a field of a live &mut.
    let pc = unsafe { core::ptr::read_volatile(&state.pc) } as usize;
    let insn = match prog.insns.get(pc) {
        Some(insn) if pc < prog.len as usize => insn,
        _ => {
            state.verdict = VERDICT_NO_MATCH;
            return true;
        }
    };
    let next = if test(insn, key) { insn.jt } else { insn.jf };
    if next == TARGET_MATCH {
        state.verdict = VERDICT_MATCH;
        return true;
    }
    if next as usize <= pc || next == TARGET_NO_MATCH {
        state.verdict = VERDICT_NO_MATCH;
        return true;
    }
    state.pc = next as u32;
    false
}

/// Whether one instruction's predicate holds for `key`.
#[inline(always)]
fn test(insn: &FilterInsn, key: &PacketKey) -> bool {
    match FilterOp::from_u8(insn.op) {
        Some(FilterOp::EtherType) => key.ethertype == insn.lo,
        Some(FilterOp::IpProto) => {
            key.flags & KEY_IP != 0
                && key.ip_proto as u16 == insn.lo
                && (insn.hi == 0 || key.ethertype == insn.hi)
        }
        Some(FilterOp::Addr) => {
            if key.flags & (insn.lo as u8) == 0 {
                return false;
            }
            (insn.dir & DIR_SRC != 0 && addr_in(&key.src, insn))
                || (insn.dir & DIR_DST != 0 && addr_in(&key.dst, insn))
        }
        Some(FilterOp::Port) => {
            if key.flags & KEY_PORTS == 0 {
                return false;
            }
            (insn.dir & DIR_SRC != 0 && insn.lo <= key.sport && key.sport <= insn.hi)
                || (insn.dir & DIR_DST != 0 && insn.lo <= key.dport && key.dport <= insn.hi)
        }
        None => false,
    }
}

/// Whether `addr & insn.mask == insn.addr`.
#[inline(always)]
fn addr_in(addr: &[u8; 16], insn: &FilterInsn) -> bool {
    let (a, m, v) = (words(addr), words(&insn.mask), words(&insn.addr));
    ((a[0] & m[0]) ^ v[0]) | ((a[1] & m[1]) ^ v[1]) == 0
}

/// 16 address bytes as two native-endian words (a plain value copy; the fields it is used
/// on are 8-byte aligned, so this is two 8-byte loads).
#[inline(always)]
fn words(a: &[u8; 16]) -> [u64; 2] {
    // SAFETY: [u8; 16] and [u64; 2] have the same size and every bit pattern is valid for
    // both; transmute copies the value, so the source's alignment does not matter.
    unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(*a) }
}

/// Reads byte `i` of the first `len` bytes of `h`.
#[inline(always)]
fn byte<const N: usize>(h: &[u8; N], len: usize, i: usize) -> Option<u8> {
    if i < len { h.get(i).copied() } else { None }
}

/// Reads a big-endian u16 at `i`.
#[inline(always)]
fn be16<const N: usize>(h: &[u8; N], len: usize, i: usize) -> Option<u16> {
    Some(((byte(h, len, i)? as u16) << 8) | byte(h, len, i + 1)? as u16)
}

/// Copies `n` (4 or 16) address bytes at constant offset `at` into `dst` (IPv4 mapped).
#[inline(always)]
fn copy_addr<const N: usize>(h: &[u8; N], at: usize, v4: bool, dst: &mut [u8; 16]) {
    if v4 {
        dst[10] = 0xff;
        dst[11] = 0xff;
        let mut i = 0;
        while i < 4 {
            dst[12 + i] = h.get(at + i).copied().unwrap_or(0);
            i += 1;
        }
    } else {
        let mut i = 0;
        while i < 16 {
            dst[i] = h.get(at + i).copied().unwrap_or(0);
            i += 1;
        }
    }
}

/// How many bytes from the network header on a header [signature](signature_mask) covers.
pub const SIGNATURE_BYTES: usize = 48;

/// [`SIGNATURE_BYTES`] as 8-byte words.
pub const SIGNATURE_WORDS: usize = SIGNATURE_BYTES / 8;

/// Per native-endian 8-byte word of a header, the bits of the bytes in `spans`
/// (`(first, last, bits)`).
const fn word_masks(spans: &[(usize, usize, u8)]) -> [u64; SIGNATURE_WORDS] {
    let mut m = [[0u8; 8]; SIGNATURE_WORDS];
    let mut i = 0;
    while i < spans.len() {
        let (first, last, bits) = spans[i];
        let mut b = first;
        while b <= last {
            m[b / 8][b % 8] = bits;
            b += 1;
        }
        i += 1;
    }
    let mut w = [0u64; SIGNATURE_WORDS];
    let mut j = 0;
    while j < SIGNATURE_WORDS {
        w[j] = u64::from_ne_bytes(m[j]);
        j += 1;
    }
    w
}

/// IPv4 without options: version and IHL, fragment offset, protocol, addresses, ports.
const SIGNATURE_V4: [u64; SIGNATURE_WORDS] = word_masks(&[
    (0, 0, 0xff),
    (6, 6, 0x1f),
    (7, 7, 0xff),
    (9, 9, 0xff),
    (12, 23, 0xff),
]);
/// IPv6 without extension headers: version, next header, addresses, ports.
const SIGNATURE_V6: [u64; SIGNATURE_WORDS] =
    word_masks(&[(0, 0, 0xf0), (6, 6, 0xff), (8, 43, 0xff)]);
/// ARP: hardware and protocol types and lengths, sender and target protocol addresses.
const SIGNATURE_ARP: [u64; SIGNATURE_WORDS] =
    word_masks(&[(0, 5, 0xff), (14, 17, 0xff), (24, 27, 0xff)]);

/// No bytes: the key of a packet of another EtherType, or with no header captured, is its
/// EtherType alone.
const SIGNATURE_NONE: [u64; SIGNATURE_WORDS] = [0; SIGNATURE_WORDS];

/// A header's signature: for an `ethertype` packet of which `captured` bytes from the
/// network header on were read, the bits of its first [`SIGNATURE_BYTES`] that
/// [`key_from_l3`] reads, as a mask per native-endian 8-byte word; `None` when too few
/// bytes were captured to tell (a truncated header).
///
/// Two headers of one EtherType with the same mask and equal masked words have the same key
/// when [`signature_covers`] holds for one of them: a filter's verdict on one is its verdict
/// on the other. The masks leave out what changes from packet to packet of a flow and from
/// hop to hop (length, identification, TTL, checksum, DSCP).
#[inline(always)]
pub const fn signature_mask(
    ethertype: u16,
    captured: usize,
) -> Option<&'static [u64; SIGNATURE_WORDS]> {
    let Some((mask, need)) = signature_span(ethertype) else {
        return Some(&SIGNATURE_NONE);
    };
    if captured == 0 {
        Some(&SIGNATURE_NONE)
    } else if captured >= need {
        Some(mask)
    } else {
        None
    }
}

/// The mask of an `ethertype` header's full signature and how many bytes from the network
/// header on it needs captured; `None` for EtherTypes whose key is the EtherType alone.
/// (The eBPF side takes IPv4's as constants: [`signature_mask`] for a captured header.)
#[inline(always)]
pub const fn signature_span(ethertype: u16) -> Option<(&'static [u64; SIGNATURE_WORDS], usize)> {
    match ethertype {
        ETH_P_IP => Some((&SIGNATURE_V4, 24)),
        ETH_P_IPV6 => Some((&SIGNATURE_V6, 44)),
        ETH_P_ARP => Some((&SIGNATURE_ARP, 28)),
        _ => None,
    }
}

/// Whether the key of the header `h` depends on the bytes `mask` (from [`signature_mask`])
/// lists alone: not for IPv4 with options (the ports move) or IPv6 with extension headers.
#[inline(always)]
pub fn signature_covers<const N: usize>(
    mask: &[u64; SIGNATURE_WORDS],
    h: &[u8; N],
    ethertype: u16,
) -> bool {
    if mask[0] == 0 {
        // No byte is read (SIGNATURE_NONE).
        return true;
    }
    let Some(&b0) = h.first() else { return false };
    match ethertype {
        ETH_P_IP => !(b0 >> 4 == 4 && b0 & 0x0f > 5),
        ETH_P_IPV6 => b0 >> 4 != 6 || !matches!(h.get(6), Some(0 | 43 | 44 | 51 | 60) | None),
        _ => true,
    }
}

/// Extracts the [`PacketKey`] of a packet from its first bytes, starting at the network
/// header: `header[..len]` are valid (a `len` beyond `N` counts as `N`), `ethertype` is the
/// packet's EtherType (`skb->protocol`, host byte order).
///
/// - IPv4: addresses and protocol when the 20-byte base header was captured; ports for TCP,
///   UDP and SCTP when the first 4 bytes after the header (IHL) were captured and the
///   packet is not a non-first fragment.
/// - IPv6: addresses, then up to [`IPV6_MAX_EXT_HEADERS`] extension headers (hop-by-hop,
///   routing, fragment, destination options, AH) are skipped; `ip_proto` is the first
///   other next-header value. When the chain is longer, or leaves the captured bytes,
///   `ip_proto` is the extension header where parsing stopped and there are no ports.
/// - ARP for IPv4 over Ethernet: sender and target protocol addresses as `src` and `dst`.
/// - Anything else: only `ethertype`.
#[inline(always)]
pub fn key_from_l3<const N: usize>(header: &[u8; N], len: usize, ethertype: u16) -> PacketKey {
    let mut key = PacketKey::default();
    key_from_l3_onto(header, len, ethertype, &mut key);
    key
}

/// [`key_from_l3`] written into `key`, which must be zeroed ([`PacketKey::default`]).
/// eBPF programs pass a key in map memory: built in a local, its address bytes become as
/// many scalars, which LLVM spills to the BPF stack (hundreds of bytes of a 512-byte
/// stack); zeroing it here would be a call to `memset`.
#[inline(always)]
pub fn key_from_l3_onto<const N: usize>(
    header: &[u8; N],
    len: usize,
    ethertype: u16,
    key: &mut PacketKey,
) {
    let len = if len > N { N } else { len };
    key.ethertype = ethertype;
    match ethertype {
        ETH_P_IP => parse_ipv4(header, len, key),
        ETH_P_IPV6 => parse_ipv6(header, len, key),
        ETH_P_ARP => parse_arp(header, len, key),
        _ => {}
    }
}

#[inline(always)]
fn parse_ipv4<const N: usize>(h: &[u8; N], len: usize, key: &mut PacketKey) {
    let Some(vihl) = byte(h, len, 0) else { return };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 || len < 20 {
        return;
    }
    copy_addr(h, 12, true, &mut key.src);
    copy_addr(h, 16, true, &mut key.dst);
    key.flags |= KEY_ADDR_V4 | KEY_IP;
    key.ip_proto = byte(h, len, 9).unwrap_or(0);
    let frag = be16(h, len, 6).unwrap_or(0) & 0x1fff;
    if frag != 0 {
        key.flags |= KEY_FRAGMENT;
        return;
    }
    ports(h, len, ihl, key);
}

#[inline(always)]
fn parse_ipv6<const N: usize>(h: &[u8; N], len: usize, key: &mut PacketKey) {
    let Some(v) = byte(h, len, 0) else { return };
    if v >> 4 != 6 || len < 40 {
        return;
    }
    copy_addr(h, 8, false, &mut key.src);
    copy_addr(h, 24, false, &mut key.dst);
    key.flags |= KEY_ADDR_V6 | KEY_IP;
    let mut next = byte(h, len, 6).unwrap_or(0);
    let mut off: usize = 40;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        let ext_len = match next {
            // hop-by-hop, routing, destination options: (hdr ext len + 1) * 8
            0 | 43 | 60 => match byte(h, len, off + 1) {
                Some(l) => (l as usize + 1) * 8,
                None => break,
            },
            // fragment: 8 bytes; a non-first fragment carries no L4 header
            44 => match be16(h, len, off + 2) {
                Some(fo) => {
                    if fo >> 3 != 0 {
                        key.flags |= KEY_FRAGMENT;
                    }
                    8
                }
                None => break,
            },
            // authentication header: (payload len + 2) * 4
            51 => match byte(h, len, off + 1) {
                Some(l) => (l as usize + 2) * 4,
                None => break,
            },
            _ => {
                key.ip_proto = next;
                if key.flags & KEY_FRAGMENT == 0 {
                    ports(h, len, off, key);
                }
                return;
            }
        };
        let Some(n) = byte(h, len, off) else { break };
        next = n;
        off += ext_len;
    }
    key.ip_proto = next;
}

#[inline(always)]
fn parse_arp<const N: usize>(h: &[u8; N], len: usize, key: &mut PacketKey) {
    // htype Ethernet, ptype IPv4, hlen 6, plen 4: sender IP at 14, target IP at 24.
    if be16(h, len, 0) != Some(1)
        || be16(h, len, 2) != Some(ETH_P_IP)
        || byte(h, len, 4) != Some(6)
        || byte(h, len, 5) != Some(4)
        || len < 28
    {
        return;
    }
    copy_addr(h, 14, true, &mut key.src);
    copy_addr(h, 24, true, &mut key.dst);
    key.flags |= KEY_ADDR_V4;
}

/// Reads the TCP/UDP/SCTP ports at `l4` when the protocol has them.
#[inline(always)]
fn ports<const N: usize>(h: &[u8; N], len: usize, l4: usize, key: &mut PacketKey) {
    if !matches!(key.ip_proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return;
    }
    if let (Some(s), Some(d)) = (be16(h, len, l4), be16(h, len, l4 + 2)) {
        key.sport = s;
        key.dport = d;
        key.flags |= KEY_PORTS;
    }
}
