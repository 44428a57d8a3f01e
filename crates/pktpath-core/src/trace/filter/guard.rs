//! The guard of a compiled filter ([`V4Guard`]): for IPv4 packets, tests of the
//! addresses, the protocol or the ports, one of which must hold for the program to reach a
//! match.
//!
//! Derived from the program rather than the expression, so that it is a property of what
//! the kernel evaluates. On an IPv4 packet an EtherType test is a constant, and a test of
//! IPv6 addresses never holds; what remains is which paths to the match are possible, and
//! the IPv4 address, protocol and port tests taken true along them. For each instruction,
//! from the last, the guard of the rest of the program from there: a path through such a
//! test's true branch needs that test (or the stronger guard after it); any other test
//! needs what either of its branches needs. A path to the match with none of them on it
//! (`not host ...`, `ip`) leaves no guard. The tests read fields the parser fills only for a
//! header it parsed (ports only for TCP, UDP and SCTP, not in later fragments), so for any
//! other they fail, as the hook's rejection says.

use pktpath_common::{
    filter::{
        DIR_DST, DIR_SRC, ETH_P_IP, FilterInsn, FilterOp, FilterProgram, KEY_ADDR_V4, TARGET_MATCH,
    },
    guard::{
        GUARD_ATOMS, GUARD_DPORT, GUARD_DST, GUARD_PROTO, GUARD_SPORT, GUARD_SRC, GuardAtom,
        V4Guard,
    },
};

/// The first 12 bytes of an IPv4 address in a [`PacketKey`](pktpath_common::filter::PacketKey):
/// `::ffff:a.b.c.d`.
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// What reaching the match from an instruction needs of an IPv4 packet: `None`, nothing
/// the guard can test; `Some(atoms)`, one of them (none: the match cannot be reached).
type Need = Option<Vec<GuardAtom>>;

/// The guard of `prog` (off for the empty program, which matches everything).
pub fn v4_guard(prog: &FilterProgram) -> V4Guard {
    let len = usize::from(prog.len).min(prog.insns.len());
    if len == 0 {
        return V4Guard::OFF;
    }
    let mut need: Vec<Need> = vec![None; len];
    for pc in (0..len).rev() {
        let target = |next: u8| -> Need {
            if next == TARGET_MATCH {
                None
            } else if (next as usize) > pc && (next as usize) < len {
                need[next as usize].clone()
            } else {
                // A verdict of no match, a backward jump or one past the end: no match.
                Some(Vec::new())
            }
        };
        let insn = &prog.insns[pc];
        let (jt, jf) = (target(insn.jt), target(insn.jf));
        need[pc] = match FilterOp::from_u8(insn.op) {
            Some(FilterOp::EtherType) if insn.lo == ETH_P_IP => jt,
            Some(FilterOp::EtherType) | None => jf,
            Some(FilterOp::IpProto) if insn.hi != 0 && insn.hi != ETH_P_IP => jf,
            Some(FilterOp::IpProto) => match u8::try_from(insn.lo) {
                Ok(proto) => either(both(proto_atom(proto), jt), jf),
                Err(_) => jf,
            },
            Some(FilterOp::Port) => match port_atom(insn) {
                Some(a) => either(both(a, jt), jf),
                None => jf,
            },
            Some(FilterOp::Addr) => match atom(insn) {
                Some(a) => either(both(a, jt), jf),
                None => jf,
            },
        };
    }
    match need.swap_remove(0) {
        Some(atoms) => {
            let mut g = V4Guard {
                on: 1,
                count: atoms.len() as u32,
                words: atoms.iter().fold(0, |w, a| w | a.dirs),
                ..V4Guard::OFF
            };
            g.atoms[..atoms.len()].copy_from_slice(&atoms);
            g
        }
        None => V4Guard::OFF,
    }
}

