//! What a device's driver says it can do with XDP: the `xdp-features` of the kernel's
//! `netdev` generic netlink family (Linux 6.3+), in the calling thread's network namespace.
//! A veth announces NDO_XMIT (it takes frames other devices' XDP programs redirect to it)
//! only while its peer can receive them: the peer runs an XDP program or has GRO on.

use super::{
    SysError,
    netlink::{Socket, attributes, c_string},
};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// `enum netdev_xdp_act` bits.
pub const XDP_ACT_BASIC: u64 = 1;
pub const XDP_ACT_NDO_XMIT: u64 = 1 << 2;

/// The `xdp-features` bits of device `ifindex`.
pub fn xdp_features(ifindex: u32) -> Result<u64, SysError> {
    let sock = Socket::open_generic()?;
    let family = family_id(&sock)?;
    let replies = sock
        .transact(
            family,
            0,
            &genl_header(NETDEV_CMD_DEV_GET),
            &[(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes())],
        )
        .map_err(|e| SysError::io(format!("netdev dev-get of ifindex {ifindex}"), e))?;
    let features = replies
        .iter()
        .flat_map(|r| attributes(r.get(4..).unwrap_or_default()))
        .find(|(ty, _)| *ty == NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|(_, d)| Some(u64::from_ne_bytes(d.get(..8)?.try_into().ok()?)));
    features.ok_or_else(|| {
        SysError::io(
            format!("netdev dev-get of ifindex {ifindex}"),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no xdp-features in the reply",
            ),
        )
    })
}

/// The name of the driver of device `name` (ethtool's driver info: `veth`, `virtio_net`...).
pub fn driver(name: &str) -> Result<String, SysError> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    /// `struct ethtool_drvinfo` up to the fields read, padded to its full size.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 164],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 164],
    };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: plain socket(2), owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SysError::last("socket(AF_INET, SOCK_DGRAM)"));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: req points at a valid ifreq whose data points at `info`, alive for the call.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SIOCETHTOOL,
            &raw mut req,
        )
    };
    if r < 0 {
        return Err(SysError::last(format!("ethtool driver info of {name}")));
    }
    Ok(c_string(&info.driver))
}

/// The id the kernel gave the `netdev` family.
fn family_id(sock: &Socket) -> Result<u16, SysError> {
    let replies = sock
        .transact(
            GENL_ID_CTRL,
            0,
            &genl_header(CTRL_CMD_GETFAMILY),
            &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")],
        )
        .map_err(|e| SysError::io("generic netlink family netdev (Linux 6.3+)", e))?;
    for r in &replies {
        let attrs = attributes(r.get(4..).unwrap_or_default());
        let named = attrs
            .iter()
            .any(|(ty, d)| *ty == CTRL_ATTR_FAMILY_NAME && c_string(d) == "netdev");
        let id = attrs
            .iter()
            .find(|(ty, _)| *ty == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, d)| Some(u16::from_ne_bytes(d.get(..2)?.try_into().ok()?)));
        if let (true, Some(id)) = (named, id) {
            return Ok(id);
        }
    }
    Err(SysError::io(
        "generic netlink family netdev",
        std::io::Error::new(std::io::ErrorKind::NotFound, "not in the reply"),
    ))
}

/// `struct genlmsghdr`: command, version 1, reserved.
fn genl_header(cmd: u8) -> [u8; 4] {
    [cmd, 1, 0, 0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_answers() {
        // Needs no privilege: dev-get is open to everyone.
        let f = super::xdp_features(1).expect("netdev dev-get on lo");
        // lo has no native XDP: none of the driver's bits.
        assert_eq!(f & super::XDP_ACT_NDO_XMIT, 0, "{f:#x}");
    }
}
