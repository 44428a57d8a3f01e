//! The JSON Lines form of [`Event`] (`--output json`): byte for byte what `serde_json`
//! writes for it, written by hand for speed.

use serde::Serialize;

use super::{Event, FibInfo};
use crate::trace::name::Name;

/// JSON pieces appended to a buffer, as `serde_json` writes them.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    // Inlined: with a literal argument the copy is a few moves, not a call to memcpy.
    #[inline(always)]
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn num(&mut self, n: u64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    #[inline]
    fn opt_num(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.num(n),
            None => self.raw("null"),
        }
    }

    /// `"0x..."`.
    fn hex(&mut self, x: u64) {
        self.0.push(b'"');
        push_hex(self.0, x);
        self.0.push(b'"');
    }

    fn str(&mut self, s: &str) {
        if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            self.serde(s);
        } else {
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
        }
    }

    #[inline]
    /// A string of pktpath's own making that needs no escaping (hook and protocol names,
    /// lookup results): copied between quotes without a scan.
    fn own_str(&mut self, s: &str) {
        debug_assert!(!s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        self.0.push(b'"');
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(b'"');
    }

    /// A [`Name`]'s JSON string: no scan for characters to escape in the usual case.
    fn name(&mut self, n: &Name) {
        if n.is_json_plain() {
            self.0.push(b'"');
            self.0.extend_from_slice(n.as_bytes());
            self.0.push(b'"');
        } else {
            self.serde(n.as_str());
        }
    }

    #[inline]
    fn opt_name(&mut self, n: Option<&Name>) {
        match n {
            Some(n) => self.name(n),
            None => self.raw("null"),
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn serde(&mut self, v: &(impl Serialize + ?Sized)) {
        // Writing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.0, v);
    }
}

/// `{:#x}` into `out`, without the formatting machinery (every event carries its skb
/// address).
fn push_hex(out: &mut Vec<u8>, x: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = (16 - x.leading_zeros() as usize / 4).max(1);
    out.extend_from_slice(b"0x");
    for i in (0..n).rev() {
        out.push(DIGITS[(x >> (i * 4)) as usize & 0xf]);
    }
}

/// `{:#x}` as a string (serde's form of [`Event::skb`]).
pub(super) fn hex_str<S: serde::Serializer>(x: &u64, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = Vec::with_capacity(18);
    push_hex(&mut buf, *x);
    // Hex digits and "0x" are ASCII.
    s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
}

impl FibInfo {
    /// Its JSON object, as serde writes it (routing lookups are a fair share of a busy
    /// trace's events).
    fn write_json(&self, j: &mut Json<'_>) {
        j.raw("{\"table\":");
        j.num(self.table.into());
        j.raw(",\"result\":");
        j.own_str(&self.result);
        j.raw(",\"err\":");
        match self.err {
            Some(e) if e < 0 => {
                j.raw("-");
                j.num(e.unsigned_abs().into());
            }
            e => j.opt_num(e.map(|e| e as u64)),
        }
        j.raw(",\"route_type\":");
        j.opt_str(self.route_type.as_deref());
        j.raw(",\"oif_name\":");
        j.opt_name(self.oif_name.as_ref());
        j.raw(",\"oif_index\":");
        j.opt_num(self.oif_index.map(u64::from));
        j.raw(",\"gateway\":");
        j.opt_name(self.gateway.as_ref());
        j.raw(",\"flow_iif\":");
        j.num(self.flow_iif.into());
        j.raw(",\"flow_oif\":");
        j.num(self.flow_oif.into());
        j.raw("}");
    }
}

impl Event {
    /// Appends the event's JSON object to `out`: byte for byte what `serde_json` writes for
    /// it (the `--output json` line), about three times faster (no per-field dispatch; strings
    /// that need no escaping are copied as they are).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let j = &mut Json(out);
        j.raw("{\"schema_version\":");
        j.num(self.schema_version.into());
        j.raw(",\"ts_ns\":");
        j.num(self.ts_ns);
        j.raw(",\"packet_id\":");
        j.num(self.packet_id);
        j.raw(",\"hop\":");
        j.num(self.hop.into());
        j.raw(",\"delta_ns\":");
        j.opt_num(self.delta_ns);
        j.raw(",\"hook\":");
        j.own_str(self.hook);
        j.raw(",\"skb\":");
        j.hex(self.skb);
        j.raw(if self.clone {
            ",\"clone\":true"
        } else {
            ",\"clone\":false"
        });
        j.raw(",\"ifname\":");
        j.name(&self.ifname);
        j.raw(",\"ifindex\":");
        j.num(self.ifindex.into());
        j.raw(",\"netns\":");
        j.num(self.netns.into());
        j.raw(",\"netns_name\":");
        j.opt_name(self.netns_name.as_ref());
        j.raw(",\"proto\":");
        j.own_str(&self.proto);
        j.raw(",\"src\":");
        j.opt_name(self.src.as_ref());
        j.raw(",\"dst\":");
        j.opt_name(self.dst.as_ref());
        j.raw(",\"sport\":");
        j.opt_num(self.sport.map(u64::from));
        j.raw(",\"dport\":");
        j.opt_num(self.dport.map(u64::from));
        j.raw(",\"icmp_type\":");
        j.opt_num(self.icmp_type.map(u64::from));
        j.raw(",\"icmp_code\":");
        j.opt_num(self.icmp_code.map(u64::from));
        j.raw(",\"icmp_id\":");
        j.opt_num(self.icmp_id.map(u64::from));
        j.raw(",\"icmp_seq\":");
        j.opt_num(self.icmp_seq.map(u64::from));
        j.raw(",\"tcp_flags\":");
        j.opt_str(self.tcp_flags.as_deref());
        j.raw(",\"arp_op\":");
        j.opt_num(self.arp_op.map(u64::from));
        j.raw(",\"len\":");
        j.num(self.len.into());
        j.raw(",\"mark\":");
        j.num(self.mark.into());
        j.raw(",\"cpu\":");
        j.num(self.cpu.into());
        j.raw(",\"drop_reason\":");
        j.opt_str(self.drop_reason.as_deref());
        j.raw(",\"drop_location\":");
        j.opt_str(self.drop_location.as_deref());
        // Rare (two hooks, or only with a data path followed): serde writes these.
        j.raw(",\"qdisc\":");
        j.serde(&self.qdisc);
        j.raw(",\"fib\":");
        match &self.fib {
            Some(f) => f.write_json(j),
            None => j.raw("null"),
        }
        j.raw(",\"tc\":");
        j.serde(&self.tc);
        j.raw(",\"xdp\":");
        j.serde(&self.xdp);
        j.raw(",\"delivered\":");
        j.serde(&self.delivered);
        j.raw(",\"rewrite\":");
        j.serde(&self.rewrite);
        j.raw("}");
    }
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::Hook;
    use serde::Deserialize as _;

    use super::*;
    use crate::trace::event::{
        FreeReason, QdiscInfo, Rewrite, TcInfo, XdpInfo,
        fixtures::{builder, fib_record, udp_record},
    };

    #[test]
    fn numbers_are_written_as_serde_writes_them() {
        for n in [
            0,
            7,
            9,
            10,
            99,
            100,
            1_000_000_007,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            Json(&mut out).num(n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap(), "{n}");
        }
    }

    #[test]
    fn write_json_is_what_serde_writes() {
        let mut b = builder();
        let mut events: Vec<Event> = [Hook::NetifReceiveSkb, Hook::NetDevXmit, Hook::KfreeSkb]
            .into_iter()
            .enumerate()
            .map(|(i, h)| b.build(&udp_record(h, 1_000 + i as u64 * 500)))
            .collect();
        let mut odd = events[0].clone();
        odd.ifname = "we\"ird\\\n\u{1}é".into();
        odd.netns_name = Some("tab\there".into());
        odd.tcp_flags = Some("SA".to_owned());
        odd.qdisc = Some(Box::new(QdiscInfo {
            kind: "fq_codel".to_owned(),
            handle: "0:".to_owned(),
        }));
        events.push(odd);
        // The objects of a decision of the fast path, a delivery and a rewrite.
        let mut more = events[1].clone();
        more.tc = Some(Box::new(TcInfo {
            policy: Some("web".to_owned()),
            priority: Some(10),
            action: "forward",
            outcome: "forwarded",
            egress_ifindex: Some(7),
            via_stack: false,
        }));
        more.rewrite = Some(Box::new(Rewrite {
            proto: Some("icmp".into()),
            src: Some("10.0.1.2".into()),
            dst: Some("10.0.1.100".into()),
            sport: None,
            dport: None,
        }));
        events.push(more);
        let mut xdp = events[0].clone();
        xdp.xdp = Some(Box::new(XdpInfo {
            policy: None,
            priority: None,
            action: "pass",
            outcome: "passed",
            egress_ifindex: None,
        }));
        events.push(xdp);
        let mut delivered = events[2].clone();
        (delivered.drop_reason, delivered.drop_location) = (None, None);
        delivered.delivered = Some(Box::new(FreeReason {
            reason: "NO_SOCKET".to_owned(),
            location: "ping_rcv+0xb3".to_owned(),
        }));
        events.push(delivered);
        // Routing lookups: a route via a gateway, a table without a match (a negative
        // errno), an IPv6 route type.
        let mut via = fib_record(Hook::FibTableLookup, 3_000);
        via.gw_family = 2;
        via.gw[..4].copy_from_slice(&[10, 99, 0, 254]);
        let mut miss = fib_record(Hook::FibTableLookup, 3_100);
        (miss.err, miss.out_ifindex, miss.out_ifname) = (-(libc::EAGAIN), 0, [0; 16]);
        let mut v6 = fib_record(Hook::Fib6TableLookup, 3_200);
        (v6.family, v6.route_type) = (pktpath_common::trace::FIB_FAMILY_V6, 7);
        for r in [via, miss, v6] {
            events.push(b.build_fib(&r));
        }
        // Each is also an event as the schema describes it.
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("event.json", crate::trace::schema::event_schema())
            .unwrap();
        let schema = compiler.compile("event.json", &mut schemas).unwrap();
        for ev in &events {
            let mut mine = Vec::new();
            ev.write_json(&mut mine);
            let theirs = serde_json::to_vec(ev).unwrap();
            let text = String::from_utf8(mine).unwrap();
            assert_eq!(text, String::from_utf8(theirs).unwrap());
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Err(e) = schemas.validate(&value, schema) {
                panic!("{e:#}\n{text}");
            }
            // And reads back as the same event (`pktpath trace --read`).
            let back = Event::deserialize(value.clone()).unwrap();
            assert_eq!(&back, ev, "{text}");
        }
        // And the schema is strict: a key it does not know, or a missing one, is refused.
        let mut extra = serde_json::to_value(&events[0]).unwrap();
        extra["surprise"] = 1.into();
        assert!(schemas.validate(&extra, schema).is_err());
        let mut short = serde_json::to_value(&events[0]).unwrap();
        short.as_object_mut().unwrap().remove("hop");
        assert!(schemas.validate(&short, schema).is_err());
    }

    #[test]
    fn fast_hex_matches_display() {
        for x in [0u64, 1, 0xf, 0x10, 0xffff_8880_0433_2e00, u64::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, x);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{x:#x}"));
            assert_eq!(
                serde_json::to_value(Event {
                    skb: x,
                    ..Event::default()
                })
                .unwrap()["skb"],
                format!("{x:#x}")
            );
        }
    }
}
