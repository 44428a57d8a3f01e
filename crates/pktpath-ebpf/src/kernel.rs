//! Reads of kernel structs (`sk_buff`, `net_device`, `net`, …) at offsets resolved at load
//! time.
//!
//! Two kinds of read:
//! - [`load_at`]: a plain load through a pointer whose BTF type the verifier knows (a tp_btf
//!   argument, or a pointer member loaded through one). The offset comes from
//!   [`Offsets`], whose every field is a load from the object's read-only global: the
//!   verifier knows its value, checks the access against the struct's BTF, and the JIT
//!   turns it into one instruction that cannot fault the kernel. A nanosecond, against tens
//!   for a helper call.
//! - [`read_at`] / [`read_bytes`]: through `bpf_probe_read_kernel`, for addresses the
//!   verifier has no type for (the current task), and for copies of packet data (a
//!   128-byte copy of loads verifies slower than one helper call).

use aya_ebpf::{
    Global,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
};
use pktpath_common::kernel::{IFNAMSIZ, KERNEL_OFFSETS_MAGIC, KernelOffsets};

/// The offsets in an object's [`KernelOffsets`] global, each read where it is used.
///
/// Not a copy: a copy lands on the stack in pieces the verifier may no longer know the
/// value of, and then refuses the loads offset by them. Every accessor is a volatile load
/// from the global itself (the compiler must not fold it into the initial, unset value).
#[derive(Clone, Copy)]
pub struct Offsets(&'static KernelOffsets);

macro_rules! offset_accessors {
    ($($field:ident),* $(,)?) => {
        impl Offsets {
            $(
                #[inline(always)]
                pub fn $field(self) -> u32 {
                    // SAFETY: reads a field of a static.
                    unsafe { core::ptr::read_volatile(&raw const self.0.$field) }
                }
            )*
        }
    };
}

offset_accessors!(
    magic,
    skb_len,
    skb_data_len,
    skb_data,
    skb_head,
    skb_network_header,
    skb_protocol,
    skb_mark,
    skb_dev,
    skb_skb_iif,
    net_device_name,
    net_device_ifindex,
    net_device_nd_net,
    possible_net_t_net,
    net_ns_inum,
    qdisc_handle,
    qdisc_ops,
    qdisc_ops_id,
    flowi_oif,
    flowi_iif,
    flowi_mark,
    flowi_proto,
    flowi4_saddr,
    flowi4_daddr,
    flowi4_uli,
    flowi6_saddr,
    flowi6_daddr,
    flowi6_uli,
    fib_nh_common_dev,
    fib_nh_common_gw_family,
    fib_nh_common_gw,
    fib6_result_nh,
    fib6_result_type,
    fib6_nh_common,
    fib6_table_id,
    task_struct_nsproxy,
    nsproxy_net_ns,
    skb_cloned_byte,
    skb_cloned_mask,
    sock_family,
    sock_receive_queue,
    sock_receive_queue_prev,
    skb_end,
    shinfo_dataref,
);

impl Offsets {
    /// The offsets held in `global`.
    #[inline(always)]
    pub fn of(global: &'static Global<KernelOffsets>) -> Self {
        // SAFETY: `Global<T>` is a transparent wrapper of an initialised `T`.
        Self(unsafe { &*core::ptr::from_ref(global).cast::<KernelOffsets>() })
    }

    /// Whether user space filled them in.
    #[inline(always)]
    pub fn set(self) -> bool {
        self.magic() == KERNEL_OFFSETS_MAGIC
    }
}

/// Loads a `T` at `base + offset`, where `base` is a pointer the verifier has a BTF type
/// for and `offset` one of [`Offsets`] (plus constants): the verifier checks that the access
/// lies within one member of that type. A stale `base` reads garbage or 0 (the JIT guards
/// the load), never crashes.
///
/// Also for packet bytes: a byte pointer loaded from a struct (`sk_buff.head`, `.data`) is
/// untrusted read-only memory to the verifier of this kernel (6.18), readable the same way.
#[inline(always)]
pub fn load_at<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: see above; the kernel guards the load.
    unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) }
}

