//! Proptest strategies for the filter's property tests: the packets and expressions of
//! `sample`'s seeded generators, from the same pools with the same weights, as strategies
//! that shrink (towards IPv4, fewer extension headers, no truncation, a single predicate,
//! the first entry of each pool).

use std::net::IpAddr;

use pktpath_common::filter::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};
use proptest::{
    collection::vec,
    option,
    prelude::*,
    sample::{Index, select},
};

use super::super::{
    ast::{Dir, Expr, Pred},
    sample::{
        L4_POOL, PORT_POOL, PROTO_POOL, V4_POOL, V6_POOL, V6_PREFIX_POOL, arp, ipv4, ipv6,
        ipv6_ext, ipv6_frag, l4_ports, net, other_l3,
    },
};

/// A packet's port: from the pool three times in four, else any.
fn port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => select(PORT_POOL.to_vec()), 1 => any::<u16>()]
}

/// IPv4, with options one time in four and a fragment (first or not) one in six.
fn ipv4_l3() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let options = prop_oneof![3 => Just(0u8), 1 => 0u8..11];
    let frag = prop_oneof![5 => Just(0u16), 1 => 0u16..3];
    let addr = || select(V4_POOL.to_vec());
    (
        select(L4_POOL.to_vec()),
        port(),
        port(),
        options,
        frag,
        addr(),
        addr(),
    )
        .prop_map(|(proto, sport, dport, options, frag, src, dst)| {
            let l4 = l4_ports(sport, dport, 8);
            (ETH_P_IP, ipv4(proto, src, dst, options, frag, &l4))
        })
}

/// An IPv6 extension header and the next-header value naming it.
fn ipv6_ext_header() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        (1usize..=2).prop_map(|n| (0, ipv6_ext(n))),
        (1usize..=3).prop_map(|n| (43, ipv6_ext(n))),
        Just((60, ipv6_ext(1))),
        (0u16..2).prop_map(|offset| (44, ipv6_frag(offset))),
    ]
}

/// IPv6 with up to three extension headers.
fn ipv6_l3() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let addr = || select(V6_POOL.to_vec());
    let ext = vec(ipv6_ext_header(), 0..4);
    (
        select(L4_POOL.to_vec()),
        port(),
        port(),
        ext,
        addr(),
        addr(),
    )
        .prop_map(|(proto, sport, dport, ext, src, dst)| {
            let l4 = l4_ports(sport, dport, 8);
            (ETH_P_IPV6, ipv6(proto, src, dst, &ext, &l4))
        })
}

/// A packet from the network header on, and its EtherType, as `sample::random_l3` draws
/// them: IPv4 or IPv6 four times in ten each, ARP or another EtherType once each; cut short
/// one time in eight.
pub(super) fn l3() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let arp = (select(V4_POOL.to_vec()), select(V4_POOL.to_vec()))
        .prop_map(|(sender, target)| (ETH_P_ARP, arp(sender, target)));
    let packet = prop_oneof![4 => ipv4_l3(), 4 => ipv6_l3(), 1 => arp, 1 => Just(other_l3())];
    (packet, option::weighted(0.125, any::<Index>())).prop_map(|((ethertype, mut p), cut)| {
        if let Some(cut) = cut {
            p.truncate(cut.index(p.len() + 1));
        }
        (ethertype, p)
    })
}

fn dir() -> impl Strategy<Value = Dir> {
    select(vec![Dir::Src, Dir::Dst, Dir::Either])
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        select(V4_POOL.to_vec()).prop_map(IpAddr::V4),
        select(V6_POOL.to_vec()).prop_map(IpAddr::V6),
    ]
}

/// A predicate, as `sample::random_pred` draws them: a protocol, a host, a network, a port
/// or a port range, one time in five each.
fn pred() -> impl Strategy<Value = Pred> {
    let network = prop_oneof![
        (select(V4_POOL.to_vec()), 0u8..=32).prop_map(|(a, len)| (IpAddr::V4(a), len)),
        (select(V6_POOL.to_vec()), select(V6_PREFIX_POOL.to_vec()))
            .prop_map(|(a, len)| (IpAddr::V6(a), len)),
    ];
    let port = || select(PORT_POOL.to_vec());
    prop_oneof![
        select(PROTO_POOL.to_vec()).prop_map(Pred::Proto),
        (dir(), addr()).prop_map(|(dir, addr)| Pred::Host { dir, addr }),
        (dir(), network).prop_map(|(dir, (addr, len))| net(dir, addr, len)),
        (dir(), port()).prop_map(|(dir, p)| Pred::Port { dir, lo: p, hi: p }),
        (dir(), port(), port()).prop_map(|(dir, a, b)| Pred::Port {
            dir,
            lo: a.min(b),
            hi: a.max(b),
        }),
    ]
}

/// An expression of at most `depth` levels of operators, as `sample::random_expr` draws
/// them: a predicate one time in three (always at the bottom), else `not`, `and` or `or`.
pub(super) fn expr(depth: usize) -> BoxedStrategy<Expr> {
    let leaf = pred().prop_map(Expr::Pred);
    if depth == 0 {
        return leaf.boxed();
    }
    let sub = expr(depth - 1);
    let pair = (sub.clone(), sub.clone());
    prop_oneof![
        3 => leaf,
        2 => sub.prop_map(|e| Expr::Not(Box::new(e))),
        2 => pair.clone().prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
        2 => pair.prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
    ]
    .boxed()
}
