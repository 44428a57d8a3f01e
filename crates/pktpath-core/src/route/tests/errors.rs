//! Every way a configuration file can be wrong gives one error naming the file, the line
//! (and column) and the field, and saying what to fix.

use super::{CONFIGURATION, compile, runtime};
use crate::route::{
    compile::Topology,
    config::{ConfigError, Source},
};

const RT: &str = "runtimeConfiguration.json";
const ST: &str = "configuration.json";

/// Asserts `err` is at `file:line`, names `field`, and its message contains `words`.
#[track_caller]
fn assert_error(err: &ConfigError, file: &str, line: usize, field: &str, words: &[&str]) {
    let text = err.to_string();
    let at = err
        .location()
        .unwrap_or_else(|| panic!("no location in {text:?}"));
    assert_eq!(at.file, file, "{text}");
    assert_eq!(at.line, line, "{text}");
    assert_eq!(at.field, field, "{text}");
    let prefix = format!("{file}:{line}:{}: {field}", at.column);
    assert!(
        text.starts_with(&prefix),
        "{text:?} should start with {prefix:?}"
    );
    for word in words {
        assert!(text.contains(word), "{text:?} should contain {word:?}");
    }
    assert!(!text.contains('\n'), "one line: {text:?}");
}

#[track_caller]
fn runtime_error(policies: &[&str]) -> ConfigError {
    match compile(&runtime(policies)) {
        Ok(_) => panic!("should be rejected: {policies:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn static_error(text: &str) -> ConfigError {
    match Topology::from_source(&Source::new(ST, text)) {
        Ok(_) => panic!("should be rejected: {text}"),
        Err(e) => e,
    }
}

const OK: &str = r#"{ "id": "ok", "priority": 1, "match": {}, "action": { "type": "pass" } }"#;

#[test]
fn malformed_json() {
    let text =
        "{\n  \"version\": 1,\n  \"policies\": [\n    { \"id\": \"a\" \"priority\": 1 }\n  ]\n}\n";
    let err = compile(text).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert_error(
        &err,
        RT,
        4,
        "policies[0]",
        &["malformed json", "expected `,` or `}`"],
    );
    let at = err.location().unwrap();
    assert_eq!(at.column, 17, "column of the unexpected token");

    let err = compile("{\n  \"version\": 1,\n  \"policies\": [\n").unwrap_err();
    assert_error(
        &err,
        RT,
        4,
        "policies",
        &["malformed json", "EOF while parsing"],
    );

    let err = compile("{ \"version\": 1, \"policies\": [] }\n}").unwrap_err();
    assert_error(&err, RT, 2, "", &["malformed json", "trailing characters"]);
}

#[test]
fn not_an_object() {
    let err = compile("[1, 2]").unwrap_err();
    assert_error(&err, RT, 1, "", &["expected one json object"]);
}

#[test]
fn unknown_field_in_a_policy() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "b", "priority": 2, "match": {}, "action": { "type": "drop" }, "comment": "x" }"#,
    ]);
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    assert_error(
        &err,
        RT,
        5,
        "policies[1].comment",
        &["unknown field `comment`", "expected one of"],
    );
}

#[test]
fn unknown_field_in_a_match() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "dst_port": 80 }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.dst_port",
        &["unknown field `dst_port`", "`dport`"],
    );
}

#[test]
fn unknown_field_in_an_action() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "a", "priority": 2, "match": {}, "action": { "type": "forward", "next_hop": "isp1", "via": "x" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        5,
        "policies[1].action.via",
        &["unknown field `via`"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "drop", "next_hop": "isp1" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].action.next_hop",
        &["unknown field `next_hop`"],
    );
}

#[test]
fn unknown_action_type() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "redirect" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].action.type",
        &["unknown variant `redirect`", "`forward`", "`lookup_table`"],
    );
}

#[test]
fn missing_field() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "a", "match": {}, "action": { "type": "pass" } }"#,
    ]);
    assert_error(&err, RT, 5, "policies[1]", &["missing field `priority`"]);
}

