//! What one policy of each profile looks like: the distributions of prefix lengths, port
//! classes, protocols, extra match fields and actions, shaped on what the
//! packet-classification literature reports of the ACL, FW and IPC seed families
//! (ClassBench): skewed length pairs with a long tail, wildcard-heavy firewalls, exact
//! destination ports in ACLs, more port ranges in firewalls.

use pktpath_core::{
    route::config::{Action, MarkMatch, Match, Policy, PortRange, Prefix, Protocol},
    route::datapath::synth::Rng,
};

use super::{
    INTERFACES, NEXT_HOPS, TABLE,
    pools::{Pool, mask},
    random::{Random as _, zipf},
};

/// The seed family a policy is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Acl,
    Fw,
    Ipc,
}

/// A prefix length drawn from a table.
#[derive(Clone, Copy, Debug)]
enum Len {
    /// No prefix (wildcard).
    Any,
    Exactly(u8),
    /// Uniform in the inclusive range.
    Span(u8, u8),
}

use Len::{Any, Exactly, Span};

// IPv4 source and destination lengths, per seed family.
const ACL_SRC4: &[(u32, Len)] = &[
    (45, Any),
    (22, Exactly(32)),
    (8, Exactly(24)),
    (7, Span(25, 31)),
    (3, Exactly(16)),
    (7, Span(17, 23)),
    (6, Span(8, 15)),
    (2, Span(1, 7)),
];
const ACL_DST4: &[(u32, Len)] = &[
    (6, Any),
    (42, Exactly(32)),
    (12, Exactly(24)),
    (14, Span(25, 30)),
    (2, Exactly(31)),
    (6, Exactly(16)),
    (10, Span(17, 23)),
    (6, Span(8, 15)),
    (2, Span(1, 7)),
];
/// Firewall lengths when the side is not a wildcard (wildcards are drawn jointly).
const FW_LEN4: &[(u32, Len)] = &[
    (28, Exactly(32)),
    (14, Exactly(24)),
    (8, Exactly(16)),
    (4, Exactly(8)),
    (4, Exactly(28)),
    (12, Span(25, 31)),
    (14, Span(17, 23)),
    (12, Span(9, 15)),
    (4, Span(1, 7)),
];
const IPC_SRC4: &[(u32, Len)] = &[
    (15, Any),
    (25, Exactly(32)),
    (12, Exactly(24)),
    (8, Exactly(16)),
    (12, Span(25, 31)),
    (14, Span(17, 23)),
    (10, Span(8, 15)),
    (4, Span(1, 7)),
];
const IPC_DST4: &[(u32, Len)] = &[
    (10, Any),
    (30, Exactly(32)),
    (14, Exactly(24)),
    (6, Exactly(16)),
    (14, Span(25, 31)),
    (14, Span(17, 23)),
    (10, Span(8, 15)),
    (2, Span(1, 7)),
];

// IPv6: mostly /48, /56, /64 and /128, with a /32-/127 tail.
const ACL_SRC6: &[(u32, Len)] = &[
    (45, Any),
    (12, Exactly(48)),
    (8, Exactly(56)),
    (14, Exactly(64)),
    (12, Exactly(128)),
    (9, Span(32, 127)),
];
const ACL_DST6: &[(u32, Len)] = &[
    (4, Any),
    (14, Exactly(48)),
    (10, Exactly(56)),
    (24, Exactly(64)),
    (34, Exactly(128)),
    (14, Span(32, 127)),
];
const FW_LEN6: &[(u32, Len)] = &[
    (22, Exactly(48)),
    (14, Exactly(56)),
    (30, Exactly(64)),
    (20, Exactly(128)),
    (14, Span(32, 127)),
];
const IPC_SRC6: &[(u32, Len)] = &[
    (15, Any),
    (18, Exactly(48)),
    (12, Exactly(56)),
    (24, Exactly(64)),
    (18, Exactly(128)),
    (13, Span(32, 127)),
];
const IPC_DST6: &[(u32, Len)] = &[
    (10, Any),
    (18, Exactly(48)),
    (12, Exactly(56)),
    (26, Exactly(64)),
    (22, Exactly(128)),
    (12, Span(32, 127)),
];

