//! The rich event pktpath prints: one hook's sighting of one packet, with its journey, its
//! parsed headers, its namespace's name and, for drops, the named reason and location.
//! [`EventBuilder`] turns wire records into these; the JSON form is the fields of [`Event`],
//! versioned by [`SCHEMA_VERSION`].

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use pktpath_common::{
    kernel::IFNAMSIZ,
    route::{TapEvent, action_name, outcome_name},
    trace::{EVENT_DELIVERED, FIB_FAMILY_V6, FibEvent, Hook, TraceEvent},
};
use serde::{Deserialize, Serialize};

use super::{
    drops::DropReasons,
    fasthash::{self, FastMap},
    headers::{self, Headers},
    identity,
    journey::{self, Flow, Journeys},
    kallsyms::Kallsyms,
    name::Name,
    saved,
    wire::{self, Record},
};
use crate::sys::netns;

/// Version of the JSON event schema; bumped on any change of shape. 2: the `qdisc` and
/// `fib` objects, and the hooks that fill them. 3: the `tc` object (hook `tc:pktpath`).
/// 4: the `delivered` object (a `kfree_skb` of a packet a socket got a clone of has it
/// instead of `drop_reason` and `drop_location`), and the `rewrite` object (the headers
/// before a rewrite, on the event that first shows the new ones).
pub const SCHEMA_VERSION: u32 = 4;

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
    /// Kernel tracepoint name (`netif_receive_skb`, `net_dev_xmit`, `kfree_skb`, ...).
    #[serde(deserialize_with = "saved::hook")]
    pub hook: &'static str,
    /// Kernel address of the sk_buff (hex in JSON).
    #[serde(serialize_with = "hex_str", deserialize_with = "saved::hex")]
    #[schemars(with = "String", regex(pattern = r"^0x[0-9a-f]+$"))]
    pub skb: u64,
    pub ifname: Name,
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    /// The namespace's name under /run/netns, if it has one.
    pub netns_name: Option<Name>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `arp`, `ipv4`, `ipv6`, or the EtherType (`0x88cc`).
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
    /// `qdisc_enqueue` / `qdisc_dequeue` only: the queueing discipline.
    pub qdisc: Option<QdiscInfo>,
    /// `fib_table_lookup` / `fib6_table_lookup` only: the routing decision. These events
    /// describe the flow looked up, not a packet: `skb` is `0x0`, `len` 0, `ifname` and
    /// `ifindex` name the result's output device (or the flow's input one when none);
    /// `proto` is `-` when the flow names no protocol (the kernel's input route lookup
    /// fills it in only for policy rules that need it).
    pub fib: Option<FibInfo>,
    /// `tc:pktpath` only (the decision of `pktpath route`'s data path, followed with
    /// `--route-pin-dir`): the policy and what the program did. The packet fields repeat
    /// those of the packet's previous event.
    pub tc: Option<TcInfo>,
    /// `kfree_skb` only, of a packet that reached a socket: a clone of it was queued to an
    /// IP socket (`sk_data_ready`) before the kernel freed the original with the reason
    /// given here (a raw socket's copy of an ICMP echo reply, the original freed by
    /// `ping_rcv` as `NO_SOCKET`). Not a drop.
    pub delivered: Option<FreeReason>,
    /// On the first event of a packet with rewritten headers (NAT, a tunnel's encapsulation
    /// or decapsulation; the journey goes on): what they were before.
    pub rewrite: Option<Rewrite>,
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

/// Builds [`Event`]s from wire records, keeping the journeys and the name caches.
#[derive(Debug)]
pub struct EventBuilder {
    journeys: Journeys,
    reasons: DropReasons,
    kallsyms: Option<Kallsyms>,
    /// /proc/kallsyms being read on another thread (see [`Self::prefetch_kallsyms`]).
    kallsyms_loading: Option<std::thread::JoinHandle<Kallsyms>>,
    /// Drop locations already symbolized (a flood of drops comes from a few places).
    locations: FastMap<u64, String>,
    netns_names: FastMap<u32, Option<Name>>,
    /// Interface names by their bytes in the record, made once.
    ifnames: FastMap<[u8; IFNAMSIZ], Name>,
    /// Addresses as text, made once (forgotten when they grow many).
    addrs: FastMap<IpAddr, Name>,
    /// With [`Self::with_policies`]: each open skb's last event, for the decisions of the
    /// data path (which carry no headers) to repeat; policy ids by priority.
    tapping: Option<(FastMap<u64, Event>, std::collections::HashMap<u32, String>)>,
    /// Per CPU: the skb `netif_receive_skb` saw last, for the input route lookup that
    /// follows it there (see [`Journeys::lookup`]).
    received: Vec<u64>,
}

impl EventBuilder {
    /// A builder naming drop reasons with `reasons`. Kernel symbols are read on the first
    /// drop (not at start-up).
    pub fn new(reasons: DropReasons) -> Self {
        Self {
            journeys: Journeys::new(),
            reasons,
            kallsyms: None,
            kallsyms_loading: None,
            locations: FastMap::default(),
            netns_names: FastMap::default(),
            ifnames: FastMap::default(),
            addrs: FastMap::default(),
            tapping: None,
            received: Vec::new(),
        }
    }

    /// Builds data-path decisions too ([`Record::Tc`]), naming policies from `ids`
    /// (priority to id).
    pub fn with_policies(mut self, ids: std::collections::HashMap<u32, String>) -> Self {
        self.tapping = Some((FastMap::default(), ids));
        self
    }

    /// Takes the kernel's symbols from `loading` (see [`prefetch_kallsyms`]) when the first
    /// drop needs them.
    pub fn with_kallsyms_loading(mut self, loading: Option<KallsymsLoading>) -> Self {
        if self.kallsyms.is_none() {
            self.kallsyms_loading = loading.map(|l| l.0);
        }
        self
    }

    /// Uses this symbol table instead of reading /proc/kallsyms.
    pub fn with_kallsyms(mut self, kallsyms: Kallsyms) -> Self {
        self.kallsyms = Some(kallsyms);
        self
    }

    /// Uses these namespace names (inode to name) instead of looking under /run/netns.
    pub fn with_netns_names(mut self, names: impl IntoIterator<Item = (u32, String)>) -> Self {
        self.netns_names
            .extend(names.into_iter().map(|(i, n)| (i, Some(n.into()))));
        self
    }

