//! Two traces compared (`pktpath trace diff A B`): a working and a failing case, or before
//! and after a change. Per flow, the path its packets took (the hops of their journeys);
//! the drop reasons one trace has and the other has not; the hop pairs whose latency moved.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{
    event::Event,
    summary::{DropCount, HopLatency, Summary, us},
};

/// A latency change smaller than this share of the earlier value is not shown in text.
const NOTABLE_CHANGE: f64 = 0.2;

/// What differs between trace A and trace B.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TraceDiff {
    /// Flows seen in both traces, and whether their paths are the same.
    pub flows_in_both: usize,
    pub same_path: usize,
    /// Flows whose most common path differs, and where.
    pub diverging: Vec<Divergence>,
    /// Flows one trace has and the other has not, with their most common path.
    pub only_in_a: Vec<FlowPath>,
    pub only_in_b: Vec<FlowPath>,
    /// Drops (reason at location) one trace has and the other has not.
    pub drops_only_in_a: Vec<DropCount>,
    pub drops_only_in_b: Vec<DropCount>,
    /// Hop pairs in both traces, the largest change of their median first.
    pub latency: Vec<LatencyChange>,
}

/// A flow's packets and the path most of them took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowPath {
    /// `proto src > dst`, with ports or the ICMP type.
    pub flow: String,
    pub packets: u64,
    /// `hook@interface` per event of the journey; a free with a drop reason says it.
    pub path: Vec<String>,
    /// How many of the packets took that path.
    pub on_path: u64,
}

/// A flow whose packets took one path in A and another in B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub flow: String,
    /// The hops both paths start with.
    pub common: Vec<String>,
    /// Where each goes from there (empty: the path ends there).
    pub a: Vec<String>,
    pub b: Vec<String>,
    pub packets_a: u64,
    pub packets_b: u64,
}

/// One hop pair's latency in A and in B.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyChange {
    pub from: String,
    pub to: String,
    pub a: HopLatency,
    pub b: HopLatency,
    /// `b.p50 / a.p50 - 1` (0.25: 25% slower in B).
    pub p50_change: f64,
    pub p99_change: f64,
}

/// Compares the events of two traces (each as `--output json` wrote it, in order).
pub fn diff(a: &[Event], b: &[Event]) -> TraceDiff {
    let (flows_a, flows_b) = (flows(a), flows(b));
    let mut d = TraceDiff::default();
    for (flow, pa) in &flows_a {
        match flows_b.get(flow) {
            None => d.only_in_a.push(pa.clone()),
            Some(pb) => {
                d.flows_in_both += 1;
                if pa.path == pb.path {
                    d.same_path += 1;
                } else {
                    let n = pa
                        .path
                        .iter()
                        .zip(&pb.path)
                        .take_while(|(x, y)| x == y)
                        .count();
                    d.diverging.push(Divergence {
                        flow: flow.clone(),
                        common: pa.path[..n].to_vec(),
                        a: pa.path[n..].to_vec(),
                        b: pb.path[n..].to_vec(),
                        packets_a: pa.packets,
                        packets_b: pb.packets,
                    });
                }
            }
        }
    }
    d.only_in_b = flows_b
        .iter()
        .filter(|(f, _)| !flows_a.contains_key(*f))
        .map(|(_, p)| p.clone())
        .collect();
    let (ra, rb) = (report(a), report(b));
    let drops = |x: &[DropCount], y: &[DropCount]| -> Vec<DropCount> {
        x.iter()
            .filter(|d| {
                !y.iter()
                    .any(|e| e.reason == d.reason && e.location == d.location)
            })
            .cloned()
            .collect()
    };
    d.drops_only_in_a = drops(&ra.drops, &rb.drops);
    d.drops_only_in_b = drops(&rb.drops, &ra.drops);
    for ha in &ra.hops {
        if let Some(hb) = rb.hops.iter().find(|h| h.from == ha.from && h.to == ha.to) {
            d.latency.push(LatencyChange {
                from: ha.from.clone(),
                to: ha.to.clone(),
                a: ha.clone(),
                b: hb.clone(),
                p50_change: change(ha.p50_ns, hb.p50_ns),
                p99_change: change(ha.p99_ns, hb.p99_ns),
            });
        }
    }
    d.latency
        .sort_by(|x, y| y.p50_change.abs().total_cmp(&x.p50_change.abs()));
    d
}

fn report(events: &[Event]) -> super::summary::Report {
    let mut s = Summary::new();
    for ev in events {
        s.add(ev);
    }
    s.report(None)
}

fn change(a: u64, b: u64) -> f64 {
    if a == 0 {
        0.0
    } else {
        b as f64 / a as f64 - 1.0
    }
}

