//! `pktpath route` driven the way a user drives it: the CLI binary, run in the router's
//! namespace with `nsenter --net=` (so its pins land in the host's bpffs), pinned under a
//! directory unique to this run, detached on drop.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pktpath_tests::PinGuard;

use crate::lab::{DST, Lab, Scratch};

/// The pktpath binary built beside this one (bench/run.sh builds both in release mode).
pub fn pktpath_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate pktpath-bench")?;
    let bin = exe.with_file_name("pktpath");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p pktpath` (bench/run.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// How a timed `pktpath route apply` ended.
#[derive(Debug)]
pub enum Timed {
    Took(Duration),
    /// Still running after the limit.
    Killed,
    /// It failed; what it said on stderr.
    Failed(String),
}

/// The data path attached in the router namespace; detached (pins and state removed) on drop.
pub struct Route {
    ns: String,
    bin: PathBuf,
    pin: PinGuard,
}

impl Route {
    /// `pktpath route attach --config CONFIG` in namespace `ns`.
    pub fn attach(ns: &str, config: &Path) -> anyhow::Result<Self> {
        Self::attach_with(ns, config, &[])
    }

    /// [`Route::attach`] with more arguments (`--hook xdp`).
    pub fn attach_with(ns: &str, config: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let r = Self {
            ns: ns.to_owned(),
            bin: pktpath_bin()?,
            pin: PinGuard::new("bench-route"),
        };
        let config = config.display().to_string();
        let mut args = vec!["attach", "--config", &config];
        args.extend_from_slice(extra);
        r.ok(&args)?;
        Ok(r)
    }

    fn run(&self, args: &[&str], cpu: Option<usize>) -> anyhow::Result<Output> {
        let pin = self.pin.path.display().to_string();
        crate::lab::command("nsenter", cpu)
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(&self.bin)
            .args(["route", "--pin-dir", &pin])
            .args(args)
            .output()
            .context("run nsenter (util-linux)")
    }

    /// Runs `pktpath route ARGS`; its stdout, or an error with its stderr.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ok_on(args, None)
    }

    /// Like [`Route::ok`], pinned to `cpu`.
    pub fn ok_on(&self, args: &[&str], cpu: Option<usize>) -> anyhow::Result<String> {
        let out = self.run(args, cpu)?;
        if !out.status.success() {
            bail!(
                "pktpath route {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pktpath route apply FILE`, timed (wall time of the whole command).
    pub fn apply(&self, file: &Path) -> anyhow::Result<Duration> {
        self.apply_on(file, None)
    }

    /// `pktpath route apply FILE` pinned to `cpu`, timed.
    pub fn apply_on(&self, file: &Path, cpu: Option<usize>) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.ok_on(&["apply", &file.display().to_string()], cpu)?;
        Ok(t.elapsed())
    }

    /// `pktpath route apply FILE`, timed; killed after `limit`.
    pub fn apply_within(&self, file: &Path, limit: Duration) -> anyhow::Result<Timed> {
        let pin = self.pin.path.display().to_string();
        let mut c = crate::lab::command("nsenter", None);
        c.arg(format!("--net=/run/netns/{}", self.ns))
            .arg(&self.bin)
            .args(["route", "--pin-dir", &pin, "apply"])
            .arg(file)
            .stdout(std::process::Stdio::null())
            // A few lines at most: the pipe does not fill before the command ends.
            .stderr(std::process::Stdio::piped());
        let t = Instant::now();
        let mut p = crate::lab::Proc::spawn(c, "pktpath route apply")?;
        if !p.wait_for(limit)? {
            return Ok(Timed::Killed); // killed on drop
        }
        let elapsed = t.elapsed();
        let status = p.child.wait()?;
        let mut said = String::new();
        if let Some(mut err) = p.child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut said)?;
        }
        if !status.success() {
            return Ok(Timed::Failed(said.trim().to_owned()));
        }
        eprint!("{said}");
        Ok(Timed::Took(elapsed))
    }

    /// Packets the data path forwarded on `iface` (from `route stats --json`).
    pub fn forwarded(&self, iface: &str) -> anyhow::Result<u64> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["stats", "--json"])?)?;
        v["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == iface))
            .and_then(|i| i["forwarded_packets"].as_u64())
            .with_context(|| format!("no forwarded count for {iface} in route stats: {v}"))
    }

    fn state_dir(&self) -> PathBuf {
        pktpath_core::route::datapath::attach::Layout::new(&self.pin.path).state_dir()
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if self.pin.path.exists()
            && let Err(e) = self.ok(&["detach"])
        {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir_all(self.state_dir());
        // Only if empty: another user's state may live there.
        let _ = std::fs::remove_dir(pktpath_core::route::datapath::attach::STATE_ROOT);
    }
}

/// The static configuration: the router's two interfaces, the sink as next hop.
pub fn config(lab: &Lab) -> String {
    format!(
        r#"{{ "version": 1,
  "interfaces": [ {{ "name": "{}" }}, {{ "name": "{}" }} ],
  "next_hops": [ {{ "name": "sink", "interface": "{}", "gateway4": "{}" }} ] }}
"#,
        lab.r_in(),
        lab.r_out(),
        lab.r_out(),
        crate::lab::SINK
    )
}

/// A policy set: `ahead` policies that do not match the benchmark flow (each a distinct
/// source /32 under `base`.0.0.0/8's 200+ range, UDP, forward to the sink), at higher
/// priority than the one that does (destination 10.9.0.0/24 from the client side).
/// `variant` changes the non-matching sources (same ids), so two variants differ in the
/// match of every policy but the matching one. (New ids for all of them would need a
/// counter slot each while the running set holds its own: 2 x 100k > the data path's
/// 131,072 slots, and `apply` refuses.)
pub fn policies(lab: &Lab, ahead: usize, variant: u32) -> String {
    let mut s = String::from("{ \"version\": 1, \"policies\": [\n");
    let base: u32 = (10 << 24) | ((200 + 8 * variant) << 16);
    for i in 0..ahead {
        let a = std::net::Ipv4Addr::from(base + i as u32);
        let _ = writeln!(
            s,
            r#"  {{ "id": "other-{i}", "priority": {}, "match": {{ "src": "{a}/32", "proto": "udp" }}, "action": {{ "type": "forward", "next_hop": "sink" }} }},"#,
            i + 1
        );
    }
    let _ = writeln!(
        s,
        r#"  {{ "id": "to-sink", "priority": {}, "match": {{ "iif": "{}", "dst": "{}/24" }}, "action": {{ "type": "forward", "next_hop": "sink" }} }}"#,
        ahead + 1,
        lab.r_in(),
        DST.rsplit_once('.').map_or(DST, |(n, _)| n).to_owned() + ".0"
    );
    s.push_str("] }\n");
    s
}

/// Writes the configuration and a policy set into `dir`, attaches and applies.
pub fn setup(lab: &Lab, dir: &Scratch, ahead: usize) -> anyhow::Result<Route> {
    setup_with(lab, dir, ahead, &[])
}

/// [`setup`], attaching with more arguments (`--hook xdp`).
pub fn setup_with(lab: &Lab, dir: &Scratch, ahead: usize, extra: &[&str]) -> anyhow::Result<Route> {
    let config = dir.write("configuration.json", &config(lab))?;
    let set = dir.write(&format!("policies-{ahead}.json"), &policies(lab, ahead, 0))?;
    let route = Route::attach_with(&lab.router.name, &config, extra)?;
    route.apply(&set)?;
    Ok(route)
}
