//! What a trace adds up to: latency between consecutive hops of the same packet per hop
//! pair (count, p50/p90/p99/max), drops by reason and location, deliveries the kernel freed
//! with a drop reason (by that reason and location), packets and bytes per
//! (network namespace, interface), and events lost. [`Summary`] is fed the events as they
//! are printed; [`Summary::report`] gives a serializable [`Report`]. `pktpath demo` also
//! asks it for drops by place ([`Summary::drops_by_place`]) and the latency of one span of
//! hops ([`Summary::with_span`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{event::Event, fasthash::FastMap, journey::IDLE_NS, latency::Latencies};

/// Freed packets whose last hop is kept (see `Summary::freed`).
const MAX_FREED: usize = 4096;
/// Packets whose last hop is kept before those idle for [`IDLE_NS`] are swept (see
/// `Summary::last`).
const MAX_LAST: usize = 65_536;

/// Accumulates events into a summary.
#[derive(Debug, Default)]
pub struct Summary {
    events: u64,
    /// Hop labels (`hook@interface`) by hook and interface name, interned: per event the
    /// summary hashes and compares small ids, and allocates nothing for a known hop.
    labels: FastMap<&'static str, FastMap<String, u32>>,
    label_text: Vec<String>,
    /// Interface names, interned.
    ifnames: FastMap<String, u32>,
    ifname_text: Vec<String>,
    /// Per packet id: the hop label and place (netns, interface name) of its last event,
    /// and its time. A packet whose end the trace does not see (TCP frees most of its skbs
    /// where no hook is; the freeing event was lost) would stay here for good: entries idle
    /// for [`IDLE_NS`], after which the journey tracker starts a new journey for the skb,
    /// are swept once there are [`MAX_LAST`] or twice as many as after the last sweep
    /// (`sweep_at`), so that a sweep that frees little does not come again at every event.
    last: FastMap<u64, ((u32, u32, u32), u64)>,
    sweep_at: usize,
    /// [`Self::last`] of packets whose skb was freed lately: a journey goes on past a free
    /// when a copy of the packet carries it (a veth's XDP copies the sender's skb).
    freed: FastMap<u64, (u32, u32, u32)>,
    /// (from label, to label) -> latencies.
    hops: FastMap<(u32, u32), Latencies>,
    /// (reason, location, netns, interface name) -> drops.
    drops: BTreeMap<(String, String, u32, u32), u64>,
    /// Deliveries (see [`Event::delivered`]) by the kernel's reason and location.
    deliveries: BTreeMap<(String, String), u64>,
    /// (netns, interface name) -> (netns name, packets, bytes).
    ifaces: FastMap<(u32, u32), (Option<String>, u64, u64)>,
    /// The span measured, if any ([`Summary::with_span`]).
    span: Option<Span>,
}

/// Latency from one hop label to a later one of the same packet, whatever hops lie between.
#[derive(Debug)]
struct Span {
    from: u32,
    to: u32,
    /// Per packet id: the time of its first `from` hop not yet followed by a `to` hop.
    started: FastMap<u64, u64>,
    latencies: Latencies,
}

impl Span {
    /// One event of packet `id` at hop label `here`; `ends` when it frees the packet.
    fn see(&mut self, id: u64, here: u32, ts_ns: u64, ends: bool) {
        if here == self.to
            && let Some(&t0) = self.started.get(&id)
            && ts_ns >= t0
        {
            self.started.remove(&id);
            self.latencies.add(ts_ns - t0);
        } else if here == self.from {
            self.started.entry(id).or_insert(ts_ns);
        }
        if ends {
            self.started.remove(&id);
        }
    }
}

/// Drops with one reason at one location, in one network namespace on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedDrop {
    pub reason: String,
    pub location: String,
    pub netns: u32,
    pub ifname: String,
    pub count: u64,
}

/// Latency between two consecutive hops of the same packets. `count` and `max_ns` are
/// exact; each percentile is the nearest-rank value, exact below 2,048 ns and otherwise at
/// most 1/1024 (under 0.1 %) below it, from histogram buckets in bounded memory (see
/// [`Latencies`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HopLatency {
    /// `hook@interface` of the earlier hop.
    pub from: String,
    /// `hook@interface` of the later hop.
    pub to: String,
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// Drops with one reason at one location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropCount {
    pub reason: String,
    pub location: String,
    pub count: u64,
}

