//! Checking the configuration files against themselves and each other, and compiling them
//! into the validated form the data path and the reference model use: names resolved to
//! indexes, policies sorted by priority.
//!
//! Everything a file can get wrong is found here, with its line; what only the running
//! kernel can say (does interface `up1` exist?) is checked when attaching.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use serde::Serialize;

use crate::route::config::{
    Action, CONFIGURATION_VERSION, ConfigError, Configuration, Family, FieldPath, Hook, Interface,
    Location, MacAddr, MarkMatch, Match, PortRange, Prefix, Protocol, RUNTIME_VERSION,
    RuntimeConfiguration, SlowPath, Source, Table,
};

/// Longest policy id.
pub const MAX_POLICY_ID_LEN: usize = 64;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Index of an interface in [`Topology::interfaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct InterfaceId(pub usize);

/// Index of a next hop in [`Topology::next_hops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NextHopId(pub usize);

/// A next hop with its interface resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompiledNextHop {
    pub name: String,
    pub interface: InterfaceId,
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
}

impl CompiledNextHop {
    /// Whether the next hop can address a neighbour for packets of `family`.
    pub fn serves(&self, family: Family) -> bool {
        self.mac.is_some()
            || match family {
                Family::Ipv4 => self.gateway4.is_some(),
                Family::Ipv6 => self.gateway6.is_some(),
            }
    }
}

/// The validated static configuration: interfaces, next hops and tables, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The name of the file it came from (errors about references into it name it).
    pub file: String,
    pub interfaces: Vec<Interface>,
    pub next_hops: Vec<CompiledNextHop>,
    pub tables: Vec<Table>,
    /// How the stack's forwarding follows `forward` policies (see [`SlowPath`]).
    pub slow_path: SlowPath,
}

