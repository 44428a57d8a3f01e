//! Route configuration files: the serde models of the static `configuration.json` and the
//! runtime `runtimeConfiguration.json`, their value types, their JSON Schema, and parsing
//! with errors that name file, line, column and field. Checking the files against each
//! other and resolving names is [`super::compile`]'s job.

mod configuration;
mod error;
mod locate;
mod runtime;
pub mod schema;
mod source;
mod values;

pub use configuration::{
    CONFIGURATION_VERSION, Configuration, DEFAULT_SLOW_MARK_MASK, DEFAULT_SLOW_RULE_PRIORITY,
    DEFAULT_SLOW_TABLE_BASE, Hook, Interface, NextHop, SlowPath, Table,
};
pub use error::{ConfigError, Location};
pub use locate::{FieldPath, Segment};
pub use runtime::{Action, MarkMatch, Match, Policy, RUNTIME_VERSION, RuntimeConfiguration};
pub use source::Source;
pub use values::{Family, InvalidValue, MacAddr, PortRange, Prefix, Protocol};
