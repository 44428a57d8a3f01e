//! The rich event pktpath prints: one hook's sighting of one packet, with its journey, its
//! parsed headers, its namespace's name and, for drops, the named reason and location.
//! [`EventBuilder`] turns wire records into these; the JSON form is the fields of [`Event`],
//! versioned by [`SCHEMA_VERSION`].

use std::collections::HashMap;

use pktpath_common::trace::{Hook, TraceEvent};
use serde::Serialize;

use super::{
    drops::DropReasons,
    headers::{self, Headers},
    journey::Journeys,
    kallsyms::Kallsyms,
    wire,
};
use crate::sys::netns;

/// Version of the JSON event schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One event, as printed (`--output json` writes one per line). Absent values are `null`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub schema_version: u32,
    /// Kernel monotonic clock (`bpf_ktime_get_ns`) at the hook.
    pub ts_ns: u64,
    /// The packet's journey id (same skb, from first sighting until freed), from 1.
    pub packet_id: u64,
    /// Position of this event in the journey, from 1.
    pub hop: u32,
    /// Time since the previous event of the same packet; null on its first event.
    pub delta_ns: Option<u64>,
    /// Kernel tracepoint name (`netif_receive_skb`, `net_dev_xmit`, `kfree_skb`, ...).
    pub hook: &'static str,
    /// Kernel address of the sk_buff, hex.
    pub skb: String,
    pub ifname: String,
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    /// The namespace's name under /run/netns, if it has one.
    pub netns_name: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `arp`, `ipv4`, `ipv6`, or the EtherType (`0x88cc`).
    pub proto: String,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub icmp_id: Option<u16>,
    pub icmp_seq: Option<u16>,
    pub tcp_flags: Option<String>,
    /// ARP operation: 1 request, 2 reply.
    pub arp_op: Option<u16>,
    /// `skb->len` at the hook (from the current data pointer: link-layer header included on
    /// transmit, not on receive).
    pub len: u32,
    pub mark: u32,
    pub cpu: u16,
    /// `kfree_skb` only: the kernel's drop reason, without the `SKB_DROP_REASON_` prefix.
    pub drop_reason: Option<String>,
    /// `kfree_skb` only: where the kernel dropped it (`symbol+0xoffset`, or the hex address).
    pub drop_location: Option<String>,
}

/// Builds [`Event`]s from wire records, keeping the journeys and the name caches.
#[derive(Debug)]
pub struct EventBuilder {
    journeys: Journeys,
    reasons: DropReasons,
    kallsyms: Option<Kallsyms>,
    netns_names: HashMap<u32, Option<String>>,
}

impl EventBuilder {
    /// A builder naming drop reasons with `reasons`. Kernel symbols are read on the first
    /// drop (not at start-up).
    pub fn new(reasons: DropReasons) -> Self {
        Self {
            journeys: Journeys::new(),
            reasons,
            kallsyms: None,
            netns_names: HashMap::new(),
        }
    }

    /// Uses this symbol table instead of reading /proc/kallsyms.
    pub fn with_kallsyms(mut self, kallsyms: Kallsyms) -> Self {
        self.kallsyms = Some(kallsyms);
        self
    }

    /// Uses these namespace names (inode to name) instead of looking under /run/netns.
    pub fn with_netns_names(mut self, names: impl IntoIterator<Item = (u32, String)>) -> Self {
        self.netns_names
            .extend(names.into_iter().map(|(i, n)| (i, Some(n))));
        self
    }

    /// The rich event for one wire record.
    pub fn build(&mut self, ev: &TraceEvent) -> Event {
        let hook = Hook::from_u16(ev.hook);
        let h: Headers = headers::parse(ev.protocol, wire::header(ev));
        let step = self.journeys.step(
            ev.skb_addr,
            ev.ts_ns,
            signature(ev.protocol, &h),
            hook.is_some_and(Hook::ends_skb),
        );
        let (drop_reason, drop_location) = if hook == Some(Hook::KfreeSkb) {
            (
                Some(self.reasons.name(ev.drop_reason)),
                Some(self.symbolize(ev.location)),
            )
        } else {
            (None, None)
        };
        let netns_name = self
            .netns_names
            .entry(ev.netns)
            .or_insert_with(|| netns::name_of_inode(u64::from(ev.netns)))
            .clone();
        Event {
            schema_version: SCHEMA_VERSION,
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: hook.map_or("unknown", Hook::name),
            skb: format!("{:#x}", ev.skb_addr),
            ifname: wire::ifname(ev),
            ifindex: ev.ifindex,
            netns: ev.netns,
            netns_name,
            proto: h.proto,
            src: h.src.map(|a| a.to_string()),
            dst: h.dst.map(|a| a.to_string()),
            sport: h.sport,
            dport: h.dport,
            icmp_type: h.icmp_type,
            icmp_code: h.icmp_code,
            icmp_id: h.icmp_id,
            icmp_seq: h.icmp_seq,
            tcp_flags: h.tcp_flags,
            arp_op: h.arp_op,
            len: ev.len,
            mark: ev.mark,
            cpu: ev.cpu,
            drop_reason,
            drop_location,
        }
    }

