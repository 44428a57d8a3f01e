//! Laying the built trees out in the arena the data path reads: inner nodes as blocks of
//! child nodes, leaves as runs of rule lines, then the rules' values.
//!
//! The arena is read in chunks (one array map value each). A walk reads the chunk its
//! first block is in and no other: the data path keeps one chunk for the walk, and a chunk
//! looked up in the middle of a walk would cost the verifier a copy of the walk for every
//! place the lookup could be made (the program's whole budget). So no block straddles two
//! chunks, and a child whose block is in another chunk than its parent's is marked
//! [`NODE_FAR`]: the walk stops there and goes on as a walk of its own. Blocks are laid
//! out depth first, so most children sit in their parent's chunk.

use std::{borrow::Cow, collections::HashMap};

use pktpath_common::route::{
    BOUND_CLASSES, CHUNK_SLOTS, CLASS_SLICES, GenTables, KEY_CLASS, MAX_LEAF_RULES, MAX_VALUES,
    NODE_CLASS, NODE_FAR, NODE_LEAF, NODE_SIDE, Node, RuleMatch, RuleValue, SIDE_SLOTS, TreeRoot,
};

use super::{
    Params,
    build::{BNode, Forest, NodeId},
    rule::{CompileError, Rule, rule_match},
};

/// Compiled tables of one policy set, generation not yet assigned.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// The arena as 8-byte slots (a multiple of 8: whole lines).
    pub slots: Vec<u64>,
    /// Roots, tree counts and where the values start.
    pub roots: GenTables,
    pub stats: TreeStats,
}

/// The shape of the compiled trees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeStats {
    /// Rules compiled (a family-free rule counts once).
    pub rules: usize,
    /// Trees of IPv4 and IPv6.
    pub trees: [usize; 2],
    /// Distinct inner nodes (those with a side subtree among them) and leaves.
    pub inner: usize,
    pub sides: usize,
    pub leaves: usize,
    /// Rule entries in all leaves (a rule shared by several leaves counts in each).
    pub rule_entries: usize,
    /// Rules in some leaf: the others are hidden everywhere by rules before them.
    pub reachable_rules: usize,
    /// Longest path from a root (or a side subtree's root) to a leaf, in inner nodes.
    pub max_depth: u32,
    /// Child references marked [`NODE_FAR`] (their block in another chunk), and the slots
    /// of padding that keep blocks from straddling chunks.
    pub far: usize,
    pub padding: usize,
    /// Most rules in one leaf.
    pub max_leaf: usize,
}

impl Tables {
    /// Bytes of arena the tables take.
    pub fn arena_bytes(&self) -> u64 {
        8 * self.slots.len() as u64
    }
}

/// A node as its 8-byte slot.
pub(super) fn node_word(n: Node) -> u64 {
    // SAFETY: Node is 8 bytes of plain data without padding (asserted in the common crate).
    unsafe { std::mem::transmute::<Node, u64>(n) }
}

/// The node in an 8-byte slot.
pub(super) fn word_node(w: u64) -> Node {
    // SAFETY: every bit pattern is a valid Node.
    unsafe { std::mem::transmute::<u64, Node>(w) }
}

/// The children of a node that cuts on the packet class alone (all of it, with no side
/// subtree): such a node can be folded into its parent's cut.
fn class_children(forest: &Forest, id: NodeId) -> Option<&[NodeId]> {
    match &forest.nodes[id as usize] {
        BNode::Cut {
            dim,
            shift: 0,
            bits,
            side: None,
            children,
        } if *dim as usize == KEY_CLASS && 1u32 << bits == CLASS_SLICES => Some(children),
        _ => None,
    }
}

// The largest blocks fit a chunk: a cut of 2^16 children after a side subtree, a leaf.
const _: () = assert!((1 << 16) + SIDE_SLOTS <= CHUNK_SLOTS && 8 * MAX_LEAF_RULES <= CHUNK_SLOTS);

/// Per packet class, the best priority of the rules under a node that a packet of the
/// class may match (`u32::MAX`: none).
type Bounds = [u32; BOUND_CLASSES];

fn bounds_min(a: &mut Bounds, b: &Bounds) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = (*x).min(*y);
    }
}

struct Encoder<'a> {
    rules: &'a [Rule],
    slots: Vec<u64>,
    stats: TreeStats,
    /// Whether each rule is in some leaf.
    reachable: Vec<bool>,
    /// Every non-empty child reference far (tests: each node is then a walk of its own).
    far_all: bool,
    /// [`Params::class_fold_slots`].
    class_fold_slots: usize,
}

/// The arena chunk of a slot.
fn chunk_of(slot: usize) -> usize {
    slot / CHUNK_SLOTS as usize
}

