//! The lab `pktpath demo` runs in: four network namespaces (client, router, two upstreams)
//! joined by veth pairs, built with `ip` (iproute2), every change owned by an RAII guard;
//! the traffic it sends ([`traffic`]) and the demo's run on it ([`demo`]).
//!
//! ```text
//! client 10.80.1.2 (+ 10.80.1.66) --eth0 -- to-client-- router --to-up1 -- eth0-- up1 10.80.2.2
//!        default via 10.80.1.1                10.80.1.1   |      10.80.2.1         10.80.9.1 (lo)
//!                                                          \-to-up2 -- eth0-- up2 10.80.3.2
//!                                                            10.80.3.1        10.80.9.1 (lo)
//! ```
//!
//! Both upstreams own the service address 10.80.9.1, so which one receives a packet shows
//! where the router sent it. The router forwards IPv4 (so packets the fast path passes to
//! the kernel are forwarded too; the kernel's route for 10.80.9.0/24 goes to up1).
//!
//! Namespaces are named `pktpath-demo-<id>-<role>`, with the id the owning process's pid.
//! Deleting a namespace deletes the links, addresses, routes and sysctls in it, so a
//! [`Lab`] owns one guard per namespace. [`sweep`] removes labs whose process is gone
//! (kept with `--keep`, or left by a process that was killed).

pub mod demo;
pub mod traffic;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::sys::{
    SysError,
    netns::{NETNS_RUN_DIR, NetNs},
};

/// Prefix of every namespace (and pin directory) a lab creates.
pub const PREFIX: &str = "pktpath-demo-";

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 2);
/// The client's second address, which the demo policy set drops.
pub const QUARANTINED: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 66);
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 1);
pub const UP1: Ipv4Addr = Ipv4Addr::new(10, 80, 2, 2);
pub const UP2: Ipv4Addr = Ipv4Addr::new(10, 80, 3, 2);
/// The service address both upstreams own.
pub const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 80, 9, 1);
/// Every address of the lab is in this network (the demo's trace filter).
pub const LAB_NET: &str = "10.80.0.0/16";

/// Building or removing the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run `ip` (iproute2): {0}; install iproute2")]
    NoTool(#[source] std::io::Error),
    #[error("`{cmd}` failed: {stderr}")]
    Tool { cmd: String, stderr: String },
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// Runs `ip ARGS`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(LabError::NoTool)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Tool {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A named network namespace (`ip netns add`), deleted on drop unless kept.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub handle: NetNs,
    keep: bool,
}

