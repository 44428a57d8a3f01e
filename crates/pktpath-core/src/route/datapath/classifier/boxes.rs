//! Rules as boxes over the key words, and the regions of key space that tree nodes stand
//! for.
//!
//! Every word is matched ternary: by pieces of (value, mask). A prefix, an exact value and
//! a mark match are one piece; a port range is the union of its prefix cover (a few
//! pieces); the packet class word ([`KEY_CLASS`]), which no rule names, is the union of
//! the classes the rule may match. A node's region fixes, per word, the bits the cuts
//! above it took; its slices' regions fix the cut bits too. Ports live in a 17-bit
//! domain: 0-65535, and [`NO_PORT`] for packets without ports, which only a rule without a
//! port constraint (the empty piece) reaches.

use pktpath_common::route::{
    BOUND_CLASSES, KEY_CLASS, KEY_DPORT, KEY_DSCP, KEY_DST, KEY_IIF, KEY_MARK, KEY_PROTO,
    KEY_SPORT, KEY_SRC, NO_PORT, prefix_word_mask,
};

use super::rule::{Rule, rule_match};

/// Key words a tree may cut (every word of a [`pktpath_common::route::ClassKey`] in use).
pub(super) const DIMS: usize = 15;

/// Bits `mask` of a word equal to those of `value`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Piece {
    pub value: u32,
    pub mask: u32,
}

impl Piece {
    /// Any word.
    pub const ANY: Piece = Piece { value: 0, mask: 0 };

    /// Whether some word matches both this piece and the fixed bits `g`.
    pub fn meets(self, g: Piece) -> bool {
        (self.value ^ g.value) & self.mask & g.mask == 0
    }

    /// Whether every word with the fixed bits `g` matches this piece.
    pub fn covers(self, g: Piece) -> bool {
        self.mask & !g.mask == 0 && (self.value ^ g.value) & self.mask == 0
    }
}

/// The fixed bits of each word.
pub(super) type Region = [Piece; DIMS];

/// The bits of the class word (classes 0 to [`BOUND_CLASSES`] - 1).
const CLASS_BITS: u32 = (BOUND_CLASSES as u32).next_power_of_two() - 1;

/// The bits a word can have set.
pub(super) fn width(d: usize) -> u32 {
    match d {
        KEY_PROTO => 0xff,
        KEY_DSCP => 0x3f,
        KEY_SPORT | KEY_DPORT => NO_PORT | 0xffff,
        KEY_CLASS => CLASS_BITS,
        _ => u32::MAX,
    }
}

/// Words that hold unions of pieces (see [`BRule::pieces`]).
pub(super) fn is_union(d: usize) -> bool {
    d == KEY_SPORT || d == KEY_DPORT || d == KEY_CLASS
}

/// A cut: `2^bits` slices of word `dim` by its bits `shift..shift + bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cut {
    pub dim: usize,
    pub shift: u32,
    pub bits: u32,
}

impl Cut {
    pub fn cells(self) -> usize {
        1 << self.bits
    }
}

/// The region of slice `c` of `cut` in `region`.
pub(super) fn child_region(region: &Region, cut: Cut, c: u32) -> Region {
    let mut child = *region;
    let g = &mut child[cut.dim];
    g.value |= c << cut.shift;
    g.mask |= ((1u32 << cut.bits) - 1) << cut.shift;
    child
}

/// The keys in both regions (their fixed bits agree where both fix a bit).
pub(super) fn intersect(a: &Region, b: &Region) -> Region {
    std::array::from_fn(|d| Piece {
        value: a[d].value | b[d].value,
        mask: a[d].mask | b[d].mask,
    })
}

/// The smallest set of disjoint (value, prefix length) port prefixes covering `lo..=hi`.
pub(super) fn range_to_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    out
}

/// The pieces of a port constraint: its range's prefixes, each also requiring a port (the
/// [`NO_PORT`] bit clear); none, any port word.
fn port_pieces(range: Option<(u16, u16)>) -> Vec<Piece> {
    let Some((lo, hi)) = range else {
        return vec![Piece::ANY];
    };
    range_to_prefixes(lo, hi)
        .into_iter()
        .map(|(value, len)| Piece {
            value: value as u32,
            mask: NO_PORT | ((0xffffu32 << (16 - len as u32)) & 0xffff),
        })
        .collect()
}

/// A rule as a box.
pub(super) struct BRule {
    /// The piece of each word other than the ports.
    one: [Piece; DIMS],
    /// The pieces of the source and destination port ranges.
    ports: [Vec<Piece>; 2],
    /// The packet classes the rule may match (one piece each; any when all).
    classes: Vec<Piece>,
    pub priority: u32,
    /// Index in the compiled rule list.
    pub global: u32,
}

