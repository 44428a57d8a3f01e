//! Turning a validated [`PolicySet`] into what the kernel maps hold: data path rules
//! ([`Rule`]) and the next hop table ([`NextHop`]), with interface names resolved to the
//! kernel's ifindexes and egress MTUs ([`Interfaces`]), and counter slots kept stable per
//! policy id across applies ([`Slots`]).
//!
//! Next hops: each configured next hop gets two entries in the table, one per family
//! (index `2 * id` for IPv4, `2 * id + 1` for IPv6). A next hop with a fixed MAC serves both
//! families with it; otherwise the entry carries that family's gateway. A `forward` policy
//! whose match does not name a family becomes one rule per family; for a family its next
//! hop has no gateway for (say an IPv6 packet and a next hop with only `gateway4`), the
//! rule passes the packet to the kernel stack (with the policy's mark/DSCP rewrite), which
//! routes it as usual. Validation already refuses a policy whose prefixes name a family its
//! next hop cannot serve, so that case only arises for family-free matches.
//!
//! Counter slots: a policy keeps its slot (index into the per-CPU counter array) for as long
//! as its id stays in the applied set, so its counters keep counting across applies. A new
//! id gets the lowest slot no policy of the *running* set uses (so no packet can still be
//! counting into it), and the caller zeroes it before the swap. The assignment is kept as a
//! small JSON state file next to the pins (see `attach`), rewritten after each apply.
//!
//! [`compile_set`] is the one way from a policy set to what the maps hold: `route apply`
//! runs it with the kernel's interfaces, `route check` with [`Interfaces::placeholder`], so
//! a set one refuses the other refuses with the same error.

use std::collections::{BTreeMap, BTreeSet};

use pktpath_common::route::{
    ACTION_DROP, ACTION_FORWARD, ACTION_PASS, ACTION_TABLE, FAMILY_V4, FAMILY_V6, MAX_POLICY_SLOTS,
    NextHop, RULE_SET_DSCP, RULE_SET_MARK, RuleValue,
};
use serde::{Deserialize, Serialize};

use super::{
    classifier::{self, CompileError, Rule, Tables, TreeStats, addr_bytes},
    tables,
};
use crate::route::{
    compile::{CompiledAction, CompiledPolicy, NextHopId, PolicySet, Rewrite, Topology},
    config::{Family, Prefix},
    packet::{Ifindex, PacketFields},
};

/// What the kernel says about each interface of a [`Topology`], in the same order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interfaces {
    pub links: Vec<LinkInfo>,
}

impl Interfaces {
    /// Stand-ins for what the kernel says about `topology`'s interfaces, for compiling a
    /// policy set where they need not exist (`route check`): ifindexes 1, 2, ... in the
    /// configuration's order, MTU 1500 and the MAC 02:00:00:00:00:00. Rules name input
    /// interfaces by ifindex, so with these the rules and the limits they meet are those of
    /// the real interfaces, while the trees' cuts on the input interface, and so the size of
    /// the tables, may differ slightly.
    pub fn placeholder(topology: &Topology) -> Self {
        Interfaces {
            links: (1..)
                .zip(&topology.interfaces)
                .map(|(ifindex, _)| LinkInfo {
                    ifindex,
                    mtu: 1500,
                    mac: [2, 0, 0, 0, 0, 0],
                })
                .collect(),
        }
    }
}

/// One interface as the kernel knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// The policy set cannot be turned into data path tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "the static configuration names {count} next hops and {tables} tables; the data path's next hop table holds {max} entries, two per next hop and one per table"
    )]
    TooManyNextHops {
        count: usize,
        tables: usize,
        max: u32,
    },
    #[error("{count} policies need counter slots; the data path has {max}")]
    TooManySlots { count: usize, max: u32 },
    #[error(
        "interface information for {have} interfaces given, the static configuration has {want}"
    )]
    InterfaceCount { have: usize, want: usize },
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Counter slot of each policy id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub by_id: BTreeMap<String, u32>,
}

/// The slots for a new policy set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    pub slots: Slots,
    /// Slots given to ids the running set does not have: zero them before the swap.
    pub fresh: Vec<u32>,
}

