//! The kernel's BPF Type Format: a parser for the parts pktpath uses, and the resolution of
//! the struct member offsets the eBPF programs need (see [`offsets`]).
//!
//! Parsing is done here rather than through aya's BTF type because pktpath needs member
//! paths through anonymous unions and structs, bitfield positions and enum names, and it
//! keeps the whole thing testable without root on recorded blobs.

pub mod offsets;
mod parse;

pub use parse::{Btf, BtfError, Kind, Member, MemberLocation};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[cfg(test)]
mod tests;