/// Each flow's packets and most common path, by flow.
fn flows(events: &[Event]) -> BTreeMap<String, FlowPath> {
    // The journeys, in the order they start; a journey's flow is that of its first packet
    // event (a locally sent packet's journey starts with its route lookup).
    let mut journeys: HashMap<u64, (Option<String>, Vec<String>)> = HashMap::new();
    let mut order = Vec::new();
    for ev in events {
        let j = journeys.entry(ev.packet_id).or_insert_with(|| {
            order.push(ev.packet_id);
            (None, Vec::new())
        });
        if j.0.is_none() && ev.fib.is_none() {
            j.0 = Some(flow_of(ev));
        }
        j.1.push(hop_of(ev));
    }
    let mut paths: BTreeMap<String, BTreeMap<Vec<String>, u64>> = BTreeMap::new();
    for id in order {
        // A route lookup no packet joined describes a flow, not a packet: no flow.
        if let Some((Some(flow), path)) = journeys.remove(&id) {
            *paths.entry(flow).or_default().entry(path).or_default() += 1;
        }
    }
    paths
        .into_iter()
        .map(|(flow, counts)| {
            let packets = counts.values().sum();
            // The most common path; of equally common ones, the first in order.
            let (path, on_path) =
                counts.into_iter().fold(
                    (Vec::new(), 0),
                    |best, (p, n)| if n > best.1 { (p, n) } else { best },
                );
            let fp = FlowPath {
                flow: flow.clone(),
                packets,
                path,
                on_path,
            };
            (flow, fp)
        })
        .collect()
}

/// `proto src > dst` with the ports or the ICMP type.
fn flow_of(ev: &Event) -> String {
    let addr = |a: &Option<super::name::Name>, port: Option<u16>| {
        let a = a.as_deref().unwrap_or("?");
        match port {
            Some(p) if a.contains(':') => format!("[{a}]:{p}"),
            Some(p) => format!("{a}:{p}"),
            None => a.to_owned(),
        }
    };
    let mut f = format!(
        "{} {} > {}",
        ev.proto,
        addr(&ev.src, ev.sport),
        addr(&ev.dst, ev.dport)
    );
    if let Some(t) = ev.icmp_type {
        f.push_str(&format!(" type {t}"));
    }
    f
}

/// `hook@interface`, and the drop reason of a drop.
fn hop_of(ev: &Event) -> String {
    match &ev.drop_reason {
        Some(r) => format!("{}@{} ({r})", ev.hook, ev.ifname),
        None => format!("{}@{}", ev.hook, ev.ifname),
    }
}

impl TraceDiff {
    /// Whether the traces differ in anything this compares (latency changes below
    /// [`NOTABLE_CHANGE`] aside).
    pub fn is_empty(&self) -> bool {
        self.diverging.is_empty()
            && self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.drops_only_in_a.is_empty()
            && self.drops_only_in_b.is_empty()
            && !self.latency.iter().any(LatencyChange::notable)
    }

    /// The text `pktpath trace diff` prints.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "flows: {} in both ({} on the same path, {} not), {} only in A, {} only in B\n",
            self.flows_in_both,
            self.same_path,
            self.diverging.len(),
            self.only_in_a.len(),
            self.only_in_b.len()
        );
        for d in &self.diverging {
            let at = d.common.last().map_or("the start", String::as_str);
            s.push_str(&format!(
                "{}: paths part after {at}\n  A ({} packets): {}\n  B ({} packets): {}\n",
                d.flow,
                d.packets_a,
                rest(&d.a),
                d.packets_b,
                rest(&d.b)
            ));
        }
        for (which, flows) in [("A", &self.only_in_a), ("B", &self.only_in_b)] {
            for f in flows {
                s.push_str(&format!(
                    "only in {which}: {} ({} packets): {}\n",
                    f.flow,
                    f.packets,
                    f.path.join(" > ")
                ));
            }
        }
        for (which, drops) in [("A", &self.drops_only_in_a), ("B", &self.drops_only_in_b)] {
            for d in drops {
                s.push_str(&format!(
                    "drops only in {which}: {} at {}: {}\n",
                    d.reason, d.location, d.count
                ));
            }
        }
        for l in self.latency.iter().filter(|l| l.notable()) {
            s.push_str(&format!(
                "latency {} -> {}: p50 {} -> {} ({:+.0}%), p99 {} -> {} ({:+.0}%)\n",
                l.from,
                l.to,
                us(l.a.p50_ns),
                us(l.b.p50_ns),
                100.0 * l.p50_change,
                us(l.a.p99_ns),
                us(l.b.p99_ns),
                100.0 * l.p99_change
            ));
        }
        if self.is_empty() {
            s.push_str("no difference in paths, drops or hop latency\n");
        }
        s
    }
}

