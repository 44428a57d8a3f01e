//! What a validated configuration would apply, in the words of the configuration files:
//! names instead of indexes, prefixes in canonical form, policies in priority order. Used by
//! `pktpath route check` (and later `route show`) for text and JSON output.

use std::fmt::Write as _;

use serde::Serialize;

use crate::route::{
    compile::{CompiledAction, CompiledMatch, CompiledPolicy, PolicySet, Rewrite, Topology},
    config::{Action, Interface, Match, NextHop, Table},
};

/// A validated configuration, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The static configuration file.
    pub configuration: String,
    /// The runtime configuration file, if one was given.
    pub runtime_configuration: Option<String>,
    pub interfaces: Vec<Interface>,
    pub next_hops: Vec<NextHop>,
    pub tables: Vec<Table>,
    /// Policies in the order they are tried (lowest priority number first).
    pub policies: Vec<PolicySummary>,
}

/// One policy as it would be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub id: String,
    pub priority: u32,
    /// The line of the runtime configuration the policy starts on.
    pub line: usize,
    #[serde(rename = "match")]
    pub matches: Match,
    pub action: Action,
}

impl Summary {
    /// The summary of `set`, whose runtime configuration came from `runtime_file`.
    pub fn new(set: &PolicySet, runtime_file: Option<&str>) -> Self {
        let topology = &set.topology;
        Summary {
            configuration: topology.file.clone(),
            runtime_configuration: runtime_file.map(str::to_owned),
            interfaces: topology.interfaces.clone(),
            next_hops: topology
                .next_hops
                .iter()
                .map(|hop| NextHop {
                    name: hop.name.clone(),
                    interface: topology.interface(hop.interface).name.clone(),
                    gateway4: hop.gateway4,
                    gateway6: hop.gateway6,
                    mac: hop.mac,
                })
                .collect(),
            tables: topology.tables.clone(),
            policies: set
                .policies
                .iter()
                .map(|p| policy_summary(topology, p))
                .collect(),
        }
    }
}

fn policy_summary(topology: &Topology, policy: &CompiledPolicy) -> PolicySummary {
    let m = &policy.matches;
    PolicySummary {
        id: policy.id.clone(),
        priority: policy.priority,
        line: policy.line,
        matches: Match {
            iif: m.iif.map(|id| topology.interface(id).name.clone()),
            src: m.src,
            dst: m.dst,
            proto: m.proto,
            sport: m.sport,
            dport: m.dport,
            dscp: m.dscp,
            mark: m.mark,
        },
        action: match policy.action {
            CompiledAction::Forward { next_hop, rewrite } => Action::Forward {
                next_hop: topology.next_hop(next_hop).name.clone(),
                set_mark: rewrite.mark,
                set_dscp: rewrite.dscp,
            },
            CompiledAction::LookupTable { table, rewrite } => Action::LookupTable {
                table: topology
                    .tables
                    .iter()
                    .find(|t| t.id == table)
                    .map_or_else(|| table.to_string(), |t| t.name.clone()),
                set_mark: rewrite.mark,
                set_dscp: rewrite.dscp,
            },
            CompiledAction::Pass { rewrite } => Action::Pass {
                set_mark: rewrite.mark,
                set_dscp: rewrite.dscp,
            },
            CompiledAction::Drop => Action::Drop {},
        },
    }
}

/// A match in words, such as `iif lan src 10.1.0.0/24 proto tcp dport 80-443`; `any` when
/// it matches every packet.
pub fn match_text(topology: &Topology, m: &CompiledMatch) -> String {
    let mut out = String::new();
    let mut add = |key: &str, value: &dyn std::fmt::Display| {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{key} {value}");
    };
    if let Some(iif) = m.iif {
        add("iif", &topology.interface(iif).name);
    }
    if let Some(src) = m.src {
        add("src", &src);
    }
    if let Some(dst) = m.dst {
        add("dst", &dst);
    }
    if let Some(proto) = m.proto {
        add("proto", &proto);
    }
    if let Some(sport) = m.sport {
        add("sport", &sport);
    }
    if let Some(dport) = m.dport {
        add("dport", &dport);
    }
    if let Some(dscp) = m.dscp {
        add("dscp", &dscp);
    }
    if let Some(mark) = m.mark {
        add("mark", &format_args!("{:#x}/{:#x}", mark.value, mark.mask));
    }
    if out.is_empty() {
        out.push_str("any");
    }
    out
}

