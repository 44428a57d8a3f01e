//! `pktpath-bench cleanup`: removes what a benchmark process that no longer exists left
//! behind (it was killed with SIGKILL, so its guards never ran): its namespaces (the
//! harness sweeps `pktpath-test-<pid>-*`), its pins under /sys/fs/bpf with the same
//! prefix, their state under /run/pktpath, and its scratch files. Processes it started die
//! with it (PR_SET_PDEATHSIG) or end on their own (trafgen is always given a count).

use std::path::Path;

use pktpath_core::route::datapath::attach::STATE_ROOT;
use pktpath_tests::names::NETNS_PREFIX;

/// The pid in `<prefix><pid>-...`, when that process is gone.
fn dead_pid(name: &str, prefix: &str) -> Option<u32> {
    let pid: u32 = name
        .strip_prefix(prefix)?
        .split(['-', '.'])
        .next()?
        .parse()
        .ok()?;
    (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

fn sweep(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if dead_pid(&name, prefix).is_some() {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => eprintln!("removed {}", p.display()),
                Err(err) => eprintln!("cannot remove {}: {err}", p.display()),
            }
        }
    }
}

pub fn run() -> anyhow::Result<()> {
    pktpath_tests::names::sweep_stale();
    sweep(Path::new("/sys/fs/bpf"), NETNS_PREFIX);
    // State directories are named after the pin path: sys-fs-bpf-pktpath-test-<pid>-...
    sweep(Path::new(STATE_ROOT), &format!("sys-fs-bpf-{NETNS_PREFIX}"));
    let _ = std::fs::remove_dir(STATE_ROOT);
    sweep(&std::env::temp_dir(), "pktpath-bench-");
    Ok(())
}
