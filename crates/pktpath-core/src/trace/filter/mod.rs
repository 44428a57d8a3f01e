//! Packet filter expressions: a pcap-filter-like language, parsed and compiled in user
//! space into a [`FilterProgram`] that the eBPF programs evaluate (with
//! [`pktpath_common::filter::eval`]) before they copy anything.
//!
//! # Grammar
//!
//! ```text
//! filter    := <empty> | expr                 (the empty filter matches every packet)
//! expr      := unary (("and" | "&&" | "or" | "||") unary)*
//! unary     := ("not" | "!") unary | primary
//! primary   := "(" expr ")" | proto [qualified] | qualified
//! qualified := ["src" | "dst"] ("host" ADDR | "net" ADDR["/"LEN] | "port" N | "portrange" N "-" N)
//! proto     := "ip" | "ip6" | "tcp" | "udp" | "icmp" | "icmp6" | "arp"
//! ```
//!
//! As in pcap, `not` binds tightest, while `and` and `or` have *equal* precedence and
//! associate left to right: `a or b and c` means `(a or b) and c`. Use parentheses.
//!
//! - `host`/`net` take IPv4 or IPv6 literals (no name resolution); `net` rejects host bits
//!   beyond the prefix. They test IPv4 and IPv6 packets and the sender/target addresses of
//!   IPv4 ARP (as pcap's `host` does). Without `src`/`dst`, either address may match.
//! - `port`/`portrange` test TCP, UDP and SCTP ports (inclusive range); non-first
//!   fragments have no ports.
//! - `ip`, `ip6`, `arp` test the EtherType; `tcp`, `udp` the transport protocol of IPv4 or
//!   IPv6 (after IPv6 extension headers); `icmp` is ICMP over IPv4, `icmp6` ICMPv6.
//! - A protocol may qualify the primitive after it: `tcp port 80` is `tcp and port 80`,
//!   `ip6 net fd00::/8` is `ip6 and net fd00::/8`. pcap's implicit repetition
//!   (`host a or b`), service and host names, `mask`, `proto`, `len` and byte offsets are
//!   not supported: they are syntax errors that point at the token.
//!
//! Each predicate compiles to one instruction, so a filter holds at most
//! [`FILTER_MAX_INSNS`](pktpath_common::filter::FILTER_MAX_INSNS) primitives.
//!
//! # Using a filter in an eBPF object
//!
//! User space: [`compile_filter`] gives the program; [`install`] writes it into slot 0 of
//! the object's [`MAP_FILTER`] (`PKTPATH_FILTER`) array, at load time or while attached
//! (the next packet sees the new filter). The tracer reads the map only when it was loaded
//! with its `PKTPATH_FILTER_EXPR_ON` global set (the collector sets it for a non-empty
//! expression; without one the verifier drops the evaluator from the hooks). A never-written slot is all zeroes: the empty
//! program, which matches everything.
//!
//! eBPF side (see `pktpath-ebpf-test/src/bin/filtertest.rs` for a working example):
//!
//! ```text
//! #[map(name = "PKTPATH_FILTER")]
//! static PKTPATH_FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);
//!
//! let mut header = [0u8; HEADER_BYTES];           // bytes from the network header on
//! let len = /* how many of them are valid */;
//! let key = pktpath_common::filter::key_from_l3(&header, len, ethertype /* skb->protocol, host order */);
//! let pass = match PKTPATH_FILTER.get(0) {
//!     Some(prog) => pktpath_ebpf::filter::eval(prog, &key), // bpf_loop driven: cheap to verify
//!     None => true,
//! };
//! ```
//!
//! `pktpath_common::filter::eval` gives the same verdicts without `bpf_loop`, but the
//! verifier then walks every one of the 64 possible steps (about 3x the verification work
//! per hook).

pub mod ast;
pub mod compile;
pub mod error;
pub mod guard;
pub mod lexer;
pub mod parser;
pub mod sample;

#[cfg(test)]
mod tests;

pub use ast::{Dir, Expr, Pred, Proto};
use aya::{Ebpf, maps::Array};
pub use compile::compile;
pub use error::FilterError;
pub use guard::v4_guard;
pub use parser::parse;
use pktpath_common::filter::{FilterProgram, MAP_FILTER};

/// Parses and compiles a filter expression.
pub fn compile_filter(text: &str) -> Result<FilterProgram, FilterError> {
    compile(parse(text)?.as_ref())
}

/// Why a compiled filter could not be written into an object.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the eBPF object has no {MAP_FILTER} map: it does not support filters")]
    NoMap,
    #[error("writing the filter into the {MAP_FILTER} map failed")]
    Map(#[from] aya::maps::MapError),
}

/// Writes `prog` into slot 0 of the object's [`MAP_FILTER`] array, where its programs read
/// it on every packet (replacing the filter takes effect at once). The tracer also gets the
/// program's guard ([`v4_guard`]) as a read-only global at load time, so its filter
/// is written once, before its hooks are attached, and never replaced.
pub fn install(ebpf: &mut Ebpf, prog: &FilterProgram) -> Result<(), InstallError> {
    let map = ebpf.map_mut(MAP_FILTER).ok_or(InstallError::NoMap)?;
    let mut array: Array<_, FilterProgram> = Array::try_from(map)?;
    array.set(0, prog, 0)?;
    Ok(())
}