impl Topology {
    /// Reads, parses and validates a `configuration.json`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        Self::from_source(&source)
    }

    /// Parses and validates a `configuration.json` held in memory.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let config: Configuration = source.parse(CONFIGURATION_VERSION)?;
        Self::compile(&config, source)
    }

    /// Validates a parsed `configuration.json`; `source` is its text, for error locations.
    pub fn compile(config: &Configuration, source: &Source) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let mut interfaces: HashMap<&str, InterfaceId> = HashMap::new();
        for (i, iface) in config.interfaces.iter().enumerate() {
            let path = root.key("interfaces").index(i);
            check_interface_name(&iface.name).map_err(|reason| ConfigError::InvalidName {
                at: source.at(&path.key("name")),
                kind: "interface name",
                name: iface.name.clone(),
                reason,
            })?;
            if !iface.ingress && !iface.egress {
                return Err(ConfigError::NoDirection {
                    at: source.at(&path),
                    name: iface.name.clone(),
                });
            }
            if iface.hook == Hook::Xdp && !iface.ingress {
                return Err(ConfigError::XdpWithoutIngress {
                    at: source.at(&path.key("hook")),
                    name: iface.name.clone(),
                });
            }
            unique(&mut interfaces, &iface.name, InterfaceId(i), |first| {
                ConfigError::DuplicateName {
                    at: source.at(&path.key("name")),
                    kind: "interface",
                    name: iface.name.clone(),
                    first_line: source.line_of(&root.key("interfaces").index(first.0)),
                }
            })?;
        }

        let attached = || names(config.interfaces.iter().map(|i| i.name.as_str()));
        let mut next_hops = Vec::with_capacity(config.next_hops.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, hop) in config.next_hops.iter().enumerate() {
            let path = root.key("next_hops").index(i);
            if hop.name.is_empty() {
                return Err(ConfigError::InvalidName {
                    at: source.at(&path.key("name")),
                    kind: "next hop name",
                    name: hop.name.clone(),
                    reason: "it is empty".to_owned(),
                });
            }
            unique(&mut seen, &hop.name, i, |first| {
                ConfigError::DuplicateName {
                    at: source.at(&path.key("name")),
                    kind: "next hop",
                    name: hop.name.clone(),
                    first_line: source.line_of(&root.key("next_hops").index(first)),
                }
            })?;
            let Some(&interface) = interfaces.get(hop.interface.as_str()) else {
                return Err(ConfigError::NextHopInterface {
                    at: source.at(&path.key("interface")),
                    next_hop: hop.name.clone(),
                    interface: hop.interface.clone(),
                    known: attached(),
                });
            };
            if hop.gateway4.is_none() && hop.gateway6.is_none() && hop.mac.is_none() {
                return Err(ConfigError::NextHopWithoutAddress {
                    at: source.at(&path),
                    name: hop.name.clone(),
                });
            }
            next_hops.push(CompiledNextHop {
                name: hop.name.clone(),
                interface,
                gateway4: hop.gateway4,
                gateway6: hop.gateway6,
                mac: hop.mac,
            });
        }

        let mut table_names: HashMap<&str, usize> = HashMap::new();
        let mut table_ids: HashMap<u32, usize> = HashMap::new();
        for (i, table) in config.tables.iter().enumerate() {
            let path = root.key("tables").index(i);
            if table.name.is_empty() {
                return Err(ConfigError::InvalidName {
                    at: source.at(&path.key("name")),
                    kind: "table name",
                    name: table.name.clone(),
                    reason: "it is empty".to_owned(),
                });
            }
            if table.id == 0 {
                return Err(ConfigError::InvalidTableId {
                    at: source.at(&path.key("id")),
                });
            }
            unique(&mut table_names, &table.name, i, |first| {
                ConfigError::DuplicateName {
                    at: source.at(&path.key("name")),
                    kind: "table",
                    name: table.name.clone(),
                    first_line: source.line_of(&root.key("tables").index(first)),
                }
            })?;
            if let Some(&first) = table_ids.get(&table.id) {
                return Err(ConfigError::DuplicateTableId {
                    at: source.at(&path.key("id")),
                    id: table.id,
                    other: config.tables[first].name.clone(),
                    first_line: source.line_of(&root.key("tables").index(first)),
                });
            }
            table_ids.insert(table.id, i);
        }
        check_slow_path(config, source)?;

        Ok(Topology {
            file: source.name().to_owned(),
            interfaces: config.interfaces.clone(),
            next_hops,
            tables: config.tables.clone(),
            slow_path: config.slow_path,
        })
    }

    /// The mark bits the slow path reserves (0 when it is off).
    pub fn slow_mark_mask(&self) -> u32 {
        if self.slow_path.follow_policy {
            self.slow_path.mark_mask
        } else {
            0
        }
    }

    /// The interface called `name`.
    pub fn interface_id(&self, name: &str) -> Option<InterfaceId> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .map(InterfaceId)
    }

    /// The interface with this id.
    pub fn interface(&self, id: InterfaceId) -> &Interface {
        &self.interfaces[id.0]
    }

    /// The next hop called `name`.
    pub fn next_hop_id(&self, name: &str) -> Option<NextHopId> {
        self.next_hops
            .iter()
            .position(|h| h.name == name)
            .map(NextHopId)
    }

    /// The next hop with this id.
    pub fn next_hop(&self, id: NextHopId) -> &CompiledNextHop {
        &self.next_hops[id.0]
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// What a policy does to a packet besides its verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Rewrite {
    /// New packet mark.
    pub mark: Option<u32>,
    /// New DSCP (0-63).
    pub dscp: Option<u8>,
}

/// A policy action with its names resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CompiledAction {
    /// Redirect to this next hop.
    Forward {
        next_hop: NextHopId,
        rewrite: Rewrite,
    },
    /// Forward by a FIB lookup in this kernel routing table (its number).
    LookupTable { table: u32, rewrite: Rewrite },
    /// Hand to the kernel stack.
    Pass { rewrite: Rewrite },
    /// Drop.
    Drop,
}

/// A policy's match with its names resolved. `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CompiledMatch {
    pub iif: Option<InterfaceId>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub proto: Option<Protocol>,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
    pub dscp: Option<u8>,
    pub mark: Option<MarkMatch>,
}

impl CompiledMatch {
    /// The only address family this match can accept, if its prefixes restrict it.
    pub fn family(&self) -> Option<Family> {
        self.src.or(self.dst).map(|p| p.family())
    }
}

