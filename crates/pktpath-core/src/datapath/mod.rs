//! The TC data path's tables: compiling match rules into tuple-space tables
//! ([`tuples`]), and writing them into the kernel maps with an atomic generation flip
//! ([`tables`]).

pub mod attach;
pub mod classifier;
pub mod frame;
pub mod get;
pub mod policy;
pub mod state_root;
pub mod synth;
pub mod tables;
