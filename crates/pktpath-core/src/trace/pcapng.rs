//! Writing traced packets as pcapng (the capture format tshark and Wireshark read), from the
//! pcapng specification: one Section Header Block, one Interface Description Block per
//! (network namespace, interface) seen, and one Enhanced Packet Block per event, all
//! little-endian with every block and option padded to 32 bits.
//!
//! - Link type: the tracer copies bytes from the network header on, so interfaces use
//!   `LINKTYPE_RAW` (101), which carries IPv4 and IPv6 alike (the version nibble tells them
//!   apart). Events of other protocols (ARP, LLDP, ...) and events without header bytes are
//!   not written: [`PcapngWriter::write`] returns [`Written::Skipped`] and the caller counts
//!   them.
//! - Interfaces: `if_name` is `IFNAME@NETNS`, NETNS being the namespace's name under
//!   /run/netns or else its inode (`veth-b@blue`, `veth-b@4026532246`); `if_description`
//!   spells out interface, ifindex and namespace.
//! - Time: `if_tsresol` = 9, nanoseconds since the Unix epoch: the kernel's monotonic
//!   `ts_ns` plus a [`MonotonicToRealtime`] offset measured once at start.
//! - Lengths: captured length = the header bytes copied (at most `HEADER_BYTES`); original
//!   length = the packet's length from the network header on, taken from the IP header
//!   (IPv4 total length, IPv6 40 + payload length), because `skb->len` includes the
//!   link-layer header on the transmit hooks. When the IP length is unusable (0 for GSO
//!   super-packets, or shorter than what was copied) it falls back to `skb->len`.
//! - Per packet: `epb_flags` gives the direction (inbound on receive hooks, outbound on
//!   transmit hooks, unknown on frees) and `opt_comment` carries
//!   `hook=... netns=... [netns_name=...] if=... ifindex=... packet_id=... hop=...
//!   [delta_ns=...] skb_len=... [drop_reason=... drop_location=...]
//!   [qdisc_kind=... qdisc_handle=...] [route=...]`.
//! - Routing lookups are not packets: [`PcapngWriter::note_route`] keeps them, and the next
//!   packet written of the same journey carries them, one `route=HOOK,table=T,result=R
//!   [,dev=D][,via=G]` each, in order.

use std::{collections::HashMap, io::Write};

use pktpath_common::{
    net::{ETH_P_IP, ETH_P_IPV6},
    trace::{HEADER_BYTES, Hook, TraceEvent},
};

use super::{event::Event, name::Name, wire};
use crate::sys::clock::MonotonicToRealtime;

/// `LINKTYPE_RAW`: the packet starts at an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u16 = 101;
/// `if_tsresol` value: timestamps in units of 10^-9 s.
pub const TSRESOL_NANOS: u8 = 9;

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 0x0000_0001;
const BLOCK_EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// `epb_flags` direction bits.
const FLAG_INBOUND: u32 = 0b01;
const FLAG_OUTBOUND: u32 = 0b10;

/// Writing the pcapng stream failed.
#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    #[error("writing the pcapng output failed")]
    Io(#[from] std::io::Error),
    #[error("pcapng option {code} would hold {len} bytes; at most 65535 fit")]
    OptionTooLong { code: u16, len: usize },
}

/// What [`PcapngWriter::write`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// An Enhanced Packet Block on this interface id (a new interface was described first).
    Packet { interface: u32 },
    /// Nothing: `LINKTYPE_RAW` cannot carry it.
    Skipped(Skip),
}

/// Why an event was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The packet is not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// The tracer could not copy any header bytes.
    NoBytes,
}

/// Writes one pcapng section of traced packets to `W`.
pub struct PcapngWriter<W: Write> {
    out: W,
    clock: MonotonicToRealtime,
    /// (netns inode, ifindex, ifname) to interface id, in order of first sight.
    interfaces: HashMap<(u32, u32, Name), u32>,
    packets: u64,
    block: Vec<u8>,
    /// Routing lookups per journey, waiting for the journey's next packet.
    routes: HashMap<u64, Vec<String>>,
}

