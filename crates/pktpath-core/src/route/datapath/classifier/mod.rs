//! Compiling match rules into the data path's decision trees, and searching them in user
//! space exactly as the kernel does.
//!
//! # Why decision trees
//!
//! A packet is classified by its key words (addresses, ports, protocol, input interface,
//! DSCP, mark: [`ClassKey`]). With [`Params::split_trees`], each family's rules are split
//! into at most three groups by which address is specific: rules with a long destination
//! prefix, rules with a long source prefix, and the rest; each group becomes one tree.
//! Otherwise each family has one tree. An inner
//! node cuts one key word into `2^bits` equal slices (`(word >> shift) & mask` picks the
//! child), a leaf holds at most [`MAX_LEAF_RULES`] rules, best priority first, each with its
//! complete match. Per packet the data path walks each tree (one 8-byte node read per
//! level, a handful of levels) and checks the leaf's rules in order.
//!
//! The cost per packet depends on the depth of the trees and the size of the leaves, not on
//! the number of rules or how many distinct prefix lengths, port ranges and wildcards they
//! use: the measurements that led here are in BENCHMARKS.md. Tuple space search, the design
//! before, costs one hash lookup per distinct match shape, and realistic rule sets have
//! hundreds of shapes.
//!
//! Trees are built top-down: at each node the builder tries every key word and several
//! slice widths, and keeps the cut whose largest child holds the fewest rules while the
//! children together hold at most [`Params::space_factor`] times the node's rules (rules wider
//! than a slice are copied into every slice they touch). A rule that covers a node's whole
//! region hides every rule after it there, so those are dropped. Children with the same
//! rules share one subtree. Grouping rules by their specific address (three trees) keeps
//! the copies few: a tree only cuts words its rules are specific in.
//!
//! Sets of up to [`ROOMY_RULES`] rules get [`Params::roomy`] trees: more copies, fewer and
//! better-pruned walks (docs/classifier.md has the measurements behind both shapes).
//!
//! [`Lookup`] searches the encoded arena the way the data path does, so the compilation is
//! property-tested against the reference model without root.

mod boxes;
mod build;
mod encode;
mod lookup;
mod rule;

#[cfg(test)]
mod tests;

pub use encode::{Tables, TreeStats};
pub use lookup::{Lookup, Probe};
pub use rule::{
    CompileError, Rule, addr_bytes, candidate_matches, key_of, match_shapes, rule_match,
};

use pktpath_common::route::{FAMILY_V4, FAMILY_V6, MAX_LEAF_RULES};

/// How the builder shapes trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Rules a leaf holds before the builder tries to cut it (at most
    /// [`MAX_LEAF_RULES`]).
    pub leaf_rules: usize,
    /// How many times a node's rules its children may hold together (copies of rules that
    /// span several slices).
    pub space_factor: usize,
    /// Slices a cut of a node may have per rule of the node (within the space factor).
    pub cell_factor: usize,
    /// Rule checks a cut of a small node must save from its largest slice to be made (a
    /// node read costs about as much as checking one or two rules).
    pub cut_gain: usize,
    /// Percent: the rules of a side subtree better than this quantile of the priorities of
    /// the node's other rules are copied into every slice instead (a few of them), so the
    /// side's best priority prunes its walk more often. 0: none.
    pub copy_quantile: usize,
    /// Largest node that may cut on the packet's class ([`KEY_CLASS`]): a class cut copies
    /// each rule for any protocol into every class, which low in a tree costs a few
    /// copies and saves the rule checks a leaf makes in vain, and high in a tree
    /// multiplies the tables.
    ///
    /// [`KEY_CLASS`]: pktpath_common::route::KEY_CLASS
    pub class_cut_rules: usize,
    /// Largest block (child slots) an inner node may have once it takes in the class cuts
    /// of its children ([`NODE_CLASS`]: each slice becomes [`CLASS_SLICES`] slots); 0: no
    /// folding. A fold saves a node read per walk through it, for a larger block.
    ///
    /// [`NODE_CLASS`]: pktpath_common::route::NODE_CLASS
    /// [`CLASS_SLICES`]: pktpath_common::route::CLASS_SLICES
    pub class_fold_slots: usize,
    /// Three trees per family, by which address is specific (see the module's docs);
    /// otherwise one.
    pub split_trees: bool,
    /// Tables larger than this (MiB) are refused with [`CompileError::TooLarge`] (at most
    /// the arena).
    pub max_mib: u64,
    /// Every child reference marked far, as if each block were in a chunk of its own, so
    /// that each node is walked on its own (tests of the walk's continuations).
    pub far_all: bool,
}

