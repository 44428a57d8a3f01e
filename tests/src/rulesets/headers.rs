//! Packet headers aimed at a rule set, with the locality of real traffic: a few policies
//! draw most of the packets (a Zipf-like choice over a shuffled order), each header is a
//! random point inside its policy's match, and some headers repeat earlier ones (flows).
//! Which policy wins a header is the reference model's business: overlaps let a policy of
//! better priority take headers drawn from another.

use pktpath_core::{
    route::datapath::synth::Rng,
    route::{
        compile::InterfaceId,
        config::{Family, Match, PortRange, Prefix, Protocol},
        packet::PacketFields,
    },
};

use super::{
    INTERFACES, RuleSet,
    random::{Random as _, Zipf, zipf},
    shapes::{DSCPS, WELL_KNOWN},
};

/// Percent of headers that repeat an earlier header (another packet of the same flow).
const REPEATS: u64 = 25;

/// `count` headers for `set`, deterministic in `seed`.
pub fn headers(set: &RuleSet, count: usize, seed: u64) -> Vec<PacketFields> {
    let mut rng = Rng::new(seed ^ 0x0068_6561_6465_7273);
    let policies = &set.runtime.policies;
    let mut order: Vec<usize> = (0..policies.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let popularity = Zipf::new(policies.len());
    let any = Match::default();
    let mut out: Vec<PacketFields> = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && rng.chance(REPEATS) {
            let earlier = out[rng.below(i as u64) as usize];
            out.push(earlier);
            continue;
        }
        let m = if order.is_empty() {
            &any
        } else {
            &policies[order[popularity.sample(&mut rng)]].matches
        };
        out.push(inside(&mut rng, set, m));
    }
    out
}

/// A random header the match `m` accepts.
fn inside(rng: &mut Rng, set: &RuleSet, m: &Match) -> PacketFields {
    let family = match m.src.or(m.dst) {
        Some(p) => p.family(),
        None if rng.chance(70) => Family::Ipv4,
        None => Family::Ipv6,
    };
    let v6 = family == Family::Ipv6;
    let pool = if v6 { &set.pools.v6 } else { &set.pools.v4 };
    let address = |rng: &mut Rng, prefix: Option<Prefix>| match prefix {
        Some(p) => pool.inside(rng, &p),
        // Traffic mostly comes from and goes to the networks the rules name.
        None if rng.chance(80) => pool.host(rng),
        None => pool.anywhere(rng),
    };
    let src = address(rng, m.src);
    let dst = address(rng, m.dst);
    let icmp = if v6 {
        Protocol::ICMPV6.0
    } else {
        Protocol::ICMP.0
    };
    let proto = match m.proto {
        Some(p) => p.0,
        None => rng.weighted(&[
            (50, Protocol::TCP.0),
            (30, Protocol::UDP.0),
            (10, icmp),
            (10, 47),
        ]),
    };
    let (sport, dport) = if Protocol(proto).has_ports() {
        let sport = match m.sport {
            Some(r) => port_in(rng, r),
            None => rng.within(1024, 65535) as u16,
        };
        let dport = match m.dport {
            Some(r) => port_in(rng, r),
            None if rng.chance(60) => WELL_KNOWN[zipf(rng, WELL_KNOWN.len())],
            None => rng.within(1, 65535) as u16,
        };
        (Some(sport), Some(dport))
    } else {
        (None, None)
    };
    let iif = match &m.iif {
        Some(name) => INTERFACES
            .iter()
            .position(|i| i == name)
            .expect("policies name interfaces of the configuration"),
        None => rng.weighted(&[(60, 0), (30, 1), (4, 2), (2, 3), (2, 4), (2, 5)]),
    };
    let dscp = match m.dscp {
        Some(d) => d,
        None if rng.chance(85) => 0,
        None => DSCPS[rng.below(DSCPS.len() as u64) as usize],
    };
    let mark = match m.mark {
        Some(k) => k.value | (rng.below(0x1_0000) as u32 & !k.mask),
        None if rng.chance(90) => 0,
        None => rng.below(0x1_0000) as u32,
    };
    PacketFields {
        iif: InterfaceId(iif),
        src,
        dst,
        proto,
        sport,
        dport,
        dscp,
        mark,
    }
}

/// A port in `r`, never 0 (a packet's port 0 is not what a benchmark should exercise).
fn port_in(rng: &mut Rng, r: PortRange) -> u16 {
    rng.within(u64::from(r.first().max(1)), u64::from(r.last().max(1))) as u16
}
