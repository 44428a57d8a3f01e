//! Which tunnel link types the kernel offers: each is created, down and unconfigured, in a
//! scratch network namespace that goes away with it. Informational: `pktpath trace` follows
//! journeys through the tunnels there are; tests of tunnel journeys run where doctor finds
//! the type, and check doctor's verdict where it does not.

use super::{Check, probes::chain, uses};
use crate::sys::{link, netns};

/// `IFLA_VXLAN_ID`: a VXLAN device needs its network identifier.
const IFLA_VXLAN_ID: u16 = 1;

/// The tunnel link types probed: (check id, `ip link` type, feature).
pub const KINDS: [(&str, &str, &str); 8] = [
    ("tunnel_vxlan", "vxlan", "tunnel link type vxlan"),
    ("tunnel_gre", "gre", "tunnel link type gre"),
    ("tunnel_gretap", "gretap", "tunnel link type gretap"),
    ("tunnel_ipip", "ipip", "tunnel link type ipip"),
    ("tunnel_sit", "sit", "tunnel link type sit"),
    ("tunnel_ip6gre", "ip6gre", "tunnel link type ip6gre"),
    (
        "tunnel_ip6gretap",
        "ip6gretap",
        "tunnel link type ip6gretap",
    ),
    ("tunnel_ip6tnl", "ip6tnl", "tunnel link type ip6tnl"),
];

pub(super) fn run() -> Vec<Check> {
    KINDS
        .iter()
        .map(|&(id, kind, feature)| {
            Check::new(id, feature, &[uses::TRACE_TUNNELS]).result(probe(kind))
        })
        .collect()
}

/// Ok when a link of type `kind` can be created; Err with why not.
pub(super) fn probe(kind: &str) -> Result<Option<String>, String> {
    let vni = 1u32.to_ne_bytes();
    let data: &[(u16, &[u8])] = if kind == "vxlan" {
        &[(IFLA_VXLAN_ID, &vni)]
    } else {
        &[]
    };
    match netns::run_in_fresh(|| link::add("pktpath-probe", kind, data)) {
        Ok(Ok(())) => Ok(Some(format!("created a {kind} link in a scratch netns"))),
        Ok(Err(err)) if err.source.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(format!(
            "no {kind} link type (EOPNOTSUPP, `ip link`'s \"Unknown device type\"): the kernel was built without it or its module is not loaded"
        )),
        Ok(Err(err)) => Err(chain(&err)),
        Err(err) if err.source.raw_os_error() == Some(libc::EPERM) => {
            Err("not tried: a scratch network namespace needs CAP_SYS_ADMIN".into())
        }
        Err(err) => Err(chain(&err)),
    }
}