/// Port classes of the literature: wildcard, a well-known port, any other exact port,
/// 1024-65535, 0-1023 and an arbitrary range.
#[derive(Clone, Copy, Debug)]
enum PortClass {
    Any,
    WellKnown,
    Exact,
    High,
    Low,
    Range,
}

const ACL_SPORT: &[(u32, PortClass)] = &[
    (80, PortClass::Any),
    (6, PortClass::Exact),
    (4, PortClass::WellKnown),
    (6, PortClass::High),
    (3, PortClass::Range),
    (1, PortClass::Low),
];
const ACL_DPORT: &[(u32, PortClass)] = &[
    (12, PortClass::Any),
    (45, PortClass::WellKnown),
    (20, PortClass::Exact),
    (8, PortClass::High),
    (12, PortClass::Range),
    (3, PortClass::Low),
];
const FW_SPORT: &[(u32, PortClass)] = &[
    (70, PortClass::Any),
    (14, PortClass::High),
    (4, PortClass::WellKnown),
    (4, PortClass::Exact),
    (6, PortClass::Range),
    (2, PortClass::Low),
];
const FW_DPORT: &[(u32, PortClass)] = &[
    (22, PortClass::Any),
    (26, PortClass::WellKnown),
    (8, PortClass::Exact),
    (14, PortClass::High),
    (24, PortClass::Range),
    (6, PortClass::Low),
];
const IPC_SPORT: &[(u32, PortClass)] = &[
    (60, PortClass::Any),
    (8, PortClass::WellKnown),
    (10, PortClass::Exact),
    (10, PortClass::High),
    (8, PortClass::Range),
    (4, PortClass::Low),
];
const IPC_DPORT: &[(u32, PortClass)] = &[
    (30, PortClass::Any),
    (25, PortClass::WellKnown),
    (12, PortClass::Exact),
    (10, PortClass::High),
    (17, PortClass::Range),
    (6, PortClass::Low),
];

/// Well-known service ports, most popular first.
pub(super) const WELL_KNOWN: [u16; 20] = [
    443, 80, 53, 22, 25, 123, 3306, 3389, 8080, 8443, 110, 143, 161, 389, 445, 993, 1433, 1521,
    5432, 6379,
];

/// Ranges that recur in real rule sets (FTP, NetBIOS, SIP, X11, IRC, traceroute, RTP,
/// ephemeral ports...).
const COMMON_RANGES: [(u16, u16); 12] = [
    (20, 21),
    (137, 139),
    (1024, 5000),
    (5060, 5061),
    (6000, 6063),
    (6660, 6669),
    (8000, 8099),
    (10000, 20000),
    (16384, 32767),
    (32768, 60999),
    (33434, 33534),
    (49152, 65535),
];

/// IP protocols; `Icmp` is ICMPv6 in IPv6 policies.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
    Gre,
    Esp,
    Any,
}

const ACL_PROTO: &[(u32, Proto)] = &[
    (62, Proto::Tcp),
    (24, Proto::Udp),
    (5, Proto::Icmp),
    (2, Proto::Gre),
    (2, Proto::Esp),
    (5, Proto::Any),
];
const FW_PROTO: &[(u32, Proto)] = &[
    (46, Proto::Tcp),
    (26, Proto::Udp),
    (8, Proto::Icmp),
    (2, Proto::Gre),
    (2, Proto::Esp),
    (16, Proto::Any),
];
const IPC_PROTO: &[(u32, Proto)] = &[
    (44, Proto::Tcp),
    (22, Proto::Udp),
    (6, Proto::Icmp),
    (3, Proto::Gre),
    (2, Proto::Esp),
    (23, Proto::Any),
];

#[derive(Clone, Copy, Debug)]
enum Act {
    Forward,
    Drop,
    Pass,
    Lookup,
}

const ACL_ACTION: &[(u32, Act)] = &[
    (35, Act::Pass),
    (35, Act::Drop),
    (20, Act::Forward),
    (10, Act::Lookup),
];
const FW_ACTION: &[(u32, Act)] = &[
    (30, Act::Pass),
    (40, Act::Drop),
    (20, Act::Forward),
    (10, Act::Lookup),
];
const IPC_ACTION: &[(u32, Act)] = &[
    (15, Act::Pass),
    (10, Act::Drop),
    (50, Act::Forward),
    (25, Act::Lookup),
];

