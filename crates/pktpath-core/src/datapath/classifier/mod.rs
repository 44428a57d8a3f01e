//! Compiling match rules into the data path's decision trees, and searching them in user
//! space exactly as the kernel does.
//!
//! # Why decision trees
//!
//! A packet is classified by its key words (addresses, ports, protocol, input interface,
//! DSCP, mark: [`ClassKey`]). Each family's rules are split into at most three groups by
//! which address is specific ([`partition`](build)): rules with a long destination prefix,
//! rules with a long source prefix, and the rest. Each group becomes one tree. An inner
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
//! rules share one subtree. Grouping rules by their specific address keeps the copies few:
//! a tree only cuts words its rules are specific in.
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
pub use rule::{CompileError, PacketFields, Rule, candidate_matches, key_of, rule_match};

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
}

impl Default for Params {
    fn default() -> Self {
        Self {
            leaf_rules: 8,
            space_factor: 4,
        }
    }
}

/// Compiles rules into tables. Rules may come in any order; priorities decide.
///
/// A set whose trees would not fit the arena with the default shape is compiled again
/// with fewer copies allowed and longer leaves (slower to search, much smaller).
pub fn compile(rules: &[Rule]) -> Result<Tables, CompileError> {
    match compile_with(rules, Params::default()) {
        Err(CompileError::TooLarge { .. }) => compile_with(
            rules,
            Params {
                leaf_rules: 16,
                space_factor: 1,
            },
        ),
        other => other,
    }
}

/// [`compile`] with other tree shapes (tests force deep trees with tiny leaves).
pub fn compile_with(rules: &[Rule], params: Params) -> Result<Tables, CompileError> {
    let params = Params {
        leaf_rules: params.leaf_rules.clamp(1, MAX_LEAF_RULES as usize),
        space_factor: params.space_factor.max(1),
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
    encode::encode(rules, &families)
}
