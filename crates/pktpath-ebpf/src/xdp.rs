//! Packet rewrites for XDP programs: XDP has no skb helpers (`bpf_l3_csum_replace`,
//! `bpf_skb_store_bytes`), so headers are written by direct packet access and the IPv4
//! checksum is updated incrementally by hand (RFC 1624).

use aya_ebpf::{
    bindings::bpf_check_mtu_ret::BPF_MTU_CHK_RET_SUCCESS, helpers::generated::bpf_check_mtu,
    programs::XdpContext,
};
use pktpath_common::route::FAMILY_V4;

use crate::packet::{ETH_HLEN, Malformed, Parsed, ptr_at};

/// Whether the frame's L3 packet fits the MTU of device `ifindex` (`bpf_check_mtu` on an
/// XDP context checks the frame's own length; XDP frames are never GSO aggregates).
#[inline(always)]
pub fn fits_mtu(ctx: &XdpContext, ifindex: u32) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: ctx is the XDP context; mtu_len is a valid u32 (0: check the frame).
    let r = unsafe { bpf_check_mtu(ctx.ctx.cast(), ifindex, &mut mtu_len, 0, 0) };
    r == BPF_MTU_CHK_RET_SUCCESS as i64
}

/// The IPv4 header checksum `check` after one of the 16-bit words it covers changed from
/// `old` to `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). All three are read from the
/// packet in the same byte order, in which ones' complement sums agree.
#[inline(always)]
fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Replaces the 16-bit word at byte `at` of the IPv4 header (an even offset below 20) with
/// `new`, and its checksum with it.
#[inline(always)]
fn replace_v4_word(ctx: &XdpContext, at: usize, new: [u8; 2]) -> Result<(), Malformed> {
    let ip = ptr_at::<[u8; 20]>(ctx, ETH_HLEN)?.cast_mut().cast::<u8>();
    // SAFETY: ptr_at checked the 20 bytes of the header; `at + 2` and the checksum at
    // 10..12 are inside them. Reads and writes unaligned.
    unsafe {
        let word = ip.add(at).cast::<[u8; 2]>();
        let check = ip.add(10).cast::<u16>();
        let old = u16::from_ne_bytes(word.read_unaligned());
        let sum = csum_replace(check.read_unaligned(), old, u16::from_ne_bytes(new));
        word.write_unaligned(new);
        check.write_unaligned(sum);
    }
    Ok(())
}

/// Decrements the TTL (IPv4, checksum updated) or the hop limit (IPv6).
#[inline(always)]
pub fn decrement_ttl(ctx: &XdpContext, p: &Parsed) -> Result<(), Malformed> {
    if p.family == FAMILY_V4 {
        return replace_v4_word(ctx, 8, [p.ttl - 1, p.proto]);
    }
    let ip = ptr_at::<[u8; 8]>(ctx, ETH_HLEN)?.cast_mut().cast::<u8>();
    // SAFETY: ptr_at checked the first 8 bytes of the IPv6 header; the hop limit is byte 7.
    unsafe { ip.add(7).write(p.ttl - 1) };
    Ok(())
}

/// Rewrites the DSCP bits, keeping ECN (IPv4 with its checksum updated).
#[inline(always)]
pub fn set_dscp(ctx: &XdpContext, p: &Parsed, dscp: u8) -> Result<(), Malformed> {
    let [b0, b1] = p.hdr;
    if p.family == FAMILY_V4 {
        return replace_v4_word(ctx, 0, [b0, (dscp << 2) | (b1 & 0x03)]);
    }
    let tclass = (dscp << 2) | ((b1 >> 4) & 0x03);
    let ip = ptr_at::<[u8; 2]>(ctx, ETH_HLEN)?.cast_mut();
    // SAFETY: ptr_at checked the two bytes holding the traffic class.
    unsafe { ip.write([(b0 & 0xf0) | (tclass >> 4), (b1 & 0x0f) | (tclass << 4)]) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::csum_replace;

    /// The sum of the header's words with `check` in place, folded (0xffff: valid).
    fn fold(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn incremental_update_keeps_the_header_valid() {
        // 45 00 0054 0000 4000 4001 [check] c0a80001 c0a800c7 (a ping), check computed here.
        let mut h = [
            0x4500, 0x0054, 0x0000, 0x4000, 0x4001, 0, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        h[5] = !fold(&h);
        assert_eq!(fold(&h), 0xffff);
        for (at, new) in [(4, 0x3f01), (0, 0x45b8), (4, 0x0101), (0, 0x4500)] {
            let old = h[at];
            h[at] = new;
            h[5] = csum_replace(h[5], old, new);
            assert_eq!(fold(&h), 0xffff, "after word {at} became {new:#06x}");
        }
    }
}