/// DSCP values policies match on (best effort, AF11, AF21, AF31, AF41, EF, CS1).
pub(super) const DSCPS: [u8; 7] = [0, 10, 18, 26, 34, 46, 8];
/// Mark masks of fwmark matches.
const MARK_MASKS: [u32; 5] = [0xff, 0xff00, 0xffff, 0xf000, 0xffff_ffff];

/// Where a policy's address prefixes come from, and how a policy with neither is written.
pub(super) struct Addresses<'a> {
    pub(super) pool: &'a Pool,
    pub(super) v6: bool,
    /// A policy with neither prefix stays family-free (it matches both families); otherwise
    /// it gets `0.0.0.0/0` (`::/0`) as destination, which keeps it in its family.
    pub(super) family_free: bool,
}

/// One policy of seed family `kind`.
pub(super) fn policy(
    rng: &mut Rng,
    kind: Kind,
    family: &Addresses<'_>,
    id: String,
    priority: u32,
) -> Policy {
    let (src, dst) = prefixes(rng, kind, family);
    let (proto_table, sport_table, dport_table, action_table, iif_percent) = match kind {
        Kind::Acl => (ACL_PROTO, ACL_SPORT, ACL_DPORT, ACL_ACTION, 6),
        Kind::Fw => (FW_PROTO, FW_SPORT, FW_DPORT, FW_ACTION, 8),
        Kind::Ipc => (IPC_PROTO, IPC_SPORT, IPC_DPORT, IPC_ACTION, 10),
    };
    let proto = match rng.weighted(proto_table) {
        Proto::Tcp => Some(Protocol::TCP),
        Proto::Udp => Some(Protocol::UDP),
        Proto::Icmp if family.v6 => Some(Protocol::ICMPV6),
        Proto::Icmp => Some(Protocol::ICMP),
        Proto::Gre => Some(Protocol(47)),
        Proto::Esp => Some(Protocol(50)),
        Proto::Any => None,
    };
    // Ports only with TCP and UDP.
    let ports = proto.is_some_and(|p| p == Protocol::TCP || p == Protocol::UDP);
    let mut port = |table: &[(u32, PortClass)]| {
        if ports {
            let class = rng.weighted(table);
            port_range(rng, class)
        } else {
            None
        }
    };
    let sport = port(sport_table);
    let dport = port(dport_table);
    let mut matches = Match {
        iif: rng
            .chance(iif_percent)
            .then(|| INTERFACES[rng.weighted(&[(45, 0), (35, 1), (5, 2), (5, 3), (5, 4), (5, 5)])])
            .map(str::to_owned),
        src,
        dst,
        proto,
        sport,
        dport,
        dscp: rng
            .chance(2)
            .then(|| DSCPS[rng.below(DSCPS.len() as u64) as usize]),
        mark: rng.chance(2).then(|| {
            let mask = MARK_MASKS[rng.below(MARK_MASKS.len() as u64) as usize];
            MarkMatch {
                value: rng.below(0x1_0000) as u32 & mask,
                mask,
            }
        }),
    };
    if matches_everything(&matches) {
        // A policy that matches every packet of its family hides every policy after it;
        // real sets have one at most, last. Wildcard addresses come with a service here.
        matches.proto = Some(Protocol::TCP);
        matches.dport = Some(PortRange::single(WELL_KNOWN[zipf(rng, WELL_KNOWN.len())]));
    }
    Policy {
        id,
        priority,
        matches,
        action: action(rng, action_table),
    }
}

