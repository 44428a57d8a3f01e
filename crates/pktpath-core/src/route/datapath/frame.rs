//! Synthesizing Ethernet frames from packet fields, for `route get` and for tests that run
//! the data path with BPF_PROG_TEST_RUN. A TCP, UDP or SCTP packet without ports becomes a
//! later fragment (see [`crate::route::packet`]).

use pktpath_common::{
    net::{ETH_P_IP, ETH_P_IPV6},
    route::FAMILY_V4,
};

use super::classifier::addr_bytes;
use crate::route::packet::PacketFields;

/// Options for the frame around the fields.
#[derive(Clone, Copy, Debug)]
pub struct FrameOptions {
    pub ttl: u8,
    /// Bytes of L4 payload after the TCP/UDP/ICMP header.
    pub payload: usize,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

impl Default for FrameOptions {
    fn default() -> Self {
        Self {
            ttl: 64,
            payload: 16,
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
        }
    }
}

/// The IPv4 header checksum (RFC 1071) over `header` with its checksum field zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_header<I>(p: &PacketFields<I>) -> Vec<u8> {
    if p.is_fragment() {
        return Vec::new(); // a later fragment: payload bytes only
    }
    let (sport, dport) = p.ports().unwrap_or_default();
    match p.proto {
        6 => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[12] = 5 << 4; // data offset
            h[13] = 0x02; // SYN
            h
        }
        17 => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h
        }
        132 => {
            // SCTP common header: ports, verification tag, checksum (not computed).
            let mut h = vec![0u8; 12];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h
        }
        1 | 58 => vec![if p.proto == 1 { 8 } else { 128 }, 0, 0, 0, 0, 1, 0, 1], // echo request
        _ => Vec::new(),
    }
}

/// An Ethernet frame carrying `p` (checksums of L4 are not computed; IPv4's is).
pub fn build<I>(p: &PacketFields<I>, opts: &FrameOptions) -> Vec<u8> {
    let mut l4 = l4_header(p);
    if p.proto == 17 && !p.is_fragment() {
        let len = (8 + opts.payload) as u16;
        l4[4..6].copy_from_slice(&len.to_be_bytes());
    }
    l4.extend(std::iter::repeat_n(0xabu8, opts.payload));
    let mut f = Vec::with_capacity(14 + 40 + l4.len());
    f.extend_from_slice(&opts.dst_mac);
    f.extend_from_slice(&opts.src_mac);
    let (src, dst) = (addr_bytes(p.src), addr_bytes(p.dst));
    if p.family() == FAMILY_V4 {
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[1] = p.dscp << 2;
        ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        if p.is_fragment() {
            ip[6..8].copy_from_slice(&1u16.to_be_bytes()); // offset 8 bytes, no more fragments
        }
        ip[8] = opts.ttl;
        ip[9] = p.proto;
        ip[12..16].copy_from_slice(&src[..4]);
        ip[16..20].copy_from_slice(&dst[..4]);
        let c = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        let mut ip = [0u8; 40];
        let tclass = p.dscp << 2;
        ip[0] = 0x60 | (tclass >> 4);
        ip[1] = tclass << 4;
        // A fragment header (offset 8 bytes, no more fragments) before the payload.
        let frag = if p.is_fragment() {
            vec![p.proto, 0, 0, 8, 0, 0, 0, 1]
        } else {
            Vec::new()
        };
        ip[4..6].copy_from_slice(&((frag.len() + l4.len()) as u16).to_be_bytes());
        ip[6] = if p.is_fragment() { 44 } else { p.proto };
        ip[7] = opts.ttl;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&frag);
    }
    f.extend_from_slice(&l4);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::packet::Ifindex;

    #[test]
    fn ipv4_checksum_verifies_to_zero() {
        let p = PacketFields::<Ifindex> {
            proto: 17,
            sport: Some(5),
            dport: Some(53),
            dscp: 46,
            ..Default::default()
        };
        let f = build(&p, &FrameOptions::default());
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        assert_eq!(f[15] >> 2, 46);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 53);
    }
}
