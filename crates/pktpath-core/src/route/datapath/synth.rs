//! Deterministic randomness, address helpers and dense random policy sets for tests and
//! benchmarks (the realistic rule-set profiles live in the test harness crate).
//!
//! The dense sets are seeded, not proptest: the privileged tests replay one fixed sequence
//! of them in the kernel. The root-free classifier tests draw the same shapes from
//! strategies that shrink (`datapath/classifier/tests.rs`).

use std::net::IpAddr;

use crate::{
    route::datapath::policy::{Interfaces, LinkInfo},
    route::{
        compile::{InterfaceId, PolicySet, Topology},
        config::{
            Action, MarkMatch, Match, Policy, PortRange, Prefix, Protocol, RUNTIME_VERSION,
            RuntimeConfiguration, Source,
        },
        packet::PacketFields,
    },
};

pub use crate::rng::Rng;

/// An IPv4 address in the 16-byte form keys use.
pub fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&[a, b, c, d]);
    x
}

/// `fdNN::TT`.
pub fn v6(tail: u8, net: u8) -> [u8; 16] {
    let mut x = [0; 16];
    x[0] = 0xfd;
    x[1] = net;
    x[15] = tail;
    x
}

/// The static configuration of the dense sets: two input interfaces, an uplink, a next hop
/// with both gateways and one with an IPv4 gateway only, the main table.
pub const DENSE_CONFIG: &str = r#"{
  "version": 1,
  "interfaces": [ { "name": "in0" }, { "name": "in1" }, { "name": "out0" } ],
  "next_hops": [
    { "name": "both", "interface": "out0", "gateway4": "10.9.0.1", "gateway6": "fd09::1" },
    { "name": "v4only", "interface": "out0", "gateway4": "10.9.0.2" }
  ],
  "tables": [ { "name": "main", "id": 254 } ]
}"#;

/// [`DENSE_CONFIG`], validated.
pub fn dense_topology() -> Topology {
    Topology::from_source(&Source::new("configuration.json", DENSE_CONFIG))
        .expect("DENSE_CONFIG is valid")
}

/// Kernel facts for [`DENSE_CONFIG`]'s interfaces: ifindexes 2, 3 and 4 (`in0` is 2).
pub fn dense_ifaces() -> Interfaces {
    Interfaces {
        links: (0..3)
            .map(|i| LinkInfo {
                ifindex: 2 + i,
                mtu: 1500,
                mac: [2, 0, 0, 0, 0, i as u8],
            })
            .collect(),
    }
}

/// An address of the dense vocabulary: `10.a.b.c` or `fd0a::c`.
fn dense_addr(rng: &mut Rng, v6_family: bool) -> IpAddr {
    let (a, b, c) = (rng.below(3) as u8, rng.below(3) as u8, rng.below(4) as u8);
    if v6_family {
        IpAddr::from(v6(c, a))
    } else {
        IpAddr::from([10, a, b, c])
    }
}

fn dense_prefix(rng: &mut Rng, v6_family: bool) -> Prefix {
    let addr = dense_addr(rng, v6_family);
    let len = if v6_family {
        [0, 8, 16, 64, 120, 128][rng.below(6) as usize]
    } else {
        [0, 8, 16, 24, 30, 32][rng.below(6) as usize]
    };
    Prefix::new(mask_to(addr, len), len).expect("a masked address and a valid length")
}

/// `addr` with the bits after the first `len` cleared.
pub fn mask_to(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(x) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::from((u32::from(x) & m).to_be_bytes())
        }
        IpAddr::V6(x) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::from((u128::from(x) & m).to_be_bytes())
        }
    }
}

fn dense_ports(rng: &mut Rng) -> Option<PortRange> {
    match rng.below(7) {
        0..=2 => None,
        3 => Some(PortRange::single(
            [0, 22, 53, 80, 443][rng.below(5) as usize],
        )),
        4 => Some(PortRange::new(0, 1023).expect("a range")),
        5 => Some(PortRange::new(1024, 65535).expect("a range")),
        _ => {
            let lo = rng.below(600) as u16;
            Some(PortRange::new(lo, lo + rng.below(300) as u16).expect("a range"))
        }
    }
}

