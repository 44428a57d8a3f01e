//! SIGINT/SIGTERM as a flag: long-running commands (`trace`, `demo`) check it between steps
//! and stop cleanly, so their RAII guards undo what they did.
//!
//! signal-hook installs the handlers with SA_RESTART. That does not delay a stop: the calls
//! these commands wait in are poll(2) (the trace's ring buffer) and socket calls with a
//! timeout set, which the kernel never restarts after a handler (signal(7)), and sleeps.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the stop handler for SIGINT and SIGTERM.
pub fn install() -> std::io::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, &STOP)?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}
