//! Splits filter text into tokens with their byte spans.
//!
//! Words are runs of letters, digits and `.:/-_` (keywords, addresses, CIDRs, ports, port
//! ranges); the operators are `(`, `)`, `!`, `&&` and `||`.

use super::error::{FilterError, snippet};

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Word(String),
    LParen,
    RParen,
    /// `!`
    Bang,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    /// End of the text.
    End,
}

/// A token and where it stands in the text (byte offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '-' | '_')
}

/// Tokenizes `text`; the last token is always [`TokenKind::End`].
pub fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_word_char(c) {
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if !is_word_char(c) {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            tokens.push(Token {
                kind: TokenKind::Word(text[start..end].to_string()),
                start,
                end,
            });
            continue;
        }
        chars.next();
        let single = |kind| Token {
            kind,
            start,
            end: start + 1,
        };
        let tok = match c {
            '(' => single(TokenKind::LParen),
            ')' => single(TokenKind::RParen),
            '!' => single(TokenKind::Bang),
            '&' | '|' => {
                if chars.peek().map(|&(_, n)| n) == Some(c) {
                    chars.next();
                    let kind = if c == '&' {
                        TokenKind::AndAnd
                    } else {
                        TokenKind::OrOr
                    };
                    Token {
                        kind,
                        start,
                        end: start + 2,
                    }
                } else {
                    return Err(FilterError::Syntax {
                        found: format!("`{c}`"),
                        offset: start,
                        expected: format!("`{c}{c}`"),
                        snippet: snippet(text, start, start + 1),
                    });
                }
            }
            _ => {
                let end = start + c.len_utf8();
                return Err(FilterError::Syntax {
                    found: format!("`{c}`"),
                    offset: start,
                    expected: "a primitive, an operator or a parenthesis".into(),
                    snippet: snippet(text, start, end),
                });
            }
        };
        tokens.push(tok);
    }
    tokens.push(Token {
        kind: TokenKind::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}