/// `n` policies drawn from a small vocabulary, so that they overlap (nested prefixes of both
/// families, crossing port ranges, port 0, `proto 0`, wildcards, interfaces, DSCP, marks),
/// with distinct priorities in an order unrelated to the file's. Policy `i` is `p{i}`;
/// its action passes the packet with mark `mark_base + i` when `mark_base` is given (so a
/// test run shows which policy decided), else is drawn from drop, pass, forward and
/// lookup_table.
pub fn dense_policies(rng: &mut Rng, n: usize, mark_base: Option<u32>) -> PolicySet {
    let mut priorities: Vec<u32> = (0..n as u32).map(|i| i * 7 + 1).collect();
    for i in (1..priorities.len()).rev() {
        priorities.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let policies = priorities
        .into_iter()
        .enumerate()
        .map(|(i, priority)| {
            let family = match rng.below(4) {
                0 | 1 => Some(false),
                2 => Some(true),
                _ => None,
            };
            let v6_family = family == Some(true);
            let (src, dst) = match family {
                None => (None, None),
                Some(_) => (
                    rng.chance(60).then(|| dense_prefix(rng, v6_family)),
                    rng.chance(60).then(|| dense_prefix(rng, v6_family)),
                ),
            };
            let proto = match rng.below(5) {
                0 | 1 => None,
                2 => Some(6),
                3 => Some(17),
                _ => Some([0, 1, 47, 58][rng.below(4) as usize]),
            };
            let ports_ok = proto.is_none_or(|p| matches!(p, 6 | 17));
            let sport = dense_ports(rng).filter(|_| ports_ok);
            let dport = dense_ports(rng).filter(|_| ports_ok);
            let matches = Match {
                iif: rng
                    .chance(20)
                    .then(|| ["in0", "in1"][rng.below(2) as usize].to_owned()),
                src,
                dst,
                proto: proto.map(Protocol),
                sport,
                dport,
                dscp: rng.chance(15).then(|| [0, 10, 46][rng.below(3) as usize]),
                mark: rng.chance(15).then(|| {
                    let mask = [0xff, 0x0f, u32::MAX][rng.below(3) as usize];
                    MarkMatch {
                        value: rng.below(4) as u32 & mask,
                        mask,
                    }
                }),
            };
            let next_hop = if v6_family { "both" } else { "v4only" }.to_owned();
            let action = match (mark_base, rng.below(4)) {
                (Some(base), _) => Action::Pass {
                    set_mark: Some(base + i as u32),
                    set_dscp: None,
                },
                (None, 0) => Action::Drop {},
                (None, 1) => Action::Pass {
                    set_mark: None,
                    set_dscp: None,
                },
                (None, 2) => Action::Forward {
                    next_hop,
                    set_mark: None,
                    set_dscp: None,
                },
                (None, _) => Action::LookupTable {
                    table: "main".to_owned(),
                    set_mark: None,
                    set_dscp: None,
                },
            };
            Policy {
                id: format!("p{i}"),
                priority,
                matches,
                action,
            }
        })
        .collect();
    let runtime = RuntimeConfiguration {
        version: RUNTIME_VERSION,
        policies,
    };
    let text = serde_json::to_string(&runtime).expect("serializable");
    PolicySet::from_source(&dense_topology(), &Source::new("runtime.json", text))
        .expect("dense policies are valid")
}

/// A packet from the same vocabulary as [`dense_policies`] (fragments included: TCP or
/// UDP without ports; `proto 0` for IPv4 only).
pub fn dense_packet(rng: &mut Rng) -> PacketFields {
    let v6_family = rng.chance(35);
    // IPv6 next header 0 is the hop-by-hop options header, never an upper layer.
    let proto = [6, 17, 1, 47, if v6_family { 132 } else { 0 }, 58][rng.below(6) as usize];
    let fragment = rng.chance(10);
    let ports = matches!(proto, 6 | 17 | 132) && !fragment;
    let mut port = || [0, 22, 53, 80, 443, 700, 1023, 1024, 40000][rng.below(9) as usize];
    let (sport, dport) = (port(), port());
    PacketFields {
        iif: InterfaceId(rng.below(2) as usize),
        src: dense_addr(rng, v6_family),
        dst: dense_addr(rng, v6_family),
        proto,
        sport: ports.then_some(sport),
        dport: ports.then_some(dport),
        dscp: [0, 10, 46][rng.below(3) as usize],
        mark: rng.below(5) as u32,
    }
}
