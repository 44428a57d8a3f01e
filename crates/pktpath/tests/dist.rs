//! The packaging in dist/: the systemd unit passes `systemd-analyze verify` (with the
//! binary under test in ExecStart, since verify checks that the command exists), asks for
//! the capabilities pktpath checks for and no more, and runs the agent with flags it has.
//! Running the unit under systemd as init is not possible on the test machines.

use std::process::Command;

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");
const UNIT: &str = include_str!("../../../dist/pktpath-agent.service");

/// The values of `key=` lines in the unit.
fn values(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_verifies() {
    let dir = std::env::temp_dir().join(format!("pktpath-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("pktpath-agent.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/pktpath", PKTPATH)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys, with a warning: any output is a finding.
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify ({}): {err}",
        out.status
    );
}

#[test]
fn systemd_unit_grants_exactly_the_capabilities_pktpath_needs() {
    let ambient = values("AmbientCapabilities");
    let bounding = values("CapabilityBoundingSet");
    assert_eq!(ambient, bounding, "ambient and bounding sets agree");
    let caps: Vec<&str> = ambient[0].split_whitespace().collect();
    // Those `pktpath agent` checks for, and CAP_PERFMON for the verifier.
    assert_eq!(caps, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
    assert_eq!(values("DynamicUser"), ["yes"]);
    assert_eq!(values("RuntimeDirectory"), ["pktpath"]);
    assert_eq!(
        values("RuntimeDirectoryPreserve"),
        ["yes"],
        "the state must outlive a restart, as the pins do"
    );
    assert!(
        values("Environment").contains(&"PKTPATH_STATE_DIR=%t/pktpath".to_owned()),
        "{UNIT}"
    );
}

#[test]
fn systemd_unit_runs_the_agent_with_flags_it_has() {
    let help = Command::new(PKTPATH)
        .args(["agent", "--help"])
        .output()
        .expect("run pktpath");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let start = UNIT
        .split("ExecStart=")
        .nth(1)
        .expect("ExecStart")
        .split("\n#")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let words: Vec<&str> = start.split_whitespace().collect();
    assert_eq!(&words[..2], ["/usr/local/bin/pktpath", "agent"], "{start}");
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "`pktpath agent` has no {flag}"
        );
    }
    assert_eq!(values("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
}
