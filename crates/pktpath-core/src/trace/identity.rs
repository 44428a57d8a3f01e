//! A packet's identity across rewrites: the header fields that address and port translation
//! (DNAT, SNAT, masquerade) and tunnel encapsulation leave as they are, so that a journey
//! survives them while a different packet in a reused `sk_buff` does not.
//!
//! What stays: for IPv4 the identification, total length and protocol; for IPv6 the payload
//! length, next header and flow label; above them the ICMP type, code and echo sequence,
//! the TCP sequence and acknowledgment numbers, the UDP length. NAT may change the ICMP echo
//! id (masquerade keeps it unless two hosts behind it use the same one), addresses, ports
//! and checksums, so those are out. A VXLAN packet (UDP to port 4789 or 8472) is known by
//! the packet it carries: encapsulation and decapsulation keep the identity.
//!
//! A reused `sk_buff` (freed where no tracepoint fires, as TCP does) carries another
//! packet: another IPv4 identification or TCP sequence, ICMP sequence or length. What
//! identity cannot tell apart, two datagrams of one unconnected socket with `DF` set (their
//! identification is 0) and the same length, the journey's time bound still separates
//! unless they follow each other in the same `sk_buff` within it.

use pktpath_common::net::{ETH_P_IP, ETH_P_IPV6};

use super::fasthash;

/// The identity of headers that have none (too short, or neither IPv4 nor IPv6).
pub const NO_IDENTITY: u64 = 0;

/// UDP ports VXLAN is sent to: IANA's, and the one Linux used before it.
const VXLAN_PORTS: [u16; 2] = [4789, 8472];
/// VXLAN header and the inner Ethernet header.
const VXLAN_AND_ETHERNET: usize = 8 + 14;
/// Tunnels nested deeper than this are known by the outermost packet.
const MAX_DEPTH: usize = 2;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The identity of the packet whose headers (from the network header on) are `bytes`,
/// EtherType `ethertype`; [`NO_IDENTITY`] when they say too little.
pub fn identity(ethertype: u16, bytes: &[u8]) -> u64 {
    identity_at(ethertype, bytes, 0).unwrap_or(NO_IDENTITY)
}

fn identity_at(ethertype: u16, b: &[u8], depth: usize) -> Option<u64> {
    let (ip, proto, l4) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(*b.first()? & 0x0f) * 4;
            if ihl < 20 || b.first()? >> 4 != 4 {
                return None;
            }
            // Total length, identification; protocol.
            let ip = u64::from(u16_at(b, 2)?) << 16 | u64::from(u16_at(b, 4)?);
            (ip, *b.get(9)?, b.get(ihl..)?)
        }
        ETH_P_IPV6 => {
            if b.first()? >> 4 != 6 {
                return None;
            }
            // Flow label, payload length (extension headers are not walked: their next
            // header is the protocol here, which is enough to tell packets apart).
            let word = u64::from(u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) & 0xf_ffff);
            let ip = word << 16 | u64::from(u16_at(b, 4)?);
            (ip, *b.get(6)?, b.get(40..)?)
        }
        _ => return None,
    };
    let l4_word = match proto {
        IPPROTO_UDP => {
            let dport = u16_at(l4, 2)?;
            if depth < MAX_DEPTH && VXLAN_PORTS.contains(&dport) {
                let inner = l4.get(8 + VXLAN_AND_ETHERNET..);
                let inner_type = u16_at(l4, 8 + VXLAN_AND_ETHERNET - 2);
                if let (Some(inner), Some(t)) = (inner, inner_type)
                    && let Some(id) = identity_at(t, inner, depth + 1)
                {
                    return Some(id);
                }
            }
            u64::from(u16_at(l4, 4)?)
        }
        IPPROTO_TCP => u64_at(l4, 4)?,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // Type, code; sequence (meaningful for echo, harmless otherwise).
            u64::from(u16_at(l4, 0)?) << 16 | u64::from(u16_at(l4, 6)?)
        }
        _ => 0,
    };
    let id = fasthash::hash_one([u64::from(ethertype) << 8 | u64::from(proto), ip, l4_word]);
    Some(if id == NO_IDENTITY { 1 } else { id })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 ICMP echo request from `src` to `dst`, identification `ipid`, sequence `seq`.
    fn echo(src: [u8; 4], dst: [u8; 4], ipid: u16, icmp_id: u16, seq: u16) -> Vec<u8> {
        let mut b = vec![0x45, 0, 0, 84];
        b.extend_from_slice(&ipid.to_be_bytes());
        b.extend_from_slice(&[0x40, 0, 64, 1, 0, 0]);
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[8, 0, 0xab, 0xcd]);
        b.extend_from_slice(&icmp_id.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b
    }

    /// `inner` in VXLAN over IPv4/UDP to port 4789.
    fn vxlan(inner: &[u8]) -> Vec<u8> {
        let mut b = vec![0x45, 0, 0, 134, 0x12, 0x34, 0, 0, 64, 17, 0, 0];
        b.extend_from_slice(&[172, 16, 0, 1, 172, 16, 0, 2]);
        b.extend_from_slice(&[0xc3, 0x50, 0x12, 0xb5, 0, 114, 0, 0]);
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 42, 0]);
        b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
        b.extend_from_slice(inner);
        b
    }

    #[test]
    fn address_and_echo_id_rewrites_keep_the_identity() {
        let before = echo([10, 0, 1, 2], [10, 0, 1, 100], 777, 5, 1);
        let after = echo([10, 0, 2, 1], [10, 0, 2, 2], 777, 6, 1);
        assert_ne!(identity(ETH_P_IP, &before), NO_IDENTITY);
        assert_eq!(identity(ETH_P_IP, &before), identity(ETH_P_IP, &after));
    }

    #[test]
    fn another_packet_has_another_identity() {
        let one = echo([10, 0, 1, 2], [10, 0, 1, 100], 777, 5, 1);
        let next_seq = echo([10, 0, 1, 2], [10, 0, 1, 100], 777, 5, 2);
        let next_id = echo([10, 0, 1, 2], [10, 0, 1, 100], 778, 5, 1);
        let id = identity(ETH_P_IP, &one);
        assert_ne!(id, identity(ETH_P_IP, &next_seq));
        assert_ne!(id, identity(ETH_P_IP, &next_id));
    }

    #[test]
    fn a_vxlan_packet_is_known_by_the_packet_it_carries() {
        let inner = echo([10, 0, 9, 1], [10, 0, 9, 2], 4242, 5, 3);
        assert_eq!(
            identity(ETH_P_IP, &vxlan(&inner)),
            identity(ETH_P_IP, &inner)
        );
    }

    #[test]
    fn short_or_foreign_headers_have_none() {
        assert_eq!(identity(ETH_P_IP, &[0x45, 0, 0]), NO_IDENTITY);
        assert_eq!(identity(0x0806, &[0; 28]), NO_IDENTITY);
        let v6_in_v4 = echo([10, 0, 1, 2], [10, 0, 1, 100], 1, 1, 1);
        assert_eq!(identity(ETH_P_IPV6, &v6_in_v4), NO_IDENTITY);
    }
}
