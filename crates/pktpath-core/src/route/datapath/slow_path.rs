//! The slow path: how the kernel stack's forwarding follows a `forward` or `lookup_table`
//! policy for the packets the fast path hands it (TTL about to expire, too big for the
//! egress MTU, IPv4 options, a next hop it cannot reach itself).
//!
//! The data path marks such a packet with its next hop's or table's mark
//! (`slow_path.mark_mask` bits, the rest of the mark kept; see `NextHop::slow_mark`). Per
//! next hop, `route attach` installs a routing table (`slow_path.table_base + N`) holding a
//! default route to it (`via GATEWAY dev EGRESS onlink`, or `dev EGRESS` for a next hop
//! given by MAC only) and per family an `ip rule fwmark MARK/MASK lookup TABLE pref
//! slow_path.rule_priority`. The stack's route lookup of the marked packet so finds the
//! policy's next hop: it forwards the packet there (fragmenting it, processing its
//! options), or answers with the ICMP error the policy's route calls for (time exceeded,
//! fragmentation needed with that egress's MTU).
//!
//! Per table of the configuration's `tables` (the only ones a `lookup_table` policy can
//! name, so an apply never needs another) it installs per family an `ip rule fwmark
//! MARK/MASK lookup` that table: the stack looks the packet up where the policy said. Those
//! tables are the user's: pktpath adds no route to them and does not need them empty. A
//! destination the table has no route for falls through to the rules after it (`main`),
//! as the fast path passes such a packet to the stack too.
//!
//! [`plan`] is pure: what a configuration calls for, with the kernel's ifindexes.
//! `attach` records the plan in `attach.json` before it installs anything, so a failed or
//! killed attach and every detach remove exactly that ([`remove`]). `apply` puts back the
//! routes an interface deleted and created again took with it ([`restore`]).

use serde::{Deserialize, Serialize};

use super::policy::Interfaces;
use crate::{
    route::compile::Topology,
    sys::{
        SysError,
        policy_routing::{self, DefaultRoute, Family, FwmarkRule},
    },
};

/// The routes and rules a configuration's slow path is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowPlan {
    /// A default route per next hop and family, in the next hop's own table.
    #[serde(default)]
    pub routes: Vec<DefaultRoute>,
    /// The rules that send a next hop's marked packets to its table.
    #[serde(default)]
    pub rules: Vec<FwmarkRule>,
    /// The rules that send a `lookup_table` policy's marked packets to that table, one per
    /// table of the configuration and family. The tables are the user's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<FwmarkRule>,
}

impl SlowPlan {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.rules.is_empty() && self.lookups.is_empty()
    }

    /// The tables it fills, lowest to highest.
    pub fn tables(&self) -> Vec<u32> {
        let mut t: Vec<u32> = self.routes.iter().map(|r| r.table).collect();
        t.sort_unstable();
        t.dedup();
        t
    }
}

/// The slow path of `topology` with the interfaces `ifaces`: for each next hop and family
/// it serves, a default route in its table and a rule for its mark; for each table and
/// family, a rule for the table's mark. Empty when `slow_path.follow_policy` is false.
pub fn plan(topology: &Topology, ifaces: &Interfaces) -> SlowPlan {
    let slow = &topology.slow_path;
    let mut out = SlowPlan::default();
    if !slow.follow_policy {
        return out;
    }
    for (i, hop) in topology.next_hops.iter().enumerate() {
        let Some(link) = ifaces.links.get(hop.interface.0) else {
            continue;
        };
        let table = slow.table(i);
        for family in [Family::Ipv4, Family::Ipv6] {
            let gateway = match family {
                Family::Ipv4 => hop.gateway4.map(std::net::IpAddr::V4),
                Family::Ipv6 => hop.gateway6.map(std::net::IpAddr::V6),
            };
            if gateway.is_none() && hop.mac.is_none() {
                continue; // the fast path passes this family on unmarked
            }
            out.routes.push(DefaultRoute {
                family,
                table,
                gateway,
                ifindex: link.ifindex,
            });
            out.rules.push(FwmarkRule {
                family,
                priority: slow.rule_priority,
                mark: slow.mark(i),
                mask: slow.mark_mask,
                table,
            });
        }
    }
    for (j, table) in topology.tables.iter().enumerate() {
        for family in [Family::Ipv4, Family::Ipv6] {
            out.lookups.push(FwmarkRule {
                family,
                priority: slow.rule_priority,
                mark: slow.table_mark(topology.next_hops.len(), j),
                mask: slow.mark_mask,
                table: table.id,
            });
        }
    }
    out
}

