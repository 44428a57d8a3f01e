//! Packets and filters for differential testing: builders of
//! IPv4/IPv6/ARP packets and Ethernet frames, and random packets and expressions drawn from
//! small pools so that random filters often match random packets.
//!
//! The builders and pools serve the unit tests, which draw their packets and filters from
//! proptest strategies of the same shapes (`tests/strategy.rs`; they shrink). The seeded
//! generators here serve the privileged tests (bytecode in the kernel vs. user space): a
//! fixed seed replays the same filters and frames in the kernel, with no proptest there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pktpath_common::filter::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP,
};

use super::ast::{Dir, Expr, Pred, Proto};
use crate::route::datapath::synth::mask_to;

pub use crate::rng::Rng;

/// IPv4 addresses random packets and filters draw from.
pub const V4_POOL: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 1, 2, 3),
    Ipv4Addr::new(192, 168, 1, 1),
];
/// IPv6 addresses random packets and filters draw from (one is IPv4-mapped on purpose).
pub const V6_POOL: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 5),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001),
];
/// Ports random packets and filters draw from.
pub const PORT_POOL: [u16; 6] = [22, 53, 80, 443, 1024, 8080];
/// Transport protocols of random packets.
pub const L4_POOL: [u8; 6] = [
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_SCTP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    47,
];
/// Protocol primitives of random filters.
pub const PROTO_POOL: [Proto; 7] = [
    Proto::Ip,
    Proto::Ip6,
    Proto::Tcp,
    Proto::Udp,
    Proto::Icmp,
    Proto::Icmp6,
    Proto::Arp,
];
/// Prefix lengths of random IPv6 `net` filters (IPv4 ones take any of 0 to 32).
pub const V6_PREFIX_POOL: [u8; 9] = [0, 8, 16, 32, 64, 96, 100, 127, 128];

/// An IPv4 packet (20-byte header, no options unless `options` > 0 words).
pub fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, options: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + options;
    let total = usize::from(ihl) * 4 + l4.len();
    let mut p = vec![0u8; usize::from(ihl) * 4];
    p[0] = 0x40 | ihl;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

