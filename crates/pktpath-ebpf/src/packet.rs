//! Packet parsing for TC and XDP programs (over [`Frame`], what both contexts offer) and
//! rewriting for TC programs (through the skb helpers; XDP's rewrites are in `crate::xdp`):
//! Ethernet, IPv4 (with options), IPv6 (with up to four extension headers), TCP/UDP/SCTP
//! ports. Every access is bounds-checked.
//!
//! What is classified: fragments (first or not) carry no ports, so every fragment of a
//! datagram gets the same decision; an IPv6 packet whose extension headers do not resolve
//! to an upper layer within four headers is not classified (passed to the stack).
//!
//! What is refused as malformed, as the kernel's IP input would (the stack then drops it
//! and counts the reason): an IPv4 header whose version is not 4, whose length is under 20
//! bytes, whose total length is under its header length or beyond the frame, or (without
//! options) whose checksum is wrong; an IPv6 header whose version is not 6 or whose payload
//! length reaches beyond the frame. A length of 0 on a packet larger than 64 KiB is the
//! kernel's own BIG TCP aggregate, not an error. (The checksum of a header with options is
//! left to the stack, which gets such packets anyway.)

use aya_ebpf::{
    bindings::{bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, bpf_check_mtu_ret::BPF_MTU_CHK_RET_SUCCESS},
    helpers::generated::bpf_check_mtu,
    programs::{TcContext, XdpContext},
};
use pktpath_common::{
    net::{ETH_P_IP, ETH_P_IPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
    route::{FAMILY_V4, FAMILY_V6},
};

pub(crate) const ETH_HLEN: usize = 14;

/// A header was truncated or malformed, or a helper refused a rewrite.
#[derive(Clone, Copy, Debug)]
pub struct Malformed;

/// The fields classification and forwarding need.
pub struct Parsed {
    pub family: u8,
    pub proto: u8,
    pub dscp: u8,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    /// Whether `sport` and `dport` were read (TCP, UDP or SCTP, not a fragment).
    pub ports: bool,
    /// Addresses as four words holding the packet's bytes in order (`u32::from_ne_bytes`
    /// of each 4-byte group), IPv4 in word 0 and the rest zero: aligned words compare and
    /// mask in 4 instructions, and store into a hash key unchanged.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Length of the L3 packet (IPv4 total length, IPv6 payload + 40).
    pub l3_len: u32,
    /// IPv4 options or IPv6 extension headers present.
    pub has_options: bool,
    pub fragment: bool,
    /// The first two bytes of the L3 header (version, and the DSCP/ECN bits).
    pub hdr: [u8; 2],
}

/// Direct packet access, as TC and XDP contexts both offer it. Generic code over it is
/// monomorphized, so the TC program's instructions are what they were without it.
pub trait Frame {
    /// Address of the first byte of the frame (its Ethernet header).
    fn data(&self) -> usize;
    /// Address one past the last byte directly accessible.
    fn data_end(&self) -> usize;
    /// The frame's whole length (for TC, including bytes outside the linear area).
    fn frame_len(&self) -> u32;
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    /// Programs not declared for multi-buffer XDP see one linear buffer: all of it.
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
}

#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &impl Frame, off: usize) -> Result<*const T, Malformed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + off) as *const T)
}

/// Copies `N` packet bytes at `off` (one bounds check for the whole run: the verifier
/// does not learn a range from LLVM's canonical one-byte check).
#[inline(always)]
fn bytes<const N: usize>(ctx: &impl Frame, off: usize) -> Result<[u8; N], Malformed> {
    // SAFETY: ptr_at checked that N bytes at `off` are inside the packet.
    Ok(unsafe { *ptr_at::<[u8; N]>(ctx, off)? })
}

/// Parses the frame; Ok(None) for non-IP frames (ARP, ...), Err for truncated headers.
#[inline(always)]
pub fn parse(ctx: &impl Frame) -> Result<Option<Parsed>, Malformed> {
    let eth = bytes::<14>(ctx, 0)?;
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    match ethertype {
        ETH_P_IP => parse_v4(ctx).map(Some),
        ETH_P_IPV6 => parse_v6(ctx),
        _ => Ok(None),
    }
}

/// Reads a 4-byte group of packet bytes at `p` as a word (see [`Parsed::src`]).
///
/// # Safety
/// `p` must be valid for 4 bytes.
#[inline(always)]
unsafe fn word(p: *const u8) -> u32 {
    // SAFETY: the caller checked the bounds; the read is unaligned.
    unsafe { p.cast::<u32>().read_unaligned() }
}

