//! Parsing the packet header bytes a hook copied (from the network header on): IPv4, IPv6,
//! ARP, and over IP: TCP, UDP, ICMP, ICMPv6. Every access is bounds-checked; a truncated
//! header yields what could be read.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub use pktpath_common::net::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};

/// What the header bytes say about a packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// The innermost protocol recognised: `tcp`, `udp`, `icmp`, `icmp6`, a tunnel's outer
    /// protocol (`gre`, `ipip`, `ipv6-in-ip`: see [`ip_proto_name`]), `arp`, `ipv4`, `ipv6`
    /// (another IP protocol, or a later fragment), or the EtherType in hex (`0x88cc`).
    pub proto: Cow<'static, str>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type and code.
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// ICMP/ICMPv6 echo identifier and sequence number.
    pub icmp_id: Option<u16>,
    pub icmp_seq: Option<u16>,
    /// TCP flags, as letters (`S`, `SA`, `A`, `FA`, `R`, `PA`, ...).
    pub tcp_flags: Option<String>,
    /// ARP operation: 1 request, 2 reply.
    pub arp_op: Option<u16>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn v4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn v6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// Parses `bytes` (starting at the network header) of a packet with EtherType `ethertype`.
pub fn parse(ethertype: u16, bytes: &[u8]) -> Headers {
    let mut h = Headers::default();
    match ethertype {
        ETH_P_IP => parse_ipv4(bytes, &mut h),
        ETH_P_IPV6 => parse_ipv6(bytes, &mut h),
        ETH_P_ARP => parse_arp(bytes, &mut h),
        _ => h.proto = format!("{ethertype:#06x}").into(),
    }
    h
}

fn parse_ipv4(b: &[u8], h: &mut Headers) {
    h.proto = "ipv4".into();
    let Some(&vihl) = b.first() else { return };
    if vihl >> 4 != 4 {
        return;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    h.src = v4_at(b, 12).map(IpAddr::V4);
    h.dst = v4_at(b, 16).map(IpAddr::V4);
    let (Some(&proto), Some(frag)) = (b.get(9), u16_at(b, 6)) else {
        return;
    };
    // Only the first fragment carries the transport header.
    if ihl < 20 || frag & 0x1fff != 0 {
        return;
    }
    parse_l4(proto, b.get(ihl..).unwrap_or(&[]), false, h);
}

fn parse_ipv6(b: &[u8], h: &mut Headers) {
    h.proto = "ipv6".into();
    if b.first().is_none_or(|v| v >> 4 != 6) {
        return;
    }
    h.src = v6_at(b, 8).map(IpAddr::V6);
    h.dst = v6_at(b, 24).map(IpAddr::V6);
    let Some(&first_next) = b.get(6) else { return };
    let mut next = first_next;
    let mut at = 40;
    // Walk the common extension headers (hop-by-hop, routing, destination options).
    for _ in 0..4 {
        match next {
            0 | 43 | 60 => {
                let (Some(&nh), Some(&len)) = (b.get(at), b.get(at + 1)) else {
                    return;
                };
                next = nh;
                at += (usize::from(len) + 1) * 8;
            }
            _ => break,
        }
    }
    parse_l4(next, b.get(at..).unwrap_or(&[]), true, h);
}

/// The name of IP protocol `proto` over IPv6 (`v6`) or IPv4, as [`Headers::proto`] and a
/// routing lookup's flow give it, for the protocols pktpath names; None for the others
/// (shown as the IP version). The tunnels' protocols are named after what they carry: 47
/// `gre` (`gre`, `gretap` and their IPv6 forms), 4 `ipip` (IPv4 inside: `ipip`, `ip6tnl`),
/// 41 `ipv6-in-ip` (IPv6 inside: `sit`, `ip6tnl`).
pub fn ip_proto_name(proto: u8, v6: bool) -> Option<&'static str> {
    match (proto, v6) {
        (6, _) => Some("tcp"),
        (17, _) => Some("udp"),
        (1, false) => Some("icmp"),
        (58, true) => Some("icmp6"),
        (47, _) => Some("gre"),
        (4, _) => Some("ipip"),
        (41, _) => Some("ipv6-in-ip"),
        _ => None,
    }
}

