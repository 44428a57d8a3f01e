//! Network devices over rtnetlink: creating one of a given kind (`RTM_NEWLINK`), which tells
//! whether the kernel offers that kind (a tunnel type, say) at all.
//!
//! All calls act on the calling thread's network namespace.

use super::{
    SysError,
    netlink::{Socket, push_attr},
};

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
/// `sizeof(struct ifinfomsg)`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

/// Creates the device `name` of kind `kind` (`gre`, `vxlan`, ...), down, with the kind's
/// own attributes `data` (`IFLA_INFO_DATA`, as (type, value)). A kind the kernel does not
/// have fails with EOPNOTSUPP (`ip link` says "Unknown device type").
pub fn add(name: &str, kind: &str, data: &[(u16, &[u8])]) -> Result<(), SysError> {
    let call = || format!("RTM_NEWLINK {name} type {kind}");
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let mut kind_z = kind.as_bytes().to_vec();
    kind_z.push(0);
    let mut info = Vec::new();
    push_attr(&mut info, IFLA_INFO_KIND, &kind_z);
    if !data.is_empty() {
        let mut inner = Vec::new();
        for (t, v) in data {
            push_attr(&mut inner, *t, v);
        }
        push_attr(&mut info, IFLA_INFO_DATA | NLA_F_NESTED, &inner);
    }
    let body = [0u8; IFINFOMSG_LEN]; // AF_UNSPEC, no index, no flags
    let sock = Socket::open()?;
    sock.transact(
        libc::RTM_NEWLINK,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        &body,
        &[
            (IFLA_IFNAME, &ifname),
            (IFLA_LINKINFO | NLA_F_NESTED, &info),
        ],
    )
    .map(|_| ())
    .map_err(|e| SysError::io(call(), e))
}