/// Packets seen on one interface: each packet counted once per stay on the interface
/// (consecutive events of a packet on the same interface are one), with its length then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceCount {
    pub netns: u32,
    pub netns_name: Option<String>,
    pub ifname: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The summary of a trace, as printed by `--summary` (JSON: this object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: u64,
    /// Events lost because the ring buffer was full; null when it could not be read.
    pub lost: Option<u64>,
    /// Hop pairs, slowest p99 first.
    pub hops: Vec<HopLatency>,
    /// Most frequent first.
    pub drops: Vec<DropCount>,
    /// Packets that reached a socket although the kernel freed them with a drop reason
    /// (that reason and location), most frequent first; not in `drops`.
    pub deliveries: Vec<DropCount>,
    /// Most packets first.
    pub interfaces: Vec<InterfaceCount>,
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also measures, per packet, the time from its first `from` hop (hook, interface
    /// name) to the first `to` hop after it, whatever hops lie between: [`Self::span`].
    #[must_use]
    pub fn with_span(mut self, from: (&'static str, &str), to: (&'static str, &str)) -> Self {
        self.span = Some(Span {
            from: self.label(from.0, from.1),
            to: self.label(to.0, to.1),
            started: FastMap::default(),
            latencies: Latencies::default(),
        });
        self
    }

    /// The id of hop label `hook@ifname`.
    fn label(&mut self, hook: &'static str, ifname: &str) -> u32 {
        let by_if = self.labels.entry(hook).or_default();
        if let Some(&id) = by_if.get(ifname) {
            return id;
        }
        let id = self.label_text.len() as u32;
        self.label_text.push(format!("{hook}@{ifname}"));
        by_if.insert(ifname.to_owned(), id);
        id
    }

    /// The id of interface name `ifname`.
    fn ifname(&mut self, ifname: &str) -> u32 {
        if let Some(&id) = self.ifnames.get(ifname) {
            return id;
        }
        let id = self.ifname_text.len() as u32;
        self.ifname_text.push(ifname.to_owned());
        self.ifnames.insert(ifname.to_owned(), id);
        id
    }

    /// Adds one event (in the order they were read).
    pub fn add(&mut self, ev: &Event) {
        self.events += 1;
        let here = self.label(ev.hook, &ev.ifname);
        let ifname = self.ifname(&ev.ifname);
        let prev = self
            .last
            .get(&ev.packet_id)
            .map(|&(at, _)| at)
            .or_else(|| self.freed.get(&ev.packet_id).copied())
            .filter(|_| ev.hop > 1);
        // A clone's events are not the packet's path: they time no hop pair, and the packet's
        // next hop is timed from its own last (as the journey times it).
        if let (Some((from, _, _)), Some(d), false) = (prev, ev.delta_ns, ev.clone) {
            self.hops.entry((from, here)).or_default().add(d);
        }
        let moved = prev.is_none_or(|(_, ns, i)| ns != ev.netns || i != ifname);
        // A routing lookup is not a packet on its output device; a data path decision is
        // not one more packet on its interface.
        if moved && ev.fib.is_none() && ev.tc.is_none() && ev.xdp.is_none() {
            let entry = self
                .ifaces
                .entry((ev.netns, ifname))
                .or_insert_with(|| (ev.netns_name.as_ref().map(|n| n.to_string()), 0, 0));
            entry.1 += 1;
            entry.2 += u64::from(ev.len);
        }
        if let Some(reason) = &ev.drop_reason {
            let location = ev.drop_location.clone().unwrap_or_default();
            *self
                .drops
                .entry((reason.clone(), location, ev.netns, ifname))
                .or_default() += 1;
        }
        if let Some(d) = &ev.delivered {
            *self
                .deliveries
                .entry((d.reason.clone(), d.location.clone()))
                .or_default() += 1;
        }
        if ev.clone {
            return;
        }
        let ends = matches!(ev.hook, "kfree_skb" | "consume_skb");
        if let Some(span) = &mut self.span {
            span.see(ev.packet_id, here, ev.ts_ns, ends);
        }
        if ends {
            self.last.remove(&ev.packet_id);
            if self.freed.len() >= MAX_FREED {
                self.freed.clear();
            }
            self.freed.insert(ev.packet_id, (here, ev.netns, ifname));
        } else {
            let at = if ev.fib.is_some() {
                // The packet has not moved to the lookup's output device yet.
                match prev {
                    Some((_, ns, i)) => (here, ns, i),
                    None => (here, 0, self.ifname("")),
                }
            } else {
                (here, ev.netns, ifname)
            };
            if self.last.len() >= self.sweep_at.max(MAX_LAST) {
                self.last
                    .retain(|_, &mut (_, t)| ev.ts_ns.saturating_sub(t) < IDLE_NS);
                self.sweep_at = 2 * self.last.len();
            }
            self.last.insert(ev.packet_id, (at, ev.ts_ns));
        }
    }

    /// Events added so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The latency of the span set with [`Self::with_span`] (`from` and `to` as hop
    /// labels); None without one.
    pub fn span(&self) -> Option<HopLatency> {
        let span = self.span.as_ref()?;
        Some(hop_latency(
            &self.label_text[span.from as usize],
            &self.label_text[span.to as usize],
            &span.latencies,
        ))
    }

    /// Drops by reason, location, network namespace and interface, in that order.
    pub fn drops_by_place(&self) -> Vec<PlacedDrop> {
        self.drops
            .iter()
            .map(|((reason, location, netns, i), &count)| PlacedDrop {
                reason: reason.clone(),
                location: location.clone(),
                netns: *netns,
                ifname: self.ifname_text[*i as usize].clone(),
                count,
            })
            .collect()
    }

    /// The summary so far, with `lost` events.
    pub fn report(&self, lost: Option<u64>) -> Report {
        // In label order, as ties in the sort below have always been.
        let by_label: BTreeMap<(&str, &str), &Latencies> = self
            .hops
            .iter()
            .map(|(&(from, to), v)| {
                let text = |id: u32| self.label_text[id as usize].as_str();
                ((text(from), text(to)), v)
            })
            .collect();
        let mut hops: Vec<HopLatency> = by_label
            .into_iter()
            .map(|((from, to), l)| hop_latency(from, to, l))
            .collect();
        hops.sort_by_key(|h| std::cmp::Reverse(h.p99_ns));
        let counts = |m: BTreeMap<(&str, &str), u64>| {
            let mut v: Vec<DropCount> = m
                .into_iter()
                .map(|((reason, location), count)| DropCount {
                    reason: reason.to_owned(),
                    location: location.to_owned(),
                    count,
                })
                .collect();
            v.sort_by_key(|d| std::cmp::Reverse(d.count));
            v
        };
        let mut drops = BTreeMap::new();
        for ((reason, location, _, _), count) in &self.drops {
            *drops
                .entry((reason.as_str(), location.as_str()))
                .or_default() += count;
        }
        let drops = counts(drops);
        let deliveries = counts(
            self.deliveries
                .iter()
                .map(|((reason, location), &count)| ((reason.as_str(), location.as_str()), count))
                .collect(),
        );
        let by_place: BTreeMap<(u32, &str), _> = self
            .ifaces
            .iter()
            .map(|(&(netns, i), v)| ((netns, self.ifname_text[i as usize].as_str()), v))
            .collect();
        let mut interfaces: Vec<InterfaceCount> = by_place
            .into_iter()
            .map(|((netns, ifname), (name, packets, bytes))| InterfaceCount {
                netns,
                netns_name: name.clone(),
                ifname: ifname.to_owned(),
                packets: *packets,
                bytes: *bytes,
            })
            .collect();
        interfaces.sort_by_key(|i| std::cmp::Reverse(i.packets));
        Report {
            events: self.events,
            lost,
            hops,
            drops,
            deliveries,
            interfaces,
        }
    }
}

/// The latency figures of hop pair `from` -> `to`.
fn hop_latency(from: &str, to: &str, l: &Latencies) -> HopLatency {
    let [p50_ns, p90_ns, p99_ns] = l.percentiles([50, 90, 99]);
    HopLatency {
        from: from.to_owned(),
        to: to.to_owned(),
        count: l.count(),
        p50_ns,
        p90_ns,
        p99_ns,
        max_ns: l.max(),
    }
}

/// Nanoseconds as microseconds with one decimal (`12.3us`).
pub(super) fn us(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1000.0)
}

