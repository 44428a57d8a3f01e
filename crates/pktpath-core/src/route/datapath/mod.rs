//! The TC data path: compiling policies into decision trees ([`classifier`], [`policy`]),
//! writing them into the kernel maps with an atomic generation flip ([`tables`]), and
//! attaching, applying, reading and detaching the pinned program ([`attach`], [`get`]), and
//! the routing tables and rules that keep the stack's forwarding to a policy ([`slow_path`]).

pub mod attach;
pub mod classifier;
pub mod frame;
pub mod get;
pub mod get_xdp;
pub mod loops;
pub mod object;
pub mod policy;
pub mod slow_path;
pub mod state_root;
pub mod synth;
pub mod tables;
pub mod xdp_rules;
