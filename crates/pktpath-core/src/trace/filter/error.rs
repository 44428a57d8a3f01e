//! Errors of the filter language: every syntax error names the offending token, its byte
//! offset, what was expected there, and shows the expression with a caret line under it.

use pktpath_common::filter::FILTER_MAX_INSNS;

/// Why a filter expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A token that does not fit the grammar where it stands.
    #[error("unexpected {found} at {offset}: expected {expected}\n{snippet}")]
    Syntax {
        /// The token, quoted in backticks, or `end of filter`.
        found: String,
        /// Byte offset of the token in the filter text.
        offset: usize,
        expected: String,
        /// The filter text and a caret line under the token.
        snippet: String,
    },
    /// A token of the right kind with a value that cannot be used.
    #[error("invalid {what} `{text}` at {offset}: {reason}\n{snippet}")]
    Invalid {
        what: &'static str,
        text: String,
        offset: usize,
        reason: String,
        snippet: String,
    },
    /// The expression has more predicates than a program holds.
    #[error(
        "filter needs {needed} instructions but at most {FILTER_MAX_INSNS} fit in the kernel's \
         filter program: use fewer primitives (e.g. a `net` instead of several `host`s)"
    )]
    TooLarge { needed: usize },
}

/// The filter text with a caret line under bytes `start..end` (at least one caret).
pub(crate) fn snippet(text: &str, start: usize, end: usize) -> String {
    let pad = text[..start.min(text.len())].chars().count();
    let width = text.get(start..end).map_or(1, |s| s.chars().count()).max(1);
    format!("  {text}\n  {}{}", " ".repeat(pad), "^".repeat(width))
}
