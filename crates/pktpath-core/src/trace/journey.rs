//! One packet, one journey: packet ids and per-hop latency.
//!
//! A packet is identified by its `sk_buff` address together with the time it was first seen:
//! the same skb crosses veth pairs, namespaces, forwarding, address translation and VXLAN
//! encapsulation unchanged. An skb freed (`kfree_skb`, `consume_skb`) ends its journey, so a
//! reused address starts a new one. Some frees have no tracepoint (`__kfree_skb`, used by
//! TCP), so an address also starts a new journey when it was not seen for [`IDLE_NS`], or
//! when its packet's header signature (addresses, ports, protocol, ICMP id and sequence)
//! changes and its identity ([`super::identity`]: the fields a rewrite keeps) changes too.
//! A new signature with the same identity is a rewrite (NAT, a tunnel's encapsulation or
//! decapsulation): the journey goes on, and [`Journeys::take_rewrite`] gives the flow
//! before it. Sightings without header
//! bytes ([`UNKNOWN_SIG`]: the headers were still in page fragments at those hooks) make a
//! journey of unknown signature, which takes the first signature seen after them; a
//! sighting without headers after one with them is another packet.
//!
//! Routing lookups (`fib_table_lookup`, `fib6_table_lookup`) see a flow, not an skb. A
//! lookup joins the journey of the packet most recently seen with the same [`Flow`]
//! (addresses, protocol, ports) within [`FLOW_MATCH_NS`]: a forwarded packet is looked up
//! right after it was received. A lookup with no such packet opens a *detached* journey
//! (a locally generated packet is routed before its skb exists); the next new skb with
//! that flow first seen on its way out (not received, not freed) within [`FLOW_MATCH_NS`]
//! continues it. A lookup without a protocol is an input lookup (it follows its packet,
//! never precedes it): it opens no journey another packet could continue. A lookup whose source address is
//! unspecified (before source address selection) matches any source, one without a
//! protocol (the kernel's input route lookup fills it in only for policy rules that need
//! it) any protocol and ports.

use std::{borrow::Cow, net::IpAddr};

use super::fasthash::FastMap;

/// The signature of a packet whose header bytes the hook could not read: a journey of such
/// sightings continues with the first packet signature seen after them (the headers were
/// pulled into reach). The event builder's signatures are never this value.
pub const UNKNOWN_SIG: u64 = 0;

/// An skb address silent for this long starts a new journey when seen again.
pub const IDLE_NS: u64 = 2_000_000_000;
/// Journeys kept before idle ones are swept.
const MAX_OPEN: usize = 65_536;
/// How close in time a routing lookup and a packet of the same flow must be to share a
/// journey.
pub const FLOW_MATCH_NS: u64 = 10_000_000;
/// Detached journeys kept (older ones are dropped as they expire).
const MAX_DETACHED: usize = 1024;
/// (source, destination) pairs remembered before those idle for [`FLOW_MATCH_NS`] are
/// swept.
const MAX_RECENT_PAIRS: usize = 4096;
/// Flows remembered per (source, destination) pair.
const MAX_FLOWS_PER_PAIR: usize = 8;

/// What a routing lookup and the packet it is for have in common.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// TCP/UDP ports; None for other protocols. First: the derived comparison goes in field
    /// order, and the flows of one address pair mostly differ here.
    pub ports: Option<(u16, u16)>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// As [`super::headers::Headers::proto`] names it (`icmp`, `tcp`, ...); None when a
    /// lookup's flow does not say.
    pub proto: Option<Cow<'static, str>>,
}

impl Flow {
    /// Whether a lookup's flow `self` is the one a packet with `other` carries: equal, or
    /// equal but for what the lookup leaves unspecified (source, protocol and ports).
    fn matches(&self, packet: &Flow) -> bool {
        let src_ok = match self.src {
            None => true,
            Some(a) if a.is_unspecified() => true,
            a => a == packet.src,
        };
        let l4_ok =
            self.proto.is_none() || (self.proto == packet.proto && self.ports == packet.ports);
        src_ok && self.dst == packet.dst && l4_ok
    }
}