/// An IPv6 packet; `ext` are (next-header value, bytes) of extension headers to insert, each
/// a multiple of 8 bytes long.
pub fn ipv6(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, ext: &[(u8, Vec<u8>)], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = ext.first().map_or(proto, |e| e.0);
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut h = bytes.clone();
        h[0] = ext.get(i + 1).map_or(proto, |e| e.0);
        p.extend_from_slice(&h);
    }
    let payload = (p.len() - 40 + l4.len()) as u16;
    p[4..6].copy_from_slice(&payload.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// An IPv6 extension header of `len8` 8-byte units (hop-by-hop/routing/destination style).
pub fn ipv6_ext(len8: usize) -> Vec<u8> {
    let mut h = vec![0u8; len8 * 8];
    h[1] = (len8 - 1) as u8;
    h
}

/// An IPv6 fragment header with this fragment offset (8-byte units).
pub fn ipv6_frag(offset: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[2..4].copy_from_slice(&(offset << 3).to_be_bytes());
    h
}

/// The first bytes of a TCP or UDP header with these ports (padded to `len` bytes, >= 4).
pub fn l4_ports(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut h = vec![0u8; len.max(4)];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

/// An ARP request for IPv4 over Ethernet.
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes());
    p[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    p[14..18].copy_from_slice(&sender.octets());
    p[24..28].copy_from_slice(&target.octets());
    p
}

/// A frame of another EtherType (LLDP's), which no filter primitive matches but `not`.
pub fn other_l3() -> (u16, Vec<u8>) {
    (0x88cc, vec![0x45; 46])
}

/// `net addr/prefix`, the bits of `addr` beyond `prefix` cleared.
pub fn net(dir: Dir, addr: IpAddr, prefix: u8) -> Pred {
    Pred::Net {
        dir,
        addr: mask_to(addr, prefix),
        prefix,
    }
}

/// An Ethernet frame carrying `l3`, padded to the 60-byte minimum.
pub fn ethernet(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A random packet from the network header on, and its EtherType: IPv4 (sometimes with
/// options or fragmented), IPv6 (sometimes with extension headers), ARP, or another
/// EtherType; TCP, UDP, SCTP, ICMP, ICMPv6 or other payloads; sometimes truncated.
pub fn random_l3(rng: &mut Rng) -> (u16, Vec<u8>) {
    let port = |rng: &mut Rng| {
        if rng.below(4) == 0 {
            rng.next_u64() as u16
        } else {
            rng.pick(&PORT_POOL)
        }
    };
    let (ethertype, mut p) = match rng.below(10) {
        0..=3 => {
            let proto = rng.pick(&L4_POOL);
            let l4 = l4_ports(port(rng), port(rng), 8);
            let options = if rng.below(4) == 0 {
                rng.below(11) as u8
            } else {
                0
            };
            let frag = if rng.below(6) == 0 {
                rng.below(3) as u16
            } else {
                0
            };
            let src = rng.pick(&V4_POOL);
            let dst = rng.pick(&V4_POOL);
            (ETH_P_IP, ipv4(proto, src, dst, options, frag, &l4))
        }
        4..=7 => {
            let proto = rng.pick(&L4_POOL);
            let l4 = l4_ports(port(rng), port(rng), 8);
            let mut ext = Vec::new();
            for _ in 0..rng.below(4) {
                match rng.below(4) {
                    0 => ext.push((0, ipv6_ext(1 + rng.index(2)))),
                    1 => ext.push((43, ipv6_ext(1 + rng.index(3)))),
                    2 => ext.push((60, ipv6_ext(1))),
                    _ => ext.push((44, ipv6_frag(rng.below(2) as u16))),
                }
            }
            let src = rng.pick(&V6_POOL);
            let dst = rng.pick(&V6_POOL);
            (ETH_P_IPV6, ipv6(proto, src, dst, &ext, &l4))
        }
        8 => (ETH_P_ARP, arp(rng.pick(&V4_POOL), rng.pick(&V4_POOL))),
        _ => other_l3(),
    };
    if rng.below(8) == 0 {
        let keep = rng.index(p.len() + 1);
        p.truncate(keep);
    }
    (ethertype, p)
}

fn random_dir(rng: &mut Rng) -> Dir {
    rng.pick(&[Dir::Src, Dir::Dst, Dir::Either])
}

fn random_addr(rng: &mut Rng) -> IpAddr {
    if rng.below(2) == 0 {
        IpAddr::V4(rng.pick(&V4_POOL))
    } else {
        IpAddr::V6(rng.pick(&V6_POOL))
    }
}

/// A random predicate.
pub fn random_pred(rng: &mut Rng) -> Pred {
    match rng.below(5) {
        0 => Pred::Proto(rng.pick(&PROTO_POOL)),
        1 => Pred::Host {
            dir: random_dir(rng),
            addr: random_addr(rng),
        },
        2 => {
            let addr = random_addr(rng);
            let prefix = match addr {
                IpAddr::V4(_) => rng.below(33) as u8,
                IpAddr::V6(_) => rng.pick(&V6_PREFIX_POOL),
            };
            net(random_dir(rng), addr, prefix)
        }
        3 => {
            let p = rng.pick(&PORT_POOL);
            Pred::Port {
                dir: random_dir(rng),
                lo: p,
                hi: p,
            }
        }
        _ => {
            let a = rng.pick(&PORT_POOL);
            let b = rng.pick(&PORT_POOL);
            Pred::Port {
                dir: random_dir(rng),
                lo: a.min(b),
                hi: a.max(b),
            }
        }
    }
}

/// A random expression of at most `depth` levels of operators.
pub fn random_expr(rng: &mut Rng, depth: usize) -> Expr {
    if depth == 0 || rng.below(3) == 0 {
        return Expr::Pred(random_pred(rng));
    }
    match rng.below(3) {
        0 => Expr::Not(Box::new(random_expr(rng, depth - 1))),
        1 => Expr::And(
            Box::new(random_expr(rng, depth - 1)),
            Box::new(random_expr(rng, depth - 1)),
        ),
        _ => Expr::Or(
            Box::new(random_expr(rng, depth - 1)),
            Box::new(random_expr(rng, depth - 1)),
        ),
    }
}
