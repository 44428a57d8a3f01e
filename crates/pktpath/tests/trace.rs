//! `pktpath trace` end to end: the built binary, run against pings between fresh namespaces,
//! prints JSON Lines with the documented fields; it stops after -c events or on SIGINT with
//! a one-line count on stderr; without privileges it prints one line and exits 3; a bad
//! filter expression exits 2 with a caret under the token.

mod common;

use common::stderr_lines;
use std::{
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use pktpath_tests::{TwoHosts, require_root, run, trace::EventSchema};

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");

/// Kills the child if the test fails before it exits.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pktpath trace ARGS` and waits until it says it is attached.
fn start(args: &[&str]) -> (Reaper, mpsc::Receiver<String>) {
    let mut child = Command::new(PKTPATH)
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pktpath trace");
    let rx = stderr_lines(child.stderr.take().expect("stderr"));
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("pktpath trace says something on stderr");
    assert!(
        first.starts_with("pktpath: tracing ") && first.ends_with("(Ctrl-C to stop)"),
        "first stderr line: {first}"
    );
    (Reaper(child), rx)
}

/// Traces ICMP in `b` as JSON (plus `extra` options) with `-c count` while `a` pings `b` five
/// times; returns stdout once the trace has stopped by itself, and its stderr lines.
fn trace_pings_as_json(
    lab: &TwoHosts,
    extra: &[&str],
    count: usize,
) -> (String, mpsc::Receiver<String>) {
    let count = count.to_string();
    // Only ICMP: ARP and IPv6 neighbour/MLD chatter after link-up could otherwise use up
    // the -c budget before two echo requests arrive (seen under parallel load).
    let mut args = vec!["icmp", "--netns", &lab.b.name, "--output", "json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-c", &count]);
    let (mut child, stderr) = start(&args);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 5), 5);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("read stdout");
    (stdout, stderr)
}

/// Waits for the child to exit; panics after `timeout`.
fn wait_exit(child: &mut Reaper, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "pktpath trace did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn trace_cli_json_lines_for_pings_in_a_namespace() {
    require_root();
    let lab = TwoHosts::new();
    let ns_b = lab.b.inode();
    let ns_a = lab.a.inode();
    let ix_b = run::ifindex(&lab.b.name, &lab.link.b);
    let count = 20;
    let (stdout, stderr) = trace_pings_as_json(&lab, &[], count);
    // Every line is an event as the committed schema describes it.
    assert_eq!(EventSchema::committed().check_lines(&stdout), count);
    // Until EOF: the child has exited, so the reader thread ends after its last line.
    let summary: Vec<String> = stderr.iter().collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(summary[0].starts_with("pktpath: summary: "), "{summary:?}");
    assert_eq!(
        summary[1],
        format!("pktpath: {count} events, 0 lost"),
        "exit line"
    );

    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events.len(), count, "-c {count}");
    for ev in &events {
        for key in [
            "schema_version",
            "ts_ns",
            "packet_id",
            "hook",
            "ifname",
            "ifindex",
            "netns",
            "netns_name",
            "proto",
            "src",
            "dst",
            "sport",
            "dport",
            "len",
            "delta_ns",
            "drop_reason",
            "drop_location",
        ] {
            assert!(ev.get(key).is_some(), "event lacks {key}: {ev}");
        }
        assert_eq!(ev["schema_version"], pktpath_core::trace::SCHEMA_VERSION);
        let netns = ev["netns"].as_u64().expect("netns is a number");
        // Frees of packets that passed the filter are reported wherever they happen.
        let free = ev["hook"] == "kfree_skb" || ev["hook"] == "consume_skb";
        assert!(
            netns == ns_b || (free && netns == ns_a),
            "outside the filter: {ev}"
        );
        if netns == ns_b {
            assert_eq!(ev["netns_name"], lab.b.name.as_str(), "{ev}");
        }
    }
    let requests: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["hook"] == "netif_receive_skb" && e["proto"] == "icmp" && e["icmp_type"] == 8)
        .collect();
    assert!(
        requests.len() >= 2,
        "echo requests received in b: {events:#?}"
    );
    for r in &requests {
        assert_eq!(r["ifname"], lab.link.b.as_str());
        assert_eq!(r["ifindex"], ix_b);
        assert_eq!(r["src"], TwoHosts::A4);
        assert_eq!(r["dst"], TwoHosts::B4);
        assert_eq!(r["len"], 84);
        assert!(r["delta_ns"].as_u64().is_some(), "netif_rx came first: {r}");
    }
    let ts: Vec<u64> = events.iter().filter_map(|e| e["ts_ns"].as_u64()).collect();
    assert_eq!(ts.len(), events.len());
}

