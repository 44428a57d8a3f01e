//! Kernel struct layouts handed to the programs at load time.
//!
//! Rust eBPF programs get no CO-RE relocations, so user space resolves the offsets of the
//! kernel fields the programs read from the running kernel's BTF and writes them into the
//! global [`KERNEL_OFFSETS_SYMBOL`] before loading. Nothing kernel-specific is compiled in.

/// Name of the global (in every object that reads kernel structs) holding [`KernelOffsets`].
pub const KERNEL_OFFSETS_SYMBOL: &str = "PKTPATH_KERNEL_OFFSETS";

/// Value of [`KernelOffsets::magic`] once user space has filled the offsets in.
pub const KERNEL_OFFSETS_MAGIC: u32 = 0x504b_5450; // "PKTP"

/// Byte offsets of kernel struct members, resolved from BTF at load time.
///
/// Field names say `struct_member`. A program that finds `magic` unset does nothing: it
/// was loaded without offsets and must not read kernel memory at made-up places.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub magic: u32,
    /// `sizeof(struct sk_buff)`, for sanity checks.
    pub skb_size: u32,
    pub skb_len: u32,
    pub skb_data_len: u32,
    pub skb_data: u32,
    pub skb_head: u32,
    pub skb_end: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_protocol: u32,
    pub skb_mark: u32,
    pub skb_dev: u32,
    pub skb_skb_iif: u32,
    pub skb_hash: u32,
    pub skb_tstamp: u32,
    pub net_device_name: u32,
    pub net_device_ifindex: u32,
    pub net_device_nd_net: u32,
    /// `possible_net_t.net`: the pointer inside `net_device.nd_net`.
    pub possible_net_t_net: u32,
    /// `net.ns.inum`: the inode number that names a network namespace.
    pub net_ns_inum: u32,
    pub _pad: u32,
}
crate::assert_size!(KernelOffsets, 22 * 4);
crate::impl_pod!(KernelOffsets);

/// Length of a kernel interface name (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;
