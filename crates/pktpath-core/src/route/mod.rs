//! The policy-routing fast path's user side: configuration files ([`config`]), their
//! validation into a [`compile::PolicySet`], the fields of a packet policies match on
//! ([`packet`]), and the reference model of classification ([`model`]) the kernel
//! classifier is tested against.

pub mod compile;
pub mod config;
pub mod diff;
pub mod model;
pub mod packet;
pub mod summary;

#[cfg(test)]
mod tests;