fn parse_l4(proto: u8, l4: &[u8], v6: bool, h: &mut Headers) {
    if let Some(name) = ip_proto_name(proto, v6) {
        h.proto = name.into();
    }
    match (proto, v6) {
        (6, _) => {
            h.sport = u16_at(l4, 0);
            h.dport = u16_at(l4, 2);
            h.tcp_flags = l4.get(13).map(|&f| tcp_flags(f));
        }
        (17, _) => {
            h.sport = u16_at(l4, 0);
            h.dport = u16_at(l4, 2);
        }
        (1, false) | (58, true) => {
            h.icmp_type = l4.first().copied();
            h.icmp_code = l4.get(1).copied();
            // Echo request/reply: 8/0 for ICMP, 128/129 for ICMPv6.
            if matches!(
                (h.icmp_type, v6),
                (Some(0 | 8), false) | (Some(128 | 129), true)
            ) {
                h.icmp_id = u16_at(l4, 4);
                h.icmp_seq = u16_at(l4, 6);
            }
        }
        _ => {}
    }
}

fn parse_arp(b: &[u8], h: &mut Headers) {
    h.proto = "arp".into();
    h.arp_op = u16_at(b, 6);
    // Ethernet/IPv4 ARP: hardware length 6, protocol length 4.
    if b.get(4) == Some(&6) && b.get(5) == Some(&4) {
        h.src = v4_at(b, 14).map(IpAddr::V4);
        h.dst = v4_at(b, 24).map(IpAddr::V4);
    }
}

/// TCP flags in tcpdump's letters, in the order F S R P A U.
fn tcp_flags(f: u8) -> String {
    [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|&(_, c)| c)
    .collect()
}

