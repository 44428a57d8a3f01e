//! The forwarding lab the traffic benchmarks share, and the processes they drive.
//!
//! ```text
//! client --(10.1.0.0/24)-- router --(10.2.0.0/24)-- sink
//! trafgen                                          netdev ingress: drop everything
//! ```
//! The client sends 64-byte UDP frames (60 bytes + FCS) from 10.1.0.2 to 10.9.0.1 with
//! trafgen, addressed to the router's MAC. The router's main table has no route to
//! 10.9.0.0/24, so a frame reaches the sink only through the configuration under test
//! (an `ip rule` to table 100, nftables `fwd`, tc `mirred`, or pktpath). The sink counts
//! what it receives (its interface's rx counter) and drops it at its interface's ingress
//! hook (an nftables netdev chain with policy drop: this kernel has no tc `gact`, so tc
//! cannot drop), the cheapest place. IPv6 is off in all three namespaces and the router has a permanent neighbour
//! entry for the sink, so no other packet crosses the links: the sink's counter is the
//! number of frames delivered.
//!
//! Every kernel change is owned by a guard of the test harness (namespaces, links,
//! addresses, sysctls, qdiscs); processes are [`Proc`]s, killed on drop and on the death of
//! the benchmark (PR_SET_PDEATHSIG).

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pktpath_core::sys::netns::NetNs;
use pktpath_tests::{AddrGuard, NetnsGuard, SysctlGuard, VethGuard, run};

/// Where the client sends: not routed by the router's main table.
pub const DST: &str = "10.9.0.1";
pub const CLIENT: &str = "10.1.0.2";
pub const SINK: &str = "10.2.0.2";
pub const ROUTE_TABLE: u32 = 100;
/// The CPU trafgen runs on, and with it the whole forwarding path (veth hands each frame
/// to the router and the sink in the sender's context). trafgen `-P 1` pins its one
/// worker to CPU 0 itself.
pub const GEN_CPU: usize = 0;
/// The CPU the tracer, bpftrace and `pktpath route apply` loops are pinned to.
pub const TOOL_CPU: usize = 1;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag the benchmarks check between steps, so they unwind
/// through their guards instead of dying with kernel state left behind.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Fails once SIGINT or SIGTERM arrived.
pub fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking every 50 ms to honour an interruption.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A command prepared to die with the benchmark and pinned to `cpu`.
pub fn command(program: &str, cpu: Option<usize>) -> Command {
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => Command::new(program),
    };
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// A child process killed (SIGKILL) and reaped on drop unless it already exited. A
/// process that forks workers (trafgen) is started in its own process group, and the
/// whole group is signalled.
pub struct Proc {
    pub child: Child,
    what: String,
    group: bool,
}

impl Proc {
    pub fn spawn(mut cmd: Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| {
            format!("cannot start {what} (is it installed? bench/run.sh installs it)")
        })?;
        Ok(Self {
            child,
            what: what.to_owned(),
            group: false,
        })
    }

    /// Like [`Proc::spawn`], in a new process group that is signalled as a whole.
    pub fn spawn_group(mut cmd: Command, what: &str) -> anyhow::Result<Self> {
        cmd.process_group(0);
        let mut p = Self::spawn(cmd, what)?;
        p.group = true;
        Ok(p)
    }

    /// Sends `sig` (SIGINT to let a tool print its totals).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, or the process group it leads.
        unsafe { libc::kill(if self.group { -pid } else { pid }, sig) };
    }

    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit; Ok(true) if it did.
    pub fn wait_for(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            check_stop()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGINT, then SIGKILL if it is still there after `grace`.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.signal(libc::SIGINT);
            if !self.wait_for(grace)? {
                eprintln!("{} did not stop on SIGINT; killing it", self.what);
                self.kill();
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        match self.child.try_wait() {
            Ok(None) => self.kill(),
            // The leader is gone; workers of its group may not be.
            Ok(Some(_)) if self.group => self.signal(libc::SIGKILL),
            _ => {}
        }
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("pktpath-bench-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(Self(p))
    }

    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    }

    /// The path of a file written before.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An nftables table of family netdev in a namespace; deleted on drop.
pub struct NftNetdev {
    ns: String,
    table: String,
}

impl NftNetdev {
    /// Creates `table netdev pktpath_bench_<pid>_<label> { BODY }` in namespace `ns`.
    pub fn new(ns: &str, label: &str, body: &str) -> anyhow::Result<Self> {
        let table = format!("pktpath_bench_{}_{label}", std::process::id());
        let (path, mut f) = tempfile_in_tmp("nft")?;
        writeln!(f, "table netdev {table} {{\n{body}\n}}")?;
        drop(f);
        let r = run::in_ns(ns, "nft", &["-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        r.map_err(anyhow::Error::msg)?;
        Ok(Self {
            ns: ns.to_owned(),
            table,
        })
    }
}

impl Drop for NftNetdev {
    fn drop(&mut self) {
        if let Err(e) = run::in_ns(&self.ns, "nft", &["delete", "table", "netdev", &self.table]) {
            eprintln!("cleanup of nft table {}: {e}", self.table);
        }
    }
}

/// Runs `ip -n NS -batch FILE` with the given lines.
pub fn ip_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    batch("ip", ns, lines)
}

/// Runs `tc -n NS -batch FILE` with the given lines.
pub fn tc_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    batch("tc", ns, lines)
}

fn batch(tool: &str, ns: &str, lines: &[String]) -> anyhow::Result<()> {
    let mut f = tempfile_in_tmp(tool)?;
    for l in lines {
        writeln!(f.1, "{l}")?;
    }
    f.1.flush()?;
    let path = f.0.display().to_string();
    let r = run::cmd(tool, &["-n", ns, "-force", "-batch", &path]);
    let _ = std::fs::remove_file(&f.0);
    r.map(drop).map_err(anyhow::Error::msg)
}

fn tempfile_in_tmp(label: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("pktpath-bench-{}-{label}-{n}", std::process::id()));
    let f = std::fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
    Ok((p, f))
}

