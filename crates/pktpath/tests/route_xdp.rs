//! The fast path with `--hook xdp` in the client – router – up1/up2 lab. The router forwards
//! (XDP learns a gateway's MAC from bpf_fib_lookup, which answers only on interfaces that
//! forward) but has no route to the service address: what reaches it through the router
//! was carried by a program. XDP forwards and drops what
//! it can decide whole, counted once; a policy a mark rule overlaps falls back to TC,
//! counted once; what the router itself must answer reaches its stack; an egress whose veth
//! peer cannot take native XDP frames is named in a warning and served by TC; detach leaves
//! no XDP program, link or pin. Which program decided is told by the kernel's run counts
//! (BPF_ENABLE_STATS, held for the test only). `pktpath trace --route-pin-dir` shows each
//! XDP decision as an `xdp:pktpath` hop of its packet's journey, before TC's when XDP
//! passed the packet on, in native and generic mode.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    time::Duration,
};

use aya::{
    programs::ProgramInfo,
    sys::{Stats, enable_stats},
};
use common::{Attachment, SVC4, Scratch, iface_counter, policy, tc_hooks_in_use};
use pktpath_common::route::{PROG_DATAPATH_OLD, PROG_XDP_OLD};
use pktpath_core::{
    rng::Rng,
    route::datapath::loops::{LOOP_ENV, LoopKind},
    sys::netns::NetNs,
};
use pktpath_tests::{
    AddrGuard, BpffsGuard, EthtoolFlag, EthtoolGuard, RouterLab, require_root, trace::EventSchema,
};
use serde_json::Value;

/// The lab, with GRO on up1's end of its link (so native XDP can redirect to to-up1), TX
/// checksum offload off on the client's end (native XDP on to-client cannot finish the
/// checksums the client's stack leaves to the receiver), and the data path attached with
/// the XDP hook. Fields drop in order: detach first.
struct Lab {
    dp: Attachment,
    scratch: Scratch,
    attach: Value,
    _ethtool: Vec<EthtoolGuard>,
    _addrs: Vec<AddrGuard>,
    lab: RouterLab,
    _bpffs: BpffsGuard,
}

impl Lab {
    fn new(label: &str, extra: &[&str]) -> Self {
        Self::with_env(label, extra, &[])
    }

    /// [`Lab::new`], every pktpath command run with the variables `env`.
    fn with_env(label: &str, extra: &[&str], env: &[(&'static str, &'static str)]) -> Self {
        require_root();
        let bpffs = BpffsGuard::ensure();
        let lab = RouterLab::new();
        let addrs = vec![AddrGuard::new(&lab.up1.name, "lo", &format!("{SVC4}/32"))];
        let ethtool = vec![
            EthtoolGuard::set(&lab.up1.name, &lab.up1_link.b, EthtoolFlag::Gro, true),
            EthtoolGuard::set(
                &lab.client.name,
                &lab.client_link.b,
                EthtoolFlag::TxChecksum,
                false,
            ),
        ];
        let scratch = Scratch::new(&format!("route-xdp-{label}"));
        let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
        let mut dp = Attachment::new(&lab, label);
        dp.env = env.to_vec();
        let mut args = vec!["attach", "--config", &config, "--hook", "xdp"];
        args.extend_from_slice(extra);
        let attach = dp.json(&args);
        // Neighbours resolved first: while the router resolves up1's, XDP passes packets to
        // TC, which queues them on the neighbour (bpf_redirect_neigh), a queue with room for
        // fewer of the page-sized skbs native XDP makes than a burst holds.
        for (ns, to) in [
            (&lab.client.name, "10.1.0.1"),
            (&lab.router.name, RouterLab::UP1_4),
        ] {
            ping(ns, to);
        }
        Self {
            dp,
            scratch,
            attach,
            _ethtool: ethtool,
            _addrs: addrs,
            lab,
            _bpffs: bpffs,
        }
    }

