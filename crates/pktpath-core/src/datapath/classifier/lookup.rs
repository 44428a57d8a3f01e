//! The data path's search, in Rust, over encoded [`Tables`]: the same walk and the same
//! checks in the same order, so tests and benchmarks can count what a packet costs.

use pktpath_common::route::{
    FAMILY_V4, KEY_WORDS, NODE_LEAF, Node, RuleMatch, RuleValue,
};

use super::{
    encode::{Tables, word_node},
    rule::{PacketFields, candidate_matches, key_of},
};

/// What one search did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The rule the data path picks.
    pub value: Option<RuleValue>,
    /// Trees walked, inner nodes passed, leaf rules checked.
    pub trees: u32,
    pub nodes: u32,
    pub candidates: u32,
}

/// Searches [`Tables`] as the data path does.
pub struct Lookup<'a> {
    tables: &'a Tables,
}

impl<'a> Lookup<'a> {
    pub fn new(tables: &'a Tables) -> Self {
        Self { tables }
    }

    fn node(&self, slot: u32) -> Node {
        word_node(self.tables.slots[slot as usize])
    }

    fn rule(&self, slot: u32) -> RuleMatch {
        let s = slot as usize;
        let words: [u64; 8] = self.tables.slots[s..s + 8].try_into().expect("a whole line");
        // SAFETY: every bit pattern is a valid RuleMatch.
        unsafe { std::mem::transmute::<[u64; 8], RuleMatch>(words) }
    }

    fn value(&self, index: u32) -> RuleValue {
        let s = (self.tables.roots.values + 4 * index) as usize;
        let words: [u64; 3] = self.tables.slots[s..s + 3].try_into().expect("a value");
        // SAFETY: every bit pattern is a valid RuleValue.
        unsafe { std::mem::transmute::<[u64; 3], RuleValue>(words) }
    }

    /// The rule value the data path picks for a packet.
    pub fn find(&self, p: &PacketFields) -> Option<RuleValue> {
        self.probe(p).value
    }

    /// The rule value the data path picks, and the work it takes.
    pub fn probe(&self, p: &PacketFields) -> Probe {
        let key = key_of(p);
        let f = usize::from(p.family != FAMILY_V4);
        let roots = &self.tables.roots;
        let mut probe = Probe::default();
        let mut best: Option<(u32, u32)> = None; // (priority, value index)
        for root in &roots.roots[f][..roots.counts[f] as usize] {
            if best.is_some_and(|(b, _)| root.min_priority >= b) {
                break;
            }
            probe.trees += 1;
            let mut n = root.node;
            while n.op & NODE_LEAF == 0 {
                probe.nodes += 1;
                let w = key.words[n.op as usize & (KEY_WORDS - 1)];
                n = self.node(n.base + ((w >> n.shift) & n.mask as u32));
            }
            for i in 0..n.mask as u32 {
                let r = self.rule(n.base + 8 * i);
                if best.is_some_and(|(b, _)| r.priority >= b) {
                    break;
                }
                probe.candidates += 1;
                if candidate_matches(&r, p.family, &key) {
                    best = Some((r.priority, r.value_index()));
                    break;
                }
            }
        }
        probe.value = best.map(|(_, v)| self.value(v));
        probe
    }
}
