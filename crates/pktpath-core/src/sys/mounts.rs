//! The pseudo filesystems pktpath needs: bpffs (pins) and tracefs (tracepoint ids).
//!
//! A mount pktpath makes for its own use is owned by a [`MountGuard`] that unmounts it on
//! drop, so nothing is left behind unless the user asked for it (`doctor --mount`).

use std::path::{Path, PathBuf};

use super::{SysError, cstr};

/// A pseudo filesystem pktpath may need mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoFs {
    Bpf,
    Trace,
}

impl PseudoFs {
    /// Where the kernel and every BPF tool expect it.
    pub fn path(self) -> &'static Path {
        Path::new(match self {
            Self::Bpf => "/sys/fs/bpf",
            Self::Trace => "/sys/kernel/tracing",
        })
    }

    /// The filesystem type name given to mount(2).
    pub fn fstype(self) -> &'static str {
        match self {
            Self::Bpf => "bpf",
            Self::Trace => "tracefs",
        }
    }

    fn magic(self) -> i64 {
        match self {
            Self::Bpf => 0xcafe_4a11,
            Self::Trace => 0x7472_6163,
        }
    }

    /// Whether this filesystem is mounted at its usual place.
    pub fn is_mounted(self) -> bool {
        self.holds(self.path())
    }

    /// Whether `path` lies on a filesystem of this type (false when it does not exist).
    pub fn holds(self, path: &Path) -> bool {
        let Ok(path) = cstr(path) else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct we own.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid C string and `st` a valid out pointer.
        let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
        rc == 0 && st.f_type as i64 == self.magic()
    }

    /// Mounts it if it is not mounted; the guard unmounts what this call mounted.
    pub fn ensure(self) -> Result<Option<MountGuard>, SysError> {
        if self.is_mounted() {
            return Ok(None);
        }
        let path = self.path();
        std::fs::create_dir_all(path)
            .map_err(|e| SysError::io(format!("mkdir {}", path.display()), e))?;
        let target = cstr(path)?;
        let fstype = std::ffi::CString::new(self.fstype()).expect("no NUL");
        // SAFETY: all pointers are valid C strings; data is null.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(SysError::last(format!(
                "mount -t {} {}",
                self.fstype(),
                path.display()
            )));
        }
        Ok(Some(MountGuard {
            path: path.to_owned(),
        }))
    }
}

/// Runs `f` where `fs` is mounted at its usual place. When it is not mounted, `f` runs on a
/// thread with a private mount namespace in which it is mounted: other processes never see
/// the mount, and it disappears with the thread. Nothing is left behind, and concurrent
/// pktpath processes cannot unmount it under each other.
pub fn with_mounted<F, R>(fs: PseudoFs, f: F) -> Result<R, SysError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    if fs.is_mounted() {
        return Ok(f());
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare affects only this thread (CLONE_NEWNS implies CLONE_FS).
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(SysError::last("unshare(CLONE_NEWNS)"));
            }
            let root = std::ffi::CString::new("/").expect("no NUL");
            // Keep our mounts from propagating back to the host's namespace.
            // SAFETY: valid C strings; null source, fstype and data are allowed here.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(SysError::last("mount --make-rprivate /"));
            }
            let guard = fs.ensure()?;
            let r = f();
            drop(guard);
            Ok(r)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Unmounts, on drop, a filesystem pktpath mounted.
#[derive(Debug)]
pub struct MountGuard {
    path: PathBuf,
}

impl MountGuard {
    /// Leaves the mount in place (the user asked for it).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Ok(path) = cstr(&self.path) {
            // SAFETY: valid C string.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                log::warn!(
                    "umount {} failed: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}
