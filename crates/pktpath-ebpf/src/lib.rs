//! Helpers shared by pktpath's eBPF programs: kernel struct reads through the offsets user
//! space resolved from BTF, packet filter evaluation, and the panic handler every object
//! needs.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod atomic;
pub mod delivery;
pub mod filter;
pub mod guard;
pub mod kernel;
pub mod looping;
pub mod mem;
pub mod packet;
pub mod pinned;
pub mod rule;
pub mod xdp;

/// eBPF programs cannot unwind; the verifier rejects any reachable panic path anyway.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