/// Journeys with routing lookups waiting for a packet, kept before the oldest are dropped.
const MAX_PENDING_ROUTES: usize = 4096;

impl<W: Write> PcapngWriter<W> {
    /// Starts a section: writes the Section Header Block, naming `application` as the
    /// writer (`shb_userappl`).
    pub fn new(
        mut out: W,
        clock: MonotonicToRealtime,
        application: &str,
    ) -> Result<Self, PcapngError> {
        let mut b = Vec::new();
        b.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // major version
        b.extend_from_slice(&0u16.to_le_bytes()); // minor version
        b.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        push_option(&mut b, SHB_USERAPPL, application.as_bytes())?;
        push_end(&mut b);
        write_block(&mut out, BLOCK_SHB, &b)?;
        Ok(Self {
            out,
            clock,
            interfaces: HashMap::new(),
            packets: 0,
            block: Vec::new(),
            routes: HashMap::new(),
        })
    }

    /// Writes one event: `raw` for its bytes, `ev` (built from `raw`) for its names and
    /// journey. Describes its interface first if this is the interface's first packet.
    pub fn write(&mut self, raw: &TraceEvent, ev: &Event) -> Result<Written, PcapngError> {
        let bytes = wire::header(raw);
        let ip_version = match raw.protocol {
            ETH_P_IP => 4,
            ETH_P_IPV6 => 6,
            _ => return Ok(Written::Skipped(Skip::NotIp)),
        };
        if bytes.is_empty() {
            return Ok(Written::Skipped(Skip::NoBytes));
        }
        if bytes[0] >> 4 != ip_version {
            return Ok(Written::Skipped(Skip::NotIp));
        }
        let interface = self.interface(ev)?;
        let ts = self.clock.to_realtime_ns(raw.ts_ns);
        let caplen = bytes.len() as u32;
        let b = &mut self.block;
        b.clear();
        b.extend_from_slice(&interface.to_le_bytes());
        b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts as u32).to_le_bytes());
        b.extend_from_slice(&caplen.to_le_bytes());
        b.extend_from_slice(&original_len(bytes, raw.len).to_le_bytes());
        b.extend_from_slice(bytes);
        pad(b);
        let flags = match Hook::from_u16(raw.hook) {
            Some(h) if h.is_receive() => Some(FLAG_INBOUND),
            Some(Hook::NetDevQueue | Hook::NetDevStartXmit | Hook::NetDevXmit) => {
                Some(FLAG_OUTBOUND)
            }
            _ => None,
        };
        if let Some(f) = flags {
            push_option(b, EPB_FLAGS, &f.to_le_bytes())?;
        }
        let mut text = comment(ev, raw.len);
        for r in self.routes.remove(&ev.packet_id).unwrap_or_default() {
            text.push_str(" route=");
            text.push_str(&r);
        }
        push_option(b, OPT_COMMENT, text.as_bytes())?;
        push_end(b);
        write_block(&mut self.out, BLOCK_EPB, b)?;
        self.packets += 1;
        Ok(Written::Packet { interface })
    }

    /// Keeps a routing lookup event (one with `fib` set; others are ignored) for the
    /// comment of its journey's next packet.
    pub fn note_route(&mut self, ev: &Event) {
        let Some(f) = &ev.fib else { return };
        let mut r = format!(
            "{},table={},result={}",
            ev.hook,
            super::event::table_name(f.table),
            f.result
        );
        if let Some(d) = &f.oif_name {
            r.push_str(&format!(",dev={d}"));
        }
        if let Some(g) = &f.gateway {
            r.push_str(&format!(",via={g}"));
        }
        if self.routes.len() >= MAX_PENDING_ROUTES && !self.routes.contains_key(&ev.packet_id) {
            self.routes.clear();
        }
        self.routes.entry(ev.packet_id).or_default().push(r);
    }

    /// The interface id for `ev`'s (netns, interface), describing it on first sight.
    fn interface(&mut self, ev: &Event) -> Result<u32, PcapngError> {
        let key = (ev.netns, ev.ifindex, ev.ifname.clone());
        if let Some(&id) = self.interfaces.get(&key) {
            return Ok(id);
        }
        let id = self.interfaces.len() as u32;
        let ifname = if ev.ifname.is_empty() {
            "-"
        } else {
            ev.ifname.as_str()
        };
        let ns = ev
            .netns_name
            .as_ref()
            .map_or_else(|| ev.netns.to_string(), |n| n.to_string());
        let description = match &ev.netns_name {
            Some(n) => format!(
                "{ifname} (ifindex {}) in network namespace {} ({n})",
                ev.ifindex, ev.netns
            ),
            None => format!(
                "{ifname} (ifindex {}) in network namespace {}",
                ev.ifindex, ev.netns
            ),
        };
        let mut b = Vec::new();
        b.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // reserved
        b.extend_from_slice(&(HEADER_BYTES as u32).to_le_bytes()); // snaplen
        push_option(&mut b, IF_NAME, format!("{ifname}@{ns}").as_bytes())?;
        push_option(&mut b, IF_DESCRIPTION, description.as_bytes())?;
        push_option(&mut b, IF_TSRESOL, &[TSRESOL_NANOS])?;
        push_end(&mut b);
        write_block(&mut self.out, BLOCK_IDB, &b)?;
        self.interfaces.insert(key, id);
        Ok(id)
    }

    /// Interfaces described so far.
    pub fn interfaces(&self) -> usize {
        self.interfaces.len()
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), PcapngError> {
        Ok(self.out.flush()?)
    }

    /// Flushes and hands back the underlying writer.
    pub fn finish(mut self) -> Result<W, PcapngError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The packet's length from the network header on: the IP header's own length when it is
