//! What to trace, validated: the hooks to attach and the in-kernel filters (network
//! namespace, interface, mark, filter expression), resolved from what the user typed to what
//! the programs compare (namespace inode, ifindex, compiled filter program).

use pktpath_common::{filter::FilterProgram, trace::Hook};

use super::filter::{FilterError, compile_filter};
use crate::sys::{
    SysError,
    caps::{Capability, MissingCapability, Privileges},
    iface as sys_iface,
    netns::NetNs,
};

/// The user's trace request could not be turned into a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown hook `{0}`; known hooks: {known}", known = known_hooks())]
    UnknownHook(String),
    #[error("no hooks selected; known hooks: {}", known_hooks())]
    NoHooks,
    #[error("network namespace `{spec}` not found")]
    Netns {
        spec: String,
        #[source]
        source: SysError,
    },
    #[error(
        "no interface `{iface}` in network namespace {netns}; list them with `ip -n NS link` or `ip link`"
    )]
    NoSuchInterface { iface: String, netns: u64 },
    #[error("interface name `{0}` is not valid (1 to 15 bytes, no NUL)")]
    BadInterfaceName(String),
    #[error("namespace inode {0} does not fit the kernel's 32-bit namespace number")]
    BadInode(u64),
    #[error("ring buffer size {0} is not a power of two of at least the page size ({page})", page = page_size())]
    RingSize(u32),
    #[error("invalid filter expression: {0}")]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Privilege(#[from] MissingCapability),
}

/// The system's page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

fn known_hooks() -> String {
    format!(
        "{} (and the sets all, default, hops)",
        Hook::ALL.map(|h| h.name()).join(", ")
    )
}

/// A validated trace configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// The hooks to attach, each once.
    pub hooks: Vec<Hook>,
    /// Only packets whose device lives in the namespace with this inode.
    pub netns: Option<u32>,
    /// Only packets whose device has this ifindex (in `netns`).
    pub ifindex: Option<u32>,
    /// Only packets with this `skb->mark`.
    pub mark: Option<u32>,
    /// Only packets the filter expression matches (the empty program matches all). A free
    /// (`kfree_skb`, `consume_skb`) of an skb that matched earlier is always reported.
    pub filter: FilterProgram,
    /// Tracking: a packet the expression matched once is reported at every later hook
    /// until it is freed, whatever its headers become (NAT, tunnels); the namespace,
    /// interface and mark filters still apply at each hook. `--no-track` turns it off.
    pub track: bool,
    /// Ring buffer size in bytes (a power of two, at least one page); None keeps the
    /// object's default (64 MiB).
    pub ring_bytes: Option<u32>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            hooks: Hook::DEFAULT.to_vec(),
            netns: None,
            ifindex: None,
            mark: None,
            filter: FilterProgram::match_all(),
            track: true,
            ring_bytes: None,
        }
    }
}

/// A trace request as typed by a user.
#[derive(Clone, Debug, Default)]
pub struct TraceRequest {
    /// A namespace name under /run/netns, a path, a pid or an inode.
    pub netns: Option<String>,
    /// An interface name, looked up in `netns` (or the current namespace).
    pub iface: Option<String>,
    pub mark: Option<u32>,
    /// Hook names (`netif_receive_skb`, `net:netif_receive_skb`, ...), or `all` / `default`;
    /// empty means [`Hook::DEFAULT`].
    pub hooks: Vec<String>,
    /// A filter expression (see [`super::filter`]); empty matches every packet.
    pub filter: String,
    /// Ring buffer size in bytes.
    pub ring_bytes: Option<u32>,
    /// Judge every hook by the expression alone (see [`TraceConfig::track`]).
    pub no_track: bool,
}