/// One validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompiledPolicy {
    pub id: String,
    pub priority: u32,
    pub matches: CompiledMatch,
    pub action: CompiledAction,
    /// The line of the runtime configuration the policy starts on.
    pub line: usize,
}

/// The validated policy set: policies in priority order (lowest number first), over the
/// topology they were checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySet {
    pub topology: Topology,
    pub policies: Vec<CompiledPolicy>,
}

impl PolicySet {
    /// No policies: every packet is passed.
    pub fn empty(topology: Topology) -> Self {
        PolicySet {
            topology,
            policies: Vec::new(),
        }
    }

    /// Reads, parses and validates a `runtimeConfiguration.json` against `topology`.
    pub fn load(topology: &Topology, path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        Self::from_source(topology, &source)
    }

    /// Parses and validates a `runtimeConfiguration.json` held in memory.
    pub fn from_source(topology: &Topology, source: &Source) -> Result<Self, ConfigError> {
        let runtime: RuntimeConfiguration = source.parse(RUNTIME_VERSION)?;
        Self::compile(topology, &runtime, source)
    }

    /// Validates a parsed runtime configuration against `topology`; `source` is its text,
    /// for error locations.
    pub fn compile(
        topology: &Topology,
        runtime: &RuntimeConfiguration,
        source: &Source,
    ) -> Result<Self, ConfigError> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut priorities: HashMap<u32, usize> = HashMap::new();
        let mut policies = Vec::with_capacity(runtime.policies.len());
        let list = FieldPath::root().key("policies");
        let lines = source.element_lines(&list);
        let line_of = |i: usize| lines.get(i).copied().unwrap_or(1);
        for (i, policy) in runtime.policies.iter().enumerate() {
            let path = list.index(i);
            if policy.id.is_empty()
                || policy.id.chars().count() > MAX_POLICY_ID_LEN
                || policy.id.chars().any(char::is_control)
            {
                return Err(ConfigError::InvalidName {
                    at: source.at(&path.key("id")),
                    kind: "policy id",
                    name: policy.id.clone(),
                    reason: format!(
                        "ids are 1 to {MAX_POLICY_ID_LEN} characters without control characters"
                    ),
                });
            }
            unique(&mut ids, &policy.id, i, |first| ConfigError::DuplicateId {
                at: source.at(&path.key("id")),
                id: policy.id.clone(),
                first_line: source.line_of(&list.index(first).key("id")),
            })?;
            if let Some(&first) = priorities.get(&policy.priority) {
                return Err(ConfigError::DuplicatePriority {
                    at: source.at(&path.key("priority")),
                    priority: policy.priority,
                    id: policy.id.clone(),
                    other: runtime.policies[first].id.clone(),
                    first_line: source.line_of(&list.index(first).key("priority")),
                });
            }
            priorities.insert(policy.priority, i);
            let matches = compile_match(topology, &policy.matches, source, &path.key("match"))?;
            let action = compile_action(
                topology,
                &policy.action,
                matches.family(),
                source,
                &path.key("action"),
            )?;
            policies.push(CompiledPolicy {
                id: policy.id.clone(),
                priority: policy.priority,
                matches,
                action,
                line: line_of(i),
            });
        }
        policies.sort_by_key(|p| p.priority);
        Ok(PolicySet {
            topology: topology.clone(),
            policies,
        })
    }
}