/// A flow's (source, destination).
type AddrPair = (Option<IpAddr>, Option<IpAddr>);
/// A flow, the skb that last carried it and when.
type SeenFlow = (Flow, u64, u64);

/// A journey opened by a routing lookup, waiting for its skb.
#[derive(Clone, Debug)]
struct Detached {
    flow: Flow,
    progress: Progress,
}

/// How far a journey has come: its id, when it began, its last event, its hops so far.
#[derive(Clone, Copy, Debug)]
struct Progress {
    packet_id: u64,
    first_seen_ns: u64,
    last_ns: u64,
    hops: u32,
}

impl Progress {
    /// A journey whose first event is at `ts_ns`.
    fn start(packet_id: u64, ts_ns: u64) -> Self {
        Self {
            packet_id,
            first_seen_ns: ts_ns,
            last_ns: ts_ns,
            hops: 1,
        }
    }

    /// Its first event's step.
    fn first(&self) -> Step {
        Step {
            packet_id: self.packet_id,
            first_seen_ns: self.first_seen_ns,
            delta_ns: None,
            hop: self.hops,
        }
    }

    /// One more event, at `ts_ns`: its step (the delta from the previous event, 0 when it
    /// is older).
    fn advance(&mut self, ts_ns: u64) -> Step {
        self.hops += 1;
        let delta = ts_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        Step {
            packet_id: self.packet_id,
            first_seen_ns: self.first_seen_ns,
            delta_ns: Some(delta),
            hop: self.hops,
        }
    }
}

/// Where an event stands in its packet's journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The journey's id, unique within one trace (1, 2, ...).
    pub packet_id: u64,
    /// When the packet was first seen (`ts_ns` of its first event).
    pub first_seen_ns: u64,
    /// Time since the previous event of the same packet; None for the first.
    pub delta_ns: Option<u64>,
    /// 1 for the first event of a journey, 2 for the next, ...
    pub hop: u32,
}

#[derive(Clone, Debug)]
struct Open {
    progress: Progress,
    sig: u64,
    /// The packet's identity ([`super::identity`]); 0 when unknown.
    ident: u64,
    /// The flow the headers carried since the journey began or was last rewritten (None
    /// when they had none): what a rewrite changed them from.
    flow: Option<Flow>,
}

/// The last sighting of a packet (by signature and identity), for a decision made with
/// no skb to name it by (XDP's): the skb, when, and the journey's progress once that skb
/// was freed (`None` while it is open).
#[derive(Clone, Copy, Debug)]
struct Sighting {
    skb: u64,
    last_ns: u64,
    freed: Option<Progress>,
}

/// A journey an skb-less decision continued, or would begin, waiting for the skb made for
/// its packet after it (a veth's copy of the frame, the skb a driver builds after XDP
/// passed the frame).
#[derive(Clone, Copy, Debug)]
struct Awaiting {
    packet: (u64, u64),
    /// When the decision was made.
    at_ns: u64,
    /// The journey it continued; None when it was the packet's first sighting (the journey
    /// begins only if an skb carries the packet on: see [`Journeys::take_awaited`]).
    progress: Option<Progress>,
}

/// Journeys awaiting their skb kept (older ones are dropped as they expire).
const MAX_AWAITING: usize = 1024;

/// Assigns events to journeys.
#[derive(Debug, Default)]
pub struct Journeys {
    /// With [`Self::follow_packets`]: the last sighting of each packet, by (signature,
    /// identity).
    packets: Option<FastMap<(u64, u64), Sighting>>,
    awaiting: Vec<Awaiting>,
    /// The packet whose first sighting, a decision, the last packet event continued.
    awaited: Option<(u64, u64)>,
    open: FastMap<u64, Open>,
    next_id: u64,
    /// Per (source, destination): the flows seen lately, each with the skb that last
    /// carried it and when.
    recent: FastMap<AddrPair, Vec<SeenFlow>>,
    detached: Vec<Detached>,
    /// The flow before the rewrite the last packet event was (see [`Self::take_rewrite`]).
    rewritten: Option<Option<Flow>>,
}

