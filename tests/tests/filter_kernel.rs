//! The packet filter in the kernel: the filter test classifiers (the shared `key_from_l3`,
//! and `eval` driven by `bpf_loop` or by the unrolled loop) must pass the verifier, and for
//! every filter and frame, their verdicts through BPF_PROG_TEST_RUN and the key they
//! extracted must equal user space's.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::Array,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
        tc::TcAttachOptions,
    },
};
use pktpath_common::filter::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FILTER_TEST_HEADER_BYTES, FilterProgram, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAP_FILTER_LAST_KEY, PROG_FILTER_TEST,
    PROG_FILTER_TEST_UNROLLED, PacketKey, eval, key_from_l3,
};
use pktpath_core::trace::filter::{self, compile, compile_filter, parse, sample::*};
use pktpath_tests::{
    TwoHosts,
    objects::{self, TestObject},
    require_root, run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// Both classifiers of the filter test object.
const PROGRAMS: [&str; 2] = [PROG_FILTER_TEST, PROG_FILTER_TEST_UNROLLED];

/// Loads the filter test object and its classifiers; a verifier rejection fails with its log.
fn load() -> Ebpf {
    let mut ebpf = objects::load(TestObject::FilterTest, &[]).expect("load the filter test object");
    for name in PROGRAMS {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .expect("filter test program")
            .try_into()
            .expect("a classifier");
        match prog.load() {
            Ok(()) => {}
            Err(ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                panic!("the verifier rejected {name}: {io_error}\n{verifier_log}")
            }
            Err(e) => panic!("loading {name} failed: {e}"),
        }
    }
    ebpf
}

/// The key user space extracts from a frame, as the classifier does.
fn user_key(frame: &[u8]) -> PacketKey {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut buf = [0u8; FILTER_TEST_HEADER_BYTES];
    let n = (frame.len() - 14).min(FILTER_TEST_HEADER_BYTES);
    buf[..n].copy_from_slice(&frame[14..14 + n]);
    key_from_l3(&buf, n, ethertype)
}

/// Runs both classifiers with `prog` installed on `frame`; they must agree. Returns
/// (matched, key the kernel saw).
fn kernel_run(ebpf: &mut Ebpf, prog: &FilterProgram, frame: &[u8]) -> (bool, PacketKey) {
    filter::install(ebpf, prog).expect("write the filter map");
    let (looped, key) = run_one(ebpf, PROG_FILTER_TEST, frame);
    let (unrolled, key2) = run_one(ebpf, PROG_FILTER_TEST_UNROLLED, frame);
    assert_eq!(key, key2, "the two classifiers saw different keys");
    assert_eq!(looped, unrolled, "bpf_loop and unrolled verdicts differ");
    (looped, key)
}

/// Runs one classifier on `frame`: (matched, key it extracted).
fn run_one(ebpf: &Ebpf, name: &str, frame: &[u8]) -> (bool, PacketKey) {
    let cls: &SchedClassifier = ebpf.program(name).unwrap().try_into().unwrap();
    let r = cls
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let keys: Array<_, PacketKey> =
        Array::try_from(ebpf.map(MAP_FILTER_LAST_KEY).expect("key map")).expect("array");
    let key = keys.get(&0, 0).expect("read the last key");
    match r.return_value {
        TC_ACT_OK => (true, key),
        TC_ACT_SHOT => (false, key),
        other => panic!("{name} returned {other}"),
    }
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let a = Ipv4Addr::new(10, 0, 0, 1);
    let b = Ipv4Addr::new(192, 168, 1, 1);
    let a6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let b6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 5);
    vec![
        (
            "v4 tcp 10.0.0.1:40000 > 192.168.1.1:80",
            ethernet(
                ETH_P_IP,
                &ipv4(IPPROTO_TCP, a, b, 0, 0, &l4_ports(40000, 80, 20)),
            ),
        ),
        (
            "v4 udp 192.168.1.1:53 > 10.0.0.1:5353 with options",
            ethernet(
                ETH_P_IP,
                &ipv4(IPPROTO_UDP, b, a, 3, 0, &l4_ports(53, 5353, 8)),
            ),
        ),
        (
            "v4 icmp echo",
            ethernet(
                ETH_P_IP,
                &ipv4(IPPROTO_ICMP, a, b, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
            ),
        ),
        (
            "v4 udp non-first fragment",
            ethernet(
                ETH_P_IP,
                &ipv4(IPPROTO_UDP, a, b, 0, 100, &l4_ports(53, 53, 8)),
            ),
        ),
        (
            "v6 tcp fd00::1:443 > 2001:db8:0:1::5:1024",
            ethernet(
                ETH_P_IPV6,
                &ipv6(IPPROTO_TCP, a6, b6, &[], &l4_ports(443, 1024, 20)),
            ),
        ),
        (
            "v6 udp after hop-by-hop and routing",
            ethernet(
                ETH_P_IPV6,
                &ipv6(
                    IPPROTO_UDP,
                    b6,
                    a6,
                    &[(0, ipv6_ext(1)), (43, ipv6_ext(2))],
                    &l4_ports(53, 8080, 8),
                ),
            ),
        ),
        (
            "v6 icmp6 echo",
            ethernet(
                ETH_P_IPV6,
                &ipv6(IPPROTO_ICMPV6, a6, b6, &[], &[128, 0, 0, 0, 0, 1, 0, 1]),
            ),
        ),
        (
            "arp 10.0.0.1 asks for 192.168.1.1",
            ethernet(ETH_P_ARP, &arp(a, b)),
        ),
        ("lldp", ethernet(0x88cc, &[0u8; 46])),
    ]
}

const FILTERS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "host 10.0.0.1",
    "src host 10.0.0.1",
    "dst host 10.0.0.1",
    "host fd00::1",
    "dst host 2001:db8:0:1::5",
    "net 192.168.0.0/16",
    "src net 10.0.0.0/8",
    "net 2001:db8::/32",
    "dst net fd00::/8",
    "net 0.0.0.0/0",
    "port 80",
    "src port 53",
    "dst port 53",
    "portrange 1000-2000",
    "dst portrange 5000-9000",
    "tcp port 80 or udp port 53",
    "not tcp",
    "!(ip or ip6)",
    "ip6 and not icmp6 and src net fd00::/8",
    "arp and dst host 192.168.1.1",
    "(tcp or udp) and not (port 53 || port 80)",
    "host 10.0.0.1 && !port 80",
];

