//! Signals as bytes on a pipe (the self-pipe trick), for a long-running loop that waits in
//! `poll` on other descriptors too (the agent: inotify, SIGHUP, SIGTERM, SIGINT).
//!
//! The handler only writes the signal's number to the pipe, which is async-signal-safe; the
//! loop reads the numbers when `poll` says the pipe is readable. One pipe per process: the
//! handlers of the signals given stay installed until the process exits.

use std::{
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::{AtomicI32, Ordering},
};

use super::SysError;

/// The write end of the process's signal pipe (-1 before [`SignalPipe::install`]).
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) on a valid descriptor with a one-byte buffer is async-signal-safe;
        // a full pipe (EAGAIN) loses a repeat of a signal already pending there.
        let _ = unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// The read end of the process's signal pipe.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and routes `signals` into it (without SA_RESTART, so that a blocked
    /// system call returns at once).
    pub fn install(signals: &[libc::c_int]) -> Result<Self, SysError> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(SysError::last("pipe2"));
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and ours. The write end is
        // kept open for the life of the process (the handler may run at any time).
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        let old = WRITE_FD.swap(fds[1], Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: a write end this function created before, no longer used.
            unsafe { libc::close(old) };
        }
        for &sig in signals {
            set_handler(sig, on_signal)
                .map_err(|e| SysError::io(format!("sigaction({sig})"), e))?;
        }
        Ok(Self { read })
    }

    /// The signals that arrived since the last call, in order (empty when none).
    pub fn take(&self) -> Vec<libc::c_int> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf from our descriptor.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend(buf[..n as usize].iter().map(|&b| libc::c_int::from(b)));
        }
    }
}

impl AsRawFd for SignalPipe {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (None: no limit); returns which
/// are readable. A signal interrupting the wait returns an empty list.
pub fn poll_readable(
    fds: &[RawFd],
    timeout: Option<std::time::Duration>,
) -> Result<Vec<bool>, SysError> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: polls is a valid array of polls.len() pollfd structures.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(SysError::io("poll", e));
    }
    Ok(polls
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

/// Installs `handler` for `sig`, without SA_RESTART (a blocked system call returns at once
/// with EINTR). The handler must be async-signal-safe (store to an atomic, write to a pipe).
pub fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the caller vouches for the handler.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{os::fd::AsRawFd as _, time::Duration};

    use super::{SignalPipe, poll_readable};

    #[test]
    fn a_signal_becomes_a_readable_byte_in_order() {
        let pipe = SignalPipe::install(&[libc::SIGUSR1, libc::SIGUSR2]).expect("install");
        let fd = pipe.as_raw_fd();
        assert_eq!(
            poll_readable(&[fd], Some(Duration::from_millis(10))).unwrap(),
            [false]
        );
        assert!(pipe.take().is_empty());
        // SAFETY: raise(3) with signals whose handlers were just installed.
        unsafe {
            libc::raise(libc::SIGUSR1);
            libc::raise(libc::SIGUSR2);
        }
        assert_eq!(
            poll_readable(&[fd], Some(Duration::from_secs(1))).unwrap(),
            [true]
        );
        assert_eq!(pipe.take(), [libc::SIGUSR1, libc::SIGUSR2]);
        assert!(pipe.take().is_empty());
    }
}
