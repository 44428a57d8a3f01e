//! Noticing that the configuration files changed: inotify on the directories that hold
//! them. Editors and configuration management replace a file by renaming a new one over
//! it, which a watch on the file itself would miss (it follows the old inode); a watch on
//! the directory sees the rename, a write in place and a re-creation alike.
//!
//! A Kubernetes ConfigMap mounted as a volume changes none of its file names: each file is
//! a symlink through `..data`, a symlink to a timestamped directory, and kubelet updates
//! all files at once by renaming a new `..data` over the old one. A change of `..data` is
//! therefore a change of every file watched in that directory.

use std::{
    ffi::OsString,
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use inotify::{Inotify, WatchMask};

use super::AgentError;

/// The symlink kubelet's atomic writer swaps to update a ConfigMap volume's files.
const KUBELET_DATA: &str = "..data";

/// Watches the directories of a set of files and says when one of the files changed.
pub struct FileWatch {
    inotify: Inotify,
    /// (directory watch, file name, the path as given) of each file watched.
    files: Vec<(inotify::WatchDescriptor, OsString, PathBuf)>,
    buffer: Vec<u8>,
}

impl FileWatch {
    /// Watches `files` (each through its directory, which must exist).
    pub fn new(files: &[&Path]) -> Result<Self, AgentError> {
        let inotify = Inotify::init().map_err(|source| AgentError::Watch {
            what: "inotify_init".to_owned(),
            source,
        })?;
        let mut watches = Vec::new();
        for file in files {
            let dir = directory_of(file);
            let name = file
                .file_name()
                .ok_or_else(|| AgentError::NotAFile {
                    path: file.display().to_string(),
                })?
                .to_owned();
            let wd = inotify
                .watches()
                .add(
                    &dir,
                    WatchMask::CLOSE_WRITE
                        | WatchMask::MOVED_TO
                        | WatchMask::CREATE
                        | WatchMask::DELETE
                        | WatchMask::MOVED_FROM,
                )
                .map_err(|source| AgentError::Watch {
                    what: format!("watching directory {}", dir.display()),
                    source,
                })?;
            watches.push((wd, name, file.to_path_buf()));
        }
        Ok(Self {
            inotify,
            files: watches,
            buffer: vec![0; 4096],
        })
    }

    /// Reads the events pending (never blocks); adds the watched files they concern to
    /// `changed` (all of them when the kernel's queue overflowed). True when an event
    /// concerned a watched file.
    pub fn changed(&mut self, changed: &mut Vec<PathBuf>) -> Result<bool, AgentError> {
        let mut seen = false;
        let mut hit = |path: &PathBuf| {
            seen = true;
            if !changed.contains(path) {
                changed.push(path.clone());
            }
        };
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(seen),
                Err(source) => {
                    return Err(AgentError::Watch {
                        what: "reading inotify events".to_owned(),
                        source,
                    });
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                for (wd, file, path) in &self.files {
                    let overflow = event.mask.contains(inotify::EventMask::Q_OVERFLOW);
                    let ours = *wd == event.wd
                        && (event.name == Some(file.as_os_str())
                            || event.name == Some(std::ffi::OsStr::new(KUBELET_DATA)));
                    if overflow || ours {
                        hit(path);
                    }
                }
            }
            if !any {
                return Ok(seen);
            }
        }
    }
}

impl AsRawFd for FileWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }
}

/// The directory holding `file` (`.` for a bare file name).
fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::FileWatch;

    #[test]
    fn renames_over_writes_in_place_and_recreations_are_seen_other_files_are_not() {
        let dir = std::env::temp_dir().join(format!("pktpath-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.json"), dir.join("b.json"));
        std::fs::write(&a, "1").unwrap();
        let mut watch = FileWatch::new(&[&a, &b]).expect("watch the directory");
        let mut changed = Vec::new();

        // Nothing yet; a file beside them is not theirs.
        assert!(!watch.changed(&mut changed).unwrap());
        std::fs::write(dir.join("a.json.tmp"), "2").unwrap();
        assert!(!watch.changed(&mut changed).unwrap());
        assert!(changed.is_empty());

        // An editor's save: a new file renamed over the old one.
        std::fs::rename(dir.join("a.json.tmp"), &a).unwrap();
        assert!(watch.changed(&mut changed).unwrap());
        assert_eq!(changed, std::slice::from_ref(&a));

        // A write in place, and a file that did not exist at start.
        std::fs::write(&a, "3").unwrap();
        std::fs::write(&b, "1").unwrap();
        assert!(watch.changed(&mut changed).unwrap());
        assert_eq!(changed, [a.clone(), b.clone()], "each file once");

        // Removed and created again.
        changed.clear();
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&b, "2").unwrap();
        assert!(watch.changed(&mut changed).unwrap());
        assert_eq!(changed, [b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What kubelet's atomic writer does to a ConfigMap volume: the files are symlinks
    /// through `..data`, and an update renames a new `..data` symlink over the old one.
    #[test]
    fn a_configmap_update_through_the_data_symlink_is_a_change_of_every_file() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("pktpath-watch-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let version = |n: u32| {
            let v = dir.join(format!("..2026_12_05_0{n}"));
            std::fs::create_dir_all(&v).unwrap();
            std::fs::write(v.join("a.json"), n.to_string()).unwrap();
            std::fs::write(v.join("b.json"), n.to_string()).unwrap();
            v
        };
        let v1 = version(1);
        symlink(v1.file_name().unwrap(), dir.join("..data")).unwrap();
        let (a, b) = (dir.join("a.json"), dir.join("b.json"));
        symlink("..data/a.json", &a).unwrap();
        symlink("..data/b.json", &b).unwrap();
        let mut watch = FileWatch::new(&[&a, &b]).expect("watch the directory");
        let mut changed = Vec::new();
        assert!(!watch.changed(&mut changed).unwrap());

        // The update: a new version directory, `..data_tmp` renamed over `..data`.
        let v2 = version(2);
        assert!(
            !watch.changed(&mut changed).unwrap(),
            "a new version directory alone changes nothing yet"
        );
        symlink(v2.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert!(watch.changed(&mut changed).unwrap());
        assert_eq!(changed, [a.clone(), b]);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
