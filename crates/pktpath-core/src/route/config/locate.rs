//! Finding where a field is in a JSON text: turns a field path such as
//! `policies[3].priority` into the line and column of that field, so that errors found
//! after parsing (duplicate ids, unknown next hops) can point at the offending line.
//!
//! The scanner walks the text along the path and skips everything else; it needs the text
//! to be JSON that already parsed, and answers `None` rather than guessing otherwise.

use std::fmt;

/// One step of a field path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path to a field in a configuration file, displayed as `policies[3].match.src`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The whole document.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by an object key.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// The steps of the path.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Segment>> for FieldPath {
    fn from(segments: Vec<Segment>) -> Self {
        FieldPath(segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The byte offset in `text` where `path` is written: the opening quote of the last key,
/// or the first byte of the last array element (of the document, for the root path).
pub fn locate(text: &str, path: &FieldPath) -> Option<usize> {
    walk(text, path).map(|(found, _)| found)
}

/// The byte offsets of the elements of the array at `path`, found in one pass (locating
/// each element on its own would rescan the text from the start every time).
pub fn locate_elements(text: &str, path: &FieldPath) -> Option<Vec<usize>> {
    let (_, value) = walk(text, path)?;
    let mut s = Scanner {
        bytes: text.as_bytes(),
        pos: value,
    };
    s.expect(b'[')?;
    let mut starts = Vec::new();
    loop {
        s.skip_ws();
        match s.peek()? {
            b']' => return Some(starts),
            b',' if !starts.is_empty() => s.pos += 1,
            _ if starts.is_empty() => {}
            _ => return None,
        }
        s.skip_ws();
        starts.push(s.pos);
        s.skip_value()?;
    }
}

/// Where `path` is written and where its value starts.
fn walk(text: &str, path: &FieldPath) -> Option<(usize, usize)> {
    let mut s = Scanner {
        bytes: text.as_bytes(),
        pos: 0,
    };
    s.skip_ws();
    let mut found = s.pos;
    for segment in path.segments() {
        match segment {
            Segment::Key(wanted) => {
                s.expect(b'{')?;
                loop {
                    s.skip_ws();
                    if s.peek()? == b'}' {
                        return None;
                    }
                    let key_start = s.pos;
                    let key = s.string()?;
                    s.skip_ws();
                    s.expect(b':')?;
                    s.skip_ws();
                    if key == *wanted {
                        found = key_start;
                        break;
                    }
                    s.skip_value()?;
                    s.skip_ws();
                    s.expect(b',')?;
                }
            }
            Segment::Index(wanted) => {
                s.expect(b'[')?;
                for i in 0.. {
                    s.skip_ws();
                    if s.peek()? == b']' {
                        return None;
                    }
                    if i == *wanted {
                        found = s.pos;
                        break;
                    }
                    s.skip_value()?;
                    s.skip_ws();
                    s.expect(b',')?;
                }
            }
        }
    }
    Some((found, s.pos))
}

/// The 1-based lines of ascending byte `offsets` in `text`, in one pass.
pub fn lines_of(text: &str, offsets: &[usize]) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut lines = Vec::with_capacity(offsets.len());
    let (mut pos, mut line) = (0, 1);
    for &offset in offsets {
        let end = offset.min(bytes.len());
        if end < pos {
            // Not ascending: count afresh.
            (pos, line) = (0, 1);
        }
        line += bytes[pos..end].iter().filter(|&&b| b == b'\n').count();
        pos = end;
        lines.push(line);
    }
    lines
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// A string starting at the current position, with its escapes decoded.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.bytes.get(self.pos..self.pos + 4)?;
                            self.pos += 4;
                            let unit =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            // Surrogate pairs only occur in keys no configuration has; a
                            // lone half decodes to U+FFFD and simply matches no field.
                            char::from_u32(unit).unwrap_or('\u{fffd}')
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.pos += 1;
                self.skip_ws();
                if self.peek()? == close {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.skip_ws();
                    if open == b'{' {
                        self.string()?;
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b if b == close => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                // Number, true, false, null: everything up to a delimiter.
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                (self.pos > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{
  "version": 1,
  "skip": {"a": [1, {"b": "x\"}]"}], "c": null, "d": -1.5e3},
  "policies": [
    { "id": "a", "priority": 1 },
    {
      "id": "b",
      "pri\u006frity": 2,
      "match": {"src": "10.0.0.0/8"}
    }
  ]
}"#;

    fn at(path: &FieldPath) -> Option<(usize, usize)> {
        locate(TEXT, path).map(|offset| line_column(TEXT, offset))
    }

    #[test]
    fn finds_keys_and_elements() {
        let root = FieldPath::root();
        assert_eq!(at(&root), Some((1, 1)));
        assert_eq!(at(&root.key("version")), Some((2, 3)));
        let policies = root.key("policies");
        assert_eq!(at(&policies), Some((4, 3)));
        assert_eq!(at(&policies.index(0)), Some((5, 5)));
        assert_eq!(at(&policies.index(0).key("priority")), Some((5, 18)));
        assert_eq!(at(&policies.index(1)), Some((6, 5)));
        assert_eq!(at(&policies.index(1).key("id")), Some((7, 7)));
        assert_eq!(
            at(&policies.index(1).key("priority")),
            Some((8, 7)),
            "escaped key"
        );
        assert_eq!(
            at(&policies.index(1).key("match").key("src")),
            Some((9, 17))
        );
    }

    #[test]
    fn answers_none_for_what_is_not_there() {
        let policies = FieldPath::root().key("policies");
        assert_eq!(at(&policies.index(2)), None);
        assert_eq!(at(&policies.index(0).key("match")), None);
        assert_eq!(at(&FieldPath::root().key("version").key("x")), None);
        assert_eq!(at(&FieldPath::root().key("nope")), None);
    }

    #[test]
    fn finds_every_element_in_one_pass() {
        let policies = FieldPath::root().key("policies");
        let starts = locate_elements(TEXT, &policies).unwrap();
        assert_eq!(starts.len(), 2);
        assert_eq!(lines_of(TEXT, &starts), [5, 6]);
        for (i, start) in starts.iter().enumerate() {
            assert_eq!(Some(*start), locate(TEXT, &policies.index(i)));
        }
        assert_eq!(
            locate_elements("{\"a\": []}", &FieldPath::root().key("a")),
            Some(vec![])
        );
        assert_eq!(
            locate_elements("{\"a\": 1}", &FieldPath::root().key("a")),
            None
        );
        assert_eq!(lines_of("a\nb\nc", &[4, 0, 2]), [3, 1, 2]);
    }

    #[test]
    fn paths_display_like_accessors() {
        let path = FieldPath::root()
            .key("policies")
            .index(3)
            .key("match")
            .key("src");
        assert_eq!(path.to_string(), "policies[3].match.src");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("ab\n\u{e9}x", 5), (2, 2));
        assert_eq!(line_column("", 0), (1, 1));
    }
}
