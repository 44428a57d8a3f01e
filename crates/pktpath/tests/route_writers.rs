//! The control plane under concurrency and crashes, in the client – router – up1/up2 lab
//! (forwarding disabled in the router: what crosses it was carried by the data path).
//!
//! Two policy sets match the same packets with different ids and actions: set A forwards
//! each `10.200.x.y` destination to up1 (ids `a-N`), set B drops it (ids `b-N`). Both
//! forward UDP to port 7100 to up1 (`stream`). A `route get` answer says which set
//! answered; an answer whose id and action come from different sets, or no answer for a
//! packet both match, would be a mix.

mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{Attachment, DataPathOnlyLab, PKTPATH, Scratch};
use pktpath_core::route::datapath::attach::{Layout, Writer};
use pktpath_tests::{BpffsGuard, RouterLab, require_root};
use serde_json::Value;

/// Policies per set: enough that an apply takes a while to compile and write.
const POLICIES: usize = 1000;
const STREAM_PORT: u16 = 7100;

struct Lab {
    dp: Attachment,
    _scratch: Scratch,
    lab: DataPathOnlyLab,
    a: String,
    b: String,
    config: String,
}

impl Lab {
    fn new(label: &str) -> Self {
        let lab = DataPathOnlyLab::new();
        let scratch = Scratch::new(&format!("route-writers-{label}"));
        let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
        let a = scratch.write("a.json", &set('a', "forward\", \"next_hop\": \"up1"));
        let b = scratch.write("b.json", &set('b', "drop"));
        let dp = Attachment::new(&lab, label);
        dp.json(&["attach", "--config", &config]);
        Self {
            dp,
            _scratch: scratch,
            lab,
            a,
            b,
            config,
        }
    }

    /// The apply serial in use (`route stats`).
    fn generation(&self) -> u64 {
        self.dp.stats()["generation"].as_u64().expect("generation")
    }