fn mac(ns: &str, dev: &str) -> anyhow::Result<String> {
    let out = run::cmd("ip", &["-n", ns, "-j", "link", "show", "dev", dev])
        .map_err(anyhow::Error::msg)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .context("no MAC address in `ip -j link` output")
}

fn disable_ipv6(ns: &NetnsGuard) -> anyhow::Result<()> {
    let h = ns.handle();
    for key in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
        h.run(|| std::fs::write(&path, "1"))
            .context("enter namespace")?
            .with_context(|| format!("write {path}"))?;
    }
    Ok(())
}

/// The client – router – sink lab. Fields drop in declaration order: the sink's qdisc,
/// addresses, sysctls and links first, namespaces last.
pub struct Lab {
    _sink_drop: NftNetdev,
    _addrs: Vec<AddrGuard>,
    _sysctls: Vec<SysctlGuard>,
    pub client_link: VethGuard,
    pub sink_link: VethGuard,
    pub client: NetnsGuard,
    pub router: NetnsGuard,
    pub sink: NetnsGuard,
    /// MACs: router's client-side, router's sink-side, sink's, client's.
    pub router_in_mac: String,
    pub router_out_mac: String,
    pub sink_mac: String,
    pub client_mac: String,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        let client = NetnsGuard::new("bclient");
        let router = NetnsGuard::new("brouter");
        let sink = NetnsGuard::new("bsink");
        for ns in [&client, &router, &sink] {
            disable_ipv6(ns)?;
        }
        // VethGuard ends: `a` on the router, `b` on the far side.
        let client_link = VethGuard::new(&router.name, &client.name);
        let sink_link = VethGuard::new(&router.name, &sink.name);
        let r = router.name.as_str();
        let addrs = vec![
            AddrGuard::new(r, &client_link.a, "10.1.0.1/24"),
            AddrGuard::new(&client.name, &client_link.b, "10.1.0.2/24"),
            AddrGuard::new(r, &sink_link.a, "10.2.0.1/24"),
            AddrGuard::new(&sink.name, &sink_link.b, "10.2.0.2/24"),
        ];
        let sysctls = vec![SysctlGuard::new(r, "net.ipv4.ip_forward", "1")];
        let sink_drop = NftNetdev::new(
            &sink.name,
            "sink",
            &format!(
                "chain ingress {{ type filter hook ingress device \"{}\" priority 0; policy drop; }}",
                sink_link.b
            ),
        )?;
        let sink_mac = mac(&sink.name, &sink_link.b)?;
        // Inside the router namespace: gone with it.
        run::cmd(
            "ip",
            &[
                "-n",
                r,
                "neigh",
                "replace",
                SINK,
                "lladdr",
                &sink_mac,
                "dev",
                &sink_link.a,
                "nud",
                "permanent",
            ],
        )
        .map_err(anyhow::Error::msg)?;
        run::cmd(
            "ip",
            &[
                "-n",
                r,
                "route",
                "add",
                "10.9.0.0/24",
                "via",
                SINK,
                "table",
                &ROUTE_TABLE.to_string(),
            ],
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Self {
            router_in_mac: mac(r, &client_link.a)?,
            router_out_mac: mac(r, &sink_link.a)?,
            client_mac: mac(&client.name, &client_link.b)?,
            sink_mac,
            _sink_drop: sink_drop,
            _addrs: addrs,
            _sysctls: sysctls,
            client_link,
            sink_link,
            client,
            router,
            sink,
        })
    }

    /// The router's interface towards the client (where configurations hook ingress).
    pub fn r_in(&self) -> &str {
        &self.client_link.a
    }

    /// The router's interface towards the sink.
    pub fn r_out(&self) -> &str {
        &self.sink_link.a
    }

    /// Frames the sink's interface received so far.
    pub fn delivered(&self) -> anyhow::Result<u64> {
        rx_packets(&self.sink.handle(), &self.sink_link.b)
    }

    /// The trafgen packet: 64-byte UDP (60 bytes + FCS) client -> DST, to the router's MAC.
    pub fn trafgen_config(&self) -> String {
        format!(
            "{{ eth(da={}, sa={}), ipv4(sa={CLIENT}, da={DST}, ttl=64), udp(sp=4000, dp=5000), fill(0x41, 18) }}\n",
            self.router_in_mac, self.client_mac
        )
    }

    /// Starts trafgen in the client namespace, its one worker on `GEN_CPU` at high
    /// priority: `count` frames at `pps` (None: as fast as it can). The count bounds the
    /// run even if the benchmark is killed without cleaning up (trafgen's worker is a
    /// fork that PR_SET_PDEATHSIG does not reach).
    pub fn trafgen(&self, cfg: &Path, count: u64, pps: Option<u64>) -> anyhow::Result<Proc> {
        let mut c = command("ip", None);
        c.args(["netns", "exec", &self.client.name])
            .args(["trafgen", "-o", &self.client_link.b, "-i"])
            .arg(cfg)
            // One worker (trafgen pins worker i to CPU i), high priority; leave the
            // socket memory sysctls and IRQ affinity alone; no CPU statistics.
            .args(["-P", "1", "-H", "--no-sock-mem", "-Q", "--no-cpu-stats"])
            .args(["-n", &count.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pps) = pps {
            c.args(["-b", &format!("{pps}pps")]);
        }
        Proc::spawn_group(c, "trafgen")
    }

    /// Delivered frames per second with trafgen at full speed: `warmup`, then the sink's
    /// counter over `window`.
    pub fn measure_pps(
        &self,
        cfg: &Path,
        warmup: Duration,
        window: Duration,
    ) -> anyhow::Result<f64> {
        self.measure_pps_observed(cfg, warmup, window, |_| Ok(None))
    }

    /// [`Lab::measure_pps`], with `observe(window)` started when the window opens (a
    /// profiler that runs for the window) and waited for when it closes.
    pub fn measure_pps_observed(
        &self,
        cfg: &Path,
        warmup: Duration,
        window: Duration,
        observe: impl FnOnce(Duration) -> anyhow::Result<Option<Proc>>,
    ) -> anyhow::Result<f64> {
        // Bounded: 3 Mpps for the whole time at most.
        let bound = ((warmup + window).as_secs_f64() * 3e6) as u64 + 1_000_000;
        let mut tgen = self.trafgen(cfg, bound, None)?;
        sleep(warmup)?;
        if tgen.child.try_wait()?.is_some() {
            bail!("trafgen exited early ({:?})", tgen.child.try_wait()?);
        }
        let (c0, t0) = (self.delivered()?, Instant::now());
        let observer = observe(window)?;
        sleep(window)?;
        let (c1, t1) = (self.delivered()?, Instant::now());
        if let Some(mut o) = observer
            && !o.wait_for(Duration::from_secs(30))?
        {
            bail!("{} did not finish with the window", o.what);
        }
        tgen.stop(Duration::from_secs(2))?;
        Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    }

    /// Sends `count` frames at `pps` and waits for trafgen to finish (plus a moment for
    /// the last frames); returns the frames the sink received meanwhile.
    pub fn send_paced(&self, cfg: &Path, count: u64, pps: u64) -> anyhow::Result<u64> {
        Ok(self.send_paced_timed(cfg, count, pps)?.0)
    }

    /// Like [`Lab::send_paced`], also returning how long trafgen ran.
    pub fn send_paced_timed(
        &self,
        cfg: &Path,
        count: u64,
        pps: u64,
    ) -> anyhow::Result<(u64, Duration)> {
        let before = self.delivered()?;
        let t = Instant::now();
        let mut tgen = self.trafgen(cfg, count, Some(pps))?;
        let limit = Duration::from_secs_f64(count as f64 / pps as f64 * 3.0 + 5.0);
        if !tgen.wait_for(limit)? {
            bail!("trafgen did not finish {count} frames at {pps} pps within {limit:?}");
        }
        let took = t.elapsed();
        sleep(Duration::from_millis(200))?;
        Ok((self.delivered()? - before, took))
    }
}

/// rx_packets of `dev` in namespace `ns` (from /proc/net/dev as that namespace sees it).
pub fn rx_packets(ns: &NetNs, dev: &str) -> anyhow::Result<u64> {
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .context("enter namespace")?
        .context("read /proc/net/dev")?;
    for line in text.lines() {
        if let Some((name, rest)) = line.split_once(':')
            && name.trim() == dev
        {
            return rest
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .context("rx_packets in /proc/net/dev");
        }
    }
    bail!("{dev} not in /proc/net/dev")
}

/// Median of a non-empty list.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}
