//! The data path's search, in Rust, over encoded [`Tables`]: the same walk and the same
//! checks in the same order, so tests and benchmarks can count what a packet costs.

use std::cell::Cell;

use pktpath_common::route::{
    CHUNK_SLOT_BITS, CLASS_SLICES, FAMILY_V4, KEY_CLASS, LEAF_SEGMENT, NODE_CLASS, NODE_FAR,
    NODE_LEAF, NODE_SIDE, NODE_WORD, Node, PRUNE_PER_STEP, RuleMatch, RuleValue, SIDE_SLOTS,
};

use super::{
    encode::{Tables, word_node},
    rule::{candidate_matches, key_of},
};
use crate::route::packet::{Ifindex, PacketFields};

/// What one search did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The rule the data path picks.
    pub value: Option<RuleValue>,
    /// Subtrees walked (roots and side subtrees), inner nodes passed, leaf rules checked.
    pub trees: u32,
    pub nodes: u32,
    pub candidates: u32,
    /// Steps of the search loop (each walks a subtree, or drops up to [`PRUNE_PER_STEP`]
    /// popped ones by their priority bound, or finds the stack empty), as the programs
    /// with `may_goto` take them, and the subtrees dropped by their bound.
    pub steps: u32,
    pub pruned: u32,
    /// Of the walks: side subtrees, the rests of long leaves, and paths going on in
    /// another chunk.
    pub sides: u32,
    pub rests: u32,
    pub jumps: u32,
    /// Walks (and the value read) that read another arena chunk than the read before,
    /// from chunk 0 (the data path looks a chunk up at the start of every walk).
    pub chunk_switches: u32,
    /// Of the walks, those that did not better the match in hand, and their inner nodes
    /// and rule checks: the work a tighter priority bound would save.
    pub wasted_walks: u32,
    pub wasted_nodes: u32,
    pub wasted_candidates: u32,
}

/// Searches [`Tables`] as the data path does.
pub struct Lookup<'a> {
    tables: &'a Tables,
    /// The arena chunk the data path would hold during a search, and the changes so far.
    chunk: Cell<(u32, u32)>,
}

impl<'a> Lookup<'a> {
    pub fn new(tables: &'a Tables) -> Self {
        Self {
            tables,
            chunk: Cell::new((0, 0)),
        }
    }

    /// Follows the data path's kept chunk: it changes when a walk starts, and for the value.
    fn enter(&self, slot: u32) {
        let (id, n) = self.chunk.get();
        let c = slot >> CHUNK_SLOT_BITS;
        if c != id {
            self.chunk.set((c, n + 1));
        }
    }

    /// A read inside a walk: from the chunk the walk started in (the encoder's promise; the
    /// data path would read another chunk's slot there).
    fn read(&self, slot: u32) {
        assert_eq!(
            slot >> CHUNK_SLOT_BITS,
            self.chunk.get().0,
            "a walk left its chunk at slot {slot}"
        );
    }

    fn node(&self, slot: u32) -> Node {
        self.read(slot);
        word_node(self.tables.slots[slot as usize])
    }

    fn rule(&self, slot: u32) -> RuleMatch {
        self.read(slot);
        let s = slot as usize;
        let words: [u64; 8] = self.tables.slots[s..s + 8]
            .try_into()
            .expect("a whole line");
        // SAFETY: every bit pattern is a valid RuleMatch.
        unsafe { std::mem::transmute::<[u64; 8], RuleMatch>(words) }
    }

    fn value(&self, index: u32) -> RuleValue {
        let s = (self.tables.roots.values + 4 * index) as usize;
        let words: [u64; 3] = self.tables.slots[s..s + 3].try_into().expect("a value");
        // SAFETY: every bit pattern is a valid RuleValue.
        unsafe { std::mem::transmute::<[u64; 3], RuleValue>(words) }
    }

