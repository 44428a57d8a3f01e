//! pktpath's user-space library: reading the kernel's BTF, loading the eBPF objects with the
//! running kernel's layout, probing kernel features, the demo's lab of network namespaces, and the system seams (capabilities,
//! mounts, network namespaces) the trace and route features stand on.

pub mod access;
pub mod agent;
pub mod btf;
#[cfg(test)]
mod committed;
pub mod doctor;
pub mod dropmon;
pub mod hoplat;
pub mod lab;
pub mod loader;
pub mod rng;
pub mod route;
pub mod sys;
pub mod trace;
