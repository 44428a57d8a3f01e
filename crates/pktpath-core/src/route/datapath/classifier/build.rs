//! Building one family's decision trees from its rules (see the module above for the
//! design; [`boxes`](super::boxes) for rules as boxes and nodes' regions).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use pktpath_common::route::{
    CHUNK_SLOT_BITS, FAMILY_V4, KEY_CLASS, KEY_DST, KEY_SRC, LEAF_TARGET, MAX_CHUNKS, MAX_DEPTH,
    MAX_LEAF_RULES, MAX_PATH_SIDES, MAX_SIDE_NESTING, MAX_TREES, SIDE_SLOTS,
};

use super::{
    Params,
    boxes::{
        ALL_DIMS, BRule, Cut, DIMS, Piece, Region, V4_DIMS, child_region, intersect, is_union,
        width,
    },
    rule::{CompileError, Rule},
};

/// Widest cut: 2^16 children.
const MAX_CUT_BITS: u32 = 16;
/// Arena slots (8 bytes) one generation may use.
const MAX_SLOTS: u64 = (MAX_CHUNKS as u64) << CHUNK_SLOT_BITS;
/// Nodes with at most this many rules score cuts exactly (a slice's rules counted after
/// dropping those a covering rule hides, equal slices once) and copy the rules every slice
/// holds rather than give them a side subtree.
const SMALL: usize = LEAF_TARGET as usize;
/// A node no cut shrinks becomes a leaf up to this many rules; a bigger one is cut on its
/// first rule's bits.
const STUCK_LEAF: usize = 2 * LEAF_TARGET as usize;
/// Fewest rules worth a side subtree: fewer are copied into every slice, which costs less
/// than the walk a side subtree adds.
const SIDE_MIN: usize = 8;
/// Widest cut scored exactly.
const EXACT_BITS: u32 = 5;
/// Widest cut on the first rule's bits (when no other cut shrinks a big node).
const FIRST_RULE_BITS: u32 = 8;
/// Most rules of a node's side that [`Params::copy_quantile`] copies into its slices.
const COPY_MAX: usize = 16;

const _: () = assert!(EXACT_BITS <= MAX_CUT_BITS && FIRST_RULE_BITS <= MAX_CUT_BITS);
const _: () = assert!(MAX_TREES >= 3);

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
        /// The subtree of the rules every slice would hold, walked by every packet
        /// passing through.
        side: Option<NodeId>,
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

/// Where a node sits: its depth in its subtree, the side subtrees on the path to it (from
/// its subtree's root), and how deep that subtree is nested in other nodes' sides.
#[derive(Clone, Copy, Debug, Default)]
struct Place {
    depth: u32,
    sides: u32,
    nesting: u32,
}

impl Place {
    /// Whether a node here may have a side subtree.
    fn side_ok(self) -> bool {
        self.sides < MAX_PATH_SIDES && self.nesting <= MAX_SIDE_NESTING
    }
}

/// How a cut spreads a node's rules: the largest slice, the rule entries of all slices, and
/// the rules that go to the side subtree.
#[derive(Clone, Copy, Debug)]
struct Spread {
    max: usize,
    sum: usize,
    side: usize,
}

impl Spread {
    /// Lower is better: the rules a packet may meet (largest slice and side), then copies.
    fn score(self) -> (usize, usize) {
        (self.max + self.side, self.sum)
    }
}

struct Builder<'a> {
    dims: &'static [usize],
    params: Params,
    rules: Vec<BRule>,
    nodes: &'a mut Vec<BNode>,
    intern: HashMap<BNode, NodeId>,
    /// Arena slots the distinct nodes so far take.
    slots: u64,
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
    let boxes: Vec<BRule> = members
        .iter()
        .map(|&i| BRule::new(&rules[i], i as u32))
        .collect();
    let mut b = Builder {
        dims: if family == FAMILY_V4 {
            &V4_DIMS
        } else {
            &ALL_DIMS
        },
        params,
        copies: vec![0; boxes.len()],
        rules: boxes,
        nodes: &mut forest.nodes,
        intern: HashMap::default(),
        slots: 0,
        diff: Vec::new(),
    };
    let mut trees = Vec::new();
    let groups = if params.split_trees {
        partition(&b.rules, family)
    } else {
        vec![(0..b.rules.len() as u32).collect()]
    };
    for group in groups.into_iter().filter(|g: &Vec<u32>| !g.is_empty()) {
        let min_priority = group
            .iter()
            .map(|&i| b.rule(i).priority)
            .min()
            .expect("groups are not empty");
        let root = b.build(group, [Piece::ANY; DIMS], Place::default())?;
        trees.push(Tree { root, min_priority });
    }
    trees.sort_by_key(|t| t.min_priority);
    forest.trees = trees;
    Ok(forest)
}

