//! The filter's syntax tree, its canonical text form, and the reference evaluator: a plain
//! Rust reading of each predicate on a [`PacketKey`], independent of the bytecode, against
//! which the compiled programs are tested.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use pktpath_common::filter::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    KEY_ADDR_V4, KEY_ADDR_V6, KEY_IP, KEY_PORTS, PacketKey,
};

/// Which side of a packet an address or port test looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
    /// Source or destination (no qualifier).
    Either,
}

/// A protocol primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Ip6,
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Arp,
}

impl Proto {
    /// The keyword, as written in filters.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Icmp6 => "icmp6",
            Self::Arp => "arp",
        }
    }

    /// The protocol named by a keyword.
    pub fn from_keyword(word: &str) -> Option<Self> {
        Some(match word {
            "ip" => Self::Ip,
            "ip6" => Self::Ip6,
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "icmp" => Self::Icmp,
            "icmp6" => Self::Icmp6,
            "arp" => Self::Arp,
            _ => return None,
        })
    }
}

/// One test on a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pred {
    Proto(Proto),
    Host {
        dir: Dir,
        addr: IpAddr,
    },
    /// `addr` has no bits set beyond `prefix`.
    Net {
        dir: Dir,
        addr: IpAddr,
        prefix: u8,
    },
    /// `port N` is `lo == hi == N`.
    Port {
        dir: Dir,
        lo: u16,
        hi: u16,
    },
}

/// A filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Pred(Pred),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// How many predicates the expression holds: the size of its compiled program.
    pub fn leaves(&self) -> usize {
        match self {
            Self::Pred(_) => 1,
            Self::Not(e) => e.leaves(),
            Self::And(a, b) | Self::Or(a, b) => a.leaves() + b.leaves(),
        }
    }

    /// The reference evaluator: whether a packet with this key matches.
    pub fn matches(&self, key: &PacketKey) -> bool {
        match self {
            Self::Pred(p) => p.matches(key),
            Self::Not(e) => !e.matches(key),
            Self::And(a, b) => a.matches(key) && b.matches(key),
            Self::Or(a, b) => a.matches(key) || b.matches(key),
        }
    }
}

fn key_addrs(key: &PacketKey) -> Option<(IpAddr, IpAddr)> {
    let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]));
    if key.flags & KEY_ADDR_V4 != 0 {
        Some((v4(&key.src), v4(&key.dst)))
    } else if key.flags & KEY_ADDR_V6 != 0 {
        Some((
            IpAddr::V6(Ipv6Addr::from(key.src)),
            IpAddr::V6(Ipv6Addr::from(key.dst)),
        ))
    } else {
        None
    }
}

fn in_net(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            prefix == 0 || (u32::from(a) ^ u32::from(n)) >> (32 - u32::from(prefix)) == 0
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            prefix == 0 || (u128::from(a) ^ u128::from(n)) >> (128 - u32::from(prefix)) == 0
        }
        _ => false,
    }
}

fn either(dir: Dir, src: bool, dst: bool) -> bool {
    match dir {
        Dir::Src => src,
        Dir::Dst => dst,
        Dir::Either => src || dst,
    }
}

impl Pred {
    /// Whether this predicate holds for a packet with this key.
    pub fn matches(&self, key: &PacketKey) -> bool {
        let ip = key.flags & KEY_IP != 0;
        match *self {
            Self::Proto(Proto::Ip) => key.ethertype == ETH_P_IP,
            Self::Proto(Proto::Ip6) => key.ethertype == ETH_P_IPV6,
            Self::Proto(Proto::Arp) => key.ethertype == ETH_P_ARP,
            Self::Proto(Proto::Tcp) => ip && key.ip_proto == IPPROTO_TCP,
            Self::Proto(Proto::Udp) => ip && key.ip_proto == IPPROTO_UDP,
            Self::Proto(Proto::Icmp) => {
                ip && key.ethertype == ETH_P_IP && key.ip_proto == IPPROTO_ICMP
            }
            Self::Proto(Proto::Icmp6) => {
                ip && key.ethertype == ETH_P_IPV6 && key.ip_proto == IPPROTO_ICMPV6
            }
            Self::Host { dir, addr } => {
                key_addrs(key).is_some_and(|(s, d)| either(dir, s == addr, d == addr))
            }
            Self::Net { dir, addr, prefix } => key_addrs(key).is_some_and(|(s, d)| {
                either(dir, in_net(s, addr, prefix), in_net(d, addr, prefix))
            }),
            Self::Port { dir, lo, hi } => {
                key.flags & KEY_PORTS != 0
                    && either(
                        dir,
                        (lo..=hi).contains(&key.sport),
                        (lo..=hi).contains(&key.dport),
                    )
            }
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Src => f.write_str("src "),
            Self::Dst => f.write_str("dst "),
            Self::Either => Ok(()),
        }
    }
}

impl fmt::Display for Pred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proto(p) => f.write_str(p.keyword()),
            Self::Host { dir, addr } => write!(f, "{dir}host {addr}"),
            Self::Net { dir, addr, prefix } => write!(f, "{dir}net {addr}/{prefix}"),
            Self::Port { dir, lo, hi } if lo == hi => write!(f, "{dir}port {lo}"),
            Self::Port { dir, lo, hi } => write!(f, "{dir}portrange {lo}-{hi}"),
        }
    }
}

/// The canonical form: fully parenthesized, so it parses back to the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pred(p) => write!(f, "{p}"),
            Self::Not(e) => write!(f, "not ({e})"),
            Self::And(a, b) => write!(f, "({a}) and ({b})"),
            Self::Or(a, b) => write!(f, "({a}) or ({b})"),
        }
    }
}
