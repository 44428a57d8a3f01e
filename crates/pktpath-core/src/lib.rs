//! pktpath's user-space library: reading the kernel's BTF, loading the eBPF objects with the
//! running kernel's layout, probing kernel features, and the system seams (capabilities,
//! mounts, network namespaces) the trace and route features stand on.

pub mod btf;
pub mod datapath;
pub mod doctor;
pub mod loader;
pub mod route;
pub mod sys;
pub mod trace;
