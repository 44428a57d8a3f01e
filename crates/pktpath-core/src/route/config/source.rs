//! A configuration file's text and name, and parsing it into the serde models with errors
//! that point at file, line, column and field.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{
    error::{ConfigError, Location},
    locate::{FieldPath, Segment, line_column, lines_of, locate, locate_elements},
};

/// The text of a configuration file and the name errors call it by.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    text: String,
}

impl Source {
    /// Reads a file; errors name it as given.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Ok(Source::new(path.display().to_string(), text))
    }

    /// A source from text in memory, called `name` in errors.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The name errors use for this file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where `path` is written in this file (line 1, column 1 if it cannot be found).
    pub fn at(&self, path: &FieldPath) -> Box<Location> {
        let (line, column) = locate(&self.text, path)
            .map(|offset| line_column(&self.text, offset))
            .unwrap_or((1, 1));
        self.location(line, column, path)
    }

    /// Whether the file writes the field at `path`.
    pub fn has(&self, path: &FieldPath) -> bool {
        locate(&self.text, path).is_some()
    }

    /// The line each element of the array at `path` starts on (empty if there is none).
    pub fn element_lines(&self, path: &FieldPath) -> Vec<usize> {
        let starts = locate_elements(&self.text, path).unwrap_or_default();
        lines_of(&self.text, &starts)
    }

    /// The line `path` is written on.
    pub fn line_of(&self, path: &FieldPath) -> usize {
        self.at(path).line
    }

    fn location(&self, line: usize, column: usize, path: &FieldPath) -> Box<Location> {
        Box::new(Location {
            file: self.name.clone(),
            line,
            column,
            field: path.to_string(),
        })
    }

    /// Parses the file as `T` after checking its `version` is `version`.
    pub fn parse<T: DeserializeOwned>(&self, version: u32) -> Result<T, ConfigError> {
        // First only the syntax and the version, so that a file of another version gets
        // that said rather than whatever field its format changed.
        let value: serde_json::Value = self.deserialize()?;
        let Some(object) = value.as_object() else {
            return Err(ConfigError::Invalid {
                at: self.at(&FieldPath::root()),
                message: "expected one json object with a \"version\" field".to_owned(),
            });
        };
        if let Some(found) = object.get("version")
            && found.as_u64() != Some(u64::from(version))
        {
            return Err(ConfigError::Version {
                at: self.at(&FieldPath::root().key("version")),
                found: found.to_string(),
                expected: version,
            });
        }
        self.deserialize()
    }

    fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(&self.text);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = field_path(e.path());
            self.error(&path, e.into_inner())
        })?;
        de.end().map_err(|e| self.error(&FieldPath::root(), e))?;
        Ok(value)
    }

    fn error(&self, path: &FieldPath, inner: serde_json::Error) -> ConfigError {
        // serde_json appends " at line L column C"; the location says that already.
        let mut message = inner.to_string();
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        if inner.is_data() {
            // Inside a tagged enum serde reports an unknown field at the enclosing object;
            // name the field itself when it is there.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(key, _)| path.key(key))
                .filter(|field| {
                    path.segments().last() != field.segments().last()
                        && locate(&self.text, field).is_some()
                });
            let path = unknown.as_ref().unwrap_or(path);
            // Point at the field itself rather than where the parser noticed.
            let at = match locate(&self.text, path) {
                Some(offset) => {
                    let (line, column) = line_column(&self.text, offset);
                    self.location(line, column, path)
                }
                None => self.location(inner.line().max(1), inner.column().max(1), path),
            };
            ConfigError::Invalid { at, message }
        } else {
            ConfigError::Syntax {
                at: self.location(inner.line().max(1), inner.column().max(1), path),
                message,
            }
        }
    }
}

/// serde_path_to_error's path as ours; enum variants are not fields, and the path stops at
/// a step it cannot name.
fn field_path(path: &serde_path_to_error::Path) -> FieldPath {
    let mut segments = Vec::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => segments.push(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => segments.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { .. } => {}
            serde_path_to_error::Segment::Unknown => break,
        }
    }
    FieldPath::from(segments)
}
