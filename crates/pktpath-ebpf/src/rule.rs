//! Checking a policy's complete match ([`RuleMatch`]) against a parsed packet, shared by
//! the data path (bucket candidates) and the linear-scan baseline (every rule).
//!
//! Address fields of map values are read as aligned words: the shared types put them at
//! 4-aligned offsets (asserted here) and map values are 8-aligned.

use pktpath_common::route::{
    Bucket, ClassKey, FAMILY_V4, MATCH_DSCP, MATCH_IIF, MATCH_PROTO, RuleMatch, TupleMask,
};

use crate::packet::Parsed;

const _: () = assert!(core::mem::offset_of!(ClassKey, src).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(ClassKey, dst).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(TupleMask, src).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(TupleMask, dst).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(RuleMatch, src).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(RuleMatch, src_mask).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(RuleMatch, dst).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(RuleMatch, dst_mask).is_multiple_of(4));
const _: () = assert!(core::mem::offset_of!(Bucket, rules).is_multiple_of(4));
const _: () = assert!(size_of::<RuleMatch>().is_multiple_of(4));

/// A 16-byte address field of a map value (or of a key in per-CPU scratch) as four words.
#[inline(always)]
pub fn words(a: &[u8; 16]) -> &[u32; 4] {
    // SAFETY: same size; callers pass fields of map values or per-CPU scratch, at 4-aligned
    // offsets (asserted above) of 8-aligned values, so the reference is aligned.
    unsafe { &*(a as *const [u8; 16]).cast::<[u32; 4]>() }
}

/// Mutable [`words`].
#[inline(always)]
pub fn words_mut(a: &mut [u8; 16]) -> &mut [u32; 4] {
    // SAFETY: as for `words`.
    unsafe { &mut *(a as *mut [u8; 16]).cast::<[u32; 4]>() }
}

/// Whether a policy's complete match (a bucket candidate, or a rule of a scan) accepts
/// the packet.
#[inline(always)]
pub fn candidate_matches(r: &RuleMatch, p: &Parsed, ifindex: u32, mark: u32) -> bool {
    r.family == p.family
        && (r.flags & MATCH_PROTO == 0 || r.proto == p.proto)
        && (r.flags & MATCH_DSCP == 0 || r.dscp == p.dscp)
        && (r.flags & MATCH_IIF == 0 || r.iif == ifindex)
        && mark & r.mark_mask == r.mark_value
        && r.sport_lo <= p.sport
        && p.sport <= r.sport_hi
        && r.dport_lo <= p.dport
        && p.dport <= r.dport_hi
        && addr_matches(p.family, &p.src, &r.src_mask, &r.src)
        && addr_matches(p.family, &p.dst, &r.dst_mask, &r.dst)
}

/// `a & mask == want`; for IPv4 only the first word (the others are zero in all three).
#[inline(always)]
fn addr_matches(family: u8, a: &[u32; 4], mask: &[u8; 16], want: &[u8; 16]) -> bool {
    let (m, w) = (words(mask), words(want));
    if family == FAMILY_V4 {
        return a[0] & m[0] == w[0];
    }
    let mut diff = 0u32;
    for i in 0..4 {
        diff |= (a[i] & m[i]) ^ w[i];
    }
    diff == 0
}