    fn symbolize(&mut self, addr: u64) -> String {
        let syms = self.kallsyms.get_or_insert_with(|| {
            Kallsyms::from_proc().unwrap_or_else(|e| {
                log::warn!("drop locations will be shown as addresses: {e}");
                Kallsyms::default()
            })
        });
        syms.symbolize(addr).unwrap_or_else(|| format!("{addr:#x}"))
    }
}

/// What stays the same along one packet's journey (unless NAT rewrites it): EtherType,
/// protocol, addresses, ports, ICMP type, id and sequence.
fn signature(ethertype: u16, h: &Headers) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut s = std::hash::DefaultHasher::new();
    (ethertype, &h.proto, h.src, h.dst, h.sport, h.dport).hash(&mut s);
    (h.icmp_type, h.icmp_id, h.icmp_seq, h.arp_op).hash(&mut s);
    s.finish()
}

impl Event {
    /// The event as one line of text, tracepkt style: time (seconds since `t0_ns`), netns
    /// (inode and name), interface, hook, packet, length, journey and time since its
    /// previous hop, and the drop reason and location.
    pub fn to_text(&self, t0_ns: u64) -> String {
        let t = self.ts_ns.saturating_sub(t0_ns) as f64 / 1e9;
        let ns = match &self.netns_name {
            Some(n) => format!("{} ({n})", self.netns),
            None => self.netns.to_string(),
        };
        let ep = |a: &Option<String>, p: Option<u16>| match (a, p) {
            (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.clone(),
            (None, _) => "?".into(),
        };
        let mut line = format!(
            "{t:12.6} {ns:<32} {:<15} {:<22} {:<6} {} > {}",
            self.ifname,
            self.hook,
            self.proto,
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport),
        );
        let detail = headers::describe(&Headers {
            proto: self.proto.clone(),
            icmp_type: self.icmp_type,
            icmp_id: self.icmp_id,
            icmp_seq: self.icmp_seq,
            tcp_flags: self.tcp_flags.clone(),
            arp_op: self.arp_op,
            ..Headers::default()
        });
        if !detail.is_empty() {
            line.push(' ');
            line.push_str(&detail);
        }
        line.push_str(&format!(" len {} #{}", self.len, self.packet_id));
        if let Some(d) = self.delta_ns {
            line.push_str(&format!(" +{}", human_ns(d)));
        }
        if let Some(r) = &self.drop_reason {
            line.push_str(&format!(" DROP {r}"));
            if let Some(l) = &self.drop_location {
                line.push_str(&format!(" at {l}"));
            }
        }
        line
    }
}