impl Default for Params {
    /// The shape for any set: few copies, side subtrees for broad rules, one tree per
    /// family.
    fn default() -> Self {
        Self {
            leaf_rules: 8,
            space_factor: 5,
            cell_factor: 4,
            cut_gain: 4,
            copy_quantile: 0,
            class_cut_rules: 128,
            class_fold_slots: 4096,
            split_trees: false,
            max_mib: u64::MAX,
            far_all: false,
        }
    }
}

impl Params {
    /// The shape tried first for sets of up to [`ROOMY_RULES`] rules: more copies for fewer
    /// and better-pruned walks, within [`ROOMY_MIB`] of tables.
    pub fn roomy() -> Self {
        Self {
            space_factor: 16,
            cell_factor: 64,
            cut_gain: 1,
            copy_quantile: 75,
            class_cut_rules: 512,
            class_fold_slots: 1 << 15,
            split_trees: true,
            max_mib: ROOMY_MIB,
            ..Self::default()
        }
    }

    /// Few copies and long leaves: for sets too large for the default shape.
    fn compact() -> Self {
        Self {
            leaf_rules: 16,
            space_factor: 1,
            split_trees: true,
            ..Self::default()
        }
    }
}

/// Largest set compiled with [`Params::roomy`] first: up to here it compiles in about a
/// second (the generator's profiles at 20k rules: 0.3-1.0 s, 12-24 MiB).
pub const ROOMY_RULES: usize = 20_000;
/// Tables a [`Params::roomy`] compile may take before the default shape is used instead.
pub const ROOMY_MIB: u64 = 48;

/// Compiles rules into tables. Rules may come in any order; priorities decide.
///
/// A set of up to [`ROOMY_RULES`] rules is compiled with [`Params::roomy`] first; a larger
/// one, or one whose roomy tables would exceed [`ROOMY_MIB`] (or that fails otherwise: the
/// default shape then says why), with the default shape; a set
/// whose trees would not fit the arena with that is compiled again with fewer copies
/// allowed and longer leaves (slower to search, much smaller).
pub fn compile(rules: &[Rule]) -> Result<Tables, CompileError> {
    if rules.len() <= ROOMY_RULES
        && let Ok(tables) = compile_with(rules, Params::roomy())
    {
        return Ok(tables);
    }
    match compile_with(rules, Params::default()) {
        Err(CompileError::TooLarge { .. }) => compile_with(rules, Params::compact()),
        other => other,
    }
}

/// [`compile`] with other tree shapes (tests force deep trees with tiny leaves).
pub fn compile_with(rules: &[Rule], params: Params) -> Result<Tables, CompileError> {
    let params = Params {
        leaf_rules: params.leaf_rules.clamp(1, MAX_LEAF_RULES as usize),
        space_factor: params.space_factor.max(1),
        cell_factor: params.cell_factor.max(1),
        copy_quantile: params.copy_quantile.min(100),
        ..params
    };
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|&i| rules[i].priority);
    for &i in &order {
        rule::validate(&rules[i])?;
    }
    let mut families = Vec::with_capacity(2);
    for family in [FAMILY_V4, FAMILY_V6] {
        let members: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| rules[i].family.is_none_or(|f| f == family))
            .collect();
        let trees = build::build_family(rules, &members, family, params)?;
        families.push((family, trees));
    }
    encode::encode(rules, &families, &params)
}
