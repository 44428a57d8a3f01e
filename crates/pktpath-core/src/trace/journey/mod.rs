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
//! A clone of an skb (a packet capture's copy, a raw socket's, a mirror's) shares the
//! original's data buffer: a new skb first seen with the buffer of a packet on its way, and
//! the same identity, is a hop of that packet's journey ([`Step::clone`]), and its free
//! does not end it. A clone may outlive its original (a raw socket's copy, read after the
//! original was freed): it still joins when its first sighting is its own free within
//! [`FLOW_MATCH_NS`] of the original's (a new packet in a reused buffer is seen on its way
//! before it is freed).
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

use self::clones::{Buffer, Shared};
use super::fasthash::FastMap;

mod clones;

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
            clone: false,
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
            clone: false,
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
    /// The event's skb is a clone of the packet's (see the module's docs).
    pub clone: bool,
}

#[derive(Clone, Debug)]
struct Open {
    progress: Shared,
    /// The skb's data buffer (`skb->head`); 0 when unknown.
    buffer: u64,
    /// The skb is a clone of the packet the journey follows, and when its last event was
    /// (a clone's events do not move the journey's clock, see [`Shared::advance_clone`]).
    clone: Option<u64>,
    sig: u64,
    /// The packet's identity ([`super::identity`]); 0 when unknown.
    ident: u64,
    /// The flow the headers carried since the journey began or was last rewritten (None
    /// when they had none): what a rewrite changed them from.
    flow: Option<Flow>,
}

impl Open {
    /// When the skb's last event was.
    fn last_ns(&self) -> u64 {
        self.clone.unwrap_or_else(|| self.progress.get().last_ns)
    }
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
    /// Packets on their way (and freed lately) by data buffer, for their clones.
    buffers: FastMap<u64, Buffer>,
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
                (o.progress.advance(ts_ns), o.progress.get())
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
        self.skb_step((skb_addr, 0), ts_ns, (sig, ident), None, false, false)
    }

    pub fn step(&mut self, skb_addr: u64, ts_ns: u64, sig: u64, ends: bool) -> Step {
        self.packet((skb_addr, 0), ts_ns, (sig, 0), None, ends, false)
    }

    /// When the last event given to [`Self::packet`] was a rewrite of its packet's headers
    /// (a new signature, the same identity): the flow before it (None inside when the
    /// headers before had no flow). None when it was not.
    pub fn take_rewrite(&mut self) -> Option<Option<Flow>> {
        self.rewritten.take()
    }

    /// [`Self::step`] for a packet with header signature and identity `(sig, ident)`
    /// carrying `flow` (when it has one), in data buffer `buffer` (0: unknown): the flow
    /// remembers the skb for later lookups, a new skb seen `outbound` (on a transmit hook)
    /// continues a detached journey of its flow, and a new skb in the buffer of a packet
    /// on its way is a clone of it.
    pub fn packet(
        &mut self,
        (skb_addr, buffer): (u64, u64),
        ts_ns: u64,
        (sig, ident): (u64, u64),
        flow: Option<&Flow>,
        ends: bool,
        outbound: bool,
    ) -> Step {
        let adopt = outbound && !ends;
        let step = self.skb_step((skb_addr, buffer), ts_ns, (sig, ident), flow, adopt, ends);
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
            && ts_ns.saturating_sub(o.last_ns()) < FLOW_MATCH_NS
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
        (skb_addr, buffer): (u64, u64),
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
            (same || rewritten) && ts_ns.saturating_sub(o.last_ns()) < IDLE_NS
        });
        let step = match current {
            Some(o) => {
                let changed = o.sig != sig || o.buffer != buffer;
                if o.sig == UNKNOWN_SIG {
                    o.sig = sig;
                    o.ident = ident;
                    o.flow = flow.cloned();
                } else if o.sig != sig {
                    o.sig = sig;
                    self.rewritten = Some(std::mem::replace(&mut o.flow, flow.cloned()));
                }
                // The packet's buffer as its clones will show it (a rewrite may have
                // copied the data to another).
                if changed && o.clone.is_none() && buffer != 0 {
                    o.buffer = buffer;
                    let b = Buffer::new(&o.progress, skb_addr, (sig, o.ident));
                    self.buffers.insert(buffer, b);
                }
                match &mut o.clone {
                    Some(last) => {
                        let step = o.progress.advance_clone(ts_ns, *last);
                        *last = (*last).max(ts_ns);
                        step
                    }
                    None => o.progress.advance(ts_ns),
                }
            }
            None => {
                if self.open.len() >= MAX_OPEN {
                    self.open
                        .retain(|_, o| ts_ns.saturating_sub(o.last_ns()) < IDLE_NS);
                }
                if self.buffers.len() >= MAX_OPEN {
                    self.buffers.retain(|_, b| b.live(ts_ns));
                }
                // A clone of a packet on its way? (Not noted for XDP's decisions below: they
                // follow the packet's own skb.)
                let cloned = self
                    .buffers
                    .get(&buffer)
                    .filter(|b| buffer != 0 && b.takes((sig, ident), ts_ns, ends))
                    .map(|b| b.progress.clone());
                if let Some(progress) = cloned {
                    let step = progress.advance_clone(ts_ns, progress.get().last_ns);
                    if !ends {
                        self.open.insert(
                            skb_addr,
                            Open {
                                progress,
                                buffer,
                                clone: Some(ts_ns),
                                sig,
                                ident,
                                flow: flow.cloned(),
                            },
                        );
                    }
                    return step;
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
                let progress = Shared::new(progress);
                if buffer != 0 {
                    let b = Buffer::new(&progress, skb_addr, (sig, ident));
                    self.buffers.insert(buffer, b);
                }
                self.open.insert(
                    skb_addr,
                    Open {
                        progress,
                        buffer,
                        clone: None,
                        sig,
                        ident,
                        flow: flow.cloned(),
                    },
                );
                step
            }
        };
        let freed = if ends {
            self.open.remove(&skb_addr).map(|o| {
                if let Some(b) = self.buffers.get_mut(&o.buffer)
                    && b.skb == skb_addr
                {
                    b.freed_ns = Some(ts_ns);
                }
                o.progress.get()
            })
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
mod tests;
