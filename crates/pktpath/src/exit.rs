//! Exit codes, and turning errors into one line on stderr and an exit code.
//!
//! The codes are `u8` because that is what an exit status holds; `main` turns the one it
//! gets into a `std::process::ExitCode`.

use pktpath_core::sys::caps::MissingCapability;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
/// A usage error found after argument parsing (e.g. a filter expression), as clap's.
pub const USAGE: u8 = 2;
pub const PRIVILEGE: u8 = 3;
pub const UNSUPPORTED: u8 = 4;
/// Interrupted by a signal (Ctrl-C), as a shell reports it: 128 + SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Prints `err` (with its causes) as one line and returns the exit code for it.
pub fn report(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return OK;
    }
    let mut line = String::from("pktpath: ");
    let mut first = true;
    for cause in err.chain() {
        let text = cause.to_string();
        if !first {
            if line.contains(&text) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&text);
        first = false;
    }
    eprintln!("{line}");
    if err
        .chain()
        .any(|c| c.downcast_ref::<MissingCapability>().is_some())
    {
        PRIVILEGE
    } else if err
        .chain()
        .any(|c| c.downcast_ref::<crate::cmd::Unsupported>().is_some())
    {
        UNSUPPORTED
    } else {
        ERROR
    }
}
