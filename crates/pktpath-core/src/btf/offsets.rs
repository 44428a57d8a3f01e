//! Resolution of the kernel struct offsets the eBPF programs read, from BTF.

use pktpath_common::kernel::{KERNEL_OFFSETS_MAGIC, KernelOffsets};

use super::{Btf, BtfError};

/// Resolves every offset in [`KernelOffsets`] from this kernel's BTF.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let skb = |path: &str| btf.member_offset("sk_buff", path);
    let dev = |path: &str| btf.member_offset("net_device", path);
    let skb_size = btf.size_of(btf.composite("sk_buff")?)?;
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
        _pad: 0,
    })
}
