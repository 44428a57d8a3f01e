//! `pktpath demo` end to end (privileged): every section of its report with non-zero
//! counters, and nothing left behind afterwards (namespaces, pins, /run/pktpath state) —
//! after a normal run, after SIGTERM, and after `--keep` followed by `--cleanup`.
//!
//! The demo names everything after its own pid (`pktpath-demo-<pid>-...`), so each test
//! checks for leftovers of exactly the process it ran, while other tests run in parallel.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use pktpath_tests::{BpffsGuard, require_root, run};

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");

/// What a demo run with this pid would leave behind: namespaces, the pin directory and its
/// state directory.
fn leftovers(pid: u32) -> Vec<String> {
    let id = format!("pktpath-demo-{pid}");
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{id}-")))
                .map(|n| format!("netns {n}"))
                .collect()
        })
        .unwrap_or_default();
    let pin = Path::new("/sys/fs/bpf").join(&id);
    if pin.exists() {
        left.push(format!("pin directory {}", pin.display()));
    }
    let state = Path::new("/run/pktpath").join(format!("sys-fs-bpf-{id}"));
    if state.exists() {
        left.push(format!("state directory {}", state.display()));
    }
    left
}

fn demo(args: &[&str]) -> (u32, Output) {
    let child = Command::new(PKTPATH)
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pktpath demo");
    let pid = child.id();
    (
        pid,
        child.wait_with_output().expect("wait for pktpath demo"),
    )
}

/// The lines of `section` (from its `== title` line to the next `==` line).
fn section<'a>(stdout: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("== {title}")));
    assert!(
        lines.next().is_some(),
        "no `== {title}` section in:\n{stdout}"
    );
    lines.take_while(|l| !l.starts_with("== ")).collect()
}