    /// Checks a leaf's rules in order, keeping the best match; returns the rest of a leaf
    /// longer than [`LEAF_SEGMENT`] when it must be checked too (as the data path walks it
    /// next).
    fn scan(
        &self,
        leaf: Node,
        p: &PacketFields<Ifindex>,
        key: &pktpath_common::route::ClassKey,
        best: &mut Option<(u32, u32)>,
        probe: &mut Probe,
    ) -> Option<Node> {
        let count = leaf.mask as u32;
        for i in 0..count.min(LEAF_SEGMENT) {
            let r = self.rule(leaf.base + 8 * i);
            if best.is_some_and(|(b, _)| r.priority >= b) {
                return None;
            }
            probe.candidates += 1;
            if candidate_matches(&r, p.family(), key) {
                *best = Some((r.priority, r.value_index()));
                return None;
            }
        }
        (count > LEAF_SEGMENT).then(|| Node {
            op: NODE_LEAF,
            shift: 0,
            mask: (count - LEAF_SEGMENT) as u16,
            base: leaf.base + 8 * LEAF_SEGMENT,
        })
    }

    /// The rule value the data path picks for a packet.
    pub fn find(&self, p: &PacketFields<Ifindex>) -> Option<RuleValue> {
        self.probe(p).value
    }

    /// The rule value the data path picks, and the work it takes.
    pub fn probe(&self, p: &PacketFields<Ifindex>) -> Probe {
        let key = key_of(p);
        self.chunk.set((0, 0));
        let f = usize::from(p.family() != FAMILY_V4);
        let tables = &self.tables.roots;
        let mut probe = Probe::default();
        let mut best: Option<(u32, u32)> = None; // (priority, value index)
        // As the data path: a stack of subtrees to walk, the roots pushed last first (so
        // popped in order), each with the best priority its rules have (0 for the rest of a
        // long leaf: unknown); each walk pushes the side subtrees on its path.
        let class = key.words[KEY_CLASS] as usize;
        let mut pending: Vec<(Node, u32)> = tables.roots[f][..tables.counts[f] as usize]
            .iter()
            .rev()
            .map(|r| (r.node, r.bounds[class]))
            .collect();
        // Each step walks a subtree, popping before it those whose rules cannot beat the
        // match in hand (up to PRUNE_PER_STEP of them; a step that drops that many ends
        // there); the loop ends when a step finds the stack empty, or leaves it empty.
        'steps: loop {
            probe.steps += 1;
            let mut next = None;
            for _ in 0..PRUNE_PER_STEP {
                let Some((n, min)) = pending.pop() else {
                    break 'steps;
                };
                if best.is_none_or(|(b, _)| min < b) {
                    next = Some(n);
                    break;
                }
                probe.pruned += 1;
            }
            let Some(mut n) = next else {
                continue;
            };
            probe.trees += 1;
            self.enter(n.base);
            let (b0, n0, c0) = (best, probe.nodes, probe.candidates);
            let mut far = None;
            while n.op & NODE_LEAF == 0 {
                probe.nodes += 1;
                let side = if n.op & NODE_SIDE != 0 { SIDE_SLOTS } else { 0 };
                if side != 0 {
                    probe.sides += 1;
                    let at = n.base + 1 + class as u32;
                    self.read(at);
                    let min = self.tables.slots[at as usize] as u32;
                    pending.push((self.node(n.base), min));
                }
                let w = key.words[(n.op & NODE_WORD) as usize];
                let mut slice = (w >> n.shift) & n.mask as u32;
                if n.op & NODE_CLASS != 0 {
                    slice = slice * CLASS_SLICES + class as u32;
                }
                n = self.node(n.base + side + slice);
                if n.op & NODE_FAR != 0 {
                    n.op &= !NODE_FAR;
                    far = Some(n);
                    break;
                }
            }
            if let Some(next) = far {
                probe.jumps += 1;
                pending.push((next, 0));
            } else if let Some(rest) = self.scan(n, p, &key, &mut best, &mut probe) {
                probe.rests += 1;
                pending.push((rest, 0));
            }
            // (A walk that goes on in another chunk is one with its continuation.)
            if far.is_none() && best == b0 {
                probe.wasted_walks += 1;
                probe.wasted_nodes += probe.nodes - n0;
                probe.wasted_candidates += probe.candidates - c0;
            }
            if pending.is_empty() {
                break;
            }
        }
        if let Some((_, v)) = best {
            self.enter(tables.values + 4 * v);
        }
        probe.chunk_switches = self.chunk.get().1;
        probe.value = best.map(|(_, v)| self.value(v));
        probe
    }
}