/// Whether the 20-byte IPv4 header at `ip` has a valid checksum: its 16-bit words add up,
/// in ones' complement, to 0xffff. The sum does not depend on byte order, so the words are
/// read as they lie, four bytes at a time.
///
/// # Safety
/// `ip` must be valid for 20 bytes.
#[inline(always)]
pub(crate) unsafe fn checksum_ok(ip: *const u8) -> bool {
    let mut sum = 0u64;
    for i in 0..5 {
        // SAFETY: the caller checked 20 bytes; word reads unaligned.
        sum += u64::from(unsafe { word(ip.add(4 * i)) });
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

#[inline(always)]
fn parse_v4(ctx: &impl Frame) -> Result<Parsed, Malformed> {
    let ip = ptr_at::<[u8; 20]>(ctx, ETH_HLEN)?.cast::<u8>();
    // Checked first, before the fields are read: fewer values live at once (the program's
    // stack is at its limit).
    // SAFETY: ptr_at checked that the 20 bytes of a minimal IPv4 header are in the packet.
    let (ver_ihl, tot_len) = unsafe { (*ip, u16::from_be_bytes([*ip.add(2), *ip.add(3)])) };
    let ihl = (ver_ihl & 0x0f) as usize * 4;
    let room = ctx.frame_len().saturating_sub(ETH_HLEN as u32);
    let len_ok =
        (tot_len as u32 >= ihl as u32 && tot_len as u32 <= room) || (tot_len == 0 && room > 0xffff);
    // SAFETY: as above, 20 bytes.
    if ver_ihl >> 4 != 4 || ihl < 20 || !len_ok || (ihl == 20 && !unsafe { checksum_ok(ip) }) {
        return Err(Malformed);
    }
    // SAFETY: as above.
    let (tos, frag, ttl, proto, src, dst) = unsafe {
        (
            *ip.add(1),
            u16::from_be_bytes([*ip.add(6), *ip.add(7)]),
            *ip.add(8),
            *ip.add(9),
            word(ip.add(12)),
            word(ip.add(16)),
        )
    };
    let mut p = Parsed {
        family: FAMILY_V4,
        proto,
        dscp: tos >> 2,
        ttl,
        sport: 0,
        dport: 0,
        ports: false,
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        l3_len: tot_len as u32,
        has_options: ihl > 20,
        fragment: frag & 0x3fff != 0, // MF set or non-zero offset
        hdr: [ver_ihl, tos],
    };
    if !p.fragment && has_ports(proto) {
        let ports = bytes::<4>(ctx, ETH_HLEN + (ihl & 0x3c))?;
        p.sport = u16::from_be_bytes([ports[0], ports[1]]);
        p.dport = u16::from_be_bytes([ports[2], ports[3]]);
        p.ports = true;
    }
    Ok(p)
}

#[inline(always)]
fn parse_v6(ctx: &impl Frame) -> Result<Option<Parsed>, Malformed> {
    let ip = bytes::<40>(ctx, ETH_HLEN)?;
    let (b0, b1) = (ip[0], ip[1]);
    if b0 >> 4 != 6 {
        return Err(Malformed);
    }
    let tclass = ((b0 & 0x0f) << 4) | (b1 >> 4);
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as u32;
    if payload > ctx.frame_len().saturating_sub(ETH_HLEN as u32 + 40) {
        return Err(Malformed);
    }
    let mut next = ip[6];
    let mut p = Parsed {
        family: FAMILY_V6,
        proto: next,
        dscp: tclass >> 2,
        ttl: ip[7],
        sport: 0,
        dport: 0,
        ports: false,
        src: [0; 4],
        dst: [0; 4],
        l3_len: payload + 40,
        has_options: false,
        fragment: false,
        hdr: [b0, b1],
    };
    for i in 0..4 {
        p.src[i] =
            u32::from_ne_bytes([ip[8 + 4 * i], ip[9 + 4 * i], ip[10 + 4 * i], ip[11 + 4 * i]]);
        p.dst[i] = u32::from_ne_bytes([
            ip[24 + 4 * i],
            ip[25 + 4 * i],
            ip[26 + 4 * i],
            ip[27 + 4 * i],
        ]);
    }
    let mut off = ETH_HLEN + 40;
    let mut resolved = false;
    for _ in 0..4 {
        if !matches!(next, 0 | 43 | 60 | 44 | 51) {
            resolved = true;
            break;
        }
        let ext = bytes::<2>(ctx, off & 0x1fff)?;
        p.has_options = true;
        let len = ext[1] as usize;
        off += match next {
            44 => {
                p.fragment = true;
                8
            }
            51 => (len + 2) * 4,
            _ => (len + 1) * 8, // hop-by-hop, routing, destination options
        };
        next = ext[0];
    }
    if !resolved && matches!(next, 0 | 43 | 60 | 44 | 51) {
        return Ok(None);
    }
    p.proto = next;
    if !p.fragment && has_ports(next) {
        let ports = bytes::<4>(ctx, off & 0x1fff)?;
        p.sport = u16::from_be_bytes([ports[0], ports[1]]);
        p.dport = u16::from_be_bytes([ports[2], ports[3]]);
        p.ports = true;
    }
    Ok(Some(p))
}

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

/// Whether the fast path may forward this packet itself: the TTL / hop limit survives the
/// hop, there are no IPv4 options (the stack processes those), and the destination is one
/// host. Otherwise the stack forwards it, answers with ICMP time exceeded, or (a group
/// destination) delivers it locally or routes it as multicast: a policy written for
/// unicast must not send a broadcast or multicast to one next hop.
#[inline(always)]
pub fn fast_forwardable(ctx: &impl Frame, p: &Parsed) -> bool {
    p.ttl > 1 && !(p.family == FAMILY_V4 && p.has_options) && !group_destination(ctx, p)
}

/// Whether the frame is addressed to a group: an Ethernet group address (broadcast or
/// multicast; the stack does not forward such a frame even to a unicast IP address), IPv4
/// multicast (224/4) or limited broadcast, IPv6 multicast (ff00::/8).
#[inline(always)]
pub fn group_destination(ctx: &impl Frame, p: &Parsed) -> bool {
    // The I/G bit, the low bit of the first byte of the Ethernet destination. (Two bytes
    // read: the verifier learns no range from a one-byte bounds check, see `bytes`.)
    let l2_group = bytes::<2>(ctx, 0).map_or(true, |b| b[0] & 1 != 0);
    // `dst[0]` holds the address's first four bytes in packet order.
    let first = p.dst[0].to_ne_bytes()[0];
    let l3_group = if p.family == FAMILY_V4 {
        first & 0xf0 == 0xe0 || p.dst[0] == u32::MAX
    } else {
        first == 0xff
    };
    l2_group || l3_group
}

/// Whether the packet fits the MTU of the device `ifindex` as it is now, asked of the
/// kernel (bpf_check_mtu). A GSO packet (TCP over veth hands the router ones far larger
/// than the MTU) fits when each segment it will be cut into does. A packet that does not
/// fit goes to the stack, which fragments it or answers "fragmentation needed" / "packet
/// too big".
#[inline(always)]
pub fn fits_mtu(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: ctx is the skb context; mtu_len is a valid u32 (0: check the skb's length).
    let r = unsafe {
        bpf_check_mtu(
            ctx.skb.skb as *mut _,
            ifindex,
            &mut mtu_len,
            0,
            BPF_MTU_CHK_SEGS as u64,
        )
    };
    r == BPF_MTU_CHK_RET_SUCCESS as i64
}

/// Decrements the TTL (IPv4, with an incremental checksum update) or the hop limit (IPv6).
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, p: &Parsed) -> Result<(), Malformed> {
    if p.family == FAMILY_V4 {
        let old = u16::from_ne_bytes([p.ttl, p.proto]) as u64;
        let new = u16::from_ne_bytes([p.ttl - 1, p.proto]) as u64;
        ctx.l3_csum_replace(ETH_HLEN + 10, old, new, 2)
            .map_err(|_| Malformed)?;
        ctx.store(ETH_HLEN + 8, &(p.ttl - 1), 0)
            .map_err(|_| Malformed)
    } else {
        ctx.store(ETH_HLEN + 7, &(p.ttl - 1), 0)
            .map_err(|_| Malformed)
    }
}

/// Rewrites the Ethernet destination and source addresses, by direct packet access (no
/// helper call; the verifier makes a cloned skb writable once, in the program's prologue).
#[inline(always)]
pub fn set_macs(ctx: &impl Frame, dmac: &[u8; 6], smac: &[u8; 6]) -> Result<(), Malformed> {
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?.cast_mut().cast::<[u8; 6]>();
    // SAFETY: ptr_at checked that the 12 address bytes are inside the packet.
    unsafe {
        eth.write(*dmac);
        eth.add(1).write(*smac);
    }
    Ok(())
}

/// Rewrites the DSCP bits (keeping ECN); IPv4 with an incremental checksum update.
#[inline(always)]
pub fn set_dscp(ctx: &TcContext, p: &Parsed, dscp: u8) -> Result<(), Malformed> {
    let [b0, b1] = p.hdr;
    if p.family == FAMILY_V4 {
        let new_tos = (dscp << 2) | (b1 & 0x03);
        let old = u16::from_ne_bytes([b0, b1]) as u64;
        let new = u16::from_ne_bytes([b0, new_tos]) as u64;
        ctx.l3_csum_replace(ETH_HLEN + 10, old, new, 2)
            .map_err(|_| Malformed)?;
        ctx.store(ETH_HLEN + 1, &new_tos, 0).map_err(|_| Malformed)
    } else {
        let ecn = (b1 >> 4) & 0x03;
        let tclass = (dscp << 2) | ecn;
        let n0 = (b0 & 0xf0) | (tclass >> 4);
        let n1 = (b1 & 0x0f) | (tclass << 4);
        ctx.store(ETH_HLEN, &[n0, n1], 0).map_err(|_| Malformed)
    }
}