    /// The rich event for one ring buffer record of either kind.
    pub fn build_record(&mut self, rec: &Record) -> Event {
        match rec {
            Record::Skb(ev) => self.build(ev),
            Record::Fib(ev) => self.build_fib(ev),
            Record::Tc(ev) => self.build_tc(ev),
        }
    }

    /// The rich event for one decision of the data path: a `tc:pktpath` hop of the
    /// packet's journey.
    pub fn build_tc(&mut self, ev: &TapEvent) -> Event {
        let step = self.journeys.hop_of(ev.skb, ev.ts_ns);
        let d = &ev.decision;
        let (last, ids) = match &mut self.tapping {
            Some((last, ids)) => (last.get(&ev.skb).cloned(), Some(&*ids)),
            None => (None, None),
        };
        let matched = d.matched != 0;
        let tc = TcInfo {
            policy: ids
                .filter(|_| matched)
                .and_then(|ids| ids.get(&d.priority).cloned()),
            priority: matched.then_some(d.priority),
            action: action_name(d.matched, d.action),
            outcome: outcome_name(d.outcome),
            egress_ifindex: (d.egress_ifindex != 0).then_some(d.egress_ifindex),
        };
        let base = last.unwrap_or_else(|| Event {
            schema_version: SCHEMA_VERSION,
            ifindex: ev.ifindex,
            proto: "-".into(),
            ..Event::default()
        });
        // The decision is made on the interface the program runs on; the previous event
        // names it when it was seen there (the usual receive hook just before).
        let ifname = if base.ifindex == ev.ifindex {
            base.ifname.clone()
        } else {
            format!("ifindex {}", ev.ifindex).into()
        };
        Event {
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: TC_HOOK,
            skb: ev.skb,
            ifname,
            ifindex: ev.ifindex,
            len: ev.len,
            drop_reason: None,
            drop_location: None,
            qdisc: None,
            fib: None,
            tc: Some(tc),
            delivered: None,
            rewrite: None,
            ..base
        }
    }

    /// Whether a decision about the skb at `skb` belongs in the trace: the trace reported
    /// that packet (it passed the trace's filters) and it is still on its way.
    pub fn follows(&self, skb: u64) -> bool {
        self.tapping
            .as_ref()
            .is_some_and(|(last, _)| last.contains_key(&skb))
    }

    /// Remembers `ev` as its skb's last event, for the data path's decisions.
    fn note_for_tap(&mut self, ev: &Event, skb: u64, ends: bool) {
        let Some((last, _)) = &mut self.tapping else {
            return;
        };
        if ends {
            last.remove(&skb);
            return;
        }
        if last.len() >= 65_536 {
            last.clear();
        }
        last.insert(skb, ev.clone());
    }

    /// The rich event for one packet record.
    pub fn build(&mut self, ev: &TraceEvent) -> Event {
        let hook = Hook::from_u16(ev.hook);
        let bytes = wire::header(ev);
        let h: Headers = headers::parse(ev.protocol, bytes);
        let sig = if bytes.is_empty() {
            journey::UNKNOWN_SIG
        } else {
            signature(ev.protocol, &h)
        };
        let ident = identity::identity(ev.protocol, bytes);
        if hook == Some(Hook::NetifReceiveSkb) {
            let cpu = usize::from(ev.cpu);
            if cpu >= self.received.len() {
                self.received.resize(cpu + 1, 0);
            }
            self.received[cpu] = ev.skb_addr;
        }
        let step = self.journeys.packet(
            ev.skb_addr,
            ev.ts_ns,
            (sig, ident),
            flow_of(&h).as_ref(),
            hook.is_some_and(Hook::ends_skb),
            hook.is_some_and(|h| !h.is_receive()),
        );
        let (drop_reason, drop_location, delivered) = if hook == Some(Hook::KfreeSkb) {
            let reason = self.reasons.name(ev.drop_reason);
            let location = self.symbolize(ev.location);
            if ev.flags & EVENT_DELIVERED != 0 {
                (None, None, Some(FreeReason { reason, location }))
            } else {
                (Some(reason), Some(location), None)
            }
        } else {
            (None, None, None)
        };
        let rewrite = self.journeys.take_rewrite().map(|before| {
            let before = before.unwrap_or(Flow {
                ports: None,
                src: None,
                dst: None,
                proto: None,
            });
            Rewrite {
                proto: before.proto,
                src: before.src.map(|a| self.addr(a)),
                dst: before.dst.map(|a| self.addr(a)),
                sport: before.ports.map(|p| p.0),
                dport: before.ports.map(|p| p.1),
            }
        });
        let netns_name = self.netns_name(ev.netns);
        let built = Event {
            schema_version: SCHEMA_VERSION,
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: hook.map_or("unknown", Hook::name),
            skb: ev.skb_addr,
            ifname: self.ifname(&ev.ifname),
            ifindex: ev.ifindex,
            netns: ev.netns,
            netns_name,
            proto: h.proto,
            src: h.src.map(|a| self.addr(a)),
            dst: h.dst.map(|a| self.addr(a)),
            sport: h.sport,
            dport: h.dport,
            icmp_type: h.icmp_type,
            icmp_code: h.icmp_code,
            icmp_id: h.icmp_id,
            icmp_seq: h.icmp_seq,
            tcp_flags: h.tcp_flags,
            arp_op: h.arp_op,
            len: ev.len,
            mark: ev.mark,
            cpu: ev.cpu,
            drop_reason,
            drop_location,
            qdisc: matches!(hook, Some(Hook::QdiscEnqueue | Hook::QdiscDequeue)).then(|| {
                QdiscInfo {
                    kind: wire::name(&ev.qdisc_kind),
                    handle: qdisc_handle(ev.qdisc_handle),
                }
            }),
            fib: None,
            tc: None,
            delivered,
            rewrite,
        };
        if self.tapping.is_some() {
            self.note_for_tap(&built, ev.skb_addr, hook.is_some_and(Hook::ends_skb));
        }
        built
    }

