//! The rich event pktpath prints: one hook's sighting of one packet, with its journey, its
//! parsed headers, its namespace's name and, for drops, the named reason and location.
//! This module holds the model; [`EventBuilder`] (`build.rs`, routing lookups in
//! `build/fib.rs`) turns wire records into events, `json.rs` and `text.rs` write them. The
//! JSON form is the fields of [`Event`], versioned by [`SCHEMA_VERSION`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{name::Name, saved};

mod build;
#[cfg(test)]
mod fixtures;
mod json;
mod text;

pub use build::{EventBuilder, KallsymsLoading, prefetch_kallsyms};
pub use text::{endpoint, human_ns, table_name};

/// Version of the JSON event schema; bumped on any change of shape. 2: the `qdisc` and
/// `fib` objects, and the hooks that fill them. 3: the `tc` object (hook `tc:pktpath`).
/// 4: the `delivered` object (a `kfree_skb` of a packet a socket got a clone of has it
/// instead of `drop_reason` and `drop_location`), and the `rewrite` object (the headers
/// before a rewrite, on the event that first shows the new ones). 5: `tc.via_stack`.
/// 6: the `xdp` object (hook `xdp:pktpath`). 7: `clone`.
pub const SCHEMA_VERSION: u32 = 7;

/// One event, as printed (`--output json` writes one per line). Absent values are `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Event {
    pub schema_version: u32,
    /// Kernel monotonic clock (`bpf_ktime_get_ns`) at the hook.
    pub ts_ns: u64,
    /// The packet's journey id (same skb, from first sighting until freed), from 1.
    pub packet_id: u64,
    /// Position of this event in the journey, from 1.
    pub hop: u32,
    /// Time since the previous event of the same packet; null on its first event.
    pub delta_ns: Option<u64>,
    /// Kernel tracepoint name (`netif_receive_skb`, `net_dev_xmit`, `kfree_skb`, ...), or
    /// `tc:pktpath` / `xdp:pktpath` for a decision of `pktpath route`'s data path.
    #[serde(deserialize_with = "saved::hook")]
    pub hook: &'static str,
    /// Kernel address of the sk_buff (hex in JSON); `0x0` on route lookups and XDP
    /// decisions, which have none.
    #[serde(serialize_with = "json::hex_str", deserialize_with = "saved::hex")]
    #[schemars(with = "String", regex(pattern = r"^0x[0-9a-f]+$"))]
    pub skb: u64,
    /// The skb is a clone of the packet the journey follows: it shares the packet's data
    /// (a packet capture's copy, a raw socket's, a mirror's), its hooks are hops of the
    /// packet's journey, and its free does not end it. False in events saved before schema
    /// version 7.
    #[serde(default)]
    pub clone: bool,
    pub ifname: Name,
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    /// The namespace's name under /run/netns, if it has one.
    pub netns_name: Option<Name>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, a tunnel's outer protocol (`gre`: IP protocol 47;
    /// `ipip`: 4, IPv4 in IPv4 or IPv6; `ipv6-in-ip`: 41, IPv6 in IPv4 or IPv6), `arp`,
    /// `ipv4`, `ipv6` (another IP protocol, or a later fragment), or the EtherType
    /// (`0x88cc`).
    pub proto: Cow<'static, str>,
    pub src: Option<Name>,
    pub dst: Option<Name>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub icmp_id: Option<u16>,
    pub icmp_seq: Option<u16>,
    pub tcp_flags: Option<String>,
    /// ARP operation: 1 request, 2 reply.
    pub arp_op: Option<u16>,
    /// `skb->len` at the hook (from the current data pointer: link-layer header included on
    /// transmit, not on receive).
    pub len: u32,
    pub mark: u32,
    pub cpu: u16,
    /// `kfree_skb` only: the kernel's drop reason, without the `SKB_DROP_REASON_` prefix.
    /// Null when the packet was delivered (see `delivered`).
    pub drop_reason: Option<String>,
    /// `kfree_skb` only: where the kernel dropped it (`symbol+0xoffset`, or the hex address).
    pub drop_location: Option<String>,
    // The objects below only some events carry are boxed: an event is moved from stage to
    // stage of the reader, and with them inline it took 760 bytes (BENCHMARKS.md, "The
    // tracer's lossless rate again").
    /// `qdisc_enqueue` / `qdisc_dequeue` only: the queueing discipline.
    pub qdisc: Option<Box<QdiscInfo>>,
    /// `fib_table_lookup` / `fib6_table_lookup` only: the routing decision. These events
    /// describe the flow looked up, not a packet: `skb` is `0x0`, `len` 0, `ifname` and
    /// `ifindex` name the result's output device (or the flow's input one when none);
    /// `proto` is `-` when the flow names no protocol (the kernel's input route lookup
    /// fills it in only for policy rules that need it).
    pub fib: Option<Box<FibInfo>>,
    /// `tc:pktpath` only (the decision of `pktpath route`'s data path, followed with
    /// `--route-pin-dir`): the policy and what the program did. The packet fields repeat
    /// those of the packet's previous event.
    pub tc: Option<Box<TcInfo>>,
    /// `xdp:pktpath` only (the decision of the data path's XDP program, `route attach
    /// --hook xdp`, followed with `--route-pin-dir`): the policy and what the program did.
    /// The program runs before there is an skb: `skb` is `0x0`, `len` the frame's length
    /// (Ethernet header included), the headers are the frame's as the program left them,
    /// the namespace and mark those of the packet's previous event. Absent in events saved
    /// before schema version 6.
    #[serde(default)]
    pub xdp: Option<Box<XdpInfo>>,
    /// `kfree_skb` only, of a packet that reached a socket: a clone of it was queued to an
    /// IP socket (`sk_data_ready`) before the kernel freed the original with the reason
    /// given here (a raw socket's copy of an ICMP echo reply, the original freed by
    /// `ping_rcv` as `NO_SOCKET`). Not a drop.
    pub delivered: Option<Box<FreeReason>>,
    /// On the first event of a packet with rewritten headers (NAT, a tunnel's encapsulation
    /// or decapsulation; the journey goes on): what they were before.
    pub rewrite: Option<Box<Rewrite>>,
}

