//! What the data path's tables need of the kernel that aya 0.14 does not offer: shared
//! mappings of array maps (user space writes a chunk's values in place instead of one
//! update syscall per entry), deleting an entry of an array of maps, and waiting until
//! running BPF programs have returned.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::SysError;

/// A read-write shared mapping of a map's values, unmapped on drop.
pub struct Mapped {
    ptr: *mut u8,
    len: usize,
}

impl Mapped {
    /// Maps the first `len` bytes of the values of the map behind `fd`.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self, SysError> {
        // SAFETY: a fresh shared mapping of a file descriptor; the kernel checks the fd and
        // the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::last(format!("mmap of a BPF map ({len} bytes)")));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, alive until drop; the
        // exclusive borrow keeps this the only slice of it in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Waits until every CPU has left the read-side critical sections it was in (the kernel's
/// `synchronize_rcu`, through membarrier): a BPF program that was running when this is
/// called has returned when it returns.
pub fn synchronize_programs() -> Result<(), SysError> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL,
            0 as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(SysError::last("membarrier(MEMBARRIER_CMD_GLOBAL)"));
    }
    Ok(())
}

/// Deletes entry `index` of the array of maps behind `fd` (aya 0.14's `ArrayOfMaps` has no
/// delete). The kernel drops its reference to the inner map once no program can hold it.
pub fn delete_array_entry(fd: BorrowedFd<'_>, index: u32) -> Result<(), SysError> {
    /// The `BPF_MAP_*_ELEM` part of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    let attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: (&raw const index) as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the attribute points at `index`, which outlives the call; the size passed is
    // the attribute's.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &raw const attr,
            size_of::<ElemAttr>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(SysError::last(format!(
            "bpf(BPF_MAP_DELETE_ELEM, entry {index})"
        )));
    }
    Ok(())
}
