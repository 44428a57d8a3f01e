//! Frames whose headers are not in the skb's linear area still take the fast path.
//!
//! A sender using an AF_PACKET TX_RING (trafgen, and any mmap-based packet generator) hands
//! the kernel skbs with only the Ethernet header linear and the rest in page fragments. The
//! data path must pull the headers in before parsing them; before it did, every such frame
//! was counted as an error and passed to the stack. Here the router namespace has
//! forwarding disabled, so a datagram that arrives upstream was carried by the data path.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use pktpath_tests::{BpffsGuard, RouterLab, SysctlGuard, require_root, run};

mod common;
use common::{Attachment, Scratch};

const FRAMES: usize = 20;
const PORT: u16 = 7001;
const PAYLOAD: &[u8; 18] = b"tx-ring-fast-path!";

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = run::must("ip", &["-n", ns, "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v[0]["address"].as_str().expect("MAC in ip -j link output");
    let mut m = [0u8; 6];
    for (i, b) in text.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    m
}

/// Ethernet + IPv4 (checksummed) + UDP (checksum 0: none, allowed for IPv4) + payload.
fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + PAYLOAD.len()) as u16;
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
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(PAYLOAD);
    f
}

/// Sends `frames` copies of `frame` out of `ifindex` through a TPACKET_V2 TX ring (call
/// inside the sender's namespace).
fn send_tx_ring(ifindex: u32, frame: &[u8], frames: usize) -> std::io::Result<()> {
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

#[test]
fn frames_from_an_af_packet_tx_ring_take_the_fast_path() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let r = lab.router.name.as_str();
    let _no_forwarding = SysctlGuard::new(r, "net.ipv4.ip_forward", "0");
    // The router resolves up1 now, so the first frames do not wait for ARP.
    run::must(
        "ip",
        &[
            "netns",
            "exec",
            r,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            RouterLab::UP1_4,
        ],
    );
    let scratch = Scratch::new("tx-ring");
    let (to_client, to_up1) = (&lab.client_link.a, &lab.up1_link.a);
    let config = scratch.write(
        "configuration.json",
        &format!(
            r#"{{ "version": 1, "interfaces": [ {{ "name": "{to_client}" }}, {{ "name": "{to_up1}" }} ],
  "next_hops": [ {{ "name": "up1", "interface": "{to_up1}", "gateway4": "{}" }} ] }}"#,
            RouterLab::UP1_4
        ),
    );
    let policies = scratch.write(
        "policies.json",
        &format!(
            r#"{{ "version": 1, "policies": [ {{ "id": "to-up1", "priority": 1,
  "match": {{ "iif": "{to_client}", "dst": "{}/32", "proto": "udp" }},
  "action": {{ "type": "forward", "next_hop": "up1" }} }} ] }}"#,
            RouterLab::UP1_4
        ),
    );
    let dp = Attachment::new(&lab, "tx-ring");
    dp.ok(&["attach", "--config", &config]);
    dp.ok(&["apply", &policies]);

    let listener = lab
        .up1
        .handle()
        .run(|| UdpSocket::bind(SocketAddr::new(RouterLab::UP1_4.parse().unwrap(), PORT)))
        .expect("enter up1")
        .expect("bind in up1");
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    let f = frame(
        mac(r, to_client),
        mac(&lab.client.name, &lab.client_link.b),
        [10, 1, 0, 2],
        [10, 2, 0, 2],
    );
    let ifindex = run::ifindex(&lab.client.name, &lab.client_link.b);
    lab.client
        .handle()
        .run(|| send_tx_ring(ifindex, &f, FRAMES))
        .expect("enter client")
        .expect("send through the TX ring");

    let mut got = 0;
    let mut buf = [0u8; 256];
    while let Ok(n) = listener.recv(&mut buf) {
        assert_eq!(&buf[..n], PAYLOAD, "datagram arrived intact");
        got += 1;
    }
    let stats: serde_json::Value = serde_json::from_str(&dp.ok(&["stats", "--json"])).unwrap();
    assert_eq!(
        got, FRAMES,
        "every TX-ring frame forwarded by the data path (router forwarding is off); stats: {stats}"
    );
    let iface = stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == to_client.as_str())
        .unwrap();
    assert_eq!(iface["error_packets"], 0, "{stats}");
    dp.ok(&["detach"]);
}
