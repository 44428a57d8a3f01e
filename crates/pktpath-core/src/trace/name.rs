//! [`Name`]: an interface or namespace name as events carry it, shared rather than copied
//! (every event names its interface, and most its namespace: one allocation each per event
//! was a good part of the reader's time).

use std::{fmt, ops::Deref, sync::Arc};

use serde::{Serialize, Serializer};

/// A short text shared by reference count: cloning it allocates nothing. It knows whether
/// JSON can carry it as it is, between quotes (no quote, backslash or control character):
/// checked once when made, not for every event that writes it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>, bool);

impl Name {
    fn new(text: Arc<str>) -> Self {
        let plain = !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        Self(text, plain)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the JSON string of the name is its text between quotes.
    pub fn is_json_plain(&self) -> bool {
        self.1
    }
}

impl Default for Name {
    fn default() -> Self {
        Self(Arc::from(""), true)
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    /// Honours width, fill and alignment (`{:<15}`), as `str` does: the text view lines up
    /// its interface column with them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(text.as_ref()))
    }
}

impl schemars::JsonSchema for Name {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self::new(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self::new(s.into())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_prints_and_serializes_as_its_text() {
        let n = Name::from("veth-b");
        assert_eq!(n, "veth-b");
        assert_eq!(n, "veth-b".to_owned());
        assert_eq!("veth-b".to_owned(), n);
        assert_eq!(format!("{n} {n:?}"), "veth-b \"veth-b\"");
        assert_eq!(
            format!("[{n:<8}] [{n:>8}] [{n:.4}]"),
            "[veth-b  ] [  veth-b] [veth]"
        );
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"veth-b\"");
        assert_eq!(Name::default().as_str(), "");
        // A clone shares the text.
        assert!(std::ptr::eq(n.as_str(), n.clone().as_str()));
        assert!(n.is_json_plain() && Name::default().is_json_plain());
        for odd in ["a\"b", "a\\b", "tab\there", "\u{1}"] {
            assert!(!Name::from(odd).is_json_plain(), "{odd:?}");
        }
    }
}
