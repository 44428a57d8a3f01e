//! Resolution of the kernel struct offsets the eBPF programs read, from BTF.

use pktpath_common::kernel::{KERNEL_OFFSETS_MAGIC, KernelOffsets};

use super::{Btf, BtfError};

/// Resolves every offset in [`KernelOffsets`] from this kernel's BTF.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let skb = |path: &str| btf.member_offset("sk_buff", path);
    let dev = |path: &str| btf.member_offset("net_device", path);
    let fl4 = |path: &str| btf.member_offset("flowi4", path);
    let fl6 = |path: &str| btf.member_offset("flowi6", path);
    let nhc = |path: &str| btf.member_offset("fib_nh_common", path);
    let skb_size = btf.size_of(btf.composite("sk_buff")?)?;
    // A one-bit field (little-endian bit numbering within its byte).
    let cloned = btf.member_location("sk_buff", "cloned")?;
    Ok(KernelOffsets {
        magic: KERNEL_OFFSETS_MAGIC,
        skb_size,
        skb_len: skb("len")?,
        skb_data_len: skb("data_len")?,
        skb_data: skb("data")?,
        skb_head: skb("head")?,
        skb_end: skb("end")?,
        skb_mac_header: skb("mac_header")?,
        skb_network_header: skb("network_header")?,
        skb_transport_header: skb("transport_header")?,
        skb_protocol: skb("protocol")?,
        skb_mark: skb("mark")?,
        skb_dev: skb("dev")?,
        skb_skb_iif: skb("skb_iif")?,
        skb_hash: skb("hash")?,
        skb_tstamp: skb("tstamp")?,
        net_device_name: dev("name")?,
        net_device_ifindex: dev("ifindex")?,
        net_device_nd_net: dev("nd_net")?,
        possible_net_t_net: btf.member_offset("possible_net_t", "net")?,
        net_ns_inum: btf.member_offset("net", "ns.inum")?,
        qdisc_handle: btf.member_offset("Qdisc", "handle")?,
        qdisc_ops: btf.member_offset("Qdisc", "ops")?,
        qdisc_ops_id: btf.member_offset("Qdisc_ops", "id")?,
        flowi_oif: fl4("__fl_common.flowic_oif")?,
        flowi_iif: fl4("__fl_common.flowic_iif")?,
        flowi_mark: fl4("__fl_common.flowic_mark")?,
        flowi_proto: fl4("__fl_common.flowic_proto")?,
        flowi4_saddr: fl4("saddr")?,
        flowi4_daddr: fl4("daddr")?,
        flowi4_uli: fl4("uli")?,
        flowi6_saddr: fl6("saddr")?,
        flowi6_daddr: fl6("daddr")?,
        flowi6_uli: fl6("uli")?,
        fib_nh_common_dev: nhc("nhc_dev")?,
        fib_nh_common_gw_family: nhc("nhc_gw_family")?,
        fib_nh_common_gw: nhc("nhc_gw")?,
        fib6_result_nh: btf.member_offset("fib6_result", "nh")?,
        fib6_result_type: btf.member_offset("fib6_result", "fib6_type")?,
        fib6_nh_common: btf.member_offset("fib6_nh", "nh_common")?,
        fib6_table_id: btf.member_offset("fib6_table", "tb6_id")?,
        task_struct_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_net_ns: btf.member_offset("nsproxy", "net_ns")?,
        skb_cloned_byte: cloned.bit_offset / 8,
        skb_cloned_mask: 1 << (cloned.bit_offset % 8),
        sock_family: btf.member_offset("sock", "__sk_common.skc_family")?,
        sock_receive_queue: btf.member_offset("sock", "sk_receive_queue")?,
        sock_receive_queue_prev: btf.member_offset("sock", "sk_receive_queue.prev")?,
        shinfo_dataref: btf.member_offset("skb_shared_info", "dataref")?,
    })
}
