//! SIGINT/SIGTERM as a flag: long-running commands (`trace`, `demo`) check it between steps
//! and stop cleanly, so their RAII guards undo what they did.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the stop handler for SIGINT and SIGTERM (without SA_RESTART, so a blocked poll
/// returns at once).
pub fn install() -> std::io::Result<()> {
    // The handler only stores to an atomic, which is async-signal-safe.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        pktpath_core::sys::signals::set_handler(sig, on_signal)?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}
