//! Events of routing lookups (`fib_table_lookup`, `fib6_table_lookup`): the flow looked up,
//! the table and its answer, joined to the journey of the packet that caused the lookup.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use pktpath_common::trace::{FIB_FAMILY_V6, FibEvent, Hook};

use super::EventBuilder;
use crate::trace::{
    event::{Event, FibInfo, SCHEMA_VERSION},
    headers,
    journey::Flow,
};

impl EventBuilder {
    /// The rich event for one routing lookup record.
    pub fn build_fib(&mut self, ev: &FibEvent) -> Event {
        let hook = Hook::from_u16(ev.hook);
        let v6 = ev.family == FIB_FAMILY_V6;
        let addr = |b: &[u8; 16]| -> IpAddr {
            if v6 {
                Ipv6Addr::from(*b).into()
            } else {
                Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
            }
        };
        let (src, dst) = (addr(&ev.src), addr(&ev.dst));
        // Named as the packet's headers name it, so that a lookup's flow matches its packet's.
        let proto = match (ev.proto, v6) {
            (0, _) => "-",
            (p, v6) => headers::ip_proto_name(p, v6).unwrap_or(if v6 { "ipv6" } else { "ipv4" }),
        };
        let ports = matches!(proto, "tcp" | "udp").then(|| {
            (
                u16::from_be_bytes([ev.uli[2], ev.uli[3]]),
                u16::from_be_bytes([ev.uli[0], ev.uli[1]]),
            )
        });
        // ICMPv6 type 0 is reserved: an input lookup that left the type unset.
        let icmp = matches!(proto, "icmp" | "icmp6")
            .then_some((ev.uli[0], ev.uli[1]))
            .filter(|&(t, _)| !(v6 && t == 0));
        let flow = Flow {
            src: Some(src),
            dst: Some(dst),
            proto: (ev.proto != 0).then(|| proto.into()),
            ports,
        };
        // A local sender's lookup names the loopback device (ifindex 1 in every namespace)
        // or no device as its input.
        let output = ev.iif <= 1;
        let received = self.received.get(usize::from(ev.cpu)).copied();
        let step = self.journeys.lookup(&flow, ev.ts_ns, output, received);
        let out = self.ifname(&ev.out_ifname);
        let gateway = match ev.gw_family {
            2 => Some(self.addr(Ipv4Addr::new(ev.gw[0], ev.gw[1], ev.gw[2], ev.gw[3]).into())),
            10 => Some(self.addr(Ipv6Addr::from(ev.gw).into())),
            _ => None,
        };
        let route_type = v6.then(|| route_type_name(ev.route_type));
        let result = if v6 {
            match ev.route_type {
                1 | 2 => "ok".into(),
                t => route_type_name(t),
            }
        } else if ev.err == 0 {
            "ok".into()
        } else {
            errno_name(ev.err)
        };
        let netns_name = self.netns_name(ev.netns);
        Event {
            schema_version: SCHEMA_VERSION,
            ts_ns: ev.ts_ns,
            packet_id: step.packet_id,
            hop: step.hop,
            delta_ns: step.delta_ns,
            hook: hook.map_or("unknown", Hook::name),
            skb: 0,
            clone: false,
            ifname: out.clone(),
            ifindex: if ev.out_ifindex != 0 {
                ev.out_ifindex
            } else {
                ev.iif
            },
            netns: ev.netns,
            netns_name,
            proto: proto.into(),
            src: Some(self.addr(src)),
            dst: Some(self.addr(dst)),
            sport: ports.map(|p| p.0),
            dport: ports.map(|p| p.1),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            icmp_id: None,
            icmp_seq: None,
            tcp_flags: None,
            arp_op: None,
            len: 0,
            mark: ev.mark,
            cpu: ev.cpu,
            drop_reason: None,
            drop_location: None,
            qdisc: None,
            fib: Some(Box::new(FibInfo {
                table: ev.table,
                result,
                err: (!v6).then_some(ev.err),
                route_type,
                oif_name: (!out.is_empty()).then_some(out),
                oif_index: (ev.out_ifindex != 0).then_some(ev.out_ifindex),
                gateway,
                flow_iif: ev.iif,
                flow_oif: ev.oif,
            })),
            tc: None,
            xdp: None,
            delivered: None,
            rewrite: None,
        }
    }