fn lost_text(lost: Option<u64>) -> String {
    lost.map_or_else(
        || "lost count unavailable".to_owned(),
        |l| format!("{l} lost"),
    )
}

impl Report {
    /// The full summary as text, one section per kind.
    pub fn to_text(&self) -> String {
        let mut s = format!("events: {}, {}\n", self.events, lost_text(self.lost));
        s.push_str("hop latency (count p50 p90 p99 max):\n");
        for h in &self.hops {
            s.push_str(&format!(
                "  {} -> {}: {} {} {} {} {}\n",
                h.from,
                h.to,
                h.count,
                us(h.p50_ns),
                us(h.p90_ns),
                us(h.p99_ns),
                us(h.max_ns)
            ));
        }
        s.push_str("drops (reason at location: count):\n");
        for d in &self.drops {
            s.push_str(&format!("  {} at {}: {}\n", d.reason, d.location, d.count));
        }
        if !self.deliveries.is_empty() {
            s.push_str("deliveries freed with a drop reason (reason at location: count):\n");
            for d in &self.deliveries {
                s.push_str(&format!("  {} at {}: {}\n", d.reason, d.location, d.count));
            }
        }
        s.push_str("interfaces (netns interface: packets bytes):\n");
        for i in &self.interfaces {
            let ns = match &i.netns_name {
                Some(n) => format!("{} ({n})", i.netns),
                None => i.netns.to_string(),
            };
            s.push_str(&format!("  {ns} {}: {} {}\n", i.ifname, i.packets, i.bytes));
        }
        s
    }