    fn apply(&self, policies: &str) {
        let text = format!(r#"{{ "version": 1, "policies": [ {policies} ] }}"#);
        let path = self.scratch.write("runtime.json", &text);
        self.dp.json(&["apply", &path]);
    }

    /// Runs of the pinned program `name` (`prog`: TC, `prog_xdp`: XDP) so far.
    fn runs(&self, name: &str) -> u64 {
        let path = self.dp.pin.path.join(name);
        ProgramInfo::from_pin(&path)
            .unwrap_or_else(|e| panic!("info of {}: {e}", path.display()))
            .run_count()
    }

    /// Sends `n` UDP datagrams from the client to SVC4:`port`; returns how many up1
    /// received within a second of the last. Frames XDP redirected into a veth arrive as
    /// skbs of a page or more each: a socket's default receive buffer holds about 50 of
    /// them, so the receiver gets a larger one.
    fn udp_to_up1(&self, port: u16, n: usize) -> usize {
        self.udp_to_up1_paced(port, n, Duration::ZERO)
    }

    /// [`Lab::udp_to_up1`], `gap` between datagrams.
    fn udp_to_up1_paced(&self, port: u16, n: usize, gap: Duration) -> usize {
        let up1 = NetNs::from_name(&self.lab.up1.name).unwrap();
        let client = NetNs::from_name(&self.lab.client.name).unwrap();
        let to: SocketAddr = format!("{SVC4}:{port}").parse().unwrap();
        let rx = up1
            .run(|| UdpSocket::bind(to))
            .unwrap()
            .expect("bind in up1");
        rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let bytes: libc::c_int = 16 << 20;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const bytes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        let tx = client
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .expect("bind in client");
        std::thread::scope(|s| {
            let counter = s.spawn(|| {
                let mut buf = [0u8; 64];
                let mut got = 0;
                while rx.recv(&mut buf).is_ok() {
                    got += 1;
                }
                got
            });
            for i in 0..n {
                tx.send_to(&[i as u8; 32], to).expect("send");
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
            counter.join().expect("receiver")
        })
    }
}

const N: usize = 200;

/// Three pings from namespace `ns` to `to`; the output (all of them answered).
fn ping(ns: &str, to: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", to,
        ])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("3 received"), "ping {to} from {ns}: {text}");
    text
}