    /// The rich event for one routing lookup record.
    pub fn build_fib(&mut self, ev: &FibEvent) -> Event {
        let hook = Hook::from_u16(ev.hook);
        let v6 = ev.family == FIB_FAMILY_V6;
        let addr = |b: &[u8; 16]| -> IpAddr {
            if v6 {
                Ipv6Addr::from(*b).into()
            } else {
                Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
            }
        };
        let (src, dst) = (addr(&ev.src), addr(&ev.dst));
        let proto = match (ev.proto, v6) {
            (0, _) => "-",
            (1, false) => "icmp",
            (58, true) => "icmp6",
            (6, _) => "tcp",
            (17, _) => "udp",
            (_, false) => "ipv4",
            (_, true) => "ipv6",
        };
        let ports = matches!(proto, "tcp" | "udp").then(|| {
            (
                u16::from_be_bytes([ev.uli[2], ev.uli[3]]),
                u16::from_be_bytes([ev.uli[0], ev.uli[1]]),
            )
        });
        // ICMPv6 type 0 is reserved: an input lookup that left the type unset.
        let icmp = matches!(proto, "icmp" | "icmp6")
            .then_some((ev.uli[0], ev.uli[1]))
            .filter(|&(t, _)| !(v6 && t == 0));
        let flow = Flow {
            src: Some(src),
            dst: Some(dst),
            proto: (ev.proto != 0).then(|| proto.into()),
            ports,
        };
        // A local sender's lookup names the loopback device (ifindex 1 in every namespace)
        // or no device as its input.
        let output = ev.iif <= 1;
        let received = self.received.get(usize::from(ev.cpu)).copied();
        let step = self.journeys.lookup(&flow, ev.ts_ns, output, received);
        let out = self.ifname(&ev.out_ifname);
        let gateway = match ev.gw_family {
            2 => Some(self.addr(Ipv4Addr::new(ev.gw[0], ev.gw[1], ev.gw[2], ev.gw[3]).into())),
            10 => Some(self.addr(Ipv6Addr::from(ev.gw).into())),
            _ => None,
        };
        let route_type = v6.then(|| route_type_name(ev.route_type));
        let result = if v6 {
            match ev.route_type {
                1 | 2 => "ok".into(),
                t => route_type_name(t),
            }
        } else if ev.err == 0 {
            "ok".into()
        } else {
            errno_name(ev.err)
        };
        let netns_name = self.netns_name(ev.netns);
        Event {
            schema_version: SCHEMA_VERSION,
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: hook.map_or("unknown", Hook::name),
            skb: 0,
            ifname: out.clone(),
            ifindex: if ev.out_ifindex != 0 {
                ev.out_ifindex
            } else {
                ev.iif
            },
            netns: ev.netns,
            netns_name,
            proto: proto.into(),
            src: Some(self.addr(src)),
            dst: Some(self.addr(dst)),
            sport: ports.map(|p| p.0),
            dport: ports.map(|p| p.1),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            icmp_id: None,
            icmp_seq: None,
            tcp_flags: None,
            arp_op: None,
            len: 0,
            mark: ev.mark,
            cpu: ev.cpu,
            drop_reason: None,
            drop_location: None,
            qdisc: None,
            fib: Some(FibInfo {
                table: ev.table,
                result,
                err: (!v6).then_some(ev.err),
                route_type,
                oif_name: (!out.is_empty()).then_some(out),
                oif_index: (ev.out_ifindex != 0).then_some(ev.out_ifindex),
                gateway,
                flow_iif: ev.iif,
                flow_oif: ev.oif,
            }),
            tc: None,
            delivered: None,
            rewrite: None,
        }
    }

    /// Whether `ev` is a routing lookup of a flow that names no protocol and joined no
    /// packet's journey. The in-kernel filter expression cannot judge such a flow (it lets
    /// it through), so a filtered trace leaves these out.
    pub fn is_unjudged_lookup(ev: &Event) -> bool {
        ev.fib.is_some() && ev.proto == "-" && ev.hop == 1
    }

    fn netns_name(&mut self, inode: u32) -> Option<Name> {
        self.netns_names
            .entry(inode)
            .or_insert_with(|| netns::name_of_inode(u64::from(inode)).map(Name::from))
            .clone()
    }

    /// `a` as text.
    fn addr(&mut self, a: IpAddr) -> Name {
        if self.addrs.len() >= 65_536 {
            self.addrs.clear();
        }
        self.addrs
            .entry(a)
            .or_insert_with(|| ip_text(a).into())
            .clone()
    }

    /// The interface name `bytes` (NUL-padded) hold.
    fn ifname(&mut self, bytes: &[u8; IFNAMSIZ]) -> Name {
        self.ifnames
            .entry(*bytes)
            .or_insert_with(|| wire::name(bytes).into())
            .clone()
    }

    fn symbolize(&mut self, addr: u64) -> String {
        if let Some(s) = self.locations.get(&addr) {
            return s.clone();
        }
        let loading = self.kallsyms_loading.take();
        let syms = self.kallsyms.get_or_insert_with(|| {
            loading
                .and_then(|h| h.join().ok())
                .unwrap_or_else(read_kallsyms)
        });
        let s = syms.symbolize(addr).unwrap_or_else(|| format!("{addr:#x}"));
        if self.locations.len() < MAX_LOCATIONS {
            self.locations.insert(addr, s.clone());
        }
        s
    }
}

/// Symbolized drop locations kept.
const MAX_LOCATIONS: usize = 4096;

/// /proc/kallsyms being read on another thread.
#[derive(Debug)]
pub struct KallsymsLoading(std::thread::JoinHandle<Kallsyms>);

/// Starts reading /proc/kallsyms on another thread, to hand to
/// [`EventBuilder::with_kallsyms_loading`]. Started before the tracer loads, it is ready
/// when the first drop arrives: read then, it stalled the reader for 0.1-0.25 s here, long
/// enough for a burst to fill the ring buffer. None when no thread could be started (the
/// symbols are then read at the first drop).
pub fn prefetch_kallsyms() -> Option<KallsymsLoading> {
    std::thread::Builder::new()
        .name("kallsyms".into())
        .spawn(read_kallsyms)
        .ok()
        .map(KallsymsLoading)
}

