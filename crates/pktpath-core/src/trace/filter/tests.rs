//! Unit tests of the filter language: parsing, error messages, compilation, key extraction;
//! its property tests are in `properties`.

mod properties;
mod strategy;

use std::net::{Ipv4Addr, Ipv6Addr};

use pktpath_common::filter::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FILTER_MAX_INSNS, FilterInsn, FilterOp, FilterProgram,
    IPPROTO_TCP, IPPROTO_UDP, KEY_ADDR_V4, KEY_ADDR_V6, KEY_FRAGMENT, KEY_IP, KEY_PORTS, PacketKey,
    TARGET_MATCH, eval, key_from_l3,
};

use super::{sample::*, *};

fn key(ethertype: u16, l3: &[u8]) -> PacketKey {
    let mut buf = [0u8; 96];
    let n = l3.len().min(96);
    buf[..n].copy_from_slice(&l3[..n]);
    key_from_l3(&buf, n, ethertype)
}

fn canon(text: &str) -> String {
    parse(text).expect(text).expect("non-empty").to_string()
}

fn err(text: &str) -> String {
    match compile_filter(text) {
        Ok(_) => panic!("`{text}` should be rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_primitives_and_operators() {
    assert_eq!(canon("host 10.0.0.1"), "host 10.0.0.1");
    assert_eq!(canon("src host fd00::1"), "src host fd00::1");
    assert_eq!(canon("dst net 10.0.0.0/8"), "dst net 10.0.0.0/8");
    assert_eq!(canon("net 10.0.0.1"), "net 10.0.0.1/32");
    assert_eq!(canon("port 53"), "port 53");
    assert_eq!(canon("src portrange 1000-2000"), "src portrange 1000-2000");
    assert_eq!(canon("tcp port 80"), "(tcp) and (port 80)");
    assert_eq!(canon("!tcp && udp"), "(not (tcp)) and (udp)");
    assert_eq!(canon("not (tcp || udp)"), "not ((tcp) or (udp))");
    assert_eq!(canon("icmp6 or arp"), "(icmp6) or (arp)");
}

#[test]
fn and_or_have_equal_precedence_left_to_right_as_in_pcap() {
    assert_eq!(
        canon("tcp or udp and port 53"),
        "((tcp) or (udp)) and (port 53)"
    );
    assert_eq!(canon("tcp and udp or arp"), "((tcp) and (udp)) or (arp)");
    assert_eq!(canon("not tcp or udp"), "(not (tcp)) or (udp)");
}

#[test]
fn empty_filter_matches_everything() {
    assert_eq!(parse("  ").unwrap(), None);
    let prog = compile_filter("").unwrap();
    assert_eq!(prog.len, 0);
    assert!(eval(&prog, &PacketKey::default()));
}

#[test]
fn errors_point_at_the_token() {
    assert_eq!(
        err("tcp and host foo"),
        "unexpected `foo` at 13: expected a host address (IPv4 or IPv6; names are not \
         resolved)\n  tcp and host foo\n               ^^^"
    );
    assert!(err("port http").starts_with("unexpected `http` at 5: expected a port number"));
    assert!(err("port 70000").starts_with("unexpected `70000` at 5: expected a port number"));
    assert!(err("portrange 90-80").starts_with("invalid port range `90-80` at 10"));
    assert!(err("net 10.1.2.3/8").starts_with("invalid network `10.1.2.3/8` at 4: bits are set"));
    assert!(err("net 10.0.0.0/33").starts_with("invalid network `10.0.0.0/33` at 4"));
    assert!(err("tcp & udp").starts_with("unexpected `&` at 4: expected `&&`"));
    assert!(err("(tcp").starts_with("unexpected end of filter at 4: expected `)`"));
    assert!(err("tcp)").starts_with("unexpected `)` at 3: expected `and`, `or` or the end"));
    assert!(err("tcp udp").starts_with("unexpected `udp` at 4: expected `and`, `or`"));
    assert!(err("src tcp").starts_with("unexpected `tcp` at 4: expected `host`, `net`"));
    assert!(err("host 10.0.0.1 or 10.0.0.2").starts_with("unexpected `10.0.0.2` at 17"));
    assert!(err("ip6 host 10.0.0.1").starts_with("invalid address `10.0.0.1` at 9"));
    assert!(err("icmp port 7").starts_with("invalid qualifier `port` at 5"));
    assert!(err("tcp and").starts_with("unexpected end of filter at 7: expected a primitive"));
    assert!(err("len 5").starts_with("unexpected `len` at 0"));
    assert!(err("tcp $").starts_with("unexpected `$` at 4"));
    let deep = format!("{}tcp{}", "(".repeat(100), ")".repeat(100));
    assert!(err(&deep).contains("nesting deeper than 64"));
    // The caret line sits under the token, counted in characters.
    assert!(err("tcp and é").ends_with("  tcp and é\n          ^"));
}

#[test]
fn too_large_filters_are_rejected_with_the_count() {
    let hosts: Vec<String> = (0..=FILTER_MAX_INSNS)
        .map(|i| format!("host 10.0.0.{i}"))
        .collect();
    let text = hosts.join(" or ");
    assert_eq!(
        compile_filter(&text),
        Err(FilterError::TooLarge {
            needed: FILTER_MAX_INSNS + 1
        })
    );
    assert!(err(&text).starts_with("filter needs 65 instructions but at most 64 fit"));
    let fits = hosts[..FILTER_MAX_INSNS].join(" or ");
    assert_eq!(
        compile_filter(&fits).unwrap().len as usize,
        FILTER_MAX_INSNS
    );
}

#[test]
fn compiles_to_forward_short_circuit_jumps() {
    let prog = compile_filter("tcp and not port 22").unwrap();
    assert_eq!(prog.len, 2);
    let tcp = prog.insns[0];
    assert_eq!(tcp.op, FilterOp::IpProto as u8);
    assert_eq!(
        (tcp.jt, tcp.jf),
        (1, pktpath_common::filter::TARGET_NO_MATCH)
    );
    let port = prog.insns[1];
    assert_eq!(port.op, FilterOp::Port as u8);
    assert_eq!(
        (port.jt, port.jf),
        (pktpath_common::filter::TARGET_NO_MATCH, TARGET_MATCH)
    );
}

#[test]
fn malformed_programs_match_nothing() {
    let mut prog = FilterProgram::match_all();
    prog.len = 2;
    prog.insns[0] = FilterInsn {
        op: FilterOp::EtherType as u8,
        jt: 1,
        jf: 1,
        ..Default::default()
    };
    // Instruction 1 jumps backwards.
    prog.insns[1] = FilterInsn {
        op: FilterOp::EtherType as u8,
        jt: 0,
        jf: 0,
        ..Default::default()
    };
    assert!(!eval(&prog, &PacketKey::default()));
    // A target past the end.
    prog.insns[1].jt = 9;
    prog.insns[1].jf = 9;
    assert!(!eval(&prog, &PacketKey::default()));
    // Unknown opcode: the test fails, and the false branch is taken.
    prog.insns[1].op = 0x7f;
    prog.insns[1].jf = TARGET_MATCH;
    assert!(eval(&prog, &PacketKey::default()));
}

#[test]
fn key_of_ipv4_tcp() {
    let src = Ipv4Addr::new(10, 0, 0, 1);
    let dst = Ipv4Addr::new(192, 168, 1, 1);
    let k = key(
        ETH_P_IP,
        &ipv4(IPPROTO_TCP, src, dst, 2, 0, &l4_ports(1234, 80, 20)),
    );
    assert_eq!(k.flags, KEY_ADDR_V4 | KEY_IP | KEY_PORTS);
    assert_eq!(k.src, src.to_ipv6_mapped().octets());
    assert_eq!(k.dst, dst.to_ipv6_mapped().octets());
    assert_eq!((k.ip_proto, k.sport, k.dport), (IPPROTO_TCP, 1234, 80));
}

#[test]
fn key_of_ipv4_fragment_and_truncated() {
    let a = Ipv4Addr::new(10, 0, 0, 1);
    let frag = key(
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, a, a, 0, 185, &l4_ports(1, 2, 8)),
    );
    assert_eq!(frag.flags, KEY_ADDR_V4 | KEY_IP | KEY_FRAGMENT);
    // Ports cut off: addresses and protocol only.
    let p = ipv4(IPPROTO_UDP, a, a, 0, 0, &l4_ports(1, 2, 8));
    assert_eq!(key(ETH_P_IP, &p[..22]).flags, KEY_ADDR_V4 | KEY_IP);
    // Base header cut off: nothing but the EtherType.
    let short = key(ETH_P_IP, &p[..19]);
    assert_eq!((short.flags, short.ethertype), (0, ETH_P_IP));
    // Not version 4.
    let mut bad = p.clone();
    bad[0] = 0x65;
    assert_eq!(key(ETH_P_IP, &bad).flags, 0);
}

#[test]
fn key_of_ipv6_walks_extension_headers() {
    let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    let ext = [(0, ipv6_ext(1)), (43, ipv6_ext(2)), (44, ipv6_frag(0))];
    let k = key(
        ETH_P_IPV6,
        &ipv6(IPPROTO_UDP, src, dst, &ext, &l4_ports(53, 5353, 8)),
    );
    assert_eq!(k.flags, KEY_ADDR_V6 | KEY_IP | KEY_PORTS);
    assert_eq!((k.src, k.dst), (src.octets(), dst.octets()));
    assert_eq!((k.ip_proto, k.sport, k.dport), (IPPROTO_UDP, 53, 5353));

    let later = [(44, ipv6_frag(3))];
    let k = key(
        ETH_P_IPV6,
        &ipv6(IPPROTO_UDP, src, dst, &later, &l4_ports(1, 2, 8)),
    );
    assert_eq!(k.flags, KEY_ADDR_V6 | KEY_IP | KEY_FRAGMENT);
    assert_eq!(k.ip_proto, IPPROTO_UDP);

    // Extension headers running past the captured bytes: stop at the one cut off.
    let long = [(60, ipv6_ext(8)), (43, ipv6_ext(1))];
    let k = key(
        ETH_P_IPV6,
        &ipv6(IPPROTO_TCP, src, dst, &long, &l4_ports(1, 2, 20)),
    );
    assert_eq!((k.ip_proto, k.flags), (43, KEY_ADDR_V6 | KEY_IP));
}

#[test]
fn key_of_arp() {
    let s = Ipv4Addr::new(10, 0, 0, 1);
    let t = Ipv4Addr::new(10, 0, 0, 2);
    let k = key(ETH_P_ARP, &arp(s, t));
    assert_eq!(k.flags, KEY_ADDR_V4);
    assert_eq!(
        (k.src, k.dst),
        (s.to_ipv6_mapped().octets(), t.to_ipv6_mapped().octets())
    );
    let prog = compile_filter("arp and src host 10.0.0.1 and not tcp").unwrap();
    assert!(eval(&prog, &k));
}

#[test]
fn ipv4_tests_never_match_ipv6_packets_with_mapped_addresses() {
    let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
    let k = key(
        ETH_P_IPV6,
        &ipv6(IPPROTO_TCP, mapped, mapped, &[], &l4_ports(1, 2, 20)),
    );
    assert!(!eval(&compile_filter("host 10.0.0.1").unwrap(), &k));
    assert!(!eval(&compile_filter("net 0.0.0.0/0").unwrap(), &k));
    assert!(eval(&compile_filter("host ::ffff:10.0.0.1").unwrap(), &k));
}