/// The rows of the table titled `title:` inside `lines`, header excluded, as columns.
fn table<'a>(lines: &[&'a str], title: &str) -> Vec<Vec<&'a str>> {
    lines
        .iter()
        .skip_while(|l| !l.starts_with(title))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn check_report(stdout: &str) {
    let traffic = section(stdout, "traffic");
    assert!(traffic.len() >= 8, "traffic section:\n{stdout}");
    assert!(
        !stdout.contains("(unexpected)"),
        "some traffic did not arrive where the policies send it:\n{stdout}"
    );

    let policies = section(stdout, "policies and counters");
    let rows = table(&policies, "policies (priority order)");
    assert_eq!(rows.len(), 7, "seven policies:\n{stdout}");
    for row in &rows {
        let packets: u64 = row[2].parse().expect("packets column");
        assert!(packets > 0, "policy {} counted nothing:\n{stdout}", row[1]);
    }
    let ifaces = table(&policies, "interfaces (packets)");
    let to_client = ifaces
        .iter()
        .find(|r| r[0] == "to-client")
        .unwrap_or_else(|| panic!("no to-client row:\n{stdout}"));
    let n = |s: &str| s.parse::<u64>().expect("counter");
    assert!(
        n(to_client[1]) > 0 && n(to_client[2]) > 0 && n(to_client[3]) > 0,
        "to-client passed, forwarded and dropped packets:\n{stdout}"
    );

    let journeys = section(stdout, "journeys");
    let shown = journeys.iter().filter(|l| l.contains(" hops in ")).count();
    assert_eq!(shown, 5, "five journeys traced:\n{stdout}");
    assert!(
        !journeys.iter().any(|l| l.contains("(not traced)")),
        "{stdout}"
    );
    // A forwarded datagram crosses client, router and an upstream.
    for role in ["client ", "router ", "up1 ", "up2 "] {
        assert!(
            journeys.iter().any(|l| l.trim_start().starts_with(role)),
            "no hop in {role}:\n{stdout}"
        );
    }

    let latency = section(stdout, "latency");
    for label in ["kernel forwarding", "fast path"] {
        let row = latency
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` row:\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        let packets: u64 = cols[cols.len() - 3].parse().expect("packets column");
        assert!(packets > 0, "no {label} latency sample:\n{stdout}");
        assert!(cols[cols.len() - 1] != "-", "{stdout}");
    }

    let drops = section(stdout, "drops");
    let tc = drops
        .iter()
        .find(|l| l.trim_start().starts_with("TC_INGRESS"))
        .unwrap_or_else(|| panic!("no TC_INGRESS drop:\n{stdout}"));
    assert!(tc.contains("router") && tc.contains("to-client"), "{tc}");
    let count: u64 = tc
        .split_whitespace()
        .last()
        .and_then(|c| c.parse().ok())
        .expect("count");
    assert_eq!(count, 5, "the five quarantined datagrams:\n{stdout}");
}

#[test]
fn demo_prints_every_section_and_leaves_nothing_behind() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let (pid, out) = demo(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}\n{stdout}");
    check_report(&stdout);
    assert!(
        stderr.contains("removing the lab ...") && stderr.contains("done ("),
        "progress on stderr:\n{stderr}"
    );
    assert!(!stdout.contains('\x1b'), "no colour when stdout is a pipe");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind");
}

#[test]
fn sigterm_removes_everything() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let mut child = Command::new(PKTPATH)
        .arg("demo")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pktpath demo");
    let pid = child.id();
    // Stop it once the lab is built and the fast path attached.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("loading the tracer") {
            break;
        }
    }
    assert!(seen.contains("loading the tracer"), "demo output:\n{seen}");
    assert!(
        !leftovers(pid).is_empty(),
        "the lab exists while the demo runs"
    );
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    let status = child.wait().expect("wait for the demo");
    assert_eq!(status.code(), Some(130), "exit status:\n{seen}{rest}");
    assert!(rest.contains("interrupted; the lab was removed"), "{rest}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind");
}

#[test]
fn keep_leaves_a_working_lab_and_cleanup_removes_it() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    let (pid, out) = demo(&["--keep"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Whatever happens below, remove the lab.
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(PKTPATH).args(["demo", "--cleanup"]).output();
        }
    }
    let _cleanup = Cleanup;
    assert!(
        out.status.success(),
        "demo --keep failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_report(&stdout);
    let id = format!("pktpath-demo-{pid}");
    assert!(
        stdout.contains(&format!("ip netns exec {id}-client")),
        "{stdout}"
    );
    assert!(stdout.contains("demo --cleanup"), "{stdout}");
    let left = leftovers(pid);
    assert_eq!(left.len(), 6, "4 namespaces, pins and state: {left:?}");

    // The kept lab still forwards, and `route stats` works as printed.
    assert_eq!(run::ping(&format!("{id}-client"), "10.80.9.1", 2), 2);
    let stats = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{id}-router"))
        .args([PKTPATH, "route", "--pin-dir"])
        .arg(format!("/sys/fs/bpf/{id}"))
        .args(["stats", "--json"])
        .output()
        .expect("run route stats");
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    assert_eq!(v["policies"].as_array().map(Vec::len), Some(7), "{v}");

    let cleanup = Command::new(PKTPATH)
        .args(["demo", "--cleanup"])
        .output()
        .expect("run demo --cleanup");
    let text = String::from_utf8_lossy(&cleanup.stdout);
    assert!(cleanup.status.success(), "{text}");
    assert!(text.contains(&format!("removed lab {id}")), "{text}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind");
}

#[test]
fn unprivileged_user_gets_one_line_naming_the_capability() {
    require_root();
    let out = run::as_nobody(PKTPATH, &["demo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("missing capability CAP_SYS_ADMIN"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    require_root();
    let _bpffs = BpffsGuard::ensure();
    // util-linux `script` runs the demo with its stdout on a pseudo-terminal.
    let on_tty = |no_color: bool| -> String {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{PKTPATH} demo"), "/dev/null"]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().expect("run script(1)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "demo on a terminal failed:\n{text}");
        text
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\x1b[1;36m== policies and counters"),
        "headings in colour on a terminal:\n{coloured}"
    );
    let plain = on_tty(true);
    assert!(plain.contains("== policies and counters"), "{plain}");
    assert!(
        !plain.contains("\x1b["),
        "NO_COLOR set: no colour:\n{plain}"
    );
}