impl Slots {
    /// Slots for `set`, given the running assignment `self`.
    pub fn plan(&self, set: &PolicySet) -> Result<SlotPlan, PolicyError> {
        if set.policies.len() > MAX_POLICY_SLOTS as usize {
            return Err(PolicyError::TooManySlots {
                count: set.policies.len(),
                max: MAX_POLICY_SLOTS,
            });
        }
        let mut used: BTreeSet<u32> = self.by_id.values().copied().collect();
        let mut by_id = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut next = 0u32;
        for p in &set.policies {
            if let Some(&slot) = self.by_id.get(&p.id) {
                by_id.insert(p.id.clone(), slot);
            }
        }
        for p in &set.policies {
            if by_id.contains_key(&p.id) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            if next >= MAX_POLICY_SLOTS {
                // The running set and the new ids together exceed the array; the next apply
                // (after this set's removals are no longer running) would fit.
                return Err(PolicyError::TooManySlots {
                    count: used.len() + 1,
                    max: MAX_POLICY_SLOTS,
                });
            }
            used.insert(next);
            by_id.insert(p.id.clone(), next);
            fresh.push(next);
        }
        Ok(SlotPlan {
            slots: Slots { by_id },
            fresh,
        })
    }
}

/// A packet of the reference model as the data path sees it: the input interface by its
/// ifindex in `ifaces` (0 when `ifaces` has none for it).
pub fn packet_fields(p: &PacketFields, ifaces: &Interfaces) -> PacketFields<Ifindex> {
    p.with_iif(ifaces.links.get(p.iif.0).map_or(0, |l| l.ifindex))
}

/// Index of a next hop's entry for `family` in the next hop table.
pub fn nexthop_index(id: NextHopId, family: u8) -> u32 {
    2 * id.0 as u32 + u32::from(family == FAMILY_V6)
}

/// Index of the entry of the table with kernel id `table` in the next hop table: after the
/// next hops' (see [`next_hops`]). None when `topology` names no such table.
pub fn table_entry(topology: &Topology, table: u32) -> Option<u32> {
    let j = topology.tables.iter().position(|t| t.id == table)?;
    Some((2 * topology.next_hops.len() + j) as u32)
}

fn prefix(p: Option<Prefix>) -> Option<([u8; 16], u8)> {
    p.map(|p| (addr_bytes(p.addr()), p.prefix_len()))
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::Ipv4 => FAMILY_V4,
        Family::Ipv6 => FAMILY_V6,
    }
}

/// The next hop table for `topology`: two entries per next hop (IPv4, IPv6), then one per
/// table. An entry the next hop cannot serve has ifindex 0 (the data path passes such
/// packets on), as does every table's.
pub fn next_hops(topology: &Topology, ifaces: &Interfaces) -> Result<Vec<NextHop>, PolicyError> {
    check_ifaces(topology, ifaces)?;
    let max = pktpath_common::route::MAX_NEXTHOPS;
    let entries = topology.next_hops.len() * 2 + topology.tables.len();
    if entries > max as usize {
        return Err(PolicyError::TooManyNextHops {
            count: topology.next_hops.len(),
            tables: topology.tables.len(),
            max,
        });
    }
    let mut table = Vec::with_capacity(entries);
    let slow_mask = topology.slow_mark_mask();
    for (index, hop) in topology.next_hops.iter().enumerate() {
        let link = ifaces.links[hop.interface.0];
        for family in [Family::Ipv4, Family::Ipv6] {
            let mut entry = NextHop {
                ifindex: link.ifindex,
                mtu: link.mtu,
                ..Default::default()
            };
            let gateway = match family {
                Family::Ipv4 => hop.gateway4.map(std::net::IpAddr::V4),
                Family::Ipv6 => hop.gateway6.map(std::net::IpAddr::V6),
            };
            if let Some(mac) = hop.mac {
                entry.has_mac = 1;
                entry.dmac = mac.0;
                entry.smac = link.mac;
            } else if let Some(gw) = gateway {
                entry.gw_family = family_byte(family);
                entry.gateway = addr_bytes(gw);
            } else {
                entry = NextHop::default();
            }
            if entry.ifindex != 0 && slow_mask != 0 {
                // The stack reaches this next hop through its slow-path table (see
                // `datapath::slow_path`).
                entry.slow_mask = slow_mask;
                entry.slow_mark = topology.slow_path.mark(index);
            }
            table.push(entry);
        }
    }
    // A `lookup_table` rule's entry (see `table_entry`): no interface, so never a next hop
    // the data path forwards to; only the mark that sends what it hands the stack to the
    // table's rule.
    for j in 0..topology.tables.len() {
        let mut entry = NextHop::default();
        if slow_mask != 0 {
            entry.slow_mask = slow_mask;
            entry.slow_mark = topology.slow_path.table_mark(topology.next_hops.len(), j);
        }
        table.push(entry);
    }
    Ok(table)
}