impl Netns {
    fn add(name: String) -> Result<Self, LabError> {
        ip(&["netns", "add", &name])?;
        let handle = match NetNs::from_name(&name) {
            Ok(h) => h,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e.into());
            }
        };
        let ns = Self {
            name,
            handle,
            keep: false,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NAME ARGS`.
    fn ip(&self, args: &[&str]) -> Result<(), LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets a sysctl (`net.ipv4.ip_forward`) in this namespace; it dies with it.
    fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.handle
            .run(|| std::fs::write(&path, value))?
            .map_err(|e| SysError::io(format!("write {}", path.display()), e))?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = ip(&["netns", "del", &self.name])
        {
            log::warn!("removing network namespace {}: {e}", self.name);
        }
    }
}

/// The four namespaces, configured. Dropping it deletes them (and so every link in them).
#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub client: Netns,
    pub router: Netns,
    pub up1: Netns,
    pub up2: Netns,
}

impl Lab {
    /// The lab of process `pid`'s demo: `pktpath-demo-<pid>-...`.
    pub fn build(pid: u32) -> Result<Self, LabError> {
        let id = format!("{PREFIX}{pid}");
        let client = Netns::add(format!("{id}-client"))?;
        let router = Netns::add(format!("{id}-router"))?;
        let up1 = Netns::add(format!("{id}-up1"))?;
        let up2 = Netns::add(format!("{id}-up2"))?;
        let lab = Self {
            id,
            client,
            router,
            up1,
            up2,
        };
        lab.configure()?;
        Ok(lab)
    }

    fn configure(&self) -> Result<(), LabError> {
        let r = &self.router;
        for (router_if, far, router_addr, far_addr) in [
            ("to-client", &self.client, "10.80.1.1/24", "10.80.1.2/24"),
            ("to-up1", &self.up1, "10.80.2.1/24", "10.80.2.2/24"),
            ("to-up2", &self.up2, "10.80.3.1/24", "10.80.3.2/24"),
        ] {
            r.ip(&[
                "link", "add", router_if, "type", "veth", "peer", "name", "eth0", "netns",
                &far.name,
            ])?;
            r.ip(&["addr", "add", router_addr, "dev", router_if])?;
            far.ip(&["addr", "add", far_addr, "dev", "eth0"])?;
            r.ip(&["link", "set", router_if, "up"])?;
            far.ip(&["link", "set", "eth0", "up"])?;
        }
        self.client
            .ip(&["addr", "add", "10.80.1.66/24", "dev", "eth0"])?;
        self.client
            .ip(&["route", "add", "default", "via", "10.80.1.1"])?;
        for (up, via) in [(&self.up1, "10.80.2.1"), (&self.up2, "10.80.3.1")] {
            up.ip(&["addr", "add", "10.80.9.1/32", "dev", "lo"])?;
            up.ip(&["route", "add", "10.80.1.0/24", "via", via])?;
        }
        // The kernel's own route to the service: through up1.
        r.ip(&["route", "add", "10.80.9.0/24", "via", "10.80.2.2"])?;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        // Unprivileged-style ICMP echo sockets for root in the client (the demo's ping).
        self.client.sysctl("net.ipv4.ping_group_range", "0 0")?;
        Ok(())
    }

    /// Leaves the namespaces in place when the lab is dropped.
    pub fn keep(&mut self) {
        for ns in [
            &mut self.client,
            &mut self.router,
            &mut self.up1,
            &mut self.up2,
        ] {
            ns.keep = true;
        }
    }

    /// The bpffs directory the demo pins the router's data path under.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new("/sys/fs/bpf").join(&self.id)
    }

    /// Namespace inode to role (`client`, `router`, ...).
    pub fn roles(&self) -> Vec<(u64, &'static str)> {
        vec![
            (self.client.handle.inode(), "client"),
            (self.router.handle.inode(), "router"),
            (self.up1.handle.inode(), "up1"),
            (self.up2.handle.inode(), "up2"),
        ]
    }
}

/// A lab found on the system: its id and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub pid: u32,
    pub namespaces: Vec<String>,
}

/// Labs whose owning process is no longer running (kept ones, or left by a killed demo).
pub fn stale() -> Vec<Found> {
    let entries = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    stale_among(&entries(NETNS_RUN_DIR), &entries("/sys/fs/bpf"), |pid| {
        Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// The labs among namespace names and bpffs entries whose pid is not `alive`: grouped by
/// lab, namespaces sorted. A pin directory alone (namespaces already gone) is a lab too.
fn stale_among(netns: &[String], pins: &[String], alive: impl Fn(u32) -> bool) -> Vec<Found> {
    let pid_of =
        |name: &str| -> Option<u32> { name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok() };
    let mut found: Vec<Found> = Vec::new();
    let mut add = |name: &str, is_netns: bool| {
        let Some(pid) = pid_of(name) else { return };
        let id = format!("{PREFIX}{pid}");
        // A pin directory is exactly the id; a namespace is the id and a role.
        if alive(pid) || (!is_netns && name != id) || (is_netns && name == id) {
            return;
        }
        let i = match found.iter().position(|f| f.id == id) {
            Some(i) => i,
            None => {
                found.push(Found {
                    id,
                    pid,
                    namespaces: Vec::new(),
                });
                found.len() - 1
            }
        };
        if is_netns {
            found[i].namespaces.push(name.to_owned());
        }
    };
    for name in netns {
        add(name, true);
    }
    for name in pins {
        add(name, false);
    }
    for f in &mut found {
        f.namespaces.sort();
    }
    found.sort_by_key(|f| f.pid);
    found
}

/// Deletes the namespaces of a lab found by [`stale`].
pub fn remove_namespaces(found: &Found) -> Result<(), LabError> {
    for ns in &found.namespaces {
        ip(&["netns", "del", ns])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Found, stale_among};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stale_labs_are_those_of_dead_processes() {
        let netns = names(&[
            "pktpath-demo-12-router",
            "pktpath-demo-12-client",
            "pktpath-demo-77-client",
            "pktpath-test-12-0-a",
            "pktpath-demo-x-client",
            "blue",
        ]);
        let pins = names(&[
            "pktpath-demo-12",
            "pktpath-demo-31",
            "pktpath",
            "pktpath-demo-77",
        ]);
        // 77 is alive: its lab is in use and left alone.
        let found = stale_among(&netns, &pins, |pid| pid == 77);
        assert_eq!(
            found,
            vec![
                Found {
                    id: "pktpath-demo-12".into(),
                    pid: 12,
                    namespaces: names(&["pktpath-demo-12-client", "pktpath-demo-12-router"]),
                },
                // Pins left after the namespaces went: still a lab to clean.
                Found {
                    id: "pktpath-demo-31".into(),
                    pid: 31,
                    namespaces: vec![],
                },
            ]
        );
        assert!(stale_among(&netns, &pins, |_| true).is_empty());
    }
}
