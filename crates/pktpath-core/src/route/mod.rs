//! The policy-routing fast path's user side: configuration files ([`config`]).

pub mod config;