/// What stands in the way of installing a slow path.
#[derive(Debug, thiserror::Error)]
pub enum SlowPathError {
    #[error(
        "routing table {table} ({family}) already holds {count} routes; the slow path of {config} needs it empty: pick another slow_path.table_base, or empty it (ip {flag} route flush table {table})"
    )]
    TableInUse {
        table: u32,
        family: &'static str,
        flag: &'static str,
        count: usize,
        config: String,
    },
    #[error(
        "an ip rule already looks up table {table} or uses mark {mark:#x}/{mask:#x} at priority {priority} ({family}); the slow path of {config} needs them to itself: pick another slow_path.table_base or slow_path.mark_mask, or remove that rule"
    )]
    RuleInUse {
        table: u32,
        mark: u32,
        mask: u32,
        priority: u32,
        family: &'static str,
        config: String,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

/// Checks that nothing else uses the tables and marks of `plan` (`config` names the
/// configuration file, for the message).
pub fn check_free(plan: &SlowPlan, config: &str) -> Result<(), SlowPathError> {
    for family in [Family::Ipv4, Family::Ipv6] {
        if !plan.routes.iter().any(|r| r.family == family) {
            continue;
        }
        let counts = policy_routing::routes_per_table(family)?;
        for r in plan.routes.iter().filter(|r| r.family == family) {
            let count = counts.get(&r.table).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            return Err(SlowPathError::TableInUse {
                table: r.table,
                family: family_name(r.family),
                flag: r.family.flag(),
                count,
                config: config.to_owned(),
            });
        }
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        // A next hop's table is ours alone; a lookup table is the user's, which other rules
        // may look up too: only its mark must be free.
        let ours: Vec<(&FwmarkRule, bool)> = plan
            .rules
            .iter()
            .map(|r| (r, true))
            .chain(plan.lookups.iter().map(|r| (r, false)))
            .filter(|(r, _)| r.family == family)
            .collect();
        if ours.is_empty() {
            continue;
        }
        for existing in policy_routing::rules(family)? {
            if let Some((r, _)) = ours.iter().find(|(r, own_table)| {
                (*own_table && existing.table == r.table)
                    || (existing.priority == r.priority
                        && existing.mark == Some(r.mark)
                        && existing.mask.unwrap_or(u32::MAX) == r.mask)
            }) {
                return Err(SlowPathError::RuleInUse {
                    table: r.table,
                    mark: r.mark,
                    mask: r.mask,
                    priority: r.priority,
                    family: family_name(family),
                    config: config.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Installs `plan`: routes first (a rule never looks up an empty table), then the rules.
/// Idempotent: routes are replaced, rules already there are kept.
///
/// The kernel refuses a route through an interface that is down (ENETDOWN). Such a next
/// hop's table is left empty, with a warning: its rule then finds no route there and the
/// stack goes on to the main table, as it would without a slow path, and the fast path
/// cannot forward to that interface either. `route attach` or `route apply` run again
/// fills it ([`restore`]).
pub fn install(plan: &SlowPlan) -> Result<(), SysError> {
    for r in &plan.routes {
        match policy_routing::replace_default_route(r) {
            Err(e) if e.source.raw_os_error() == Some(libc::ENETDOWN) => warn_down(r),
            other => other?,
        }
    }
    for r in plan.rules.iter().chain(&plan.lookups) {
        policy_routing::add_rule(r)?;
    }
    Ok(())
}

/// What [`restore`] did.
#[derive(Debug, Default)]
pub struct Restored {
    /// The tables filled again, lowest first.
    pub tables: Vec<u32>,
    /// The first route that could not be put back, when one could not: the others were
    /// tried all the same.
    pub error: Option<SysError>,
}

/// Puts back the routes of `plan` whose table lacks them: the kernel deletes a route with
/// its interface, so a next hop's table empties when its interface is deleted, and stays
/// empty when the interface comes back. A table whose interface is down stays empty, with
/// the warning [`install`] gives; a route the kernel refuses otherwise (a gateway the
/// interface no longer reaches, a missing privilege) leaves its table empty and the
/// others are still put back.
///
/// Adds nothing when nothing is missing, so it needs no privilege then (the listing
/// takes none); adding a route takes CAP_NET_ADMIN.
pub fn restore(plan: &SlowPlan) -> Result<Restored, SysError> {
    let mut out = Restored::default();
    for family in [Family::Ipv4, Family::Ipv6] {
        if !plan.routes.iter().any(|r| r.family == family) {
            continue;
        }
        let counts = policy_routing::routes_per_table(family)?;
        for r in plan.routes.iter().filter(|r| r.family == family) {
            if counts.get(&r.table).copied().unwrap_or(0) != 0 {
                continue;
            }
            match policy_routing::replace_default_route(r) {
                Err(e) if e.source.raw_os_error() == Some(libc::ENETDOWN) => {
                    warn_down(r);
                }
                Err(e) => {
                    out.error.get_or_insert(e);
                }
                Ok(()) => out.tables.push(r.table),
            }
        }
    }
    out.tables.sort_unstable();
    out.tables.dedup();
    Ok(out)
}

fn warn_down(r: &DefaultRoute) {
    log::warn!(
        "slow path: table {} left empty, its interface (index {}) is down; packets of its \
         next hop handed to the stack follow the main table until `pktpath route apply` or \
         `pktpath route attach` runs again with the interface up",
        r.table,
        r.ifindex
    );
}

/// What [`remove`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub rules: usize,
    pub routes: usize,
}

/// Removes what of `plan` exists: the rules first (no packet is sent to a table being
/// emptied), then the routes.
pub fn remove(plan: &SlowPlan) -> Result<Removed, SysError> {
    let mut out = Removed::default();
    for r in plan.rules.iter().chain(&plan.lookups) {
        out.rules += usize::from(policy_routing::del_rule(r)?);
    }
    for r in &plan.routes {
        out.routes += usize::from(policy_routing::del_default_route(r.family, r.table)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{route::config::Source, route::datapath::policy::LinkInfo};

    fn topology(text: &str) -> Topology {
        Topology::from_source(&Source::new("configuration.json", text)).expect("valid")
    }

    /// Each rule's family, priority, mark, mask and table.
    fn rule_fields(rules: &[FwmarkRule]) -> Vec<(Family, u32, u32, u32, u32)> {
        rules
            .iter()
            .map(|r| (r.family, r.priority, r.mark, r.mask, r.table))
            .collect()
    }

    fn ifaces(n: usize) -> Interfaces {
        Interfaces {
            links: (0..n)
                .map(|i| LinkInfo {
                    ifindex: 10 + i as u32,
                    mtu: 1500,
                    mac: [2, 0, 0, 0, 0, i as u8],
                })
                .collect(),
        }
    }

    const TWO_HOPS: &str = r#"{ "version": 1,
  "interfaces": [ { "name": "lan" }, { "name": "up1" }, { "name": "up2" } ],
  "next_hops": [
    { "name": "a", "interface": "up1", "gateway4": "10.2.0.2", "gateway6": "fd02::2" },
    { "name": "b", "interface": "up2", "gateway4": "10.3.0.2" },
    { "name": "c", "interface": "lan", "mac": "02:00:5e:00:53:01" }
  ] }"#;

    #[test]
    fn each_next_hop_gets_a_table_and_a_rule_per_family_it_serves() {
        let p = plan(&topology(TWO_HOPS), &ifaces(3));
        let routes: Vec<(Family, u32, Option<String>, u32)> = p
            .routes
            .iter()
            .map(|r| {
                (
                    r.family,
                    r.table,
                    r.gateway.map(|g| g.to_string()),
                    r.ifindex,
                )
            })
            .collect();
        assert_eq!(
            routes,
            vec![
                (Family::Ipv4, 7070, Some("10.2.0.2".into()), 11),
                (Family::Ipv6, 7070, Some("fd02::2".into()), 11),
                (Family::Ipv4, 7071, Some("10.3.0.2".into()), 12),
                (Family::Ipv4, 7072, None, 10),
                (Family::Ipv6, 7072, None, 10),
            ]
        );
        let rules = rule_fields(&p.rules);
        assert_eq!(
            rules,
            vec![
                (Family::Ipv4, 1000, 0x0100_0000, 0xff00_0000, 7070),
                (Family::Ipv6, 1000, 0x0100_0000, 0xff00_0000, 7070),
                (Family::Ipv4, 1000, 0x0200_0000, 0xff00_0000, 7071),
                (Family::Ipv4, 1000, 0x0300_0000, 0xff00_0000, 7072),
                (Family::Ipv6, 1000, 0x0300_0000, 0xff00_0000, 7072),
            ]
        );
        assert_eq!(p.tables(), vec![7070, 7071, 7072]);
    }

    #[test]
    fn the_marks_follow_the_configured_mask_and_base() {
        let text = TWO_HOPS.replace(
            r#""version": 1,"#,
            r#""version": 1, "slow_path": { "mark_mask": 3840, "table_base": 500, "rule_priority": 42 },"#,
        );
        let t = topology(&text);
        let p = plan(&t, &ifaces(3));
        let marks: Vec<(u32, u32, u32)> = p
            .rules
            .iter()
            .map(|r| (r.mark, r.table, r.priority))
            .collect();
        assert_eq!(
            marks,
            vec![
                (0x100, 500, 42),
                (0x100, 500, 42),
                (0x200, 501, 42),
                (0x300, 502, 42),
                (0x300, 502, 42)
            ]
        );
        // The data path's next hop entries carry the same marks, per family served.
        let hops = crate::route::datapath::policy::next_hops(&t, &ifaces(3)).expect("next hops");
        let slow: Vec<(u32, u32)> = hops.iter().map(|h| (h.slow_mark, h.slow_mask)).collect();
        assert_eq!(
            slow,
            vec![
                (0x100, 0xf00),
                (0x100, 0xf00),
                (0x200, 0xf00),
                (0, 0), // b has no ipv6 gateway: ipv6 packets are passed unmarked
                (0x300, 0xf00),
                (0x300, 0xf00),
            ]
        );
    }

    #[test]
    fn each_table_gets_a_rule_per_family_with_the_marks_after_the_next_hops() {
        let text = TWO_HOPS.replace(
            r#"  ] }"#,
            r#"  ], "tables": [ { "name": "main", "id": 254 }, { "name": "alt", "id": 100 } ] }"#,
        );
        let t = topology(&text);
        let p = plan(&t, &ifaces(3));
        let lookups = rule_fields(&p.lookups);
        assert_eq!(
            lookups,
            vec![
                (Family::Ipv4, 1000, 0x0400_0000, 0xff00_0000, 254),
                (Family::Ipv6, 1000, 0x0400_0000, 0xff00_0000, 254),
                (Family::Ipv4, 1000, 0x0500_0000, 0xff00_0000, 100),
                (Family::Ipv6, 1000, 0x0500_0000, 0xff00_0000, 100),
            ]
        );
        // No route goes into the user's tables.
        assert_eq!(p.tables(), vec![7070, 7071, 7072]);
        // The data path's entries for them, after the next hops', carry the same marks.
        let hops = crate::route::datapath::policy::next_hops(&t, &ifaces(3)).expect("next hops");
        let tail: Vec<(u32, u32, u32)> = hops[6..]
            .iter()
            .map(|h| (h.ifindex, h.slow_mark, h.slow_mask))
            .collect();
        assert_eq!(
            tail,
            vec![(0, 0x0400_0000, 0xff00_0000), (0, 0x0500_0000, 0xff00_0000)]
        );
        assert_eq!(
            crate::route::datapath::policy::table_entry(&t, 100),
            Some(7),
            "alt's entry"
        );
    }

    #[test]
    fn follow_policy_false_installs_nothing_and_marks_nothing() {
        let text = TWO_HOPS.replace(
            r#""version": 1,"#,
            r#""version": 1, "slow_path": { "follow_policy": false },"#,
        );
        let t = topology(&text);
        assert!(plan(&t, &ifaces(3)).is_empty());
        let hops = crate::route::datapath::policy::next_hops(&t, &ifaces(3)).expect("next hops");
        assert!(hops.iter().all(|h| h.slow_mask == 0 && h.slow_mark == 0));
    }
}
