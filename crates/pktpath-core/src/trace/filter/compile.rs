//! Compiles an [`Expr`] into a [`FilterProgram`]: one test instruction per predicate, laid
//! out in source order, with `and`/`or`/`not` turned into short-circuit jumps (`not` swaps
//! a subtree's targets). Every jump goes forward, as the kernel side requires.

use std::net::IpAddr;

use pktpath_common::filter::{
    DIR_DST, DIR_EITHER, DIR_SRC, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FILTER_MAX_INSNS, FilterInsn,
    FilterOp, FilterProgram, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, KEY_ADDR_V4,
    KEY_ADDR_V6, TARGET_MATCH, TARGET_NO_MATCH,
};

use super::{
    ast::{Dir, Expr, Pred, Proto},
    error::FilterError,
};

/// Compiles a parsed filter; `None` (the empty filter) gives the match-all program.
pub fn compile(expr: Option<&Expr>) -> Result<FilterProgram, FilterError> {
    let mut prog = FilterProgram::match_all();
    let Some(expr) = expr else {
        return Ok(prog);
    };
    let needed = expr.leaves();
    if needed > FILTER_MAX_INSNS {
        return Err(FilterError::TooLarge { needed });
    }
    let mut insns = Vec::with_capacity(needed);
    emit(expr, &mut insns, TARGET_MATCH, TARGET_NO_MATCH);
    debug_assert_eq!(insns.len(), needed);
    prog.insns[..insns.len()].copy_from_slice(&insns);
    prog.len = insns.len() as u16;
    Ok(prog)
}

/// Appends the code of `expr`, which jumps to `t` when it holds and to `f` otherwise.
fn emit(expr: &Expr, insns: &mut Vec<FilterInsn>, t: u8, f: u8) {
    match expr {
        Expr::Pred(p) => {
            let mut insn = predicate(p);
            insn.jt = t;
            insn.jf = f;
            insns.push(insn);
        }
        Expr::Not(e) => emit(e, insns, f, t),
        Expr::And(a, b) => {
            // At most FILTER_MAX_INSNS (64) instructions: indexes fit below the verdicts.
            let b_start = (insns.len() + a.leaves()) as u8;
            emit(a, insns, b_start, f);
            emit(b, insns, t, f);
        }
        Expr::Or(a, b) => {
            let b_start = (insns.len() + a.leaves()) as u8;
            emit(a, insns, t, b_start);
            emit(b, insns, t, f);
        }
    }
}

fn dir_bits(dir: Dir) -> u8 {
    match dir {
        Dir::Src => DIR_SRC,
        Dir::Dst => DIR_DST,
        Dir::Either => DIR_EITHER,
    }
}

/// An address in the key's 16-byte form and the family flag it needs.
fn key_form(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), KEY_ADDR_V4),
        IpAddr::V6(a) => (a.octets(), KEY_ADDR_V6),
    }
}

/// The 16-byte mask of a prefix in the key's form (IPv4 prefixes cover the mapped tail).
fn mask(addr: IpAddr, prefix: u8) -> [u8; 16] {
    let (skip, bits) = match addr {
        IpAddr::V4(_) => (96u32, u32::from(prefix)),
        IpAddr::V6(_) => (0, u32::from(prefix)),
    };
    let ones = skip + bits;
    let m = if ones == 0 {
        0u128
    } else {
        u128::MAX << (128 - ones)
    };
    m.to_be_bytes()
}

fn predicate(p: &Pred) -> FilterInsn {
    let mut insn = FilterInsn::default();
    match *p {
        Pred::Proto(proto) => {
            let (op, lo, hi) = match proto {
                Proto::Ip => (FilterOp::EtherType, ETH_P_IP, 0),
                Proto::Ip6 => (FilterOp::EtherType, ETH_P_IPV6, 0),
                Proto::Arp => (FilterOp::EtherType, ETH_P_ARP, 0),
                Proto::Tcp => (FilterOp::IpProto, IPPROTO_TCP.into(), 0),
                Proto::Udp => (FilterOp::IpProto, IPPROTO_UDP.into(), 0),
                Proto::Icmp => (FilterOp::IpProto, IPPROTO_ICMP.into(), ETH_P_IP),
                Proto::Icmp6 => (FilterOp::IpProto, IPPROTO_ICMPV6.into(), ETH_P_IPV6),
            };
            insn.op = op as u8;
            insn.lo = lo;
            insn.hi = hi;
        }
        Pred::Host { dir, addr } => {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            address(&mut insn, dir, addr, prefix);
        }
        Pred::Net { dir, addr, prefix } => address(&mut insn, dir, addr, prefix),
        Pred::Port { dir, lo, hi } => {
            insn.op = FilterOp::Port as u8;
            insn.dir = dir_bits(dir);
            insn.lo = lo;
            insn.hi = hi;
        }
    }
    insn
}

fn address(insn: &mut FilterInsn, dir: Dir, addr: IpAddr, prefix: u8) {
    let (bytes, family) = key_form(addr);
    let mask = mask(addr, prefix);
    insn.op = FilterOp::Addr as u8;
    insn.dir = dir_bits(dir);
    insn.lo = family.into();
    insn.mask = mask;
    for i in 0..16 {
        insn.addr[i] = bytes[i] & mask[i];
    }
}