/// The IPv4 address test of an address instruction, or `None` when it never holds for an
/// IPv4 packet (an IPv6 address).
fn atom(insn: &FilterInsn) -> Option<GuardAtom> {
    if insn.lo as u8 & KEY_ADDR_V4 == 0 {
        return None;
    }
    // The key's first 12 bytes are the same for every IPv4 address.
    let fixed_ok = (0..12).all(|i| V4_MAPPED[i] & insn.mask[i] == insn.addr[i]);
    if !fixed_ok {
        return None;
    }
    let word = |b: &[u8; 16]| u32::from_ne_bytes([b[12], b[13], b[14], b[15]]);
    let mut dirs = 0;
    if insn.dir & DIR_SRC != 0 {
        dirs |= GUARD_SRC;
    }
    if insn.dir & DIR_DST != 0 {
        dirs |= GUARD_DST;
    }
    (dirs != 0).then(|| GuardAtom {
        dirs,
        mask: word(&insn.mask),
        value: word(&insn.addr),
    })
}

/// The test that an IPv4 packet's protocol (header byte 9) is `proto`.
fn proto_atom(proto: u8) -> GuardAtom {
    GuardAtom {
        dirs: GUARD_PROTO,
        mask: u32::from_ne_bytes([0, 0xff, 0, 0]),
        value: u32::from_ne_bytes([0, proto, 0, 0]),
    }
}

/// The test that a port `dir` names is in `lo..=hi`, as the bits the range's ports all
/// share (an exact port: all 16; a range: what its ends have in common, a test weaker than
/// the range but one every port in it passes), or `None` when it never holds (it names
/// no port, or its range is empty).
fn port_atom(insn: &FilterInsn) -> Option<GuardAtom> {
    let mut dirs = 0;
    if insn.dir & DIR_SRC != 0 {
        dirs |= GUARD_SPORT;
    }
    if insn.dir & DIR_DST != 0 {
        dirs |= GUARD_DPORT;
    }
    let (lo, hi) = (insn.lo, insn.hi);
    if lo > hi {
        return None;
    }
    let shared = (lo ^ hi).leading_zeros();
    let mask = u16::MAX.checked_shl(16 - shared).unwrap_or(0);
    let bytes = |v: u16| {
        let [a, b] = v.to_be_bytes();
        u32::from_ne_bytes([a, b, 0, 0])
    };
    (dirs != 0).then_some(GuardAtom {
        dirs,
        mask: bytes(mask),
        value: bytes(lo & mask),
    })
}

/// A path that passes test `a` and then needs `then`: the stronger of the two, where a
/// protocol is the weakest test (most of a host's packets are TCP or UDP).
fn both(a: GuardAtom, then: Need) -> Need {
    match then {
        Some(atoms) if atoms.is_empty() => Some(atoms),
        Some(atoms) if a.dirs == GUARD_PROTO => Some(atoms),
        _ => Some(vec![a]),
    }
}

