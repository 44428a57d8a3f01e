//! The runtime configuration, `runtimeConfiguration.json`: the policy set that `route apply`
//! swaps in as a whole. Each policy has a unique id, a unique priority (lower wins), a match
//! on packet fields, and an action.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{PortRange, Prefix, Protocol};

/// The version of the runtime configuration file format this pktpath reads and writes.
pub const RUNTIME_VERSION: u32 = 1;

/// `runtimeConfiguration.json`: the policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pktpath route runtimeConfiguration.json")]
pub struct RuntimeConfiguration {
    /// Format version; this pktpath reads version 1.
    pub version: u32,
    /// The policies. Their order in the file does not matter; priority decides. A packet
    /// no policy matches is passed to the kernel stack.
    pub policies: Vec<Policy>,
}

/// One policy: the first policy (lowest priority number) whose match accepts a packet
/// decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name of the policy (1 to 64 characters); counters and `route get` use it.
    pub id: String,
    /// Lower numbers are tried first; two policies may not share a priority.
    pub priority: u32,
    /// Which packets the policy applies to; `{}` matches every packet.
    #[serde(rename = "match")]
    pub matches: Match,
    /// What to do with a matching packet.
    pub action: Action,
}

/// Packet fields a policy matches on; absent fields match anything. Prefixes of one
/// family only match packets of that family, so `"src": "0.0.0.0/0"` means "any IPv4".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Input interface; must be an interface of configuration.json attached at ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Source address prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Prefix>,
    /// Destination address prefix (same family as `src` when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Prefix>,
    /// IP protocol (IPv4 protocol, IPv6 next header), by number or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Protocol>,
    /// Source port or range. Only packets that carry ports (TCP, UDP, SCTP; not later
    /// fragments) can match a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortRange>,
    /// Destination port or range; as for `sport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortRange>,
    /// DSCP (the upper six bits of the IPv4 TOS / IPv6 traffic class), 0-63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 63))]
    pub dscp: Option<u8>,
    /// Packet mark (fwmark): matches when `mark & mask == value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<MarkMatch>,
}

/// A packet mark match: `mark & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkMatch {
    /// The mark bits to compare; no bits outside `mask`.
    pub value: u32,
    /// The bits of the mark that are compared. Default 0xffffffff (all of them).
    #[serde(default = "all_bits")]
    pub mask: u32,
}

fn all_bits() -> u32 {
    u32::MAX
}

/// What a policy does with a packet it matches, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send the packet to a named next hop of configuration.json.
    Forward {
        /// The next hop's name.
        next_hop: String,
        /// Set the packet mark first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_mark: Option<u32>,
        /// Rewrite the DSCP (0-63) first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = 63))]
        set_dscp: Option<u8>,
    },
    /// Look the destination up in a named routing table of configuration.json and forward
    /// as that route says.
    LookupTable {
        /// The table's name.
        table: String,
        /// Set the packet mark first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_mark: Option<u32>,
        /// Rewrite the DSCP (0-63) first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = 63))]
        set_dscp: Option<u8>,
    },
    /// Hand the packet to the kernel stack (which routes it as usual).
    Pass {
        /// Set the packet mark first (so `ip rule fwmark` can act on it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_mark: Option<u32>,
        /// Rewrite the DSCP (0-63) first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = 63))]
        set_dscp: Option<u8>,
    },
    /// Drop the packet.
    Drop {},
}
