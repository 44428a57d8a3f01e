//! Running the tracer inside a test: start a collector with a configuration, then gather
//! rich events until a condition holds or a deadline passes.

use std::time::{Duration, Instant};

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Collector, Event, EventBuilder, TraceConfig};

/// A running collector and the builder that turns its records into events.
pub struct Tracing {
    pub collector: Collector,
    pub builder: EventBuilder,
    /// Every kept event is checked against it, as `--output json` would write it.
    schema: EventSchema,
}

impl Tracing {
    /// Loads the tracer and attaches `cfg`'s hooks; ready to see packets when it returns.
    pub fn start(cfg: &TraceConfig) -> Self {
        let collector = Collector::start(cfg).expect("load and attach the tracer");
        let builder = EventBuilder::new(collector.drop_reasons().clone());
        Self {
            collector,
            builder,
            schema: EventSchema::committed(),
        }
    }

    /// Reads events that satisfy `keep` until `done` holds for the kept ones, or `timeout`
    /// passes. Returns the kept events, in ring order.
    pub fn collect(
        &mut self,
        timeout: Duration,
        keep: impl Fn(&Event) -> bool,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        while !done(&kept) && Instant::now() < deadline {
            let builder = &mut self.builder;
            self.collector
                .poll(Duration::from_millis(50), |rec| {
                    let ev = builder.build_record(&rec);
                    if keep(&ev) {
                        kept.push(ev);
                    }
                })
                .expect("read the ring buffer");
        }
        for ev in &kept {
            self.schema
                .check(&serde_json::to_value(ev).expect("an event serializes"));
        }
        kept
    }
}

/// The hooks of a journey, in order.
pub fn hooks(j: &[&Event]) -> Vec<&'static str> {
    j.iter().map(|e| e.hook).collect()
}

/// Where `hook` first stands in a journey; panics, naming the journey's hooks, when absent.
pub fn position(j: &[&Event], hook: Hook) -> usize {
    j.iter()
        .position(|e| e.hook == hook.name())
        .unwrap_or_else(|| panic!("no {} in journey {:?}", hook.name(), hooks(j)))
}

/// The committed JSON Schema of trace events (`schema/trace-event.schema.json`), compiled
/// for validating what `pktpath trace --output json` writes.
pub struct EventSchema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl EventSchema {
    /// Compiles the committed schema file (the one users get, not one made for the test).
    pub fn committed() -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schema")
            .join(pktpath_core::trace::schema::FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("trace-event.schema.json", schema)
            .expect("add the schema");
        let index = compiler
            .compile("trace-event.schema.json", &mut schemas)
            .unwrap_or_else(|e| panic!("compile the schema: {e:#}"));
        Self { schemas, index }
    }

    /// Panics, naming the line, unless every line of JSON Lines `text` is a valid event.
    /// Returns how many lines it checked.
    #[track_caller]
    pub fn check_lines(&self, text: &str) -> usize {
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.check(&v);
            n += 1;
        }
        n
    }

    /// Panics, showing the event, unless `event` is valid.
    #[track_caller]
    pub fn check(&self, event: &serde_json::Value) {
        if let Err(e) = self.schemas.validate(event, self.index) {
            panic!("an event does not match schema/trace-event.schema.json: {e:#}\n{event}");
        }
    }
}