/// A short human description of the transport details (`echo request id=5 seq=1`).
pub fn describe(h: &Headers) -> String {
    match h.proto.as_ref() {
        "icmp" | "icmp6" => {
            let v6 = h.proto == "icmp6";
            let name = match (h.icmp_type, v6) {
                (Some(8), false) | (Some(128), true) => "echo request".to_owned(),
                (Some(0), false) | (Some(129), true) => "echo reply".to_owned(),
                (Some(3), false) | (Some(1), true) => "unreachable".to_owned(),
                (Some(135), true) => "neighbor solicitation".to_owned(),
                (Some(136), true) => "neighbor advertisement".to_owned(),
                (Some(133), true) => "router solicitation".to_owned(),
                (Some(143), true) => "mld report".to_owned(),
                (Some(t), _) => format!("type {t}"),
                (None, _) => String::new(),
            };
            match (h.icmp_id, h.icmp_seq) {
                (Some(id), Some(seq)) => format!("{name} id={id} seq={seq}"),
                _ => name,
            }
        }
        "tcp" => h
            .tcp_flags
            .clone()
            .map(|f| format!("[{f}]"))
            .unwrap_or_default(),
        "arp" => match h.arp_op {
            Some(1) => "request".into(),
            Some(2) => "reply".into(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ping -c1 10.77.0.2` from 10.77.0.1, as copied at netif_receive_skb (first 48 bytes).
    const ICMP4_ECHO: [u8; 48] = [
        0x45, 0x00, 0x00, 0x54, 0x3a, 0x1c, 0x40, 0x00, 0x40, 0x01, 0xec, 0x3b, 10, 77, 0, 1, 10,
        77, 0, 2, 0x08, 0x00, 0x5c, 0x3e, 0x00, 0x2a, 0x00, 0x03, 0x9c, 0x6b, 0x26, 0x69, 0x00,
        0x00, 0x00, 0x00, 0x2d, 0x1f, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13,
    ];

    #[test]
    fn ipv4_icmp_echo_request() {
        let h = parse(ETH_P_IP, &ICMP4_ECHO);
        assert_eq!(h.proto, "icmp");
        assert_eq!(h.src, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(h.dst, Some("10.77.0.2".parse().unwrap()));
        assert_eq!((h.icmp_type, h.icmp_code), (Some(8), Some(0)));
        assert_eq!((h.icmp_id, h.icmp_seq), (Some(42), Some(3)));
        assert_eq!(h.sport, None);
        assert_eq!(describe(&h), "echo request id=42 seq=3");
    }

    #[test]
    fn ipv4_udp_and_tcp_ports() {
        let mut b = ICMP4_ECHO;
        b[9] = 17;
        b[20..24].copy_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        let h = parse(ETH_P_IP, &b);
        assert_eq!(
            (h.proto.as_ref(), h.sport, h.dport),
            ("udp", Some(12345), Some(53))
        );
        b[9] = 6;
        b[33] = 0x12; // SYN+ACK
        let h = parse(ETH_P_IP, &b);
        assert_eq!(h.proto, "tcp");
        assert_eq!(h.tcp_flags.as_deref(), Some("SA"));
        assert_eq!(describe(&h), "[SA]");
    }

    #[test]
    fn ipv4_options_and_fragments() {
        // IHL 6 (one option word): the transport header starts at 24.
        let mut b = [0u8; 32];
        b[..20].copy_from_slice(&ICMP4_ECHO[..20]);
        b[0] = 0x46;
        b[9] = 17;
        b[24..28].copy_from_slice(&[0x00, 0x07, 0x00, 0x09]);
        let h = parse(ETH_P_IP, &b);
        assert_eq!((h.sport, h.dport), (Some(7), Some(9)));
        // A later fragment has no ports.
        b[7] = 0x10;
        let h = parse(ETH_P_IP, &b);
        assert_eq!(h.proto, "ipv4");
        assert_eq!(h.sport, None);
        assert_eq!(h.dst, Some("10.77.0.2".parse().unwrap()));
    }

    #[test]
    fn truncated_headers_yield_what_is_there() {
        // The protocol byte is there, the ICMP header is not.
        let h = parse(ETH_P_IP, &ICMP4_ECHO[..16]);
        assert_eq!((h.proto.as_ref(), h.icmp_type), ("icmp", None));
        assert_eq!(h.src, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(h.dst, None);
        let h = parse(ETH_P_IP, &ICMP4_ECHO[..22]);
        assert_eq!(
            (h.proto.as_ref(), h.icmp_type, h.icmp_id),
            ("icmp", Some(8), None)
        );
        assert_eq!(parse(ETH_P_IP, &ICMP4_ECHO[..8]).proto, "ipv4");
        assert_eq!(parse(ETH_P_IPV6, &[]).src, None);
        assert_eq!(parse(0x88cc, &[1, 2, 3]).proto, "0x88cc");
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0, 0, payload.len() as u8, next, 64];
        b.extend_from_slice(&"fd77::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd77::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn ipv6_icmp6_echo_reply_and_udp() {
        let h = parse(ETH_P_IPV6, &ipv6(58, &[129, 0, 0x12, 0x34, 0, 7, 0, 1]));
        assert_eq!(h.proto, "icmp6");
        assert_eq!(h.src, Some("fd77::1".parse().unwrap()));
        assert_eq!(h.dst, Some("fd77::2".parse().unwrap()));
        assert_eq!(describe(&h), "echo reply id=7 seq=1");
        let h = parse(ETH_P_IPV6, &ipv6(17, &[0x04, 0xd2, 0x00, 0x35, 0, 8, 0, 0]));
        assert_eq!(
            (h.proto.as_ref(), h.sport, h.dport),
            ("udp", Some(1234), Some(53))
        );
    }

    #[test]
    fn ipv6_hop_by_hop_header_is_skipped() {
        // MLD report behind a hop-by-hop options header (router alert), as the kernel sends.
        let h = parse(
            ETH_P_IPV6,
            &ipv6(0, &[58, 0, 5, 2, 0, 0, 1, 0, 143, 0, 0, 0]),
        );
        assert_eq!((h.proto.as_ref(), h.icmp_type), ("icmp6", Some(143)));
        assert_eq!(describe(&h), "mld report");
    }

    #[test]
    fn arp_request() {
        let b = [
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 77, 0, 1, 0, 0, 0, 0, 0, 0, 10, 77, 0, 2,
        ];
        let h = parse(ETH_P_ARP, &b);
        assert_eq!(h.proto, "arp");
        assert_eq!(h.arp_op, Some(1));
        assert_eq!(h.src, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(h.dst, Some("10.77.0.2".parse().unwrap()));
        assert_eq!(describe(&h), "request");
    }
}
