//! Traffic control over rtnetlink, for the netlink (clsact + cls_bpf) attach mode of the data
//! path: add and delete the clsact qdisc, list the BPF filters on a clsact hook, delete one
//! filter. Attaching the program itself goes through aya; this covers what aya does not
//! (knowing whether a clsact qdisc already existed, removing it, and checking that a filter
//! recorded earlier is still there and still runs our program).
//!
//! All calls act on the calling thread's network namespace.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::SysError;

const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_MIN_INGRESS: u32 = 0xfff2;
const TC_H_MIN_EGRESS: u32 = 0xfff3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RECV_BUF: usize = 64 * 1024;

/// `struct tcmsg` of <linux/rtnetlink.h>.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TcMsg {
    family: u8,
    _pad1: u8,
    _pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();
const TCMSG_LEN: usize = size_of::<TcMsg>();

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The clsact hook a filter sits on.
fn hook_parent(egress: bool) -> u32 {
    (TC_H_CLSACT & 0xffff_0000)
        | if egress {
            TC_H_MIN_EGRESS
        } else {
            TC_H_MIN_INGRESS
        }
}

/// One filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    /// The classifier (`bpf`, `u32`, ...).
    pub kind: String,
    /// The id of the program the filter runs.
    pub prog_id: Option<u32>,
    /// The name cls_bpf shows (the loader's program name).
    pub name: Option<String>,
    /// Whether cls_bpf runs the program with direct-action (its return code is the action).
    pub direct_action: bool,
}

/// An rtnetlink socket (also used by [`super::link`]).
pub(super) struct Socket(OwnedFd);

