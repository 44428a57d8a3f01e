//! The data buffers of packets on their way, by which their clones (other skbs sharing a
//! packet's data) find its journey; and the journey progress they share.

use std::{cell::Cell, rc::Rc};

use super::{FLOW_MATCH_NS, IDLE_NS, Progress, Step, UNKNOWN_SIG};

/// The progress of a journey several skbs may be on (a packet and its clones).
#[derive(Clone, Debug)]
pub(super) struct Shared(Rc<Cell<Progress>>);

impl Shared {
    pub(super) fn new(p: Progress) -> Self {
        Self(Rc::new(Cell::new(p)))
    }

    pub(super) fn get(&self) -> Progress {
        self.0.get()
    }

    pub(super) fn advance(&self, ts_ns: u64) -> Step {
        let mut p = self.0.get();
        let step = p.advance(ts_ns);
        self.0.set(p);
        step
    }

    /// One more event, at `ts_ns`, of a clone whose previous event (or, for its first, the
    /// packet's last when it joined) was at `last_ns`: the journey's hops go on, its clock
    /// stays the packet's own, so that the packet's next hop is timed from its own last.
    pub(super) fn advance_clone(&self, ts_ns: u64, last_ns: u64) -> Step {
        let mut p = self.0.get();
        p.hops += 1;
        self.0.set(p);
        Step {
            packet_id: p.packet_id,
            first_seen_ns: p.first_seen_ns,
            delta_ns: Some(ts_ns.saturating_sub(last_ns)),
            hop: p.hops,
            clone: true,
        }
    }
}

/// The data buffer of a packet on its way, for its clones to find its journey by.
#[derive(Clone, Debug)]
pub(super) struct Buffer {
    pub(super) progress: Shared,
    /// The skb whose buffer it is, and that packet's signature and identity.
    pub(super) skb: u64,
    sig: u64,
    ident: u64,
    /// When that skb was freed (its clones may outlive it).
    pub(super) freed_ns: Option<u64>,
}

impl Buffer {
    /// The buffer of `skb`, on the journey `progress` follows, carrying headers
    /// `(sig, ident)`.
    pub(super) fn new(progress: &Shared, skb: u64, (sig, ident): (u64, u64)) -> Self {
        Self {
            progress: progress.clone(),
            skb,
            sig,
            ident,
            freed_ns: None,
        }
    }

    /// Whether a new skb first seen at `ts_ns` with this buffer and headers `(sig, ident)`
    /// (`ends`: at its free) is a clone of its packet. The same identity (the same
    /// signature when there is none); after the original's free, only a clone's own free
    /// soon after: a new packet in a reused buffer is seen on its way first.
    pub(super) fn takes(&self, (sig, ident): (u64, u64), ts_ns: u64, ends: bool) -> bool {
        let same = if ident != 0 {
            ident == self.ident
        } else {
            self.ident == 0 && sig != UNKNOWN_SIG && sig == self.sig
        };
        same && (self.freed_ns.is_none() || ends) && self.live(ts_ns)
    }

    /// Whether it may still take a clone at `ts_ns` (kept when sweeping): its packet is on
    /// its way, or was freed less than [`FLOW_MATCH_NS`] ago.
    pub(super) fn live(&self, ts_ns: u64) -> bool {
        match self.freed_ns {
            None => ts_ns.saturating_sub(self.progress.get().last_ns) < IDLE_NS,
            Some(f) => ts_ns.saturating_sub(f) < FLOW_MATCH_NS,
        }
    }
}
