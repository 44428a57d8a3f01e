//! Which rules the XDP program leaves to TC ([`RULE_XDP_PASS`]): XDP sees no packet mark,
//! so it classifies as if the mark were 0, and its answer holds only where the mark cannot
//! change it. A rule is flagged when it matches on the mark, or when a rule matching on the
//! mark, of a priority as good or better, overlaps it in the other fields (a packet both
//! match could go to that rule in TC, with its real mark). XDP then passes the packet,
//! unchanged and uncounted, to TC. A packet no rule matches at XDP goes to TC anyway.

use pktpath_common::route::{ACTION_PASS, RULE_SET_MARK, RULE_XDP_PASS};
use serde::Serialize;

use super::{classifier::Rule, policy::Slots};
use crate::route::compile::PolicySet;

/// Past this many pair checks, every rule behind the best mark rule is flagged without
/// checking overlaps: correct (TC decides those packets), only more of them go there.
const MAX_PAIR_CHECKS: usize = 20_000_000;

/// Sets [`RULE_XDP_PASS`] on the rules whose XDP answer could differ from TC's.
pub fn flag_rules(rules: &mut [Rule]) {
    let mut marked: Vec<Rule> = rules.iter().filter(|r| r.mark.is_some()).cloned().collect();
    if marked.is_empty() {
        return;
    }
    marked.sort_by_key(|r| r.priority);
    let exhaustive = marked.len().saturating_mul(rules.len()) <= MAX_PAIR_CHECKS;
    for r in rules.iter_mut() {
        let behind = marked
            .iter()
            .take_while(|m| m.priority <= r.priority)
            .any(|m| !exhaustive || overlap(m, r));
        if r.mark.is_some() || behind {
            r.value.flags |= RULE_XDP_PASS;
        }
    }
}

/// Whether XDP hands every packet of rule `r` to TC (a mark set on the packet needs the
/// skb TC has).
pub fn passes_to_tc(r: &Rule) -> bool {
    r.value.flags & (RULE_XDP_PASS | RULE_SET_MARK) != 0
}

/// A policy whose packets the XDP program passes to TC, and why (`route check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub id: String,
    pub reason: &'static str,
}

/// The policies of `set` (compiled to `rules` with `slots`) that XDP leaves to TC, in
/// priority order. Policies not listed are decided at XDP, but for the packets any policy
/// leaves to the stack (TTL expiring, too big, IPv4 options...) or whose neighbour is not
/// resolved yet.
pub fn fallbacks(set: &PolicySet, rules: &[Rule], slots: &Slots) -> Vec<Fallback> {
    let mut out = Vec::new();
    for policy in &set.policies {
        let Some(&slot) = slots.by_id.get(&policy.id) else {
            continue;
        };
        let mine = || rules.iter().filter(|r| r.value.slot == slot);
        let reason = if mine().any(|r| r.mark.is_some()) {
            "matches on the mark, which XDP does not have"
        } else if mine().any(|r| r.value.flags & RULE_SET_MARK != 0) {
            "sets a mark, which needs the skb TC has"
        } else if mine().any(|r| r.value.flags & RULE_XDP_PASS != 0) {
            "a policy matching on the mark, of a better priority, overlaps it"
        } else if mine().all(|r| r.value.action == ACTION_PASS) {
            "passes: TC counts it and hands it to the stack"
        } else {
            continue;
        };
        out.push(Fallback {
            id: policy.id.clone(),
            reason,
        });
    }
    out
}

/// Whether some packet could match both rules, the mark aside (conservative: true unless
/// one field tells them apart).
fn overlap(a: &Rule, b: &Rule) -> bool {
    let same = |x: Option<u32>, y: Option<u32>| x.zip(y).is_none_or(|(x, y)| x == y);
    let ranges = |x: Option<(u16, u16)>, y: Option<(u16, u16)>| {
        x.zip(y).is_none_or(|((a, b), (c, d))| a <= d && c <= b)
    };
    same(a.family.map(u32::from), b.family.map(u32::from))
        && same(a.iif, b.iif)
        && same(a.proto.map(u32::from), b.proto.map(u32::from))
        && same(a.dscp.map(u32::from), b.dscp.map(u32::from))
        && prefixes(a.src, b.src)
        && prefixes(a.dst, b.dst)
        && ranges(a.sport, b.sport)
        && ranges(a.dport, b.dport)
}

/// Whether two prefixes share an address: the shorter's bits agree with the longer's.
fn prefixes(a: Option<([u8; 16], u8)>, b: Option<([u8; 16], u8)>) -> bool {
    let (Some((x, lx)), Some((y, ly))) = (a, b) else {
        return true;
    };
    let bits = u32::from(lx.min(ly));
    let (x, y) = (u128::from_be_bytes(x), u128::from_be_bytes(y));
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    (x ^ y) & mask == 0
}

#[cfg(test)]
mod tests {
    use pktpath_common::route::FAMILY_V4;

    use super::*;

    fn rule(priority: u32, dst: Option<([u8; 4], u8)>, mark: Option<(u32, u32)>) -> Rule {
        let mut r = Rule {
            priority,
            family: Some(FAMILY_V4),
            iif: None,
            src: None,
            dst: dst.map(|(a, l)| {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a);
                (b, l)
            }),
            proto: None,
            sport: None,
            dport: None,
            dscp: None,
            mark,
            value: Default::default(),
        };
        r.value.priority = priority;
        r
    }

    fn flagged(rules: &[Rule]) -> Vec<bool> {
        let mut rules = rules.to_vec();
        flag_rules(&mut rules);
        rules.iter().map(passes_to_tc).collect()
    }

    #[test]
    fn only_rules_a_better_mark_rule_overlaps_are_left_to_tc() {
        let rules = [
            rule(10, Some(([10, 1, 0, 0], 16)), None),
            rule(20, Some(([10, 2, 0, 0], 16)), Some((1, 1))),
            rule(30, Some(([10, 2, 3, 0], 24)), None),
            rule(40, Some(([10, 3, 0, 0], 16)), None),
            rule(50, None, None),
        ];
        assert_eq!(flagged(&rules), [false, true, true, false, true]);
    }

    #[test]
    fn without_mark_rules_nothing_is_left_to_tc() {
        let rules = [rule(1, None, None), rule(2, Some(([10, 0, 0, 0], 8)), None)];
        assert_eq!(flagged(&rules), [false, false]);
    }

    #[test]
    fn a_mark_rule_behind_does_not_matter() {
        let rules = [rule(1, None, None), rule(2, None, Some((5, 0xff)))];
        assert_eq!(flagged(&rules), [false, true]);
    }
}