    /// Whether `ev` is a routing lookup of a flow that names no protocol and joined no
    /// packet's journey. The in-kernel filter expression cannot judge such a flow (it lets
    /// it through), so a filtered trace leaves these out.
    pub fn is_unjudged_lookup(ev: &Event) -> bool {
        ev.fib.is_some() && ev.proto == "-" && ev.hop == 1
    }
}

/// The name of a route type (`RTN_*`, lower case without the prefix).
fn route_type_name(t: u8) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        _ => return format!("type{t}").into(),
    })
}

/// The name of a negative errno a routing lookup returns.
fn errno_name(err: i32) -> Cow<'static, str> {
    Cow::Borrowed(match -err {
        libc::EAGAIN => "EAGAIN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ESRCH => "ESRCH",
        libc::ENOBUFS => "ENOBUFS",
        _ => return format!("errno {err}").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{
        event::fixtures::{builder, fib_record, udp_record},
        wire::Record,
    };

    #[test]
    fn a_routing_lookup_joins_the_journey_of_its_packet() {
        let mut b = builder();
        let rx = b.build(&udp_record(Hook::NetifReceiveSkb, 1_000));
        let fib = b.build_record(&Record::Fib(fib_record(Hook::FibTableLookup, 1_800)));
        let tx = b.build(&udp_record(Hook::NetDevQueue, 2_000));
        assert_eq!(
            (fib.packet_id, fib.hop, fib.delta_ns),
            (rx.packet_id, 2, Some(800))
        );
        assert_eq!((tx.hop, tx.delta_ns), (3, Some(200)));
        assert_eq!(fib.hook, "fib_table_lookup");
        assert_eq!((fib.sport, fib.dport), (Some(40000), Some(9)));
        assert_eq!(fib.ifname, "veth-r2");
        let info = fib.fib.as_ref().unwrap();
        assert_eq!((info.table, info.result.as_ref()), (254, "ok"));
        assert_eq!(info.oif_name.as_deref(), Some("veth-r2"));
        assert_eq!(info.err, Some(0));
        let text = fib.to_text(1_000);
        assert!(
            text.contains("10.99.0.1:40000 > 10.99.0.2:9 table main ok dev veth-r2 #1 +800ns"),
            "{text}"
        );
        let json = serde_json::to_value(&fib).unwrap();
        assert_eq!(json["fib"]["table"], 254);
        assert!(json["qdisc"].is_null());

        // No route: an IPv6 lookup answered by the unreachable entry, with a gateway-less
        // result; and an IPv4 table without a match.
        let mut miss = fib_record(Hook::FibTableLookup, 5_000);
        miss.err = -libc::EAGAIN;
        miss.out_ifname = [0; 16];
        miss.out_ifindex = 0;
        miss.table = 255;
        let miss = b.build_fib(&miss);
        assert_eq!(miss.fib.as_ref().unwrap().result, "EAGAIN");
        assert!(
            miss.to_text(0).contains("table local EAGAIN #"),
            "{}",
            miss.to_text(0)
        );
        let mut v6 = fib_record(Hook::Fib6TableLookup, 6_000);
        v6.family = pktpath_common::trace::FIB_FAMILY_V6;
        v6.route_type = 7;
        v6.gw_family = 10;
        v6.gw = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        let v6 = b.build_fib(&v6);
        let info = v6.fib.unwrap();
        assert_eq!(info.result, "unreachable");
        assert_eq!(
            (info.err, info.route_type.as_deref()),
            (None, Some("unreachable"))
        );
        assert_eq!(info.gateway.as_deref(), Some("fe80::1"));
    }

    #[test]
    fn an_input_lookup_without_protocol_joins_an_icmp_packet() {
        let mut b = builder();
        let mut ping = udp_record(Hook::NetifReceiveSkb, 1_000);
        ping.header[9] = 1; // ICMP: echo request id 0x9c40 seq 9 where the ports were
        ping.header[20..24].copy_from_slice(&[8, 0, 0, 0]);
        let rx = b.build(&ping);
        assert_eq!(rx.proto, "icmp");
        let mut input = fib_record(Hook::FibTableLookup, 1_300);
        input.proto = 0;
        let fib = b.build_fib(&input);
        assert_eq!((fib.packet_id, fib.hop), (rx.packet_id, 2));
        assert_eq!(fib.proto, "-");
        assert!(!EventBuilder::is_unjudged_lookup(&fib));
        let mut stray = fib_record(Hook::FibTableLookup, 1_400);
        stray.proto = 0;
        stray.dst[3] = 77;
        assert!(EventBuilder::is_unjudged_lookup(&b.build_fib(&stray)));
    }
}
