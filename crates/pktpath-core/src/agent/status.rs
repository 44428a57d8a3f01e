//! What the agent did, shared between its loop (which writes it) and the metrics and health
//! endpoints (which read it). The data path's own counters are not here: the collector
//! reads them from the maps at scrape time.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

/// The agent's own record of its reloads.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Reloads tried (the first apply at start included).
    pub reloads: u64,
    /// Reloads that failed (a bad file, a refused set, a busy writer lock).
    pub failures: u64,
    /// When the last reload ended, and whether it succeeded.
    pub last_reload: Option<(SystemTime, bool)>,
    /// The last error, one line.
    pub last_error: Option<String>,
    /// What the last successful apply put in place.
    pub applied: Option<Applied>,
}

/// A successful apply, as the metrics report it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub generation: u32,
    pub policies: usize,
    pub rules: usize,
    pub match_shapes: usize,
    pub trees: usize,
    pub table_bytes: u64,
    pub duration: Duration,
}

/// [`Record`] behind a lock.
#[derive(Debug, Default)]
pub struct Status(Mutex<Record>);

impl Status {
    /// A copy of the record.
    pub fn get(&self) -> Record {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the record.
    pub fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
