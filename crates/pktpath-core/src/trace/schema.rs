//! JSON Schema of the events `pktpath trace --output json` writes, one per line, generated
//! from [`Event`]. The committed copy, `schema/trace-event.schema.json`, is checked against
//! it by a test, and the privileged tests validate real trace output with it.

use schemars::generate::SchemaSettings;

use super::event::{Event, SCHEMA_VERSION};

/// The committed schema's file name under `schema/`.
pub const FILE_NAME: &str = "trace-event.schema.json";

/// The schema of one event line (draft 2020-12). Every key is always present (absent
/// values are null) and no other key appears; `schema_version` is this build's.
pub fn event_schema() -> serde_json::Value {
    let mut schema = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<Event>()
        .to_value();
    schema["title"] = "pktpath trace event".into();
    schema["properties"]["schema_version"] = serde_json::json!({
        "description": "Version of this schema; bumped on any change of an event's shape.",
        "const": SCHEMA_VERSION,
    });
    schema
}

/// The schema as pretty JSON text ending in a newline, as committed.
pub fn render() -> String {
    let mut text =
        serde_json::to_string_pretty(&event_schema()).expect("a json value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bump `SCHEMA_VERSION` as well when an event's shape changed.
    #[test]
    fn committed_event_schema_is_current() {
        crate::committed::check_or_update(
            FILE_NAME,
            &render(),
            "committed_event_schema",
            "pktpath trace --print-schema",
        );
    }
}
