//! Records as the hooks write them, and a builder with this repository's BTF and kernel
//! symbols, for the tests of building and writing events.

use pktpath_common::trace::{FibEvent, HEADER_BYTES, Hook, TraceEvent};

use super::EventBuilder;
use crate::trace::{drops::DropReasons, kallsyms::Kallsyms};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");

pub(super) fn builder() -> EventBuilder {
    let btf = crate::btf::Btf::from_file(format!("{TESTDATA}/vmlinux-6.18.btf")).unwrap();
    let kallsyms = Kallsyms::from_file(format!("{TESTDATA}/kallsyms-6.18.txt")).unwrap();
    EventBuilder::new(DropReasons::from_btf(&btf).unwrap())
        .with_kallsyms(kallsyms)
        .with_netns_names([(4_026_532_246, "blue".to_owned())])
}

/// A UDP datagram 10.99.0.1:40000 > 10.99.0.2:9 (closed port) as the hooks record it.
pub(super) fn udp_record(hook: Hook, ts_ns: u64) -> TraceEvent {
    let mut header = [0u8; HEADER_BYTES];
    header[..28].copy_from_slice(&[
        0x45, 0, 0, 33, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2, 0x9c, 0x40,
        0, 9, 0, 13, 0, 0,
    ]);
    let mut ifname = [0u8; 16];
    ifname[..6].copy_from_slice(b"veth-b");
    let drop = hook == Hook::KfreeSkb;
    TraceEvent {
        head: pktpath_common::trace::RecordHead::SKB,
        ts_ns,
        skb_addr: 0xffff_8880_0433_2e00,
        location: if drop { 0xffffffff820a64d0 + 0x2f } else { 0 },
        buffer: 0,
        netns: 4_026_532_246,
        ifindex: 2,
        len: 33,
        mark: 0,
        drop_reason: if drop { 3 } else { 0 },
        qdisc_handle: 0,
        flags: 0,
        _pad: 0,
        hook: hook as u16,
        protocol: 0x0800,
        header_len: 33,
        cpu: 1,
        ifname,
        header,
        qdisc_kind: [0; 16],
    }
}

/// [`udp_record`]'s event carrying the packet `bytes` (from the network header on, at most
/// `HEADER_BYTES` of them) of EtherType `protocol` instead.
pub(super) fn packet_record(hook: Hook, ts_ns: u64, protocol: u16, bytes: &[u8]) -> TraceEvent {
    let mut ev = udp_record(hook, ts_ns);
    let n = bytes.len().min(HEADER_BYTES);
    ev.header = [0; HEADER_BYTES];
    ev.header[..n].copy_from_slice(&bytes[..n]);
    ev.header_len = u16::try_from(n).expect("fits");
    ev.len = u32::try_from(bytes.len()).expect("fits");
    ev.protocol = protocol;
    ev
}

pub(super) fn fib_record(hook: Hook, ts_ns: u64) -> FibEvent {
    let mut out_ifname = [0u8; 16];
    out_ifname[..7].copy_from_slice(b"veth-r2");
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[10, 99, 0, 1]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[10, 99, 0, 2]);
    FibEvent {
        head: pktpath_common::trace::RecordHead::FIB,
        ts_ns,
        netns: 4_026_532_246,
        table: 254,
        err: 0,
        iif: 2,
        oif: 0,
        mark: 0,
        out_ifindex: 3,
        hook: hook as u16,
        cpu: 0,
        proto: 17,
        family: pktpath_common::trace::FIB_FAMILY_V4,
        gw_family: 0,
        route_type: 0,
        uli: [0, 9, 0x9c, 0x40],
        src,
        dst,
        gw: [0; 16],
        out_ifname,
    }
}
