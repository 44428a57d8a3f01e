//! One packet, one journey: packet ids and per-hop latency.
//!
//! A packet is identified by its `sk_buff` address together with the time it was first seen:
//! the same skb crosses veth pairs, namespaces and forwarding unchanged. An skb freed
//! (`kfree_skb`, `consume_skb`) ends its journey, so a reused address starts a new one. Some
//! frees have no tracepoint (`__kfree_skb`, used by TCP), so an address also starts a new
//! journey when its packet's header signature (addresses, ports, protocol, ICMP id and
//! sequence) changes, or when it was not seen for [`IDLE_NS`].

use std::collections::HashMap;

/// An skb address silent for this long starts a new journey when seen again.
pub const IDLE_NS: u64 = 2_000_000_000;
/// Journeys kept before idle ones are swept.
const MAX_OPEN: usize = 65_536;

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

#[derive(Clone, Copy, Debug)]
struct Open {
    packet_id: u64,
    first_seen_ns: u64,
    last_ns: u64,
    hops: u32,
    sig: u64,
}

/// Assigns events to journeys.
#[derive(Debug, Default)]
pub struct Journeys {
    open: HashMap<u64, Open>,
    next_id: u64,
}

impl Journeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event of the skb at `skb_addr` at time `ts_ns`, carrying a packet with
    /// header signature `sig`; `ends` when the hook frees the skb. Events must come in time order per skb (a ring buffer from several
    /// CPUs can swap near-simultaneous events; a negative delta is shown as 0).
    pub fn step(&mut self, skb_addr: u64, ts_ns: u64, sig: u64, ends: bool) -> Step {
        let current = self
            .open
            .get(&skb_addr)
            .copied()
            .filter(|o| o.sig == sig && ts_ns.saturating_sub(o.last_ns) < IDLE_NS);
        let step = match current {
            Some(o) => {
                let hops = o.hops + 1;
                self.open.insert(
                    skb_addr,
                    Open {
                        last_ns: ts_ns.max(o.last_ns),
                        hops,
                        ..o
                    },
                );
                Step {
                    packet_id: o.packet_id,
                    first_seen_ns: o.first_seen_ns,
                    delta_ns: Some(ts_ns.saturating_sub(o.last_ns)),
                    hop: hops,
                }
            }
            None => {
                self.next_id += 1;
                if self.open.len() >= MAX_OPEN {
                    self.open
                        .retain(|_, o| ts_ns.saturating_sub(o.last_ns) < IDLE_NS);
                }
                self.open.insert(
                    skb_addr,
                    Open {
                        packet_id: self.next_id,
                        first_seen_ns: ts_ns,
                        last_ns: ts_ns,
                        hops: 1,
                        sig,
                    },
                );
                Step {
                    packet_id: self.next_id,
                    first_seen_ns: ts_ns,
                    delta_ns: None,
                    hop: 1,
                }
            }
        };
        if ends {
            self.open.remove(&skb_addr);
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
    fn out_of_order_events_get_a_zero_delta() {
        let mut j = Journeys::new();
        j.step(A, 100, 7, false);
        let early = j.step(A, 90, 7, false);
        assert_eq!(early.delta_ns, Some(0));
        // The journey's clock does not go backwards.
        assert_eq!(j.step(A, 130, 7, false).delta_ns, Some(30));
    }
}
