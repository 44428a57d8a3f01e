//! Frames sent the way mmap-based packet generators (trafgen) send them: through an
//! AF_PACKET TX ring, which hands the kernel skbs with only the Ethernet header linear and
//! the rest in page fragments.

use std::time::Duration;

use crate::run;

/// The MAC address of `dev` in namespace `ns`.
pub fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = run::must("ip", &["-n", ns, "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v[0]["address"].as_str().expect("MAC in ip -j link output");
    let mut m = [0u8; 6];
    for (i, b) in text.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    m
}

/// Ethernet + IPv4 (checksummed) + UDP from port 40000 to `dport` (checksum 0: none,
/// allowed for IPv4) + `payload`.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Sends `frames` copies of `frame` out of `ifindex` through a TPACKET_V2 TX ring (call
/// inside the sender's namespace).
pub fn send(ifindex: u32, frame: &[u8], frames: usize) -> std::io::Result<()> {
    const FRAME_SIZE: usize = 2048;
    const FRAME_NR: usize = 8;
    const BLOCK_SIZE: usize = 4096;
    // Where a TPACKET_V2 TX frame's data starts: TPACKET_ALIGN(sizeof(tpacket2_hdr)).
    const DATA_OFFSET: usize = 32;
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain socket calls on a descriptor this function owns and closes; the ring
    // is mapped with the size the kernel was told and only touched within it.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        ))?;
        let close = |e| {
            libc::close(fd);
            e
        };
        // A SOL_PACKET option of the socket.
        let set = |name: libc::c_int, value: *const libc::c_void, len: usize| {
            check(libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                name,
                value,
                len as u32,
            ))
        };
        let version: libc::c_int = 1; // TPACKET_V2
        set(
            libc::PACKET_VERSION,
            (&raw const version).cast(),
            size_of::<libc::c_int>(),
        )
        .map_err(close)?;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: (FRAME_NR * FRAME_SIZE / BLOCK_SIZE) as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: FRAME_NR as u32,
        };
        set(
            libc::PACKET_TX_RING,
            (&raw const req).cast(),
            size_of::<libc::tpacket_req>(),
        )
        .map_err(close)?;
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        check(libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        ))
        .map_err(close)?;
        let len = FRAME_NR * FRAME_SIZE;
        let ring = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if ring == libc::MAP_FAILED {
            return Err(close(std::io::Error::last_os_error()));
        }
        let ring = ring as *mut u8;
        let mut result = Ok(());
        for i in 0..frames {
            let slot = ring.add((i % FRAME_NR) * FRAME_SIZE);
            let status = slot as *mut u32; // tp_status, first field of tpacket2_hdr
            let mut spins = 0;
            while std::ptr::read_volatile(status) != libc::TP_STATUS_AVAILABLE {
                libc::send(fd, std::ptr::null(), 0, 0);
                std::thread::sleep(Duration::from_millis(1));
                spins += 1;
                if spins > 2000 {
                    result = Err(std::io::Error::other("TX ring slot never came back"));
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(DATA_OFFSET), frame.len());
            std::ptr::write_volatile(slot.add(4) as *mut u32, frame.len() as u32); // tp_len
            std::ptr::write_volatile(status, libc::TP_STATUS_SEND_REQUEST);
            if libc::send(fd, std::ptr::null(), 0, 0) < 0 {
                result = Err(std::io::Error::last_os_error());
                break;
            }
        }
        libc::munmap(ring as *mut libc::c_void, len);
        libc::close(fd);
        result
    }
}