/// Gives the policies priorities most specific first, as people write rule sets (an
/// exception before the broad rule it carves out of; otherwise the exception is dead), with
/// some noise so that broad rules sometimes come first and hide part of what follows.
/// The policies stay in generation order (ids); only their priorities change.
pub(super) fn order_by_specificity(rng: &mut Rng, policies: &mut [Policy]) {
    let mut keyed: Vec<(f64, usize)> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let noise = (rng.below(1000) as f64 / 1000.0 - 0.5) * 0.6;
            (specificity(&p.matches) + noise, i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (rank, (_, i)) in keyed.into_iter().enumerate() {
        policies[i].priority = 10 * (rank as u32 + 1);
    }
}

/// How narrow a match is: address prefixes by their share of the address, then protocol,
/// ports and the other fields.
fn specificity(m: &Match) -> f64 {
    let prefix = |p: &Option<Prefix>| {
        p.map_or(0.0, |p| {
            let bits = if p.addr().is_ipv4() { 32.0 } else { 128.0 };
            f64::from(p.prefix_len()) / bits
        })
    };
    let port = |r: &Option<PortRange>| {
        r.map_or(0.0, |r| {
            let width = f64::from(r.last() - r.first()) + 1.0;
            0.5 * (1.0 - width.log2() / 16.0)
        })
    };
    let set = |b: bool| if b { 0.25 } else { 0.0 };
    prefix(&m.src)
        + prefix(&m.dst)
        + set(m.proto.is_some())
        + port(&m.sport)
        + port(&m.dport)
        + set(m.iif.is_some())
        + set(m.dscp.is_some())
        + set(m.mark.is_some())
}

/// Whether a match accepts every packet of its family (or of both).
fn matches_everything(m: &Match) -> bool {
    let any = |p: &Option<Prefix>| p.is_none_or(|p| p.prefix_len() == 0);
    any(&m.src)
        && any(&m.dst)
        && m.proto.is_none()
        && m.sport.is_none()
        && m.dport.is_none()
        && m.iif.is_none()
        && m.dscp.is_none()
        && m.mark.is_none()
}

/// Source and destination prefixes (None: wildcard).
fn prefixes(rng: &mut Rng, kind: Kind, family: &Addresses<'_>) -> (Option<Prefix>, Option<Prefix>) {
    let (src_len, dst_len) = match (kind, family.v6) {
        (Kind::Acl, false) => (len(rng, ACL_SRC4), len(rng, ACL_DST4)),
        (Kind::Acl, true) => (len(rng, ACL_SRC6), len(rng, ACL_DST6)),
        (Kind::Ipc, false) => (len(rng, IPC_SRC4), len(rng, IPC_DST4)),
        (Kind::Ipc, true) => (len(rng, IPC_SRC6), len(rng, IPC_DST6)),
        (Kind::Fw, v6) => {
            // Wildcards drawn jointly: source any 35%, destination any 25%, both 4%.
            let table = if v6 { FW_LEN6 } else { FW_LEN4 };
            match rng.below(100) {
                0..4 => (None, None),
                4..35 => (None, len(rng, table)),
                35..56 => (len(rng, table), None),
                _ => (len(rng, table), len(rng, table)),
            }
        }
    };
    let prefix = |rng: &mut Rng, len: Option<u8>| len.map(|l| family.pool.prefix(rng, l));
    let src = prefix(rng, src_len);
    let mut dst = prefix(rng, dst_len);
    if src.is_none() && dst.is_none() && !family.family_free {
        dst = Some(family.pool.prefix(rng, 0));
    }
    (src, dst)
}

fn len(rng: &mut Rng, table: &[(u32, Len)]) -> Option<u8> {
    match rng.weighted(table) {
        Any => None,
        Exactly(l) => Some(l),
        Span(lo, hi) => Some(rng.within(u64::from(lo), u64::from(hi)) as u8),
    }
}

/// A port range of `class` (the low class is 0-1023; some arbitrary ranges start at 0).
fn port_range(rng: &mut Rng, class: PortClass) -> Option<PortRange> {
    let range = |lo: u16, hi: u16| Some(PortRange::new(lo, hi).expect("low to high"));
    match class {
        PortClass::Any => None,
        PortClass::WellKnown => Some(PortRange::single(WELL_KNOWN[zipf(rng, WELL_KNOWN.len())])),
        PortClass::Exact => Some(PortRange::single(rng.within(1, 65535) as u16)),
        PortClass::High => range(1024, 65535),
        PortClass::Low => range(0, 1023),
        PortClass::Range => {
            if rng.chance(40) {
                let (lo, hi) = COMMON_RANGES[rng.below(COMMON_RANGES.len() as u64) as usize];
                return range(lo, hi);
            }
            let lo = if rng.chance(10) {
                0
            } else {
                rng.within(1, 65000) as u16
            };
            // Widths spread over orders of magnitude: 2 to about 8k ports.
            let width = 1u32 << rng.within(1, 13);
            let hi = (u32::from(lo) + width - 1 + rng.below(u64::from(width)) as u32).min(65535);
            range(lo, hi as u16)
        }
    }
}

fn action(rng: &mut Rng, table: &[(u32, Act)]) -> Action {
    // Policy-routing sets mark some packets for later `ip rule fwmark` decisions.
    let set_mark = |rng: &mut Rng| rng.chance(5).then(|| 1 + rng.below(0xffff) as u32);
    match rng.weighted(table) {
        Act::Forward => Action::Forward {
            next_hop: NEXT_HOPS[zipf(rng, NEXT_HOPS.len())].to_owned(),
            set_mark: set_mark(rng),
            set_dscp: None,
        },
        Act::Lookup => Action::LookupTable {
            table: TABLE.to_owned(),
            set_mark: set_mark(rng),
            set_dscp: None,
        },
        Act::Pass => Action::Pass {
            set_mark: set_mark(rng),
            set_dscp: None,
        },
        Act::Drop => Action::Drop {},
    }
}

/// One policy of today's benchmark set (the best case: a single match shape after tuple
/// merging): a destination /16, /24 or /32 in 10.0.0.0-109.255.255.255, a source /24 in
/// 30% of the policies, TCP, UDP or any protocol, a destination port that is exact, a
/// 1024-port block or any; pass.
pub(super) fn one_shape(rng: &mut Rng, id: String, priority: u32) -> Policy {
    let addr = |rng: &mut Rng| -> u128 {
        let first = 10 + rng.below(100) as u128;
        (first << 120) | ((rng.below(1 << 24) as u128) << 96)
    };
    let v4 = |a: u128, len: u8| {
        let ip = std::net::Ipv4Addr::from(((a & mask(len)) >> 96) as u32);
        Prefix::new(ip.into(), len).expect("masked")
    };
    let dst_len = [16, 24, 32][rng.below(3) as usize];
    let proto = [Some(Protocol::TCP), Some(Protocol::UDP), None][rng.below(3) as usize];
    let dport = match (proto, rng.below(3)) {
        (None, _) => None,
        (_, 0) => Some(PortRange::single(1 + rng.below(65535) as u16)),
        (_, 1) => {
            let lo = 1024 * (1 + rng.below(60) as u16);
            Some(PortRange::new(lo, lo + 1023).expect("low to high"))
        }
        _ => None,
    };
    let src = rng.chance(30).then(|| v4(addr(rng), 24));
    let dst = Some(v4(addr(rng), dst_len));
    Policy {
        id,
        priority,
        matches: Match {
            src,
            dst,
            proto,
            dport,
            ..Default::default()
        },
        action: Action::Pass {
            set_mark: None,
            set_dscp: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_what_the_profiles_promise() {
        let any = |t: &[(u32, Len)]| {
            let total: u32 = t.iter().map(|(w, _)| w).sum();
            let any: u32 = t
                .iter()
                .filter(|(_, l)| matches!(l, Any))
                .map(|(w, _)| w)
                .sum();
            any * 100 / total
        };
        assert_eq!(any(ACL_SRC4), 45);
        assert!(any(ACL_DST4) < 10);
        let total = |t: &[(u32, PortClass)]| t.iter().map(|(w, _)| w).sum::<u32>();
        assert_eq!(ACL_SPORT[0].0 * 100 / total(ACL_SPORT), 80);
        assert_eq!(FW_SPORT[0].0 * 100 / total(FW_SPORT), 70);
    }

    #[test]
    fn some_ranges_start_at_port_zero() {
        // The generator's own draws (it runs on Rng, so the sets stay the same): not proptest.
        let mut rng = Rng::new(7);
        let zero = (0..5000).any(|_| {
            [PortClass::Low, PortClass::Range]
                .into_iter()
                .any(|class| port_range(&mut rng, class).is_some_and(|r| r.first() == 0))
        });
        assert!(zero, "the low class and some ranges start at 0");
    }
}