/// An action in words, such as `forward up1 (to-up1 via 10.2.0.2, fd02::2), set dscp 10`.
pub fn action_text(topology: &Topology, action: &CompiledAction) -> String {
    let rewrite_text = |r: &Rewrite| {
        let mut out = String::new();
        if let Some(mark) = r.mark {
            let _ = write!(out, ", set mark {mark:#x}");
        }
        if let Some(dscp) = r.dscp {
            let _ = write!(out, ", set dscp {dscp}");
        }
        out
    };
    match action {
        CompiledAction::Forward { next_hop, rewrite } => {
            let hop = topology.next_hop(*next_hop);
            let mut via: Vec<String> = Vec::new();
            via.extend(hop.gateway4.map(|g| g.to_string()));
            via.extend(hop.gateway6.map(|g| g.to_string()));
            via.extend(hop.mac.map(|m| format!("mac {m}")));
            format!(
                "forward {} ({} via {}){}",
                hop.name,
                topology.interface(hop.interface).name,
                via.join(", "),
                rewrite_text(rewrite)
            )
        }
        CompiledAction::LookupTable { table, rewrite } => {
            let name = topology
                .tables
                .iter()
                .find(|t| t.id == *table)
                .map_or("", |t| t.name.as_str());
            format!("lookup table {name} ({table}){}", rewrite_text(rewrite))
        }
        CompiledAction::Pass { rewrite } => format!("pass{}", rewrite_text(rewrite)),
        CompiledAction::Drop => "drop".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::config::Source;

    #[test]
    fn summary_speaks_the_files_language() {
        let topology = Topology::from_source(&Source::new(
            "c.json",
            r#"{ "version": 1, "interfaces": [{ "name": "lan" }, { "name": "wan" }],
                 "next_hops": [{ "name": "isp", "interface": "wan", "gateway4": "192.0.2.1", "mac": "02:00:00:00:00:01" }],
                 "tables": [{ "name": "main", "id": 254 }] }"#,
        ))
        .unwrap();
        let runtime = r#"{ "version": 1, "policies": [
            { "id": "b", "priority": 2, "match": {}, "action": { "type": "lookup_table", "table": "main", "set_mark": 3 } },
            { "id": "a", "priority": 1, "match": { "iif": "lan", "src": "10.0.0.0/8", "proto": 6, "dport": "1-2", "mark": { "value": 1, "mask": 15 } },
              "action": { "type": "forward", "next_hop": "isp", "set_dscp": 4 } } ] }"#;
        let set = PolicySet::from_source(&topology, &Source::new("r.json", runtime)).unwrap();
        let summary = Summary::new(&set, Some("r.json"));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["policies"][0]["id"], "a");
        assert_eq!(json["policies"][0]["match"]["iif"], "lan");
        assert_eq!(json["policies"][0]["match"]["proto"], "tcp");
        assert_eq!(json["policies"][0]["action"]["next_hop"], "isp");
        assert_eq!(json["policies"][1]["action"]["table"], "main");
        assert_eq!(json["next_hops"][0]["interface"], "wan");
        assert_eq!(
            match_text(&topology, &set.policies[0].matches),
            "iif lan src 10.0.0.0/8 proto tcp dport 1-2 mark 0x1/0xf"
        );
        assert_eq!(match_text(&topology, &set.policies[1].matches), "any");
        assert_eq!(
            action_text(&topology, &set.policies[0].action),
            "forward isp (wan via 192.0.2.1, mac 02:00:00:00:00:01), set dscp 4"
        );
        assert_eq!(
            action_text(&topology, &set.policies[1].action),
            "lookup table main (254), set mark 0x3"
        );
    }
}