/// The kernel's symbols, or none (locations shown as addresses) when they cannot be read.
fn read_kallsyms() -> Kallsyms {
    Kallsyms::from_proc().unwrap_or_else(|e| {
        log::warn!("drop locations will be shown as addresses: {e}");
        Kallsyms::default()
    })
}

/// The flow a packet carries, as a routing lookup would see it (IP packets only).
fn flow_of(h: &Headers) -> Option<Flow> {
    Some(Flow {
        src: Some(h.src?),
        dst: Some(h.dst?),
        proto: Some(h.proto.clone()),
        ports: h
            .sport
            .zip(h.dport)
            .filter(|_| matches!(h.proto.as_ref(), "tcp" | "udp")),
    })
    .filter(|_| h.proto != "arp")
}

/// A qdisc handle as tc prints it: `major:` (or `major:minor`), in hex.
fn qdisc_handle(h: u32) -> String {
    let (major, minor) = (h >> 16, h & 0xffff);
    if minor == 0 {
        format!("{major:x}:")
    } else {
        format!("{major:x}:{minor:x}")
    }
}

/// The name of a route type (`RTN_*`, lower case without the prefix).
fn route_type_name(t: u8) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        _ => return format!("type{t}").into(),
    })
}

/// The name of a negative errno a routing lookup returns.
fn errno_name(err: i32) -> Cow<'static, str> {
    Cow::Borrowed(match -err {
        libc::EAGAIN => "EAGAIN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ESRCH => "ESRCH",
        libc::ENOBUFS => "ENOBUFS",
        _ => return format!("errno {err}").into(),
    })
}

/// What stays the same along one packet's journey (unless NAT rewrites it): EtherType,
/// protocol, addresses, ports, ICMP type, id and sequence.
/// Packed into a few words before hashing: hashing the fields one by one (each option's
/// tag, each address byte run) took about a tenth of the reader's time per event.
fn signature(ethertype: u16, h: &Headers) -> u64 {
    let sig = signature_hash(ethertype, h);
    if sig == journey::UNKNOWN_SIG { 1 } else { sig }
}

fn signature_hash(ethertype: u16, h: &Headers) -> u64 {
    let addr = |a: Option<IpAddr>| match a {
        None => 0,
        Some(IpAddr::V4(a)) => 1u128 << 127 | u128::from(a.to_bits()),
        Some(IpAddr::V6(a)) => a.to_bits(),
    };
    let opt16 = |v: Option<u16>| v.map_or(0, |v| 1 << 16 | u64::from(v));
    let mut proto = [0u8; 8];
    let name = h.proto.as_bytes();
    let n = name.len().min(8);
    proto[..n].copy_from_slice(&name[..n]);
    let (src, dst) = (addr(h.src), addr(h.dst));
    fasthash::hash_one([
        u64::from(ethertype) | (name.len() as u64) << 16,
        u64::from_le_bytes(proto),
        src as u64,
        (src >> 64) as u64,
        dst as u64,
        (dst >> 64) as u64,
        opt16(h.sport) | opt16(h.dport) << 17 | opt16(h.arp_op) << 34,
        opt16(h.icmp_id)
            | opt16(h.icmp_seq) << 17
            | h.icmp_type.map_or(0, |t| 1 << 8 | u64::from(t)) << 34,
    ])
}

/// JSON pieces appended to a buffer, as `serde_json` writes them.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    // Inlined: with a literal argument the copy is a few moves, not a call to memcpy.
    #[inline(always)]
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn num(&mut self, mut n: u64) {
        // Digits written straight into the buffer, last first: no copy through a call.
        let digits = n.checked_ilog10().unwrap_or(0) as usize + 1;
        let start = self.0.len();
        self.0.resize(start + digits, b'0');
        let out = &mut self.0[start..];
        for d in out.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }

    #[inline]
    fn opt_num(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.num(n),
            None => self.raw("null"),
        }
    }

    /// `"0x..."`.
    fn hex(&mut self, x: u64) {
        self.0.push(b'"');
        push_hex(self.0, x);
        self.0.push(b'"');
    }

    fn str(&mut self, s: &str) {
        if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            self.serde(s);
        } else {
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
        }
    }

    #[inline]
    /// A string of pktpath's own making that needs no escaping (hook and protocol names,
    /// lookup results): copied between quotes without a scan.
    fn own_str(&mut self, s: &str) {
        debug_assert!(!s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        self.0.push(b'"');
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(b'"');
    }

    /// A [`Name`]'s JSON string: no scan for characters to escape in the usual case.
    fn name(&mut self, n: &Name) {
        if n.is_json_plain() {
            self.0.push(b'"');
            self.0.extend_from_slice(n.as_bytes());
            self.0.push(b'"');
        } else {
            self.serde(n.as_str());
        }
    }

    #[inline]
    fn opt_name(&mut self, n: Option<&Name>) {
        match n {
            Some(n) => self.name(n),
            None => self.raw("null"),
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn serde(&mut self, v: &(impl Serialize + ?Sized)) {
        // Writing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.0, v);
    }
}

/// `{:#x}` into `out`, without the formatting machinery (every event carries its skb
/// address).
fn push_hex(out: &mut Vec<u8>, x: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = (16 - x.leading_zeros() as usize / 4).max(1);
    out.extend_from_slice(b"0x");
    for i in (0..n).rev() {
        out.push(DIGITS[(x >> (i * 4)) as usize & 0xf]);
    }
}

/// `{:#x}` as a string (serde's form of [`Event::skb`]).
fn hex_str<S: serde::Serializer>(x: &u64, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = Vec::with_capacity(18);
    push_hex(&mut buf, *x);
    // Hex digits and "0x" are ASCII.
    s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
}

/// An address and port as text shows them: `10.0.0.1:53`, `[fd00::1]:53`, the address
/// alone without a port, `?` without an address.
pub fn endpoint(addr: &Option<Name>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    }
}

/// An address as `Display` writes it; IPv4 without the formatting machinery (the common
/// case, two per event).
fn ip_text(a: IpAddr) -> String {
    let IpAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, b) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if b >= 100 {
            s.push(char::from(b'0' + b / 100));
        }
        if b >= 10 {
            s.push(char::from(b'0' + b / 10 % 10));
        }
        s.push(char::from(b'0' + b % 10));
    }
    s
}

