//! Policy routing over rtnetlink: `ip rule fwmark MARK/MASK lookup TABLE` rules and default
//! routes in numbered tables, added, deleted and listed. The data path's slow path (see
//! `route::datapath::slow_path`) is made of them.
//!
//! All calls act on the calling thread's network namespace.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    SysError,
    netlink::{Socket, attributes, u32_attr},
};

// <linux/fib_rules.h>
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
// <linux/rtnetlink.h>
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const RT_TABLE_COMPAT: u8 = 252;

/// An address family, as rules and routes carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn af(self) -> u8 {
        match self {
            Self::Ipv4 => libc::AF_INET as u8,
            Self::Ipv6 => libc::AF_INET6 as u8,
        }
    }

    /// `-4` or `-6`, as `ip` is told the family.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Ipv4 => "-4",
            Self::Ipv6 => "-6",
        }
    }
}

/// `ip rule add fwmark MARK/MASK lookup TABLE pref PRIORITY` of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwmarkRule {
    pub family: Family,
    pub priority: u32,
    pub mark: u32,
    pub mask: u32,
    pub table: u32,
}

/// A rule as the kernel lists it (the fields pktpath looks at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub priority: u32,
    pub mark: Option<u32>,
    pub mask: Option<u32>,
    pub table: u32,
}

/// `ip route add default [via GATEWAY] dev IFINDEX [onlink] table TABLE` of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    pub family: Family,
    pub table: u32,
    /// None: the destination is on the link (`scope link`).
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
}

/// `struct fib_rule_hdr`: family, dst_len, src_len, tos, table, res1, res2, action, flags.
fn rule_header(family: Family, table: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family.af();
    h[4] = u8::try_from(table).unwrap_or(RT_TABLE_COMPAT);
    h[7] = FR_ACT_TO_TBL;
    h
}

fn rule_attrs(r: &FwmarkRule) -> [(u16, [u8; 4]); 4] {
    [
        (FRA_PRIORITY, r.priority.to_ne_bytes()),
        (FRA_FWMARK, r.mark.to_ne_bytes()),
        (FRA_FWMASK, r.mask.to_ne_bytes()),
        (FRA_TABLE, r.table.to_ne_bytes()),
    ]
}

fn describe_rule(r: &FwmarkRule) -> String {
    format!(
        "ip {} rule fwmark {:#x}/{:#x} lookup {} pref {}",
        r.family.flag(),
        r.mark,
        r.mask,
        r.table,
        r.priority
    )
}

/// Adds `rule`. Ok(false) when the same rule is there already.
pub fn add_rule(rule: &FwmarkRule) -> Result<bool, SysError> {
    let sock = Socket::open()?;
    let attrs = rule_attrs(rule);
    let attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(t, d)| (*t, &d[..])).collect();
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    match sock.transact(
        libc::RTM_NEWRULE,
        flags,
        &rule_header(rule.family, rule.table),
        &attrs,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(SysError::io(
            format!("RTM_NEWRULE ({})", describe_rule(rule)),
            e,
        )),
    }
}

/// Deletes `rule`. Ok(false) when there was no such rule.
pub fn del_rule(rule: &FwmarkRule) -> Result<bool, SysError> {
    let sock = Socket::open()?;
    let attrs = rule_attrs(rule);
    let attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(t, d)| (*t, &d[..])).collect();
    match sock.transact(
        libc::RTM_DELRULE,
        0,
        &rule_header(rule.family, rule.table),
        &attrs,
    ) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(false),
        Err(e) => Err(SysError::io(
            format!("RTM_DELRULE ({})", describe_rule(rule)),
            e,
        )),
    }
}