#[test]
fn kernel_verdicts_match_user_space_on_a_table() {
    require_root();
    let mut ebpf = load();
    let frames = frames();
    let mut matched = 0;
    for text in FILTERS {
        let prog = compile_filter(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let expr = parse(text).unwrap();
        for (name, frame) in &frames {
            let key = user_key(frame);
            let want = expr.as_ref().is_none_or(|e| e.matches(&key));
            assert_eq!(eval(&prog, &key), want, "user space: `{text}` on {name}");
            let (got, kernel_key) = kernel_run(&mut ebpf, &prog, frame);
            assert_eq!(kernel_key, key, "key of {name}");
            assert_eq!(got, want, "kernel: `{text}` on {name}");
            matched += usize::from(got);
        }
    }
    // Spot checks that the table means what it says.
    let check = |text: &str, frame: usize, want: bool| {
        let prog = compile_filter(text).unwrap();
        assert_eq!(
            eval(&prog, &user_key(&frames[frame].1)),
            want,
            "`{text}` on {}",
            frames[frame].0
        );
    };
    check("tcp port 80 or udp port 53", 0, true);
    check("tcp port 80 or udp port 53", 3, false); // fragment: no ports
    check("arp and dst host 192.168.1.1", 7, true);
    check("icmp6", 6, true);
    check("icmp", 6, false);
    check("udp and dst port 8080", 5, true);
    assert!(matched > 0 && matched < FILTERS.len() * frames.len());
}

#[test]
fn kernel_verdicts_match_user_space_on_random_filters_and_frames() {
    require_root();
    let mut ebpf = load();
    // Seeded, not proptest: one fixed sequence of filters and frames in the kernel, replayed
    // as it ran (the root-free differential tests draw the same shapes with shrinking).
    let mut rng = Rng::new(0xf11e);
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|_| {
            let (et, l3) = random_l3(&mut rng);
            ethernet(et, &l3)
        })
        .collect();
    let mut runs = 0;
    while runs < 4000 {
        let e = random_expr(&mut rng, 5);
        let Ok(prog) = compile(Some(&e)) else {
            continue;
        };
        for frame in frames.iter().take(20 + rng.index(20)) {
            let key = user_key(frame);
            let want = e.matches(&key);
            let (got, kernel_key) = kernel_run(&mut ebpf, &prog, frame);
            assert_eq!(kernel_key, key, "key of frame {frame:02x?}");
            assert_eq!(got, want, "kernel: `{e}` on frame {frame:02x?}");
            runs += 1;
        }
    }
}

