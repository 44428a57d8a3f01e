//! Unique names for test namespaces and interfaces.

use std::sync::{
    Once,
    atomic::{AtomicU32, Ordering},
};

/// Prefix of every namespace the harness creates.
pub const NETNS_PREFIX: &str = "pktpath-test-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh namespace name: `pktpath-test-<pid>-<n>-<label>`.
pub fn netns(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NETNS_PREFIX}{}-{n}-{label}", std::process::id())
}

/// A fresh interface name, at most 15 bytes: `pt<pid hex><n hex><suffix>`.
pub fn ifname(suffix: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "pt{:x}x{:x}{suffix}",
        std::process::id() & 0xf_ffff,
        n & 0xfff
    );
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// Removes namespaces left behind by test processes that no longer exist.
pub fn sweep_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::fs::read_dir(pktpath_core::sys::netns::NETNS_RUN_DIR) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = crate::run::cmd("ip", &["netns", "del", &name]);
            }
        }
    });
}
