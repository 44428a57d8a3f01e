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

use pktpath_tests::{BpffsGuard, RouterLab, SysctlGuard, require_root, run, txring};

mod common;
use common::{Attachment, Scratch};

const FRAMES: usize = 20;
const PORT: u16 = 7001;
const PAYLOAD: &[u8; 18] = b"tx-ring-fast-path!";

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

    let f = txring::udp_frame(
        txring::mac(r, to_client),
        txring::mac(&lab.client.name, &lab.client_link.b),
        [10, 1, 0, 2],
        [10, 2, 0, 2],
        PORT,
        PAYLOAD,
    );
    let ifindex = run::ifindex(&lab.client.name, &lab.client_link.b);
    lab.client
        .handle()
        .run(|| txring::send(ifindex, &f, FRAMES))
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