/// Length from which an address prefix counts as specific enough to cut a tree on.
fn specific_len(family: u8) -> u32 {
    if family == FAMILY_V4 { 16 } else { 32 }
}

/// Splits rules (local indexes, priority order) into the groups that become trees: a
/// specific destination; else a specific source; else neither. Each tree then starts by
/// cutting a word all its rules are specific in.
fn partition(rules: &[BRule], family: u8) -> Vec<Vec<u32>> {
    let specific = specific_len(family);
    let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
    for (i, r) in rules.iter().enumerate() {
        let g = if r.prefix_len(KEY_DST) >= specific {
            0
        } else if r.prefix_len(KEY_SRC) >= specific {
            1
        } else {
            2
        };
        groups[g].push(i as u32);
    }
    groups.retain(|g| !g.is_empty());
    groups
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

/// The top bit of `bits` and the length of the run of set bits from it down.
fn top_run(bits: u32) -> Option<(u32, u32)> {
    if bits == 0 {
        return None;
    }
    let top = 31 - bits.leading_zeros();
    Some((top, (!(bits << (31 - top))).leading_zeros()))
}

impl Builder<'_> {
    fn rule(&self, i: u32) -> &BRule {
        &self.rules[i as usize]
    }

    fn intern(&mut self, node: BNode) -> Result<NodeId, CompileError> {
        if let Some(&id) = self.intern.get(&node) {
            return Ok(id);
        }
        self.slots += match &node {
            BNode::Leaf(rules) => 8 * rules.len() as u64,
            BNode::Cut { bits, side, .. } => {
                (1 << bits)
                    + if side.is_some() {
                        u64::from(SIDE_SLOTS)
                    } else {
                        0
                    }
            }
        };
        let max_slots = self.params.max_mib.saturating_mul(1 << 17).min(MAX_SLOTS);
        if self.slots > max_slots {
            let (local, copies) = self
                .copies
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map_or((0, 0), |(i, c)| (i, *c));
            return Err(CompileError::TooLarge {
                needed: (self.slots * 8) >> 20,
                max: (max_slots * 8) >> 20,
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
        let globals: Vec<u32> = list.iter().map(|&i| self.rule(i).global).collect();
        let before = self.nodes.len();
        let id = self.intern(BNode::Leaf(globals))?;
        if self.nodes.len() > before {
            for &i in list {
                self.copies[i as usize] += 1;
            }
        }
        Ok(id)
    }

    /// The part of `region` where some rule of `list` may match: bits every rule fixes
    /// alike are fixed too (port words only when every rule there is one piece). A packet
    /// outside it matches none of the rules, so a rule covering it decides the node as
    /// surely as one covering the whole region.
    fn reach(&self, list: &[u32], region: &Region) -> Region {
        let mut reach = *region;
        let Some(&first) = list.first() else {
            return reach;
        };
        for &d in self.dims {
            let f = self.rule(first).pieces(d);
            if f.len() != 1 {
                continue;
            }
            let (mut all, mut differ) = (u32::MAX, 0u32);
            for &i in list {
                match self.rule(i).pieces(d) {
                    [p] => {
                        all &= p.mask;
                        differ |= p.value ^ f[0].value;
                    }
                    _ => all = 0,
                }
            }
            let g = &mut reach[d];
            let agree = all & !differ & !g.mask;
            g.value |= f[0].value & agree;
            g.mask |= agree;
        }
        reach
    }

    fn build(&mut self, list: Vec<u32>, region: Region, at: Place) -> Result<NodeId, CompileError> {
        let mut list = list;
        let reach = self.reach(&list, &region);
        if let Some(p) = list
            .iter()
            .position(|&i| self.rule(i).covers(&reach, self.dims))
        {
            list.truncate(p + 1);
        }
        if list.len() <= self.params.leaf_rules || at.depth >= MAX_DEPTH {
            if list.len() > MAX_LEAF_RULES as usize {
                return Err(self.too_deep(&list));
            }
            return self.leaf(&list);
        }
        let reach = self.reach(&list, &region);
        let big = list.len() > SMALL;
        let side_ok = big && at.side_ok();
        let Some(cut) = self.choose(&list, &region, &reach, side_ok) else {
            return self.leaf(&list); // no cut shrinks it, and a leaf holds it
        };
        let (mut everywhere, per_cell) = self.split(&list, cut);
        // The rules every slice would hold: their own subtree, walked by every packet that
        // passes this node, instead of a copy under every slice.
        let mut side = None;
        let mut copied = Vec::new();
        if side_ok && everywhere.len() >= SIDE_MIN {
            copied = self.best_of_side(&mut everywhere, &per_cell);
        }
        if side_ok && everywhere.len() >= SIDE_MIN {
            let place = Place {
                depth: 0,
                sides: 0,
                nesting: at.nesting + 1,
            };
            side = Some(self.build(std::mem::take(&mut everywhere), region, place)?);
        }
        let child_at = Place {
            depth: at.depth + 1,
            sides: at.sides + u32::from(side.is_some()),
            nesting: at.nesting,
        };
        let mut memo: HashMap<Vec<u64>, NodeId> = HashMap::default();
        let mut children = Vec::with_capacity(per_cell.len());
        let everywhere = merge(&copied, &everywhere);
        for (c, own) in per_cell.into_iter().enumerate() {
            let child_list = merge(&everywhere, &own);
            let child = child_region(&region, cut, c as u32);
            // Slices with the same rules share a subtree: the rules see the other bits
            // alike in both. For a port range, alike means by the same prefixes.
            let key = self.memo_key(&child_list, cut.dim, &child);
            if let Some(&id) = memo.get(&key) {
                children.push(id);
                continue;
            }
            let id = self.build(child_list, child, child_at)?;
            memo.insert(key, id);
            children.push(id);
        }
        if side.is_none() && children.iter().all(|&c| c == children[0]) {
            return Ok(children[0]); // every slice the same subtree: the cut adds nothing
        }
        self.intern(BNode::Cut {
            dim: cut.dim as u8,
            shift: cut.shift as u8,
            bits: cut.bits as u8,
            side,
            children,
        })
    }

    /// Takes from a side's rules (`everywhere`, priority order) those better than the
    /// [`Params::copy_quantile`] of the slices' own rules' priorities, at most [`COPY_MAX`]:
    /// they are copied into every slice instead. A side is walked unless the match in hand
    /// beats its best rule; without its best rules that bound holds more often.
    fn best_of_side(&self, everywhere: &mut Vec<u32>, per_cell: &[Vec<u32>]) -> Vec<u32> {
        let q = self.params.copy_quantile;
        if q == 0 {
            return Vec::new();
        }
        let mut own: Vec<u32> = per_cell
            .iter()
            .flatten()
            .map(|&i| self.rule(i).priority)
            .collect();
        if own.is_empty() {
            return Vec::new();
        }
        own.sort_unstable();
        own.dedup();
        let bound = own[(own.len() * q / 100).min(own.len() - 1)];
        let k = everywhere
            .iter()
            .take_while(|&&i| self.rule(i).priority < bound)
            .count()
            .min(COPY_MAX);
        everywhere.drain(..k).collect()
    }

    /// What makes two slices of a cut on word `d` build the same subtree: their rules, and
    /// on a port word which of each rule's prefixes reach the slice.
    fn memo_key(&self, list: &[u32], d: usize, child: &Region) -> Vec<u64> {
        list.iter()
            .map(|&i| {
                let pieces = self.rule(i).pieces(d);
                let reached = if is_union(d) && pieces.len() > 1 {
                    pieces
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.meets(child[d]))
                        .fold(0u64, |m, (k, _)| m | 1 << k)
                } else {
                    0
                };
                (u64::from(i) << 32) | reached
            })
            .collect()
    }

    fn too_deep(&self, list: &[u32]) -> CompileError {
        CompileError::Invalid {
            priority: self.rule(list[0]).priority,
            what: format!(
                "{} policies overlap it in a way the classifier cannot separate within {MAX_DEPTH} levels",
                list.len()
            ),
        }
    }

    /// The slices rule `i` reaches under `cut`, pushed to `out` (ascending, once each);
    /// None when it reaches them all.
    fn cells(&self, i: u32, cut: Cut, out: &mut Vec<u32>) -> Option<()> {
        out.clear();
        let cmask = (1u32 << cut.bits) - 1;
        let pieces = self.rule(i).pieces(cut.dim);
        for p in pieces {
            let m = (p.mask >> cut.shift) & cmask;
            if m == 0 {
                return None;
            }
            let v = (p.value >> cut.shift) & m;
            let free = cmask & !m;
            let mut sub = 0u32;
            loop {
                out.push(v | sub);
                if sub == free {
                    break;
                }
                sub = sub.wrapping_sub(free) & free;
            }
        }
        if pieces.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Some(())
    }

    /// The rules of `list` under `cut`: those in every slice, and the others per slice
    /// (both in priority order). The cut bits are free in the node's region, so a rule's
    /// slices follow from its pieces alone.
    fn split(&self, list: &[u32], cut: Cut) -> (Vec<u32>, Vec<Vec<u32>>) {
        let mut everywhere = Vec::new();
        let mut per_cell: Vec<Vec<u32>> = vec![Vec::new(); cut.cells()];
        let mut cells = Vec::new();
        for &i in list {
            match self.cells(i, cut, &mut cells) {
                None => everywhere.push(i),
                Some(()) => {
                    for &c in &cells {
                        per_cell[c as usize].push(i);
                    }
                }
            }
        }
        (everywhere, per_cell)
    }

    /// How `cut` spreads a big node's rules: copies counted per slice; the rules in every
    /// slice go to the side subtree when `side_ok`.
    fn spread(&mut self, list: &[u32], cut: Cut, side_ok: bool) -> Spread {
        let n = cut.cells();
        let cmask = (n - 1) as u32;
        let mut diff = std::mem::take(&mut self.diff);
        diff.clear();
        diff.resize(n + 1, 0);
        let mut everywhere = 0usize;
        let mut cells = Vec::new();
        for &i in list {
            if let [p] = self.rule(i).pieces(cut.dim) {
                let m = (p.mask >> cut.shift) & cmask;
                let ones = m.count_ones();
                if m == 0 {
                    everywhere += 1;
                    continue;
                }
                if m == cmask ^ (cmask >> ones) {
                    // A prefix of the slice bits: a contiguous run of slices.
                    let v = ((p.value >> cut.shift) & m) as usize;
                    diff[v] += 1;
                    diff[v + (1 << (cut.bits - ones))] -= 1;
                    continue;
                }
            }
            match self.cells(i, cut, &mut cells) {
                None => everywhere += 1,
                Some(()) => {
                    for &c in &cells {
                        diff[c as usize] += 1;
                        diff[c as usize + 1] -= 1;
                    }
                }
            }
        }
        let side = if side_ok && everywhere >= SIDE_MIN {
            everywhere
        } else {
            0
        };
        let (mut run, mut max, mut sum) = ((everywhere - side) as i64, 0usize, 0usize);
        for d in &diff[..n] {
            run += d;
            max = max.max(run as usize);
            sum += run as usize;
        }
        self.diff = diff;
        Spread { max, sum, side }
    }

    /// How `cut` spreads a small node's rules: in each slice the rules up to the first
    /// that covers what reaches the slice, equal slices once in the sum.
    fn spread_exact(&self, list: &[u32], cut: Cut, region: &Region, reach: &Region) -> Spread {
        let (everywhere, per_cell) = self.split(list, cut);
        let mut seen: HashSet<Vec<u32>> = HashSet::default();
        let (mut max, mut sum) = (0, 0);
        for (c, own) in per_cell.iter().enumerate() {
            let child = intersect(&child_region(region, cut, c as u32), reach);
            let mut merged = merge(&everywhere, own);
            if let Some(p) = merged
                .iter()
                .position(|&i| self.rule(i).covers(&child, self.dims))
            {
                merged.truncate(p + 1);
            }
            max = max.max(merged.len());
            if is_union(cut.dim) || seen.insert(merged.clone()) {
                sum += merged.len();
            }
        }
        Spread { max, sum, side: 0 }
    }

    /// Per word, the top run of free bits the node's rules disagree on.
    fn candidates(&self, list: &[u32], reach: &Region) -> Vec<(usize, u32, u32)> {
        let mut out = Vec::new();
        for &d in self.dims {
            // A cut on the class high in a tree copies every rule for any protocol into
            // every class: tables grew by half and more at 100k policies.
            if d == KEY_CLASS && list.len() > self.params.class_cut_rules {
                continue;
            }
            let (mut ones, mut zeros) = (0u32, 0u32);
            for &i in list {
                for p in self.rule(i).pieces(d) {
                    ones |= p.value & p.mask;
                    zeros |= !p.value & p.mask;
                }
            }
            if let Some((top, run)) = top_run(ones & zeros & width(d) & !reach[d].mask) {
                out.push((d, top, run));
            }
        }
        out
    }

    /// The cut of this node: the one whose largest slice (with the side subtree, when
    /// `side_ok`) holds the fewest rules, as wide as the space factor allows. None when the
    /// node should be a leaf: no cut shrinks it (small nodes are scored exactly) and a leaf
    /// holds it. Otherwise, failing a better one, a cut on the first rule's own bits: each
    /// slice then either drops that rule or comes closer to being covered by it.
    fn choose(
        &mut self,
        list: &[u32],
        region: &Region,
        reach: &Region,
        side_ok: bool,
    ) -> Option<Cut> {
        let n = list.len();
        let exact = n <= SMALL;
        let room = (self.params.space_factor * n).max(64);
        let max_cells = (self.params.cell_factor * n).max(16);
        let mut best: Option<(Spread, Cut)> = None;
        for (d, top, run) in self.candidates(list, reach) {
            let widest = run.min(if exact { EXACT_BITS } else { MAX_CUT_BITS });
            for bits in 1..=widest {
                if (1usize << bits) > max_cells {
                    break;
                }
                let cut = Cut {
                    dim: d,
                    shift: top + 1 - bits,
                    bits,
                };
                let spread = if exact {
                    self.spread_exact(list, cut, region, reach)
                } else {
                    self.spread(list, cut, side_ok)
                };
                if spread.sum + cut.cells() > room && bits > 1 {
                    break; // wider cuts copy more
                }
                let better =
                    best.is_none_or(|(bs, bc)| (spread.score(), cut.bits) < (bs.score(), bc.bits));
                if better {
                    best = Some((spread, cut));
                }
            }
        }
        // A cut costs a node on the way (about what checking a rule or two does): for a
        // small node it must shrink the largest slice by `cut_gain` to pay off.
        let gain = if exact { self.params.cut_gain } else { 1 };
        if let Some((s, cut)) = best
            && s.max + s.side + gain <= n
        {
            return Some(cut);
        }
        if n <= STUCK_LEAF {
            return None;
        }
        self.first_rule_cut(list, reach)
    }

    /// A cut on the free bits of the first rule's constraint (its first piece that meets
    /// the node), at most [`FIRST_RULE_BITS`] of them.
    fn first_rule_cut(&self, list: &[u32], reach: &Region) -> Option<Cut> {
        let first = self.rule(*list.first()?);
        for &d in self.dims {
            let Some(p) = first.pieces(d).iter().find(|p| p.meets(reach[d])) else {
                continue;
            };
            if let Some((top, run)) = top_run(p.mask & width(d) & !reach[d].mask) {
                let bits = run.min(FIRST_RULE_BITS);
                return Some(Cut {
                    dim: d,
                    shift: top + 1 - bits,
                    bits,
                });
            }
        }
        None
    }
}