#[test]
fn the_largest_filter_runs_in_the_kernel() {
    require_root();
    let mut ebpf = load();
    // 64 predicates; the last one matches, so the program walks all of them.
    let mut parts: Vec<String> = (0..63).map(|i| format!("host 10.9.9.{i}")).collect();
    parts.push("port 80".into());
    let prog = compile_filter(&parts.join(" or ")).unwrap();
    assert_eq!(prog.len, 64);
    let frame = &frames()[0].1;
    assert!(kernel_run(&mut ebpf, &prog, frame).0);
    let none = compile_filter(&parts[..63].join(" or ")).unwrap();
    assert!(!kernel_run(&mut ebpf, &none, frame).0);
}

/// Each tracer hook pays the verifier for its filter at start-up: the `bpf_loop` driver must
/// stay far cheaper than the unrolled loop (about 24k against 80k verified instructions on
/// Linux 6.18).
#[test]
fn bpf_loop_evaluation_is_cheap_to_verify() {
    require_root();
    let ebpf = load();
    let verified = |name: &str| {
        let prog: &SchedClassifier = ebpf.program(name).unwrap().try_into().unwrap();
        prog.info()
            .expect("program info")
            .verified_instruction_count()
            .expect("kernel reports verified instructions")
    };
    let looped = verified(PROG_FILTER_TEST);
    let unrolled = verified(PROG_FILTER_TEST_UNROLLED);
    assert!(
        looped < 40_000 && looped * 2 < unrolled,
        "bpf_loop: {looped} verified instructions, unrolled: {unrolled}"
    );
}

/// Real packets: attached at the ingress of host b's veth, the classifier passes what the
/// filter matches and drops the rest, so pings from a come back exactly when the filter
/// lets the echo requests (and the neighbour discovery before them) through. The filter
/// is replaced in the map while attached.
#[test]
fn real_pings_pass_only_when_the_filter_matches() {
    require_root();
    let lab = TwoHosts::new();
    let mut ebpf = load();
    let ns = lab.b.handle();
    let dev = lab.link.b.clone();
    let link = {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROG_FILTER_TEST)
            .unwrap()
            .try_into()
            .unwrap();
        ns.run(|| {
            prog.attach_with_options(
                &dev,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
        })
        .expect("enter namespace")
        .expect("attach to veth ingress")
    };
    const PINGS: u32 = 3;
    let cases: &[(&str, &str, u32)] = &[
        ("", TwoHosts::B4, PINGS),
        (
            "arp or (icmp and src host 10.77.0.1 and dst net 10.77.0.0/24)",
            TwoHosts::B4,
            PINGS,
        ),
        ("arp or (icmp and dst host 10.77.0.3)", TwoHosts::B4, 0),
        ("arp or tcp", TwoHosts::B4, 0),
        (
            "icmp6 and (src net fd77::/64 or src net fe80::/10)",
            TwoHosts::B6,
            PINGS,
        ),
        ("ip6 and not icmp6", TwoHosts::B6, 0),
        ("not (ip or ip6)", TwoHosts::B4, 0),
    ];
    for (text, dst, want) in cases {
        let prog = compile_filter(text).unwrap();
        filter::install(&mut ebpf, &prog).expect("replace the filter");
        let got = run::ping(&lab.a.name, dst, PINGS);
        assert_eq!(
            got, *want,
            "`{text}`: {got} of {PINGS} pings to {dst} answered"
        );
    }
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_FILTER_TEST)
        .unwrap()
        .try_into()
        .unwrap();
    ns.run(|| prog.detach(link))
        .expect("enter namespace")
        .expect("detach");
}