impl BRule {
    pub fn new(rule: &Rule, global: u32) -> Self {
        let mut one = [Piece::ANY; DIMS];
        for (base, p) in [(KEY_SRC, rule.src), (KEY_DST, rule.dst)] {
            if let Some((addr, len)) = p {
                for (i, piece) in one[base..base + 4].iter_mut().enumerate() {
                    let w = u32::from_be_bytes([
                        addr[4 * i],
                        addr[4 * i + 1],
                        addr[4 * i + 2],
                        addr[4 * i + 3],
                    ]);
                    let mask = prefix_word_mask(len, i);
                    *piece = Piece {
                        value: w & mask,
                        mask,
                    };
                }
            }
        }
        let exact = |v: Option<u32>, mask: u32| {
            v.map_or(Piece::ANY, |v| Piece {
                value: v & mask,
                mask,
            })
        };
        one[KEY_PROTO] = exact(rule.proto.map(u32::from), 0xff);
        one[KEY_IIF] = exact(rule.iif, u32::MAX);
        one[KEY_DSCP] = exact(rule.dscp.map(u32::from), 0x3f);
        one[KEY_MARK] = rule.mark.map_or(Piece::ANY, |(v, m)| Piece {
            value: v & m,
            mask: m,
        });
        let m = rule_match(rule, 0);
        let mut classes: Vec<Piece> = (0..BOUND_CLASSES as u32)
            .filter(|&c| m.may_match_class(c))
            .map(|c| Piece {
                value: c,
                mask: width(KEY_CLASS),
            })
            .collect();
        if classes.len() == BOUND_CLASSES {
            classes = vec![Piece::ANY];
        }
        Self {
            one,
            classes,
            ports: [port_pieces(rule.sport), port_pieces(rule.dport)],
            priority: rule.priority,
            global,
        }
    }

    /// The rule's pieces on word `d` (one but for port ranges).
    pub fn pieces(&self, d: usize) -> &[Piece] {
        match d {
            KEY_SPORT => &self.ports[0],
            KEY_DPORT => &self.ports[1],
            KEY_CLASS => &self.classes,
            _ => std::slice::from_ref(&self.one[d]),
        }
    }

    /// Whether the rule matches every packet of `region` (on the words `dims`). A port
    /// range covers when one of its prefixes does: a sufficient test, which is all
    /// dropping hidden rules needs. The class word is left out: it follows from the
    /// protocol and ports, so a rule that covers the region on those covers its packets
    /// whatever their class (a TCP rule never covers a region that does not fix the
    /// class, though it matches all of its TCP packets).
    pub fn covers(&self, region: &Region, dims: &[usize]) -> bool {
        dims.iter()
            .all(|&d| d == KEY_CLASS || self.pieces(d).iter().any(|p| p.covers(region[d])))
    }

    /// The prefix length of an address (source at [`KEY_SRC`], destination at
    /// [`KEY_DST`]).
    pub fn prefix_len(&self, base: usize) -> u32 {
        debug_assert!(base == KEY_SRC || base == KEY_DST);
        self.one[base..base + 4]
            .iter()
            .map(|p| p.mask.count_ones())
            .sum()
    }
}

/// The words of an IPv6 tree (IPv4 trees use only the first word of each address).
pub(super) const ALL_DIMS: [usize; DIMS] = [
    KEY_SRC,
    KEY_SRC + 1,
    KEY_SRC + 2,
    KEY_SRC + 3,
    KEY_DST,
    KEY_DST + 1,
    KEY_DST + 2,
    KEY_DST + 3,
    KEY_SPORT,
    KEY_DPORT,
    KEY_PROTO,
    KEY_IIF,
    KEY_DSCP,
    KEY_MARK,
    KEY_CLASS,
];

/// The words of an IPv4 tree.
pub(super) const V4_DIMS: [usize; 9] = [
    KEY_SRC, KEY_DST, KEY_SPORT, KEY_DPORT, KEY_PROTO, KEY_IIF, KEY_DSCP, KEY_MARK, KEY_CLASS,
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `range_to_prefixes(lo, hi)` covers `lo..=hi` exactly, each port once, with at most 30
    /// aligned prefixes.
    fn assert_exact_cover(lo: u16, hi: u16) {
        let prefixes = range_to_prefixes(lo, hi);
        assert!(prefixes.len() <= 30, "{lo}-{hi}: {}", prefixes.len());
        let mut covered = vec![0u8; 65536];
        for (value, len) in prefixes {
            let size = 1u32 << (16 - len);
            assert_eq!(value as u32 % size, 0, "{lo}-{hi}: {value}/{len} unaligned");
            for port in value as u32..value as u32 + size {
                covered[port as usize] += 1;
            }
        }
        for port in 0..65536u32 {
            let want = (lo as u32..=hi as u32).contains(&port) as u8;
            assert_eq!(covered[port as usize], want, "{lo}-{hi}: port {port}");
        }
    }

    #[test]
    fn edge_port_ranges_become_exact_disjoint_prefix_covers() {
        let edges = [
            (0, 65535),
            (0, 0),
            (1, 1),
            (65535, 65535),
            (1024, 65535),
            (0, 1023),
            (8000, 8999),
        ];
        for (lo, hi) in edges {
            assert_exact_cover(lo, hi);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn port_ranges_become_exact_disjoint_prefix_covers(a: u16, b: u16) {
            assert_exact_cover(a.min(b), a.max(b));
        }
    }

    #[test]
    fn port_pieces_exclude_packets_without_ports() {
        for p in port_pieces(Some((0, 65535))) {
            assert!(!p.meets(Piece {
                value: NO_PORT,
                mask: u32::MAX
            }));
        }
        assert!(port_pieces(None)[0].meets(Piece {
            value: NO_PORT,
            mask: u32::MAX
        }));
    }
}
