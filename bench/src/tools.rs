//! The tracing tools the tracer benchmarks run: `pktpath trace` and bpftrace, started on
//! `TOOL_CPU` with their output to a file, watched until ready, stopped with SIGINT, and
//! their event and loss counts read back.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc::{Receiver, channel},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    lab::{Proc, TOOL_CPU, check_stop, command},
    routecli::pktpath_bin,
};

/// The hooks both tools attach to: the eight of pktpath trace's default set that see
/// packets (the default adds two route lookup hooks).
pub const HOOKS: [&str; 8] = [
    "net:napi_gro_receive_entry",
    "net:netif_rx",
    "net:netif_receive_skb",
    "net:net_dev_queue",
    "net:net_dev_start_xmit",
    "net:net_dev_xmit",
    "skb:kfree_skb",
    "skb:consume_skb",
];

/// Which tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pktpath,
    Bpftrace,
}

/// A running tool.
pub struct Tool {
    pub kind: Kind,
    proc: Proc,
    lines: Receiver<String>,
    reader: Option<JoinHandle<Vec<String>>>,
    out: PathBuf,
    pub started: Instant,
}

/// bpftrace: one line per event (time, probe, skb address), on the same tracepoints.
fn bpftrace_script() -> String {
    let probes: Vec<String> = HOOKS.iter().map(|h| format!("tracepoint:{h}")).collect();
    format!(
        "{} {{ printf(\"%llu %s %p\\n\", nsecs, probe, args->skbaddr); }}",
        probes.join(",")
    )
}

impl Tool {
    /// `pktpath trace --output json ARGS` on `TOOL_CPU`, stdout to `out`.
    pub fn pktpath(args: &[&str], out: &Path) -> anyhow::Result<Self> {
        Self::pktpath_on(args, out, Some(TOOL_CPU))
    }

    /// Like [`Tool::pktpath`], on `cpu` (None: any CPU).
    pub fn pktpath_on(args: &[&str], out: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        let mut c = command(&pktpath_bin()?.display().to_string(), cpu);
        c.args(["trace", "--output", "json"]).args(args);
        Self::start(Kind::Pktpath, c, out)
    }

    /// bpftrace on the same hooks on `TOOL_CPU`, stdout to `out`.
    pub fn bpftrace(out: &Path) -> anyhow::Result<Self> {
        Self::bpftrace_on(out, Some(TOOL_CPU))
    }

    /// Like [`Tool::bpftrace`], on `cpu` (None: any CPU).
    pub fn bpftrace_on(out: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        let mut c = command("bpftrace", cpu);
        c.args(["-e", &bpftrace_script()]);
        Self::start(Kind::Bpftrace, c, out)
    }

    fn start(kind: Kind, mut c: std::process::Command, out: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
        c.stdout(file).stderr(Stdio::piped()).stdin(Stdio::null());
        let started = Instant::now();
        let mut proc = Proc::spawn(
            c,
            if kind == Kind::Pktpath {
                "pktpath trace"
            } else {
                "bpftrace"
            },
        )?;
        let stderr = proc.child.stderr.take().context("tool stderr")?;
        let (tx, lines) = channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all
        });
        Ok(Self {
            kind,
            proc,
            lines,
            reader: Some(reader),
            out: out.to_owned(),
            started,
        })
    }

    /// Waits until the tool is attached: pktpath's banner on stderr ("pktpath: tracing
    /// ..."), bpftrace's "Attaching N probes..." on stdout (printed as it starts attaching,
    /// so a short pause follows). Returns the time from spawn.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            check_stop()?;
            match self.kind {
                Kind::Pktpath => {
                    if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(2)) {
                        if l.starts_with("pktpath: tracing") {
                            return Ok(self.started.elapsed());
                        }
                        eprintln!("  pktpath trace: {l}");
                    }
                }
                Kind::Bpftrace => {
                    let text = std::fs::read_to_string(&self.out).unwrap_or_default();
                    if text.contains("Attaching") {
                        let t = self.started.elapsed();
                        std::thread::sleep(Duration::from_millis(300));
                        return Ok(t);
                    }
                    if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(5))
                        && l.contains("ERROR")
                        && !l.contains("RLIMIT_MEMLOCK")
                    {
                        eprintln!("  bpftrace: {l}");
                    }
                }
            }
            if let Some(status) = self.proc.child.try_wait()? {
                bail!("{:?} exited before it was ready ({status})", self.kind);
            }
        }
        bail!("{:?} not ready within {timeout:?}", self.kind)
    }

    /// CPU time (user and system) the tool has used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.proc.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("read /proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 14th and 15th of the line, the 12th and 13th after it.
        let rest = stat.rsplit_once(')').context("/proc/pid/stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok(ticks as f64 / hz as f64)
    }

    /// The process's resident memory (`VmRSS`), in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let pid = self.proc.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS in /proc/pid/status")?;
        Ok(kib / 1024.0)
    }

    /// SIGINT, wait for exit; returns (events written, events lost) as the tool reports.
    pub fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        self.proc.stop(Duration::from_secs(20))?;
        let stderr = self
            .reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default();
        match self.kind {
            Kind::Pktpath => {
                // "pktpath: N events, M lost"
                for l in stderr.iter().rev() {
                    if let Some(rest) = l.strip_prefix("pktpath: ")
                        && let Some((ev, lost)) = rest.split_once(" events, ")
                        && let Some(lost) = lost.strip_suffix(" lost")
                    {
                        return Ok((ev.parse()?, lost.parse()?));
                    }
                }
                bail!("no event count in pktpath trace's output: {stderr:?}")
            }
            Kind::Bpftrace => {
                let f = std::fs::File::open(&self.out)?;
                let (mut events, mut lost) = (0u64, 0u64);
                let all = BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .chain(stderr.iter().cloned());
                for l in all {
                    if let Some(n) = l
                        .strip_prefix("Lost ")
                        .and_then(|r| r.strip_suffix(" events"))
                    {
                        lost += n.trim().parse::<u64>().unwrap_or(0);
                    } else if l.contains(" tracepoint:") {
                        events += 1;
                    }
                }
                Ok((events, lost))
            }
        }
    }
}
