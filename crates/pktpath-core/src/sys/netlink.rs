//! One rtnetlink request and its replies, and the attribute encoding they share: what
//! `sys::tc` (qdiscs and filters) and `sys::policy_routing` (routes and rules) build on.
//!
//! All calls act on the calling thread's network namespace.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::SysError;

const NLA_TYPE_MASK: u16 = 0x3fff;
const RECV_BUF: usize = 64 * 1024;
const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink socket: rtnetlink, or generic netlink (`sys::netdev`).
pub(super) struct Socket(OwnedFd);

impl Socket {
    pub(super) fn open() -> Result<Self, SysError> {
        Self::open_protocol(libc::NETLINK_ROUTE, "NETLINK_ROUTE")
    }

    pub(super) fn open_generic() -> Result<Self, SysError> {
        Self::open_protocol(libc::NETLINK_GENERIC, "NETLINK_GENERIC")
    }

    fn open_protocol(protocol: libc::c_int, name: &str) -> Result<Self, SysError> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(SysError::last(format!("socket(AF_NETLINK, {name})")));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one request (`header` is the message's fixed header, such as a `struct tcmsg`,
    /// then `attrs`) and collects the payloads of the replies (for a dump, every message up
    /// to NLMSG_DONE; otherwise up to the ACK). An NLMSG_ERROR with a code is returned as
    /// that OS error.
    pub(super) fn transact(
        &self,
        kind: u16,
        flags: u16,
        header: &[u8],
        attrs: &[(u16, &[u8])],
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf.extend_from_slice(header);
        buf.resize(align4(buf.len()), 0);
        for (ty, data) in attrs {
            push_attr(&mut buf, *ty, data);
        }
        let seq = 1u32;
        // NLM_F_DUMP shares bits with NLM_F_EXCL; only GET requests dump.
        let dump = kind % 4 == 2 && flags & libc::NLM_F_DUMP as u16 == libc::NLM_F_DUMP as u16;
        let hdr = libc::nlmsghdr {
            nlmsg_len: buf.len() as u32,
            nlmsg_type: kind,
            nlmsg_flags: libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16 | flags,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
        };
        // SAFETY: nlmsghdr is plain data of NLMSG_HDRLEN bytes.
        let hdr: [u8; NLMSG_HDRLEN] = unsafe { std::mem::transmute(hdr) };
        buf[..NLMSG_HDRLEN].copy_from_slice(&hdr);
        // SAFETY: buf is valid for its length.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; RECV_BUF];
        loop {
            // SAFETY: rbuf is valid for its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &rbuf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let rseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                rest = &rest[align4(len).min(rest.len())..];
                if rseq != seq {
                    continue;
                }
                match ty as i32 {
                    libc::NLMSG_DONE => return Ok(out),
                    libc::NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                            .unwrap_or(-libc::EPROTO);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => out.push(payload.to_vec()),
                }
            }
        }
    }
}

/// Appends one attribute (`struct nlattr` and `data`) to `buf`, padded to 4 bytes.
pub(super) fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("netlink attribute under 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Attributes of a message body (after the fixed header), as (type, data).
pub(super) fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// A NUL-terminated string attribute.
pub(super) fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// A u32 attribute.
pub(super) fn u32_attr(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}
