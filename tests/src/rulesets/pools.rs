//! Nested, overlapping address pools: a few dozen top prefixes, subnets inside them and
//! hosts inside those. A prefix of any length is cut from one path down this hierarchy, so
//! shorter prefixes contain longer ones and the rules built on them overlap, as in the
//! address structure the packet-classification literature finds in real rule sets.
//!
//! Addresses are held left-aligned in a `u128` (an IPv4 address in the top 32 bits), so
//! one set of masks serves both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pktpath_core::{route::config::Prefix, route::datapath::synth::Rng};

use super::random::{Random as _, zipf};

/// The top `len` bits set.
pub(super) fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// One prefix of the hierarchy and, below it, the next level.
#[derive(Clone, Debug)]
struct Node {
    addr: u128,
    len: u8,
    children: Vec<Node>,
}

/// One family's address hierarchy.
#[derive(Clone, Debug)]
pub(super) struct Pool {
    /// Address width in bits: 32 or 128.
    width: u8,
    roots: Vec<Node>,
}

/// Random bits strictly below `from` and at or above `to` bit positions (MSB first).
fn bits_between(rng: &mut Rng, from: u8, to: u8) -> u128 {
    rng.next_u128() & !mask(from) & mask(to)
}

impl Pool {
    /// IPv4: 40 top prefixes (/8 to /16) in unicast space, 24 subnets (/16 to /24) in
    /// each, 48 hosts in each subnet.
    pub(super) fn v4(rng: &mut Rng) -> Self {
        let roots = (0..40)
            .map(|_| {
                let len = 8 + rng.below(9) as u8;
                // First octet 1-223 without 127: unicast, not loopback.
                let mut first = 1 + rng.below(222) as u128;
                if first >= 127 {
                    first += 1;
                }
                let addr = ((first << 120) | bits_between(rng, 8, 32)) & mask(len);
                let children = (0..24)
                    .map(|_| {
                        let sub = len.max(16) + rng.below(u64::from(25 - len.max(16))) as u8;
                        let addr = addr | bits_between(rng, len, sub);
                        Node {
                            addr,
                            len: sub,
                            children: hosts(rng, addr, sub, 32),
                        }
                    })
                    .collect();
                Node {
                    addr,
                    len,
                    children,
                }
            })
            .collect();
        Pool { width: 32, roots }
    }

    /// IPv6: 32 unique-local top prefixes (/32 to /44 under fd00::/8), 24 subnets (/48,
    /// /52, /56, /60 or /64) in each, 48 hosts (random interface ids) in each subnet.
    pub(super) fn v6(rng: &mut Rng) -> Self {
        let roots = (0..32)
            .map(|_| {
                let len = 32 + 4 * rng.below(4) as u8;
                let addr = ((0xfdu128 << 120) | bits_between(rng, 8, len)) & mask(len);
                let children = (0..24)
                    .map(|_| {
                        let sub = [48, 48, 52, 56, 56, 60, 64, 64][rng.below(8) as usize];
                        let addr = addr | bits_between(rng, len, sub);
                        Node {
                            addr,
                            len: sub,
                            children: hosts(rng, addr, sub, 128),
                        }
                    })
                    .collect();
                Node {
                    addr,
                    len,
                    children,
                }
            })
            .collect();
        Pool { width: 128, roots }
    }

    /// A prefix of `len` bits, cut from a skewed path down the hierarchy: popular top
    /// prefixes, subnets and hosts are chosen more often.
    pub(super) fn prefix(&self, rng: &mut Rng, len: u8) -> Prefix {
        let mut node = &self.roots[zipf(rng, self.roots.len())];
        while len > node.len && !node.children.is_empty() {
            node = &node.children[zipf(rng, node.children.len())];
        }
        self.make(node.addr & mask(len), len)
    }

    /// A host address of the hierarchy (a skewed choice, like [`Pool::prefix`]).
    pub(super) fn host(&self, rng: &mut Rng) -> IpAddr {
        self.prefix(rng, self.width).addr()
    }

    /// A uniformly random address of the family (IPv6: under fd00::/8).
    pub(super) fn anywhere(&self, rng: &mut Rng) -> IpAddr {
        let a = rng.next_u128();
        if self.width == 32 {
            self.ip_bits(a)
        } else {
            self.ip_bits((0xfdu128 << 120) | (a & !mask(8)))
        }
    }

    /// A random address inside `p` (the host bits random).
    pub(super) fn inside(&self, rng: &mut Rng, p: &Prefix) -> IpAddr {
        let base = left_aligned(p.addr());
        self.ip_bits(base | bits_between(rng, p.prefix_len(), self.width))
    }

    fn ip_bits(&self, a: u128) -> IpAddr {
        if self.width == 32 {
            IpAddr::V4(Ipv4Addr::from((a >> 96) as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }

    fn make(&self, addr: u128, len: u8) -> Prefix {
        Prefix::new(self.ip_bits(addr), len).expect("the address is masked to its length")
    }
}

/// An address as this module holds it.
fn left_aligned(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// 48 hosts (full-length leaves) inside `addr/len`.
fn hosts(rng: &mut Rng, addr: u128, len: u8, width: u8) -> Vec<Node> {
    (0..48)
        .map(|_| Node {
            addr: addr | bits_between(rng, len, width),
            len: width,
            children: Vec::new(),
        })
        .collect()
}