fn check_ifaces(topology: &Topology, ifaces: &Interfaces) -> Result<(), PolicyError> {
    if ifaces.links.len() != topology.interfaces.len() {
        return Err(PolicyError::InterfaceCount {
            have: ifaces.links.len(),
            want: topology.interfaces.len(),
        });
    }
    Ok(())
}

fn rewrite_value(value: &mut RuleValue, rewrite: &Rewrite) {
    if let Some(mark) = rewrite.mark {
        value.flags |= RULE_SET_MARK;
        value.mark = mark;
    }
    if let Some(dscp) = rewrite.dscp {
        value.flags |= RULE_SET_DSCP;
        value.dscp = dscp;
    }
}

/// The data path rules of `set` (one per policy, or one per family for a family-free
/// `forward`), with counter slots from `slots` (which must hold every policy id).
pub fn rules(
    set: &PolicySet,
    ifaces: &Interfaces,
    slots: &Slots,
) -> Result<Vec<Rule>, PolicyError> {
    check_ifaces(&set.topology, ifaces)?;
    let mut out = Vec::with_capacity(set.policies.len());
    for policy in &set.policies {
        let slot = slots.by_id.get(&policy.id).copied().unwrap_or_else(|| {
            unreachable!("slot plan made from this set holds policy {}", policy.id)
        });
        let families = match policy.matches.family() {
            Some(f) => vec![Some(family_byte(f))],
            None if matches!(policy.action, CompiledAction::Forward { .. }) => {
                vec![Some(FAMILY_V4), Some(FAMILY_V6)]
            }
            None => vec![None],
        };
        for family in families {
            out.push(rule(set, policy, family, ifaces, slot));
        }
    }
    super::xdp_rules::flag_rules(&mut out);
    Ok(out)
}

/// A policy set as the data path's maps hold it.
#[derive(Clone, Debug)]
pub struct CompiledSet {
    /// The data path rules (see [`rules`]).
    pub rules: Vec<Rule>,
    /// The classifier's trees over those rules.
    pub tables: Tables,
    /// The next hop table (see [`next_hops`]).
    pub next_hops: Vec<NextHop>,
}

/// What the classifier made of a policy set, in the terms `route apply` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClassifierSummary {
    /// Data path rules: one per policy, two for a `forward` policy that names no family.
    pub rules: usize,
    /// Distinct match shapes among the rules ([`classifier::match_shapes`]).
    pub match_shapes: usize,
    /// Decision trees, IPv4 and IPv6 together, and their shape.
    pub trees: usize,
    pub tree_stats: TreeStats,
    /// Bytes the tables take in the kernel (whole arena chunks; `route apply` reports the
    /// same).
    pub table_bytes: u64,
    /// Bytes of those the tables fill.
    pub arena_bytes: u64,
}

impl CompiledSet {
    /// The classifier's figures for this set.
    pub fn summary(&self) -> ClassifierSummary {
        let stats = self.tables.stats;
        ClassifierSummary {
            rules: self.rules.len(),
            match_shapes: classifier::match_shapes(&self.rules),
            trees: stats.trees.iter().sum(),
            tree_stats: stats,
            table_bytes: tables::kernel_bytes(&self.tables),
            arena_bytes: self.tables.arena_bytes(),
        }
    }
}

