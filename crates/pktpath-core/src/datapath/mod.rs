//! The TC data path: compiling policies into decision trees ([`classifier`], [`policy`]),
//! writing them into the kernel maps with an atomic generation flip ([`tables`]), and
//! attaching, applying, reading and detaching the pinned program ([`attach`], [`get`]).

pub mod attach;
pub mod classifier;
pub mod frame;
pub mod get;
pub mod object;
pub mod policy;
pub mod state_root;
pub mod synth;
pub mod tables;
