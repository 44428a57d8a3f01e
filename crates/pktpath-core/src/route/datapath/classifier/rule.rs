//! Rules and packets as the data path sees them: a rule's match and action, a packet's key
//! words (from its [`PacketFields`]), and the complete match a leaf checks.

use std::net::IpAddr;

use pktpath_common::route::{
    ClassKey, FAMILY_V4, FAMILY_V6, KEY_CLASS, KEY_DPORT, KEY_DSCP, KEY_DST, KEY_IIF, KEY_MARK,
    KEY_PROTO, KEY_SPORT, KEY_SRC, MATCH_DPORT, MATCH_DSCP, MATCH_IIF, MATCH_PROTO, MATCH_SPORT,
    MAX_VALUES, NO_PORT, RuleMatch, RuleValue, packet_class, prefix_word_mask,
};

use crate::route::packet::{Ifindex, PacketFields};

/// One rule, as the data path sees it: what it matches and what it does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Lower wins.
    pub priority: u32,
    /// None: both IPv4 and IPv6 (only when no address is given).
    pub family: Option<u8>,
    pub iif: Option<u32>,
    /// Address (IPv4 in the first 4 bytes) and prefix length.
    pub src: Option<([u8; 16], u8)>,
    pub dst: Option<([u8; 16], u8)>,
    pub proto: Option<u8>,
    /// Inclusive ranges; only packets that carry ports match them.
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub dscp: Option<u8>,
    /// (value, mask).
    pub mark: Option<(u32, u32)>,
    /// The action and counter slot; `priority` is filled from the rule.
    pub value: RuleValue,
}

/// How many match shapes the rules have: distinct combinations of family, prefix lengths,
/// which of protocol, input interface and DSCP are named, whether each port is any, one
/// or a range, and the mark's mask. A tuple-space classifier needs a table per shape (the
/// data path before the trees held 32); the trees do not depend on it, but it says how
/// varied a set is, as the packet-classification literature counts it.
pub fn match_shapes(rules: &[Rule]) -> usize {
    let port = |p: Option<(u16, u16)>| match p {
        None => 0u8,
        Some((lo, hi)) if lo == hi => 1,
        Some(_) => 2,
    };
    rules
        .iter()
        .map(|r| {
            (
                r.family,
                r.src.map(|(_, len)| len),
                r.dst.map(|(_, len)| len),
                r.proto.is_some(),
                r.iif.is_some(),
                r.dscp.is_some(),
                port(r.sport),
                port(r.dport),
                r.mark.map(|(_, mask)| mask),
            )
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// A rule set the data path cannot hold.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("rule with priority {priority}: {what}")]
    Invalid { priority: u32, what: String },
    #[error(
        "the policies need {needed} MiB of classifier tables, the data path holds {max} MiB; the policy with priority {priority} is copied most ({copies} times): narrow its prefixes or port ranges, or split the set"
    )]
    TooLarge {
        needed: u64,
        max: u64,
        priority: u32,
        copies: usize,
    },
    #[error("the policies need {needed} rule entries, the data path holds {max}")]
    TooManyRules { needed: usize, max: u32 },
}

/// Bytes of an address as rules and next hops hold it (IPv4 in the first 4).
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Address bytes (IPv4 in the first 4) as host-order words.
fn words(a: &[u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| {
        u32::from_be_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    })
}

/// The key words of a packet: the ports only where the data path reads them
/// ([`PacketFields::ports`]), [`NO_PORT`] otherwise.
pub fn key_of(p: &PacketFields<Ifindex>) -> ClassKey {
    let mut k = ClassKey::default();
    k.words[KEY_SRC..KEY_SRC + 4].copy_from_slice(&words(&addr_bytes(p.src)));
    k.words[KEY_DST..KEY_DST + 4].copy_from_slice(&words(&addr_bytes(p.dst)));
    if p.family() == FAMILY_V4 {
        k.words[KEY_SRC + 1..KEY_SRC + 4].fill(0);
        k.words[KEY_DST + 1..KEY_DST + 4].fill(0);
    }
    let (sport, dport) = p
        .ports()
        .map_or((NO_PORT, NO_PORT), |(s, d)| (s as u32, d as u32));
    k.words[KEY_SPORT] = sport;
    k.words[KEY_DPORT] = dport;
    k.words[KEY_PROTO] = p.proto as u32;
    k.words[KEY_IIF] = p.iif;
    k.words[KEY_DSCP] = (p.dscp & 0x3f) as u32;
    k.words[KEY_MARK] = p.mark;
    k.words[KEY_CLASS] = packet_class(p.proto as u32, sport, dport);
    k
}