/// Checks `slow_path` against itself and the next hops and tables it serves. An error
/// caused by a default value points at what collides with it.
fn check_slow_path(config: &Configuration, source: &Source) -> Result<(), ConfigError> {
    let slow = &config.slow_path;
    if !slow.follow_policy {
        return Ok(());
    }
    let root = FieldPath::root();
    let key = |k: &str| root.key("slow_path").key(k);
    // The setting itself when the file writes it, else `fallback` (what collides with it).
    let at = |k: &str, fallback: &FieldPath| {
        if source.has(&key(k)) {
            source.at(&key(k))
        } else {
            source.at(fallback)
        }
    };
    let fail = |at: Box<Location>, message: String| Err(ConfigError::SlowPath { at, message });
    let mask = slow.mark_mask;
    if mask == 0 {
        return fail(
            source.at(&key("mark_mask")),
            "mark mask 0 leaves no bits to name next hops by; give one run of contiguous bits such as 4278190080 (0xff000000), or set follow_policy to false".to_owned(),
        );
    }
    let run = mask >> mask.trailing_zeros();
    if run & (run.wrapping_add(1)) != 0 {
        let low = mask.trailing_zeros();
        let fixed = (u32::MAX >> (32 - (32 - mask.leading_zeros() - low))) << low;
        return fail(
            source.at(&key("mark_mask")),
            format!(
                "mark mask {mask:#x} is not one run of contiguous bits; use one, such as {fixed:#x} ({fixed})"
            ),
        );
    }
    let hops = config.next_hops.len() as u64;
    // Tables take the marks after the next hops' (see `SlowPath::table_mark`).
    let named = hops + config.tables.len() as u64;
    if named > slow.capacity() {
        return fail(
            at("mark_mask", &root.key("next_hops")),
            format!(
                "mark mask {mask:#x} names at most {} next hops and tables together and {} has {hops} next hops and {} tables; widen slow_path.mark_mask (each added bit doubles it)",
                slow.capacity(),
                source.name(),
                config.tables.len()
            ),
        );
    }
    if !(1..=32765).contains(&slow.rule_priority) {
        return fail(
            source.at(&key("rule_priority")),
            format!(
                "rule priority {} is out of range; use 1-32765 (after the local table's rule at 0, before main's at 32766)",
                slow.rule_priority
            ),
        );
    }
    if hops == 0 {
        return Ok(());
    }
    if slow.table_base == 0 || u64::from(slow.table_base) + hops - 1 > u64::from(u32::MAX) {
        return fail(
            source.at(&key("table_base")),
            format!(
                "table base {} leaves no room for {hops} tables; use 1-{}",
                slow.table_base,
                u64::from(u32::MAX) + 1 - hops
            ),
        );
    }
    for (i, hop) in config.next_hops.iter().enumerate() {
        let table = slow.table(i);
        let hop_at = root.key("next_hops").index(i);
        if (253..=255).contains(&table) {
            return fail(
                at("table_base", &hop_at),
                format!(
                    "next hop {:?} would get routing table {table} (slow_path.table_base + {i}), one of the kernel's own (253 default, 254 main, 255 local); move slow_path.table_base",
                    hop.name
                ),
            );
        }
        if let Some((j, t)) = config
            .tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.id == table)
        {
            return fail(
                at("table_base", &root.key("tables").index(j).key("id")),
                format!(
                    "next hop {:?} would get routing table {table} (slow_path.table_base + {i}), which tables names {:?}; move slow_path.table_base",
                    hop.name, t.name
                ),
            );
        }
    }
    Ok(())
}

fn compile_match(
    topology: &Topology,
    m: &Match,
    source: &Source,
    path: &FieldPath,
) -> Result<CompiledMatch, ConfigError> {
    let iif = match &m.iif {
        None => None,
        Some(name) => {
            let at = || source.at(&path.key("iif"));
            let id = topology
                .interface_id(name)
                .ok_or_else(|| ConfigError::UnknownInterface {
                    at: at(),
                    name: name.clone(),
                    config: topology.file.clone(),
                    known: names(topology.interfaces.iter().map(|i| i.name.as_str())),
                })?;
            if !topology.interface(id).ingress {
                return Err(ConfigError::NotIngress {
                    at: at(),
                    name: name.clone(),
                    config: topology.file.clone(),
                });
            }
            Some(id)
        }
    };
    if let (Some(src), Some(dst)) = (m.src, m.dst)
        && src.family() != dst.family()
    {
        return Err(ConfigError::MixedFamilies {
            at: source.at(&path.key("dst")),
            src: src.to_string(),
            src_family: src.family().to_string(),
            dst: dst.to_string(),
            dst_family: dst.family().to_string(),
        });
    }
    if let Some(proto) = m.proto
        && !proto.has_ports()
    {
        for key in ["sport", "dport"] {
            let given = if key == "sport" { m.sport } else { m.dport };
            if given.is_some() {
                return Err(ConfigError::PortsWithoutPorts {
                    at: source.at(&path.key(key)),
                    proto: proto.to_string(),
                });
            }
        }
    }
    if let Some(value) = m.dscp {
        check_dscp(value, source, &path.key("dscp"))?;
    }
    if let Some(mark) = m.mark
        && mark.value & !mark.mask != 0
    {
        return Err(ConfigError::MarkOutsideMask {
            at: source.at(&path.key("mark").key("value")),
            value: mark.value,
            mask: mark.mask,
            fixed: mark.value & mark.mask,
        });
    }
    Ok(CompiledMatch {
        iif,
        src: m.src,
        dst: m.dst,
        proto: m.proto,
        sport: m.sport,
        dport: m.dport,
        dscp: m.dscp,
        mark: m.mark,
    })
}

