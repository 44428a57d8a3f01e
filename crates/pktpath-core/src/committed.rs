//! Test support for generated files committed under `schema/`: a test compares the
//! committed copy with what the code generates, or rewrites it when asked to.

use std::path::PathBuf;

/// Set to regenerate the committed files instead of checking them.
pub const UPDATE: &str = "PKTPATH_UPDATE_SCHEMA";

/// Panics unless `schema/<file_name>` holds `want`; with [`UPDATE`] set, writes it instead.
/// `test` is the test's name and `printed_by` the command that prints the same text, for
/// the message.
#[track_caller]
pub fn check_or_update(file_name: &str, want: &str, test: &str, printed_by: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema");
    let path = dir.join(file_name);
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(&dir).expect("create schema/");
        std::fs::write(&path, want).expect("write schema");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "schema/{file_name} is stale; regenerate it with `{UPDATE}=1 cargo nextest run -p pktpath-core {test}` \
         (or `{printed_by}`) and commit it"
    );
}
