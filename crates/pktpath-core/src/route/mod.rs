//! The policy-routing fast path, from configuration files to kernel maps: the files
//! ([`config`]), their validation into a [`compile::PolicySet`], the fields of a packet
//! policies match on ([`packet`]), the reference model of classification ([`model`]) the
//! kernel classifier is tested against, and the data path ([`datapath`]): the set compiled
//! into decision trees and written into the maps of the attached programs.

pub mod compile;
pub mod config;
pub mod datapath;
pub mod diff;
pub mod model;
pub mod packet;
pub mod summary;

#[cfg(test)]
mod tests;
