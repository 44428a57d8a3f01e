//! Synthetic rule sets and packets, drawn from a small vocabulary so that packets match
//! several rules: for property tests (compiled tables, the kernel classifier) and benchmarks.

use pktpath_common::route::{FAMILY_V4, FAMILY_V6, RuleValue};

use super::tuples::{PacketFields, Rule, matches};

/// xorshift64*: deterministic, dependency-free randomness for the property tests.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with the given probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

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

/// Rules drawn from a small vocabulary so that packets match several of them.
pub fn random_rules(rng: &mut Rng, n: usize) -> Vec<Rule> {
    let mut priorities: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
    for i in (1..priorities.len()).rev() {
        priorities.swap(i, rng.below(i as u64 + 1) as usize);
    }
    priorities
        .into_iter()
        .enumerate()
        .map(|(slot, priority)| {
            let family = if rng.chance(70) { FAMILY_V4 } else { FAMILY_V6 };
            let addr = |rng: &mut Rng| -> ([u8; 16], u8) {
                if family == FAMILY_V4 {
                    let lens = [8, 16, 24, 32];
                    (
                        v4(
                            10,
                            rng.below(3) as u8,
                            rng.below(3) as u8,
                            rng.below(4) as u8,
                        ),
                        lens[rng.below(4) as usize],
                    )
                } else {
                    let lens = [16, 64, 128];
                    (
                        v6(rng.below(4) as u8, rng.below(3) as u8),
                        lens[rng.below(3) as usize],
                    )
                }
            };
            let port = |rng: &mut Rng| -> Option<(u16, u16)> {
                match rng.below(4) {
                    0 => None,
                    1 => {
                        let p = [22, 53, 80, 443][rng.below(4) as usize];
                        Some((p, p))
                    }
                    2 => Some((1024, 65535)),
                    _ => {
                        let lo = rng.below(2000) as u16 + 1;
                        Some((lo, lo + rng.below(300) as u16))
                    }
                }
            };
            let src = rng.chance(50).then(|| addr(rng));
            let dst = rng.chance(50).then(|| addr(rng));
            let any_family = src.is_none() && dst.is_none() && rng.chance(30);
            Rule {
                priority,
                family: if any_family { None } else { Some(family) },
                iif: rng.chance(20).then(|| rng.below(3) as u32 + 1),
                src,
                dst,
                proto: rng.chance(50).then(|| [6, 17, 1][rng.below(3) as usize]),
                sport: if rng.chance(20) { port(rng) } else { None },
                dport: port(rng),
                dscp: rng.chance(15).then(|| [0, 10, 46][rng.below(3) as usize]),
                mark: rng.chance(15).then(|| {
                    (
                        rng.below(4) as u32,
                        [0xff, 0x0f, 0xffff_ffff][rng.below(3) as usize],
                    )
                }),
                value: RuleValue {
                    slot: slot as u32,
                    action: rng.below(4) as u8,
                    ..Default::default()
                },
            }
        })
        .collect()
}

pub fn random_packet(rng: &mut Rng) -> PacketFields {
    let family = if rng.chance(70) { FAMILY_V4 } else { FAMILY_V6 };
    let addr = |rng: &mut Rng| {
        if family == FAMILY_V4 {
            v4(
                10,
                rng.below(3) as u8,
                rng.below(3) as u8,
                rng.below(4) as u8,
            )
        } else {
            v6(rng.below(4) as u8, rng.below(3) as u8)
        }
    };
    let proto = [6, 17, 1, 47][rng.below(4) as usize];
    let has_ports = proto == 6 || proto == 17;
    let port = |rng: &mut Rng| -> u16 {
        if !has_ports {
            return 0;
        }
        match rng.below(3) {
            0 => [22, 53, 80, 443][rng.below(4) as usize],
            1 => rng.below(2300) as u16 + 1,
            _ => rng.below(65535) as u16 + 1,
        }
    };
    PacketFields {
        family,
        iif: rng.below(3) as u32 + 1,
        src: addr(rng),
        dst: addr(rng),
        proto,
        sport: port(rng),
        dport: port(rng),
        dscp: [0, 10, 46][rng.below(3) as usize],
        mark: rng.below(5) as u32,
    }
}

/// The definition: the lowest-priority matching rule.
pub fn linear(rules: &[Rule], p: &PacketFields) -> Option<u32> {
    rules
        .iter()
        .filter(|r| matches(r, p))
        .map(|r| r.priority)
        .min()
}