fn compile_action(
    topology: &Topology,
    action: &Action,
    family: Option<Family>,
    source: &Source,
    path: &FieldPath,
) -> Result<CompiledAction, ConfigError> {
    let rewrite = |set_mark: &Option<u32>, set_dscp: &Option<u8>| {
        if let Some(value) = *set_dscp {
            check_dscp(value, source, &path.key("set_dscp"))?;
        }
        let reserved = topology.slow_mark_mask();
        if let Some(mark) = *set_mark
            && mark & reserved != 0
        {
            return Err(ConfigError::MarkInSlowPathMask {
                at: source.at(&path.key("set_mark")),
                mark,
                mask: reserved,
                config: topology.file.clone(),
            });
        }
        Ok(Rewrite {
            mark: *set_mark,
            dscp: *set_dscp,
        })
    };
    Ok(match action {
        Action::Forward {
            next_hop,
            set_mark,
            set_dscp,
        } => {
            let at = || source.at(&path.key("next_hop"));
            let id = topology
                .next_hop_id(next_hop)
                .ok_or_else(|| ConfigError::UnknownNextHop {
                    at: at(),
                    name: next_hop.clone(),
                    config: topology.file.clone(),
                    known: names(topology.next_hops.iter().map(|h| h.name.as_str())),
                })?;
            if let Some(family) = family
                && !topology.next_hop(id).serves(family)
            {
                return Err(ConfigError::NextHopFamily {
                    at: at(),
                    next_hop: next_hop.clone(),
                    family: family.to_string(),
                    digit: if family == Family::Ipv4 { 4 } else { 6 },
                });
            }
            CompiledAction::Forward {
                next_hop: id,
                rewrite: rewrite(set_mark, set_dscp)?,
            }
        }
        Action::LookupTable {
            table,
            set_mark,
            set_dscp,
        } => {
            let found = topology
                .table(table)
                .ok_or_else(|| ConfigError::UnknownTable {
                    at: source.at(&path.key("table")),
                    name: table.clone(),
                    config: topology.file.clone(),
                    known: names(topology.tables.iter().map(|t| t.name.as_str())),
                })?;
            CompiledAction::LookupTable {
                table: found.id,
                rewrite: rewrite(set_mark, set_dscp)?,
            }
        }
        Action::Pass { set_mark, set_dscp } => CompiledAction::Pass {
            rewrite: rewrite(set_mark, set_dscp)?,
        },
        Action::Drop {} => CompiledAction::Drop,
    })
}

fn check_dscp(value: u8, source: &Source, path: &FieldPath) -> Result<(), ConfigError> {
    if value > 63 {
        return Err(ConfigError::DscpOutOfRange {
            at: source.at(path),
            value,
        });
    }
    Ok(())
}

/// Why the kernel would refuse `name` as an interface name, if it would.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Err(format!(
            "it is {} bytes long; the kernel allows at most {MAX_INTERFACE_NAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("the kernel does not allow it".to_owned());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("interface names cannot contain '/', ':' or spaces".to_owned());
    }
    Ok(())
}

/// Inserts `key`, or returns the error `dup` makes from the first entry's value.
fn unique<'a, V: Copy>(
    seen: &mut HashMap<&'a str, V>,
    key: &'a str,
    value: V,
    dup: impl FnOnce(V) -> ConfigError,
) -> Result<(), ConfigError> {
    match seen.entry(key) {
        Entry::Occupied(first) => Err(dup(*first.get())),
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
    }
}

/// `a, b, c`, or `none` for an empty list.
fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = names.collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
