//! The reference model of policy classification: what the kernel classifier must decide
//! for a packet, written as plainly as possible (a linear scan in priority order) so that
//! it is obviously right. The data path is property-tested against it; it is not the data
//! path's algorithm.

use serde::Serialize;

use crate::route::{
    compile::{CompiledAction, CompiledMatch, CompiledPolicy, PolicySet, Rewrite},
    packet::PacketFields,
};

/// What the policy set decides for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision<'a> {
    /// The policy that matched; `None` when none did.
    pub policy: Option<&'a CompiledPolicy>,
    /// What to do: the matching policy's action, or pass unchanged when none matched.
    pub action: CompiledAction,
}

impl Decision<'_> {
    /// The id of the policy that matched.
    pub fn policy_id(&self) -> Option<&str> {
        self.policy.map(|p| p.id.as_str())
    }
}

/// The action for packets no policy matches: pass to the kernel stack, unchanged.
pub const NO_MATCH: CompiledAction = CompiledAction::Pass {
    rewrite: Rewrite {
        mark: None,
        dscp: None,
    },
};

/// Decides what `set` does with a packet: the first policy in priority order whose match
/// accepts it, or pass when none does.
pub fn classify<'a>(set: &'a PolicySet, packet: &PacketFields) -> Decision<'a> {
    for policy in &set.policies {
        if policy.matches.accepts(packet) {
            return Decision {
                policy: Some(policy),
                action: policy.action,
            };
        }
    }
    Decision {
        policy: None,
        action: NO_MATCH,
    }
}

impl CompiledMatch {
    /// Whether every field this match names accepts the packet.
    pub fn accepts(&self, p: &PacketFields) -> bool {
        self.iif.is_none_or(|iif| iif == p.iif)
            && self.src.is_none_or(|prefix| prefix.contains(p.src))
            && self.dst.is_none_or(|prefix| prefix.contains(p.dst))
            && self.proto.is_none_or(|proto| proto.0 == p.proto)
            && self
                .sport
                .is_none_or(|range| p.sport.is_some_and(|port| range.contains(port)))
            && self
                .dport
                .is_none_or(|range| p.dport.is_some_and(|port| range.contains(port)))
            && self.dscp.is_none_or(|dscp| dscp == p.dscp)
            && self.mark.is_none_or(|m| p.mark & m.mask == m.value)
    }
}
