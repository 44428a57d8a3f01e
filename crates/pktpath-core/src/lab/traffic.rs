//! Real traffic between the lab's namespaces, from this process: each socket is created on
//! a thread inside its namespace (a socket belongs to the namespace it was created in) and
//! then used from any thread.
//!
//! ICMP echo uses a datagram ICMP socket (the kernel fills in id and checksum and hands
//! back only our replies); the lab allows them for root in the client namespace.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::sys::{SysError, netns::NetNs};

fn sys(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> SysError {
    let call = call.into();
    move |e| SysError::io(call, e)
}

/// Sends `count` ICMP echo requests from `ns` to `dst`, `interval` apart, and counts the
/// replies that come back within a second of the last request.
pub fn ping(ns: &NetNs, dst: Ipv4Addr, count: u16, interval: Duration) -> Result<u16, SysError> {
    let fd = ns.run(|| {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
        if fd < 0 {
            return Err(SysError::last("socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)"));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })??;
    // UdpSocket gives send_to/recv with timeouts on any datagram socket.
    let sock = UdpSocket::from(fd);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(sys("setsockopt(SO_RCVTIMEO)"))?;
    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0));
    let mut replies = 0;
    let mut buf = [0u8; 1500];
    for seq in 1..=count {
        let mut req = vec![8u8, 0, 0, 0, 0, 0, (seq >> 8) as u8, seq as u8];
        req.extend_from_slice(b"pktpath demo ping");
        sock.send_to(&req, to)
            .map_err(sys(format!("sendto({dst}) ICMP echo")))?;
        let until = Instant::now()
            + if seq == count {
                Duration::from_secs(1)
            } else {
                interval
            };
        while Instant::now() < until {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[0] == 0 => {
                    replies += 1;
                    if seq == count && replies == count {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(SysError::io("recv ICMP echo reply", e)),
            }
        }
    }
    Ok(replies)
}

/// A UDP socket bound in a namespace, counting what arrives.
pub struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    /// Binds 0.0.0.0:`port` in `ns`.
    pub fn bind(ns: &NetNs, port: u16) -> Result<Self, SysError> {
        let sock = ns
            .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?
            .map_err(sys(format!("bind(udp 0.0.0.0:{port})")))?;
        sock.set_nonblocking(true)
            .map_err(sys("fcntl(O_NONBLOCK)"))?;
        Ok(Self { sock })
    }

    /// The datagrams that arrived so far (reads them all).
    pub fn drain(&self) -> u64 {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// Sends `count` datagrams of `len` bytes from `src` (a local address of `ns`, port chosen
/// by the kernel) to `dst`, `interval` apart.
pub fn udp_send(
    ns: &NetNs,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    count: u32,
    len: usize,
    interval: Duration,
) -> Result<(), SysError> {
    let sock = ns
        .run(|| UdpSocket::bind((src, 0)))?
        .map_err(sys(format!("bind(udp {src}:0)")))?;
    let payload = vec![0x5au8; len];
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(interval);
        }
        sock.send_to(&payload, dst)
            .map_err(sys(format!("sendto({dst})")))?;
    }
    Ok(())
}

/// What a TCP transfer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub sent: u64,
    pub received: u64,
    /// The FNV-1a hash of what was received equals that of what was sent.
    pub intact: bool,
}

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Sends `bytes` of a deterministic pattern from `client` to `dst` over TCP, received by a
/// listener on `server` (bound to 0.0.0.0:dst.port), and checks what arrived. Gives up after
/// `timeout`.
pub fn tcp_transfer(
    client: &NetNs,
    server: &NetNs,
    dst: SocketAddrV4,
    bytes: usize,
    timeout: Duration,
) -> Result<Transfer, SysError> {
    let listener = server
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, dst.port())))?
        .map_err(sys(format!("bind(tcp 0.0.0.0:{})", dst.port())))?;
    listener
        .set_nonblocking(true)
        .map_err(sys("fcntl(O_NONBLOCK)"))?;
    let deadline = Instant::now() + timeout;
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sent_hash = 0xcbf2_9ce4_8422_2325u64;
    fnv1a(&mut sent_hash, &data);

    std::thread::scope(|s| {
        let receiver = s.spawn(|| -> Result<(u64, u64), SysError> {
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(SysError::io("accept(tcp)", e));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(SysError::io("accept(tcp)", e)),
                }
            };
            conn.set_nonblocking(false).map_err(sys("fcntl"))?;
            conn.set_read_timeout(Some(timeout))
                .map_err(sys("setsockopt(SO_RCVTIMEO)"))?;
            let (mut n, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        n += k as u64;
                        fnv1a(&mut hash, &buf[..k]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(SysError::io("recv(tcp)", e)),
                }
            }
            Ok((n, hash))
        });
        let sent = (|| -> Result<u64, SysError> {
            let mut stream = client
                .run(|| TcpStream::connect_timeout(&SocketAddr::V4(dst), timeout))?
                .map_err(sys(format!("connect(tcp {dst})")))?;
            stream
                .set_write_timeout(Some(timeout))
                .map_err(sys("setsockopt(SO_SNDTIMEO)"))?;
            stream
                .write_all(&data)
                .map_err(sys(format!("send(tcp {dst})")))?;
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(sys("shutdown(tcp)"))?;
            // Wait for the peer to close too, so the whole exchange is in the trace.
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.read(&mut [0u8; 1]);
            Ok(data.len() as u64)
        })();
        let received = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let sent = sent?;
        let (received, hash) = received?;
        Ok(Transfer {
            sent,
            received,
            intact: received == sent && hash == sent_hash,
        })
    })
}
