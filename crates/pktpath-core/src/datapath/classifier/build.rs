//! Building one family's decision trees from its rules.
//!
//! A rule is a box over the key words: a value/mask pair on words matched by prefix or
//! exact value (addresses, protocol, interface, DSCP, mark), an inclusive range on the port
//! words. A node's region is the set of keys that reach it: bits fixed by the cuts above it
//! on ternary words, an aligned block on port words (so a port cut always takes the top
//! unfixed bits of the block).

use std::collections::HashMap;

use pktpath_common::route::{
    FAMILY_V4, KEY_DPORT, KEY_DSCP, KEY_DST, KEY_IIF, KEY_MARK, KEY_PROTO, KEY_SPORT, KEY_SRC,
    MAX_CHUNKS, MAX_DEPTH, MAX_LEAF_RULES, NO_PORT, prefix_word_mask,
};

use super::{
    Params,
    rule::{CompileError, Rule},
};

/// Key words a tree may cut (every word of a [`pktpath_common::route::ClassKey`] in use).
const DIMS: usize = 14;
/// Widest cut: 2^16 children.
const MAX_CUT_BITS: u32 = 16;
/// The port words' domain: 0-65535, and [`NO_PORT`] for packets without ports.
const PORT_BITS: u32 = 17;
/// Arena slots (8 bytes) one generation may use.
const MAX_SLOTS: u64 = (MAX_CHUNKS as u64) << pktpath_common::route::CHUNK_SLOT_BITS;

/// Index of a node in a [`Forest`].
pub(super) type NodeId = u32;

/// A built node. Leaves name rules by their index in the compiled rule list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum BNode {
    Leaf(Vec<u32>),
    Cut {
        dim: u8,
        shift: u8,
        bits: u8,
        children: Vec<NodeId>,
    },
}

/// One tree: its root and the best priority among its rules.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tree {
    pub root: NodeId,
    pub min_priority: u32,
}

/// A family's trees over their shared nodes.
#[derive(Debug, Default)]
pub(super) struct Forest {
    pub nodes: Vec<BNode>,
    pub trees: Vec<Tree>,
}

/// A rule's constraint on one word: ternary `(value, mask)`, or for port words the
/// inclusive range `(lo, hi)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Cons {
    a: u32,
    b: u32,
}

fn is_port(d: usize) -> bool {
    d == KEY_SPORT || d == KEY_DPORT
}

/// The bits a ternary word can have set.
fn width(d: usize) -> u32 {
    match d {
        KEY_PROTO => 0xff,
        KEY_DSCP => 0x3f,
        _ => u32::MAX,
    }
}

/// The words a family's trees may cut: IPv4 uses only the first word of each address.
fn dims(family: u8) -> &'static [usize] {
    const V4: [usize; 8] = [
        KEY_SRC, KEY_DST, KEY_SPORT, KEY_DPORT, KEY_PROTO, KEY_IIF, KEY_DSCP, KEY_MARK,
    ];
    const V6: [usize; DIMS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
    if family == FAMILY_V4 { &V4 } else { &V6 }
}

type Region = [Cons; DIMS];

fn full_region() -> Region {
    let mut r = [Cons::default(); DIMS];
    for d in [KEY_SPORT, KEY_DPORT] {
        r[d] = Cons {
            a: 0,
            b: (1 << PORT_BITS) - 1,
        };
    }
    r
}

/// A rule as a box.
struct BRule {
    cons: [Cons; DIMS],
    priority: u32,
    /// Index in the compiled rule list.
    global: u32,
}

impl BRule {
    fn new(rule: &Rule, global: u32) -> Self {
        let mut cons = [Cons::default(); DIMS];
        for (base, p) in [(KEY_SRC, rule.src), (KEY_DST, rule.dst)] {
            if let Some((addr, len)) = p {
                for i in 0..4 {
                    let w = u32::from_be_bytes([
                        addr[4 * i],
                        addr[4 * i + 1],
                        addr[4 * i + 2],
                        addr[4 * i + 3],
                    ]);
                    let m = prefix_word_mask(len, i);
                    cons[base + i] = Cons { a: w & m, b: m };
                }
            }
        }
        for (d, r) in [(KEY_SPORT, rule.sport), (KEY_DPORT, rule.dport)] {
            cons[d] = match r {
                Some((lo, hi)) => Cons {
                    a: lo as u32,
                    b: hi as u32,
                },
                None => Cons { a: 0, b: NO_PORT },
            };
        }
        let exact = |v: Option<u32>, m: u32| v.map_or(Cons::default(), |v| Cons { a: v & m, b: m });
        cons[KEY_PROTO] = exact(rule.proto.map(u32::from), 0xff);
        cons[KEY_IIF] = exact(rule.iif, u32::MAX);
        cons[KEY_DSCP] = exact(rule.dscp.map(u32::from), 0x3f);
        cons[KEY_MARK] = rule
            .mark
            .map_or(Cons::default(), |(v, m)| Cons { a: v & m, b: m });
        Self {
            cons,
            priority: rule.priority,
            global,
        }
    }

