//! Reads of kernel structs (`sk_buff`, `net_device`, `net`) at offsets resolved at load time.
//!
//! Every read goes through `bpf_probe_read_kernel`, so a wrong offset yields garbage or an
//! error, never a verifier rejection or a crash.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use pktpath_common::kernel::{IFNAMSIZ, KERNEL_OFFSETS_MAGIC, KernelOffsets};

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_at<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-tolerant accessor; any
    // address is safe to pass.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// What the hooks need to know about one `sk_buff`.
pub struct SkbInfo {
    pub len: u32,
    pub mark: u32,
    pub protocol: u16,
    pub ifindex: u32,
    pub netns: u32,
    pub dev: u64,
    /// Address of the network header (`head + network_header`), 0 when unset.
    pub network_header: u64,
}

/// Reads the fields every hook reports from an `sk_buff` pointer. `dev`, when not 0, is the
/// device the hook was given (transmit hooks: `skb->dev` may already be the veth peer) and
/// is used instead of `skb->dev`.
#[inline(always)]
pub fn read_skb(off: &KernelOffsets, skb: u64, dev: u64) -> Result<SkbInfo, i32> {
    if off.magic != KERNEL_OFFSETS_MAGIC || skb == 0 {
        return Err(-1);
    }
    let len: u32 = read_at(skb, off.skb_len)?;
    let mark: u32 = read_at(skb, off.skb_mark)?;
    let protocol: u16 = u16::from_be(read_at(skb, off.skb_protocol)?);
    let dev: u64 = if dev != 0 {
        dev
    } else {
        read_at(skb, off.skb_dev)?
    };
    let (ifindex, netns) = read_dev(off, dev)?;
    let head: u64 = read_at(skb, off.skb_head)?;
    let nh: u16 = read_at(skb, off.skb_network_header)?;
    // The kernel marks an unset header offset with (u16)~0.
    let network_header = if nh == u16::MAX || head == 0 {
        0
    } else {
        head + nh as u64
    };
    Ok(SkbInfo {
        len,
        mark,
        protocol,
        ifindex,
        netns,
        dev,
        network_header,
    })
}

/// Reads a `net_device`'s ifindex and its namespace's inode; (0, 0) for a null device.
#[inline(always)]
pub fn read_dev(off: &KernelOffsets, dev: u64) -> Result<(u32, u32), i32> {
    if dev == 0 {
        return Ok((0, 0));
    }
    let ifindex: u32 = read_at(dev, off.net_device_ifindex)?;
    let net: u64 = read_at(dev, off.net_device_nd_net + off.possible_net_t_net)?;
    let netns = if net != 0 {
        read_at(net, off.net_ns_inum)?
    } else {
        0
    };
    Ok((ifindex, netns))
}

/// Copies a device's name into `dst` (left as is on failure).
#[inline(always)]
pub fn read_ifname(off: &KernelOffsets, dev: u64, dst: &mut [u8; IFNAMSIZ]) {
    if dev != 0 {
        // SAFETY: see `read_at`.
        let _ = unsafe {
            bpf_probe_read_kernel_buf((dev + off.net_device_name as u64) as *const u8, dst)
        };
    }
}

/// Copies kernel bytes at `src` into `dst`; returns how many were copied.
#[inline(always)]
pub fn read_bytes(src: u64, dst: &mut [u8]) -> usize {
    if src == 0 {
        return 0;
    }
    // SAFETY: see `read_at`.
    match unsafe { bpf_probe_read_kernel_buf(src as *const u8, dst) } {
        Ok(()) => dst.len(),
        Err(_) => 0,
    }
}