pub(super) fn validate(rule: &Rule) -> Result<(), CompileError> {
    let invalid = |what: String| CompileError::Invalid {
        priority: rule.priority,
        what,
    };
    let max_len = match rule.family {
        Some(FAMILY_V4) => 32,
        Some(FAMILY_V6) => 128,
        None if rule.src.is_none() && rule.dst.is_none() => 0,
        None => return Err(invalid("a rule with an address needs a family".to_owned())),
        Some(f) => return Err(invalid(format!("unknown family {f}"))),
    };
    for (what, p) in [("source", rule.src), ("destination", rule.dst)] {
        if let Some((_, len)) = p
            && len > max_len
        {
            return Err(invalid(format!(
                "{what} prefix length {len} is longer than {max_len}"
            )));
        }
    }
    for (what, r) in [("source", rule.sport), ("destination", rule.dport)] {
        if let Some((lo, hi)) = r
            && lo > hi
        {
            return Err(invalid(format!(
                "{what} port range {lo}-{hi} is reversed; write the low port first"
            )));
        }
    }
    if rule.dscp.is_some_and(|d| d > 63) {
        return Err(invalid("DSCP is 0-63".to_owned()));
    }
    Ok(())
}

/// The complete match of `rule`, as a leaf holds it, with its value at index `value`.
pub fn rule_match(rule: &Rule, value: u32) -> RuleMatch {
    debug_assert!(value < MAX_VALUES);
    let addr = |p: Option<([u8; 16], u8)>| {
        let (a, len) = p.unwrap_or(([0; 16], 0));
        let w = words(&a);
        let w: [u32; 4] = std::array::from_fn(|i| w[i] & prefix_word_mask(len, i));
        (w, len)
    };
    let (src, src_len) = addr(rule.src);
    let (dst, dst_len) = addr(rule.dst);
    let (mark_value, mark_mask) = rule.mark.unwrap_or((0, 0));
    let mut flags = 0;
    for (set, bit) in [
        (rule.proto.is_some(), MATCH_PROTO),
        (rule.dscp.is_some(), MATCH_DSCP),
        (rule.iif.is_some(), MATCH_IIF),
        (rule.sport.is_some(), MATCH_SPORT),
        (rule.dport.is_some(), MATCH_DPORT),
    ] {
        if set {
            flags |= bit;
        }
    }
    let (sport_lo, sport_hi) = rule.sport.unwrap_or((0, u16::MAX));
    let (dport_lo, dport_hi) = rule.dport.unwrap_or((0, u16::MAX));
    RuleMatch {
        src,
        dst,
        sport_lo,
        sport_hi,
        dport_lo,
        dport_hi,
        iif: rule.iif.unwrap_or(0),
        mark_value: mark_value & mark_mask,
        mark_mask,
        priority: rule.priority,
        value_flags: value | (flags as u32) << 24,
        src_len,
        dst_len,
        proto: rule.proto.unwrap_or(0),
        dscp: rule.dscp.unwrap_or(0) & 0x3f,
    }
}

/// Whether a leaf's rule accepts a packet of `family` with key `k` (what the data path
/// checks for each rule of the leaf it reaches).
pub fn candidate_matches(r: &RuleMatch, family: u8, k: &ClassKey) -> bool {
    let flags = r.flags();
    let port = |bit: u8, word: u32, lo: u16, hi: u16| {
        flags & bit == 0 || (lo as u32 <= word && word <= hi as u32)
    };
    let addr = |base: usize, want: &[u32; 4], len: u8| {
        let n = if family == FAMILY_V4 { 1 } else { 4 };
        (0..n).all(|i| (k.words[base + i] ^ want[i]) & prefix_word_mask(len, i) == 0)
    };
    (flags & MATCH_PROTO == 0 || r.proto as u32 == k.words[KEY_PROTO])
        && (flags & MATCH_DSCP == 0 || r.dscp as u32 == k.words[KEY_DSCP])
        && (flags & MATCH_IIF == 0 || r.iif == k.words[KEY_IIF])
        && k.words[KEY_MARK] & r.mark_mask == r.mark_value
        && port(MATCH_SPORT, k.words[KEY_SPORT], r.sport_lo, r.sport_hi)
        && port(MATCH_DPORT, k.words[KEY_DPORT], r.dport_lo, r.dport_hi)
        && addr(KEY_SRC, &r.src, r.src_len)
        && addr(KEY_DST, &r.dst, r.dst_len)
}