    fn covers(&self, region: &Region, dims: &[usize]) -> bool {
        dims.iter().all(|&d| {
            let (c, g) = (self.cons[d], region[d]);
            if is_port(d) {
                c.a <= g.a && c.b >= g.b
            } else {
                c.b & !g.b == 0 && (c.a ^ g.a) & c.b == 0
            }
        })
    }
}

/// A cut: `2^bits` slices of word `dim` from bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    dim: usize,
    shift: u32,
    bits: u32,
}

/// How a cut spreads a node's rules: the largest child and the copies in all children.
#[derive(Clone, Copy, Debug)]
struct Spread {
    max: usize,
    sum: usize,
}

struct Builder<'a> {
    family: u8,
    params: Params,
    rules: Vec<BRule>,
    nodes: &'a mut Vec<BNode>,
    intern: &'a mut HashMap<BNode, NodeId>,
    /// Arena slots the distinct nodes so far take.
    slots: &'a mut u64,
    /// Leaves holding each rule (by local index), for the error that names the rule
    /// copied most.
    copies: Vec<usize>,
    /// Scratch: per-slice counts.
    diff: Vec<i64>,
}

/// Builds the trees of one family: `members` index `rules` (all of this family's, best
/// priority first).
pub(super) fn build_family(
    rules: &[Rule],
    members: &[usize],
    family: u8,
    params: Params,
) -> Result<Forest, CompileError> {
    let mut forest = Forest::default();
    let mut intern = HashMap::new();
    let mut slots = 0u64;
    let boxes: Vec<BRule> = members
        .iter()
        .map(|&i| BRule::new(&rules[i], i as u32))
        .collect();
    let groups = partition(&boxes, family);
    let mut b = Builder {
        family,
        params,
        copies: vec![0; boxes.len()],
        rules: boxes,
        nodes: &mut forest.nodes,
        intern: &mut intern,
        slots: &mut slots,
        diff: Vec::new(),
    };
    let mut trees = Vec::new();
    for group in groups {
        let min_priority = group.iter().map(|&i| b.rules[i as usize].priority).min();
        let Some(min_priority) = min_priority else {
            continue;
        };
        let root = b.build(group, full_region(), 0)?;
        trees.push(Tree { root, min_priority });
    }
    trees.sort_by_key(|t| t.min_priority);
    forest.trees = trees;
    Ok(forest)
}

/// Length from which an address prefix counts as specific enough to cut a tree on.
fn specific_len(family: u8) -> u8 {
    if family == FAMILY_V4 { 16 } else { 32 }
}