impl LatencyChange {
    fn notable(&self) -> bool {
        self.p50_change.abs() >= NOTABLE_CHANGE || self.p99_change.abs() >= NOTABLE_CHANGE
    }
}

fn rest(hops: &[String]) -> String {
    if hops.is_empty() {
        "(ends there)".to_owned()
    } else {
        hops.join(" > ")
    }
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::Hook;

    use super::*;

    /// A ping's request through a router: `r_in`, then out (or dropped) at `r_out`.
    fn request(id: u64, t: u64, out: Option<&str>, drop: Option<&str>) -> Vec<Event> {
        let ev = |hop: u32, hook: Hook, ifname: &str, dt: u64| Event {
            packet_id: id,
            hop,
            ts_ns: t + dt,
            delta_ns: (hop > 1).then_some(dt),
            hook: hook.name(),
            ifname: ifname.into(),
            proto: "icmp".into(),
            src: Some("10.0.1.2".into()),
            dst: Some("10.0.2.2".into()),
            icmp_type: Some(8),
            ..Event::default()
        };
        let mut j = vec![ev(1, Hook::NetifReceiveSkb, "r-in", 0)];
        if let Some(o) = out {
            j.push(ev(2, Hook::NetDevStartXmit, o, 5_000));
        }
        if let Some(reason) = drop {
            let mut e = ev(2, Hook::KfreeSkb, "r-in", 3_000);
            e.drop_reason = Some(reason.to_owned());
            e.drop_location = Some("nft_do_chain+0x4a".to_owned());
            j.push(e);
        }
        j
    }

    #[test]
    fn a_drop_in_b_is_named_with_where_the_paths_part() {
        let a: Vec<Event> = (1..=3)
            .flat_map(|i| request(i, i * 1000, Some("r-out"), None))
            .collect();
        let b: Vec<Event> = (1..=3)
            .flat_map(|i| request(i, i * 1000, None, Some("NETFILTER_DROP")))
            .collect();
        let d = diff(&a, &b);
        assert_eq!((d.flows_in_both, d.same_path), (1, 0));
        let v = &d.diverging[0];
        assert_eq!(v.flow, "icmp 10.0.1.2 > 10.0.2.2 type 8");
        assert_eq!(v.common, ["netif_receive_skb@r-in"]);
        assert_eq!(v.a, ["net_dev_start_xmit@r-out"]);
        assert_eq!(v.b, ["kfree_skb@r-in (NETFILTER_DROP)"]);
        assert_eq!((v.packets_a, v.packets_b), (3, 3));
        assert!(d.drops_only_in_a.is_empty());
        assert_eq!(d.drops_only_in_b.len(), 1);
        assert_eq!(d.drops_only_in_b[0].reason, "NETFILTER_DROP");
        assert_eq!(d.drops_only_in_b[0].count, 3);
        let text = d.to_text();
        assert!(
            text.contains("paths part after netif_receive_skb@r-in"),
            "{text}"
        );
        assert!(
            text.contains("drops only in B: NETFILTER_DROP at nft_do_chain"),
            "{text}"
        );
        assert!(!d.is_empty());
    }

    #[test]
    fn the_same_trace_has_no_difference_and_latency_changes_are_measured() {
        let a: Vec<Event> = (1..=4)
            .flat_map(|i| request(i, i * 1000, Some("r-out"), None))
            .collect();
        let d = diff(&a, &a);
        assert!(d.is_empty(), "{d:#?}");
        assert!(d.to_text().contains("no difference"));
        assert_eq!(d.latency.len(), 1);
        assert_eq!(d.latency[0].p50_change, 0.0);
        // Twice as slow from r-in to r-out in B, and a flow only B has.
        let mut b: Vec<Event> = a
            .iter()
            .cloned()
            .map(|mut e| {
                if e.hop == 2 {
                    e.delta_ns = e.delta_ns.map(|d| 2 * d);
                }
                e
            })
            .collect();
        let mut other = request(9, 9000, Some("r-out"), None);
        for e in &mut other {
            e.dst = Some("10.0.3.3".into());
        }
        b.extend(other);
        let d = diff(&a, &b);
        assert_eq!(d.only_in_b.len(), 1);
        assert!(d.only_in_b[0].flow.contains("10.0.3.3"));
        assert!(
            (d.latency[0].p50_change - 1.0).abs() < 0.01,
            "{:?}",
            d.latency[0]
        );
        let text = d.to_text();
        assert!(text.contains("p50 5.0us -> 10.0us (+100%)"), "{text}");
    }
}
