//! What the data path's tables and the trace's tap need of the kernel that aya 0.14 does
//! not offer: shared mappings of array maps (user space writes a chunk's values in place
//! instead of one update syscall per entry), deleting an entry of an array of maps, waiting
//! until running BPF programs have returned, and standalone ring buffers.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::SysError;

/// `bpf(cmd, attr, size of attr)`: the return value, or the error named by `what`.
///
/// # Safety
/// `A` must be the `repr(C)` part of `union bpf_attr` that `cmd` reads, and every pointer
/// in it valid (and, where the kernel writes through it, writable) for the call.
pub(crate) unsafe fn bpf_call<A>(
    cmd: libc::c_long,
    attr: &mut A,
    what: impl FnOnce() -> String,
) -> Result<libc::c_long, SysError> {
    // SAFETY: the caller vouches for the attribute; the size passed is its.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<A>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(SysError::last(what()));
    }
    Ok(rc)
}

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

    /// The first mapped byte, for atomic access to bytes others write too.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
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

/// The `BPF_MAP_*_ELEM` part of `union bpf_attr`, for a `u32` key.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl ElemAttr {
    /// The attribute for `key` of the map behind `fd`; `value` is the address of the value
    /// buffer, or 0. The key's address is taken: it must outlive the call.
    fn new(fd: BorrowedFd<'_>, key: &u32, value: u64) -> Self {
        Self {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value,
            flags: 0,
        }
    }
}

/// Deletes entry `index` of the array of maps behind `fd` (aya 0.14's `ArrayOfMaps` has no
/// delete). The kernel drops its reference to the inner map once no program can hold it.
pub fn delete_array_entry(fd: BorrowedFd<'_>, index: u32) -> Result<(), SysError> {
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    let mut attr = ElemAttr::new(fd, &index, 0);
    // SAFETY: the attribute points at `index`, which outlives the call.
    unsafe {
        bpf_call(BPF_MAP_DELETE_ELEM, &mut attr, || {
            format!("bpf(BPF_MAP_DELETE_ELEM, entry {index})")
        })
    }?;
    Ok(())
}

/// Creates a ring buffer map of `bytes` bytes (a power of 2, a multiple of the page size)
/// named `name` (at most 15 bytes are kept). aya 0.14 creates standalone maps of some
/// types only, not ring buffers.
pub fn create_ringbuf(bytes: u32, name: &str) -> Result<OwnedFd, SysError> {
    /// The `BPF_MAP_CREATE` part of `union bpf_attr`, up to the name.
    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    let mut map_name = [0u8; 16];
    for (d, s) in map_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: bytes,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
    };
    // SAFETY: the attribute is plain data that outlives the call.
    let rc = unsafe {
        bpf_call(BPF_MAP_CREATE, &mut attr, || {
            format!("bpf(BPF_MAP_CREATE, ring buffer of {bytes} bytes)")
        })
    }?;
    // SAFETY: a descriptor the kernel just returned (an int), owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// The id of the inner map at entry `index` of the array of maps behind `fd`, or None when
/// the entry is empty. Reads the id only: aya's `ArrayOfMaps::get` also opens the inner
/// map by id, which needs CAP_SYS_ADMIN.
pub fn array_of_maps_entry(fd: BorrowedFd<'_>, index: u32) -> Result<Option<u32>, SysError> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut id: u32 = 0;
    let mut attr = ElemAttr::new(fd, &index, (&raw mut id) as u64);
    // SAFETY: the attribute points at `index` and `id`, which outlive the call; the kernel
    // writes the 4-byte inner map id into `id`.
    let found = unsafe {
        bpf_call(BPF_MAP_LOOKUP_ELEM, &mut attr, || {
            format!("bpf(BPF_MAP_LOOKUP_ELEM, entry {index})")
        })
    };
    match found {
        Ok(_) => Ok(Some(id)),
        Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