/// Splits rules (local indexes, priority order) into the groups that become trees: a
/// specific destination; else a specific source; else neither.
fn partition(rules: &[BRule], family: u8) -> Vec<Vec<u32>> {
    let specific = specific_len(family) as u32;
    let len = |r: &BRule, base: usize| -> u32 {
        (0..4).map(|i| r.cons[base + i].b.count_ones()).sum()
    };
    let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
    for (i, r) in rules.iter().enumerate() {
        let g = if len(r, KEY_DST) >= specific {
            0
        } else if len(r, KEY_SRC) >= specific {
            1
        } else {
            2
        };
        groups[g].push(i as u32);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

impl Builder<'_> {
    fn intern(&mut self, node: BNode) -> Result<NodeId, CompileError> {
        if let Some(&id) = self.intern.get(&node) {
            return Ok(id);
        }
        let slots = match &node {
            BNode::Leaf(rules) => 8 * rules.len() as u64,
            BNode::Cut { bits, .. } => 1 << bits,
        };
        *self.slots += slots;
        if *self.slots > MAX_SLOTS {
            let (local, copies) = self
                .copies
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map_or((0, 0), |(i, c)| (i, *c));
            return Err(CompileError::TooLarge {
                needed: *self.slots * 8 >> 20,
                max: MAX_SLOTS * 8 >> 20,
                priority: self.rules.get(local).map_or(0, |r| r.priority),
                copies,
            });
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(node.clone());
        self.intern.insert(node, id);
        Ok(id)
    }

    fn leaf(&mut self, list: &[u32]) -> Result<NodeId, CompileError> {
        let globals: Vec<u32> = list.iter().map(|&i| self.rules[i as usize].global).collect();
        let before = self.nodes.len();
        let id = self.intern(BNode::Leaf(globals))?;
        if self.nodes.len() > before {
            for &i in list {
                self.copies[i as usize] += 1;
            }
        }
        Ok(id)
    }

    fn build(&mut self, list: Vec<u32>, region: Region, depth: u32) -> Result<NodeId, CompileError> {
        let dims = dims(self.family);
        // A rule that covers the whole region hides every rule after it there.
        let mut list = list;
        if let Some(p) = list
            .iter()
            .position(|&i| self.rules[i as usize].covers(&region, dims))
        {
            list.truncate(p + 1);
        }
        if list.len() <= self.params.leaf_rules || depth >= MAX_DEPTH {
            if list.len() > MAX_LEAF_RULES as usize {
                return Err(self.too_deep(&list));
            }
            return self.leaf(&list);
        }
        // Near the depth limit, cut wide whatever it costs in copies.
        let urgent = depth + 2 >= MAX_DEPTH && list.len() > MAX_LEAF_RULES as usize;
        let Some(cut) = self.choose(&list, &region, urgent) else {
            if list.len() > MAX_LEAF_RULES as usize {
                return Err(self.too_deep(&list));
            }
            return self.leaf(&list);
        };
        let cells = 1usize << cut.bits;
        let cmask = (cells - 1) as u32;
        // Rules per slice: those spanning every slice once, the others per slice.
        let mut everywhere = Vec::new();
        let mut per_cell: Vec<Vec<u32>> = vec![Vec::new(); cells];
        for &i in &list {
            let (c0, c1, m, v) = self.span(i, cut, &region);
            if m == 0 && c0 == 0 && c1 == cmask {
                everywhere.push(i);
                continue;
            }
            if m == 0 {
                for c in c0..=c1 {
                    per_cell[c as usize].push(i);
                }
            } else {
                // Ternary with some slice bits constrained: every slice matching them.
                let free = cmask & !m;
                let mut sub = 0u32;
                loop {
                    per_cell[(v | sub) as usize].push(i);
                    if sub == free {
                        break;
                    }
                    sub = (sub.wrapping_sub(free)) & free;
                }
            }
        }
        let mut memo: HashMap<Vec<u32>, NodeId> = HashMap::new();
        let mut children = Vec::with_capacity(cells);
        for (c, own) in per_cell.into_iter().enumerate() {
            let child_list = merge(&everywhere, &own);
            if !is_port(cut.dim)
                && let Some(&id) = memo.get(&child_list)
            {
                children.push(id);
                continue;
            }
            let mut child_region = region;
            let g = &mut child_region[cut.dim];
            if is_port(cut.dim) {
                g.a += (c as u32) << cut.shift;
                g.b = g.a + ((1u32 << cut.shift) - 1);
            } else {
                g.a |= (c as u32) << cut.shift;
                g.b |= cmask << cut.shift;
            }
            let key = (!is_port(cut.dim)).then(|| child_list.clone());
            let id = self.build(child_list, child_region, depth + 1)?;
            if let Some(key) = key {
                memo.insert(key, id);
            }
            children.push(id);
        }
        if children.iter().all(|&c| c == children[0]) {
            // The cut separated nothing (every slice the same subtree): skip it.
            return Ok(children[0]);
        }
        self.intern(BNode::Cut {
            dim: cut.dim as u8,
            shift: cut.shift as u8,
            bits: cut.bits as u8,
            children,
        })
    }

    fn too_deep(&self, list: &[u32]) -> CompileError {
        let r = &self.rules[list[0] as usize];
        CompileError::Invalid {
            priority: r.priority,
            what: format!(
                "{} policies overlap it in a way the classifier cannot separate within {MAX_DEPTH} levels",
                list.len()
            ),
        }
    }

    /// The slices rule `i` reaches under `cut`: for a port word the range `c0..=c1` (and
    /// `m` 0); for a ternary word the slices `s` with `s & m == v` (`c0..=c1` the whole
    /// range when `m` is 0).
    fn span(&self, i: u32, cut: Cut, region: &Region) -> (u32, u32, u32, u32) {
        let cmask = (1u32 << cut.bits) - 1;
        let c = self.rules[i as usize].cons[cut.dim];
        if is_port(cut.dim) {
            let g = region[cut.dim];
            let lo = c.a.max(g.a) - g.a;
            let hi = c.b.min(g.b) - g.a;
            (lo >> cut.shift, hi >> cut.shift, 0, 0)
        } else {
            let m = (c.b >> cut.shift) & cmask;
            let v = (c.a >> cut.shift) & m;
            if m == 0 { (0, cmask, 0, 0) } else { (v, v, m, v) }
        }
    }

    /// The cut of this node, if any separates its rules.
    fn choose(&mut self, list: &[u32], region: &Region, urgent: bool) -> Option<Cut> {
        let n = list.len();
        let mut best: Option<(Spread, Cut)> = None;
        for pass in 0..2 {
            for &d in dims(self.family) {
                let Some((top, run)) = self.candidate_bits(d, list, region, pass == 1) else {
                    continue;
                };
                // The widest cut whose children hold at most SPACE_FACTOR times the rules.
                let mut chosen: Option<(Spread, Cut)> = None;
                for bits in 1..=run.min(MAX_CUT_BITS) {
                    let cut = Cut {
                        dim: d,
                        shift: top + 1 - bits,
                        bits,
                    };
                    let spread = self.spread(list, cut, region);
                    let fits = spread.sum + (1 << bits) <= self.params.space_factor * n;
                    if fits || urgent || chosen.is_none() {
                        chosen = Some((spread, cut));
                    }
                    if !fits && !urgent {
                        break;
                    }
                }
                if let Some((s, c)) = chosen {
                    let better = best.is_none_or(|(bs, bc)| {
                        (s.max, s.sum, c.bits) < (bs.max, bs.sum, bc.bits)
                    });
                    if better {
                        best = Some((s, c));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }
        best.map(|(_, c)| c)
    }

    /// The bits of word `d` worth cutting: the top bit and the length of the run of such
    /// bits below it. First pass: bits on which the node's rules disagree; second pass
    /// (when no word has any): bits some rule constrains.
    fn candidate_bits(
        &self,
        d: usize,
        list: &[u32],
        region: &Region,
        constrained: bool,
    ) -> Option<(u32, u32)> {
        if is_port(d) {
            let g = region[d];
            let size_bits = (g.b - g.a + 1).trailing_zeros();
            if size_bits == 0 {
                return None;
            }
            let all_cover = list.iter().all(|&i| {
                let c = self.rules[i as usize].cons[d];
                c.a <= g.a && c.b >= g.b
            });
            if all_cover {
                return None;
            }
            return Some((size_bits - 1, size_bits));
        }
        let (mut ones, mut zeros) = (0u32, 0u32);
        for &i in list {
            let c = self.rules[i as usize].cons[d];
            ones |= c.a & c.b;
            zeros |= !c.a & c.b;
        }
        let free = width(d) & !region[d].b;
        let bits = if constrained {
            (ones | zeros) & free
        } else {
            ones & zeros & free
        };
        if bits == 0 {
            return None;
        }
        let top = 31 - bits.leading_zeros();
        let run = (!(bits << (31 - top))).leading_zeros();
        Some((top, run))
    }

    fn spread(&mut self, list: &[u32], cut: Cut, region: &Region) -> Spread {
        let cells = 1usize << cut.bits;
        let cmask = (cells - 1) as u32;
        self.diff.clear();
        self.diff.resize(cells + 1, 0);
        for &i in list {
            let (c0, c1, m, v) = self.span(i, cut, region);
            if m == 0 || m == cmask ^ (cmask >> m.count_ones()) {
                // A contiguous run of slices (a prefix within the slice bits).
                let (c0, c1) = if m == 0 {
                    (c0, c1)
                } else {
                    (v, v | (cmask >> m.count_ones()))
                };
                self.diff[c0 as usize] += 1;
                self.diff[c1 as usize + 1] -= 1;
            } else {
                let free = cmask & !m;
                let mut sub = 0u32;
                loop {
                    let c = (v | sub) as usize;
                    self.diff[c] += 1;
                    self.diff[c + 1] -= 1;
                    if sub == free {
                        break;
                    }
                    sub = (sub.wrapping_sub(free)) & free;
                }
            }
        }
        let (mut run, mut max, mut sum) = (0i64, 0usize, 0usize);
        for c in 0..cells {
            run += self.diff[c];
            max = max.max(run as usize);
            sum += run as usize;
        }
        Spread { max, sum }
    }
}

/// Two ascending lists of rule indexes merged (priority order), without duplicates.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else if b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}