/// The rules of `family`.
pub fn rules(family: Family) -> Result<Vec<RuleInfo>, SysError> {
    let sock = Socket::open()?;
    let mut header = [0u8; 12];
    header[0] = family.af();
    let replies = sock
        .transact(libc::RTM_GETRULE, libc::NLM_F_DUMP as u16, &header, &[])
        .map_err(|e| SysError::io(format!("RTM_GETRULE dump ({})", family.flag()), e))?;
    let mut out = Vec::new();
    for p in &replies {
        if p.len() < 12 {
            continue;
        }
        let mut info = RuleInfo {
            priority: 0,
            mark: None,
            mask: None,
            table: u32::from(p[4]),
        };
        for (ty, d) in attributes(&p[12..]) {
            match ty {
                FRA_PRIORITY => info.priority = u32_attr(d).unwrap_or(0),
                FRA_FWMARK => info.mark = u32_attr(d),
                FRA_FWMASK => info.mask = u32_attr(d),
                FRA_TABLE => info.table = u32_attr(d).unwrap_or(info.table),
                _ => {}
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
fn route_header(
    family: Family,
    table: u32,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family.af();
    h[4] = u8::try_from(table).unwrap_or(RT_TABLE_COMPAT);
    h[5] = protocol;
    h[6] = scope;
    h[7] = kind;
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h
}

fn describe_route(r: &DefaultRoute) -> String {
    match r.gateway {
        Some(gw) => format!(
            "ip {} route default via {gw} dev ifindex {} onlink table {}",
            r.family.flag(),
            r.ifindex,
            r.table
        ),
        None => format!(
            "ip {} route default dev ifindex {} table {}",
            r.family.flag(),
            r.ifindex,
            r.table
        ),
    }
}

/// Adds `route`, or replaces the default route of its table and family. A gateway is taken
/// as on the link (`onlink`): the route needs no address of the interface in its subnet, as
/// the fast path's redirect to it does not.
pub fn replace_default_route(route: &DefaultRoute) -> Result<(), SysError> {
    let sock = Socket::open()?;
    let (scope, flags) = match route.gateway {
        Some(_) => (RT_SCOPE_UNIVERSE, RTNH_F_ONLINK),
        None => (RT_SCOPE_LINK, 0),
    };
    let header = route_header(
        route.family,
        route.table,
        RTPROT_STATIC,
        scope,
        RTN_UNICAST,
        flags,
    );
    let table = route.table.to_ne_bytes();
    let oif = route.ifindex.to_ne_bytes();
    let gateway: Vec<u8> = match route.gateway {
        Some(IpAddr::V4(a)) => a.octets().to_vec(),
        Some(IpAddr::V6(a)) => a.octets().to_vec(),
        None => Vec::new(),
    };
    let mut attrs: Vec<(u16, &[u8])> = vec![(RTA_TABLE, &table), (RTA_OIF, &oif)];
    if !gateway.is_empty() {
        attrs.push((RTA_GATEWAY, &gateway));
    }
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    sock.transact(libc::RTM_NEWROUTE, flags, &header, &attrs)
        .map(|_| ())
        .map_err(|e| SysError::io(format!("RTM_NEWROUTE ({})", describe_route(route)), e))
}

/// Deletes the default route of `family` in `table`. Ok(false) when there was none.
pub fn del_default_route(family: Family, table: u32) -> Result<bool, SysError> {
    let sock = Socket::open()?;
    let header = route_header(family, table, 0, RT_SCOPE_NOWHERE, 0, 0);
    let t = table.to_ne_bytes();
    match sock.transact(libc::RTM_DELROUTE, 0, &header, &[(RTA_TABLE, &t)]) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => Ok(false),
        Err(e) => Err(SysError::io(
            format!(
                "RTM_DELROUTE (ip {} route del default table {table})",
                family.flag()
            ),
            e,
        )),
    }
}

/// How many routes of `family` each table holds (one dump, whatever the tables asked
/// about: a router's main table may hold a full routing table).
pub fn routes_per_table(family: Family) -> Result<HashMap<u32, usize>, SysError> {
    let sock = Socket::open()?;
    let header = route_header(family, 0, 0, 0, 0, 0);
    let replies = sock
        .transact(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, &header, &[])
        .map_err(|e| SysError::io(format!("RTM_GETROUTE dump ({})", family.flag()), e))?;
    let mut counts = HashMap::new();
    for p in replies
        .iter()
        .filter(|p| p.len() >= 12 && p[0] == family.af())
    {
        let mut t = u32::from(p[4]);
        for (ty, d) in attributes(&p[12..]) {
            if ty == RTA_TABLE {
                t = u32_attr(d).unwrap_or(t);
            }
        }
        *counts.entry(t).or_insert(0) += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_above_255_is_carried_in_the_attribute_only() {
        let h = rule_header(Family::Ipv4, 7070);
        assert_eq!(
            (h[0], h[4], h[7]),
            (libc::AF_INET as u8, RT_TABLE_COMPAT, FR_ACT_TO_TBL)
        );
        assert_eq!(rule_header(Family::Ipv6, 100)[4], 100);
        let r = route_header(
            Family::Ipv6,
            7071,
            RTPROT_STATIC,
            0,
            RTN_UNICAST,
            RTNH_F_ONLINK,
        );
        assert_eq!(
            (r[0], r[4], r[5], r[7]),
            (libc::AF_INET6 as u8, RT_TABLE_COMPAT, 4, 1)
        );
        assert_eq!(
            u32::from_ne_bytes(r[8..12].try_into().unwrap()),
            RTNH_F_ONLINK
        );
    }
}