impl TraceRequest {
    /// Resolves names to the numbers the kernel programs compare. An interface without a
    /// namespace is looked up in the current one, and the trace is limited to it (ifindexes
    /// are per namespace).
    pub fn resolve(&self) -> Result<TraceConfig, ConfigError> {
        // First: a typo in the expression is reported before any namespace is entered.
        let filter = compile_filter(&self.filter)?;
        if let Some(n) = self.ring_bytes
            && (!n.is_power_of_two() || (n as usize) < page_size())
        {
            return Err(ConfigError::RingSize(n));
        }
        let hooks = if self.hooks.is_empty() {
            Hook::DEFAULT.to_vec()
        } else {
            parse_hooks(&self.hooks)?
        };
        let ns = match (&self.netns, &self.iface) {
            (Some(spec), _) => Some(NetNs::parse(spec).map_err(|source| ConfigError::Netns {
                spec: spec.clone(),
                source,
            })?),
            (None, Some(_)) => Some(NetNs::current().map_err(|source| ConfigError::Netns {
                spec: "current".into(),
                source,
            })?),
            (None, None) => None,
        };
        let ifindex = match (&self.iface, &ns) {
            (Some(iface), Some(ns)) => Some(ifindex_in(ns, iface, self.netns.is_some())?),
            _ => None,
        };
        let netns = ns
            .map(|ns| u32::try_from(ns.inode()).map_err(|_| ConfigError::BadInode(ns.inode())))
            .transpose()?;
        Ok(TraceConfig {
            hooks,
            netns,
            ifindex,
            mark: self.mark,
            filter,
            track: !self.no_track,
            ring_bytes: self.ring_bytes,
        })
    }
}

/// Parses hook names, with or without their subsystem (`net:`, `skb:`, `qdisc:`, `fib:`,
/// `fib6:`); `all` selects every hook, `default` those of [`Hook::DEFAULT`], `hops` those of
/// [`Hook::HOPS`]. Duplicates are dropped; the order is the kernel path order of [`Hook::ALL`].
pub fn parse_hooks(names: &[String]) -> Result<Vec<Hook>, ConfigError> {
    let mut selected = Vec::new();
    for raw in names.iter().flat_map(|n| n.split(',')) {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if name == "all" {
            selected.extend(Hook::ALL);
            continue;
        }
        if name == "default" {
            selected.extend(Hook::DEFAULT);
            continue;
        }
        if name == "hops" {
            selected.extend(Hook::HOPS);
            continue;
        }
        let hook = Hook::ALL
            .into_iter()
            .find(|h| {
                name == h.name()
                    || name
                        .strip_prefix(h.subsystem())
                        .and_then(|r| r.strip_prefix(':'))
                        == Some(h.name())
            })
            .ok_or_else(|| ConfigError::UnknownHook(name.to_owned()))?;
        selected.push(hook);
    }
    if selected.is_empty() {
        return Err(ConfigError::NoHooks);
    }
    Ok(Hook::ALL
        .into_iter()
        .filter(|h| selected.contains(h))
        .collect())
}