    /// `pktpath route ... apply FILE` started in the router namespace, not waited for.
    fn spawn_apply(&self, file: &str, extra: &[&str]) -> Child {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["apply", file, "--json"]);
        spawn(&self.dp, &args)
    }

    /// Which set answered for destination number `i`, checking the answer is whole.
    fn answer(&self, i: usize) -> (char, u64) {
        let dst = dst(i);
        let out = self.dp.route(&[
            "get",
            "iif",
            &self.lab.client_link.a,
            "from",
            RouterLab::CLIENT4,
            "to",
            &dst,
            "proto",
            "udp",
            "dport",
            "53",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "route get to {dst} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("route get --json");
        let generation = v["generation"].as_u64().expect("generation");
        match v["policy"].as_str() {
            Some(id) if id == format!("a-{i}") => {
                assert_eq!(v["action"], "forward", "set A forwards {dst}: {v}");
                assert_eq!(v["egress"], self.lab.up1_link.a.as_str(), "{v}");
                ('a', generation)
            }
            Some(id) if id == format!("b-{i}") => {
                assert_eq!(v["action"], "drop", "set B drops {dst}: {v}");
                assert_eq!(v["verdict"], "drop", "{v}");
                ('b', generation)
            }
            _ => panic!("{dst} is matched by a-{i} and b-{i}, the answer is neither: {v}"),
        }
    }

    /// The set `show` names ('a' or 'b') and the generation of a consistent sample.
    fn running_set(&self, samples: usize, salt: usize) -> char {
        let show = self.dp.json(&["show"]);
        let runtime = show["runtime_configuration"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let named = if runtime == self.a {
            'a'
        } else if runtime == self.b {
            'b'
        } else {
            panic!("show names neither set: {show}")
        };
        for k in 0..samples {
            let i = (salt * 7919 + k * 613) % POLICIES;
            let (answered, _) = self.answer(i);
            assert_eq!(
                answered,
                named,
                "show names set {named}, the tables answer for dst {} from set {answered}",
                dst(i)
            );
        }
        named
    }
}

/// `pktpath route --pin-dir DIR ARGS` started in the router namespace, not waited for.
fn spawn(dp: &Attachment, args: &[&str]) -> Child {
    let net = format!("--net=/run/netns/{}", dp.router);
    let pin = dp.pin.path.display().to_string();
    let mut full = vec![net.as_str(), PKTPATH, "route", "--pin-dir", &pin];
    full.extend_from_slice(args);
    Command::new("nsenter")
        .args(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nsenter (util-linux)")
}

/// The project's seeded generator, seeded from the clock (the seed is printed, to replay
/// a failure). Random points in time, not inputs to shrink: not proptest.
fn random() -> impl FnMut() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("random points from seed {seed}");
    let mut rng = pktpath_core::rng::Rng::new(seed);
    move || rng.next_u64()
}

/// Runs `child` for `from` and a random part of `window`, then kills it (SIGKILL): its
/// stderr, and whether the kill found it still running.
fn kill_within(
    mut child: Child,
    from: Duration,
    window: Duration,
    next: &mut impl FnMut() -> u64,
) -> (String, bool) {
    std::thread::sleep(from + window.mul_f64((next() % 1000) as f64 / 1000.0));
    let running = child.try_wait().expect("poll pktpath").is_none();
    // nsenter execs pktpath: the child is pktpath itself.
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for pktpath");
    (String::from_utf8_lossy(&out.stderr).into_owned(), running)
}

/// The lines of `stderr` that say what was done about a killed writer.
fn recoveries(stderr: &str) -> impl Iterator<Item = &str> {
    stderr
        .lines()
        .filter(|l| l.contains("rolled back") || l.contains("finished"))
}

fn dst(i: usize) -> String {
    format!("10.200.{}.{}", i / 250, 1 + i % 250)
}

/// A set of one policy per destination (`x-N`, action `action`), plus `stream`.
fn set(x: char, action: &str) -> String {
    let mut policies = vec![format!(
        r#"{{ "id": "stream", "priority": 10, "match": {{ "proto": "udp", "dport": {STREAM_PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}"#
    )];
    for i in 0..POLICIES {
        policies.push(format!(
            r#"{{ "id": "{x}-{i}", "priority": {}, "match": {{ "dst": "{}/32" }}, "action": {{ "type": "{action}" }} }}"#,
            100 + i,
            dst(i)
        ));
    }
    format!(
        "{{ \"version\": 1, \"policies\": [\n{}\n] }}\n",
        policies.join(",\n")
    )
}

/// Eight applies of the two sets started at once, three times: each waits its turn and
/// succeeds, and afterwards `show` and every sampled answer name the same set. Meanwhile
/// `route get` answers come from one whole set, whichever is in use.
#[test]
fn concurrent_applies_leave_one_whole_set() {
    let l = Lab::new("concurrent");
    l.dp.json(&["apply", &l.a]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                l.answer((n * 37) % POLICIES);
                n += 1;
            }
            n
        });
        for round in 0..3 {
            // Each apply's output is read as it comes (a --json diff of 1000 policies
            // fills a pipe).
            let waiters: Vec<_> = (0..8)
                .map(|k| {
                    let file = if k % 2 == 0 { &l.a } else { &l.b };
                    // Eight in a row take a while in a debug build.
                    let child = l.spawn_apply(file, &["--wait", "300"]);
                    let file = file.clone();
                    s.spawn(move || (file, child.wait_with_output().expect("wait for apply")))
                })
                .collect();
            let mut generations = Vec::new();
            for waiter in waiters {
                let (file, out) = waiter.join().expect("apply waiter");
                assert!(
                    out.status.success(),
                    "round {round}: a concurrent apply of {file} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: Value = serde_json::from_slice(&out.stdout).expect("apply --json");
                generations.push(v["applied"]["generation"].as_u64().expect("generation"));
            }
            generations.sort_unstable();
            generations.dedup();
            assert_eq!(
                generations.len(),
                8,
                "round {round}: each apply got its own generation: {generations:?}"
            );
            let named = l.running_set(40, round);
            eprintln!("round {round}: 8 applies, set {named} in use");
        }
        stop.store(true, Ordering::Relaxed);
        let answers = reader.join().expect("reader");
        eprintln!("{answers} route get answers during the applies, each from one whole set");
        assert!(answers > 0);
    });
}

