//! The tracer's user side: decoding what the hooks write.

pub mod filter;
pub mod wire;