impl Encoder<'_> {
    fn align_line(&mut self) {
        let len = self.slots.len().next_multiple_of(8);
        self.slots.resize(len, 0);
    }

    /// Where a block of `len` slots starts: here, or at the next chunk when it would
    /// straddle two.
    fn reserve(&mut self, len: usize) -> usize {
        let at = self.slots.len();
        let room = CHUNK_SLOTS as usize - at % CHUNK_SLOTS as usize;
        if len > room {
            self.stats.padding += room;
            self.slots.resize(at + room, 0);
        }
        self.slots.len()
    }

    /// Lays out node `id` (once), and returns its 8-byte form and the priority bounds of
    /// the rules under it.
    fn emit(
        &mut self,
        forest: &Forest,
        id: NodeId,
        depth: u32,
        done: &mut HashMap<NodeId, (Node, Bounds)>,
    ) -> (Node, Bounds) {
        self.stats.max_depth = self.stats.max_depth.max(depth);
        if let Some(&n) = done.get(&id) {
            return n;
        }
        let mut min = [u32::MAX; BOUND_CLASSES];
        let node = match &forest.nodes[id as usize] {
            BNode::Leaf(list) => {
                self.stats.leaves += 1;
                self.stats.rule_entries += list.len();
                self.stats.max_leaf = self.stats.max_leaf.max(list.len());
                self.align_line();
                let base = self.reserve(8 * list.len()) as u32;
                for &g in list {
                    self.reachable[g as usize] = true;
                    let m = rule_match(&self.rules[g as usize], g);
                    for (class, b) in min.iter_mut().enumerate() {
                        if m.may_match_class(class as u32) {
                            *b = (*b).min(m.priority);
                        }
                    }
                    // SAFETY: RuleMatch is 64 bytes of plain data (asserted in the common crate).
                    let words = unsafe { std::mem::transmute::<RuleMatch, [u64; 8]>(m) };
                    self.slots.extend_from_slice(&words);
                }
                Node {
                    op: NODE_LEAF,
                    shift: 0,
                    mask: list.len() as u16,
                    base: if list.is_empty() { 0 } else { base },
                }
            }
            BNode::Cut {
                dim,
                shift,
                bits,
                side,
                children,
            } => {
                self.stats.inner += 1;
                // Children that cut on the class alone are folded in: the walk then reads
                // one node fewer (a node read is the largest part of a walk's cost).
                let fold = *dim as usize != KEY_CLASS
                    && children.len() * CLASS_SLICES as usize <= self.class_fold_slots
                    && children
                        .iter()
                        .any(|&c| class_children(forest, c).is_some());
                let children: Cow<[NodeId]> = if fold {
                    children
                        .iter()
                        .flat_map(|&c| match class_children(forest, c) {
                            Some(by_class) => by_class.to_vec(),
                            None => vec![c; CLASS_SLICES as usize],
                        })
                        .collect()
                } else {
                    Cow::Borrowed(children)
                };
                // A side subtree's root and its priority bounds come first.
                let first_at = if side.is_some() {
                    SIDE_SLOTS as usize
                } else {
                    0
                };
                let base = self.reserve(first_at + children.len());
                let first = base + first_at;
                self.slots.resize(first + children.len(), 0);
                if let Some(side) = *side {
                    self.stats.sides += 1;
                    // A side subtree is walked on its own: its depth counts from 0.
                    let (n, side_min) = self.emit(forest, side, 0, done);
                    self.slots[base] = node_word(n);
                    for (c, &bound) in side_min.iter().enumerate() {
                        self.slots[base + 1 + c] = u64::from(bound);
                    }
                    bounds_min(&mut min, &side_min);
                }
                for (c, &child) in children.iter().enumerate() {
                    let (mut n, child_min) = self.emit(forest, child, depth + 1, done);
                    let empty = n.op & NODE_LEAF != 0 && n.mask == 0;
                    if !empty && (self.far_all || chunk_of(n.base as usize) != chunk_of(base)) {
                        n.op |= NODE_FAR;
                        self.stats.far += 1;
                    }
                    self.slots[first + c] = node_word(n);
                    bounds_min(&mut min, &child_min);
                }
                Node {
                    op: *dim
                        | if side.is_some() { NODE_SIDE } else { 0 }
                        | if fold { NODE_CLASS } else { 0 },
                    shift: *shift,
                    mask: ((1u32 << bits) - 1) as u16,
                    base: base as u32,
                }
            }
        };
        done.insert(id, (node, min));
        (node, min)
    }
}

/// Lays out each family's forest (IPv4 first) and the values of `rules`, as `params` say
/// (class cuts folded into their parents' blocks; with `far_all`, every child reference
/// far).
pub(super) fn encode(
    rules: &[Rule],
    families: &[(u8, Forest)],
    params: &Params,
) -> Result<Tables, CompileError> {
    if rules.len() >= MAX_VALUES as usize {
        return Err(CompileError::TooManyRules {
            needed: rules.len(),
            max: MAX_VALUES - 1,
        });
    }
    let mut e = Encoder {
        rules,
        slots: Vec::new(),
        reachable: vec![false; rules.len()],
        far_all: params.far_all,
        class_fold_slots: params.class_fold_slots,
        stats: TreeStats {
            rules: rules.len(),
            ..Default::default()
        },
    };
    let mut roots = GenTables::default();
    for (f, (_, forest)) in families.iter().enumerate() {
        let mut done = HashMap::new();
        for (t, tree) in forest.trees.iter().enumerate() {
            let (node, bounds) = e.emit(forest, tree.root, 0, &mut done);
            roots.roots[f][t] = TreeRoot { node, bounds };
        }
        roots.counts[f] = forest.trees.len() as u32;
        e.stats.trees[f] = forest.trees.len();
    }
    e.stats.reachable_rules = e.reachable.iter().filter(|&&r| r).count();
    e.align_line();
    roots.values = e.slots.len() as u32;
    for rule in rules {
        let v = RuleValue {
            priority: rule.priority,
            ..rule.value
        };
        // SAFETY: RuleValue is 24 bytes of plain data (asserted in the common crate).
        let words = unsafe { std::mem::transmute::<RuleValue, [u64; 3]>(v) };
        e.slots.extend_from_slice(&words);
        e.slots.push(0);
    }
    e.align_line();
    Ok(Tables {
        slots: e.slots,
        roots,
        stats: e.stats,
    })
}
