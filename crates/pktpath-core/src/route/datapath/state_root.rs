//! Where the route verbs keep their state files: the state root of [`Layout`](super::attach::Layout).
//!
//! In order: a directory the user gave (`--state-dir DIR` or `PKTPATH_STATE_DIR`, both read
//! by the CLI), then systemd's `RUNTIME_DIRECTORY` (set by `RuntimeDirectory=` in a unit;
//! the first entry of its colon-separated list), then [`STATE_ROOT`] (/run/pktpath).

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::attach::STATE_ROOT;

/// The environment variable systemd sets from `RuntimeDirectory=`.
pub const RUNTIME_DIRECTORY: &str = "RUNTIME_DIRECTORY";

/// The state root for `given` (the `--state-dir` flag or `PKTPATH_STATE_DIR`), falling back
/// to this process's `RUNTIME_DIRECTORY`, then to [`STATE_ROOT`].
pub fn choose(given: Option<&Path>) -> PathBuf {
    choose_from(given, std::env::var_os(RUNTIME_DIRECTORY).as_deref())
}

/// [`choose`] with the value of `RUNTIME_DIRECTORY` passed in. Empty values count as unset;
/// entries of `RUNTIME_DIRECTORY` that are not absolute paths are skipped.
pub fn choose_from(given: Option<&Path>, runtime_directory: Option<&OsStr>) -> PathBuf {
    if let Some(dir) = given.filter(|d| !d.as_os_str().is_empty()) {
        return dir.to_path_buf();
    }
    runtime_directory
        .and_then(|list| {
            list.as_bytes()
                .split(|&b| b == b':')
                .map(|entry| Path::new(OsStr::from_bytes(entry)))
                .find(|p| p.is_absolute())
        })
        .map_or_else(|| PathBuf::from(STATE_ROOT), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_directory_wins() {
        let got = choose_from(Some(Path::new("/srv/state")), Some(OsStr::new("/run/x")));
        assert_eq!(got, Path::new("/srv/state"));
    }

    #[test]
    fn runtime_directory_first_absolute_entry() {
        assert_eq!(
            choose_from(None, Some(OsStr::new("/run/pktpath-a:/run/other"))),
            Path::new("/run/pktpath-a")
        );
        assert_eq!(
            choose_from(None, Some(OsStr::new(":relative:/run/b"))),
            Path::new("/run/b")
        );
        assert_eq!(
            choose_from(Some(Path::new("")), Some(OsStr::new("/run/c"))),
            Path::new("/run/c")
        );
    }

    #[test]
    fn default_is_run_pktpath() {
        assert_eq!(choose_from(None, None), Path::new(STATE_ROOT));
        assert_eq!(
            choose_from(None, Some(OsStr::new(""))),
            Path::new(STATE_ROOT)
        );
        assert_eq!(
            choose_from(None, Some(OsStr::new("relative"))),
            Path::new(STATE_ROOT)
        );
    }
}
