//! Network interfaces of the current network namespace, as the kernel reports them through
//! an `AF_INET` socket's ioctls (`if_nametoindex`, `SIOCGIFMTU`, `SIOCGIFHWADDR`). Unlike
//! /sys/class/net, these answer for the namespace the calling thread is in.

use std::{ffi::CString, io, os::fd::AsRawFd as _};

use super::SysError;

/// What the kernel says about one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iface {
    pub ifindex: u32,
    pub mtu: u32,
    /// Hardware address (all zero for devices without one, such as loopback).
    pub mac: [u8; 6],
}

fn ifreq(name: &str) -> Result<libc::ifreq, SysError> {
    let bad = |why: &str| {
        SysError::io(
            format!("interface name {name:?}"),
            io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()),
        )
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(bad("interface names are 1 to 15 bytes"));
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The ifindex of `name` in the calling thread's network namespace. A name that cannot be
/// an interface's (empty, 16 bytes or more, a NUL byte) is an `InvalidInput` error.
pub fn index(name: &str) -> Result<u32, SysError> {
    let bad = |why: &str| {
        SysError::io(
            format!("interface name {name:?}"),
            io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()),
        )
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(bad("interface names are 1 to 15 bytes"));
    }
    let c = CString::new(name).map_err(|_| bad("contains a NUL byte"))?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(SysError::last(format!("if_nametoindex({name})")));
    }
    Ok(ifindex)
}

/// Looks `name` up in the calling thread's network namespace.
pub fn lookup(name: &str) -> Result<Iface, SysError> {
    let ifindex = index(name)?;
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SysError::last("socket(AF_INET, SOCK_DGRAM)"));
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };

    let mut req = ifreq(name)?;
    // SAFETY: req is a valid ifreq for this ioctl.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(SysError::last(format!("ioctl(SIOCGIFMTU, {name})")));
    }
    // SAFETY: the kernel filled the mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;

    let mut req = ifreq(name)?;
    // SAFETY: req is a valid ifreq for this ioctl.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(SysError::last(format!("ioctl(SIOCGIFHWADDR, {name})")));
    }
    // SAFETY: the kernel filled the hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mac = std::array::from_fn(|i| data[i] as u8);
    Ok(Iface { ifindex, mtu, mac })
}

/// The name of interface `ifindex` in the calling thread's network namespace.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_missing_names_are_errors() {
        let lo = lookup("lo").expect("every namespace has lo");
        assert!(lo.ifindex >= 1);
        assert!(lo.mtu >= 1280, "{lo:?}");
        let err = lookup("pktpath-nope0").unwrap_err();
        assert!(
            err.to_string().contains("if_nametoindex(pktpath-nope0)"),
            "{err}"
        );
        assert!(lookup("sixteen-bytes-xx").is_err());
        assert_eq!(name_of(lo.ifindex).as_deref(), Some("lo"));
        assert_eq!(name_of(0), None);
    }
}