fn policies(lab: &RouterLab) -> String {
    let c = &lab.client_link.a;
    format!(
        r#"{{ "id": "fwd", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "udp", "dport": 5000 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "drop", "priority": 11, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "udp", "dport": 5001 }}, "action": {{ "type": "drop" }} }},
  {{ "id": "marked", "priority": 12, "match": {{ "dst": "{SVC4}", "proto": "udp", "dport": 5002, "mark": {{ "value": 7, "mask": 255 }} }}, "action": {{ "type": "forward", "next_hop": "up2" }} }},
  {{ "id": "behind-mark", "priority": 13, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "udp", "dport": 5002 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
    )
}

#[test]
fn xdp_forwards_and_drops_itself_and_leaves_mark_policies_to_tc() {
    let l = Lab::new("xdp-fwd", &[]);
    let (c, u1, u2) = (&l.lab.client_link.a, &l.lab.up1_link.a, &l.lab.up2_link.a);
    let hooks = l.attach["xdp"].as_array().expect("xdp hooks in the report");
    assert_eq!(hooks.len(), 3, "{}", l.attach);
    assert!(
        hooks.iter().all(|h| h["mode"] == "native"),
        "auto picks native on veth: {}",
        l.attach
    );
    let warnings = l.attach["warnings"].to_string();
    assert!(
        warnings.contains(c.as_str()) && warnings.contains(u2.as_str()),
        "egresses whose peers lack GRO are named: {warnings}"
    );
    assert!(
        !warnings.contains(&format!("{u1} does not")),
        "up1's peer has GRO on: {warnings}"
    );
    assert!(
        warnings.contains(&format!(
            "{c} is a veth with native XDP: turn TX checksum offload off on its peer"
        )),
        "what native XDP on a veth needs of its peer is said: {warnings}"
    );
    l.apply(&policies(&l.lab));
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");

    // Forwarded by XDP: TC's program does not run for these packets.
    let (tc0, xdp0) = (l.runs("prog"), l.runs("prog_xdp"));
    assert_eq!(l.udp_to_up1(5000, N), N, "forwarded to up1");
    let (tc1, xdp1) = (l.runs("prog"), l.runs("prog_xdp"));
    assert!(xdp1 - xdp0 >= N as u64, "XDP ran {} times", xdp1 - xdp0);
    assert!(
        tc1 - tc0 < (N / 4) as u64,
        "TC ran {} times for XDP's packets",
        tc1 - tc0
    );

    // Dropped by XDP.
    assert_eq!(l.udp_to_up1(5001, N), 0, "dropped");
    let tc2 = l.runs("prog");
    assert!(
        tc2 - tc1 < (N / 4) as u64,
        "TC ran {} times for XDP's drops",
        tc2 - tc1
    );

    // A better mark policy overlaps `behind-mark`: XDP cannot know the mark, TC decides
    // (the mark is 0 here: scrubbed on the way into the router's namespace).
    assert_eq!(l.udp_to_up1(5002, N), N, "forwarded to up1 by TC");
    let tc3 = l.runs("prog");
    assert!(tc3 - tc2 >= N as u64, "TC ran {} times", tc3 - tc2);

    let stats = l.dp.stats();
    for (id, n) in [("fwd", N), ("drop", N), ("behind-mark", N), ("marked", 0)] {
        assert_eq!(
            policy(&stats, id)["packets"],
            n as u64,
            "{id}, counted once: {stats}"
        );
    }
    assert_eq!(
        iface_counter(&stats, c, "forwarded_packets"),
        2 * N as u64,
        "{stats}"
    );
    assert_eq!(
        iface_counter(&stats, c, "dropped_packets"),
        N as u64,
        "{stats}"
    );

    // `route get --hook xdp` explains through both programs (its runs count, so last).
    let get = |port: &str| {
        l.dp.json(&[
            "get", "--hook", "xdp", "iif", c, "from", "10.1.0.2", "to", SVC4, "proto", "udp",
            "dport", port,
        ])
    };
    let fwd = get("5000");
    assert_eq!(fwd["xdp"]["policy"], "fwd", "{fwd}");
    assert_eq!(fwd["xdp"]["verdict"], "redirect", "{fwd}");
    assert_eq!(fwd["xdp"]["egress"], u1.as_str(), "{fwd}");
    assert!(fwd["tc"].is_null(), "XDP decided: {fwd}");
    let drop = get("5001");
    assert_eq!(drop["xdp"]["verdict"], "drop", "{drop}");
    let behind = get("5002");
    assert_eq!(behind["xdp"]["verdict"], "pass to tc", "{behind}");
    assert_eq!(behind["tc"]["policy"], "behind-mark", "{behind}");
    assert_eq!(behind["tc"]["verdict"], "redirect", "{behind}");
    let text = l.dp.ok(&[
        "get", "--hook", "xdp", "iif", c, "from", "10.1.0.2", "to", SVC4, "proto", "udp", "dport",
        "5002",
    ]);
    assert!(
        text.starts_with("xdp: policy behind-mark (priority 13)")
            && text.contains("\ntc:  policy behind-mark"),
        "{text}"
    );

    let show = l.dp.json(&["show"]);
    assert_eq!(show["hooks"]["hook"], "xdp", "{show}");
    let text = l.dp.ok(&["show"]);
    assert!(
        text.contains(&format!("xdp native on {c}")),
        "show says which hook and mode: {text}"
    );
}

/// What the router itself must answer (a ping to its own address, matched by no policy)
/// goes through XDP and TC to the stack.
#[test]
fn xdp_passes_what_the_router_answers_to_the_stack() {
    let l = Lab::new("xdp-pass", &["--xdp-mode", "generic"]);
    assert!(
        l.attach["xdp"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["mode"] == "generic"),
        "{}",
        l.attach
    );
    assert!(
        l.attach.get("warnings").is_none(),
        "generic XDP forwards into any device: {}",
        l.attach
    );
    l.apply(&policies(&l.lab));
    ping(&l.lab.client.name, "10.1.0.1");
    // And generic XDP forwards too.
    assert_eq!(l.udp_to_up1(5000, N), N, "forwarded to up1");
}

/// The programs for kernels without may_goto, which `PKTPATH_DATAPATH_LOOP=bpf_loop` picks
/// on any kernel: attached, they forward, drop and explain as the others do.
#[test]
fn the_bpf_loop_programs_forward_drop_and_explain() {
    let l = Lab::with_env(
        "xdp-old",
        &["--xdp-mode", "generic"],
        &[(LOOP_ENV, LoopKind::BpfLoop.name())],
    );
    for (pin, kind) in [("prog", PROG_DATAPATH_OLD), ("prog_xdp", PROG_XDP_OLD)] {
        let info = ProgramInfo::from_pin(l.dp.pin.path.join(pin)).expect("pinned program");
        assert_eq!(info.name_as_str(), Some(kind), "{pin}");
    }
    l.apply(&policies(&l.lab));
    assert_eq!(l.udp_to_up1(5000, N), N, "forwarded to up1");
    assert_eq!(l.udp_to_up1(5001, N), 0, "dropped");
    assert_eq!(l.udp_to_up1(5002, N), N, "forwarded to up1 by TC");
    let stats = l.dp.stats();
    for (id, n) in [("fwd", N), ("drop", N), ("behind-mark", N)] {
        assert_eq!(policy(&stats, id)["packets"], n as u64, "{id}: {stats}");
    }
    let c = &l.lab.client_link.a;
    let get = l.dp.json(&[
        "get", "--hook", "xdp", "iif", c, "from", "10.1.0.2", "to", SVC4, "proto", "udp", "dport",
        "5002",
    ]);
    assert_eq!(get["xdp"]["verdict"], "pass to tc", "{get}");
    assert_eq!(get["tc"]["policy"], "behind-mark", "{get}");
}

/// A veth peer that turns GRO off after the attach no longer takes native XDP frames (XDP's
/// redirect into it would drop them): the next apply leaves that egress to TC and says so,
/// and gives it back to XDP once GRO is on again.
#[test]
fn an_egress_whose_peer_turns_gro_off_goes_to_tc_at_the_next_apply() {
    let l = Lab::new("xdp-gro", &[]);
    let u1 = l.lab.up1_link.a.clone();
    l.apply(&policies(&l.lab));
    let runtime = l.scratch.0.join("runtime.json").display().to_string();
    let apply = || {
        let out = l.dp.route(&["apply", &runtime]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    assert_eq!(l.udp_to_up1(5000, N), N, "XDP forwards to up1");
    let gro_off = EthtoolGuard::set(&l.lab.up1.name, &l.lab.up1_link.b, EthtoolFlag::Gro, false);
    let said = apply();
    assert!(
        said.contains(&format!("warning: {u1} no longer takes native XDP frames")),
        "{said}"
    );
    let (tc0, xdp0) = (l.runs("prog"), l.runs("prog_xdp"));
    assert_eq!(l.udp_to_up1(5000, N), N, "TC forwards to up1");
    assert!(l.runs("prog_xdp") - xdp0 >= N as u64);
    assert!(l.runs("prog") - tc0 >= N as u64, "XDP passed them to TC");
    drop(gro_off);
    let said = apply();
    assert!(
        said.contains(&format!("{u1} takes native XDP frames again")),
        "{said}"
    );
    let tc1 = l.runs("prog");
    assert_eq!(l.udp_to_up1(5000, N), N, "XDP forwards to up1 again");
    assert!(
        l.runs("prog") - tc1 < (N / 4) as u64,
        "TC ran for XDP's packets"
    );
    // Nothing changed since: nothing said.
    assert!(!apply().contains("native XDP"), "a change is said once");
}

/// The agent looks every second: with no apply, it leaves an egress whose peer turned GRO
/// off to TC, and logs it.
#[test]
fn the_agent_leaves_to_tc_an_egress_whose_peer_turns_gro_off() {
    let l = Lab::new("xdp-agent", &[]);
    let u1 = l.lab.up1_link.a.clone();
    // The configuration the CLI attached, with the hook in the file as the agent takes it.
    let text = common::lab_config(&l.lab, &[]).replace(
        r#""egress": false }"#,
        r#""egress": false, "hook": "xdp" }"#,
    );
    assert_eq!(text.matches(r#""hook": "xdp""#).count(), 3, "{text}");
    let config = l.scratch.write("agent-configuration.json", &text);
    let runtime = l.scratch.write(
        "agent-runtime.json",
        &format!(
            r#"{{ "version": 1, "policies": [ {} ] }}"#,
            policies(&l.lab)
        ),
    );
    let log = l.scratch.0.join("agent.log");
    let pin = l.dp.pin.path.display().to_string();
    let net = format!("--net=/run/netns/{}", l.lab.router.name);
    let mut agent = KillOnDrop(
        Command::new("nsenter")
            .args([
                net.as_str(),
                common::PKTPATH,
                "agent",
                "--config",
                &config,
                "--runtime",
                &runtime,
                "--pin-dir",
                &pin,
                "--no-drop-monitor",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the agent's log"))
            .spawn()
            .expect("run nsenter (util-linux)"),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !read_log().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} in the agent's log:\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_log("applied");
    assert_eq!(l.udp_to_up1(5000, N), N, "XDP forwards to up1");
    let gro_off = EthtoolGuard::set(&l.lab.up1.name, &l.lab.up1_link.b, EthtoolFlag::Gro, false);
    wait_log(&format!("{u1} no longer takes native XDP frames"));
    assert_eq!(l.udp_to_up1(5000, N), N, "TC forwards to up1");
    drop(gro_off);
    wait_log(&format!("{u1} takes native XDP frames again"));
    assert_eq!(l.udp_to_up1(5000, N), N, "XDP forwards to up1 again");
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(agent.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = agent.0.wait().expect("the agent exits");
    assert!(status.success(), "{status:?}: {}", read_log());
}

/// A child process killed (if still running) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn detach_leaves_no_xdp_program_link_or_pin() {
    let l = Lab::new("xdp-detach", &[]);
    let r = l.lab.router.name.clone();
    let links = || {
        let out = Command::new("ip")
            .args(["-n", &r, "-d", "link", "show"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(links().contains("prog/xdp"), "attached: {}", links());
    // Another hook for the same data path is refused, and changes nothing.
    let config = l.scratch.0.join("configuration.json").display().to_string();
    let out = l.dp.route(&["attach", "--config", &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("is attached with hook xdp (--xdp-mode auto), not tc"),
        "{err}"
    );
    assert_eq!(links().matches("prog/xdp").count(), 3, "{}", links());
    let pin = l.dp.pin.path.clone();
    l.dp.ok(&["detach"]);
    assert!(!links().contains("xdp"), "no XDP left: {}", links());
    assert!(!Path::new(&pin).exists(), "pins removed");
    for link in [&l.lab.client_link.a, &l.lab.up1_link.a, &l.lab.up2_link.a] {
        assert!(tc_hooks_in_use(&l.lab, link).is_empty(), "{link}");
    }
    assert!(!l.dp.state_dir().exists(), "state removed");
}

#[test]
fn native_mode_is_refused_where_the_driver_has_none_and_leaves_nothing() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let scratch = Scratch::new("route-xdp-lo");
    // Loopback has no native XDP.
    let config = scratch.write(
        "configuration.json",
        r#"{ "version": 1, "interfaces": [ { "name": "lo" } ] }"#,
    );
    let dp = Attachment::new(&lab, "xdp-native-lo");
    let out = dp.route(&[
        "attach",
        "--config",
        &config,
        "--hook",
        "xdp",
        "--xdp-mode",
        "native",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused");
    assert!(
        err.contains("the driver of lo has no native XDP") && err.contains("--xdp-mode generic"),
        "{err}"
    );
    assert!(!dp.pin.path.exists(), "nothing pinned");
    assert!(!dp.state_dir().exists(), "no state");
}

/// `pktpath route --pin-dir DIR ARGS` started in the router namespace, killed (SIGKILL)
/// after a random part of `window`.
fn killed_within(dp: &Attachment, args: &[&str], window: Duration, rng: &mut Rng) {
    let net = format!("--net=/run/netns/{}", dp.router);
    let pin = dp.pin.path.display().to_string();
    let mut full = vec![net.as_str(), common::PKTPATH, "route", "--pin-dir", &pin];
    full.extend_from_slice(args);
    let mut child = Command::new("nsenter")
        .args(&full)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run nsenter (util-linux)");
    std::thread::sleep(window.mul_f64(rng.below(1000) as f64 / 1000.0));
    // nsenter execs pktpath: the child is pktpath itself.
    let _ = child.kill();
    let _ = child.wait();
}

/// An attach with the XDP hook, and a detach, killed at random points: the next writer
/// finishes or rolls back what the killed one left, and after the last detach no XDP
/// program, TC hook, pin or state is left.
#[test]
fn attach_and_detach_killed_at_random_points_leave_no_xdp_behind() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let scratch = Scratch::new("route-xdp-kill");
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
    let dp = Attachment::new(&lab, "xdp-kill");
    let attach = ["attach", "--config", &config, "--hook", "xdp"];
    let start = std::time::Instant::now();
    dp.ok(&attach);
    let attach_span = start.elapsed().mul_f64(1.2);
    let start = std::time::Instant::now();
    dp.ok(&["detach"]);
    let detach_span = start.elapsed().mul_f64(1.2);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("random points from seed {seed}");
    // Random points in time, not inputs to shrink: not proptest.
    let mut rng = Rng::new(seed);
    let r = lab.router.name.clone();
    for round in 0..6 {
        killed_within(&dp, &attach, attach_span, &mut rng);
        dp.ok(&attach);
        let links = pktpath_tests::run::must("ip", &["-n", &r, "-d", "link", "show"]);
        assert_eq!(
            links.matches("prog/xdp").count(),
            3,
            "round {round}: one XDP program per ingress: {links}"
        );
        killed_within(&dp, &["detach"], detach_span, &mut rng);
        let out = dp.route(&["detach"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("no data path is attached"),
            "round {round}: the detach after a killed one: {err}"
        );
        let links = pktpath_tests::run::must("ip", &["-n", &r, "-d", "link", "show"]);
        assert!(!links.contains("xdp"), "round {round}: XDP left: {links}");
        for link in [&lab.client_link.a, &lab.up1_link.a, &lab.up2_link.a] {
            let left = tc_hooks_in_use(&lab, link);
            assert!(left.is_empty(), "round {round}: left on {link}: {left:?}");
        }
        assert!(!dp.pin.path.exists(), "round {round}: pins left");
        assert!(!dp.state_dir().exists(), "round {round}: state left");
    }
}

/// Applies swapping which of two policies forwards a UDP stream, while it runs through
/// XDP: no datagram lost, each counted once, by XDP (TC's program does not run for them).
#[test]
fn swaps_under_a_stream_through_xdp_lose_nothing() {
    let l = Lab::new("xdp-swap", &[]);
    let c = l.lab.client_link.a.clone();
    let set = |a: u32, b: u32| {
        let p = |id: &str, prio: u32| {
            format!(
                r#"{{ "id": "{id}", "priority": {prio}, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "udp", "dport": 5000 }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
            )
        };
        format!("{}, {}", p("a", a), p("b", b))
    };
    l.apply(&set(10, 20));
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    let tc0 = l.runs("prog");
    const STREAM: usize = 3000;
    let got = std::thread::scope(|s| {
        let stream = s.spawn(|| l.udp_to_up1_paced(5000, STREAM, Duration::from_micros(200)));
        for i in 0..8 {
            std::thread::sleep(Duration::from_millis(60));
            if i % 2 == 0 {
                l.apply(&set(30, 20));
            } else {
                l.apply(&set(10, 20));
            }
        }
        stream.join().expect("stream")
    });
    assert_eq!(got, STREAM, "every datagram arrived");
    let stats = l.dp.stats();
    let count = |id: &str| policy(&stats, id)["packets"].as_u64().unwrap();
    assert_eq!(count("a") + count("b"), STREAM as u64, "{stats}");
    assert!(
        count("a") > 0 && count("b") > 0,
        "both sets forwarded: {stats}"
    );
    let tc = l.runs("prog") - tc0;
    assert!(tc < (STREAM / 10) as u64, "TC ran {tc} times");
}

/// `"hook": "xdp"` on one interface of configuration.json: attach without `--hook` runs XDP
/// there only; one without ingress is refused with the field named.
#[test]
fn the_configuration_picks_xdp_per_interface() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let scratch = Scratch::new("route-xdp-config");
    let (c, u1) = (&lab.client_link.a, &lab.up1_link.a);
    let config = scratch.write(
        "configuration.json",
        &format!(
            r#"{{ "version": 1,
  "interfaces": [ {{ "name": "{c}", "hook": "xdp" }}, {{ "name": "{u1}" }} ] }}"#
        ),
    );
    let dp = Attachment::new(&lab, "xdp-config");
    let report = dp.json(&["attach", "--config", &config]);
    let hooks = report["xdp"].as_array().expect("xdp hooks");
    assert_eq!(hooks.len(), 1, "{report}");
    assert_eq!(hooks[0]["interface"], c.as_str(), "{report}");
    let links = pktpath_tests::run::must("ip", &["-n", &lab.router.name, "-d", "link", "show"]);
    assert_eq!(links.matches("prog/xdp").count(), 1, "{links}");
    // The same configuration again changes nothing; with --hook xdp it would be another.
    let again = dp.json(&["attach", "--config", &config]);
    assert!(again["attached"].as_array().unwrap().is_empty(), "{again}");
    let out = dp.route(&["attach", "--config", &config, "--hook", "xdp"]);
    assert!(
        !out.status.success(),
        "another set of XDP interfaces is refused"
    );
    dp.ok(&["detach"]);

    let bad = scratch.write(
        "bad.json",
        &format!(
            r#"{{ "version": 1,
  "interfaces": [ {{ "name": "{c}", "ingress": false, "egress": true, "hook": "xdp" }} ] }}"#
        ),
    );
    let out = dp.route(&["attach", "--config", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("bad.json:2:")
            && err.contains("interfaces[0].hook")
            && err.contains("not attached at ingress"),
        "{err}"
    );
    assert!(!dp.pin.path.exists(), "nothing attached");
}

/// Runs `pktpath trace FILTER --netns ROUTER --route-pin-dir DIR --output OUTPUT EXTRA` for
/// `secs` seconds while `traffic` runs; its stdout once it ended.
fn traced(
    l: &Lab,
    filter: &[&str],
    output: &str,
    secs: &str,
    traffic: impl FnOnce(),
    extra: &[&str],
) -> String {
    let pin = l.dp.pin.path.display().to_string();
    let router = &l.lab.router.name;
    let mut args = vec!["trace"];
    args.extend_from_slice(filter);
    args.extend_from_slice(&["--netns", router, "--output", output]);
    args.extend_from_slice(&["--route-pin-dir", &pin, "--duration", secs]);
    args.extend_from_slice(extra);
    common::trace_while(&args, traffic)
}

/// The events of a JSON Lines trace (checked against the committed schema), and its
/// summary when it ends with one.
fn events_of(stdout: &str) -> (Vec<Value>, Option<Value>) {
    let mut events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = events
        .last()
        .filter(|e| e.get("summary").is_some())
        .cloned();
    if summary.is_some() {
        events.pop();
    }
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    EventSchema::committed().check_lines(&lines.join("\n"));
    (events, summary)
}

/// The events of journey `packet_id`, in order.
fn journey<'a>(events: &'a [Value], packet_id: &Value) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| &e["packet_id"] == packet_id)
        .collect()
}

/// `pktpath trace --route-pin-dir` through a router whose data path runs at XDP (`mode`):
/// each XDP decision is an `xdp:pktpath` hop of its packet's journey, naming the policy,
/// action and outcome (echo requests to the service forwarded by XDP, datagrams to a
/// dropped port dropped there); a packet XDP passes on (a ping to the router itself, no
/// policy) then meets TC, whose `tc:pktpath` hop follows in the same journey. The same in
/// text and in the summary's hop pairs.
fn trace_shows_the_xdp_decision(label: &str, mode: &str) {
    let l = Lab::new(label, &["--xdp-mode", mode]);
    let c = l.lab.client_link.a.as_str();
    l.apply(&format!(
        r#"{{ "id": "icmp-up1", "priority": 10, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "icmp" }}, "action": {{ "type": "forward", "next_hop": "up1" }} }},
  {{ "id": "drop-5001", "priority": 11, "match": {{ "iif": "{c}", "dst": "{SVC4}", "proto": "udp", "dport": 5001 }}, "action": {{ "type": "drop" }} }}"#
    ));
    let traffic = || {
        ping(&l.lab.client.name, SVC4);
        ping(&l.lab.client.name, "10.1.0.1");
        assert_eq!(l.udp_to_up1(5001, 2), 0, "dropped");
    };
    let filter = ["icmp", "or", "udp", "port", "5001"];
    let out = traced(&l, &filter, "json", "4", traffic, &["--summary"]);
    let (events, summary) = events_of(&out);
    let xdp: Vec<&Value> = events
        .iter()
        .filter(|e| e["hook"] == "xdp:pktpath")
        .collect();
    let of = |policy: &str| -> Vec<&Value> {
        xdp.iter()
            .copied()
            .filter(|e| e["xdp"]["policy"] == policy)
            .collect()
    };
    // Forwarded by XDP: in generic mode too (it forwards into any device).
    let fwd = of("icmp-up1");
    assert_eq!(fwd.len(), 3, "three echo requests:\n{out}");
    let dropped = of("drop-5001");
    assert_eq!(dropped.len(), 2, "two datagrams:\n{out}");
    for (d, action, outcome) in fwd
        .iter()
        .map(|d| (d, "forward", "forwarded"))
        .chain(dropped.iter().map(|d| (d, "drop", "dropped")))
    {
        assert_eq!(d["ifname"], c, "{d}");
        assert_eq!(d["xdp"]["action"], action, "{d}");
        assert_eq!(d["xdp"]["outcome"], outcome, "{d}");
        assert!(d["tc"].is_null(), "{d}");
        let j = journey(&events, &d["packet_id"]);
        assert!(
            !j.iter().any(|e| e["hook"] == "tc:pktpath"),
            "XDP decided, TC never sees it: {j:#?}"
        );
        if outcome == "forwarded" {
            assert!(d["xdp"]["egress_ifindex"].is_u64(), "{d}");
            assert_eq!(d["proto"], "icmp", "its headers: {d}");
        } else {
            assert_eq!(d["dport"], 5001, "its headers: {d}");
        }
    }
    // Passed on to TC by XDP: requests to the router, replies from up1. Each journey has
    // the XDP hop, then TC's, on the same interface.
    let passed: Vec<&Value> = xdp
        .iter()
        .copied()
        .filter(|e| e["xdp"]["outcome"] == "passed")
        .collect();
    assert!(passed.len() >= 6, "pings to the router, replies:\n{out}");
    for d in &passed {
        assert!(d["xdp"]["policy"].is_null(), "no policy: {d}");
        assert_eq!(d["xdp"]["action"], "pass", "{d}");
        let j = journey(&events, &d["packet_id"]);
        let at = |hook: &str| j.iter().position(|e| e["hook"] == hook);
        let (Some(x), Some(t)) = (at("xdp:pktpath"), at("tc:pktpath")) else {
            panic!("both decisions in the journey: {j:#?}");
        };
        assert!(x < t, "XDP before TC: {j:#?}");
        assert!(
            j[x]["hop"].as_u64() < j[t]["hop"].as_u64(),
            "hops in order: {j:#?}"
        );
        assert_eq!(j[t]["ifname"], d["ifname"], "{j:#?}");
        assert_eq!(j[t]["tc"]["outcome"], "passed", "{j:#?}");
    }
    let to_router = passed.iter().filter(|d| d["dst"] == "10.1.0.1").count();
    assert_eq!(to_router, 3, "{out}");
    let summary = summary.expect("a summary line");
    let pairs: Vec<(String, String)> = summary["summary"]["hops"]
        .as_array()
        .expect("hop pairs")
        .iter()
        .map(|h| (h["from"].to_string(), h["to"].to_string()))
        .collect();
    let xdp_at_client = format!("\"xdp:pktpath@{c}\"");
    assert!(
        pairs.iter().any(|(from, _)| *from == xdp_at_client)
            && pairs.iter().any(|(_, to)| *to == xdp_at_client),
        "the XDP hop in the hop pairs: {pairs:?}"
    );

    // Text: the decision on the line of its hop.
    let text = traced(&l, &filter, "text", "3", traffic, &[]);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("xdp:pktpath")).collect();
    for want in [
        "policy icmp-up1 (priority 10) forward -> forwarded egress ifindex",
        "policy drop-5001 (priority 11) drop -> dropped",
        "no policy pass -> passed to tc",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}:\n{text}");
    }
}

#[test]
fn trace_shows_the_native_xdp_decision_in_the_journey() {
    trace_shows_the_xdp_decision("xdp-trace", "native");
}

#[test]
fn trace_shows_the_generic_xdp_decision_in_the_journey() {
    trace_shows_the_xdp_decision("xdp-trace-gen", "generic");
}