#[test]
fn invalid_prefix() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "src": "10.0.0.1/33" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.src",
        &["invalid prefix \"10.0.0.1/33\"", "longer than 32 bits"],
    );
    let err = runtime_error(&[
        OK,
        r#"{ "id": "a", "priority": 2, "match": { "dst": "10.0.0.1/24" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        5,
        "policies[1].match.dst",
        &["host bits set", "10.0.0.0/24"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "dst": "fd01::zz/64" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(&err, RT, 4, "policies[0].match.dst", &["not an ip address"]);
}

#[test]
fn reversed_port_range() {
    let err = runtime_error(&[
        OK,
        OK.replace("\"ok\"", "\"b\"")
            .replace(": 1,", ": 2,")
            .as_str(),
        r#"{ "id": "a", "priority": 3, "match": { "proto": "tcp", "dport": "2000-1000" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        6,
        "policies[2].match.dport",
        &["port range 2000-1000 is reversed", "1000-2000"],
    );
}

#[test]
fn out_of_range_values() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "sport": 70000 }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.sport",
        &["port 70000 is out of range"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "dscp": 64 }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.dscp",
        &["dscp 64 is out of range", "0-63"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "pass", "set_dscp": 99 } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].action.set_dscp",
        &["dscp 99 is out of range"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": -1, "match": {}, "action": { "type": "pass" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].priority",
        &["invalid value: integer `-1`"],
    );
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "proto": "tpc" }, "action": { "type": "pass" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.proto",
        &["unknown ip protocol \"tpc\""],
    );
}

#[test]
fn duplicate_id() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "pass" } }"#,
        r#"{ "id": "b", "priority": 2, "match": {}, "action": { "type": "pass" } }"#,
        r#"{ "id": "a", "priority": 3, "match": {}, "action": { "type": "pass" } }"#,
    ]);
    assert!(matches!(err, ConfigError::DuplicateId { .. }), "{err:?}");
    assert_error(
        &err,
        RT,
        6,
        "policies[2].id",
        &["duplicate policy id \"a\"", "first at line 4", "its own id"],
    );
}

#[test]
fn duplicate_priority() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 10, "match": {}, "action": { "type": "pass" } }"#,
        r#"{ "id": "b", "priority": 20, "match": {}, "action": { "type": "pass" } }"#,
        r#"{ "id": "c", "priority": 10, "match": {}, "action": { "type": "pass" } }"#,
    ]);
    assert!(
        matches!(err, ConfigError::DuplicatePriority { .. }),
        "{err:?}"
    );
    assert_error(
        &err,
        RT,
        6,
        "policies[2].priority",
        &[
            "priority 10 of policy \"c\"",
            "policy \"a\" (line 4)",
            "unique",
        ],
    );
}

#[test]
fn invalid_policy_id() {
    let err = runtime_error(&[
        r#"{ "id": "", "priority": 1, "match": {}, "action": { "type": "pass" } }"#,
    ]);
    assert_error(&err, RT, 4, "policies[0].id", &["invalid policy id \"\""]);
}

#[test]
fn unknown_next_hop() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "a", "priority": 2, "match": {}, "action": { "type": "forward", "next_hop": "isp3" } }"#,
    ]);
    assert!(matches!(err, ConfigError::UnknownNextHop { .. }), "{err:?}");
    assert_error(
        &err,
        RT,
        5,
        "policies[1].action.next_hop",
        &[
            "unknown next hop \"isp3\"",
            "configuration.json defines: isp1, isp2, tap",
        ],
    );
}

#[test]
fn unknown_table() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "lookup_table", "table": "other" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].action.table",
        &["unknown routing table \"other\"", "defines: main, alt"],
    );
}

#[test]
fn unknown_input_interface() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "a", "priority": 2, "match": { "iif": "eth9" }, "action": { "type": "drop" } }"#,
    ]);
    assert!(
        matches!(err, ConfigError::UnknownInterface { .. }),
        "{err:?}"
    );
    assert_error(
        &err,
        RT,
        5,
        "policies[1].match.iif",
        &[
            "unknown input interface \"eth9\"",
            "attaches: lan, wan1, wan2, mon",
        ],
    );
}

#[test]
fn input_interface_without_ingress() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "iif": "mon" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.iif",
        &["only at egress", "\"ingress\": true"],
    );
}

#[test]
fn mixed_families() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "src": "10.0.0.0/8", "dst": "fd00::/8" }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.dst",
        &[
            "src 10.0.0.0/8 is ipv4 but dst fd00::/8 is ipv6",
            "one policy per family",
        ],
    );
}

