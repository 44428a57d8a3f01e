//! Network namespaces: naming them (name, path, pid or inode), and running code inside one.
//!
//! The network namespace is a property of a thread, so code that must act inside another
//! namespace runs on a short-lived thread that joins it; the caller's thread never moves.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use super::SysError;

/// Where `ip netns add` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    inode: u64,
    path: PathBuf,
}

impl NetNs {
    /// The calling thread's namespace.
    pub fn current() -> Result<Self, SysError> {
        Self::from_path("/proc/thread-self/ns/net")
    }

    /// A namespace by file: a bind mount under /run/netns or /proc/PID/ns/net.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, SysError> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| SysError::io(format!("open {}", path.display()), e))?;
        let inode = file
            .metadata()
            .map_err(|e| SysError::io(format!("stat {}", path.display()), e))?
            .ino();
        Ok(Self {
            file,
            inode,
            path: path.to_owned(),
        })
    }

    /// A namespace by the name `ip netns` gave it.
    pub fn from_name(name: &str) -> Result<Self, SysError> {
        Self::from_path(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// A namespace given as a name, a path, a pid or an inode number, as users type it.
    pub fn parse(spec: &str) -> Result<Self, SysError> {
        if spec.contains('/') {
            return Self::from_path(spec);
        }
        if Path::new(NETNS_RUN_DIR).join(spec).exists() {
            return Self::from_name(spec);
        }
        if let Ok(n) = spec.parse::<u64>() {
            let pid_path = PathBuf::from(format!("/proc/{n}/ns/net"));
            if pid_path.exists() {
                return Self::from_path(pid_path);
            }
            if let Some(path) = find_by_inode(n) {
                return Self::from_path(path);
            }
        }
        Err(SysError::io(
            format!("find network namespace `{spec}`"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such name under /run/netns, pid, path or namespace inode",
            ),
        ))
    }

    /// The namespace's inode number (what `ls -l /proc/PID/ns/net` and the tracer show).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The file this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread that has joined this namespace, and returns its result.
    pub fn run<F, R>(&self, f: F) -> Result<R, SysError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.file.as_raw_fd();
        let what = format!("setns({})", self.path.display());
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: fd is a namespace file descriptor we hold open for the scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(SysError::last(what));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// Runs `f` on a thread inside a brand-new, anonymous network namespace holding only a
/// loopback device (down). The namespace disappears with the thread: nothing is left behind.
pub fn run_in_fresh<F, R>(f: F) -> Result<R, SysError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare affects only this thread's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(SysError::last("unshare(CLONE_NEWNET)"));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The name under /run/netns of the namespace with this inode, if it has one.
pub fn name_of_inode(inode: u64) -> Option<String> {
    std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .flatten()
        .find_map(|e| {
            let meta = std::fs::metadata(e.path()).ok()?;
            (meta.ino() == inode).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// A path that opens the namespace with this inode: a /run/netns name or a process's.
fn find_by_inode(inode: u64) -> Option<PathBuf> {
    if let Some(name) = name_of_inode(inode) {
        return Some(Path::new(NETNS_RUN_DIR).join(name));
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let p = e.path().join("ns/net");
        let meta = std::fs::metadata(&p).ok()?;
        (meta.ino() == inode).then_some(p)
    })
}
