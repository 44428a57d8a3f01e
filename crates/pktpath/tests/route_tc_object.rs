//! The original workflow, as its guide says: the data path object attached by hand with
//! iproute2's tc (`tc qdisc add ... clsact`, `tc filter add ... bpf direct-action obj
//! FILE`), its maps filled by `pktpath route apply --pin-dir /sys/fs/bpf/tc/globals
//! --config ...`, in the client – router – up1/up2 lab with the router's forwarding off
//! (what crosses it was carried by the data path).
//!
//! tc pins the maps in the host's bpffs under /sys/fs/bpf/tc/globals (tc runs through
//! `nsenter --net`, see `common`): one test only, so that no other holds those names.

mod common;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{DataPathOnlyLab, PKTPATH, SVC4, Scratch};
use pktpath_core::route::datapath::{attach::Layout, object::TC_PIN_DIR};
use pktpath_tests::{PinGuard, RouterLab};
use serde_json::Value;

const STREAM_PORT: u16 = 7150;

/// The maps the object pins (all of them).
const MAPS: [&str; 17] = [
    "IFACE_STATS",
    "IFACE_STATS_HIGH",
    "POLICY_STATS",
    "ROUTE_ARENA",
    "ROUTE_DECISION",
    "ROUTE_NEXTHOPS",
    "ROUTE_SCRATCH",
    "ROUTE_STATE",
    "ROUTE_TAP",
    "ROUTE_TAP_PROG",
    "ROUTE_TAP_RINGS",
    "ROUTE_TAP_SCRATCH",
    "ROUTE_TAP_SOCKS",
    "ROUTE_TREES",
    "ROUTE_XDP_EGRESS",
    "ROUTE_XDP_TAP_PROG",
    "ROUTE_XDP_TAP_SCRATCH",
];

/// Removes on drop the pins tc made under /sys/fs/bpf/tc/globals and pktpath's state for
/// them, if the test did not get to it, and the directories tc made for them (`tc`,
/// `tc/globals` and the `ip` and `xdp` links to `tc`) if there were none before.
struct TcPins {
    made_dirs: bool,
}

impl TcPins {
    fn new() -> Self {
        for m in MAPS {
            let p = Path::new(TC_PIN_DIR).join(m);
            assert!(
                !p.exists(),
                "{} exists already: another data path attached by hand runs on this machine",
                p.display()
            );
        }
        Self {
            made_dirs: !Path::new(TC_DIR).exists(),
        }
    }
}

impl Drop for TcPins {
    fn drop(&mut self) {
        for m in MAPS {
            let _ = std::fs::remove_file(Path::new(TC_PIN_DIR).join(m));
        }
        let _ = std::fs::remove_dir_all(Layout::new(TC_PIN_DIR).state_dir());
        let _ = std::fs::remove_file(Layout::new(TC_PIN_DIR).lock_file());
        let _ = std::fs::remove_dir("/run/pktpath");
        if self.made_dirs {
            for link in ["/sys/fs/bpf/ip", "/sys/fs/bpf/xdp"] {
                if std::fs::read_link(link).is_ok_and(|t| t.starts_with(TC_DIR)) {
                    let _ = std::fs::remove_file(link);
                }
            }
            let _ = std::fs::remove_dir(TC_PIN_DIR);
            let _ = std::fs::remove_dir(TC_DIR);
        }
    }
}

/// What iproute2 makes under bpffs on its first object load.
const TC_DIR: &str = "/sys/fs/bpf/tc";

/// Runs `program args` in the router's network namespace (only: the host's bpffs).
fn in_router(lab: &DataPathOnlyLab, program: &str, args: &[&str]) -> Output {
    let net = format!("--net=/run/netns/{}", lab.router.name);
    Command::new("nsenter")
        .arg(&net)
        .arg(program)
        .args(args)
        .output()
        .expect("run nsenter (util-linux)")
}

