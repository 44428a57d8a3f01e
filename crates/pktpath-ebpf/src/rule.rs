//! A packet's key words, and checking a rule's complete match ([`RuleMatch`]) against
//! them: shared by the data path (the rules of the leaf a packet reaches) and the
//! linear-scan baseline (every rule).

use pktpath_common::route::{
    ClassKey, KEY_CLASS, KEY_DPORT, KEY_DSCP, KEY_DST, KEY_IIF, KEY_MARK, KEY_PROTO, KEY_SPORT,
    KEY_SRC, MATCH_DPORT, MATCH_DSCP, MATCH_IIF, MATCH_PROTO, MATCH_SPORT, NO_PORT, RuleMatch,
    packet_class, prefix_word_mask,
};

use crate::packet::Parsed;

/// Writes the packet's key words into `k` (addresses in host order, most significant word
/// first; [`NO_PORT`] for a packet without ports).
#[inline(always)]
pub fn fill_key(k: &mut ClassKey, p: &Parsed, ifindex: u32, mark: u32) {
    let w = &mut k.words;
    for i in 0..4 {
        w[KEY_SRC + i] = u32::from_be(p.src[i]);
        w[KEY_DST + i] = u32::from_be(p.dst[i]);
    }
    let (sport, dport) = if p.ports {
        (p.sport as u32, p.dport as u32)
    } else {
        (NO_PORT, NO_PORT)
    };
    w[KEY_SPORT] = sport;
    w[KEY_DPORT] = dport;
    w[KEY_PROTO] = p.proto as u32;
    w[KEY_IIF] = ifindex;
    w[KEY_DSCP] = p.dscp as u32;
    w[KEY_MARK] = mark;
    w[KEY_CLASS] = packet_class(p.proto as u32, sport, dport);
}

/// Whether rule `r` accepts the packet with key `k` (`v6`: compare all four address words,
/// else only the first).
#[inline(always)]
pub fn candidate_matches(r: &RuleMatch, v6: bool, k: &ClassKey) -> bool {
    let w = &k.words;
    let flags = r.flags();
    if flags & MATCH_PROTO != 0 && r.proto as u32 != w[KEY_PROTO] {
        return false;
    }
    if flags & MATCH_DSCP != 0 && r.dscp as u32 != w[KEY_DSCP] {
        return false;
    }
    if flags & MATCH_IIF != 0 && r.iif != w[KEY_IIF] {
        return false;
    }
    if w[KEY_MARK] & r.mark_mask != r.mark_value {
        return false;
    }
    if flags & MATCH_SPORT != 0
        && (w[KEY_SPORT] < r.sport_lo as u32 || w[KEY_SPORT] > r.sport_hi as u32)
    {
        return false;
    }
    if flags & MATCH_DPORT != 0
        && (w[KEY_DPORT] < r.dport_lo as u32 || w[KEY_DPORT] > r.dport_hi as u32)
    {
        return false;
    }
    addr_matches(v6, &w[KEY_SRC..KEY_SRC + 4], &r.src, r.src_len)
        && addr_matches(v6, &w[KEY_DST..KEY_DST + 4], &r.dst, r.dst_len)
}

/// Whether the address words `a` are in the prefix `want`/`len`.
#[inline(always)]
fn addr_matches(v6: bool, a: &[u32], want: &[u32; 4], len: u8) -> bool {
    if !v6 {
        return (a[0] ^ want[0]) & prefix_word_mask(len, 0) == 0;
    }
    let mut diff = 0u32;
    for i in 0..4 {
        diff |= (a[i] ^ want[i]) & prefix_word_mask(len, i);
    }
    diff == 0
}
