//! A packet's identity across rewrites: the header fields that address and port translation
//! (DNAT, SNAT, masquerade) and tunnel encapsulation leave as they are, so that a journey
//! survives them while a different packet in a reused `sk_buff` does not.
//!
//! What stays: for IPv4 the identification, total length and protocol; for IPv6 the payload
//! length, next header and flow label; above them the ICMP type, code and echo sequence,
//! the TCP sequence and acknowledgment numbers, the UDP length. NAT may change the ICMP echo
//! id (masquerade keeps it unless two hosts behind it use the same one), addresses, ports
//! and checksums, so those are out. A tunnel's packet is known by the packet it carries, so
//! that encapsulation and decapsulation keep the identity: VXLAN (UDP to port 4789 or 8472),
//! GRE (IP protocol 47, version 0: `gre`, `ip6gre`, and `gretap`/`ip6gretap`, which carry
//! Ethernet) and IP in IP (protocol 4 or 41: `ipip`, `sit`, `ip6tnl`, the latter past the
//! Destination Options header that carries its encapsulation limit).
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
/// GRE's protocol type for Ethernet (transparent Ethernet bridging: gretap, ip6gretap).
const ETH_P_TEB: u16 = 0x6558;
/// GRE flags: checksum, routing, key and sequence number present; the version bits.
const GRE_CSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

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
    // `whole`: the transport or tunnel header follows (not a later fragment).
    let (ip, proto, l4, whole) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(*b.first()? & 0x0f) * 4;
            if ihl < 20 || b.first()? >> 4 != 4 {
                return None;
            }
            // Total length, identification; protocol.
            let ip = u64::from(u16_at(b, 2)?) << 16 | u64::from(u16_at(b, 4)?);
            let first_fragment = u16_at(b, 6)? & 0x1fff == 0;
            (ip, *b.get(9)?, b.get(ihl..)?, first_fragment)
        }
        ETH_P_IPV6 => {
            if b.first()? >> 4 != 6 {
                return None;
            }
            // Flow label, payload length (extension headers are not walked: their next
            // header is the protocol here, which is enough to tell packets apart).
            let word = u64::from(u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) & 0xf_ffff);
            let ip = word << 16 | u64::from(u16_at(b, 4)?);
            (ip, *b.get(6)?, b.get(40..)?, true)
        }
        _ => return None,
    };
    if depth < MAX_DEPTH
        && whole
        && let Some((t, inner)) = carried(proto, l4, ethertype == ETH_P_IPV6)
        && let Some(id) = identity_at(t, inner, depth + 1)
    {
        return Some(id);
    }
    let l4_word = match proto {
        IPPROTO_UDP => u64::from(u16_at(l4, 4)?),
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

/// The packet a tunnel's header carries, as (its EtherType, its bytes from the network header
/// on), when the header after the IP header (protocol `proto`, bytes `l4`) is a tunnel's.
/// `past_options`: one IPv6 Destination Options header (ip6tnl's encapsulation limit) may
/// come first.
fn carried(proto: u8, l4: &[u8], past_options: bool) -> Option<(u16, &[u8])> {
    match proto {
        IPPROTO_IPIP => Some((ETH_P_IP, l4)),
        IPPROTO_IPV6 => Some((ETH_P_IPV6, l4)),
        IPPROTO_GRE => gre_carried(l4),
        IPPROTO_UDP if VXLAN_PORTS.contains(&u16_at(l4, 2)?) => Some((
            u16_at(l4, 8 + VXLAN_AND_ETHERNET - 2)?,
            l4.get(8 + VXLAN_AND_ETHERNET..)?,
        )),
        IPPROTO_DSTOPTS if past_options => {
            let len = (usize::from(*l4.get(1)?) + 1) * 8;
            carried(*l4.first()?, l4.get(len..)?, false)
        }
        _ => None,
    }
}

/// What a GRE header (version 0, no routing) carries: IPv4, IPv6, or Ethernet.
fn gre_carried(gre: &[u8]) -> Option<(u16, &[u8])> {
    let flags = u16_at(gre, 0)?;
    if flags & (GRE_VERSION | GRE_ROUTING) != 0 {
        return None;
    }
    let len = 4 + [GRE_CSUM, GRE_KEY, GRE_SEQ]
        .iter()
        .filter(|&&bit| flags & bit != 0)
        .count()
        * 4;
    match u16_at(gre, 2)? {
        ETH_P_TEB => Some((u16_at(gre, len + 12)?, gre.get(len + 14..)?)),
        t => Some((t, gre.get(len..)?)),
    }
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

    /// An IPv6 ICMPv6 echo request, flow label `flow`, sequence `seq`.
    fn echo6(flow: u32, seq: u16) -> Vec<u8> {
        let mut b = (0x6000_0000u32 | flow).to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 16, IPPROTO_ICMPV6, 64]);
        b.extend_from_slice(&[0xfd, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0xfd, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend_from_slice(&[128, 0, 0xab, 0xcd, 0, 7]);
        b.extend_from_slice(&seq.to_be_bytes());
        b
    }

    /// `payload` after an outer IPv4 header of protocol `proto` (172.16.0.1 > 172.16.0.2),
    /// fragment offset `frag`.
    fn outer4(proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(20 + payload.len()).expect("short");
        let mut b = vec![0x45, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[0x56, 0x78]);
        b.extend_from_slice(&frag.to_be_bytes());
        b.extend_from_slice(&[64, proto, 0, 0, 172, 16, 0, 1, 172, 16, 0, 2]);
        b.extend_from_slice(payload);
        b
    }

    /// `payload` after an outer IPv6 header of next header `next` (fd16::1 > fd16::2).
    fn outer6(next: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).expect("short");
        let mut b = vec![0x60, 0x0a, 0xbc, 0xde];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        b.extend_from_slice(&[0xfd, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0xfd, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend_from_slice(payload);
        b
    }

    /// A GRE header with `flags` (its optional words zero), protocol type `ptype`, then
    /// `inner`.
    fn gre(flags: u16, ptype: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = flags.to_be_bytes().to_vec();
        b.extend_from_slice(&ptype.to_be_bytes());
        for bit in [GRE_CSUM, GRE_KEY, GRE_SEQ] {
            if flags & bit != 0 {
                b.extend_from_slice(&[0, 0, 0, 9]);
            }
        }
        b.extend_from_slice(inner);
        b
    }

    /// An Ethernet header of EtherType `ethertype`, then `inner`.
    fn ethernet(ethertype: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        b.extend_from_slice(&ethertype.to_be_bytes());
        b.extend_from_slice(inner);
        b
    }

    #[test]
    fn a_gre_packet_is_known_by_the_packet_it_carries() {
        let inner = echo([10, 0, 9, 1], [10, 0, 9, 2], 4242, 5, 3);
        let id = identity(ETH_P_IP, &inner);
        // gre, with no options and with checksum, key and sequence number.
        for flags in [0, GRE_CSUM | GRE_KEY | GRE_SEQ, GRE_KEY] {
            let packet = outer4(IPPROTO_GRE, 0, &gre(flags, ETH_P_IP, &inner));
            assert_eq!(identity(ETH_P_IP, &packet), id, "flags {flags:#x}");
        }
        // gretap: Ethernet in GRE.
        let tap = gre(0, ETH_P_TEB, &ethernet(ETH_P_IP, &inner));
        assert_eq!(identity(ETH_P_IP, &outer4(IPPROTO_GRE, 0, &tap)), id);
        // ip6gre and ip6gretap, IPv6 inside.
        let inner6 = echo6(0x12345, 9);
        let id6 = identity(ETH_P_IPV6, &inner6);
        assert_ne!(id6, NO_IDENTITY);
        let packet = outer6(IPPROTO_GRE, &gre(GRE_KEY, ETH_P_IPV6, &inner6));
        assert_eq!(identity(ETH_P_IPV6, &packet), id6);
        let tap = outer6(
            IPPROTO_GRE,
            &gre(0, ETH_P_TEB, &ethernet(ETH_P_IPV6, &inner6)),
        );
        assert_eq!(identity(ETH_P_IPV6, &tap), id6);
    }

    #[test]
    fn an_ip_in_ip_packet_is_known_by_the_packet_it_carries() {
        let inner = echo([10, 0, 9, 1], [10, 0, 9, 2], 4242, 5, 3);
        let inner6 = echo6(0x12345, 9);
        // ipip, sit.
        assert_eq!(
            identity(ETH_P_IP, &outer4(IPPROTO_IPIP, 0, &inner)),
            identity(ETH_P_IP, &inner)
        );
        assert_eq!(
            identity(ETH_P_IP, &outer4(IPPROTO_IPV6, 0, &inner6)),
            identity(ETH_P_IPV6, &inner6)
        );
        // ip6tnl, bare and with its encapsulation limit option first.
        assert_eq!(
            identity(ETH_P_IPV6, &outer6(IPPROTO_IPIP, &inner)),
            identity(ETH_P_IP, &inner)
        );
        let mut limit = vec![IPPROTO_IPV6, 0, 4, 1, 4, 1, 1, 0];
        limit.extend_from_slice(&inner6);
        assert_eq!(
            identity(ETH_P_IPV6, &outer6(IPPROTO_DSTOPTS, &limit)),
            identity(ETH_P_IPV6, &inner6)
        );
    }

    /// `payload` after a UDP header to VXLAN's port and a VXLAN header.
    fn vxlan_udp(inner: &[u8]) -> Vec<u8> {
        let len = u16::try_from(8 + VXLAN_AND_ETHERNET + inner.len()).expect("short");
        let mut b = vec![0xc3, 0x50, 0x12, 0xb5];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[0, 0, 8, 0, 0, 0, 0, 0, 42, 0]);
        b.extend_from_slice(inner);
        b
    }

    /// The tracer copies `HEADER_BYTES` of each packet: every tunnel kind followed, over
    /// IPv6 (the longer outer header) with its options at their longest, carrying IPv4 or
    /// IPv6, keeps the carried packet's identity within them. An echo request has its
    /// sequence in the last bytes its identity reads.
    #[test]
    fn every_tunnel_over_ipv6_fits_the_bytes_the_tracer_copies() {
        use pktpath_common::trace::HEADER_BYTES;
        let all = GRE_CSUM | GRE_KEY | GRE_SEQ;
        for (what, inner_type, inner) in [
            (
                "IPv4",
                ETH_P_IP,
                echo([10, 0, 9, 1], [10, 0, 9, 2], 4242, 5, 3),
            ),
            ("IPv6", ETH_P_IPV6, echo6(0x12345, 9)),
        ] {
            let id = identity(inner_type, &inner);
            // ip6tnl's and ip6gre's encapsulation limit, before the tunnel header.
            let limited = |next: u8, tunnel: &[u8]| {
                let mut b = vec![next, 0, 4, 1, 4, 1, 1, 0];
                b.extend_from_slice(tunnel);
                outer6(IPPROTO_DSTOPTS, &b)
            };
            let ip_in_ip = if inner_type == ETH_P_IP {
                IPPROTO_IPIP
            } else {
                IPPROTO_IPV6
            };
            let cases = [
                (
                    "vxlan",
                    outer6(IPPROTO_UDP, &vxlan_udp(&ethernet(inner_type, &inner))),
                ),
                (
                    "ip6gre",
                    limited(IPPROTO_GRE, &gre(all, inner_type, &inner)),
                ),
                (
                    "ip6gretap",
                    limited(
                        IPPROTO_GRE,
                        &gre(all, ETH_P_TEB, &ethernet(inner_type, &inner)),
                    ),
                ),
                ("ip6tnl", limited(ip_in_ip, &inner)),
            ];
            for (kind, packet) in cases {
                let copied = &packet[..packet.len().min(HEADER_BYTES)];
                assert_eq!(
                    identity(ETH_P_IPV6, copied),
                    id,
                    "{kind} over IPv6 carrying {what}: {} bytes, {HEADER_BYTES} copied",
                    packet.len()
                );
                // One byte fewer of the carried packet and it would not be followed: the
                // test measures what it claims.
                let short = &packet[..packet.len() - 1];
                assert_ne!(identity(ETH_P_IPV6, short), id, "{kind} carrying {what}");
            }
        }
    }

    #[test]
    fn headers_that_only_look_like_a_tunnel_are_known_by_themselves() {
        let inner = echo([10, 0, 9, 1], [10, 0, 9, 2], 4242, 5, 3);
        let id = identity(ETH_P_IP, &inner);
        // GRE version 1 (PPTP) and GRE with routing are not followed inside.
        for flags in [1, GRE_ROUTING] {
            let packet = outer4(IPPROTO_GRE, 0, &gre(flags, ETH_P_IP, &inner));
            let outer = identity(ETH_P_IP, &packet);
            assert_ne!(outer, NO_IDENTITY);
            assert_ne!(outer, id, "flags {flags:#x}");
        }
        // A later fragment of an IPIP packet holds no inner header.
        let later = outer4(IPPROTO_IPIP, 185, &inner);
        assert_ne!(identity(ETH_P_IP, &later), id);
        // Destination options are skipped only in IPv6.
        let mut opts = vec![IPPROTO_IPIP, 0, 1, 4, 0, 0, 0, 0];
        opts.extend_from_slice(&inner);
        assert_ne!(identity(ETH_P_IP, &outer4(IPPROTO_DSTOPTS, 0, &opts)), id);
    }

    #[test]
    fn short_or_foreign_headers_have_none() {
        assert_eq!(identity(ETH_P_IP, &[0x45, 0, 0]), NO_IDENTITY);
        assert_eq!(identity(0x0806, &[0; 28]), NO_IDENTITY);
        let v6_in_v4 = echo([10, 0, 1, 2], [10, 0, 1, 100], 1, 1, 1);
        assert_eq!(identity(ETH_P_IPV6, &v6_in_v4), NO_IDENTITY);
    }
}
