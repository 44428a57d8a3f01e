//! JSON Schema of the two configuration files, generated from the serde models. The
//! committed copies under `schema/` are checked against these by a test, so they cannot
//! go stale.

use schemars::{JsonSchema, generate::SchemaSettings};

use super::{Configuration, RuntimeConfiguration};

/// Which configuration file a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `configuration.json`.
    Configuration,
    /// `runtimeConfiguration.json`.
    Runtime,
}

impl SchemaKind {
    /// Both kinds.
    pub const ALL: [SchemaKind; 2] = [SchemaKind::Configuration, SchemaKind::Runtime];

    /// The name of the committed schema file under `schema/`.
    pub fn file_name(self) -> &'static str {
        match self {
            SchemaKind::Configuration => "configuration.schema.json",
            SchemaKind::Runtime => "runtimeConfiguration.schema.json",
        }
    }

    /// The schema (draft 2020-12, describing what the files may contain).
    pub fn schema(self) -> serde_json::Value {
        match self {
            SchemaKind::Configuration => schema_of::<Configuration>(),
            SchemaKind::Runtime => schema_of::<RuntimeConfiguration>(),
        }
    }

    /// The schema as pretty JSON text ending in a newline, as committed.
    pub fn render(self) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.schema()).expect("a json value always serializes");
        text.push('\n');
        text
    }
}

fn schema_of<T: JsonSchema>() -> serde_json::Value {
    let schema = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schemas_are_current() {
        for kind in SchemaKind::ALL {
            crate::committed::check_or_update(
                kind.file_name(),
                &kind.render(),
                "committed_schemas",
                "pktpath route schema",
            );
        }
    }

    #[test]
    fn schemas_describe_the_fields() {
        let runtime = SchemaKind::Runtime.schema().to_string();
        for field in [
            "\"policies\"",
            "\"priority\"",
            "\"next_hop\"",
            "\"lookup_table\"",
            "\"dport\"",
        ] {
            assert!(runtime.contains(field), "runtime schema lacks {field}");
        }
        let configuration = SchemaKind::Configuration.schema().to_string();
        for field in [
            "\"interfaces\"",
            "\"gateway4\"",
            "\"tables\"",
            "\"additionalProperties\":false",
        ] {
            assert!(
                configuration.contains(field),
                "configuration schema lacks {field}"
            );
        }
    }
}