/// A second writer waits for the first, up to --wait, then fails naming it.
#[test]
fn a_second_writer_waits_then_names_the_holder() {
    let l = Lab::new("busy");
    let layout = Layout::new(&l.dp.pin.path);
    let held = Writer::lock(&layout, Duration::from_secs(5)).expect("take the writer lock");
    let start = Instant::now();
    let out = l
        .spawn_apply(&l.a, &["--wait", "0.5"])
        .wait_with_output()
        .expect("wait for apply");
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another pktpath is changing the data path")
            && err.contains(&format!("pid {}", std::process::id()))
            && err.contains("--wait SECONDS"),
        "the error names the holder and the flag: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(took >= Duration::from_millis(500), "waited: {took:?}");
    // Released: the same apply now goes through, waiting for the lock if need be.
    let waiter = l.spawn_apply(&l.a, &[]);
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let out = waiter.wait_with_output().expect("wait for apply");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(l.running_set(5, 1), 'a');
}

/// Applies killed with SIGKILL at random points, 30 times or more, while a UDP stream that both
/// sets forward crosses the router: after each kill the answers come from one whole set
/// (the one `show` names), the next apply recovers and succeeds, and no datagram of the
/// stream is lost.
#[test]
fn applies_killed_at_random_points_leave_one_whole_set() {
    let l = Lab::new("killed");
    l.dp.json(&["apply", &l.a]);
    // How long an apply takes here: kills land over the whole of it.
    let start = Instant::now();
    let out = l.spawn_apply(&l.b, &[]).wait_with_output().unwrap();
    assert!(out.status.success());
    let span = start.elapsed().mul_f64(1.2);

    let stream = common::Stream::start(&l.lab, STREAM_PORT);
    stream.wait_for(50, "stream running before the kills");
    eprintln!("kill points over {span:?}");
    let mut next = random();
    let mut recovered = Vec::new();
    let mut killed_mid_run = 0;
    // At least 30 kills, and more (up to 90) until one left something to recover.
    let mut kill = 0;
    while kill < 30 || (recovered.is_empty() && kill < 90) {
        kill += 1;
        let (x, file) = if kill % 2 == 0 {
            ('a', &l.a)
        } else {
            ('b', &l.b)
        };
        let (set_before, gen_before) = (l.running_set(2, kill), l.generation());
        // Every other kill lands in the apply's last part, where it writes the tables and
        // flips: the part a kill can leave half done.
        let (from, window) = if kill % 2 == 0 {
            (Duration::ZERO, span)
        } else {
            (span.mul_f64(0.55), span.mul_f64(0.4))
        };
        let (_, running) = kill_within(l.spawn_apply(file, &[]), from, window, &mut next);
        killed_mid_run += usize::from(running);
        // A writer that changes nothing else (the same configuration again): what it
        // reports is about this kill alone, and must be true.
        let out = l.dp.route(&["attach", "--config", &l.config]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kill {kill}: the next writer: {err}");
        let (set_after, gen_after) = (l.running_set(6, kill), l.generation());
        let took_effect = gen_after == gen_before + 1 && set_after == x;
        let unchanged = gen_after == gen_before && set_after == set_before;
        let state = format!(
            "set {set_before} (generation {gen_before}) before, set {set_after} (generation {gen_after}) after; the killed apply carried set {x}"
        );
        for line in recoveries(&err) {
            if line.contains("rolled back") {
                assert!(
                    line.contains(file.as_str()) && unchanged,
                    "kill {kill}: {line:?}, but {state}"
                );
            } else {
                assert!(took_effect, "kill {kill}: {line:?}, but {state}");
            }
            recovered.push(line.to_owned());
        }
        assert!(took_effect || unchanged, "kill {kill}: {state}");
        eprintln!("kill {kill}: {state}");
    }
    let out = l.spawn_apply(&l.a, &[]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the apply after the kills: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    recovered.extend(
        v["applied"]["recovered"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned)),
    );
    assert_eq!(l.running_set(20, 99), 'a');
    eprintln!(
        "{killed_mid_run} of {kill} applies killed while running; recoveries reported:\n  {}",
        recovered.join("\n  ")
    );
    assert!(
        killed_mid_run >= kill / 3,
        "most kills land while the apply runs ({killed_mid_run} of {kill})"
    );
    assert!(
        !recovered.is_empty(),
        "some kill interrupted an apply that the next one recovered"
    );

    let (sent, missing) = stream.stop();
    if !missing.is_empty() {
        // Where they went: the data path's counters, the receiver's socket, the backlogs.
        let stats = l.dp.stats();
        let up1 = l.lab.up1.handle();
        panic!(
            "{} of {sent} datagrams of the stream lost across {kill} killed applies: {:?}\n\
             stream policy counted {}, router interfaces {}\n\
             up1 UDP RcvbufErrors {} InErrors {}; softnet_stat:\n{}",
            missing.len(),
            &missing[..missing.len().min(20)],
            common::policy(&stats, "stream")["packets"],
            stats["interfaces"],
            common::snmp(&up1, "Udp", "RcvbufErrors"),
            common::snmp(&up1, "Udp", "InErrors"),
            std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default()
        );
    }
    eprintln!("{sent} datagrams across {kill} killed applies, none lost");
}

/// Attach and detach killed at random points, six times each in either TC mode: the next
/// attach always succeeds (rolling back or finishing what was left), and after the last
/// detach no hook, qdisc, pin, state file or lock is left.
#[test]
fn attach_and_detach_killed_at_random_points_leave_nothing_half_done() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let lab = RouterLab::new();
    let scratch = Scratch::new("route-writers-attach");
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
    let dp = Attachment::new(&lab, "attach-kill");
    let mut next = random();
    let mut recovered = Vec::new();
    for mode in ["netlink", "tcx"] {
        let timed = |args: &[&str]| {
            let start = Instant::now();
            let out = spawn(&dp, args).wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            start.elapsed()
        };
        let attach = ["attach", "--config", &config, "--tc-mode", mode];
        let attach_span = timed(&attach).mul_f64(1.2);
        let detach_span = timed(&["detach"]).mul_f64(1.2);
        for round in 0..6 {
            recovered
                .push(kill_within(spawn(&dp, &attach), Duration::ZERO, attach_span, &mut next).0);
            let out = spawn(&dp, &attach).wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "{mode} round {round}: the attach after a killed one: {err}"
            );
            recovered.push(err);
            assert_eq!(dp.json(&["show"])["policies"], serde_json::json!([]));
            recovered.push(
                kill_within(
                    spawn(&dp, &["detach"]),
                    Duration::ZERO,
                    detach_span,
                    &mut next,
                )
                .0,
            );
            let out = spawn(&dp, &["detach"]).wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success() || err.contains("no data path is attached"),
                "{mode} round {round}: the detach after a killed one: {err}"
            );
            recovered.push(err);
            for link in [&lab.client_link.a, &lab.up1_link.a, &lab.up2_link.a] {
                let left = common::tc_hooks_in_use(&lab, link);
                assert!(
                    left.is_empty(),
                    "{mode} round {round}: left on {link}: {left:?}"
                );
            }
            assert!(!dp.pin.path.exists(), "{mode} round {round}: pins left");
            for fam in ["-4", "-6"] {
                let r = &lab.router.name;
                let rules = pktpath_tests::run::must("ip", &[fam, "-n", r, "rule", "show"]);
                assert!(
                    !rules.contains("fwmark"),
                    "{mode} round {round}: slow-path rules left: {rules}"
                );
                let routes = pktpath_tests::run::must(
                    "ip",
                    &[fam, "-n", r, "route", "show", "table", "all"],
                );
                assert!(
                    !routes.contains("table 707"),
                    "{mode} round {round}: slow-path routes left: {routes}"
                );
            }
            let layout = Layout::new(&dp.pin.path);
            assert!(
                !layout.state_dir().exists() && !layout.lock_file().exists(),
                "{mode} round {round}: state left"
            );
        }
    }
    let lines: Vec<&str> = recovered.iter().flat_map(|e| recoveries(e)).collect();
    eprintln!("recoveries reported:\n  {}", lines.join("\n  "));
}