/// A packet's headers before a rewrite (see [`Event::rewrite`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rewrite {
    pub proto: Option<Cow<'static, str>>,
    pub src: Option<Name>,
    pub dst: Option<Name>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// The kernel's reason and place for freeing a packet it had delivered (see
/// [`Event::delivered`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FreeReason {
    /// As `drop_reason` would name it.
    pub reason: String,
    /// As `drop_location` would name it.
    pub location: String,
}

/// A decision of the data path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TcInfo {
    /// The matching policy's id (null: none matched, or the applied set is unknown).
    pub policy: Option<String>,
    /// Its priority (null: none matched).
    pub priority: Option<u32>,
    /// `forward`, `lookup_table`, `drop` or `pass`.
    #[serde(deserialize_with = "saved::action")]
    pub action: &'static str,
    /// `forwarded`, `passed` (to the kernel stack), `dropped`, `invalid` or `error`.
    #[serde(deserialize_with = "saved::outcome")]
    pub outcome: &'static str,
    /// The interface it was redirected to (ifindex in the data path's namespace).
    pub egress_ifindex: Option<u32>,
    /// Passed to the kernel stack with the slow-path mark of the policy's next hop or
    /// table, so the stack forwards it as the policy says (`route get`'s `via_stack`).
    /// False in events saved before schema version 5.
    #[serde(default)]
    pub via_stack: bool,
}

/// A decision of the data path's XDP program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct XdpInfo {
    /// The matching policy's id (null: none matched, or the applied set is unknown).
    pub policy: Option<String>,
    /// Its priority (null: none matched).
    pub priority: Option<u32>,
    /// `forward`, `lookup_table`, `drop` or `pass`: the policy's action.
    #[serde(deserialize_with = "saved::action")]
    pub action: &'static str,
    /// `forwarded` (redirected to `egress_ifindex`), `dropped`, `passed` (on to the TC
    /// program, which decides next: no policy, or one XDP cannot finish) or `error`.
    #[serde(deserialize_with = "saved::outcome")]
    pub outcome: &'static str,
    /// The interface it was redirected to (ifindex in the data path's namespace).
    pub egress_ifindex: Option<u32>,
}

/// The qdisc a packet was enqueued to or dequeued from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct QdiscInfo {
    /// The qdisc's kind (`fq_codel`, `pfifo`, `htb`, ...).
    pub kind: String,
    /// Its handle as tc prints it (`1:`, `8001:`, `0:`).
    pub handle: String,
}

/// A routing table lookup and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FibInfo {
    /// The table's id (254 main, 255 local, 253 default, ...).
    pub table: u32,
    /// `ok` when the table gave a route; else why not: for IPv4 the lookup's errno name
    /// (`EAGAIN`: no match in this table, the next rule is tried; `ENETUNREACH`, `EACCES`
    /// for prohibit, `EINVAL` for blackhole), for IPv6 the route type (`unreachable`,
    /// `prohibit`, `blackhole`, `throw`).
    pub result: Cow<'static, str>,
    /// IPv4: the lookup's return value (0 or a negative errno); IPv6: null.
    pub err: Option<i32>,
    /// IPv6: the route type (`unicast`, `local`, `unreachable`, ...); IPv4: null.
    pub route_type: Option<Cow<'static, str>>,
    /// The output device of the route found; null when none.
    pub oif_name: Option<Name>,
    pub oif_index: Option<u32>,
    /// The next hop's gateway; null when directly connected or no route.
    pub gateway: Option<Name>,
    /// The flow's input interface (ifindex; 0 for locally generated traffic).
    pub flow_iif: u32,
    /// The output interface the caller asked for (ifindex; 0 = any).
    pub flow_oif: u32,
}

/// The hook name of the data path's decisions (`pktpath route`'s TC program).
pub const TC_HOOK: &str = "tc:pktpath";
/// The hook name of the decisions of the data path's XDP program.
pub const XDP_HOOK: &str = "xdp:pktpath";
