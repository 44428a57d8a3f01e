//! `pktpath doctor` end to end: its JSON matches what this kernel offers, and a user without
//! privileges gets one clear line naming the missing capability.

use std::process::Command;

use pktpath_tests::{BpffsGuard, require_root};

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");

/// The bpffs and tracefs mounts (other mounts, such as /run/netns/* of tests running in
/// parallel, come and go on their own).
fn mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .expect("read mounts")
        .lines()
        .filter(|l| matches!(l.split_whitespace().nth(2), Some("bpf" | "tracefs")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn doctor_json_matches_this_kernel() {
    require_root();
    // `route attach` mounts bpffs and leaves it (its pins live there); a route test running
    // in parallel may do so at any moment. Start from that state, so only doctor's own
    // doing shows.
    let _bpffs = BpffsGuard::ensure();
    let mounts_before = mounts();
    let out = Command::new(PKTPATH)
        .args(["doctor", "--json"])
        .output()
        .expect("run pktpath");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "doctor failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let available = |id: &str| -> bool {
        let check = report["checks"]
            .as_array()
            .expect("checks array")
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        assert!(check["used_by"].is_array(), "{id} lacks used_by");
        assert!(check["feature"].is_string(), "{id} lacks a feature name");
        let yes = check["available"].as_bool().expect("available is a bool");
        assert_eq!(
            yes,
            check["error"].is_null(),
            "{id}: an error exactly when unavailable"
        );
        yes
    };
    // What shared/PLATFORM.md says this kind of machine offers.
    for id in [
        "root",
        "cap_bpf",
        "cap_net_admin",
        "cap_perfmon",
        "btf",
        "tracepoint",
        "tp_btf",
        "raw_tracepoint",
        "ringbuf",
        "prog_test_run",
        "tc_netlink",
        "tcx",
        "xdp",
        "xdp_native",
        "pinning",
    ] {
        assert!(available(id), "{id} should be available here");
    }
    // pktpath uses neither kprobes nor fentry, and runs the data path's bpf_loop variant
    // where may_goto is missing (datapath_classify checks the kernel agrees): reported,
    // whatever the kernel says, but never a reason for "not ready".
    for id in ["kprobe", "fentry", "may_goto"] {
        available(id);
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        assert_eq!(check["needed"], false, "{id} is informational: {check}");
    }
    // Probing mounts what it needs only for the time of the probe.
    assert_eq!(mounts_before, mounts(), "doctor left mounts behind");
}

#[test]
fn doctor_table_lists_every_feature() {
    require_root();
    let out = Command::new(PKTPATH)
        .arg("doctor")
        .output()
        .expect("run pktpath");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "FEATURE",
        "BTF tracepoints (tp_btf)",
        "TCX (bpf_link TC attach)",
        "kprobes",
        "ready:",
    ] {
        assert!(
            text.contains(needle),
            "doctor table lacks {needle}:\n{text}"
        );
    }
}

#[test]
fn unprivileged_user_gets_one_line_naming_the_capability() {
    require_root();
    let out = pktpath_tests::run::as_nobody(PKTPATH, &["doctor"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code for missing privileges; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("pktpath: missing capability CAP_"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}
