//! One writer at a time: `attach`, `apply` and `detach` hold an exclusive `flock` on a
//! file beside the state directory ([`Layout::lock_file`]) for the whole operation.
//!
//! The kernel releases a `flock` when its holder dies, however it dies, so a killed writer
//! never blocks the next one. The holder writes its pid and command line into the file,
//! for the error a waiting writer gives up with. Detach unlinks the file while holding it
//! (nothing is left behind); a waiter that then gets the lock on the unlinked file notices
//! (the path names another inode or none) and starts again on the new file.
//!
//! Readers (`show`, `stats`, `get`, the tracer) take no lock: they read the state
//! consistently with the active generation instead (see `running`).

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{AttachError, Layout, STATE_ROOT, io_err, recover, state::create_private_dir};

/// How long a writer waits for another by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// How often a waiting writer tries again.
const POLL: Duration = Duration::from_millis(20);

/// The right to change the data path at one layout, for as long as it lives.
#[derive(Debug)]
pub struct Writer {
    layout: Layout,
    file: File,
    path: PathBuf,
    recovered: Vec<String>,
}

impl Writer {
    /// Takes the writer lock of `layout`, waiting up to `wait` for the writer holding it,
    /// then finishes or rolls back what a writer killed before it finished left (see
    /// [`Writer::recovered`]).
    pub fn lock(layout: &Layout, wait: Duration) -> Result<Self, AttachError> {
        let path = layout.lock_file();
        let start = Instant::now();
        loop {
            create_private_dir(&layout.state_root)
                .map_err(io_err("create state directory", &layout.state_root))?;
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path);
            let mut file = match opened {
                Ok(f) => f,
                // A detach removed the (empty) root between the two calls.
                Err(e) if e.kind() == io::ErrorKind::NotFound && start.elapsed() < wait => {
                    continue;
                }
                Err(e) => return Err(io_err("open the writer lock", &path)(e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= wait {
                        return Err(AttachError::Busy {
                            dir: layout.pin_dir.display().to_string(),
                            holder: holder(&mut file),
                            waited: start.elapsed().as_secs_f64(),
                        });
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_err("lock", &path)(e));
                }
            }
            // A detach may have unlinked this file between our open and our lock.
            let ours = file.metadata().map_err(io_err("stat", &path))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &path)(e)),
            }
            let me = format!("pid {} ({})", std::process::id(), command_line());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(me.as_bytes()))
                .map_err(io_err("write", &path))?;
            let mut writer = Self {
                layout: layout.clone(),
                file,
                path,
                recovered: Vec::new(),
            };
            writer.recovered = recover::run(layout)?;
            for line in &writer.recovered {
                log::info!("{line}");
            }
            return Ok(writer);
        }
    }

    /// What was done about writers killed before they finished, one line each.
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// The data path this writer may change.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

impl Drop for Writer {
    /// Without a data path left (detached, or an attach that failed or never began), the
    /// lock file goes too, unlinked while still held; so does the default state root once
    /// empty (a directory the user named stays: it may be theirs).
    fn drop(&mut self) {
        if !self.layout.state_dir().exists() {
            let _ = std::fs::remove_file(&self.path);
            if self.layout.state_root == std::path::Path::new(STATE_ROOT) {
                let _ = std::fs::remove_dir(&self.layout.state_root);
            }
        }
        // Closing the file releases the lock.
        let _ = self.file.unlock();
    }
}

/// Who holds the lock, as its holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.rewind().and_then(|()| file.read_to_string(&mut text)) {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "a process that has not said who it is yet".to_owned(),
    }
}

/// This process's command line, as `ps` shows it.
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}
