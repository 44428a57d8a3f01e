//! The fields of a packet that policies match on: one description of a header for the
//! reference model ([`crate::route::model`]), the data path's user-space search and its
//! frames (`datapath::classifier`, `datapath::frame`), `route get`, tests and benchmarks.
//!
//! The type is generic only in how it names the input interface: the model classifies by
//! the configuration's interfaces ([`InterfaceId`], the default), the data path by the
//! kernel's ([`Ifindex`]); [`PacketFields::with_iif`] turns one into the other. Forms a
//! layer needs beyond that are derived from these fields where they are used (the
//! classifier's key words: `datapath::classifier::key_of`).
//!
//! Ports: the data path reads a packet's ports only when it is TCP, UDP or SCTP and not a
//! fragment, and `sport` and `dport` are given (both) for exactly those packets, `None`
//! for the rest. A later fragment carries no ports, and the data path reads none from the
//! first fragment either, so that all fragments of a datagram get one decision: a TCP,
//! UDP or SCTP packet without ports stands for a fragment ([`PacketFields::is_fragment`]),
//! and its frame is built as a later one. The model reads `sport` and `dport` as they are;
//! the data path's key takes ports only from a packet with both ([`PacketFields::ports`]),
//! which is the same for any packet made as said here.

use std::net::{IpAddr, Ipv4Addr};

use pktpath_common::route::{FAMILY_V4, FAMILY_V6};
use serde::Serialize;

use crate::route::{compile::InterfaceId, config::Protocol};

/// The kernel's index of an interface: how the data path names the interface a packet
/// arrived on.
pub type Ifindex = u32;

/// The packet fields policies look at, with the input interface named as `I`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PacketFields<I = InterfaceId> {
    /// The interface the packet arrived on.
    pub iif: I,
    /// Source address (IPv4 or IPv6).
    pub src: IpAddr,
    /// Destination address, of the same family as `src`.
    pub dst: IpAddr,
    /// IP protocol / IPv6 next header.
    pub proto: u8,
    /// Source port; `None` when the packet carries none (not TCP/UDP/SCTP, or a
    /// fragment: see the module's docs).
    pub sport: Option<u16>,
    /// Destination port; as for `sport`.
    pub dport: Option<u16>,
    /// DSCP, 0-63.
    pub dscp: u8,
    /// Packet mark.
    pub mark: u32,
}

impl<I> PacketFields<I> {
    /// The same packet arriving on `iif`.
    pub fn with_iif<J>(self, iif: J) -> PacketFields<J> {
        PacketFields {
            iif,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            dscp: self.dscp,
            mark: self.mark,
        }
    }

    /// The family as rules and next hops name it ([`FAMILY_V4`] or [`FAMILY_V6`]): the
    /// source address's.
    pub fn family(&self) -> u8 {
        match self.src {
            IpAddr::V4(_) => FAMILY_V4,
            IpAddr::V6(_) => FAMILY_V6,
        }
    }

    /// The source and destination ports the data path reads: both, for a TCP, UDP or SCTP
    /// packet that carries them; `None` for any other packet and for fragments.
    pub fn ports(&self) -> Option<(u16, u16)> {
        if Protocol(self.proto).has_ports() {
            self.sport.zip(self.dport)
        } else {
            None
        }
    }

    /// A TCP, UDP or SCTP packet without ports: a fragment.
    pub fn is_fragment(&self) -> bool {
        Protocol(self.proto).has_ports() && self.ports().is_none()
    }
}

impl<I: Default> Default for PacketFields<I> {
    /// A packet of protocol 0 from 0.0.0.0 to 0.0.0.0, without ports, DSCP or mark (tests
    /// fill in what they need).
    fn default() -> Self {
        Self {
            iif: I::default(),
            src: Ipv4Addr::UNSPECIFIED.into(),
            dst: Ipv4Addr::UNSPECIFIED.into(),
            proto: 0,
            sport: None,
            dport: None,
            dscp: 0,
            mark: 0,
        }
    }
}