impl FibInfo {
    /// Its JSON object, as serde writes it (routing lookups are a fair share of a busy
    /// trace's events).
    fn write_json(&self, j: &mut Json<'_>) {
        j.raw("{\"table\":");
        j.num(self.table.into());
        j.raw(",\"result\":");
        j.own_str(&self.result);
        j.raw(",\"err\":");
        match self.err {
            Some(e) if e < 0 => {
                j.raw("-");
                j.num(e.unsigned_abs().into());
            }
            e => j.opt_num(e.map(|e| e as u64)),
        }
        j.raw(",\"route_type\":");
        j.opt_str(self.route_type.as_deref());
        j.raw(",\"oif_name\":");
        j.opt_name(self.oif_name.as_ref());
        j.raw(",\"oif_index\":");
        j.opt_num(self.oif_index.map(u64::from));
        j.raw(",\"gateway\":");
        j.opt_name(self.gateway.as_ref());
        j.raw(",\"flow_iif\":");
        j.num(self.flow_iif.into());
        j.raw(",\"flow_oif\":");
        j.num(self.flow_oif.into());
        j.raw("}");
    }
}

impl Event {
    /// Appends the event's JSON object to `out`: byte for byte what `serde_json` writes for
    /// it (the `--output json` line), about three times faster (no per-field dispatch; strings
    /// that need no escaping are copied as they are).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let j = &mut Json(out);
        j.raw("{\"schema_version\":");
        j.num(self.schema_version.into());
        j.raw(",\"ts_ns\":");
        j.num(self.ts_ns);
        j.raw(",\"packet_id\":");
        j.num(self.packet_id);
        j.raw(",\"hop\":");
        j.num(self.hop.into());
        j.raw(",\"delta_ns\":");
        j.opt_num(self.delta_ns);
        j.raw(",\"hook\":");
        j.own_str(self.hook);
        j.raw(",\"skb\":");
        j.hex(self.skb);
        j.raw(",\"ifname\":");
        j.name(&self.ifname);
        j.raw(",\"ifindex\":");
        j.num(self.ifindex.into());
        j.raw(",\"netns\":");
        j.num(self.netns.into());
        j.raw(",\"netns_name\":");
        j.opt_name(self.netns_name.as_ref());
        j.raw(",\"proto\":");
        j.own_str(&self.proto);
        j.raw(",\"src\":");
        j.opt_name(self.src.as_ref());
        j.raw(",\"dst\":");
        j.opt_name(self.dst.as_ref());
        j.raw(",\"sport\":");
        j.opt_num(self.sport.map(u64::from));
        j.raw(",\"dport\":");
        j.opt_num(self.dport.map(u64::from));
        j.raw(",\"icmp_type\":");
        j.opt_num(self.icmp_type.map(u64::from));
        j.raw(",\"icmp_code\":");
        j.opt_num(self.icmp_code.map(u64::from));
        j.raw(",\"icmp_id\":");
        j.opt_num(self.icmp_id.map(u64::from));
        j.raw(",\"icmp_seq\":");
        j.opt_num(self.icmp_seq.map(u64::from));
        j.raw(",\"tcp_flags\":");
        j.opt_str(self.tcp_flags.as_deref());
        j.raw(",\"arp_op\":");
        j.opt_num(self.arp_op.map(u64::from));
        j.raw(",\"len\":");
        j.num(self.len.into());
        j.raw(",\"mark\":");
        j.num(self.mark.into());
        j.raw(",\"cpu\":");
        j.num(self.cpu.into());
        j.raw(",\"drop_reason\":");
        j.opt_str(self.drop_reason.as_deref());
        j.raw(",\"drop_location\":");
        j.opt_str(self.drop_location.as_deref());
        // Rare (two hooks, or only with a data path followed): serde writes these.
        j.raw(",\"qdisc\":");
        j.serde(&self.qdisc);
        j.raw(",\"fib\":");
        match &self.fib {
            Some(f) => f.write_json(j),
            None => j.raw("null"),
        }
        j.raw(",\"tc\":");
        j.serde(&self.tc);
        j.raw(",\"delivered\":");
        j.serde(&self.delivered);
        j.raw(",\"rewrite\":");
        j.serde(&self.rewrite);
        j.raw("}");
    }

    /// The event as one line of text, tracepkt style: time (seconds since `t0_ns`), netns
    /// (inode and name), interface, hook, packet, length, journey and time since its
    /// previous hop, and the drop reason and location.
    pub fn to_text(&self, t0_ns: u64) -> String {
        let t = self.ts_ns.saturating_sub(t0_ns) as f64 / 1e9;
        let ns = match &self.netns_name {
            Some(n) => format!("{} ({n})", self.netns),
            None => self.netns.to_string(),
        };
        let ep = endpoint;
        let mut line = format!(
            "{t:12.6} {ns:<32} {:<15} {:<22} {:<6} {} > {}",
            self.ifname,
            self.hook,
            self.proto,
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport),
        );
        let detail = headers::describe(&Headers {
            proto: self.proto.clone(),
            icmp_type: self.icmp_type,
            icmp_id: self.icmp_id,
            icmp_seq: self.icmp_seq,
            tcp_flags: self.tcp_flags.clone(),
            arp_op: self.arp_op,
            ..Headers::default()
        });
        if !detail.is_empty() {
            line.push(' ');
            line.push_str(&detail);
        }
        if let Some(f) = &self.fib {
            line.push_str(&format!(" table {} {}", table_name(f.table), f.result));
            if let Some(dev) = &f.oif_name {
                line.push_str(&format!(" dev {dev}"));
            }
            if let Some(gw) = &f.gateway {
                line.push_str(&format!(" via {gw}"));
            }
            line.push_str(&format!(" #{}", self.packet_id));
        } else {
            line.push_str(&format!(" len {} #{}", self.len, self.packet_id));
        }
        if let Some(d) = self.delta_ns {
            line.push_str(&format!(" +{}", human_ns(d)));
        }
        if let Some(q) = &self.qdisc {
            line.push_str(&format!(" qdisc {} {}", q.kind, q.handle));
        }
        if let Some(d) = &self.tc {
            match (&d.policy, d.priority) {
                (Some(id), Some(p)) => line.push_str(&format!(" policy {id} (priority {p})")),
                (None, Some(p)) => line.push_str(&format!(" policy priority {p}")),
                _ => line.push_str(" no policy"),
            }
            line.push_str(&format!(" {} -> {}", d.action, d.outcome));
            if let Some(e) = d.egress_ifindex {
                line.push_str(&format!(" egress ifindex {e}"));
            }
        }
        if let Some(r) = &self.drop_reason {
            line.push_str(&format!(" DROP {r}"));
            if let Some(l) = &self.drop_location {
                line.push_str(&format!(" at {l}"));
            }
        }
        if let Some(r) = &self.rewrite {
            line.push_str(&format!(
                " rewrite: {} > {} becomes {} > {}",
                endpoint(&r.src, r.sport),
                endpoint(&r.dst, r.dport),
                endpoint(&self.src, self.sport),
                endpoint(&self.dst, self.dport),
            ));
        }
        if let Some(d) = &self.delivered {
            line.push_str(&format!(
                " DELIVERED to a socket (freed as {} at {})",
                d.reason, d.location
            ));
        }
        line
    }
}

