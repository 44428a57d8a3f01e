//! Traffic control over rtnetlink, for the netlink (clsact + cls_bpf) attach mode of the data
//! path: add and delete the clsact qdisc, list the BPF filters on a clsact hook, delete one
//! filter. Attaching the program itself goes through aya; this covers what aya does not
//! (knowing whether a clsact qdisc already existed, removing it, and checking that a filter
//! recorded earlier is still there and still runs our program).
//!
//! All calls act on the calling thread's network namespace.

use std::io;

use super::{
    SysError,
    netlink::{Socket, attributes, c_string},
};

const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_MIN_INGRESS: u32 = 0xfff2;
const TC_H_MIN_EGRESS: u32 = 0xfff3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

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

const TCMSG_LEN: usize = size_of::<TcMsg>();

/// One rtnetlink request with a `struct tcmsg` header (see [`Socket::transact`]).
fn transact(
    sock: &Socket,
    kind: u16,
    flags: u16,
    msg: TcMsg,
    attrs: &[(u16, &[u8])],
) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: TcMsg is repr(C) plain data.
    let body: [u8; TCMSG_LEN] = unsafe { std::mem::transmute(msg) };
    sock.transact(kind, flags, &body, attrs)
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
    match transact(
        &sock,
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
    match transact(
        &sock,
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
    let replies = match transact(
        &sock,
        libc::RTM_GETTFILTER,
        libc::NLM_F_DUMP as u16,
        msg,
        &[],
    ) {
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
    match transact(&sock, libc::RTM_DELTFILTER, 0, msg, &[(TCA_KIND, b"bpf\0")]) {
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