/// Either of two paths: what one or the other needs (too many atoms: nothing).
fn either(a: Need, b: Need) -> Need {
    let (mut a, b) = (a?, b?);
    for x in b {
        if !a.contains(&x) {
            a.push(x);
        }
    }
    (a.len() <= GUARD_ATOMS).then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::filter::compile_filter;

    fn guard(text: &str) -> V4Guard {
        v4_guard(&compile_filter(text).expect("a valid filter"))
    }

    fn v4(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    #[test]
    fn a_filter_guards_the_addresses_protocols_and_ports_it_needs_and_the_rest_nothing() {
        let g = guard("host 192.0.2.99");
        assert_eq!((g.on, g.count), (1, 1));
        assert_eq!(g.atoms[0].dirs, GUARD_SRC | GUARD_DST);
        assert_eq!(
            (g.atoms[0].mask, g.atoms[0].value),
            (!0, v4([192, 0, 2, 99]))
        );
        assert!(g.passes(0, v4([192, 0, 2, 99]), v4([10, 0, 0, 1]), 0));
        assert!(g.passes(0, v4([10, 0, 0, 1]), v4([192, 0, 2, 99]), 0));
        assert!(!g.passes(0, v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), 0));

        // Of a conjunction, one side is enough: the first test met.
        let g = guard("src net 10.1.0.0/16 and udp");
        assert_eq!((g.on, g.count, g.words), (1, 1, GUARD_SRC));
        assert_eq!(g.atoms[0].dirs, GUARD_SRC);
        assert_eq!(g.atoms[0].mask, v4([255, 255, 0, 0]));
        assert!(g.passes(0, v4([10, 1, 7, 7]), 0, 0));
        assert!(!g.passes(0, 0, v4([10, 1, 7, 7]), 0));
        // A protocol is the weaker test: the address is guarded, whatever comes first.
        assert_eq!(guard("udp and src net 10.1.0.0/16"), g);

        // Protocols: byte 9 of the header, the second of the word at byte 8.
        let g = guard("icmp");
        assert_eq!((g.on, g.count, g.words), (1, 1, GUARD_PROTO));
        assert!(g.passes(v4([64, 1, 0x12, 0x34]), 0, 0, 0));
        assert!(!g.passes(v4([64, 17, 0x12, 0x34]), 0, 0, 0));
        let g = guard("tcp or host 192.0.2.99");
        assert_eq!((g.count, g.words), (2, GUARD_PROTO | GUARD_SRC | GUARD_DST));
        assert!(g.passes(v4([64, 6, 0, 0]), 0, 0, 0));
        assert!(g.passes(v4([64, 17, 0, 0]), v4([192, 0, 2, 99]), 0, 0));
        assert!(!g.passes(v4([64, 17, 0, 0]), 0, 0, 0));

        // Ports: the word after the header, source port first, in network order.
        let ports = |s: u16, d: u16| {
            let (s, d) = (s.to_be_bytes(), d.to_be_bytes());
            u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
        };
        let g = guard("port 53");
        assert_eq!((g.on, g.count, g.words), (1, 1, GUARD_SPORT | GUARD_DPORT));
        assert!(g.passes(0, 0, 0, ports(53, 40000)));
        assert!(g.passes(0, 0, 0, ports(40000, 53)));
        assert!(!g.passes(0, 0, 0, ports(40000, 54)));
        let g = guard("dst port 443");
        assert!(g.passes(0, 0, 0, ports(443, 443)));
        assert!(!g.passes(0, 0, 0, ports(443, 80)));
        // A range: the bits its ends share (1024-2047: the top five), so every port in it
        // passes, and some next to it too.
        let g = guard("tcp and src portrange 1024-2047");
        assert_eq!(g.words, GUARD_SPORT);
        for p in [1024, 1500, 2047] {
            assert!(g.passes(0, 0, 0, ports(p, 1)), "{p}");
        }
        for p in [1023, 2048, 80] {
            assert!(!g.passes(0, 0, 0, ports(p, 1)), "{p}");
        }
        // 1000-1100 share their top five bits (0-2047).
        let g = guard("portrange 1000-1100");
        assert!((1000..=1100).all(|p| g.passes(0, 0, 0, ports(p, 7))));
        assert!((1000..=1100).all(|p| g.passes(0, 0, 0, ports(7, p))));
        assert!(g.passes(0, 0, 0, ports(80, 4000)));
        assert!(!g.passes(0, 0, 0, ports(4000, 5000)));
        assert_eq!(guard("host 192.0.2.99 or port 53").count, 2);

        // Two hosts; a host and an IPv6 host (which no IPv4 packet has).
        assert_eq!(guard("host 192.0.2.99 or host 10.1.0.1").count, 2);
        assert_eq!(guard("host 192.0.2.99 or host 2001:db8::1").count, 1);
        // Only IPv6 or ARP can match: every IPv4 packet is rejected.
        for f in ["ip6", "arp", "icmp6", "host 2001:db8::1", "ip6 and tcp"] {
            let g = guard(f);
            assert_eq!((g.on, g.count), (1, 0), "{f}");
        }
        // A way to the match without an IPv4 address, protocol or port test: no guard.
        for f in [
            "",
            "ip",
            "not host 192.0.2.99",
            "not tcp",
            "not port 53",
            "host 192.0.2.99 or ip",
            "host 1.1.1.1 or host 2.2.2.2 or host 3.3.3.3 or host 4.4.4.4 or host 5.5.5.5",
        ] {
            assert_eq!(guard(f), V4Guard::OFF, "{f:?}");
        }
    }
}
