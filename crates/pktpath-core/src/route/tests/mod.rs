//! Unit tests of route configuration: errors (with file, line and field), compilation, the
//! reference model, and the shipped examples.

mod errors;
mod examples;
mod model;

use super::{
    compile::{PolicySet, Topology},
    config::{ConfigError, Source},
};

/// The static configuration the tests' policies refer to (line numbers matter to tests).
const CONFIGURATION: &str = r#"{
  "version": 1,
  "interfaces": [
    { "name": "lan", "ingress": true },
    { "name": "wan1", "ingress": true, "egress": true },
    { "name": "wan2" },
    { "name": "mon", "ingress": false, "egress": true }
  ],
  "next_hops": [
    { "name": "isp1", "interface": "wan1", "gateway4": "10.2.0.2", "gateway6": "fd02::2" },
    { "name": "isp2", "interface": "wan2", "gateway4": "10.3.0.2" },
    { "name": "tap", "interface": "mon", "mac": "02:00:5e:00:53:01" }
  ],
  "tables": [
    { "name": "main", "id": 254 },
    { "name": "alt", "id": 100 }
  ]
}
"#;

fn topology() -> Topology {
    Topology::from_source(&Source::new("configuration.json", CONFIGURATION))
        .unwrap_or_else(|e| panic!("the test configuration is valid: {e}"))
}

/// A runtime configuration with one policy per line: policy `i` is on line `4 + i`.
fn runtime(policies: &[&str]) -> String {
    format!(
        "{{\n  \"version\": 1,\n  \"policies\": [\n{}\n  ]\n}}\n",
        policies
            .iter()
            .map(|p| format!("    {p}"))
            .collect::<Vec<_>>()
            .join(",\n")
    )
}

fn compile(text: &str) -> Result<PolicySet, ConfigError> {
    PolicySet::from_source(&topology(), &Source::new("runtimeConfiguration.json", text))
}

fn compiled(policies: &[&str]) -> PolicySet {
    compile(&runtime(policies)).unwrap_or_else(|e| panic!("policies should compile: {e}"))
}