#[test]
fn trace_cli_stops_cleanly_on_sigint_with_a_text_count() {
    require_root();
    let lab = TwoHosts::new();
    let (mut child, stderr) = start(&["--netns", &lab.a.name, "--hooks", "net:net_dev_queue"]);
    assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 2), 2);
    // SAFETY: signalling our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "exit status after SIGINT: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("read stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    let echo = lines
        .iter()
        .filter(|l| l.contains("net_dev_queue") && l.contains("echo request"))
        .count();
    assert_eq!(echo, 2, "text output:\n{stdout}");
    assert!(lines.iter().all(|l| l.contains(&lab.a.name)), "{stdout}");
    // Until EOF: the child has exited, so the reader thread ends after its last line.
    let summary: Vec<String> = stderr.iter().collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(summary[0].starts_with("pktpath: summary: "), "{summary:?}");
    assert_eq!(
        summary[1],
        format!("pktpath: {} events, 0 lost", lines.len())
    );
}

#[test]
fn trace_cli_without_privileges_is_one_line_and_exit_3() {
    require_root();
    let out = pktpath_tests::run::as_nobody(PKTPATH, &["trace", "-c", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pktpath: missing capability CAP_BPF: trace loads"),
        "{stderr}"
    );
    // Names everything trace needs, and nothing more.
    assert!(
        stderr.contains("with exactly CAP_BPF, CAP_PERFMON (") && !stderr.contains("CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// `--read FILE` of a trace saved with `--summary --output json`, as nobody: the same
/// events and the same summary as the live run; in text, one line per event; a filter over
/// the saved events selects as the kernel's filter would.
#[test]
fn trace_cli_read_gives_back_the_live_run() {
    require_root();
    let lab = TwoHosts::new();
    let count = 20;
    let (live, _stderr) = trace_pings_as_json(&lab, &["--summary"], count);
    let dir = common::Scratch::new("trace-read");
    let file = dir.write("saved.jsonl", &live);
    let file = file.as_str();
    let read = |args: &[&str]| {
        let mut all = vec!["trace", "--read", file];
        all.extend_from_slice(args);
        let out = pktpath_tests::run::as_nobody(PKTPATH, &all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{all:?}: {stderr}");
        (String::from_utf8(out.stdout).expect("utf-8"), stderr)
    };
    let (again, stderr) = read(&["--summary", "--output", "json"]);
    assert_eq!(again, live, "read back as it was written");
    assert!(
        stderr.contains(&format!("pktpath: {count} events, 0 lost when recorded")),
        "{stderr}"
    );
    let (text, _) = read(&[]);
    assert_eq!(text.lines().count(), count, "{text}");
    // Echo requests only: every event of a request's journey (ICMP type 8 is not in the
    // filter language; the requests are the packets to b's address).
    let (requests, _) = read(&["--output", "json", "dst", "host", TwoHosts::B4]);
    let want = live
        .lines()
        .filter(|l| l.contains(&format!("\"dst\":\"{}\"", TwoHosts::B4)))
        .count();
    assert!(want > 0 && requests.lines().count() == want, "{requests}");
    let (none, _) = read(&["tcp"]);
    assert!(none.is_empty(), "{none}");
}

/// `trace diff` of a ping traced as JSON in b, without and then with an nftables rule
/// that drops echo requests in b's input: names the drop only B has, and where the echo
/// request's path parts (its free in b with NETFILTER_DROP instead of a delivery and a
/// reply); run as nobody, in text and JSON.
#[test]
fn trace_cli_diff_names_the_drop_and_where_the_paths_part() {
    require_root();
    let lab = TwoHosts::new();
    let dir = common::Scratch::new("trace-diff");
    let record = |name: &str, replies: u32| {
        let args = [
            "icmp",
            "--netns",
            &lab.b.name,
            "--output",
            "json",
            "--duration",
            "3",
        ];
        let (mut child, _stderr) = start(&args);
        assert_eq!(run::ping(&lab.a.name, TwoHosts::B4, 3), replies, "{name}");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert!(status.success(), "exit status {status}");
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut stdout)
            .expect("read stdout");
        dir.write(name, &stdout)
    };
    let working = record("working.jsonl", 3);
    let failing = {
        let _nft =
            pktpath_tests::NftTableGuard::input(&lab.b.name, &["icmp type echo-request drop"]);
        record("failing.jsonl", 0)
    };
    let out = pktpath_tests::run::as_nobody(PKTPATH, &["trace", "diff", &working, &failing]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("drops only in B: NETFILTER_DROP at "),
        "{text}"
    );
    let out =
        pktpath_tests::run::as_nobody(PKTPATH, &["trace", "diff", &working, &failing, "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let request = format!("icmp {} > {} type 8", TwoHosts::A4, TwoHosts::B4);
    let parted = d["diverging"]
        .as_array()
        .expect("diverging")
        .iter()
        .find(|v| v["flow"] == request.as_str())
        .unwrap_or_else(|| panic!("{request} does not diverge: {d:#}"));
    let b_hops: Vec<&str> = parted["b"]
        .as_array()
        .expect("b")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert!(
        b_hops
            .last()
            .is_some_and(|h| h.starts_with("kfree_skb@") && h.ends_with("(NETFILTER_DROP)")),
        "{parted:#}"
    );
    assert_eq!(parted["packets_b"], 3, "{parted:#}");
    // The echo replies only the working trace has.
    let reply = format!("icmp {} > {} type 0", TwoHosts::B4, TwoHosts::A4);
    assert!(
        d["only_in_a"]
            .as_array()
            .expect("only_in_a")
            .iter()
            .any(|f| f["flow"] == reply.as_str()),
        "{d:#}"
    );
    // A trace against itself: nothing differs.
    let out = pktpath_tests::run::as_nobody(PKTPATH, &["trace", "diff", &working, &working]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no difference"));
}

/// `--print-schema` needs no privilege and prints the committed schema of the JSON events;
/// with any other argument it is a usage error.
#[test]
fn trace_cli_print_schema_as_nobody() {
    require_root();
    let out = pktpath_tests::run::as_nobody(PKTPATH, &["trace", "--print-schema"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schema")
            .join(pktpath_core::trace::schema::FILE_NAME),
    )
    .expect("committed schema");
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
    let out = Command::new(PKTPATH)
        .args(["trace", "--print-schema", "-c", "1"])
        .output()
        .expect("run pktpath trace");
    assert_eq!(out.status.code(), Some(2));
}

/// A filter expression with a typo: exit 2 (usage) before anything is loaded, with the
/// expression and a caret under the bad token on stderr.
#[test]
fn trace_cli_filter_syntax_error_points_at_the_token_and_exits_2() {
    require_root();
    let out = Command::new(PKTPATH)
        .args(["trace", "udp", "and", "dts", "port", "53"])
        .output()
        .expect("run pktpath trace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("unexpected `dts` at 8"), "{stderr}");
    assert!(
        stderr.contains("  udp and dts port 53\n          ^^^"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("tracing"),
        "nothing was attached: {stderr}"
    );
}

/// `--summary --output json`: the last stdout line is one `{"summary": ...}` object whose
/// counts agree with the event lines before it.
#[test]
fn trace_cli_json_summary_agrees_with_the_events() {
    require_root();
    let lab = TwoHosts::new();
    let count = 20;
    let (stdout, _stderr) = trace_pings_as_json(&lab, &["--summary"], count);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (last, events) = lines.split_last().expect("output");
    assert_eq!(events.len(), count);
    let s = &last["summary"];
    assert_eq!(s["events"], count, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    // Consecutive events of one packet, counted from the event lines themselves.
    let (from, to) = (
        format!("netif_rx@{}", lab.link.b),
        format!("netif_receive_skb@{}", lab.link.b),
    );
    let expected = events
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            e["hook"] == "netif_receive_skb"
                && e["ifname"] == lab.link.b.as_str()
                && events[..*i]
                    .iter()
                    .rev()
                    .find(|p| p["packet_id"] == e["packet_id"])
                    .is_some_and(|p| p["hook"] == "netif_rx" && p["ifname"] == lab.link.b.as_str())
        })
        .count();
    assert!(expected >= 2, "{events:#?}");
    let pair = s["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .find(|h| h["from"] == from.as_str() && h["to"] == to.as_str())
        .unwrap_or_else(|| panic!("no {from} -> {to} in {s}"));
    assert_eq!(pair["count"], expected, "{pair}");
    assert!(pair["p50_ns"].as_u64() <= pair["max_ns"].as_u64(), "{pair}");
    let ifs = s["interfaces"].as_array().expect("interfaces");
    assert!(
        ifs.iter()
            .any(|i| i["ifname"] == lab.link.b.as_str() && i["netns"] == lab.b.inode()),
        "{s}"
    );
}