/// A routing table by name when it has a well-known one (`main`, `local`, `default`),
/// else its id.
pub fn table_name(id: u32) -> String {
    match id {
        253 => "default".to_owned(),
        254 => "main".to_owned(),
        255 => "local".to_owned(),
        _ => id.to_string(),
    }
}

/// A duration in ns, short: `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_fast_path_decision_is_a_hop_of_the_packets_journey() {
        use pktpath_common::route::{ACTION_FORWARD, Decision, OUTCOME_FORWARDED, TapEvent};
        let decision = |ts_ns| TapEvent {
            ts_ns,
            skb: 0xffff_8880_0433_2e00,
            ifindex: 2,
            len: 47,
            decision: Decision {
                matched: 1,
                action: ACTION_FORWARD,
                outcome: OUTCOME_FORWARDED,
                priority: 10,
                egress_ifindex: 3,
                ..Decision::default()
            },
            _pad: 0,
        };
        // Without the policies (no data path followed) nothing follows the packet.
        let mut plain = builder();
        plain.build(&udp_record(Hook::NetifReceiveSkb, 1_000));
        assert!(!plain.follows(0xffff_8880_0433_2e00));

        let ids = [(10, "udp-9-up1".to_owned())].into_iter().collect();
        let mut b = builder().with_policies(ids);
        let rx = b.build(&udp_record(Hook::NetifReceiveSkb, 1_000));
        assert!(b.follows(0xffff_8880_0433_2e00));
        let tc = b.build_record(&Record::Tc(decision(1_400)));
        assert_eq!(
            (tc.packet_id, tc.hop, tc.delta_ns, tc.hook),
            (rx.packet_id, 2, Some(400), TC_HOOK)
        );
        assert_eq!(
            (tc.ifname.as_str(), tc.netns, tc.len),
            ("veth-b", rx.netns, 47)
        );
        assert_eq!((tc.src.as_deref(), tc.dport), (Some("10.99.0.1"), Some(9)));
        let info = tc.tc.as_ref().unwrap();
        assert_eq!(info.policy.as_deref(), Some("udp-9-up1"));
        assert_eq!((info.action, info.outcome), ("forward", "forwarded"));
        assert!(
            tc.to_text(0)
                .contains("policy udp-9-up1 (priority 10) forward -> forwarded egress ifindex 3"),
            "{}",
            tc.to_text(0)
        );
        let json = serde_json::to_value(&tc).unwrap();
        assert_eq!(json["tc"]["egress_ifindex"], 3);
        // The packet leaves afterwards: the next hop of the same journey.
        let tx = b.build(&udp_record(Hook::NetDevXmit, 2_000));
        assert_eq!((tx.packet_id, tx.hop), (rx.packet_id, 3));
        // Freed: its decisions no longer belong to the trace.
        b.build(&udp_record(Hook::ConsumeSkb, 3_000));
        assert!(!b.follows(0xffff_8880_0433_2e00));
    }

    #[test]
    fn write_json_is_what_serde_writes() {
        let mut b = builder();
        let mut events: Vec<Event> = [Hook::NetifReceiveSkb, Hook::NetDevXmit, Hook::KfreeSkb]
            .into_iter()
            .enumerate()
            .map(|(i, h)| b.build(&udp_record(h, 1_000 + i as u64 * 500)))
            .collect();
        let mut odd = events[0].clone();
        odd.ifname = "we\"ird\\\n\u{1}é".into();
        odd.netns_name = Some("tab\there".into());
        odd.tcp_flags = Some("SA".to_owned());
        odd.qdisc = Some(QdiscInfo {
            kind: "fq_codel".to_owned(),
            handle: "0:".to_owned(),
        });
        events.push(odd);
        // The objects of a decision of the fast path, a delivery and a rewrite.
        let mut more = events[1].clone();
        more.tc = Some(TcInfo {
            policy: Some("web".to_owned()),
            priority: Some(10),
            action: "forward",
            outcome: "forwarded",
            egress_ifindex: Some(7),
        });
        more.rewrite = Some(Rewrite {
            proto: Some("icmp".into()),
            src: Some("10.0.1.2".into()),
            dst: Some("10.0.1.100".into()),
            sport: None,
            dport: None,
        });
        events.push(more);
        let mut delivered = events[2].clone();
        (delivered.drop_reason, delivered.drop_location) = (None, None);
        delivered.delivered = Some(FreeReason {
            reason: "NO_SOCKET".to_owned(),
            location: "ping_rcv+0xb3".to_owned(),
        });
        events.push(delivered);
        // Routing lookups: a route via a gateway, a table without a match (a negative
        // errno), an IPv6 route type.
        let mut via = fib_record(Hook::FibTableLookup, 3_000);
        via.gw_family = 2;
        via.gw[..4].copy_from_slice(&[10, 99, 0, 254]);
        let mut miss = fib_record(Hook::FibTableLookup, 3_100);
        (miss.err, miss.out_ifindex, miss.out_ifname) = (-(libc::EAGAIN), 0, [0; 16]);
        let mut v6 = fib_record(Hook::Fib6TableLookup, 3_200);
        (v6.family, v6.route_type) = (pktpath_common::trace::FIB_FAMILY_V6, 7);
        for r in [via, miss, v6] {
            events.push(b.build_fib(&r));
        }
        // Each is also an event as the schema describes it.
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("event.json", crate::trace::schema::event_schema())
            .unwrap();
        let schema = compiler.compile("event.json", &mut schemas).unwrap();
        for ev in &events {
            let mut mine = Vec::new();
            ev.write_json(&mut mine);
            let theirs = serde_json::to_vec(ev).unwrap();
            let text = String::from_utf8(mine).unwrap();
            assert_eq!(text, String::from_utf8(theirs).unwrap());
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Err(e) = schemas.validate(&value, schema) {
                panic!("{e:#}\n{text}");
            }
            // And reads back as the same event (`pktpath trace --read`).
            let back = Event::deserialize(value.clone()).unwrap();
            assert_eq!(&back, ev, "{text}");
        }
        // And the schema is strict: a key it does not know, or a missing one, is refused.
        let mut extra = serde_json::to_value(&events[0]).unwrap();
        extra["surprise"] = 1.into();
        assert!(schemas.validate(&extra, schema).is_err());
        let mut short = serde_json::to_value(&events[0]).unwrap();
        short.as_object_mut().unwrap().remove("hop");
        assert!(schemas.validate(&short, schema).is_err());
    }

    #[test]
    fn fast_formatting_matches_display() {
        for x in [0u64, 1, 0xf, 0x10, 0xffff_8880_0433_2e00, u64::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, x);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{x:#x}"));
            assert_eq!(
                serde_json::to_value(Event {
                    skb: x,
                    ..Event::default()
                })
                .unwrap()["skb"],
                format!("{x:#x}")
            );
        }
        for a in [
            "0.0.0.0",
            "10.99.0.1",
            "192.168.100.255",
            "255.255.255.255",
            "::1",
            "fe80::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
    use pktpath_common::trace::HEADER_BYTES;

    use super::*;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");

    fn builder() -> EventBuilder {
        let btf = crate::btf::Btf::from_file(format!("{TESTDATA}/vmlinux-6.18.btf")).unwrap();
        let kallsyms = Kallsyms::from_file(format!("{TESTDATA}/kallsyms-6.18.txt")).unwrap();
        EventBuilder::new(DropReasons::from_btf(&btf).unwrap())
            .with_kallsyms(kallsyms)
            .with_netns_names([(4_026_532_246, "blue".to_owned())])
    }

    /// A UDP datagram 10.99.0.1:40000 > 10.99.0.2:9 (closed port) as the hooks record it.
    fn udp_record(hook: Hook, ts_ns: u64) -> TraceEvent {
        let mut header = [0u8; HEADER_BYTES];
        header[..28].copy_from_slice(&[
            0x45, 0, 0, 33, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2, 0x9c,
            0x40, 0, 9, 0, 13, 0, 0,
        ]);
        let mut ifname = [0u8; 16];
        ifname[..6].copy_from_slice(b"veth-b");
        let drop = hook == Hook::KfreeSkb;
        TraceEvent {
            ts_ns,
            skb_addr: 0xffff_8880_0433_2e00,
            location: if drop { 0xffffffff820a64d0 + 0x2f } else { 0 },
            netns: 4_026_532_246,
            ifindex: 2,
            len: 33,
            mark: 0,
            drop_reason: if drop { 3 } else { 0 },
            qdisc_handle: 0,
            flags: 0,
            _pad: 0,
            hook: hook as u16,
            protocol: 0x0800,
            header_len: 33,
            cpu: 1,
            ifname,
            header,
            qdisc_kind: [0; 16],
        }
    }

    /// The bytes a record travels as (what the ring buffer hands over).
    fn as_bytes(ev: &TraceEvent) -> Vec<u8> {
        // SAFETY: viewing a repr(C) plain-data value as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const TraceEvent).cast::<u8>(),
                size_of::<TraceEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_drop_is_decoded_with_reason_location_and_journey() {
        let mut b = builder();
        let rx = wire::decode(&as_bytes(&udp_record(Hook::NetifReceiveSkb, 1_000))).unwrap();
        let first = b.build(&rx);
        let drop = b.build(&wire::decode(&as_bytes(&udp_record(Hook::KfreeSkb, 4_500))).unwrap());
        assert_eq!(first.hook, "netif_receive_skb");
        assert_eq!(
            (first.packet_id, first.delta_ns, first.drop_reason),
            (1, None, None)
        );
        assert_eq!(drop.packet_id, 1);
        assert_eq!(drop.delta_ns, Some(3_500));
        assert_eq!(drop.drop_reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(
            drop.drop_location.as_deref(),
            Some("udp_queue_rcv_one_skb+0x2f")
        );
        assert_eq!(drop.proto, "udp");
        assert_eq!(
            (drop.src.as_deref(), drop.sport),
            (Some("10.99.0.1"), Some(40000))
        );
        assert_eq!(
            (drop.dst.as_deref(), drop.dport),
            (Some("10.99.0.2"), Some(9))
        );
        assert_eq!(drop.netns_name.as_deref(), Some("blue"));
        assert_eq!(drop.ifname, "veth-b");

        let json: serde_json::Value = serde_json::to_value(&drop).unwrap();
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["drop_reason"], "NO_SOCKET");
        assert_eq!(json["delta_ns"], 3_500);
        assert_eq!(json["skb"], "0xffff888004332e00");
        assert!(json["icmp_type"].is_null());

        let text = drop.to_text(1_000);
        assert!(text.starts_with("    0.000003 4026532246 (blue)"), "{text}");
        assert!(
            text.contains("10.99.0.1:40000 > 10.99.0.2:9 len 33 #1 +3.5us DROP NO_SOCKET at udp_queue_rcv_one_skb+0x2f"),
            "{text}"
        );
    }

    #[test]
    fn a_freed_skb_ends_its_journey_and_unknown_values_stay_visible() {
        let mut b = builder();
        b.build(&udp_record(Hook::NetDevQueue, 10));
        let consumed = b.build(&udp_record(Hook::ConsumeSkb, 20));
        assert_eq!((consumed.packet_id, consumed.drop_reason), (1, None));
        let again = b.build(&udp_record(Hook::NetDevQueue, 30));
        assert_eq!((again.packet_id, again.delta_ns), (2, None));

        let mut odd = udp_record(Hook::KfreeSkb, 40);
        odd.drop_reason = 0xdead;
        odd.location = 0x10;
        odd.hook = 99;
        odd.protocol = 0x88cc;
        let ev = b.build(&odd);
        assert_eq!(ev.hook, "unknown");
        assert_eq!(ev.proto, "0x88cc");
        assert_eq!(ev.drop_reason, None, "only kfree_skb events carry a reason");
        let mut unnamed = udp_record(Hook::KfreeSkb, 50);
        unnamed.drop_reason = 0xdead;
        unnamed.location = 0x10;
        let ev = b.build(&unnamed);
        assert_eq!(ev.drop_reason.as_deref(), Some("REASON_57005"));
        assert_eq!(ev.drop_location.as_deref(), Some("0x10"));
    }

    fn fib_record(hook: Hook, ts_ns: u64) -> FibEvent {
        let mut out_ifname = [0u8; 16];
        out_ifname[..7].copy_from_slice(b"veth-r2");
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 99, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 99, 0, 2]);
        FibEvent {
            ts_ns,
            netns: 4_026_532_246,
            table: 254,
            err: 0,
            iif: 2,
            oif: 0,
            mark: 0,
            out_ifindex: 3,
            hook: hook as u16,
            cpu: 0,
            proto: 17,
            family: pktpath_common::trace::FIB_FAMILY_V4,
            gw_family: 0,
            route_type: 0,
            uli: [0, 9, 0x9c, 0x40],
            src,
            dst,
            gw: [0; 16],
            out_ifname,
        }
    }

    #[test]
    fn a_routing_lookup_joins_the_journey_of_its_packet() {
        let mut b = builder();
        let rx = b.build(&udp_record(Hook::NetifReceiveSkb, 1_000));
        let fib = b.build_record(&Record::Fib(fib_record(Hook::FibTableLookup, 1_800)));
        let tx = b.build(&udp_record(Hook::NetDevQueue, 2_000));
        assert_eq!(
            (fib.packet_id, fib.hop, fib.delta_ns),
            (rx.packet_id, 2, Some(800))
        );
        assert_eq!((tx.hop, tx.delta_ns), (3, Some(200)));
        assert_eq!(fib.hook, "fib_table_lookup");
        assert_eq!((fib.sport, fib.dport), (Some(40000), Some(9)));
        assert_eq!(fib.ifname, "veth-r2");
        let info = fib.fib.as_ref().unwrap();
        assert_eq!((info.table, info.result.as_ref()), (254, "ok"));
        assert_eq!(info.oif_name.as_deref(), Some("veth-r2"));
        assert_eq!(info.err, Some(0));
        let text = fib.to_text(1_000);
        assert!(
            text.contains("10.99.0.1:40000 > 10.99.0.2:9 table main ok dev veth-r2 #1 +800ns"),
            "{text}"
        );
        let json = serde_json::to_value(&fib).unwrap();
        assert_eq!(json["fib"]["table"], 254);
        assert!(json["qdisc"].is_null());

        // No route: an IPv6 lookup answered by the unreachable entry, with a gateway-less
        // result; and an IPv4 table without a match.
        let mut miss = fib_record(Hook::FibTableLookup, 5_000);
        miss.err = -libc::EAGAIN;
        miss.out_ifname = [0; 16];
        miss.out_ifindex = 0;
        miss.table = 255;
        let miss = b.build_fib(&miss);
        assert_eq!(miss.fib.as_ref().unwrap().result, "EAGAIN");
        assert!(
            miss.to_text(0).contains("table local EAGAIN #"),
            "{}",
            miss.to_text(0)
        );
        let mut v6 = fib_record(Hook::Fib6TableLookup, 6_000);
        v6.family = pktpath_common::trace::FIB_FAMILY_V6;
        v6.route_type = 7;
        v6.gw_family = 10;
        v6.gw = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        let v6 = b.build_fib(&v6);
        let info = v6.fib.unwrap();
        assert_eq!(info.result, "unreachable");
        assert_eq!(
            (info.err, info.route_type.as_deref()),
            (None, Some("unreachable"))
        );
        assert_eq!(info.gateway.as_deref(), Some("fe80::1"));
    }

    #[test]
    fn an_input_lookup_without_protocol_joins_an_icmp_packet() {
        let mut b = builder();
        let mut ping = udp_record(Hook::NetifReceiveSkb, 1_000);
        ping.header[9] = 1; // ICMP: echo request id 0x9c40 seq 9 where the ports were
        ping.header[20..24].copy_from_slice(&[8, 0, 0, 0]);
        let rx = b.build(&ping);
        assert_eq!(rx.proto, "icmp");
        let mut input = fib_record(Hook::FibTableLookup, 1_300);
        input.proto = 0;
        let fib = b.build_fib(&input);
        assert_eq!((fib.packet_id, fib.hop), (rx.packet_id, 2));
        assert_eq!(fib.proto, "-");
        assert!(!EventBuilder::is_unjudged_lookup(&fib));
        let mut stray = fib_record(Hook::FibTableLookup, 1_400);
        stray.proto = 0;
        stray.dst[3] = 77;
        assert!(EventBuilder::is_unjudged_lookup(&b.build_fib(&stray)));
    }

    #[test]
    fn qdisc_events_name_kind_and_handle() {
        let mut b = builder();
        let mut rec = udp_record(Hook::QdiscEnqueue, 10);
        rec.qdisc_handle = 0x8001_0000;
        rec.qdisc_kind[..8].copy_from_slice(b"fq_codel");
        let ev = b.build(&rec);
        let q = ev.qdisc.as_ref().unwrap();
        assert_eq!((q.kind.as_str(), q.handle.as_str()), ("fq_codel", "8001:"));
        assert!(
            ev.to_text(0).contains("qdisc fq_codel 8001:"),
            "{}",
            ev.to_text(0)
        );
        assert!(b.build(&udp_record(Hook::NetDevXmit, 20)).qdisc.is_none());
        assert_eq!(qdisc_handle(0x0001_0002), "1:2");
        assert_eq!(table_name(100), "100");
    }

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
    }
}
