//! Building [`Event`]s from wire records: headers parsed, the packet's journey and the time
//! since its previous hop, drop reasons and locations named, interface, namespace and
//! address names made once and kept.

use std::net::IpAddr;

use pktpath_common::{
    kernel::IFNAMSIZ,
    route::{DECISION_VIA_STACK, Decision, TapEvent, XdpTapEvent, action_name, outcome_name},
    trace::{EVENT_DELIVERED, Hook, TraceEvent},
};

use super::{
    Event, FreeReason, QdiscInfo, Rewrite, SCHEMA_VERSION, TC_HOOK, TcInfo, XDP_HOOK, XdpInfo,
};
use crate::{
    sys::netns,
    trace::{
        drops::DropReasons,
        fasthash::{self, FastMap},
        headers::{self, Headers},
        identity,
        journey::{self, Flow, Journeys, Step},
        kallsyms::Kallsyms,
        name::Name,
        wire::{self, Record},
    },
};

mod fib;

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
    /// With [`Self::with_policies`]: the last event of skbs freed lately, for the XDP
    /// decisions that follow them (a veth's XDP frees the sender's skb it copies).
    freed: FastMap<u64, Event>,
    /// XDP decisions about packets the trace had not seen, by packet (signature,
    /// identity), waiting for an skb to carry the packet on (see
    /// [`Journeys::take_awaited`]).
    unseen_xdp: Vec<((u64, u64), XdpTapEvent)>,
    /// The XDP decision the last packet event's journey begins with, to write before it
    /// ([`Self::take_preceding`]).
    preceding: Option<Event>,
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
            freed: FastMap::default(),
            unseen_xdp: Vec::new(),
            preceding: None,
            received: Vec::new(),
        }
    }

    /// Builds data-path decisions too ([`Record::Tc`]), naming policies from `ids`
    /// (priority to id).
    pub fn with_policies(mut self, ids: std::collections::HashMap<u32, String>) -> Self {
        self.tapping = Some((FastMap::default(), ids));
        self.journeys.follow_packets();
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
            Record::Xdp(ev) => self.build_xdp(ev).unwrap_or_else(|| Event {
                schema_version: SCHEMA_VERSION,
                ts_ns: ev.tap.ts_ns,
                hook: XDP_HOOK,
                ifindex: ev.tap.ifindex,
                proto: "-".into(),
                ..Event::default()
            }),
        }
    }

    /// The rich event for one decision of the data path's XDP program: an `xdp:pktpath`
    /// hop of the journey of the packet its headers carry. None when the trace saw nothing
    /// of that packet lately (see [`Journeys::packet_hop`]): a packet it did not report
    /// (filtered out), or one whose first sighting was this decision.
    pub fn build_xdp(&mut self, ev: &XdpTapEvent) -> Option<Event> {
        let (last, _) = self.tapping.as_ref()?;
        let (h, packet) = xdp_packet(ev)?;
        let ts_ns = ev.tap.ts_ns;
        let Some((step, skb)) = self.journeys.packet_hop(ts_ns, packet) else {
            // Shown if an skb carries the packet on (and the trace reports it): kept as it
            // came, built then.
            self.unseen_xdp
                .retain(|(_, e)| ts_ns.saturating_sub(e.tap.ts_ns) < journey::FLOW_MATCH_NS);
            if self.unseen_xdp.len() >= MAX_UNSEEN_XDP {
                self.unseen_xdp.remove(0);
            }
            self.unseen_xdp.push((packet, *ev));
            return None;
        };
        let base = last.get(&skb).or_else(|| self.freed.get(&skb)).cloned();
        Some(self.xdp_event(ev, h, step, base.as_ref()))
    }

    /// The `xdp:pktpath` event of decision `ev` with headers `h`, at `step` of its journey,
    /// after `base` (the packet's previous or next event: its namespace, mark and, on the
    /// same interface, the interface's name).
    fn xdp_event(
        &mut self,
        ev: &XdpTapEvent,
        h: Headers,
        step: Step,
        base: Option<&Event>,
    ) -> Event {
        let t = &ev.tap;
        let d = &t.decision;
        let ids = self.tapping.as_ref().map(|(_, ids)| ids);
        let tc = decision_info(d, ids);
        let xdp = XdpInfo {
            policy: tc.policy,
            priority: tc.priority,
            action: tc.action,
            outcome: tc.outcome,
            egress_ifindex: tc.egress_ifindex,
        };
        let ifname = match base {
            Some(b) if b.ifindex == t.ifindex => b.ifname.clone(),
            _ => format!("ifindex {}", t.ifindex).into(),
        };
        Event {
            ts_ns: t.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: XDP_HOOK,
            skb: 0,
            ifname,
            ifindex: t.ifindex,
            netns: base.map_or(0, |b| b.netns),
            netns_name: base.and_then(|b| b.netns_name.clone()),
            len: t.len,
            mark: base.map_or(0, |b| b.mark),
            cpu: base.map_or(0, |b| b.cpu),
            xdp: Some(Box::new(xdp)),
            ..self.header_event(h)
        }
    }

    /// An event of this schema with the fields of headers `h` filled, the rest default.
    fn header_event(&mut self, h: Headers) -> Event {
        Event {
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
            schema_version: SCHEMA_VERSION,
            ..Event::default()
        }
    }

    /// The XDP decision the journey of the last packet event built begins with, when that
    /// decision was the packet's first sighting: to write before that event.
    pub fn take_preceding(&mut self) -> Option<Event> {
        self.preceding.take()
    }

    /// Builds the XDP decision the journey of `next` (just built) begins with, if any, as
    /// [`Self::take_preceding`] gives it: the journey's first hop, in `next`'s namespace.
    fn precede(&mut self, next: &Event) {
        let Some(packet) = self.journeys.take_awaited() else {
            return;
        };
        let Some(i) = self.unseen_xdp.iter().rposition(|(p, _)| *p == packet) else {
            return;
        };
        let (_, ev) = self.unseen_xdp.remove(i);
        let Some((h, _)) = xdp_packet(&ev) else {
            return;
        };
        let step = Step {
            packet_id: next.packet_id,
            first_seen_ns: ev.tap.ts_ns,
            delta_ns: None,
            hop: 1,
            clone: false,
        };
        self.preceding = Some(self.xdp_event(&ev, h, step, Some(next)));
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
        let tc = decision_info(d, ids);
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
            tc: Some(Box::new(tc)),
            xdp: None,
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
            if self.freed.len() >= 4096 {
                self.freed.clear();
            }
            self.freed.insert(skb, ev.clone());
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
            (ev.skb_addr, ev.buffer),
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
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: hook.map_or("unknown", Hook::name),
            skb: ev.skb_addr,
            clone: step.clone,
            ifname: self.ifname(&ev.ifname),
            ifindex: ev.ifindex,
            netns: ev.netns,
            netns_name,
            len: ev.len,
            mark: ev.mark,
            cpu: ev.cpu,
            drop_reason,
            drop_location,
            qdisc: matches!(hook, Some(Hook::QdiscEnqueue | Hook::QdiscDequeue)).then(|| {
                Box::new(QdiscInfo {
                    kind: wire::name(&ev.qdisc_kind),
                    handle: qdisc_handle(ev.qdisc_handle),
                })
            }),
            fib: None,
            tc: None,
            xdp: None,
            delivered: delivered.map(Box::new),
            rewrite: rewrite.map(Box::new),
            ..self.header_event(h)
        };
        if self.tapping.is_some() {
            self.precede(&built);
            self.note_for_tap(&built, ev.skb_addr, hook.is_some_and(Hook::ends_skb));
        }
        built
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

