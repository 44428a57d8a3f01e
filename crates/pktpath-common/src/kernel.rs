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
    pub qdisc_handle: u32,
    pub qdisc_ops: u32,
    /// `Qdisc_ops.id`: the qdisc's kind (`fq_codel`, `pfifo`, ...).
    pub qdisc_ops_id: u32,
    /// `flowi_common` members, at the start of both `flowi4` and `flowi6`.
    pub flowi_oif: u32,
    pub flowi_iif: u32,
    pub flowi_mark: u32,
    pub flowi_proto: u32,
    pub flowi4_saddr: u32,
    pub flowi4_daddr: u32,
    /// `flowi4.uli`: ports (dport, sport) or ICMP (type, code).
    pub flowi4_uli: u32,
    pub flowi6_saddr: u32,
    pub flowi6_daddr: u32,
    pub flowi6_uli: u32,
    pub fib_nh_common_dev: u32,
    pub fib_nh_common_gw_family: u32,
    pub fib_nh_common_gw: u32,
    pub fib6_result_nh: u32,
    pub fib6_result_type: u32,
    /// `fib6_nh.nh_common`: the `fib_nh_common` inside an IPv6 next hop.
    pub fib6_nh_common: u32,
    pub fib6_table_id: u32,
    pub task_struct_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    /// The byte of `sk_buff` holding the `cloned` bit, and the bit's mask in it.
    pub skb_cloned_byte: u32,
    pub skb_cloned_mask: u32,
    /// `sock.__sk_common.skc_family`.
    pub sock_family: u32,
    /// `sock.sk_receive_queue` and its `prev` (the queue's last skb; the queue itself when
    /// empty).
    pub sock_receive_queue: u32,
    pub sock_receive_queue_prev: u32,
    /// `skb_shared_info.dataref` (at `head + end`): how many skbs share the data.
    pub shinfo_dataref: u32,
}
crate::assert_size!(KernelOffsets, 49 * 4);
crate::impl_pod!(KernelOffsets);

impl KernelOffsets {
    /// All zero, `magic` unset: what an object holds until user space fills it in.
    pub const UNSET: Self = Self {
        magic: 0,
        skb_size: 0,
        skb_len: 0,
        skb_data_len: 0,
        skb_data: 0,
        skb_head: 0,
        skb_end: 0,
        skb_mac_header: 0,
        skb_network_header: 0,
        skb_transport_header: 0,
        skb_protocol: 0,
        skb_mark: 0,
        skb_dev: 0,
        skb_skb_iif: 0,
        skb_hash: 0,
        skb_tstamp: 0,
        net_device_name: 0,
        net_device_ifindex: 0,
        net_device_nd_net: 0,
        possible_net_t_net: 0,
        net_ns_inum: 0,
        qdisc_handle: 0,
        qdisc_ops: 0,
        qdisc_ops_id: 0,
        flowi_oif: 0,
        flowi_iif: 0,
        flowi_mark: 0,
        flowi_proto: 0,
        flowi4_saddr: 0,
        flowi4_daddr: 0,
        flowi4_uli: 0,
        flowi6_saddr: 0,
        flowi6_daddr: 0,
        flowi6_uli: 0,
        fib_nh_common_dev: 0,
        fib_nh_common_gw_family: 0,
        fib_nh_common_gw: 0,
        fib6_result_nh: 0,
        fib6_result_type: 0,
        fib6_nh_common: 0,
        fib6_table_id: 0,
        task_struct_nsproxy: 0,
        nsproxy_net_ns: 0,
        skb_cloned_byte: 0,
        skb_cloned_mask: 0,
        sock_family: 0,
        sock_receive_queue: 0,
        sock_receive_queue_prev: 0,
        shinfo_dataref: 0,
    };
}

/// Length of a kernel interface name (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;
