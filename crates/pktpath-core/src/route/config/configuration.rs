//! The static configuration, `configuration.json`: which interfaces the data path attaches
//! to, the named next hops policies forward to, and the routing tables policies may look up.
//! It changes rarely (it decides what `route attach` sets up).

use std::{
    borrow::Cow,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de};

use super::values::MacAddr;

/// The version of the configuration file format this pktpath reads and writes.
pub const CONFIGURATION_VERSION: u32 = 1;

/// `configuration.json`: interfaces, next hops and routing tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pktpath route configuration.json")]
pub struct Configuration {
    /// Format version; this pktpath reads version 1.
    pub version: u32,
    /// Interfaces the data path attaches to. Policies match input interfaces from this list
    /// and next hops send out of interfaces from it.
    pub interfaces: Vec<Interface>,
    /// Named next hops that policies forward to.
    #[serde(default)]
    pub next_hops: Vec<NextHop>,
    /// Kernel routing tables that policies may look up, by name.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// How packets of a `forward` policy that the fast path hands to the kernel stack keep
    /// to the policy's next hop. Default: on, with the values below.
    #[serde(default)]
    pub slow_path: SlowPath,
}

/// Packets a `forward` or `lookup_table` policy matched but the fast path does not forward
/// itself (TTL about to expire, too big for the egress MTU, IPv4 options, an unresolvable
/// next hop) go to the kernel stack with a mark naming the policy's next hop or table;
/// `route attach` installs, per next hop, a routing table with a default route to it and
/// an `ip rule fwmark MARK/MASK lookup TABLE`, and per table of `tables` an `ip rule
/// fwmark MARK/MASK lookup` that table, so the stack forwards them (or answers them) as the
/// policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowPath {
    /// Install the tables and rules and mark such packets (default true). false: the stack
    /// routes them by its own tables, as if no policy had matched.
    #[serde(default = "yes")]
    pub follow_policy: bool,
    /// The packet mark bits reserved for naming next hops and tables: one run of contiguous
    /// bits, wide enough for the number of next hops plus the number of tables plus one.
    /// Default 4278190080 (0xff000000).
    /// Policies may not `set_mark` bits inside it; the other bits stay the packet's.
    #[serde(default = "default_mark_mask")]
    pub mark_mask: u32,
    /// The routing table of the first next hop; next hop N (from 0, in file order) gets
    /// `table_base + N`. None of them may be 253-255 (default, main, local) or a table of
    /// `tables`, and each must hold no route when attaching. Default 7070.
    #[serde(default = "default_table_base")]
    pub table_base: u32,
    /// The `ip rule` priority of the rules (1-32765: after `local` at 0, before `main` at
    /// 32766). Default 1000.
    #[serde(default = "default_rule_priority")]
    pub rule_priority: u32,
}

/// Default [`SlowPath::mark_mask`]: the mark's top byte.
pub const DEFAULT_SLOW_MARK_MASK: u32 = 0xff00_0000;
/// Default [`SlowPath::table_base`].
pub const DEFAULT_SLOW_TABLE_BASE: u32 = 7070;
/// Default [`SlowPath::rule_priority`].
pub const DEFAULT_SLOW_RULE_PRIORITY: u32 = 1000;

fn default_mark_mask() -> u32 {
    DEFAULT_SLOW_MARK_MASK
}

fn default_table_base() -> u32 {
    DEFAULT_SLOW_TABLE_BASE
}

fn default_rule_priority() -> u32 {
    DEFAULT_SLOW_RULE_PRIORITY
}

impl Default for SlowPath {
    fn default() -> Self {
        Self {
            follow_policy: true,
            mark_mask: DEFAULT_SLOW_MARK_MASK,
            table_base: DEFAULT_SLOW_TABLE_BASE,
            rule_priority: DEFAULT_SLOW_RULE_PRIORITY,
        }
    }
}

impl SlowPath {
    /// The mark that names next hop `index` (0-based): `index + 1` in the mask's bits.
    pub fn mark(&self, index: usize) -> u32 {
        ((index as u32 + 1) << self.mark_mask.trailing_zeros()) & self.mark_mask
    }

    /// The mark that names table `index` (0-based, in `tables` order) of a configuration
    /// with `next_hops` next hops: the values after the next hops'.
    pub fn table_mark(&self, next_hops: usize, index: usize) -> u32 {
        self.mark(next_hops + index)
    }

    /// How many next hops and tables the mask can name (its values but 0).
    pub fn capacity(&self) -> u64 {
        (1u64 << self.mark_mask.count_ones()) - 1
    }

    /// The routing table of next hop `index`.
    pub fn table(&self, index: usize) -> u32 {
        self.table_base.wrapping_add(index as u32)
    }
}

/// An interface the data path attaches to, and in which directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The kernel's interface name (as in `ip link`), at most 15 bytes. Whether the kernel
    /// has it is checked when attaching.
    pub name: String,
    /// Attach the classifier to received packets (where policies apply). Default true.
    #[serde(default = "yes")]
    pub ingress: bool,
    /// Attach to transmitted packets too (counters). Default false.
    #[serde(default)]
    pub egress: bool,
    /// The hook that sees received packets first: `tc` (default), or `xdp`, the XDP
    /// program in front of TC, which stays attached and decides what XDP passes on
    /// (docs/route.md#xdp). Needs `ingress`. `route attach --hook xdp` sets it for every
    /// interface attached at ingress.
    #[serde(default, skip_serializing_if = "Hook::is_tc")]
    pub hook: Hook,
}

/// Which hook runs the fast path on an interface's received packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    #[default]
    Tc,
    Xdp,
}

impl Hook {
    fn is_tc(&self) -> bool {
        *self == Self::Tc
    }
}

fn yes() -> bool {
    true
}

/// A named next hop: an egress interface and how to address the neighbour on it.
///
/// At least one of `gateway4`, `gateway6` and `mac` is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    /// The name policies use to refer to this next hop.
    pub name: String,
    /// The interface to send out of; must be one of `interfaces`.
    pub interface: String,
    /// IPv4 gateway on that interface, for IPv4 packets.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "gateway"
    )]
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 gateway on that interface, for IPv6 packets.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "gateway"
    )]
    pub gateway6: Option<Ipv6Addr>,
    /// Fixed destination MAC address; when set, no neighbour lookup is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// A gateway address of one family, with an error that says which family is wanted (the
/// standard library's says only "invalid IPv4 address syntax").
fn gateway<'de, D, A>(d: D) -> Result<Option<A>, D::Error>
where
    D: Deserializer<'de>,
    A: FromStr + Family,
{
    let Some(text) = Option::<Cow<'de, str>>::deserialize(d)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "invalid {} gateway {text:?}; write an address such as {}",
            A::NAME,
            A::EXAMPLE
        ))
    })
}

/// What [`gateway`] says about an address type.
trait Family {
    const NAME: &'static str;
    const EXAMPLE: &'static str;
}

impl Family for Ipv4Addr {
    const NAME: &'static str = "ipv4";
    const EXAMPLE: &'static str = "192.0.2.1 (ipv6 gateways go in gateway6)";
}

impl Family for Ipv6Addr {
    const NAME: &'static str = "ipv6";
    const EXAMPLE: &'static str = "fe80::1 or 2001:db8::1 (ipv4 gateways go in gateway4)";
}

/// A kernel routing table that policies may look up by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The name policies use to refer to this table.
    pub name: String,
    /// The kernel's table number (as in `ip route show table N`); 1 to 4294967295, main is 254.
    pub id: u32,
}
