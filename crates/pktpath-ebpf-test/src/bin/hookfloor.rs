//! The floor of the tracer's forwarding cost: an empty program for each of the tracer's
//! hooks, attached the same way (tp_btf). What forwarding loses with these attached is what
//! running a BPF program from those tracepoints costs before it does anything (bench
//! `trace`, mode "empty programs on the same hooks").
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use pktpath_ebpf as _; // links the shared panic handler

macro_rules! empty_hooks {
    ($($hook:literal => $name:ident),* $(,)?) => {
        $(
            #[btf_tracepoint(function = $hook)]
            pub fn $name(_ctx: BtfTracePointContext) -> i32 {
                0
            }
        )*
    };
}

// Program names: `floor_` and the tracepoint's name (`Hook::name`).
empty_hooks! {
    "netif_receive_skb" => floor_netif_receive_skb,
    "netif_rx" => floor_netif_rx,
    "napi_gro_receive_entry" => floor_napi_gro_receive_entry,
    "net_dev_queue" => floor_net_dev_queue,
    "net_dev_start_xmit" => floor_net_dev_start_xmit,
    "net_dev_xmit" => floor_net_dev_xmit,
    "kfree_skb" => floor_kfree_skb,
    "consume_skb" => floor_consume_skb,
    "qdisc_enqueue" => floor_qdisc_enqueue,
    "qdisc_dequeue" => floor_qdisc_dequeue,
    "fib_table_lookup" => floor_fib_table_lookup,
    "fib6_table_lookup" => floor_fib6_table_lookup,
    "sk_data_ready" => floor_sk_data_ready,
}