/// The ifindex of `iface` inside `ns` (entered only when `enter`; else `ns` is the current
/// namespace).
fn ifindex_in(ns: &NetNs, iface: &str, enter: bool) -> Result<u32, ConfigError> {
    let found = if enter {
        ns.run(|| sys_iface::index(iface)).map_err(|source| {
            if source.source.raw_os_error() == Some(libc::EPERM) {
                // setns(2) into another network namespace.
                let entering = Privileges::current().require(
                    &[Capability::SysAdmin],
                    "trace --iface with --netns enters that network namespace to find the interface",
                );
                if let Err(missing) = entering {
                    return ConfigError::Privilege(missing);
                }
            }
            ConfigError::Netns {
                spec: ns.path().display().to_string(),
                source,
            }
        })?
    } else {
        sys_iface::index(iface)
    };
    found.map_err(|e| {
        if e.source.kind() == std::io::ErrorKind::InvalidInput {
            ConfigError::BadInterfaceName(iface.to_owned())
        } else {
            ConfigError::NoSuchInterface {
                iface: iface.to_owned(),
                netns: ns.inode(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn hooks_parse_with_or_without_subsystem_in_path_order() {
        let got = parse_hooks(&names(&["skb:kfree_skb,net:net_dev_xmit", "netif_rx"])).unwrap();
        assert_eq!(got, vec![Hook::NetifRx, Hook::NetDevXmit, Hook::KfreeSkb]);
        assert_eq!(parse_hooks(&names(&["all"])).unwrap(), Hook::ALL.to_vec());
        let fib = parse_hooks(&names(&["fib:fib_table_lookup", "fib6_table_lookup"])).unwrap();
        assert_eq!(fib, vec![Hook::FibTableLookup, Hook::Fib6TableLookup]);
        let more = parse_hooks(&names(&["default,qdisc:qdisc_enqueue,qdisc_dequeue"])).unwrap();
        assert_eq!(more.len(), Hook::DEFAULT.len() + 2);
        assert!(more.contains(&Hook::QdiscEnqueue) && more.contains(&Hook::QdiscDequeue));
        assert_eq!(
            TraceRequest::default().resolve().unwrap().hooks,
            Hook::DEFAULT
        );
        assert_eq!(
            parse_hooks(&names(&["consume_skb", "consume_skb"])).unwrap(),
            vec![Hook::ConsumeSkb]
        );
        assert_eq!(
            parse_hooks(&names(&["hops"])).unwrap(),
            vec![
                Hook::NetifReceiveSkb,
                Hook::NetDevStartXmit,
                Hook::SkDataReady,
                Hook::KfreeSkb,
                Hook::ConsumeSkb
            ]
        );
        let hops_and_fib = parse_hooks(&names(&["hops,fib_table_lookup"])).unwrap();
        assert_eq!(hops_and_fib.len(), Hook::HOPS.len() + 1);
    }

    #[test]
    fn unknown_or_misplaced_hooks_are_named() {
        let err = parse_hooks(&names(&["net:kfree_skb"])).unwrap_err();
        assert!(err.to_string().contains("`net:kfree_skb`"), "{err}");
        assert!(err.to_string().contains("napi_gro_receive_entry"), "{err}");
        assert!(matches!(
            parse_hooks(&names(&[" , "])),
            Err(ConfigError::NoHooks)
        ));
    }

    #[test]
    fn filter_expressions_compile_or_point_at_the_token() {
        let req = TraceRequest {
            filter: "udp and dst port 53".into(),
            ..TraceRequest::default()
        };
        assert_eq!(req.resolve().unwrap().filter.len, 2);
        let all = TraceRequest::default().resolve().unwrap();
        assert_eq!(all.filter, FilterProgram::match_all());
        let bad = TraceRequest {
            filter: "udp and dts port 53".into(),
            ..TraceRequest::default()
        };
        let err = bad.resolve().unwrap_err();
        assert!(matches!(err, ConfigError::Filter(_)), "{err}");
        assert!(err.to_string().contains("`dts`"), "{err}");
        assert!(err.to_string().contains("        ^^^"), "{err}");
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_lookup() {
        let req = TraceRequest {
            iface: Some("x".repeat(16)),
            ..TraceRequest::default()
        };
        assert!(matches!(
            req.resolve(),
            Err(ConfigError::BadInterfaceName(_))
        ));
    }

    #[test]
    fn lo_resolves_in_the_current_namespace_and_limits_to_it() {
        let req = TraceRequest {
            iface: Some("lo".into()),
            ..TraceRequest::default()
        };
        let cfg = req.resolve().unwrap();
        assert_eq!(cfg.ifindex, Some(1));
        let here = NetNs::current().unwrap().inode();
        assert_eq!(cfg.netns.map(u64::from), Some(here));
        let missing = TraceRequest {
            iface: Some("pktpath-nope0".into()),
            ..TraceRequest::default()
        };
        assert!(matches!(
            missing.resolve(),
            Err(ConfigError::NoSuchInterface { .. })
        ));
    }
}