/// usable, else `skb_len`; never less than what was captured.
fn original_len(bytes: &[u8], skb_len: u32) -> u32 {
    let caplen = bytes.len() as u32;
    let from_ip = match bytes.first().map(|b| b >> 4) {
        Some(4) if bytes.len() >= 4 => u32::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        Some(6) if bytes.len() >= 6 => {
            match u32::from(u16::from_be_bytes([bytes[4], bytes[5]])) {
                0 => 0, // jumbogram: the length is in a hop-by-hop option
                n => 40 + n,
            }
        }
        _ => 0,
    };
    if from_ip >= caplen && from_ip > 0 {
        from_ip
    } else {
        skb_len.max(caplen)
    }
}

/// The per-packet comment: hook, namespace, interface, journey, and drop details.
fn comment(ev: &Event, skb_len: u32) -> String {
    let mut c = format!("hook={} netns={}", ev.hook, ev.netns);
    if let Some(n) = &ev.netns_name {
        c.push_str(&format!(" netns_name={n}"));
    }
    c.push_str(&format!(
        " if={} ifindex={} packet_id={} hop={}",
        ev.ifname, ev.ifindex, ev.packet_id, ev.hop
    ));
    if let Some(d) = ev.delta_ns {
        c.push_str(&format!(" delta_ns={d}"));
    }
    c.push_str(&format!(" skb_len={skb_len}"));
    if let Some(r) = &ev.drop_reason {
        c.push_str(&format!(" drop_reason={r}"));
    }
    if let Some(l) = &ev.drop_location {
        c.push_str(&format!(" drop_location={l}"));
    }
    if let Some(q) = &ev.qdisc {
        c.push_str(&format!(" qdisc_kind={} qdisc_handle={}", q.kind, q.handle));
    }
    c
}

/// Zero bytes up to the next multiple of 4.
fn pad(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(4), 0);
}

fn push_option(b: &mut Vec<u8>, code: u16, value: &[u8]) -> Result<(), PcapngError> {
    let len = u16::try_from(value.len()).map_err(|_| PcapngError::OptionTooLong {
        code,
        len: value.len(),
    })?;
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(value);
    pad(b);
    Ok(())
}

