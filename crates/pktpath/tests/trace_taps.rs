//! The data path's decision taps live as long as the traces that hold them: several
//! `pktpath trace --route-pin-dir` runs at once each see every decision; a trace killed
//! with SIGKILL gives its slot back (the kernel drops its socket from the sockmap) and the
//! data path stops writing for it at the next packet (its byte in ROUTE_TAP clears), while
//! a trace still running keeps seeing every decision. Beyond the slots a tap is refused
//! with an error saying what to do, and a slot given back is taken again.
//!
//! The lab: client – router – up1, the data path attached at the router's three ingresses
//! with no policies (every packet passes to the kernel, which forwards it), pings from the
//! client to up1. Each echo request gets one decision at the router's client-side
//! interface.

mod common;

use common::stderr_lines;

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{Array, ArrayOfMaps, Map, MapData};
use common::{Attachment, Scratch};
use pktpath_common::route::{TAP_MAP, TAP_RINGS_MAP, TAP_SLOTS, TapLive};
use pktpath_core::trace::tap::Tap;
use pktpath_tests::{BpffsGuard, RouterLab, require_root, run, trace::EventSchema};
use serde_json::Value;

/// The lab with the data path attached. Fields drop in order: detach first.
struct Lab {
    dp: Attachment,
    _scratch: Scratch,
    lab: RouterLab,
    _bpffs: BpffsGuard,
}

impl Lab {
    fn new(label: &str) -> Self {
        require_root();
        let bpffs = BpffsGuard::ensure();
        let lab = RouterLab::new();
        let scratch = Scratch::new(&format!("trace-taps-{label}"));
        let config = scratch.write("configuration.json", &common::lab_config(&lab, &[]));
        let dp = Attachment::new(&lab, label);
        dp.json(&["attach", "--config", &config]);
        // Neighbours resolved before any trace starts: every later ping is one request.
        assert_eq!(run::ping(&lab.client.name, RouterLab::UP1_4, 1), 1);
        Self {
            dp,
            _scratch: scratch,
            lab,
            _bpffs: bpffs,
        }
    }

    /// Sends `n` pings from the client to up1, all answered.
    fn pings(&self, n: u32) {
        assert_eq!(run::ping(&self.lab.client.name, RouterLab::UP1_4, n), n);
    }

    /// The slots' bytes of ROUTE_TAP.
    fn live(&self) -> TapLive {
        let data = MapData::from_pin(self.dp.pin.path.join(TAP_MAP)).expect("open ROUTE_TAP");
        let map: Array<MapData, TapLive> =
            Array::try_from(Map::Array(data)).expect("ROUTE_TAP is an array of TapLive");
        map.get(&0, 0).expect("read ROUTE_TAP")
    }

    /// Whether slot `slot` of ROUTE_TAP_RINGS holds a ring.
    fn has_ring(&self, slot: u32) -> bool {
        let data =
            MapData::from_pin(self.dp.pin.path.join(TAP_RINGS_MAP)).expect("open ROUTE_TAP_RINGS");
        let rings: ArrayOfMaps<MapData, MapData> = ArrayOfMaps::try_from(Map::ArrayOfMaps(data))
            .expect("ROUTE_TAP_RINGS is an array of maps");
        rings.get(&slot, 0).is_ok()
    }

    /// Pings until the slots' bytes hold `want` slots set (bounded); returns the bytes
    /// then and how many pings it took.
    fn live_settles_to(&self, want: usize) -> (TapLive, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sent = 0;
        loop {
            self.pings(1);
            sent += 1;
            let live = self.live();
            if set_slots(&live).len() == want || Instant::now() > deadline {
                return (live, sent);
            }
        }
    }

    /// Starts `n` runs of `pktpath trace icmp` in the router at once, each following the
    /// data path, and waits until each says it is tracing.
    fn traces(&self, n: usize) -> Vec<Trace> {
        let pin = self.dp.pin.path.display().to_string();
        let mut started: Vec<Trace> = (0..n)
            .map(|_| {
                let mut child = Command::new(common::PKTPATH)
                    .args(["trace", "icmp", "--netns", &self.lab.router.name])
                    .args(["--output", "json", "--route-pin-dir", &pin])
                    .args(["--duration", "60"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run pktpath trace");
                let stderr = stderr_lines(child.stderr.take().expect("stderr"));
                let mut out = child.stdout.take().expect("stdout");
                let stdout = std::thread::spawn(move || {
                    let mut text = String::new();
                    out.read_to_string(&mut text).map(|_| text)
                });
                Trace {
                    child,
                    stderr,
                    stdout: Some(stdout),
                }
            })
            .collect();
        for t in &mut started {
            let banner = t
                .stderr
                .recv_timeout(Duration::from_secs(30))
                .expect("pktpath trace says something on stderr");
            assert!(banner.starts_with("pktpath: tracing"), "{banner}");
        }
        started
    }

    /// The decisions at the router's client-side interface (one per echo request) in a
    /// trace's output.
    fn requests(&self, out: &[Value]) -> usize {
        out.iter()
            .filter(|e| e["hook"] == "tc:pktpath" && e["ifname"] == self.lab.client_link.a.as_str())
            .count()
    }
}

/// A running `pktpath trace`, killed if the test fails before it ends.
struct Trace {
    child: Child,
    /// Its stderr lines (read all along: a closed stderr would fail its writes).
    stderr: mpsc::Receiver<String>,
    /// Its stdout, read all along (a full pipe would stop it), whole once it has exited.
    stdout: Option<std::thread::JoinHandle<std::io::Result<String>>>,
}

impl Trace {
    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits (bounded) for the trace to exit.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for pktpath trace") {
                return status;
            }
            assert!(Instant::now() < deadline, "pktpath trace did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the trace with SIGKILL: nothing of its own cleanup runs.
    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{status}"
        );
    }