/// XDP decisions about packets not seen yet kept (older ones are dropped as they expire).
const MAX_UNSEEN_XDP: usize = 1024;

/// The headers an XDP decision carries, and its packet's (signature, identity); None when
/// it carries none.
fn xdp_packet(ev: &XdpTapEvent) -> Option<(Headers, (u64, u64))> {
    let n = usize::from(ev.header_len).min(ev.header.len());
    let bytes = &ev.header[..n];
    if bytes.is_empty() {
        return None;
    }
    let h = headers::parse(ev.protocol, bytes);
    let packet = (
        signature(ev.protocol, &h),
        identity::identity(ev.protocol, bytes),
    );
    Some((h, packet))
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

/// A data path decision as events show it, `ids` naming the policies by priority.
fn decision_info(d: &Decision, ids: Option<&std::collections::HashMap<u32, String>>) -> TcInfo {
    let matched = d.matched != 0;
    TcInfo {
        policy: ids
            .filter(|_| matched)
            .and_then(|ids| ids.get(&d.priority).cloned()),
        priority: matched.then_some(d.priority),
        action: action_name(d.matched, d.action),
        outcome: outcome_name(d.outcome),
        egress_ifindex: (d.egress_ifindex != 0).then_some(d.egress_ifindex),
        via_stack: d.flags & DECISION_VIA_STACK != 0,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{
        event::{
            fixtures::{builder, packet_record, udp_record},
            table_name,
        },
        headers::{ETH_P_IP, ETH_P_IPV6},
    };

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
            hook: pktpath_common::route::TAP_HOOK_TC,
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
        assert_eq!(json["tc"]["via_stack"], false);
        // A packet handed to the stack with its policy's slow-path mark says so.
        let mut slow = decision(1_450);
        slow.decision.outcome = pktpath_common::route::OUTCOME_PASSED;
        slow.decision.egress_ifindex = 0;
        slow.decision.flags = pktpath_common::route::DECISION_VIA_STACK;
        let via = b.build_record(&Record::Tc(slow));
        assert!(via.tc.as_ref().unwrap().via_stack);
        assert!(
            via.to_text(0).contains(
                "policy udp-9-up1 (priority 10) forward -> passed via stack following the policy"
            ),
            "{}",
            via.to_text(0)
        );
        assert_eq!(serde_json::to_value(&via).unwrap()["tc"]["via_stack"], true);
        // The packet leaves afterwards: the next hop of the same journey.
        let tx = b.build(&udp_record(Hook::NetDevXmit, 2_000));
        assert_eq!(
            (tx.packet_id, tx.hop),
            (rx.packet_id, 4),
            "after two decisions"
        );
        // Freed: its decisions no longer belong to the trace.
        b.build(&udp_record(Hook::ConsumeSkb, 3_000));
        assert!(!b.follows(0xffff_8880_0433_2e00));
    }

    /// A decision of the XDP program about [`udp_record`]'s datagram (its 33 bytes).
    fn xdp_decision(ts_ns: u64, outcome: u8) -> XdpTapEvent {
        use pktpath_common::route::{
            ACTION_DROP, Decision, TAP_HOOK_XDP, XDP_TAP_HEADER_BYTES, XdpTapEvent,
        };
        let udp = udp_record(Hook::NetifReceiveSkb, 0);
        let mut header = [0u8; XDP_TAP_HEADER_BYTES];
        header.copy_from_slice(&udp.header[..XDP_TAP_HEADER_BYTES]);
        XdpTapEvent {
            tap: TapEvent {
                ts_ns,
                skb: 0,
                ifindex: 2,
                len: 47,
                decision: Decision {
                    matched: 1,
                    action: ACTION_DROP,
                    outcome,
                    priority: 11,
                    ..Decision::default()
                },
                hook: TAP_HOOK_XDP,
            },
            protocol: 0x0800,
            header_len: 33,
            _pad: 0,
            header,
        }
    }

    #[test]
    fn an_xdp_decision_joins_the_journey_of_the_packet_its_headers_carry() {
        use pktpath_common::route::{OUTCOME_DROPPED, OUTCOME_PASSED};
        let ids = [(11, "drop-9".to_owned())].into_iter().collect();
        // Without the policies (no data path followed) XDP's decisions are not built.
        let mut plain = builder();
        plain.build(&udp_record(Hook::ConsumeSkb, 1_000));
        assert!(
            plain
                .build_xdp(&xdp_decision(1_200, OUTCOME_DROPPED))
                .is_none()
        );

        // A veth's XDP: the sender's skb copied and freed, the decision, the copy.
        let mut b = builder().with_policies(ids);
        let copied = b.build(&udp_record(Hook::ConsumeSkb, 1_000));
        let xdp = b
            .build_xdp(&xdp_decision(1_200, OUTCOME_DROPPED))
            .expect("the freed skb's packet");
        assert_eq!(
            (xdp.packet_id, xdp.hop, xdp.delta_ns, xdp.hook, xdp.skb),
            (copied.packet_id, 2, Some(200), XDP_HOOK, 0)
        );
        assert_eq!(
            (xdp.ifname.as_str(), xdp.netns_name.as_deref(), xdp.len),
            ("veth-b", Some("blue"), 47)
        );
        assert_eq!(
            (xdp.src.as_deref(), xdp.dport),
            (Some("10.99.0.1"), Some(9))
        );
        let info = xdp.xdp.as_ref().unwrap();
        assert_eq!(
            (info.policy.as_deref(), info.action, info.outcome),
            (Some("drop-9"), "drop", "dropped")
        );
        assert!(
            xdp.to_text(0).contains("xdp:pktpath")
                && xdp
                    .to_text(0)
                    .contains("policy drop-9 (priority 11) drop -> dropped"),
            "{}",
            xdp.to_text(0)
        );
        // The skb made for the frame (another address) continues the journey.
        let mut made = udp_record(Hook::KfreeSkb, 1_300);
        made.skb_addr = 0xffff_8880_0433_4000;
        let freed = b.build(&made);
        assert_eq!((freed.packet_id, freed.hop), (copied.packet_id, 3));

        // Generic XDP: the skb is received, then decided; TC decides what XDP passes.
        let rx = b.build(&udp_record(Hook::NetifReceiveSkb, 10_000_000_000));
        assert_ne!(rx.packet_id, copied.packet_id);
        let passed = b
            .build_xdp(&xdp_decision(10_000_000_500, OUTCOME_PASSED))
            .expect("the received skb's packet");
        assert_eq!((passed.packet_id, passed.hop), (rx.packet_id, 2));
        assert!(
            passed.to_text(0).contains("drop -> passed to tc"),
            "{}",
            passed.to_text(0)
        );
        let json = serde_json::to_value(&passed).unwrap();
        assert_eq!(json["xdp"]["outcome"], "passed", "{json}");
        assert!(json["tc"].is_null(), "{json}");
        let saved = <Event as serde::Deserialize>::deserialize(json).unwrap();
        assert_eq!(saved.hook, XDP_HOOK);

        // A packet the trace did not see lately (a NIC's native XDP: the decision is its
        // first sighting): not shown, unless an skb carries it on soon after, whose
        // journey then begins with the decision.
        assert!(
            b.build_xdp(&xdp_decision(20_000_000_000, OUTCOME_PASSED))
                .is_none()
        );
        assert!(b.take_preceding().is_none());
        let mut nic = udp_record(Hook::NetifReceiveSkb, 20_000_000_700);
        nic.skb_addr = 0xffff_8880_0433_6000;
        let rx = b.build(&nic);
        let first = b
            .take_preceding()
            .expect("the decision, before the skb's event");
        assert_eq!(
            (first.packet_id, first.hop, first.delta_ns, first.hook),
            (rx.packet_id, 1, None, XDP_HOOK)
        );
        assert_eq!((rx.hop, rx.delta_ns), (2, Some(700)));
        assert_eq!(
            (first.ifname.as_str(), first.netns, first.skb),
            ("veth-b", rx.netns, 0)
        );
        assert_eq!(first.xdp.as_ref().unwrap().outcome, "passed");
        // Nothing carries a dropped one on: never shown.
        assert!(
            b.build_xdp(&xdp_decision(30_000_000_000, OUTCOME_DROPPED))
                .is_none()
        );
        let mut later = udp_record(Hook::NetifReceiveSkb, 30_020_000_000);
        later.skb_addr = 0xffff_8880_0433_8000;
        assert_eq!(b.build(&later).hop, 1, "too late to follow the decision");
        assert!(b.take_preceding().is_none());
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

    /// An IPv4 echo request 10.79.0.1 > 10.79.0.2, sequence 3.
    const INNER: [u8; 28] = [
        0x45, 0, 0, 84, 0x10, 0x92, 0x40, 0, 64, 1, 0, 0, 10, 79, 0, 1, 10, 79, 0, 2, 8, 0, 0xab,
        0xcd, 0, 5, 0, 3,
    ];

    /// `payload` after an IPv4 header 172.16.0.1 > 172.16.0.2 of protocol `proto`.
    fn outer4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(20 + payload.len()).unwrap();
        let mut b = vec![0x45, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[
            0x56, 0x78, 0, 0, 64, proto, 0, 0, 172, 16, 0, 1, 172, 16, 0, 2,
        ]);
        b.extend_from_slice(payload);
        b
    }

    /// `payload` after an IPv6 header fd16::1 > fd16::2, next header `next`.
    fn outer6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0];
        b.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        for last in [1, 2] {
            b.extend_from_slice(&[0xfd, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]);
        }
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn a_tunnels_outer_packet_is_named_by_its_ip_protocol() {
        let gre = [&[0u8, 0, 0x08, 0][..], &INNER].concat();
        let mut vxlan = vec![0xc3, 0x50, 0x12, 0xb5, 0, 58, 0, 0, 8, 0, 0, 0, 0, 0, 42, 0];
        vxlan.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        vxlan.extend_from_slice(&INNER);
        // ip6tnl's and ip6gre's encapsulation limit (a Destination Options header).
        let limit = |next: u8, rest: &[u8]| [&[next, 0, 4, 1, 4, 1, 1, 0][..], rest].concat();
        let inner6 = outer6(58, &[128, 0, 0, 0, 0, 5, 0, 3]);
        let cases = [
            ("gre", ETH_P_IP, outer4(47, &gre)),
            ("ipip", ETH_P_IP, outer4(4, &INNER)),
            ("ipv6-in-ip", ETH_P_IP, outer4(41, &inner6)),
            ("gre", ETH_P_IPV6, outer6(60, &limit(47, &gre))),
            ("ipip", ETH_P_IPV6, outer6(60, &limit(4, &INNER))),
            ("ipv6-in-ip", ETH_P_IPV6, outer6(60, &limit(41, &inner6))),
            ("udp", ETH_P_IP, outer4(17, &vxlan)),
        ];
        for (i, (proto, ethertype, bytes)) in cases.into_iter().enumerate() {
            let (inner_type, inner_bytes, inner_proto) = if proto == "ipv6-in-ip" {
                (ETH_P_IPV6, inner6.as_slice(), "icmp6")
            } else {
                (ETH_P_IP, INNER.as_slice(), "icmp")
            };
            let mut b = builder();
            let ts = 1_000 * (i as u64 + 1);
            let ev = b.build(&packet_record(Hook::NetDevXmit, ts, ethertype, &bytes));
            assert_eq!(ev.proto, proto, "{}", ev.to_text(0));
            let text = ev.to_text(0);
            let outer = if ethertype == ETH_P_IP {
                "172.16.0.1 > 172.16.0.2"
            } else {
                "fd16::1 > fd16::2"
            };
            if proto != "udp" {
                assert!(text.contains(&format!(" {proto} ")), "{text}");
                assert!(text.contains(outer), "{text}");
            }
            let json = serde_json::to_value(&ev).unwrap();
            assert_eq!(json["proto"], proto, "{json}");
            // Read back from JSON, the event's protocol number is the header's (`ip proto
            // 47` matches it there as live).
            let saved = <Event as serde::Deserialize>::deserialize(json).unwrap();
            let number = bytes[if ethertype == ETH_P_IP { 9 } else { 40 }];
            assert_eq!(
                crate::trace::saved::key_of(&saved).ip_proto,
                number,
                "{proto}"
            );
            // Decapsulated in the same skb: one journey, the rewrite naming the outer
            // protocol.
            let inner = b.build(&packet_record(
                Hook::NetifRx,
                ts + 1,
                inner_type,
                inner_bytes,
            ));
            assert_eq!(
                (inner.proto.as_ref(), inner.packet_id),
                (inner_proto, ev.packet_id)
            );
            let r = inner.rewrite.as_ref().expect("decapsulation shown");
            assert_eq!(r.proto.as_deref(), Some(proto), "{}", inner.to_text(0));
        }
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
    fn fast_ip_text_matches_display() {
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
}