/// Reads a `T` at `base + offset` in kernel memory through `bpf_probe_read_kernel` (for
/// addresses the verifier has no type for).
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
    /// The data buffer (`head`).
    pub head: u64,
    /// Address of the network header (`head + network_header`), 0 when unset.
    pub network_header: u64,
}

/// The address of `skb`'s network header, 0 when unset.
#[inline(always)]
pub fn network_header(off: Offsets, skb: u64) -> u64 {
    network_header_in(off, skb, load_at(skb, off.skb_head()))
}

/// [`network_header`] of `skb`, whose data buffer `head` is already read.
#[inline(always)]
fn network_header_in(off: Offsets, skb: u64, head: u64) -> u64 {
    let nh: u16 = load_at(skb, off.skb_network_header());
    // The kernel marks an unset header offset with (u16)~0.
    if nh == u16::MAX || head == 0 {
        0
    } else {
        head + nh as u64
    }
}

/// Reads the fields every hook reports from an `sk_buff` pointer. `dev`, when not 0, is the
/// device the hook was given (transmit hooks: `skb->dev` may already be the veth peer) and
/// is used instead of `skb->dev`.
#[inline(always)]
pub fn read_skb(off: Offsets, skb: u64, dev: u64) -> SkbInfo {
    let dev: u64 = if dev != 0 {
        dev
    } else {
        load_at(skb, off.skb_dev())
    };
    let (ifindex, netns) = read_dev(off, dev);
    let head: u64 = load_at(skb, off.skb_head());
    SkbInfo {
        len: load_at(skb, off.skb_len()),
        mark: load_at(skb, off.skb_mark()),
        protocol: u16::from_be(load_at(skb, off.skb_protocol())),
        ifindex,
        netns,
        dev,
        head,
        network_header: network_header_in(off, skb, head),
    }
}

/// A `net_device`'s ifindex and its namespace's inode; (0, 0) for a null device.
#[inline(always)]
pub fn read_dev(off: Offsets, dev: u64) -> (u32, u32) {
    if dev == 0 {
        return (0, 0);
    }
    let ifindex: u32 = load_at(dev, off.net_device_ifindex());
    (ifindex, dev_netns(off, dev))
}

/// The inode of a (non-null) `net_device`'s namespace, 0 when it has none.
#[inline(always)]
pub fn dev_netns(off: Offsets, dev: u64) -> u32 {
    let net: u64 = load_at(dev, off.net_device_nd_net() + off.possible_net_t_net());
    if net == 0 {
        0
    } else {
        load_at(net, off.net_ns_inum())
    }
}

/// Copies a device's name into `dst` (left as is for a null device).
#[inline(always)]
pub fn read_ifname(off: Offsets, dev: u64, dst: &mut [u8; IFNAMSIZ]) {
    if dev != 0 {
        load_name(dev, off.net_device_name(), dst);
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

/// Copies a 16-byte name (`char[16]`, e.g. `net_device.name`) at `base + offset` with
/// two loads (see [`load_at`]).
#[inline(always)]
pub fn load_name(base: u64, offset: u32, dst: &mut [u8; IFNAMSIZ]) {
    let lo: u64 = load_at(base, offset);
    let hi: u64 = load_at(base, offset + 8);
    dst[..8].copy_from_slice(&lo.to_ne_bytes());
    dst[8..].copy_from_slice(&hi.to_ne_bytes());
}

/// Copies an IPv6 address (`struct in6_addr`) at `base + offset` with two loads.
#[inline(always)]
pub fn load_addr6(base: u64, offset: u32, dst: &mut [u8; 16]) {
    let lo: u64 = load_at(base, offset);
    let hi: u64 = load_at(base, offset + 8);
    dst[..8].copy_from_slice(&lo.to_ne_bytes());
    dst[8..].copy_from_slice(&hi.to_ne_bytes());
}
