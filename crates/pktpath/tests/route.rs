//! `pktpath route check` and `pktpath route schema` end to end, on the shipped examples and
//! on broken files: exit codes, one line on stderr naming file, line and field, or the
//! message `route apply` gives for a set the data path cannot hold. No root.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pktpath_core::{
    route::compile::{PolicySet, Topology},
    route::datapath::policy::{self, Interfaces, LinkInfo, PolicyError, Slots},
};

const PKTPATH: &str = env!("CARGO_BIN_EXE_pktpath");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn pktpath(args: &[&str]) -> Output {
    Command::new(PKTPATH)
        .args(args)
        .output()
        .expect("run pktpath")
}

/// A scratch directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pktpath-route-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `route check` on the example configuration and `runtime`, expects exit 1 and one
/// line on stderr starting with `file:line:` and naming `field` and `words`.
#[track_caller]
fn rejects(scratch: &Scratch, runtime: &str, line: usize, field: &str, words: &[&str]) {
    let file = scratch.file("runtimeConfiguration.json", runtime);
    let out = pktpath(&[
        "route",
        "check",
        "--config",
        &example("configuration.json"),
        &file,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout for invalid input");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    let want = format!("pktpath: {file}:{line}:");
    assert!(
        stderr.starts_with(&want),
        "{stderr:?} should start with {want:?}"
    );
    assert!(
        stderr.contains(&format!(": {field}: ")),
        "{stderr:?} should name {field}"
    );
    for word in words {
        assert!(stderr.contains(word), "{stderr:?} should contain {word:?}");
    }
}

/// A runtime configuration around one policy written on line 4.
fn one_policy(policy: &str) -> String {
    format!(
        "{{\n  \"version\": 1,\n  \"policies\": [\n    {{ \"id\": \"ok\", \"priority\": 1, \"match\": {{}}, \"action\": {{ \"type\": \"pass\" }} }},\n    {policy}\n  ]\n}}\n"
    )
}

#[test]
fn check_accepts_the_examples_and_lists_policies_in_priority_order() {
    let out = pktpath(&[
        "route",
        "check",
        "--config",
        &example("configuration.json"),
        &example("runtimeConfiguration.json"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    assert!(
        stdout.contains("valid: 3 interfaces, 2 next hops, 2 tables"),
        "{stdout}"
    );
    assert!(stdout.contains("valid: 10 policies"), "{stdout}");
    let first = stdout
        .find("block-quarantined-host")
        .expect("first policy listed");
    let last = stdout
        .find("replies-by-main-table")
        .expect("last policy listed");
    assert!(first < last, "priority order: {stdout}");
    assert!(
        stdout.contains("forward up2 (to-up2 via 10.3.0.2, fd03::2)"),
        "{stdout}"
    );
}

#[test]
fn check_json_is_one_object_in_the_files_terms() {
    let out = pktpath(&[
        "route",
        "check",
        "--json",
        "--config",
        &example("configuration.json"),
        &example("runtimeConfiguration.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    let policies = v["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 10);
    let priorities: Vec<u64> = policies
        .iter()
        .map(|p| p["priority"].as_u64().unwrap())
        .collect();
    assert!(priorities.windows(2).all(|w| w[0] < w[1]), "{priorities:?}");
    assert_eq!(policies[0]["action"]["type"], "drop");
    assert_eq!(
        policies[0]["match"]["src"], "10.1.0.66/32",
        "normalised prefix"
    );
    assert_eq!(v["next_hops"][0]["gateway6"], "fd02::2");
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
}

#[test]
fn check_reports_what_the_classifier_makes_of_the_policies() {
    let args = [
        "route",
        "check",
        "--config",
        &example("configuration.json"),
        &example("runtimeConfiguration.json"),
    ];
    let out = pktpath(&[&args[..], &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    // One rule per policy, one per family for a `forward` that names no address.
    let want_rules: u64 = v["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| {
            let m = &p["match"];
            let family_free = m.get("src").is_none() && m.get("dst").is_none();
            if p["action"]["type"] == "forward" && family_free {
                2
            } else {
                1
            }
        })
        .sum();
    let c = &v["classifier"];
    assert_eq!(c["rules"], want_rules, "{c}");
    assert_eq!(c["tree_stats"]["rules"], want_rules, "{c}");
    let trees = c["trees"].as_u64().expect("trees");
    let per_family: u64 = c["tree_stats"]["trees"]
        .as_array()
        .expect("trees per family")
        .iter()
        .map(|t| t.as_u64().unwrap())
        .sum();
    assert!(trees > 0 && trees == per_family, "{c}");
    let arena = c["arena_bytes"].as_u64().expect("arena_bytes");
    let table = c["table_bytes"].as_u64().expect("table_bytes");
    assert!(
        arena > 0 && table >= arena && table.is_multiple_of(1 << 20),
        "{c}"
    );

    let text = String::from_utf8(pktpath(&args).stdout).expect("utf-8");
    let line = format!(
        "classifier: {want_rules} rules in {trees} trees ({} KiB of tables, {} KiB in the kernel)",
        arena.div_ceil(1024),
        table / 1024
    );
    assert!(text.contains(&line), "{line:?} in {text}");
}

/// What `route apply` says for the runtime configuration at `runtime` on a freshly attached
/// data path: its pipeline with interfaces as the kernel might number them.
fn apply_error(config: &str, runtime: &str) -> PolicyError {
    let topology = Topology::load(Path::new(config)).expect("valid configuration");
    let set = PolicySet::load(&topology, Path::new(runtime)).expect("valid runtime file");
    let kernel = Interfaces {
        links: (0..topology.interfaces.len() as u32)
            .map(|i| LinkInfo {
                ifindex: 17 + 9 * i,
                mtu: 9000,
                mac: [2, 0x5e, 0, 0, 0, i as u8],
            })
            .collect(),
    };
    let plan = match Slots::default().plan(&set) {
        Ok(plan) => plan,
        Err(e) => return e,
    };
    match policy::compile_set(&set, &kernel, &plan.slots) {
        Ok(_) => panic!("route apply would take {runtime}"),
        Err(e) => e,
    }
}

#[test]
fn check_refuses_a_set_the_data_path_cannot_hold_as_apply_does() {
    let s = Scratch::new("too-many");
    let config = example("configuration.json");
    let runtime = s.file("runtimeConfiguration.json", &common::too_many_policies());
    let refused = apply_error(&config, &runtime);
    assert!(
        matches!(refused, PolicyError::TooManySlots { .. }),
        "the data path refuses the set for its size, not: {refused}"
    );
    for json in [false, true] {
        let mut args = vec!["route", "check", "--config", &config, &runtime];
        if json {
            args.push("--json");
        }
        let out = pktpath(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "json {json}: {stderr}");
        assert!(out.stdout.is_empty(), "json {json}: nothing on stdout");
        assert_eq!(stderr, format!("pktpath: {refused}\n"), "json {json}");
    }
}

#[test]
fn check_without_runtime_configuration_checks_the_static_one() {
    let out = pktpath(&["route", "check", "--config", &example("configuration.json")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("to-client"), "{stdout}");
    assert!(!stdout.contains("policies"), "{stdout}");
}

#[test]
fn check_rejects_bad_runtime_configurations() {
    let s = Scratch::new("bad-runtime");
    rejects(
        &s,
        "{\n  \"version\": 1,\n  \"policies\": [\n    { \"id\": \"a\" \"priority\": 1 }\n  ]\n}\n",
        4,
        "policies[0]",
        &["malformed json"],
    );
    rejects(
        &s,
        &one_policy(
            r#"{ "id": "a", "priority": 2, "match": { "iif": "eth9" }, "action": { "type": "drop" } }"#,
        ),
        5,
        "policies[1].match.iif",
        &["unknown input interface \"eth9\"", "to-client"],
    );
    rejects(
        &s,
        &one_policy(
            r#"{ "id": "a", "priority": 2, "match": {}, "action": { "type": "forward", "next_hop": "up3" } }"#,
        ),
        5,
        "policies[1].action.next_hop",
        &["unknown next hop \"up3\"", "up1, up2"],
    );
    rejects(
        &s,
        &one_policy(r#"{ "id": "ok", "priority": 2, "match": {}, "action": { "type": "drop" } }"#),
        5,
        "policies[1].id",
        &["duplicate policy id \"ok\"", "line 4"],
    );
    rejects(
        &s,
        &one_policy(r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "drop" } }"#),
        5,
        "policies[1].priority",
        &["priority 1", "policy \"ok\""],
    );
    rejects(
        &s,
        &one_policy(
            r#"{ "id": "a", "priority": 2, "match": { "src": "10.0.0.1/33" }, "action": { "type": "drop" } }"#,
        ),
        5,
        "policies[1].match.src",
        &["invalid prefix \"10.0.0.1/33\""],
    );
    rejects(
        &s,
        &one_policy(
            r#"{ "id": "a", "priority": 2, "match": { "dport": "2000-1000" }, "action": { "type": "drop" } }"#,
        ),
        5,
        "policies[1].match.dport",
        &["reversed", "1000-2000"],
    );
    rejects(
        &s,
        &one_policy(
            r#"{ "id": "a", "priority": 2, "match": { "port": 80 }, "action": { "type": "drop" } }"#,
        ),
        5,
        "policies[1].match.port",
        &["unknown field `port`"],
    );
    rejects(
        &s,
        "{\n  \"version\": 7,\n  \"policies\": []\n}\n",
        2,
        "version",
        &["unsupported version 7"],
    );
}

#[test]
fn check_rejects_a_bad_static_configuration() {
    let s = Scratch::new("bad-static");
    let config = s.file(
        "configuration.json",
        "{\n  \"version\": 1,\n  \"interfaces\": [{ \"name\": \"lan\" }],\n  \"next_hops\": [{ \"name\": \"up\", \"interface\": \"wan\", \"gateway4\": \"192.0.2.1\" }]\n}\n",
    );
    let out = pktpath(&["route", "check", "--config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with(&format!("pktpath: {config}:4:"))
            && stderr.contains("next_hops[0].interface"),
        "{stderr:?}"
    );
}

#[test]
fn check_reports_a_missing_file_in_one_line() {
    let missing = "/nonexistent/pktpath/configuration.json";
    let out = pktpath(&["route", "check", "--config", missing]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains(missing) && stderr.contains("No such file"),
        "{stderr:?}"
    );
}

#[test]
fn check_without_config_is_a_usage_error() {
    let out = pktpath(&["route", "check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_prints_the_committed_schemas() {
    for (which, file) in [
        ("configuration", "configuration.schema.json"),
        ("runtime", "runtimeConfiguration.schema.json"),
    ] {
        let out = pktpath(&["route", "schema", which]);
        assert!(out.status.success());
        let committed =
            std::fs::read_to_string(repo().join("schema").join(file)).expect("committed schema");
        assert_eq!(String::from_utf8_lossy(&out.stdout), committed, "{which}");
    }
    let out = pktpath(&["route", "schema"]);
    assert!(out.status.success());
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(both["configuration.json"]["properties"]["interfaces"].is_object());
    assert!(both["runtimeConfiguration.json"]["properties"]["policies"].is_object());
}

/// `route check` says which policies the XDP hook leaves to TC, and why: the example's
/// mark policy (priority 30, on every packet from to-client) overlaps every policy behind
/// it on that interface; the two before it, the ones setting a mark and the `pass` one
/// are told apart.
#[test]
fn check_says_which_policies_fall_back_from_xdp_to_tc() {
    let out = pktpath(&[
        "route",
        "check",
        "--config",
        &example("configuration.json"),
        &example("runtimeConfiguration.json"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let reasons: std::collections::BTreeMap<String, String> = report["xdp_fallback"]
        .as_array()
        .expect("xdp_fallback")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for decided in ["block-quarantined-host", "voice-via-up2"] {
        assert!(
            !reasons.contains_key(decided),
            "{decided} is decided at XDP: {reasons:?}"
        );
    }
    let reason = |id: &str| {
        reasons
            .get(id)
            .map(String::as_str)
            .unwrap_or("decided at XDP")
    };
    assert!(
        reason("marked-via-up1").contains("matches on the mark"),
        "{reasons:?}"
    );
    assert!(
        reason("lab-b-v4-via-up2").contains("sets a mark"),
        "{reasons:?}"
    );
    for behind in [
        "dns-via-up2",
        "web-via-up1",
        "clients-via-up1",
        "replies-by-main-table",
    ] {
        assert!(
            reason(behind).contains("overlaps it"),
            "{behind}: {reasons:?}"
        );
    }
    let text = pktpath(&[
        "route",
        "check",
        "--config",
        &example("configuration.json"),
        &example("runtimeConfiguration.json"),
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("with --hook xdp: 2 of 10 policies decided at XDP, 8 left to TC:"),
        "{text}"
    );
}