#[test]
fn ports_need_a_protocol_with_ports() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "proto": "icmp", "dport": 80 }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.dport",
        &["protocol icmp carries no ports"],
    );
}

#[test]
fn mark_value_outside_mask() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "mark": { "value": 257, "mask": 255 } }, "action": { "type": "drop" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].match.mark.value",
        &["0x101 has bits outside mask 0xff", "use value 0x1"],
    );
}

#[test]
fn next_hop_without_gateway_of_the_family() {
    let err = runtime_error(&[
        r#"{ "id": "a", "priority": 1, "match": { "dst": "fd00::/8" }, "action": { "type": "forward", "next_hop": "isp2" } }"#,
    ]);
    assert_error(
        &err,
        RT,
        4,
        "policies[0].action.next_hop",
        &["only ipv6 packets", "no gateway6 and no mac"],
    );
    // A fixed MAC serves both families; a family-free match is left to the data path.
    compile(&runtime(&[r#"{ "id": "a", "priority": 1, "match": { "dst": "fd00::/8" }, "action": { "type": "forward", "next_hop": "tap" } }"#])).unwrap();
    compile(&runtime(&[r#"{ "id": "a", "priority": 1, "match": {}, "action": { "type": "forward", "next_hop": "isp2" } }"#])).unwrap();
}

#[test]
fn version_mismatch() {
    let text = "{\n  \"policies\": [],\n  \"version\": 2\n}\n";
    let err = compile(text).unwrap_err();
    assert_error(
        &err,
        RT,
        3,
        "version",
        &["unsupported version 2", "reads version 1"],
    );
    let err = compile("{\n  \"version\": \"1\", \"policies\": []\n}").unwrap_err();
    assert_error(&err, RT, 2, "version", &["unsupported version \"1\""]);
    // A file of another version is reported as such, even if its fields changed.
    let err = compile("{ \"version\": 9, \"rules\": [] }").unwrap_err();
    assert!(matches!(err, ConfigError::Version { .. }), "{err:?}");
    let err = compile("{ \"policies\": [] }").unwrap_err();
    assert_error(&err, RT, 1, "", &["missing field `version`"]);
}

/// A static configuration with one element per line; `edit` replaces text in the valid one.
fn static_with(from: &str, to: &str) -> ConfigError {
    assert!(CONFIGURATION.contains(from), "test edits {from:?}");
    static_error(&CONFIGURATION.replacen(from, to, 1))
}

#[test]
fn static_unknown_field() {
    let err = static_with(r#""name": "isp2","#, r#""name": "isp2", "gw": "10.3.0.2","#);
    assert_error(
        &err,
        ST,
        11,
        "next_hops[1].gw",
        &["unknown field `gw`", "`gateway4`"],
    );
}

#[test]
fn static_next_hop_on_an_unattached_interface() {
    let err = static_with(r#""interface": "wan2""#, r#""interface": "wan3""#);
    assert!(
        matches!(err, ConfigError::NextHopInterface { .. }),
        "{err:?}"
    );
    assert_error(
        &err,
        ST,
        11,
        "next_hops[1].interface",
        &[
            "next hop \"isp2\" sends out of interface \"wan3\"",
            "add it there",
            "lan, wan1, wan2, mon",
        ],
    );
}

#[test]
fn static_duplicates() {
    let err = static_with(r#"{ "name": "wan2" }"#, r#"{ "name": "wan1" }"#);
    assert_error(
        &err,
        ST,
        6,
        "interfaces[2].name",
        &["duplicate interface \"wan1\"", "first at line 5"],
    );
    let err = static_with(r#""name": "isp2""#, r#""name": "isp1""#);
    assert_error(
        &err,
        ST,
        11,
        "next_hops[1].name",
        &["duplicate next hop \"isp1\"", "first at line 10"],
    );
    let err = static_with(r#""name": "alt""#, r#""name": "main""#);
    assert_error(
        &err,
        ST,
        16,
        "tables[1].name",
        &["duplicate table \"main\""],
    );
    let err = static_with(r#""id": 100"#, r#""id": 254"#);
    assert_error(
        &err,
        ST,
        16,
        "tables[1].id",
        &["table id 254 is already table \"main\" (line 15)"],
    );
}

#[test]
fn static_bad_values() {
    let err = static_with(
        r#"{ "name": "wan2" }"#,
        r#"{ "name": "wan2", "ingress": false }"#,
    );
    assert_error(
        &err,
        ST,
        6,
        "interfaces[2]",
        &["attached neither at ingress nor at egress"],
    );
    let err = static_with(r#""name": "lan""#, r#""name": "a-very-long-interface""#);
    assert_error(
        &err,
        ST,
        4,
        "interfaces[0].name",
        &["invalid interface name", "at most 15"],
    );
    let err = static_with(r#", "mac": "02:00:5e:00:53:01""#, "");
    assert_error(
        &err,
        ST,
        12,
        "next_hops[2]",
        &["next hop \"tap\" has no address"],
    );
    let err = static_with(r#""gateway4": "10.3.0.2""#, r#""gateway4": "fd03::2""#);
    assert_error(
        &err,
        ST,
        11,
        "next_hops[1].gateway4",
        &["invalid ipv4 gateway \"fd03::2\"", "gateway6"],
    );
    let err = static_with("02:00:5e:00:53:01", "02:00:5e:00:53");
    assert_error(&err, ST, 12, "next_hops[2].mac", &["invalid mac address"]);
    let err = static_with(r#""id": 100"#, r#""id": 0"#);
    assert_error(
        &err,
        ST,
        16,
        "tables[1].id",
        &["table id 0 is not a routing table"],
    );
    let err = static_with(r#""version": 1"#, r#""version": 0"#);
    assert_error(&err, ST, 2, "version", &["unsupported version 0"]);
}

#[test]
fn read_errors_name_the_file() {
    let err = Topology::load(std::path::Path::new("/nonexistent/configuration.json")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/configuration.json: cannot read the file"),
        "{text}"
    );
}

/// The example file, pretty-printed one field per line, with `from` replaced by `to`; and
/// the 1-based line of the `nth` (0-based) line containing `to`.
fn edited_example(from: &str, to: &str, nth: usize) -> (String, usize) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/runtimeConfiguration.json");
    let text = std::fs::read_to_string(path).expect("read the example");
    assert!(text.contains(from), "example has {from:?}");
    let text = text.replacen(from, to, 1);
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(to))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{to:?} occurs {} times", nth + 1));
    (text, line)
}

fn example_topology() -> Topology {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/configuration.json");
    Topology::load(&path).expect("example configuration")
}

#[test]
fn semantic_errors_point_at_the_field_line_in_multi_line_files() {
    use crate::route::compile::PolicySet;
    let compile = |text: String| {
        PolicySet::from_source(&example_topology(), &Source::new(RT, text)).unwrap_err()
    };

    let (text, line) = edited_example(r#""priority": 71"#, r#""priority": 70"#, 1);
    let err = compile(text);
    assert_error(
        &err,
        RT,
        line,
        "policies[7].priority",
        &["policy \"lab-b-v4-via-up2\""],
    );
    let ConfigError::DuplicatePriority { first_line, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(first_line, line - 6, "the first policy's priority line");

    let (text, line) = edited_example(
        r#""next_hop": "up1", "set_dscp""#,
        r#""next_hop": "up9", "set_dscp""#,
        0,
    );
    assert_error(
        &compile(text),
        RT,
        line,
        "policies[4].action.next_hop",
        &["unknown next hop \"up9\""],
    );

    let (text, line) = edited_example(r#""id": "icmp-to-stack""#, r#""id": "dns-via-up2""#, 1);
    assert_error(
        &compile(text),
        RT,
        line,
        "policies[5].id",
        &["duplicate policy id"],
    );

    let (text, line) = edited_example(r#""src": "10.1.0.128/25""#, r#""src": "10.1.0.129/25""#, 0);
    assert_error(
        &compile(text),
        RT,
        line,
        "policies[6].match.src",
        &["host bits set", "10.1.0.128/25"],
    );
}

/// The static configuration with a `slow_path` object on line 3 (the lines after it move
/// down by one).
#[track_caller]
fn slow_path_error(slow_path: &str) -> ConfigError {
    static_with(
        r#""version": 1,"#,
        &format!("\"version\": 1,\n  \"slow_path\": {slow_path},"),
    )
}

#[test]
fn slow_path_settings_that_cannot_work() {
    let err = slow_path_error(r#"{ "mark_mask": 0 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.mark_mask",
        &["mark mask 0", "follow_policy"],
    );
    let err = slow_path_error(r#"{ "mark_mask": 3855 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.mark_mask",
        &["0xf0f is not one run of contiguous bits", "0xfff (4095)"],
    );
    let err = slow_path_error(r#"{ "mark_mask": 2 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.mark_mask",
        &[
            "names at most 1 next hops and tables together",
            "has 3 next hops and 2 tables",
            "widen",
        ],
    );
    // 3 next hops fit in 2 bits, not with the 2 tables whose marks follow theirs.
    let err = slow_path_error(r#"{ "mark_mask": 3 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.mark_mask",
        &["names at most 3 next hops and tables together", "widen"],
    );
    let enough = CONFIGURATION.replacen(
        r#""version": 1,"#,
        r#""version": 1, "slow_path": { "mark_mask": 7 },"#,
        1,
    );
    Topology::from_source(&Source::new(ST, enough))
        .unwrap_or_else(|e| panic!("3 bits name 3 next hops and 2 tables: {e}"));
    let err = slow_path_error(r#"{ "rule_priority": 32766 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.rule_priority",
        &["rule priority 32766 is out of range", "1-32765"],
    );
    let err = slow_path_error(r#"{ "table_base": 98 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.table_base",
        &["next hop \"tap\" would get routing table 100", "\"alt\""],
    );
    let err = slow_path_error(r#"{ "table_base": 252 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.table_base",
        &["\"isp2\" would get routing table 253", "kernel's own"],
    );
    let err = slow_path_error(r#"{ "table_base": 4294967295 }"#);
    assert_error(
        &err,
        ST,
        3,
        "slow_path.table_base",
        &["leaves no room for 3 tables", "1-4294967293"],
    );
    let err = slow_path_error(r#"{ "mark_mask": 255, "rules": 1 }"#);
    assert_error(&err, ST, 3, "slow_path.rules", &["unknown field `rules`"]);
}

#[test]
fn a_default_slow_path_table_taken_by_tables_is_named_where_it_is_taken() {
    // No slow_path in the file: next hop isp2 gets the default table base + 1.
    let err = static_with(r#""id": 100"#, r#""id": 7071"#);
    assert_error(
        &err,
        ST,
        16,
        "tables[1].id",
        &[
            "next hop \"isp2\" would get routing table 7071",
            "slow_path.table_base",
        ],
    );
}

#[test]
fn a_slow_path_that_does_not_follow_the_policy_reserves_nothing() {
    let text = CONFIGURATION.replacen(
        r#""version": 1,"#,
        r#""version": 1, "slow_path": { "follow_policy": false, "mark_mask": 0 },"#,
        1,
    );
    let topology = Topology::from_source(&Source::new(ST, &text)).expect("valid");
    assert_eq!(topology.slow_mark_mask(), 0);
    let set = crate::route::compile::PolicySet::from_source(
        &topology,
        &Source::new(
            RT,
            runtime(&[
                r#"{ "id": "m", "priority": 1, "match": {}, "action": { "type": "pass", "set_mark": 4278190080 } }"#,
            ]),
        ),
    );
    assert!(set.is_ok(), "{:?}", set.err());
}

#[test]
fn set_mark_may_not_touch_the_slow_path_mask() {
    let err = runtime_error(&[
        OK,
        r#"{ "id": "f", "priority": 2, "match": {}, "action": { "type": "forward", "next_hop": "isp1", "set_mark": 16777217 } }"#,
    ]);
    assert_error(
        &err,
        RT,
        5,
        "policies[1].action.set_mark",
        &[
            "set_mark 0x1000001 sets bits of the mark mask 0xff000000",
            "configuration.json reserves for the slow path",
        ],
    );
    // Below the mask: accepted.
    compile(&runtime(&[
        r#"{ "id": "f", "priority": 2, "match": {}, "action": { "type": "pass", "set_mark": 16777215 } }"#,
    ]))
    .expect("a mark below the mask is the user's");
}