fn push_end(b: &mut Vec<u8>) {
    b.extend_from_slice(&OPT_END.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
}

/// Writes a block: type, total length, `body` (already padded), total length again.
fn write_block(out: &mut impl Write, block_type: u32, body: &[u8]) -> std::io::Result<()> {
    debug_assert_eq!(body.len() % 4, 0, "block bodies are padded");
    let total = (body.len() + 12) as u32;
    out.write_all(&block_type.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::HEADER_BYTES;

    use super::*;
    use crate::trace::{EventBuilder, drops::DropReasons, kallsyms::Kallsyms};

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");
    const NS_BLUE: u32 = 4_026_532_246;
    /// No namespace has this inode (nsfs numbers start near 0xF0000000), so looking for its
    /// name under /run/netns finds none even while other tests create namespaces.
    const NS_ANON: u32 = 1_234;
    const OFFSET: i64 = 1_764_000_000_000_000_000;

    /// A test-only pcapng reader, written from the specification independently of the
    /// writer's helpers: blocks with their lengths checked, and options.
    mod reader {
        pub struct Block {
            pub ty: u32,
            pub body: Vec<u8>,
        }

        pub fn u16_at(b: &[u8], at: usize) -> u16 {
            u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
        }
        pub fn u32_at(b: &[u8], at: usize) -> u32 {
            u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
        }

        pub fn blocks(mut data: &[u8]) -> Vec<Block> {
            let mut out = Vec::new();
            while !data.is_empty() {
                assert!(
                    data.len() >= 12,
                    "truncated block: {} bytes left",
                    data.len()
                );
                let ty = u32_at(data, 0);
                let total = u32_at(data, 4) as usize;
                assert_eq!(total % 4, 0, "block length {total} is not 32-bit aligned");
                assert!(total >= 12 && total <= data.len(), "block length {total}");
                assert_eq!(u32_at(data, total - 4) as usize, total, "trailing length");
                out.push(Block {
                    ty,
                    body: data[8..total - 4].to_vec(),
                });
                data = &data[total..];
            }
            out
        }

        /// Options from `b[at..]` up to opt_endofopt: (code, value).
        pub fn options(b: &[u8], mut at: usize) -> Vec<(u16, Vec<u8>)> {
            let mut out = Vec::new();
            loop {
                let code = u16_at(b, at);
                let len = usize::from(u16_at(b, at + 2));
                if code == 0 {
                    assert_eq!(len, 0, "opt_endofopt has no value");
                    assert_eq!(at + 4, b.len(), "nothing after opt_endofopt");
                    return out;
                }
                out.push((code, b[at + 4..at + 4 + len].to_vec()));
                let padded = len.div_ceil(4) * 4;
                assert!(
                    b[at + 4 + len..at + 4 + padded].iter().all(|&x| x == 0),
                    "option padding is zero"
                );
                at += 4 + padded;
            }
        }

        pub fn option(opts: &[(u16, Vec<u8>)], code: u16) -> Option<String> {
            opts.iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        }
    }
    use reader::{blocks, option, options, u16_at, u32_at};

    fn builder() -> EventBuilder {
        let btf = crate::btf::Btf::from_file(format!("{TESTDATA}/vmlinux-6.18.btf")).unwrap();
        let kallsyms = Kallsyms::from_file(format!("{TESTDATA}/kallsyms-6.18.txt")).unwrap();
        EventBuilder::new(DropReasons::from_btf(&btf).unwrap())
            .with_kallsyms(kallsyms)
            .with_netns_names([(NS_BLUE, "blue".to_owned())])
    }

    fn record(hook: Hook, ts_ns: u64, netns: u32, ifname: &[u8], bytes: &[u8]) -> TraceEvent {
        let mut header = [0u8; HEADER_BYTES];
        header[..bytes.len()].copy_from_slice(bytes);
        let mut name = [0u8; 16];
        name[..ifname.len()].copy_from_slice(ifname);
        let protocol = match bytes.first().map(|b| b >> 4) {
            Some(6) => ETH_P_IPV6,
            _ => ETH_P_IP,
        };
        TraceEvent {
            head: pktpath_common::trace::RecordHead::SKB,
            ts_ns,
            skb_addr: 0xffff_8880_0433_2e00,
            location: 0,
            buffer: 0,
            netns,
            ifindex: 2,
            len: bytes.len() as u32 + if hook.is_receive() { 0 } else { 14 },
            mark: 0,
            drop_reason: 0,
            qdisc_handle: 0,
            flags: 0,
            _pad: 0,
            hook: hook as u16,
            protocol,
            header_len: bytes.len() as u16,
            cpu: 0,
            ifname: name,
            header,
            qdisc_kind: [0; 16],
        }
    }

    /// UDP 10.99.0.1:40000 > 10.99.0.2:9, 5 bytes of payload: 33 bytes, not a multiple of 4.
    const UDP4: [u8; 33] = [
        0x45, 0, 0, 33, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2, 0x9c, 0x40,
        0, 9, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o',
    ];

    /// An ICMPv6 echo request fd77::1 > fd77::2 with 8 bytes of ICMPv6, 48 bytes.
    fn icmp6() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        p.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        p
    }

    /// A writer into memory, at a fixed clock offset.
    fn writer() -> PcapngWriter<Vec<u8>> {
        PcapngWriter::new(
            Vec::new(),
            MonotonicToRealtime::fixed(OFFSET),
            "pktpath test",
        )
        .unwrap()
    }

    fn write_all(records: &[TraceEvent]) -> (Vec<u8>, Vec<Written>) {
        let mut b = builder();
        let mut w = writer();
        let written = records
            .iter()
            .map(|r| w.write(r, &b.build(r)).unwrap())
            .collect();
        (w.finish().unwrap(), written)
    }

    #[test]
    fn a_section_with_one_interface_per_namespace_and_device() {
        let tx = record(Hook::NetDevXmit, 1_000, NS_ANON, b"veth-a", &UDP4);
        let rx = record(Hook::NetifReceiveSkb, 4_500, NS_BLUE, b"veth-b", &UDP4);
        let mut drop = record(Hook::KfreeSkb, 9_000, NS_BLUE, b"veth-b", &UDP4);
        drop.drop_reason = 3;
        drop.location = 0xffffffff820a64d0 + 0x2f;
        let v6 = record(Hook::NetDevQueue, 20_000, NS_BLUE, b"veth-b", &icmp6());
        let (file, written) = write_all(&[tx, rx, drop, v6]);
        assert_eq!(
            written,
            [0, 1, 1, 1].map(|interface| Written::Packet { interface })
        );

        let bl = blocks(&file);
        let types: Vec<u32> = bl.iter().map(|b| b.ty).collect();
        assert_eq!(
            types,
            [0x0A0D0D0A, 1, 6, 1, 6, 6, 6],
            "SHB, then each interface described before its first packet"
        );

        let shb = &bl[0].body;
        assert_eq!(u32_at(shb, 0), 0x1A2B3C4D, "little-endian byte-order magic");
        assert_eq!((u16_at(shb, 4), u16_at(shb, 6)), (1, 0), "version 1.0");
        assert_eq!(i64::from_le_bytes(shb[8..16].try_into().unwrap()), -1);
        assert_eq!(
            option(&options(shb, 16), 4).as_deref(),
            Some("pktpath test")
        );

        let idbs: Vec<_> = bl.iter().filter(|b| b.ty == 1).collect();
        let names: Vec<_> = idbs
            .iter()
            .map(|b| {
                assert_eq!(u16_at(&b.body, 0), 101, "LINKTYPE_RAW");
                assert_eq!(u32_at(&b.body, 4), HEADER_BYTES as u32, "snaplen");
                let o = options(&b.body, 8);
                let tsresol = o.iter().find(|(c, _)| *c == 9).expect("if_tsresol");
                assert_eq!(tsresol.1, [9], "nanoseconds");
                (option(&o, 2).unwrap(), option(&o, 3).unwrap())
            })
            .collect();
        assert_eq!(
            names,
            [
                (
                    format!("veth-a@{NS_ANON}"),
                    format!("veth-a (ifindex 2) in network namespace {NS_ANON}")
                ),
                (
                    "veth-b@blue".to_owned(),
                    format!("veth-b (ifindex 2) in network namespace {NS_BLUE} (blue)")
                ),
            ]
        );

        let epbs: Vec<_> = bl.iter().filter(|b| b.ty == 6).collect();
        let fields = |b: &reader::Block| {
            let e = &b.body;
            let ts = (u64::from(u32_at(e, 4)) << 32) | u64::from(u32_at(e, 8));
            let (caplen, origlen) = (u32_at(e, 12) as usize, u32_at(e, 16));
            let data = e[20..20 + caplen].to_vec();
            let after = 20 + caplen.next_multiple_of(4);
            assert!(
                e[20 + caplen..after].iter().all(|&x| x == 0),
                "data padding"
            );
            let o = options(e, after);
            let flags = o
                .iter()
                .find(|(c, _)| *c == 2)
                .map(|(_, v)| u32::from_le_bytes(v[..].try_into().unwrap()));
            (
                u32_at(e, 0),
                ts,
                origlen,
                data,
                flags,
                option(&o, 1).unwrap(),
            )
        };
        let (iface, ts, origlen, data, flags, comment) = fields(epbs[0]);
        assert_eq!(iface, 0);
        assert_eq!(
            ts,
            1_000 + OFFSET as u64,
            "monotonic plus the offset, in ns"
        );
        assert_eq!(data, UDP4, "captured bytes are the header bytes");
        assert_eq!(
            origlen, 33,
            "IP total length, not skb->len with its link header"
        );
        assert_eq!(flags, Some(FLAG_OUTBOUND));
        assert_eq!(
            comment,
            format!(
                "hook=net_dev_xmit netns={NS_ANON} if=veth-a ifindex=2 packet_id=1 hop=1 skb_len=47"
            )
        );

        let (iface, ts, _, _, flags, comment) = fields(epbs[1]);
        assert_eq!(
            (iface, ts, flags),
            (1, 4_500 + OFFSET as u64, Some(FLAG_INBOUND))
        );
        assert_eq!(
            comment,
            format!(
                "hook=netif_receive_skb netns={NS_BLUE} netns_name=blue if=veth-b ifindex=2 packet_id=1 hop=2 delta_ns=3500 skb_len=33"
            )
        );

        let (_, _, _, _, flags, comment) = fields(epbs[2]);
        assert_eq!(flags, None, "a free has no direction");
        assert!(
            comment.starts_with("hook=kfree_skb ")
                && comment.ends_with(
                    " delta_ns=4500 skb_len=47 drop_reason=NO_SOCKET drop_location=udp_queue_rcv_one_skb+0x2f"
                ),
            "{comment}"
        );

        let (iface, _, origlen, data, _, comment) = fields(epbs[3]);
        assert_eq!((iface, origlen, data), (1, 48, icmp6()));
        assert!(comment.contains("hook=net_dev_queue "), "{comment}");
    }

    #[test]
    fn route_lookups_and_qdiscs_ride_in_packet_comments() {
        let mut b = builder();
        let mut w = writer();
        let rx = record(Hook::NetifReceiveSkb, 1_000, NS_BLUE, b"veth-b", &UDP4);
        w.write(&rx, &b.build(&rx)).unwrap();
        // The lookup for that datagram: 10.99.0.1:40000 > 10.99.0.2:9, routed out veth-c.
        let mut out_ifname = [0u8; 16];
        out_ifname[..6].copy_from_slice(b"veth-c");
        let (mut src, mut dst, mut gw) = ([0u8; 16], [0u8; 16], [0u8; 16]);
        src[..4].copy_from_slice(&[10, 99, 0, 1]);
        dst[..4].copy_from_slice(&[10, 99, 0, 2]);
        gw[..4].copy_from_slice(&[10, 98, 0, 254]);
        let fib = pktpath_common::trace::FibEvent {
            head: pktpath_common::trace::RecordHead::FIB,
            ts_ns: 2_000,
            netns: NS_BLUE,
            table: 254,
            err: 0,
            iif: 2,
            oif: 0,
            mark: 0,
            out_ifindex: 4,
            hook: Hook::FibTableLookup as u16,
            cpu: 0,
            proto: 17,
            family: pktpath_common::trace::FIB_FAMILY_V4,
            gw_family: 2,
            route_type: 0,
            uli: [0, 9, 0x9c, 0x40],
            src,
            dst,
            gw,
            out_ifname,
        };
        let ev = b.build_fib(&fib);
        assert_eq!(ev.packet_id, 1, "the lookup joined the datagram's journey");
        w.note_route(&ev);
        let mut enq = record(Hook::QdiscEnqueue, 3_000, NS_BLUE, b"veth-c", &UDP4);
        enq.qdisc_handle = 0x0008_0000;
        enq.qdisc_kind[..3].copy_from_slice(b"tbf");
        w.write(&enq, &b.build(&enq)).unwrap();
        let file = w.finish().unwrap();
        let text = String::from_utf8_lossy(&file);
        assert!(
            text.contains(
                "qdisc_kind=tbf qdisc_handle=8: route=fib_table_lookup,table=main,result=ok,dev=veth-c,via=10.98.0.254"
            ),
            "{text}"
        );
        assert_eq!(text.matches("route=").count(), 1, "carried once");
    }

    #[test]
    fn packets_raw_ip_cannot_carry_are_skipped() {
        let mut arp = record(Hook::NetifReceiveSkb, 1, NS_BLUE, b"veth-b", &[0, 1, 8, 0]);
        arp.protocol = 0x0806;
        let mut empty = record(Hook::NetifReceiveSkb, 2, NS_BLUE, b"veth-b", &UDP4);
        empty.header_len = 0;
        let mut lying = record(Hook::NetifReceiveSkb, 3, NS_BLUE, b"veth-b", &icmp6());
        lying.protocol = ETH_P_IP;
        let (file, written) = write_all(&[arp, empty, lying]);
        assert_eq!(
            written,
            [
                Written::Skipped(Skip::NotIp),
                Written::Skipped(Skip::NoBytes),
                Written::Skipped(Skip::NotIp)
            ]
        );
        let bl = blocks(&file);
        assert_eq!(bl.len(), 1, "only the section header");
    }

    #[test]
    fn original_length_comes_from_the_ip_header_when_usable() {
        assert_eq!(original_len(&UDP4, 47), 33);
        assert_eq!(original_len(&icmp6(), 62), 48);
        let mut gso = UDP4;
        gso[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(original_len(&gso, 64_000), 64_000, "GSO: skb->len");
        let mut short = UDP4;
        short[2..4].copy_from_slice(&[0, 20]);
        assert_eq!(
            original_len(&short, 10),
            33,
            "never below the captured length"
        );
        let mut jumbo = icmp6();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(original_len(&jumbo, 70_000), 70_000);
    }

    #[test]
    fn overlong_options_are_refused() {
        let mut b = Vec::new();
        let err = push_option(&mut b, OPT_COMMENT, &vec![b'x'; 70_000]).unwrap_err();
        assert!(matches!(
            err,
            PcapngError::OptionTooLong {
                code: 1,
                len: 70_000
            }
        ));
        push_option(&mut b, OPT_COMMENT, b"abcde").unwrap();
        assert_eq!(b.len(), 12, "4 + 5 bytes, padded to 12");
    }
}