/// `route --pin-dir DIR apply --config CONFIG RUNTIME` in the router.
fn apply_with_config(lab: &DataPathOnlyLab, dir: &str, config: &str, runtime: &str) -> Output {
    in_router(
        lab,
        PKTPATH,
        &[
            "route",
            "--pin-dir",
            dir,
            "apply",
            "--config",
            config,
            runtime,
        ],
    )
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn tc(lab: &DataPathOnlyLab, args: &[&str]) -> Output {
    in_router(lab, "tc", args)
}

fn route(lab: &DataPathOnlyLab, args: &[&str]) -> Output {
    let mut full = vec!["route", "--pin-dir", TC_PIN_DIR];
    full.extend_from_slice(args);
    in_router(lab, PKTPATH, &full)
}

#[track_caller]
fn route_json(lab: &DataPathOnlyLab, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.push("--json");
    let text = ok(route(lab, &full), &format!("pktpath route {args:?}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// The guide step by step: object, clsact, filters, apply, traffic; the mismatches it
/// invites (a filter without direct-action, a configured hook without a filter); then
/// `tc filter del`, `tc qdisc del` and the pins removed.
#[test]
fn the_object_attached_with_tc_by_hand_is_filled_by_apply_and_steers_traffic() {
    let lab = DataPathOnlyLab::new();
    let pins = TcPins::new();
    let scratch = Scratch::new("route-tc-object");
    let (client, up1, up2) = (
        lab.client_link.a.clone(),
        lab.up1_link.a.clone(),
        lab.up2_link.a.clone(),
    );
    // Egress on up2 configured, but no filter will be there: apply warns.
    let config = scratch.write("configuration.json", &common::lab_config(&lab, &[&up2]));
    let runtime = scratch.write(
        "runtimeConfiguration.json",
        &format!(
            r#"{{ "version": 1, "policies": [
  {{ "id": "stream", "priority": 10, "match": {{ "proto": "udp", "dport": {STREAM_PORT} }}, "action": {{ "type": "forward", "next_hop": "up1" }} }}
] }}"#
        ),
    );
    let object: PathBuf = scratch.0.join("pktpath.o");
    let object = object.to_str().unwrap();
    let out = Command::new(PKTPATH)
        .args(["route", "object", "-o", object])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "route object: {said}");
    assert!(said.contains("direct-action obj"), "{said}");

    // First on the client interface without direct-action: apply refuses.
    ok(
        tc(&lab, &["qdisc", "add", "dev", &client, "clsact"]),
        "tc qdisc add",
    );
    ok(
        tc(
            &lab,
            &[
                "filter", "add", "dev", &client, "ingress", "bpf", "obj", object,
            ],
        ),
        "tc filter add (no direct-action)",
    );
    for m in MAPS {
        assert!(Path::new(TC_PIN_DIR).join(m).exists(), "tc pinned {m}");
    }
    let out = route(&lab, &["apply", "--config", &config, &runtime]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprint!("apply, no direct-action: {err}");
    assert!(
        !out.status.success(),
        "apply accepted a filter without direct-action"
    );
    assert!(err.contains("without direct-action"), "{err}");
    ok(
        tc(&lab, &["filter", "del", "dev", &client, "ingress"]),
        "tc filter del",
    );

    // Pins of no data path, or of another object: refused before anything is written.
    let elsewhere = PinGuard::new("tcobj");
    std::fs::create_dir(&elsewhere.path).unwrap();
    let dir = elsewhere.path.to_str().unwrap();
    let out = apply_with_config(&lab, dir, &config, &runtime);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is pinned at"),
        "{err}"
    );
    for m in MAPS {
        // ROUTE_NEXTHOPS is another map (other value size and entries) under its name.
        let from = if m == "ROUTE_NEXTHOPS" {
            "ROUTE_TREES"
        } else {
            m
        };
        aya::maps::MapData::from_pin(Path::new(TC_PIN_DIR).join(from))
            .unwrap()
            .pin(elsewhere.path.join(m))
            .unwrap();
    }
    let out = apply_with_config(&lab, dir, &config, &runtime);
    let err = String::from_utf8_lossy(&out.stderr);
    eprint!("apply, other maps: {err}");
    assert!(
        !out.status.success()
            && err.contains("map ROUTE_NEXTHOPS")
            && err.contains("another pktpath's object"),
        "{err}"
    );
    assert!(!Layout::new(dir).state_dir().exists());
    // The writer lock the applies took.
    let _ = std::fs::remove_file(Layout::new(dir).lock_file());
    std::fs::remove_dir_all(&elsewhere.path).unwrap();

    // The guide: every interface, ingress, direct-action (up2's egress left out); up2 with
    // the program for kernels without may_goto, which works on the same maps.
    for dev in [&client, &up1, &up2] {
        let sec = if dev == &up2 {
            "classifier/old"
        } else {
            "classifier"
        };
        if dev != &client {
            ok(
                tc(&lab, &["qdisc", "add", "dev", dev, "clsact"]),
                "tc qdisc add",
            );
        }
        ok(
            tc(
                &lab,
                &[
                    "filter",
                    "add",
                    "dev",
                    dev,
                    "ingress",
                    "bpf",
                    "direct-action",
                    "obj",
                    object,
                    "sec",
                    sec,
                ],
            ),
            "tc filter add",
        );
    }
    let shown = ok(
        tc(&lab, &["filter", "show", "dev", &up2, "ingress"]),
        "tc filter show",
    );
    assert!(shown.contains("pktpath_tc_old"), "{shown}");
    let shown = ok(
        tc(&lab, &["filter", "show", "dev", &client, "ingress"]),
        "tc filter show",
    );
    assert!(
        shown.contains("direct-action") && shown.contains("pktpath_tc"),
        "{shown}"
    );
    // libbpf loads the same instructions as aya: the verifier's count is as for `route
    // attach` (BENCHMARKS.md).
    let id: u32 = shown
        .split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no program id in {shown}"));
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("the filter's program is loaded");
    eprintln!(
        "pktpath_tc loaded by tc: {:?} instructions verified",
        info.verified_instruction_count()
    );

    // Before the first apply pktpath does not know the data path.
    let flow = [
        "get",
        "iif",
        &client,
        "from",
        RouterLab::CLIENT4,
        "to",
        SVC4,
    ];
    let port = STREAM_PORT.to_string();
    let get = |lab: &DataPathOnlyLab| {
        route_json(
            lab,
            &[&flow[..], &["proto", "udp", "dport", &port]].concat(),
        )
    };
    let out = route(&lab, &flow);
    assert!(
        !out.status.success(),
        "get before the data path was taken in"
    );
    let out = route(&lab, &["apply", "--config", &config, &runtime]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprint!("apply:\n{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "apply: {err}");
    assert!(err.contains("took in the data path"), "{err}");
    assert!(
        err.contains(&format!(
            "warning: no filter of the data path object on {up2}/egress"
        )),
        "{err}"
    );
    assert!(!err.contains(&format!("{client}/ingress")), "{err}");
    assert!(!err.contains(&format!("{up2}/ingress")), "{err}");
    // A trace following the data path hears its decisions (the tap apply loaded).
    let mut trace = Command::new(PKTPATH)
        .args([
            "trace",
            "udp",
            "--netns",
            &lab.router.name,
            "--output",
            "json",
        ])
        .args(["--route-pin-dir", TC_PIN_DIR, "--duration", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pktpath trace");
    let stderr = common::stderr_lines(trace.stderr.take().unwrap());
    let banner = stderr
        .recv_timeout(Duration::from_secs(30))
        .expect("pktpath trace says something on stderr");
    assert!(banner.starts_with("pktpath: tracing"), "{banner}");
    let stream = common::Stream::start(&lab, STREAM_PORT);
    stream.wait_for(
        200,
        "datagrams steered to up1 by the hand-attached data path",
    );
    let (sent, missing) = stream.stop();
    assert!(missing.is_empty(), "{} of {sent} missing", missing.len());
    let mut out = String::new();
    trace
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(trace.wait().unwrap().success(), "trace failed");
    let decisions = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e| e["hook"] == "tc:pktpath" && e["ifname"] == client.as_str())
        .count();
    eprintln!("{decisions} decisions traced");
    assert!(
        decisions >= 100,
        "{decisions} decisions traced: {out:.2000}"
    );

    // A second apply needs no --config; show, stats and get work on the adopted pins.
    ok(route(&lab, &["apply", &runtime]), "second apply");
    let show = route_json(&lab, &["show"]);
    assert_eq!(show["policies"][0]["id"], "stream", "{show}");
    eprint!("{}", ok(route(&lab, &["stats"]), "stats"));
    let stats = route_json(&lab, &["stats"]);
    let policy = common::policy(&stats, "stream");
    assert!(
        policy["packets"].as_u64().unwrap() >= 200,
        "policy counter: {stats}"
    );
    assert!(
        common::iface_counter(&stats, &client, "forwarded_packets") >= 200,
        "interface counter: {stats}"
    );
    let get = get(&lab);
    assert_eq!(get["policy"], "stream", "{get}");
    assert_eq!(get["next_hop"], "up1", "{get}");

    // Taking it in again with another configuration is refused.
    let other = scratch.write("other.json", &common::lab_config(&lab, &[]));
    let out = route(&lab, &["apply", "--config", &other, &runtime]);
    assert!(!out.status.success(), "a second configuration was accepted");

    // pktpath forgets it (the filters and pins are the operator's) ...
    let detached = route_json(&lab, &["detach"]);
    assert_eq!(detached["mode"], "tc", "{detached}");
    assert_eq!(detached["pins"], 0, "{detached}");
    assert!(Path::new(TC_PIN_DIR).join("ROUTE_STATE").exists());
    assert!(!Layout::new(TC_PIN_DIR).state_dir().exists());
    // ... and the operator removes them, as the guide does.
    for dev in [&client, &up1, &up2] {
        ok(
            tc(&lab, &["filter", "del", "dev", dev, "ingress"]),
            "tc filter del",
        );
        ok(
            tc(&lab, &["qdisc", "del", "dev", dev, "clsact"]),
            "tc qdisc del",
        );
    }
    for m in MAPS {
        std::fs::remove_file(Path::new(TC_PIN_DIR).join(m)).expect("remove pin");
    }
    drop(pins);
    for m in MAPS {
        assert!(!Path::new(TC_PIN_DIR).join(m).exists());
    }
}
