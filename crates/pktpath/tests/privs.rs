//! Least privilege end to end: the route verbs, trace and doctor run as an unprivileged user
//! (nobody, uid 65534) holding exactly the capabilities docs/privileges.md lists, with a
//! state directory given by --state-dir or PKTPATH_STATE_DIR and a pin directory under a
//! directory root prepared for that user; another user without capabilities can neither
//! read the state nor open the pinned maps.
//!
//! Each test builds its own namespaces (RouterLab) and directories, and removes them.

mod common;

use std::{
    ffi::CString,
    net::UdpSocket,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use common::{PKTPATH, Scratch, lab_config};
use pktpath_tests::{BpffsGuard, OwnedDirGuard, RouterLab, require_root, run::SharedBinary};
use serde_json::Value;

/// The user the commands run as.
const USER: u32 = 65534;
/// Another unprivileged user (no account needed).
const OTHER: u32 = 65533;
const ATTACH: &[&str] = &["bpf", "net_admin", "perfmon"];
const APPLY: &[&str] = &["bpf"];
const TRACE: &[&str] = &["bpf", "perfmon"];
const DOCTOR: &[&str] = &["bpf", "net_admin", "perfmon"];
const NONE: &[&str] = &[];
/// `route detach` of a data path with a slow path (the default): its ip rules and routes.
const DETACH: &[&str] = &["net_admin"];
const LIMIT: Duration = Duration::from_secs(60);

/// A lab, the binary runnable by nobody, and the directories root prepares for nobody: a
/// state root (0700) and a parent for the pin directory (0711: others may pass through, so
/// the pins' own modes are what keeps them out).
struct Setup {
    lab: RouterLab,
    bin: SharedBinary,
    state: OwnedDirGuard,
    pin_parent: OwnedDirGuard,
    scratch: Scratch,
    // Last: bpffs stays mounted until the pins are gone.
    _bpffs: BpffsGuard,
}

impl Setup {
    fn new(label: &str) -> Self {
        require_root();
        let _bpffs = BpffsGuard::ensure();
        let scratch = Scratch::new(&format!("privs-{label}"));
        // The configuration files must be readable by nobody.
        std::fs::set_permissions(
            &scratch.0,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod scratch");
        Self {
            lab: RouterLab::new(),
            bin: SharedBinary::new(PKTPATH),
            state: OwnedDirGuard::new(&std::env::temp_dir(), "privs-state", USER, 0o700),
            pin_parent: OwnedDirGuard::new(Path::new("/sys/fs/bpf"), "privs", USER, 0o711),
            scratch,
            _bpffs,
        }
    }

    fn pin_dir(&self) -> PathBuf {
        self.pin_parent.path.join("dp")
    }

    fn state_dir(&self) -> PathBuf {
        pktpath_core::route::datapath::attach::Layout::new(self.pin_dir())
            .with_state_root(&self.state.path)
            .state_dir()
    }

    /// `pktpath route --pin-dir PIN [--state-dir STATE] ARGS` as `uid` with `caps`, in the
    /// router's namespace; the state directory by flag, or by PKTPATH_STATE_DIR when
    /// `by_env`.
    fn route(&self, uid: u32, caps: &[&str], by_env: bool, args: &[&str]) -> Output {
        let mut cmd = self.bin.command(uid, caps, Some(&self.lab.router.name));
        cmd.arg("route").arg("--pin-dir").arg(self.pin_dir());
        if by_env {
            cmd.env("PKTPATH_STATE_DIR", &self.state.path);
        } else {
            cmd.arg("--state-dir").arg(&self.state.path);
        }
        cmd.args(args);
        pktpath_tests::run::output_within(&mut cmd, LIMIT)
    }

    #[track_caller]
    fn route_ok(&self, caps: &[&str], by_env: bool, args: &[&str]) -> String {
        let out = self.route(USER, caps, by_env, args);
        assert!(
            out.status.success(),
            "route {args:?} as uid {USER} with {caps:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    #[track_caller]
    fn route_json(&self, caps: &[&str], by_env: bool, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.route_ok(caps, by_env, &a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// Attaches the lab's configuration as nobody with the attach capabilities.
    fn attach(&self) -> Value {
        let config = self
            .scratch
            .write("configuration.json", &lab_config(&self.lab, &[]));
        self.route_json(ATTACH, false, &["attach", "--config", &config])
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Detach as root if a test failed before it did (root may open nobody's pins).
        if self.pin_dir().exists() {
            let mut cmd = std::process::Command::new("nsenter");
            cmd.arg(format!("--net=/run/netns/{}", self.lab.router.name))
                .arg(PKTPATH)
                .arg("route")
                .arg("--pin-dir")
                .arg(self.pin_dir())
                .arg("--state-dir")
                .arg(&self.state.path)
                .arg("detach");
            if let Ok(out) = cmd.output()
                && !out.status.success()
            {
                eprintln!(
                    "cleanup: detach failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Exit 3 and one line on stderr naming `cap` and the command.
#[track_caller]
fn refused_for(out: &Output, cap: &str, command: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("pktpath: missing capability {cap}: {command} ")),
        "{stderr}"
    );
}

fn send_udp(lab: &RouterLab, port: u16, n: usize) {
    lab.client
        .handle()
        .run(|| {
            let sock = UdpSocket::bind("10.1.0.2:0").expect("bind in the client");
            for _ in 0..n {
                sock.send_to(&[0x5a; 32], (RouterLab::UP1_4, port))
                    .expect("send a datagram");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .expect("enter client namespace");
}

#[test]
fn privs_route_verbs_and_trace_run_as_nobody_with_exactly_the_documented_capabilities() {
    let s = Setup::new("verbs");
    let to_client = s.lab.client_link.a.clone();

    // One capability short: refused up front, naming what the command needs.
    let config = s
        .scratch
        .write("configuration.json", &lab_config(&s.lab, &[]));
    let out = s.route(
        USER,
        &["bpf", "net_admin"],
        false,
        &["attach", "--config", &config],
    );
    refused_for(&out, "CAP_PERFMON", "route attach");
    assert!(!s.pin_dir().exists(), "a refused attach creates nothing");

    // attach: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON; the state directory by --state-dir.
    let report = s.attach();
    assert_eq!(report["attached"].as_array().unwrap().len(), 3, "{report}");
    // Auto mode judged TCX without CAP_SYS_ADMIN (doctor's query of lo's TCX hook).
    assert_eq!(report["mode"], "tcx", "{report}");
    let state_dir = s.state_dir();
    let meta = std::fs::metadata(&state_dir).expect("state directory exists");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (USER, 0o700));
    for entry in std::fs::read_dir(&state_dir).unwrap().flatten() {
        let m = entry.metadata().unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (USER, 0o600), "{entry:?}");
    }
    for entry in std::fs::read_dir(s.pin_dir()).unwrap().flatten() {
        let m = entry.metadata().unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (USER, 0o600), "{entry:?}");
    }

    // apply: CAP_BPF only (and PKTPATH_STATE_DIR instead of the flag); without it, refused.
    let runtime = s.scratch.write(
        "runtime.json",
        r#"{ "version": 1, "policies": [
  { "id": "drop-9999", "priority": 5, "match": { "proto": "udp", "dport": 9999 }, "action": { "type": "drop" } }
] }"#,
    );
    refused_for(
        &s.route(USER, NONE, true, &["apply", &runtime]),
        "CAP_BPF",
        "route apply",
    );
    let applied = s.route_json(APPLY, true, &["apply", &runtime]);
    assert_eq!(applied["applied"]["policies"], 1, "{applied}");
    // A second apply replaces (and releases) a generation: still CAP_BPF only.
    let again = s.route_json(APPLY, true, &["apply", &runtime]);
    assert_eq!(again["applied"]["policies"], 1, "{again}");

    // trace: CAP_BPF, CAP_PERFMON, following the data path's decisions (policy ids come
    // from the state directory given).
    let mut trace = s.bin.command(USER, TRACE, None);
    trace
        .args(["trace", "--netns", &s.lab.router.name, "--route-pin-dir"])
        .arg(s.pin_dir())
        .arg("--state-dir")
        .arg(&s.state.path)
        .args(["--duration", "6", "udp and dst port 9999"]);
    let tracer = std::thread::scope(|scope| {
        let t = scope.spawn(|| pktpath_tests::run::output_within(&mut trace, LIMIT));
        // Loading takes about a second; send well after it, and for a while.
        std::thread::sleep(Duration::from_secs(3));
        send_udp(&s.lab, 9999, 5);
        t.join().expect("trace thread")
    });
    let stdout = String::from_utf8_lossy(&tracer.stdout);
    let stderr = String::from_utf8_lossy(&tracer.stderr);
    assert!(tracer.status.success(), "trace failed: {stderr}");
    assert!(
        stdout.contains("policy drop-9999 (priority 5)"),
        "the data path's decisions with their policy id:\n{stdout}\n{stderr}"
    );

    // show, stats, get: no capability at all.
    let shown = s.route_json(NONE, false, &["show"]);
    assert_eq!(shown["policies"][0]["id"], "drop-9999", "{shown}");
    let stats = s.route_json(NONE, true, &["stats"]);
    let counted = common::policy(&stats, "drop-9999")["packets"]
        .as_u64()
        .unwrap();
    assert!(counted >= 5, "the traced datagrams were dropped: {stats}");
    let got = s.route_json(
        NONE,
        false,
        &[
            "get", "iif", &to_client, "from", "10.1.0.2", "to", "10.2.0.2", "proto", "udp",
            "dport", "9999",
        ],
    );
    assert_eq!(got["policy"], "drop-9999", "{got}");

    // Without the state directory it was attached with: one line saying which to give.
    let mut cmd = s.bin.command(USER, NONE, Some(&s.lab.router.name));
    cmd.arg("route")
        .arg("--pin-dir")
        .arg(s.pin_dir())
        .arg("show");
    let out = pktpath_tests::run::output_within(&mut cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--state-dir"), "{stderr}");

    // detach without CAP_NET_ADMIN: refused before anything goes (the slow path's rules
    // need it), in one line naming the capability.
    let out = s.route(USER, NONE, true, &["detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("missing capability CAP_NET_ADMIN") && stderr.contains("slow path"),
        "{stderr}"
    );
    assert!(
        s.pin_dir().exists() && state_dir.exists(),
        "nothing removed"
    );
    let rules = pktpath_tests::run::must("ip", &["-n", &s.lab.router.name, "rule", "show"]);
    assert!(rules.contains("fwmark"), "slow path kept: {rules}");
    // detach (TCX) with CAP_NET_ADMIN: everything goes.
    let detached = s.route_json(DETACH, true, &["detach"]);
    assert_eq!(detached["mode"], "tcx", "{detached}");
    assert!(!s.pin_dir().exists(), "pins removed");
    assert!(!state_dir.exists(), "state removed");
    assert!(
        common::tc_hooks_in_use(&s.lab, &to_client).is_empty(),
        "nothing left on {to_client}"
    );
    let rules = pktpath_tests::run::must("ip", &["-n", &s.lab.router.name, "rule", "show"]);
    assert!(!rules.contains("fwmark"), "no slow-path rule left: {rules}");
}

/// The outcome of `BPF_OBJ_GET`: the errno on failure.
type Opened = Result<(), i32>;

/// `BPF_OBJ_GET` of `path` (read-write, or read-only).
fn obj_get(path: &Path, read_only: bool) -> Opened {
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: if read_only { BPF_F_RDONLY } else { 0 },
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the attribute and the path it points at outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            size_of::<ObjAttr>() as libc::c_long,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: the kernel just gave us this descriptor.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Runs `f` on a thread that has become `uid` (and gid, no groups) through the raw system
/// calls, which change only the calling thread; leaving root drops every capability.
fn as_thread_of<R: Send>(uid: u32, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: raw set*id calls affecting this thread only; the thread ends after f.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            f()
        })
        .join()
        .expect("thread")
    })
}

#[test]
fn privs_another_user_can_neither_read_the_state_nor_open_the_pinned_maps() {
    let s = Setup::new("others");
    s.attach();
    let state_file = s.state_dir().join("configuration.json");
    let maps = ["ROUTE_STATE", "POLICY_STATS", "ROUTE_NEXTHOPS", "prog"];

    let (read_dir, read_file, pins) = as_thread_of(OTHER, || {
        let read_dir = std::fs::read_dir(s.state_dir()).map(|_| ());
        let read_file = std::fs::read(&state_file).map(|_| ());
        let pins: Vec<(String, Opened, Opened)> = maps
            .iter()
            .map(|m| {
                let p = s.pin_dir().join(m);
                (m.to_string(), obj_get(&p, false), obj_get(&p, true))
            })
            .collect();
        (read_dir, read_file, pins)
    });
    let denied = |r: &std::io::Result<()>| {
        r.as_ref()
            .err()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    };
    assert!(denied(&read_dir), "state directory listed: {read_dir:?}");
    assert!(denied(&read_file), "state file read: {read_file:?}");
    for (m, rw, ro) in &pins {
        for r in [rw, ro] {
            assert!(
                matches!(r, Err(libc::EACCES | libc::EPERM)),
                "uid {OTHER} opened {m}: {r:?}"
            );
        }
    }

    // The owner, without any capability, opens the same pins: the refusal above is the
    // files' modes, not a thread that cannot open anything.
    let owner = as_thread_of(USER, || {
        maps.iter()
            .map(|m| obj_get(&s.pin_dir().join(m), false))
            .collect::<Vec<_>>()
    });
    assert!(owner.iter().all(Result::is_ok), "owner: {owner:?}");

    // The CLI as the other user says whose the data path is, in one line.
    let out = s.route(OTHER, NONE, false, &["stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("belongs to uid {USER}")),
        "{stderr}"
    );

    let detached = s.route_json(DETACH, false, &["detach"]);
    assert_eq!(detached["mode"], "tcx", "{detached}");
}

#[test]
fn privs_doctor_with_the_documented_capabilities_says_ready() {
    let s = Setup::new("doctor");
    let doctor = |caps: &[&str], dirs: bool, json: bool| {
        let mut cmd = s.bin.command(USER, caps, None);
        cmd.arg("doctor");
        if json {
            cmd.arg("--json");
        }
        if dirs {
            cmd.arg("--state-dir")
                .arg(&s.state.path)
                .arg("--pin-dir")
                .arg(s.pin_dir());
        }
        pktpath_tests::run::output_within(&mut cmd, LIMIT)
    };

    let out = doctor(DOCTOR, true, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ready: trace and route can run here"),
        "{stdout}"
    );

    let out = doctor(DOCTOR, true, true);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let check = |id: &str| -> Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}"))
            .clone()
    };
    // Judged without a scratch namespace, from what this user can check.
    for id in ["tc_netlink", "tcx", "xdp", "state_dir", "pin_dir"] {
        assert_eq!(check(id)["available"], true, "{}", check(id));
    }
    // Informational: not among the reasons for readiness.
    for id in ["kprobe", "fentry"] {
        assert_eq!(check(id)["needed"], false, "{}", check(id));
    }
    for c in report["commands"].as_array().unwrap() {
        assert_eq!(c["missing"], serde_json::json!([]), "{c}");
    }

    // Without a state directory this user may write: not ready, and doctor says why.
    let out = doctor(DOCTOR, false, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("state_dir"), "{stderr}");
    // One capability short: refused, naming it.
    refused_for(&doctor(TRACE, true, false), "CAP_NET_ADMIN", "doctor");
}

#[test]
fn privs_systemd_example_unit_verifies_and_grants_what_route_needs() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/systemd/pktpath-route.service"),
    )
    .expect("read the example unit");
    // Exactly route attach's set (the largest of the verbs it runs).
    let caps = pktpath_core::access::Command::RouteAttach
        .needs()
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        unit.contains(&format!("\nAmbientCapabilities={caps}\n")),
        "{unit}"
    );
    assert!(unit.contains("\nRuntimeDirectory=pktpath\n"), "{unit}");
    let scratch = Scratch::new("privs-unit");
    let path = scratch.write(
        "pktpath-route.service",
        &unit.replace("/usr/local/bin/pktpath", PKTPATH),
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", &path])
        .output()
        .expect("run systemd-analyze (package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Leaves the data path pinned at `pin_dir` as an apply killed after its flip leaves it:
/// the generation it replaced still holds its tables (the first chunk of the active
/// generation is put into the inactive generation's first entry too). As root, which may
/// open the chunk by id.
fn interrupt_an_apply(pin_dir: &Path) {
    use aya::maps::{Array, ArrayOfMaps, Map, MapData};
    use pktpath_common::route::{Chunk, MAP_ARENA, MAX_CHUNKS};
    let data = MapData::from_pin(pin_dir.join(MAP_ARENA)).expect("open the pinned arena");
    let map = Map::from_map_data(data).expect("arena map");
    let mut arena: ArrayOfMaps<MapData, Array<MapData, Chunk>> =
        ArrayOfMaps::try_from(map).expect("an array of maps");
    let (from, to) = match arena.get(&0, 0) {
        Ok(_) => (0, MAX_CHUNKS),
        Err(_) => (MAX_CHUNKS, 0),
    };
    let chunk = arena
        .get(&from, 0)
        .expect("the active generation's first chunk");
    arena
        .set(to, &chunk, 0)
        .expect("fill the inactive generation");
    assert!(arena.get(&to, 0).is_ok(), "inactive generation in use");
}

#[test]
fn privs_an_interrupted_apply_is_finished_with_cap_bpf_only() {
    let s = Setup::new("recover");
    s.attach();
    let runtime = s.scratch.write(
        "runtime.json",
        r#"{ "version": 1, "policies": [
  { "id": "drop-9999", "priority": 5, "match": { "proto": "udp", "dport": 9999 }, "action": { "type": "drop" } }
] }"#,
    );
    s.route_json(APPLY, false, &["apply", &runtime]);
    interrupt_an_apply(&s.pin_dir());
    // The next writer finds the leftover generation and releases it: reading the arena's
    // entries must not need CAP_SYS_ADMIN (opening a chunk by id would).
    let out = s.route(USER, APPLY, false, &["apply", &runtime]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "apply after an interrupted one: {stderr}"
    );
    assert!(
        stderr.contains("finished an apply that was interrupted"),
        "recovery says what it did: {stderr}"
    );
    let stats = s.route_json(NONE, false, &["stats"]);
    assert_eq!(stats["policies"][0]["id"], "drop-9999", "{stats}");
    s.route_json(DETACH, false, &["detach"]);
}