/// Compiles `set` for the data path with the interfaces `ifaces` and the counter slots
/// `slots` (which must hold every policy id: see [`Slots::plan`]): its rules, their
/// classifier tables and the next hop table. `route apply` writes the result into the
/// maps; `route check` runs the same with [`Interfaces::placeholder`].
pub fn compile_set(
    set: &PolicySet,
    ifaces: &Interfaces,
    slots: &Slots,
) -> Result<CompiledSet, PolicyError> {
    let rules = rules(set, ifaces, slots)?;
    let tables = classifier::compile(&rules)?;
    let next_hops = next_hops(&set.topology, ifaces)?;
    Ok(CompiledSet {
        rules,
        tables,
        next_hops,
    })
}

fn rule(
    set: &PolicySet,
    policy: &CompiledPolicy,
    family: Option<u8>,
    ifaces: &Interfaces,
    slot: u32,
) -> Rule {
    let m = &policy.matches;
    let mut value = RuleValue {
        priority: policy.priority,
        slot,
        ..Default::default()
    };
    match policy.action {
        CompiledAction::Forward { next_hop, rewrite } => {
            let f = family.expect("forward rules are made per family");
            let serves = set.topology.next_hop(next_hop).serves(if f == FAMILY_V4 {
                Family::Ipv4
            } else {
                Family::Ipv6
            });
            if serves {
                value.action = ACTION_FORWARD;
                value.nexthop = nexthop_index(next_hop, f);
            } else {
                value.action = ACTION_PASS;
            }
            rewrite_value(&mut value, &rewrite);
        }
        CompiledAction::LookupTable { table, rewrite } => {
            value.action = ACTION_TABLE;
            value.table = table;
            // Compiled from the topology's tables, so it has an entry.
            value.nexthop = table_entry(&set.topology, table).unwrap_or(u32::MAX);
            rewrite_value(&mut value, &rewrite);
        }
        CompiledAction::Pass { rewrite } => {
            value.action = ACTION_PASS;
            rewrite_value(&mut value, &rewrite);
        }
        CompiledAction::Drop => value.action = ACTION_DROP,
    }
    Rule {
        priority: policy.priority,
        family,
        iif: m.iif.map(|id| ifaces.links[id.0].ifindex),
        src: prefix(m.src),
        dst: prefix(m.dst),
        proto: m.proto.map(|p| p.0),
        sport: m.sport.map(|r| (r.first(), r.last())),
        dport: m.dport.map(|r| (r.first(), r.last())),
        dscp: m.dscp,
        mark: m.mark.map(|k| (k.value, k.mask)),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        route::config::Source,
        route::datapath::classifier::{Lookup, compile},
    };

    const CONFIG: &str = r#"{
      "version": 1,
      "interfaces": [
        { "name": "to-client" }, { "name": "to-up1" }, { "name": "to-up2" }
      ],
      "next_hops": [
        { "name": "up1", "interface": "to-up1", "gateway4": "10.2.0.2", "gateway6": "fd02::2" },
        { "name": "only4", "interface": "to-up2", "gateway4": "10.3.0.2" },
        { "name": "fixed", "interface": "to-up2", "mac": "02:00:00:00:00:09" }
      ],
      "tables": [ { "name": "main", "id": 254 } ]
    }"#;

    fn topology() -> Topology {
        Topology::from_source(&Source::new("configuration.json", CONFIG)).unwrap()
    }

    fn ifaces() -> Interfaces {
        Interfaces {
            links: (0..3)
                .map(|i| LinkInfo {
                    ifindex: 10 + i,
                    mtu: 1500 - i,
                    mac: [2, 0, 0, 0, 0, i as u8],
                })
                .collect(),
        }
    }

    fn set(policies: &str) -> PolicySet {
        let text = format!(r#"{{ "version": 1, "policies": [{policies}] }}"#);
        PolicySet::from_source(&topology(), &Source::new("runtime.json", text)).unwrap()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&[a, b, c, d]);
        x
    }

    #[test]
    fn next_hops_have_one_entry_per_family() {
        let t = next_hops(&topology(), &ifaces()).unwrap();
        assert_eq!(t.len(), 7, "two per next hop, then one for table main");
        assert_eq!(t[6].ifindex, 0, "a table's entry is never forwarded to");
        let up1_v4 = t[nexthop_index(NextHopId(0), FAMILY_V4) as usize];
        assert_eq!(
            (up1_v4.ifindex, up1_v4.gw_family, up1_v4.mtu),
            (11, FAMILY_V4, 1499)
        );
        assert_eq!(&up1_v4.gateway[..4], &[10, 2, 0, 2]);
        let up1_v6 = t[nexthop_index(NextHopId(0), FAMILY_V6) as usize];
        assert_eq!(up1_v6.gw_family, FAMILY_V6);
        assert_eq!(up1_v6.gateway[0..2], [0xfd, 0x02]);
        assert_eq!(up1_v6.gateway[15], 2);
        // only4 has no IPv6 gateway: an empty entry.
        assert_eq!(t[3], NextHop::default());
        // A fixed MAC serves both families, with the egress interface's own MAC as source.
        for e in &t[4..6] {
            assert_eq!((e.has_mac, e.ifindex, e.gw_family), (1, 12, 0));
            assert_eq!(e.dmac, [2, 0, 0, 0, 0, 9]);
            assert_eq!(e.smac, [2, 0, 0, 0, 0, 2]);
        }
    }

    #[test]
    fn rules_resolve_interfaces_and_split_forward_by_family() {
        let s = set(r#"
            { "id": "a", "priority": 5, "match": { "iif": "to-client", "src": "10.1.0.128/25" },
              "action": { "type": "forward", "next_hop": "up1", "set_mark": 7 } },
            { "id": "b", "priority": 6, "match": { "proto": "udp", "dport": "53" },
              "action": { "type": "forward", "next_hop": "only4" } },
            { "id": "c", "priority": 7, "match": {}, "action": { "type": "drop" } },
            { "id": "d", "priority": 8, "match": {}, "action": { "type": "lookup_table", "table": "main" } }
        "#);
        let plan = Slots::default().plan(&s).unwrap();
        let r = rules(&s, &ifaces(), &plan.slots).unwrap();
        assert_eq!(r.len(), 5, "{r:#?}");
        assert_eq!(r[0].family, Some(FAMILY_V4));
        assert_eq!(r[0].iif, Some(10));
        assert_eq!(r[0].src, Some((v4(10, 1, 0, 128), 25)));
        assert_eq!(r[0].value.action, ACTION_FORWARD);
        assert_eq!(r[0].value.nexthop, 0);
        assert_eq!((r[0].value.flags, r[0].value.mark), (RULE_SET_MARK, 7));
        // b: IPv4 forwards, IPv6 (no gateway6) passes; same slot, same priority.
        assert_eq!(
            (r[1].family, r[1].value.action),
            (Some(FAMILY_V4), ACTION_FORWARD)
        );
        assert_eq!(r[1].value.nexthop, 2);
        assert_eq!(
            (r[2].family, r[2].value.action),
            (Some(FAMILY_V6), ACTION_PASS)
        );
        assert_eq!(r[1].value.slot, r[2].value.slot);
        assert_eq!((r[1].proto, r[1].dport), (Some(17), Some((53, 53))));
        assert_eq!((r[3].family, r[3].value.action), (None, ACTION_DROP));
        assert_eq!((r[4].value.action, r[4].value.table), (ACTION_TABLE, 254));

        // The compiled tables pick the rules the policies say.
        let tables = compile(&r).unwrap();
        let lookup = Lookup::new(&tables);
        let mut p = PacketFields {
            iif: 10,
            src: std::net::Ipv6Addr::UNSPECIFIED.into(),
            dst: std::net::Ipv6Addr::UNSPECIFIED.into(),
            proto: 17,
            sport: Some(999),
            dport: Some(53),
            ..Default::default()
        };
        assert_eq!(lookup.find(&p).map(|v| v.action), Some(ACTION_PASS));
        p.src = [10, 1, 0, 200].into();
        p.dst = std::net::Ipv4Addr::UNSPECIFIED.into();
        assert_eq!(lookup.find(&p).map(|v| v.priority), Some(5));
        p.src = [10, 1, 0, 2].into();
        assert_eq!(lookup.find(&p).map(|v| v.priority), Some(6));
        p.dport = Some(54);
        assert_eq!(lookup.find(&p).map(|v| v.action), Some(ACTION_DROP));
    }

    #[test]
    fn surviving_policies_keep_their_slots_and_new_ones_avoid_running_slots() {
        let first = set(r#"
            { "id": "a", "priority": 1, "match": {}, "action": { "type": "pass" } },
            { "id": "b", "priority": 2, "match": {}, "action": { "type": "pass" } },
            { "id": "c", "priority": 3, "match": {}, "action": { "type": "pass" } }
        "#);
        let p1 = Slots::default().plan(&first).unwrap();
        assert_eq!(p1.fresh, vec![0, 1, 2]);
        assert_eq!(p1.slots.by_id["b"], 1);

        // b removed, d added, a moved in priority: a and c keep slots; d must not take
        // b's slot 1 (b still counts until the swap), so it gets 3.
        let second = set(r#"
            { "id": "c", "priority": 1, "match": {}, "action": { "type": "pass" } },
            { "id": "d", "priority": 2, "match": {}, "action": { "type": "pass" } },
            { "id": "a", "priority": 9, "match": {}, "action": { "type": "pass" } }
        "#);
        let p2 = p1.slots.plan(&second).unwrap();
        assert_eq!(p2.slots.by_id["a"], 0);
        assert_eq!(p2.slots.by_id["c"], 2);
        assert_eq!(p2.slots.by_id["d"], 3);
        assert_eq!(p2.fresh, vec![3]);
        assert!(!p2.slots.by_id.contains_key("b"));

        // Once b is gone from the running set its slot is free again.
        let third = set(r#"
            { "id": "a", "priority": 1, "match": {}, "action": { "type": "pass" } },
            { "id": "e", "priority": 2, "match": {}, "action": { "type": "pass" } }
        "#);
        let p3 = p2.slots.plan(&third).unwrap();
        assert_eq!(p3.slots.by_id["e"], 1);
        assert_eq!(p3.fresh, vec![1]);

        // Same set again: nothing fresh.
        assert_eq!(p3.slots.plan(&third).unwrap().fresh, Vec::<u32>::new());
    }

    /// Policies that all overlap: 32 that each match one bit of the mark, then 40 that match
    /// nested IPv6 prefixes of all ones (sources /31 to /1, destinations /31 to /23). A
    /// packet with every mark bit set and such addresses matches all 72.
    fn overlapping_policies() -> String {
        let mut policies: Vec<String> = (0..32)
            .map(|bit| {
                let m = 1u32 << bit;
                format!(
                    r#"{{ "id": "mark-bit-{bit}", "priority": {}, "match": {{ "mark": {{ "value": {m}, "mask": {m} }} }}, "action": {{ "type": "pass" }} }}"#,
                    bit + 1
                )
            })
            .collect();
        let prefixes = (1..=31u8)
            .rev()
            .map(|len| ("src", len))
            .chain((23..=31u8).rev().map(|len| ("dst", len)));
        for (i, (field, len)) in prefixes.enumerate() {
            let ones = std::net::Ipv6Addr::from(u128::MAX << (128 - len));
            policies.push(format!(
                r#"{{ "id": "{field}-ones-{len}", "priority": {}, "match": {{ "{field}": "{ones}/{len}" }}, "action": {{ "type": "drop" }} }}"#,
                100 + i
            ));
        }
        policies.join(",\n")
    }

    #[test]
    fn compile_set_compiles_alike_for_check_and_apply() {
        let s = set(&overlapping_policies());
        // As `route check` runs it: placeholder interfaces, nothing running.
        let fresh = Slots::default().plan(&s).unwrap().slots;
        let check = compile_set(&s, &Interfaces::placeholder(&s.topology), &fresh).unwrap();
        // As `route apply` runs it: the kernel's interfaces, slots planned around the
        // running set.
        let running =
            set(r#"{ "id": "old", "priority": 1, "match": {}, "action": { "type": "pass" } }"#);
        let running = Slots::default().plan(&running).unwrap().slots;
        let planned = running.plan(&s).unwrap().slots;
        assert_ne!(planned, fresh, "the two callers' slots differ");
        let apply = compile_set(&s, &ifaces(), &planned).unwrap();
        assert_eq!(check.rules.len(), apply.rules.len());
        assert_eq!(check.tables.stats, apply.tables.stats);
        assert_eq!(check.summary().table_bytes, apply.summary().table_bytes);
        // The classifier's own errors reach both as they are.
        let refused = CompileError::Invalid {
            priority: 7,
            what: "a reason".to_owned(),
        };
        assert_eq!(
            PolicyError::from(refused.clone()).to_string(),
            refused.to_string()
        );
    }

    #[test]
    fn placeholder_interfaces_compile_the_rules_of_the_real_ones() {
        let t = topology();
        let p = Interfaces::placeholder(&t);
        assert_eq!(
            p.links.iter().map(|l| l.ifindex).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(p.links.iter().all(|l| l.mtu == 1500), "{p:?}");
        let s = set(r#"
            { "id": "a", "priority": 5, "match": { "iif": "to-up2", "src": "10.1.0.128/25" },
              "action": { "type": "forward", "next_hop": "up1" } },
            { "id": "b", "priority": 6, "match": { "proto": "udp", "dport": "0-10" },
              "action": { "type": "drop" } },
            { "id": "c", "priority": 7, "match": { "proto": 0 }, "action": { "type": "drop" } }
        "#);
        let slots = Slots::default().plan(&s).unwrap().slots;
        let placeholder = compile_set(&s, &p, &slots).unwrap();
        let kernel = compile_set(&s, &ifaces(), &slots).unwrap();
        assert_eq!(placeholder.rules[0].iif, Some(3));
        let without_iif = |c: &CompiledSet| -> Vec<Rule> {
            c.rules
                .iter()
                .map(|r| Rule {
                    iif: None,
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(without_iif(&placeholder), without_iif(&kernel));
        assert_eq!(placeholder.next_hops.len(), kernel.next_hops.len());

        let summary = placeholder.summary();
        assert_eq!((summary.rules, summary.tree_stats.rules), (3, 3));
        assert_eq!(
            summary.trees,
            summary.tree_stats.trees.iter().sum::<usize>()
        );
        assert!(summary.trees > 0 && summary.arena_bytes > 0, "{summary:?}");
        assert_eq!(
            summary.table_bytes,
            tables::CHUNK_BYTES as u64,
            "{summary:?}"
        );
    }

    #[test]
    fn compile_set_refuses_more_next_hops_than_the_table_holds() {
        let hops: Vec<String> = (0..129)
            .map(|i| {
                format!(
                    r#"{{ "name": "h{i}", "interface": "lan", "gateway4": "10.0.0.{}" }}"#,
                    i % 250 + 1
                )
            })
            .collect();
        let config = format!(
            r#"{{ "version": 1, "interfaces": [ {{ "name": "lan" }} ], "next_hops": [ {} ] }}"#,
            hops.join(", ")
        );
        let t = Topology::from_source(&Source::new("configuration.json", config)).unwrap();
        let s = PolicySet::empty(t);
        let err =
            compile_set(&s, &Interfaces::placeholder(&s.topology), &Slots::default()).unwrap_err();
        assert_eq!(
            err,
            PolicyError::TooManyNextHops {
                count: 129,
                tables: 0,
                max: 256
            }
        );
    }

    #[test]
    fn mismatched_interface_info_is_refused() {
        let s = set("");
        let err = rules(&s, &Interfaces::default(), &Slots::default()).unwrap_err();
        assert_eq!(err, PolicyError::InterfaceCount { have: 0, want: 3 });
    }
}
