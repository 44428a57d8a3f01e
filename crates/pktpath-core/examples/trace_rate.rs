//! How fast user space turns tracer records into JSON Lines, without a kernel: a synthetic
//! stream of UDP packets, each seen at seven hooks across two namespaces and ending in a
//! drop, through the same steps as `pktpath trace --output json` (decode, journey, event,
//! summary, JSON into a 256 KiB buffer as the output's). Prints nanoseconds per event for each stage.
//!
//!   cargo run --release -p pktpath-core --example trace_rate [EVENTS]

use std::{hint::black_box, io::Write as _, time::Instant};

use pktpath_common::trace::{HEADER_BYTES, Hook, TraceEvent};
use pktpath_core::trace::{EventBuilder, Summary, drops::DropReasons, kallsyms::Kallsyms, wire};

const PATH: [(Hook, u32, &[u8]); 7] = [
    (Hook::NetDevQueue, 4_026_532_001, b"cli0"),
    (Hook::NetDevStartXmit, 4_026_532_001, b"cli0"),
    (Hook::NetDevXmit, 4_026_532_001, b"cli0"),
    (Hook::NetifRx, 4_026_532_002, b"rtr0"),
    (Hook::NetifReceiveSkb, 4_026_532_002, b"rtr0"),
    (Hook::NetDevQueue, 4_026_532_002, b"rtr1"),
    (Hook::KfreeSkb, 4_026_532_002, b"rtr1"),
];

fn record(i: u64, step: usize) -> Vec<u8> {
    let (hook, netns, name) = PATH[step];
    let mut header = [0u8; HEADER_BYTES];
    let port = (40_000 + i % 1000) as u16;
    header[..28].copy_from_slice(&[
        0x45, 0, 0, 46, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2, 0, 0, 0x13,
        0x88, 0, 26, 0, 0,
    ]);
    header[20..22].copy_from_slice(&port.to_be_bytes());
    let mut ifname = [0u8; 16];
    ifname[..name.len()].copy_from_slice(name);
    let drop = hook == Hook::KfreeSkb;
    let ev = TraceEvent {
        head: pktpath_common::trace::RecordHead::SKB,
        ts_ns: 1_000_000 + i * 10_000 + step as u64 * 700,
        skb_addr: 0xffff_8880_0400_0000 + (i % 4096) * 0x100,
        location: if drop {
            0xffff_ffff_8100_0000 + 0x2f
        } else {
            0
        },
        buffer: 0xffff_8880_6000_0000 + (i % 4096) * 0x800,
        netns,
        ifindex: 2 + (step as u32 >= 5) as u32,
        len: 46,
        mark: 0,
        drop_reason: if drop { 3 } else { 0 },
        qdisc_handle: 0,
        flags: 0,
        _pad: 0,
        hook: hook as u16,
        protocol: 0x0800,
        header_len: 46,
        cpu: 0,
        ifname,
        header,
        qdisc_kind: [0; 16],
    };
    // SAFETY: viewing a repr(C) plain-data value as bytes.
    unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<TraceEvent>()) }
        .to_vec()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_400_000);
    let packets = n / PATH.len();
    let records: Vec<Vec<u8>> = (0..packets as u64)
        .flat_map(|i| (0..PATH.len()).map(move |s| record(i, s)))
        .collect();
    let events = records.len() as f64;
    let syms = Kallsyms::parse("ffffffff81000000 T kfree_skb_reason\n");
    let builder = || {
        EventBuilder::new(DropReasons::default())
            .with_kallsyms(syms.clone())
            .with_netns_names([(4_026_532_002, "router".to_owned())])
    };
    let per = |t: Instant| t.elapsed().as_nanos() as f64 / events;

    let t = Instant::now();
    for r in &records {
        black_box(wire::decode_record(r).unwrap());
    }
    let decode = per(t);

    let mut b = builder();
    let t = Instant::now();
    for r in &records {
        black_box(b.build_record(&wire::decode_record(r).unwrap()));
    }
    let build = per(t);

    let (mut b, mut summary) = (builder(), Summary::new());
    let t = Instant::now();
    for r in &records {
        let ev = b.build_record(&wire::decode_record(r).unwrap());
        summary.add(&ev);
    }
    let with_summary = per(t);

    let (mut b, mut summary) = (builder(), Summary::new());
    let mut out = Vec::with_capacity(512 << 10);
    let t = Instant::now();
    for r in &records {
        let ev = b.build_record(&wire::decode_record(r).unwrap());
        summary.add(&ev);
        ev.write_json(&mut out);
        out.push(b'\n');
        if out.len() > 256 << 10 {
            out.clear();
        }
    }
    let all = per(t);
    black_box(summary.report(Some(0)));
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "{events} events: decode {decode:.0} ns, + event {build:.0} ns, + summary {with_summary:.0} ns, + JSON {all:.0} ns per event ({:.2} M events/s)",
        1e3 / all
    );
}
