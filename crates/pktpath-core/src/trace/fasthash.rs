//! The hash of the trace reader's per-event maps (journeys by skb address, names by
//! namespace inode, ...) and of packet signatures: foldhash's fast hasher, with a fixed
//! seed so that signatures and map order are the same from run to run. The standard
//! SipHash was a tenth of the time per event. Keys here are kernel addresses, inodes and
//! packet headers, in maps that are bounded and swept, so resistance to chosen collisions
//! matters less than speed.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hash},
};

use foldhash::fast::FixedState;

/// A `HashMap` with foldhash.
pub type FastMap<K, V> = HashMap<K, V, FixedState>;

/// One value's hash.
pub fn hash_one(v: impl Hash) -> u64 {
    FixedState::default().hash_one(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skb_addresses_spread_over_the_low_bits() {
        // 256 addresses 0x100 apart: their low 8 bits of hash must not all be equal.
        let low: std::collections::HashSet<u64> = (0..256u64)
            .map(|i| hash_one(0xffff_8880_0400_0000u64 + i * 0x100) & 0xff)
            .collect();
        assert!(low.len() > 128, "{} distinct low bytes", low.len());
    }

    #[test]
    fn equal_keys_hash_equal_and_different_ones_differ() {
        assert_eq!(hash_one(("udp", 5u16)), hash_one(("udp", 5u16)));
        assert_ne!(hash_one(("udp", 5u16)), hash_one(("tcp", 5u16)));
        assert_ne!(hash_one(("ab", "c")), hash_one(("a", "bc")));
    }
}