    /// The short form printed on stderr at exit: packets, drops and the slowest hop pair.
    pub fn short(&self) -> String {
        let packets: u64 = self.interfaces.iter().map(|i| i.packets).sum();
        let drops: u64 = self.drops.iter().map(|d| d.count).sum();
        let mut s = format!(
            "{packets} packet sightings on {} interfaces, {drops} drops",
            self.interfaces.len()
        );
        let delivered: u64 = self.deliveries.iter().map(|d| d.count).sum();
        if delivered != 0 {
            s.push_str(&format!(" ({delivered} deliveries not counted as drops)"));
        }
        if let Some(h) = self.hops.first() {
            s.push_str(&format!(
                ", slowest hop {} -> {} p99 {}",
                h.from,
                h.to,
                us(h.p99_ns)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::{HEADER_BYTES, Hook, TraceEvent};

    use super::*;
    use crate::trace::{drops::DropReasons, event::EventBuilder, kallsyms::Kallsyms};

    /// A recorded-style wire event: an ICMP echo request header on `ifname`.
    fn raw(ts: u64, skb: u64, hook: Hook, netns: u32, ifname: &str, len: u32) -> TraceEvent {
        let mut header = [0u8; HEADER_BYTES];
        let ip = [
            0x45, 0, 0, 84, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 8, 0, 0, 0, 0, 7,
            0, 1,
        ];
        header[..ip.len()].copy_from_slice(&ip);
        let mut name = [0u8; 16];
        name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        TraceEvent {
            head: pktpath_common::trace::RecordHead::SKB,
            ts_ns: ts,
            skb_addr: skb,
            location: 0,
            buffer: 0,
            netns,
            ifindex: 2,
            len,
            mark: 0,
            drop_reason: 0,
            qdisc_handle: 0,
            flags: 0,
            _pad: 0,
            hook: hook as u16,
            protocol: 0x0800,
            header_len: 84,
            cpu: 0,
            ifname: name,
            header,
            qdisc_kind: [0; 16],
        }
    }

    fn events(raws: &[TraceEvent]) -> Vec<Event> {
        let mut b = EventBuilder::new(DropReasons::default())
            .with_kallsyms(Kallsyms::default())
            .with_netns_names([(1, "a".to_owned()), (2, "b".to_owned())]);
        raws.iter().map(|r| b.build(r)).collect()
    }

    /// `s` after it was fed the events of `raws`.
    fn fed(mut s: Summary, raws: &[TraceEvent]) -> Summary {
        for e in events(raws) {
            s.add(&e);
        }
        s
    }

    #[test]
    fn a_clone_neither_times_a_hop_pair_nor_ends_its_packet() {
        // A packet queued and sent on veth-a, a capture's clone of it (another skb, the
        // same data buffer) freed in between.
        let in_buffer = |mut r: TraceEvent| {
            r.buffer = 0xffff_8880_9000_0000;
            r
        };
        let raws = [
            in_buffer(raw(1_000, 0x1000, Hook::NetDevQueue, 1, "veth-a", 98)),
            in_buffer(raw(1_300, 0x2000, Hook::ConsumeSkb, 1, "veth-a", 98)),
            in_buffer(raw(1_800, 0x1000, Hook::NetDevStartXmit, 1, "veth-a", 98)),
        ];
        let r = fed(Summary::new(), &raws).report(Some(0));
        let pairs: Vec<_> = r
            .hops
            .iter()
            .map(|h| (h.from.as_str(), h.to.as_str(), h.count, h.max_ns))
            .collect();
        assert_eq!(
            pairs,
            [("net_dev_queue@veth-a", "net_dev_start_xmit@veth-a", 1, 800)]
        );
    }

    #[test]
    fn packets_never_freed_are_forgotten_once_idle() {
        let ev = |packet_id, hop, ts_ns, delta_ns| Event {
            schema_version: crate::trace::SCHEMA_VERSION,
            packet_id,
            hop,
            ts_ns,
            delta_ns,
            hook: "net_dev_xmit",
            ifname: "veth-a".into(),
            ..Event::default()
        };
        let mut s = Summary::new();
        // As many packets as are kept, none seen to end (TCP's frees have no hook).
        for id in 0..MAX_LAST as u64 {
            s.add(&ev(id, 1, id, None));
        }
        assert_eq!(s.last.len(), MAX_LAST);
        // One more, just in time for the newest of them to go on: the idle ones are gone.
        let t = IDLE_NS + MAX_LAST as u64 - 10;
        s.add(&ev(MAX_LAST as u64, 1, t, None));
        assert_eq!(s.last.len(), 10);
        s.add(&ev(MAX_LAST as u64 - 1, 2, t + 1, Some(7)));
        assert_eq!(s.report(None).hops[0].count, 1);
        // Those left and every new one are kept until the map doubles.
        assert_eq!(s.sweep_at.max(MAX_LAST), MAX_LAST);
    }

    #[test]
    fn hop_pairs_interfaces_and_drops_add_up() {
        let mut raws = Vec::new();
        // Ten packets a/veth-a -> b/veth-b; transmit-to-receive takes (i+1) us.
        for i in 0..10u64 {
            let skb = 0x1000 + i * 0x100;
            let t = 1_000_000 * (i + 1);
            raws.push(raw(t, skb, Hook::NetDevXmit, 1, "veth-a", 98));
            raws.push(raw(
                t + (i + 1) * 1000,
                skb,
                Hook::NetifReceiveSkb,
                2,
                "veth-b",
                84,
            ));
            raws.push(raw(
                t + (i + 1) * 1000 + 500,
                skb,
                Hook::NetifReceiveSkb,
                2,
                "veth-b",
                84,
            ));
            let mut free = raw(t + 20_000, skb, Hook::KfreeSkb, 2, "veth-b", 84);
            free.drop_reason = if i < 3 { 2 } else { 0 };
            raws.push(free);
        }
        let r = fed(Summary::new(), &raws).report(Some(0));
        assert_eq!(r.events, 40);
        let pair = r
            .hops
            .iter()
            .find(|h| h.from == "net_dev_xmit@veth-a" && h.to == "netif_receive_skb@veth-b")
            .unwrap_or_else(|| panic!("{r:#?}"));
        assert_eq!(pair.count, 10);
        assert_eq!(
            (pair.p50_ns, pair.p90_ns, pair.p99_ns, pair.max_ns),
            (5_000, 9_000, 10_000, 10_000)
        );
        let same = r
            .hops
            .iter()
            .find(|h| h.from == "netif_receive_skb@veth-b" && h.to == "netif_receive_skb@veth-b")
            .expect("repeated hop pair");
        assert_eq!((same.count, same.max_ns), (10, 500));
        // Each packet counted once per interface it stayed on, with its length there.
        let ifs: Vec<_> = r
            .interfaces
            .iter()
            .map(|i| {
                (
                    i.netns,
                    i.netns_name.as_deref(),
                    i.ifname.as_str(),
                    i.packets,
                    i.bytes,
                )
            })
            .collect();
        assert!(ifs.contains(&(1, Some("a"), "veth-a", 10, 980)), "{ifs:?}");
        assert!(ifs.contains(&(2, Some("b"), "veth-b", 10, 840)), "{ifs:?}");
        // Every kfree_skb is a drop entry, by reason number (no BTF names here).
        let total: u64 = r.drops.iter().map(|d| d.count).sum();
        assert_eq!(total, 10);
        assert_eq!(r.drops.len(), 2, "{:?}", r.drops);
        assert_eq!(r.drops[0].count, 7);
        assert!(
            r.short()
                .starts_with("20 packet sightings on 2 interfaces, 10 drops")
        );
        let text = r.to_text();
        assert!(text.contains("events: 40, 0 lost"), "{text}");
        assert!(
            text.contains(
                "  net_dev_xmit@veth-a -> netif_receive_skb@veth-b: 10 5.0us 9.0us 10.0us 10.0us"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_span_times_each_packet_from_its_first_hop_to_the_next_later_one() {
        let mut raws = Vec::new();
        // Four packets: receive on veth-a, two hops between, transmit on veth-b after
        // (i+1) us; the last packet is freed before it is transmitted.
        for i in 0..4u64 {
            let skb = 0x1000 + i * 0x100;
            let t = 1_000_000 * (i + 1);
            raws.push(raw(t, skb, Hook::NetifReceiveSkb, 1, "veth-a", 84));
            raws.push(raw(t + 100, skb, Hook::NetifReceiveSkb, 1, "veth-a", 84));
            raws.push(raw(t + 200, skb, Hook::NetDevQueue, 1, "veth-b", 84));
            if i == 3 {
                raws.push(raw(t + 300, skb, Hook::KfreeSkb, 1, "veth-b", 84));
            } else {
                raws.push(raw(
                    t + (i + 1) * 1000,
                    skb,
                    Hook::NetDevXmit,
                    1,
                    "veth-b",
                    84,
                ));
            }
        }
        let s = fed(
            Summary::new().with_span(("netif_receive_skb", "veth-a"), ("net_dev_xmit", "veth-b")),
            &raws,
        );
        let span = s.span().expect("a span was set");
        assert_eq!(
            (span.from.as_str(), span.to.as_str()),
            ("netif_receive_skb@veth-a", "net_dev_xmit@veth-b")
        );
        assert_eq!(
            (span.count, span.p50_ns, span.p99_ns, span.max_ns),
            (3, 2_000, 3_000, 3_000)
        );
        // Hop pairs and the report are what they are without a span.
        let plain = fed(Summary::new(), &raws);
        assert_eq!(plain.span(), None);
        assert_eq!(plain.report(Some(0)), s.report(Some(0)));
    }

    #[test]
    fn drops_by_place_add_up_to_the_drops_by_reason() {
        let mut raws = Vec::new();
        for (i, (netns, ifname)) in [(1, "veth-a"), (2, "veth-b"), (2, "veth-b")]
            .into_iter()
            .enumerate()
        {
            let mut free = raw(
                1000 * i as u64,
                0x1000 + i as u64,
                Hook::KfreeSkb,
                netns,
                ifname,
                84,
            );
            free.drop_reason = 2;
            raws.push(free);
        }
        let s = fed(Summary::new(), &raws);
        let placed: Vec<_> = s
            .drops_by_place()
            .into_iter()
            .map(|d| (d.netns, d.ifname, d.count))
            .collect();
        assert_eq!(
            placed,
            [(1, "veth-a".to_owned(), 1), (2, "veth-b".to_owned(), 2)]
        );
        let r = s.report(None);
        assert_eq!(r.drops.len(), 1, "{:?}", r.drops);
        assert_eq!(r.drops[0].count, 3);
    }

    #[test]
    fn lost_is_null_when_unknown_and_json_has_the_sections() {
        let r = Summary::new().report(None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["lost"], serde_json::Value::Null);
        assert_eq!(v["events"], 0);
        for k in ["hops", "drops", "interfaces"] {
            assert!(v[k].as_array().is_some_and(Vec::is_empty), "{k}");
        }
        assert!(r.to_text().contains("lost count unavailable"));
    }
}
