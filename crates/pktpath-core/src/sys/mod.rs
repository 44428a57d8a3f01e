//! The one seam between pktpath and the kernel's non-BPF system calls: capabilities,
//! clocks, filesystem mounts (bpffs, tracefs), and the few BPF map operations aya lacks (sys::bpfmap),
//! network namespaces, network devices, traffic control and policy routing (rtnetlink) and
//! signals as a pipe (sys::signals).

pub mod bpfmap;
pub mod caps;
pub mod clock;
pub mod iface;
pub mod link;
pub mod mounts;
pub mod netdev;
mod netlink;
pub mod netns;
pub mod policy_routing;
pub mod signals;
pub mod tc;
pub mod tcxquery;

use std::io;

/// A failed system call, named, with the OS error kept as its source.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SysError {
    /// The call and its main argument, as a user would recognise it (`setns(/run/netns/x)`).
    pub call: String,
    #[source]
    pub source: io::Error,
}

impl SysError {
    /// Wraps the calling thread's last OS error.
    pub fn last(call: impl Into<String>) -> Self {
        Self {
            call: call.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// Wraps a given I/O error.
    pub fn io(call: impl Into<String>, source: io::Error) -> Self {
        Self {
            call: call.into(),
            source,
        }
    }
}

/// Converts a path to a C string for a system call.
pub(crate) fn cstr(path: &std::path::Path) -> Result<std::ffi::CString, SysError> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        call: format!("path {}", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}