impl Journeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers the last sighting of each packet, for [`Self::packet_hop`].
    pub fn follow_packets(&mut self) {
        self.packets.get_or_insert_with(FastMap::default);
    }

    /// A hop of a packet known by its headers only, `(sig, ident)`, not by an skb: a
    /// decision of the data path's XDP program, which runs before there is an skb. It joins
    /// the journey of the skb that carried the packet last, within [`FLOW_MATCH_NS`] (a
    /// veth's sender, whose skb it copies and frees; generic XDP's own skb); the next new
    /// skb carrying the packet within [`FLOW_MATCH_NS`] continues that journey. None when
    /// no skb carried the packet lately (the trace did not see it, or it was filtered out);
    /// else the step and that skb. With none, the decision may be the packet's first
    /// sighting (a NIC's native XDP): the next new skb carrying the packet within
    /// [`FLOW_MATCH_NS`] then begins a journey at the decision, as its second hop (see
    /// [`Self::take_awaited`]).
    pub fn packet_hop(&mut self, ts_ns: u64, packet: (u64, u64)) -> Option<(Step, u64)> {
        self.awaiting
            .retain(|a| ts_ns.saturating_sub(a.at_ns) < FLOW_MATCH_NS);
        if self.awaiting.len() >= MAX_AWAITING {
            self.awaiting.remove(0);
        }
        let packets = self.packets.as_mut()?;
        let Some(seen) = packets
            .get_mut(&packet)
            .filter(|s| ts_ns.saturating_sub(s.last_ns) < FLOW_MATCH_NS)
        else {
            self.awaiting.push(Awaiting {
                packet,
                at_ns: ts_ns,
                progress: None,
            });
            return None;
        };
        let (step, progress) = match &mut seen.freed {
            Some(p) => (p.advance(ts_ns), *p),
            None => {
                let o = self.open.get_mut(&seen.skb)?;
                (o.progress.advance(ts_ns), o.progress)
            }
        };
        seen.last_ns = seen.last_ns.max(ts_ns);
        let skb = seen.skb;
        self.awaiting.push(Awaiting {
            packet,
            at_ns: ts_ns,
            progress: Some(progress),
        });
        Some((step, skb))
    }

    /// When the last packet event began its journey at a decision [`Self::packet_hop`]
    /// found no journey for (the journey's first hop, the event its second): that
    /// decision's packet.
    pub fn take_awaited(&mut self) -> Option<(u64, u64)> {
        self.awaited.take()
    }

    /// Records an event of the skb at `skb_addr` at time `ts_ns`, carrying a packet with
    /// header signature `sig`; `ends` when the hook frees the skb. Events must come in time order per skb (a ring buffer from several
    /// CPUs can swap near-simultaneous events; a negative delta is shown as 0).
    /// A hop of the journey the skb at `skb_addr` is on, whatever its headers (a record that
    /// carries none, as the data path's decision); a journey of its own when none is open.
    pub fn hop_of(&mut self, skb_addr: u64, ts_ns: u64) -> Step {
        let (sig, ident) = self
            .open
            .get(&skb_addr)
            .map_or((0, 0), |o| (o.sig, o.ident));
        self.skb_step(skb_addr, ts_ns, (sig, ident), None, false, false)
    }

    pub fn step(&mut self, skb_addr: u64, ts_ns: u64, sig: u64, ends: bool) -> Step {
        self.packet(skb_addr, ts_ns, (sig, 0), None, ends, false)
    }

    /// When the last event given to [`Self::packet`] was a rewrite of its packet's headers
    /// (a new signature, the same identity): the flow before it (None inside when the
    /// headers before had no flow). None when it was not.
    pub fn take_rewrite(&mut self) -> Option<Option<Flow>> {
        self.rewritten.take()
    }

    /// [`Self::step`] for a packet with header signature and identity `(sig, ident)`
    /// carrying `flow` (when it has one): the flow remembers the skb for later lookups, and a
    /// new skb seen `outbound` (on a transmit hook) continues a detached journey of its
    /// flow.
    pub fn packet(
        &mut self,
        skb_addr: u64,
        ts_ns: u64,
        (sig, ident): (u64, u64),
        flow: Option<&Flow>,
        ends: bool,
        outbound: bool,
    ) -> Step {
        let adopt = outbound && !ends;
        let step = self.skb_step(skb_addr, ts_ns, (sig, ident), flow, adopt, ends);
        if let Some(flow) = flow {
            if self.recent.len() >= MAX_RECENT_PAIRS {
                self.recent.retain(|_, v| {
                    v.retain(|&(_, _, t)| ts_ns.saturating_sub(t) < FLOW_MATCH_NS);
                    !v.is_empty()
                });
            }
            let flows = self.recent.entry((flow.src, flow.dst)).or_default();
            match flows.iter_mut().find(|(f, _, _)| f == flow) {
                Some(e) => (e.1, e.2) = (skb_addr, ts_ns),
                None => {
                    if flows.len() >= MAX_FLOWS_PER_PAIR {
                        flows.remove(0);
                    }
                    flows.push((flow.clone(), skb_addr, ts_ns));
                }
            }
        }
        step
    }

    /// The skb that last carried a flow `flow` matches, and when.
    fn recent_skb(&self, flow: &Flow) -> Option<(u64, u64)> {
        let best = |v: &Vec<SeenFlow>| {
            v.iter()
                .filter(|(f, _, _)| flow.matches(f))
                .map(|&(_, skb, t)| (skb, t))
                .max_by_key(|&(_, t)| t)
        };
        if flow.src.is_none_or(|a| a.is_unspecified()) {
            // Before source address selection: any source (a scan, bounded by the sweep).
            self.recent
                .values()
                .filter_map(best)
                .max_by_key(|&(_, t)| t)
        } else {
            self.recent.get(&(flow.src, flow.dst)).and_then(best)
        }
    }

    /// Records a routing lookup for `flow` at `ts_ns`: an input lookup (`output` false, a
    /// received packet being routed) is a hop of the journey of the packet that carried the
    /// flow last (within [`FLOW_MATCH_NS`]); an output lookup (a local sender's, made before
    /// its packet exists) and an input lookup with no such packet are hops of a detached
    /// journey, which the next outgoing packet of the flow continues. (An output lookup
    /// joining the flow's last packet would graft the next datagram's lookup onto the
    /// previous datagram's journey.)
    ///
    /// `received` is the skb the lookup's CPU last saw received, for an input lookup whose
    /// flow no packet carried: its destination was translated (DNAT) between the receive
    /// hook and the lookup, which runs right after it in the same receive path.
    pub fn lookup(&mut self, flow: &Flow, ts_ns: u64, output: bool, received: Option<u64>) -> Step {
        if !output
            && let Some((skb, t)) = self.recent_skb(flow)
            && ts_ns.saturating_sub(t) < FLOW_MATCH_NS
            && let Some(o) = self.open.get_mut(&skb)
        {
            return o.progress.advance(ts_ns);
        }
        if !output
            && let Some(skb) = received
            && let Some(o) = self.open.get_mut(&skb)
            && ts_ns.saturating_sub(o.progress.last_ns) < FLOW_MATCH_NS
        {
            return o.progress.advance(ts_ns);
        }
        self.detached
            .retain(|d| ts_ns.saturating_sub(d.progress.last_ns) < FLOW_MATCH_NS);
        if let Some(d) = self.detached.iter_mut().find(|d| d.flow == *flow) {
            return d.progress.advance(ts_ns);
        }
        self.next_id += 1;
        if self.detached.len() >= MAX_DETACHED {
            self.detached.remove(0);
        }
        let progress = Progress::start(self.next_id, ts_ns);
        if flow.proto.is_some() {
            self.detached.push(Detached {
                flow: flow.clone(),
                progress,
            });
        }
        progress.first()
    }

    fn skb_step(
        &mut self,
        skb_addr: u64,
        ts_ns: u64,
        (sig, ident): (u64, u64),
        flow: Option<&Flow>,
        adopt: bool,
        ends: bool,
    ) -> Step {
        self.rewritten = None;
        self.awaited = None;
        let current = self.open.get_mut(&skb_addr).filter(|o| {
            let same = o.sig == sig || o.sig == UNKNOWN_SIG;
            let rewritten = sig != UNKNOWN_SIG && ident != 0 && o.ident == ident;
            (same || rewritten) && ts_ns.saturating_sub(o.progress.last_ns) < IDLE_NS
        });
        let step = match current {
            Some(o) => {
                if o.sig == UNKNOWN_SIG {
                    o.sig = sig;
                    o.ident = ident;
                    o.flow = flow.cloned();
                } else if o.sig != sig {
                    o.sig = sig;
                    self.rewritten = Some(std::mem::replace(&mut o.flow, flow.cloned()));
                }
                o.progress.advance(ts_ns)
            }
            None => {
                if self.open.len() >= MAX_OPEN {
                    self.open
                        .retain(|_, o| ts_ns.saturating_sub(o.progress.last_ns) < IDLE_NS);
                }
                // A routing lookup made for this packet before its skb existed?
                let adopted = flow.filter(|_| adopt).and_then(|f| {
                    let i = self.detached.iter().position(|d| {
                        d.flow.matches(f)
                            && ts_ns.saturating_sub(d.progress.last_ns) < FLOW_MATCH_NS
                    })?;
                    Some(self.detached.remove(i))
                });
                // Or a decision made for it before it existed (XDP's)?
                let adopted = adopted.map(|d| d.progress).or_else(|| {
                    let i = self.awaiting.iter().position(|a| {
                        sig != UNKNOWN_SIG
                            && a.packet == (sig, ident)
                            && ts_ns.saturating_sub(a.at_ns) < FLOW_MATCH_NS
                    })?;
                    let a = self.awaiting.remove(i);
                    Some(a.progress.unwrap_or_else(|| {
                        // Its first sighting was the decision: the journey begins there.
                        self.awaited = Some(a.packet);
                        self.next_id += 1;
                        Progress::start(self.next_id, a.at_ns)
                    }))
                });
                let (progress, step) = match adopted {
                    Some(adopted) => {
                        let mut progress = adopted;
                        let step = progress.advance(ts_ns);
                        // The skb's own event is the journey's last from here on.
                        progress.last_ns = ts_ns;
                        (progress, step)
                    }
                    None => {
                        self.next_id += 1;
                        let progress = Progress::start(self.next_id, ts_ns);
                        (progress, progress.first())
                    }
                };
                self.open.insert(
                    skb_addr,
                    Open {
                        progress,
                        sig,
                        ident,
                        flow: flow.cloned(),
                    },
                );
                step
            }
        };
        let freed = if ends {
            self.open.remove(&skb_addr).map(|o| o.progress)
        } else {
            None
        };
        if let Some(packets) = &mut self.packets
            && sig != UNKNOWN_SIG
        {
            if packets.len() >= MAX_OPEN {
                packets.retain(|_, s| ts_ns.saturating_sub(s.last_ns) < FLOW_MATCH_NS);
            }
            packets.insert(
                (sig, ident),
                Sighting {
                    skb: skb_addr,
                    last_ns: ts_ns,
                    freed,
                },
            );
        }
        step
    }

    /// How many journeys are open (seen, not yet freed).
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xffff_8880_0a00_0100;
    const B: u64 = 0xffff_8880_0a00_0200;
    const C: u64 = 0xffff_8880_0a00_0300;
    const D: u64 = 0xffff_8880_0a00_0400;

    #[test]
    fn a_decision_without_an_skb_joins_the_packets_journey_across_a_copy() {
        let mut j = Journeys::new();
        // Not following packets: no journey for it.
        j.packet(A, 1_000, (7, 70), None, true, false);
        assert!(j.packet_hop(1_100, (7, 70)).is_none());

        let mut j = Journeys::new();
        j.follow_packets();
        let sent = j.packet(A, 1_000, (7, 70), None, false, true);
        let freed = j.packet(A, 1_200, (7, 70), None, true, false);
        let (xdp, skb) = j
            .packet_hop(1_500, (7, 70))
            .expect("the freed skb's packet");
        assert_eq!(skb, A);
        assert_eq!(
            (xdp.packet_id, xdp.hop, xdp.delta_ns),
            (sent.packet_id, freed.hop + 1, Some(300))
        );
        // The copy, a new skb, continues it; another packet in a new skb does not.
        let copy = j.packet(B, 1_800, (7, 70), None, false, false);
        assert_eq!((copy.packet_id, copy.hop), (sent.packet_id, xdp.hop + 1));
        assert!(j.take_awaited().is_none(), "a journey continued, not begun");
        let other = j.packet(C, 1_900, (8, 80), None, false, false);
        assert_ne!(other.packet_id, sent.packet_id);
        // Another packet's signature with the same identity is not it.
        assert!(j.packet_hop(2_000, (9, 70)).is_none());
        // Seen too long ago: the decision may begin a journey, which the next new skb with
        // the packet takes, as its second hop.
        assert!(j.packet_hop(20_000_000, (7, 70)).is_none());
        let nic = j.packet(D, 20_000_400, (7, 70), None, false, false);
        assert_eq!((nic.hop, nic.delta_ns), (2, Some(400)));
        assert_eq!(nic.first_seen_ns, 20_000_000);
        assert_eq!(j.take_awaited(), Some((7, 70)));
    }

    #[test]
    fn hops_of_one_skb_share_an_id_and_chain_deltas() {
        let mut j = Journeys::new();
        let s1 = j.step(A, 1_000, 7, false);
        let s2 = j.step(A, 1_500, 7, false);
        let s3 = j.step(A, 4_000, 7, false);
        assert_eq!((s1.packet_id, s1.delta_ns, s1.hop), (1, None, 1));
        assert_eq!((s2.packet_id, s2.delta_ns, s2.hop), (1, Some(500), 2));
        assert_eq!((s3.packet_id, s3.delta_ns, s3.hop), (1, Some(2_500), 3));
        assert_eq!(s3.first_seen_ns, 1_000);
    }

    #[test]
    fn interleaved_packets_keep_their_own_journeys() {
        let mut j = Journeys::new();
        assert_eq!(j.step(A, 10, 7, false).packet_id, 1);
        assert_eq!(j.step(B, 20, 7, false).packet_id, 2);
        let a2 = j.step(A, 35, 7, false);
        let b2 = j.step(B, 36, 7, false);
        assert_eq!((a2.packet_id, a2.delta_ns), (1, Some(25)));
        assert_eq!((b2.packet_id, b2.delta_ns), (2, Some(16)));
    }

    #[test]
    fn a_freed_skb_address_starts_a_new_journey() {
        let mut j = Journeys::new();
        j.step(A, 10, 7, false);
        let free = j.step(A, 20, 7, true);
        assert_eq!((free.packet_id, free.delta_ns), (1, Some(10)));
        assert_eq!(j.open(), 0);
        let reused = j.step(A, 30, 7, false);
        assert_eq!(
            (reused.packet_id, reused.delta_ns, reused.hop),
            (2, None, 1)
        );
    }

    #[test]
    fn an_idle_address_starts_a_new_journey() {
        let mut j = Journeys::new();
        j.step(A, 10, 7, false);
        let late = j.step(A, 10 + IDLE_NS, 7, false);
        assert_eq!((late.packet_id, late.delta_ns), (2, None));
    }

    #[test]
    fn a_different_packet_at_the_same_address_starts_a_new_journey() {
        // The skb was freed where no tracepoint fires, then reused for another packet.
        let mut j = Journeys::new();
        j.step(A, 10, 7, false);
        let other = j.step(A, 20, 8, false);
        assert_eq!((other.packet_id, other.delta_ns), (2, None));
        assert_eq!(j.step(A, 25, 8, false).packet_id, 2);
    }

    #[test]
    fn a_sighting_without_headers_stays_on_the_journey() {
        // Headers still in page fragments at the receive hooks, read once IP pulled them.
        let mut j = Journeys::new();
        assert_eq!(j.step(A, 10, UNKNOWN_SIG, false).packet_id, 1);
        assert_eq!(j.step(A, 20, UNKNOWN_SIG, false).packet_id, 1);
        let known = j.step(A, 30, 7, false);
        assert_eq!(
            (known.packet_id, known.delta_ns, known.hop),
            (1, Some(10), 3)
        );
        // The journey now has that signature: another one, or none, is another packet
        // (the address reused after a free no hook saw).
        assert_eq!(j.step(A, 40, 8, false).packet_id, 2);
        assert_eq!(j.step(B, 50, 7, false).packet_id, 3);
        assert_eq!(j.step(B, 60, UNKNOWN_SIG, false).packet_id, 4);
    }

    fn flow(src: &str, dst: &str) -> Flow {
        Flow {
            src: Some(src.parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            proto: Some("icmp".into()),
            ports: None,
        }
    }

    #[test]
    fn a_lookup_joins_the_packet_just_received_with_its_flow() {
        let mut j = Journeys::new();
        let req = flow("10.0.1.1", "10.0.2.2");
        j.packet(A, 1_000, (7, 0), Some(&req), false, true);
        // Another flow's packet in between does not matter.
        j.packet(
            B,
            1_100,
            (9, 0),
            Some(&flow("10.0.9.9", "10.0.2.2")),
            false,
            true,
        );
        let fib = j.lookup(&req, 1_500, false, None);
        assert_eq!((fib.packet_id, fib.hop, fib.delta_ns), (1, 2, Some(500)));
        // The next hop of the skb counts from the lookup.
        let out = j.packet(A, 2_000, (7, 0), Some(&req), false, true);
        assert_eq!((out.packet_id, out.hop, out.delta_ns), (1, 3, Some(500)));
        // Too late: a lookup of the same flow much later is another packet's.
        let late = j.lookup(&req, 2_000 + FLOW_MATCH_NS, false, None);
        assert_ne!(late.packet_id, 1);
    }

    #[test]
    fn a_lookup_before_the_skb_opens_the_journey_the_skb_continues() {
        let mut j = Journeys::new();
        let reply = flow("10.0.2.2", "10.0.1.1");
        // Two lookups (local table: no match; main: found), then the skb is built.
        let local = j.lookup(&reply, 100, true, None);
        let main = j.lookup(&reply, 150, true, None);
        assert_eq!((local.packet_id, local.hop), (1, 1));
        assert_eq!((main.packet_id, main.hop, main.delta_ns), (1, 2, Some(50)));
        let skb = j.packet(A, 400, (7, 0), Some(&reply), false, true);
        assert_eq!((skb.packet_id, skb.hop, skb.delta_ns), (1, 3, Some(250)));
        assert_eq!(j.packet(A, 500, (7, 0), Some(&reply), false, true).hop, 4);
        // A packet of another flow does not adopt a detached lookup.
        j.lookup(&flow("10.0.3.3", "10.0.1.1"), 600, true, None);
        let other = j.packet(B, 700, (8, 0), Some(&reply), false, true);
        assert_eq!((other.packet_id, other.hop), (3, 1));
    }

    #[test]
    fn a_lookup_without_a_source_matches_any_source() {
        let mut j = Journeys::new();
        let mut unsourced = flow("0.0.0.0", "10.0.1.1");
        let first = j.lookup(&unsourced, 100, true, None);
        let skb = j.packet(
            A,
            300,
            (7, 0),
            Some(&flow("10.0.2.2", "10.0.1.1")),
            false,
            true,
        );
        assert_eq!((skb.packet_id, skb.hop), (first.packet_id, 2));
        unsourced.src = None;
        let again = j.lookup(&unsourced, 400, false, None);
        assert_eq!((again.packet_id, again.hop), (first.packet_id, 3));
        // An input route lookup names no protocol.
        let mut input = flow("10.0.2.2", "10.0.1.1");
        input.proto = None;
        let routed = j.lookup(&input, 450, false, None);
        assert_eq!((routed.packet_id, routed.hop), (first.packet_id, 4));
    }

    #[test]
    fn only_a_packet_leaving_continues_a_lookup_made_before_it() {
        let mut j = Journeys::new();
        let out = flow("10.0.1.1", "10.0.2.2");
        let lookup = j.lookup(&out, 100, true, None);
        // First seen received, or freed: not the packet the lookup was for.
        let rx = j.packet(A, 200, (7, 0), Some(&out), false, false);
        let freed = j.packet(B, 250, (7, 0), Some(&out), true, true);
        assert!(rx.packet_id != lookup.packet_id && freed.packet_id != lookup.packet_id);
        let tx = j.packet(C, 300, (7, 0), Some(&out), false, true);
        assert_eq!((tx.packet_id, tx.hop), (lookup.packet_id, 2));
        // An input lookup (no protocol) with no packet before it is on its own.
        let mut input = flow("10.0.2.2", "10.0.1.1");
        input.proto = None;
        let alone = j.lookup(&input, 400, false, None);
        let later = j.packet(
            D,
            500,
            (9, 0),
            Some(&flow("10.0.2.2", "10.0.1.1")),
            false,
            true,
        );
        assert_ne!(later.packet_id, alone.packet_id);
    }

    #[test]
    fn a_senders_lookup_for_the_next_datagram_starts_a_new_journey() {
        let mut j = Journeys::new();
        let udp = flow("10.0.1.1", "10.0.2.2");
        let first = j.lookup(&udp, 100, true, None);
        let sent = j.packet(A, 200, (7, 0), Some(&udp), false, true);
        assert_eq!(sent.packet_id, first.packet_id);
        // The next datagram of the same flow, a millisecond later: its lookup is not a hop
        // of the first datagram's journey, and its skb continues the new one.
        let next = j.lookup(&udp, 1_000_200, true, None);
        assert_ne!(next.packet_id, first.packet_id);
        assert_eq!(next.hop, 1);
        let second = j.packet(B, 1_000_300, (7, 0), Some(&udp), false, true);
        assert_eq!((second.packet_id, second.hop), (next.packet_id, 2));
    }

    #[test]
    fn a_rewrite_keeps_the_journey_and_names_the_flow_before_it() {
        let mut j = Journeys::new();
        let before = flow("10.0.1.2", "10.0.1.100");
        let after = flow("10.0.2.1", "10.0.2.2");
        j.packet(A, 10, (7, 99), Some(&before), false, false);
        assert_eq!(j.take_rewrite(), None);
        // DNAT and masquerade: a new signature, the same identity.
        let nat = j.packet(A, 20, (8, 99), Some(&after), false, true);
        assert_eq!((nat.packet_id, nat.hop, nat.delta_ns), (1, 2, Some(10)));
        assert_eq!(j.take_rewrite(), Some(Some(before)));
        assert_eq!(j.take_rewrite(), None, "taken");
        assert_eq!(j.packet(A, 30, (8, 99), Some(&after), false, true).hop, 3);
        assert_eq!(j.take_rewrite(), None, "no rewrite since");
        // Another packet in the reused skb (another identity), or an unknown one.
        assert_eq!(j.packet(A, 40, (9, 100), None, false, true).packet_id, 2);
        assert_eq!(j.packet(A, 50, (10, 0), None, false, true).packet_id, 3);
        assert_eq!(j.take_rewrite(), None);
    }

    #[test]
    fn an_input_lookup_after_dnat_joins_the_packet_its_cpu_received() {
        let mut j = Journeys::new();
        let received = flow("10.0.1.2", "10.0.1.100");
        j.packet(A, 1_000, (7, 99), Some(&received), false, false);
        // The lookup sees the translated destination, which no packet carried yet.
        let mut translated = flow("10.0.1.2", "10.0.2.2");
        translated.proto = None;
        let fib = j.lookup(&translated, 1_200, false, Some(A));
        assert_eq!((fib.packet_id, fib.hop), (1, 2));
        // Not an output lookup, and not once the packet is long gone.
        assert_ne!(j.lookup(&translated, 1_300, true, Some(A)).packet_id, 1);
        let late = j.lookup(&translated, 1_200 + FLOW_MATCH_NS, false, Some(A));
        assert_ne!(late.packet_id, 1);
    }

    #[test]
    fn out_of_order_events_get_a_zero_delta() {
        let mut j = Journeys::new();
        j.step(A, 100, 7, false);
        let early = j.step(A, 90, 7, false);
        assert_eq!(early.delta_ns, Some(0));
        // The journey's clock does not go backwards.
        assert_eq!(j.step(A, 130, 7, false).delta_ns, Some(30));
    }
}