impl Socket {
    pub(super) fn open() -> Result<Self, SysError> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(SysError::last("socket(AF_NETLINK, NETLINK_ROUTE)"));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one request and collects the payloads of the replies (for a dump, every
    /// message up to NLMSG_DONE; otherwise up to the ACK). An NLMSG_ERROR with a code is
    /// returned as that OS error.
    fn transact(
        &self,
        kind: u16,
        flags: u16,
        msg: TcMsg,
        attrs: &[(u16, &[u8])],
    ) -> io::Result<Vec<Vec<u8>>> {
        // SAFETY: TcMsg is repr(C) plain data.
        let body: [u8; TCMSG_LEN] = unsafe { std::mem::transmute(msg) };
        self.transact_body(kind, flags, &body, attrs)
    }

    /// [`Self::transact`] with the message's fixed header (`tcmsg`, `ifinfomsg`, ...) given
    /// as bytes.
    pub(super) fn transact_body(
        &self,
        kind: u16,
        flags: u16,
        body: &[u8],
        attrs: &[(u16, &[u8])],
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf.extend_from_slice(body);
        for (ty, data) in attrs {
            let len = 4 + data.len();
            buf.extend_from_slice(&(len as u16).to_ne_bytes());
            buf.extend_from_slice(&ty.to_ne_bytes());
            buf.extend_from_slice(data);
            buf.resize(align4(buf.len()), 0);
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

/// Attributes of a message body (after the fixed header), as (type, data).
fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
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

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn tcmsg(payload: &[u8]) -> Option<TcMsg> {
    let b = payload.get(..TCMSG_LEN)?;
    Some(TcMsg {
        family: b[0],
        _pad1: 0,
        _pad2: 0,
        ifindex: i32::from_ne_bytes(b[4..8].try_into().ok()?),
        handle: u32::from_ne_bytes(b[8..12].try_into().ok()?),
        parent: u32::from_ne_bytes(b[12..16].try_into().ok()?),
        info: u32::from_ne_bytes(b[16..20].try_into().ok()?),
    })
}

fn clsact_msg(ifindex: u32) -> TcMsg {
    TcMsg {
        family: libc::AF_UNSPEC as u8,
        ifindex: ifindex as i32,
        handle: TC_H_CLSACT & 0xffff_0000,
        parent: TC_H_CLSACT,
        ..TcMsg::default()
    }
}

/// Adds a clsact qdisc to `ifindex`. Ok(true) when this call created it, Ok(false) when
/// one was already there.
pub fn add_clsact(ifindex: u32) -> Result<bool, SysError> {
    let sock = Socket::open()?;
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    match sock.transact(
        libc::RTM_NEWQDISC,
        flags,
        clsact_msg(ifindex),
        &[(TCA_KIND, b"clsact\0")],
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(SysError::io(
            format!("RTM_NEWQDISC clsact on ifindex {ifindex}"),
            e,
        )),
    }
}

/// Deletes the clsact qdisc of `ifindex` (and with it every filter on it). A missing qdisc
/// is not an error.
pub fn del_clsact(ifindex: u32) -> Result<(), SysError> {
    let sock = Socket::open()?;
    match sock.transact(
        libc::RTM_DELQDISC,
        0,
        clsact_msg(ifindex),
        &[(TCA_KIND, b"clsact\0")],
    ) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        Err(e) => Err(SysError::io(
            format!("RTM_DELQDISC clsact on ifindex {ifindex}"),
            e,
        )),
    }
}

/// The filters on the ingress or egress hook of `ifindex`'s clsact qdisc (none when there
/// is no clsact qdisc); for cls_bpf ones with their program id and name.
pub fn filters(ifindex: u32, egress: bool) -> Result<Vec<Filter>, SysError> {
    let sock = Socket::open()?;
    let msg = TcMsg {
        family: libc::AF_UNSPEC as u8,
        ifindex: ifindex as i32,
        parent: hook_parent(egress),
        ..TcMsg::default()
    };
    let replies = match sock.transact(libc::RTM_GETTFILTER, libc::NLM_F_DUMP as u16, msg, &[]) {
        Ok(r) => r,
        // No clsact qdisc: nothing to list.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => Vec::new(),
        Err(e) => {
            return Err(SysError::io(
                format!("RTM_GETTFILTER dump on ifindex {ifindex}"),
                e,
            ));
        }
    };
    let mut out = Vec::new();
    for p in &replies {
        let Some(m) = tcmsg(p) else { continue };
        // The dump also lists one header per priority with handle 0 and no options.
        if m.ifindex != ifindex as i32 || m.handle == 0 {
            continue;
        }
        let attrs = attributes(&p[TCMSG_LEN..]);
        let kind = attrs
            .iter()
            .find(|(ty, _)| *ty == TCA_KIND)
            .map(|(_, d)| c_string(d))
            .unwrap_or_default();
        let mut f = Filter {
            priority: (m.info >> 16) as u16,
            handle: m.handle,
            kind,
            prog_id: None,
            name: None,
            direct_action: false,
        };
        if f.kind == "bpf"
            && let Some((_, opts)) = attrs.iter().find(|(ty, _)| *ty == TCA_OPTIONS)
        {
            for (ty, d) in attributes(opts) {
                match ty {
                    TCA_BPF_ID if d.len() >= 4 => {
                        f.prog_id = Some(u32::from_ne_bytes(d[..4].try_into().unwrap()))
                    }
                    TCA_BPF_NAME => f.name = Some(c_string(d)),
                    TCA_BPF_FLAGS if d.len() >= 4 => {
                        let flags = u32::from_ne_bytes(d[..4].try_into().unwrap());
                        f.direct_action = flags & TCA_BPF_FLAG_ACT_DIRECT != 0;
                    }
                    _ => {}
                }
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// Deletes the cls_bpf filter `priority`/`handle` on a clsact hook of `ifindex`. A filter
/// already gone is not an error.
pub fn del_filter(ifindex: u32, egress: bool, priority: u16, handle: u32) -> Result<(), SysError> {
    let sock = Socket::open()?;
    let msg = TcMsg {
        family: libc::AF_UNSPEC as u8,
        ifindex: ifindex as i32,
        handle,
        parent: hook_parent(egress),
        // priority << 16 | protocol (ETH_P_ALL, network order)
        info: ((priority as u32) << 16) | (libc::ETH_P_ALL as u16).to_be() as u32,
        ..TcMsg::default()
    };
    match sock.transact(libc::RTM_DELTFILTER, 0, msg, &[(TCA_KIND, b"bpf\0")]) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        Err(e) => Err(SysError::io(
            format!("RTM_DELTFILTER priority {priority} handle {handle:#x} on ifindex {ifindex}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_walked_with_padding() {
        // TCA_KIND "bpf\0", then TCA_OPTIONS (nested flag set) holding TCA_BPF_NAME "ab"
        // (padded to 4) and TCA_BPF_ID 7.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&TCA_KIND.to_ne_bytes());
        b.extend_from_slice(b"bpf\0");
        let mut inner = Vec::new();
        inner.extend_from_slice(&7u16.to_ne_bytes());
        inner.extend_from_slice(&TCA_BPF_NAME.to_ne_bytes());
        inner.extend_from_slice(b"ab\0\0");
        inner.extend_from_slice(&8u16.to_ne_bytes());
        inner.extend_from_slice(&TCA_BPF_ID.to_ne_bytes());
        inner.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&((4 + inner.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&(TCA_OPTIONS | 0x8000).to_ne_bytes());
        b.extend_from_slice(&inner);
        let outer = attributes(&b);
        assert_eq!(outer.len(), 2);
        assert_eq!(c_string(outer[0].1), "bpf");
        assert_eq!(outer[1].0, TCA_OPTIONS);
        let nested = attributes(outer[1].1);
        assert_eq!(nested[0], (TCA_BPF_NAME, &b"ab\0"[..]));
        assert_eq!(nested[1], (TCA_BPF_ID, &7u32.to_ne_bytes()[..]));
    }

    #[test]
    fn hooks_are_the_clsact_minors() {
        assert_eq!(hook_parent(false), 0xffff_fff2);
        assert_eq!(hook_parent(true), 0xffff_fff3);
    }
}