/// A duration in ns, short: `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::HEADER_BYTES;

    use super::*;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");

    fn builder() -> EventBuilder {
        let btf = crate::btf::Btf::from_file(format!("{TESTDATA}/vmlinux-6.18.btf")).unwrap();
        let kallsyms = Kallsyms::from_file(format!("{TESTDATA}/kallsyms-6.18.txt")).unwrap();
        EventBuilder::new(DropReasons::from_btf(&btf).unwrap())
            .with_kallsyms(kallsyms)
            .with_netns_names([(4_026_532_246, "blue".to_owned())])
    }

    /// A UDP datagram 10.99.0.1:40000 > 10.99.0.2:9 (closed port) as the hooks record it.
    fn udp_record(hook: Hook, ts_ns: u64) -> TraceEvent {
        let mut header = [0u8; HEADER_BYTES];
        header[..28].copy_from_slice(&[
            0x45, 0, 0, 33, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2, 0x9c,
            0x40, 0, 9, 0, 13, 0, 0,
        ]);
        let mut ifname = [0u8; 16];
        ifname[..6].copy_from_slice(b"veth-b");
        let drop = hook == Hook::KfreeSkb;
        TraceEvent {
            ts_ns,
            skb_addr: 0xffff_8880_0433_2e00,
            location: if drop { 0xffffffff820a64d0 + 0x2f } else { 0 },
            netns: 4_026_532_246,
            ifindex: 2,
            len: 33,
            mark: 0,
            drop_reason: if drop { 3 } else { 0 },
            _pad: 0,
            hook: hook as u16,
            protocol: 0x0800,
            header_len: 33,
            cpu: 1,
            ifname,
            header,
        }
    }

    /// The bytes a record travels as (what the ring buffer hands over).
    fn as_bytes(ev: &TraceEvent) -> Vec<u8> {
        // SAFETY: viewing a repr(C) plain-data value as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const TraceEvent).cast::<u8>(),
                size_of::<TraceEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_drop_is_decoded_with_reason_location_and_journey() {
        let mut b = builder();
        let rx = wire::decode(&as_bytes(&udp_record(Hook::NetifReceiveSkb, 1_000))).unwrap();
        let first = b.build(&rx);
        let drop = b.build(&wire::decode(&as_bytes(&udp_record(Hook::KfreeSkb, 4_500))).unwrap());
        assert_eq!(first.hook, "netif_receive_skb");
        assert_eq!(
            (first.packet_id, first.delta_ns, first.drop_reason),
            (1, None, None)
        );
        assert_eq!(drop.packet_id, 1);
        assert_eq!(drop.delta_ns, Some(3_500));
        assert_eq!(drop.drop_reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(
            drop.drop_location.as_deref(),
            Some("udp_queue_rcv_one_skb+0x2f")
        );
        assert_eq!(drop.proto, "udp");
        assert_eq!(
            (drop.src.as_deref(), drop.sport),
            (Some("10.99.0.1"), Some(40000))
        );
        assert_eq!(
            (drop.dst.as_deref(), drop.dport),
            (Some("10.99.0.2"), Some(9))
        );
        assert_eq!(drop.netns_name.as_deref(), Some("blue"));
        assert_eq!(drop.ifname, "veth-b");

        let json: serde_json::Value = serde_json::to_value(&drop).unwrap();
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["drop_reason"], "NO_SOCKET");
        assert_eq!(json["delta_ns"], 3_500);
        assert_eq!(json["skb"], "0xffff888004332e00");
        assert!(json["icmp_type"].is_null());

        let text = drop.to_text(1_000);
        assert!(text.starts_with("    0.000003 4026532246 (blue)"), "{text}");
        assert!(
            text.contains("10.99.0.1:40000 > 10.99.0.2:9 len 33 #1 +3.5us DROP NO_SOCKET at udp_queue_rcv_one_skb+0x2f"),
            "{text}"
        );
    }

    #[test]
    fn a_freed_skb_ends_its_journey_and_unknown_values_stay_visible() {
        let mut b = builder();
        b.build(&udp_record(Hook::NetDevQueue, 10));
        let consumed = b.build(&udp_record(Hook::ConsumeSkb, 20));
        assert_eq!((consumed.packet_id, consumed.drop_reason), (1, None));
        let again = b.build(&udp_record(Hook::NetDevQueue, 30));
        assert_eq!((again.packet_id, again.delta_ns), (2, None));

        let mut odd = udp_record(Hook::KfreeSkb, 40);
        odd.drop_reason = 0xdead;
        odd.location = 0x10;
        odd.hook = 99;
        odd.protocol = 0x88cc;
        let ev = b.build(&odd);
        assert_eq!(ev.hook, "unknown");
        assert_eq!(ev.proto, "0x88cc");
        assert_eq!(ev.drop_reason, None, "only kfree_skb events carry a reason");
        let mut unnamed = udp_record(Hook::KfreeSkb, 50);
        unnamed.drop_reason = 0xdead;
        unnamed.location = 0x10;
        let ev = b.build(&unnamed);
        assert_eq!(ev.drop_reason.as_deref(), Some("REASON_57005"));
        assert_eq!(ev.drop_location.as_deref(), Some("0x10"));
    }

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
    }
}