    /// Stops the trace with SIGINT, after a pause for its last poll round; returns its
    /// events.
    fn stop(mut self) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(600));
        self.signal(libc::SIGINT);
        let status = self.wait();
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "trace: {status}: {stderr:#?}");
        let stdout = self
            .stdout
            .take()
            .expect("stdout")
            .join()
            .expect("the stdout reader")
            .expect("read the trace's output");
        EventSchema::committed().check_lines(&stdout);
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slots whose byte is set.
fn set_slots(live: &TapLive) -> Vec<usize> {
    (0..TAP_SLOTS as usize)
        .filter(|&i| live.live[i] != 0)
        .collect()
}

#[test]
fn tap_two_traces_each_see_every_decision() {
    let l = Lab::new("taps-two");
    let [a, b]: [Trace; 2] = l.traces(2).try_into().ok().expect("two traces");
    assert_eq!(
        set_slots(&l.live()).len(),
        2,
        "two slots taken: {:?}",
        l.live()
    );
    l.pings(5);
    let (ea, eb) = (a.stop(), b.stop());
    assert_eq!(l.requests(&ea), 5, "first trace: {ea:#?}");
    assert_eq!(l.requests(&eb), 5, "second trace: {eb:#?}");
    // Stopped cleanly: each cleared its byte and took its ring out.
    assert_eq!(l.live(), TapLive::default());
    assert!((0..TAP_SLOTS).all(|s| !l.has_ring(s)), "rings left behind");
}

#[test]
fn tap_killed_trace_stops_the_decisions_for_it() {
    let l = Lab::new("taps-kill");
    let [mut t]: [Trace; 1] = l.traces(1).try_into().ok().expect("one trace");
    l.pings(2);
    let slots = set_slots(&l.live());
    assert_eq!(slots.len(), 1, "one slot taken: {slots:?}");
    t.kill9();
    // The next packets find the slot's socket gone: the data path clears the byte and
    // goes back to its one read per packet.
    let (live, _) = l.live_settles_to(0);
    assert_eq!(
        live,
        TapLive::default(),
        "the killed trace's byte stays set"
    );
    // The kernel released the registration: the next trace gets the same slot (its ring
    // replaces the one the killed trace left), and lets it go when dropped.
    let pin = &l.dp.pin.path;
    let tap = Tap::open(pin).expect("open the tap after the kill");
    assert_eq!(tap.slot() as usize, slots[0]);
    assert!(l.has_ring(tap.slot()));
    drop(tap);
    assert_eq!(l.live(), TapLive::default());
}

#[test]
fn tap_trace_alongside_a_killed_one_still_sees_every_decision() {
    let l = Lab::new("taps-survive");
    let [mut a, b]: [Trace; 2] = l.traces(2).try_into().ok().expect("two traces");
    let both = set_slots(&l.live());
    assert_eq!(both.len(), 2, "two slots taken: {both:?}");
    l.pings(3);
    a.kill9();
    // Started together, either may hold either slot: the kernel says which died.
    let (live, sent) = l.live_settles_to(1);
    let left = set_slots(&live);
    assert_eq!(
        left.len(),
        1,
        "only the live trace's byte is left: {live:?}"
    );
    assert!(both.contains(&left[0]), "{left:?} of {both:?}");
    l.pings(3);
    let eb = b.stop();
    // 3 before the kill, 3 after it, and those that cleared the killed trace's byte.
    assert_eq!(l.requests(&eb), 6 + sent, "the surviving trace: {eb:#?}");
    assert_eq!(l.live(), TapLive::default());
}

#[test]
fn tap_beyond_the_slots_is_refused_and_a_freed_slot_is_taken_again() {
    let l = Lab::new("taps-full");
    let pin = &l.dp.pin.path;
    let mut taps: Vec<Tap> = (0..TAP_SLOTS)
        .map(|i| Tap::open(pin).unwrap_or_else(|e| panic!("tap {i}: {e}")))
        .collect();
    let mut slots: Vec<u32> = taps.iter().map(Tap::slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..TAP_SLOTS).collect::<Vec<_>>());
    let err = Tap::open(pin).expect_err("a tap beyond the slots");
    let text = err.to_string();
    assert!(
        text.contains("tap slots") && text.contains("stop one of them"),
        "{text}"
    );
    let freed = taps.remove(3).slot();
    assert_eq!(
        Tap::open(pin).expect("a tap in the freed slot").slot(),
        freed
    );
}
