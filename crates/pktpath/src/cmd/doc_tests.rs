//! Docs that cannot rot: every `pktpath ...` command line shown in README.md and docs/
//! parses with the CLI definition, and every relative link points at a file that exists.

use std::path::{Path, PathBuf};

use clap::Parser as _;

use super::Cli;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Splits a shell command line into words: quotes group, `\` escapes; stops at the first
/// unquoted `|`, `;`, `&`, `>`, `<` or `#` (what follows is another command, a redirection
/// or a comment).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    in_word = true;
                }
            }
            (None, '|' | ';' | '&' | '>' | '<' | '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The `pktpath` command in `text` (a line of a code block or an inline code span), as
/// words from `pktpath` on: after a prompt, `sudo`, `nsenter ...`, `setpriv ...`, or an
/// environment assignment. None for text that is not a command line, or a synopsis
/// (`[OPTIONAL]`, `A|B`, `...`).
fn command(text: &str) -> Option<Vec<String>> {
    let text = text
        .trim()
        .trim_start_matches("$ ")
        .trim_start_matches("# ");
    let all = words(text);
    let at = all.iter().position(|w| w == "pktpath")?;
    let before = &all[..at];
    let prefix_ok = before.iter().all(|w| {
        w == "sudo"
            || w.contains('=')
            || w.starts_with('-')
            || ["nsenter", "setpriv", "env", "exec", "timeout"].contains(&w.as_str())
            || w.chars().all(|c| c.is_ascii_digit())
    });
    let synopsis = text.contains('[') || text.contains("...") || text.contains('…');
    // Output that names a command (`pktpath doctor: kernel ...`) is not a command line.
    let output = all[at..].iter().any(|w| w.ends_with(':'));
    let is_placeholder = |w: &String| w.contains('<') || w.contains('{');
    if !prefix_ok || synopsis || output || all[at..].iter().any(is_placeholder) {
        return None;
    }
    Some(all[at..].to_vec())
}

/// Command lines of a document, with their line numbers and whether they are whole (lines
/// of fenced code blocks) or may only name a command (inline code spans of prose, such as
/// `pktpath route get`).
fn command_lines(text: &str) -> Vec<(usize, Vec<String>, bool)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.extend(command(line).map(|c| (n + 1, c, true)));
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            if span.starts_with("pktpath ") {
                out.extend(command(span).map(|c| (n + 1, c, false)));
            }
        }
    }
    out
}

#[test]
fn every_command_line_in_the_docs_parses() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read document");
        for (n, words, whole) in command_lines(&text) {
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&words) {
                use clap::error::ErrorKind as K;
                let naming = matches!(
                    e.kind(),
                    K::MissingRequiredArgument | K::DisplayHelpOnMissingArgumentOrSubcommand
                );
                if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) || (naming && !whole) {
                    continue;
                }
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                failures.push(format!(
                    "{}:{n}: {}: {first}",
                    doc.strip_prefix(root()).unwrap_or(&doc).display(),
                    words.join(" ")
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "found {checked} command lines: the scan is broken"
    );
    assert!(
        failures.is_empty(),
        "command lines the CLI does not accept:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_relative_link_in_the_docs_exists() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read document");
        for (n, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(end) = part.find(')') else { continue };
                let target = &part[..end];
                if target.is_empty()
                    || target.starts_with('#')
                    || target.contains("://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let file = target.split('#').next().unwrap_or(target);
                let path = doc.parent().expect("in a directory").join(file);
                if !path.exists() {
                    broken.push(format!(
                        "{}:{}: {target}",
                        doc.strip_prefix(root()).unwrap_or(&doc).display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn command_lines_are_found_after_prompts_and_wrappers() {
    let found = command_lines(
        "run `pktpath route show` or\n```sh\n$ sudo nsenter --net=/run/netns/r pktpath route --pin-dir /sys/fs/bpf/x stats | jq .\nPKTPATH_STATE_DIR=/tmp/s pktpath doctor\npktpath route get iif IF from SRC to DST [proto P]\necho pktpath\npktpath doctor: kernel 6.18\n```\n",
    );
    let lines: Vec<String> = found
        .iter()
        .map(|(n, w, _)| format!("{n}: {}", w.join(" ")))
        .collect();
    assert_eq!(
        lines,
        [
            "1: pktpath route show",
            "3: pktpath route --pin-dir /sys/fs/bpf/x stats",
            "4: pktpath doctor",
        ]
    );
    assert_eq!(words(r#"a "b c" 'd' e\ f # g"#), ["a", "b c", "d", "e f"]);
}
