//! What an apply would change: policies added, removed and changed between the running
//! policy set and a new one, matched by id (used by `route apply --dry-run`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::route::{
    compile::{CompiledPolicy, PolicySet},
    summary,
};

/// One policy in a change list, in the words of the configuration files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyLine {
    pub id: String,
    pub priority: u32,
    #[serde(rename = "match")]
    pub matches: String,
    pub action: String,
}

/// A changed policy: before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub before: PolicyLine,
    pub after: PolicyLine,
}

/// The difference between two policy sets over the same topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub added: Vec<PolicyLine>,
    pub removed: Vec<PolicyLine>,
    pub changed: Vec<Changed>,
    /// Ids of policies that stay as they are (and keep their counters).
    pub unchanged: Vec<String>,
}

impl Diff {
    /// What replacing `old` by `new` changes (lists in priority order).
    pub fn between(old: &PolicySet, new: &PolicySet) -> Self {
        let line = |set: &PolicySet, p: &CompiledPolicy| PolicyLine {
            id: p.id.clone(),
            priority: p.priority,
            matches: summary::match_text(&set.topology, &p.matches),
            action: summary::action_text(&set.topology, &p.action),
        };
        // Indexed by id: a linear search per policy made 100k-policy applies take minutes.
        let old_by_id: HashMap<&str, &CompiledPolicy> =
            old.policies.iter().map(|o| (o.id.as_str(), o)).collect();
        let new_ids: HashSet<&str> = new.policies.iter().map(|p| p.id.as_str()).collect();
        let mut diff = Diff::default();
        for p in &new.policies {
            match old_by_id.get(p.id.as_str()) {
                None => diff.added.push(line(new, p)),
                Some(o) => {
                    let (before, after) = (line(old, o), line(new, p));
                    if before == after {
                        diff.unchanged.push(p.id.clone());
                    } else {
                        diff.changed.push(Changed { before, after });
                    }
                }
            }
        }
        for o in &old.policies {
            if !new_ids.contains(o.id.as_str()) {
                diff.removed.push(line(old, o));
            }
        }
        diff
    }

    /// Whether the two sets are the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{compile::Topology, config::Source};

    fn set(policies: &str) -> PolicySet {
        let topo = Topology::from_source(&Source::new(
            "c.json",
            r#"{ "version": 1, "interfaces": [ { "name": "eth0" } ] }"#,
        ))
        .unwrap();
        let text = format!(r#"{{ "version": 1, "policies": [{policies}] }}"#);
        PolicySet::from_source(&topo, &Source::new("r.json", text)).unwrap()
    }

    #[test]
    fn added_removed_changed_and_unchanged_by_id() {
        let old = set(r#"
            { "id": "a", "priority": 1, "match": { "proto": "udp" }, "action": { "type": "drop" } },
            { "id": "b", "priority": 2, "match": {}, "action": { "type": "pass" } },
            { "id": "c", "priority": 3, "match": {}, "action": { "type": "drop" } }
        "#);
        let new = set(r#"
            { "id": "a", "priority": 1, "match": { "proto": "udp" }, "action": { "type": "drop" } },
            { "id": "b", "priority": 5, "match": {}, "action": { "type": "pass" } },
            { "id": "d", "priority": 4, "match": { "dscp": 46 }, "action": { "type": "pass" } }
        "#);
        let d = Diff::between(&old, &new);
        assert_eq!(d.unchanged, vec!["a"]);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].id, "d");
        assert_eq!(d.added[0].matches, "dscp 46");
        assert_eq!(d.removed.iter().map(|p| &p.id).collect::<Vec<_>>(), ["c"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            (d.changed[0].before.priority, d.changed[0].after.priority),
            (2, 5)
        );
        assert!(!d.is_empty());
        assert!(Diff::between(&new, &new).is_empty());
    }
}
