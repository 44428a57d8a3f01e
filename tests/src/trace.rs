//! Running the tracer inside a test: start a collector with a configuration, then gather
//! rich events until a condition holds or a deadline passes.

use std::time::{Duration, Instant};

use pktpath_common::trace::Hook;
use pktpath_core::trace::{Collector, Event, EventBuilder, TraceConfig};

/// A running collector and the builder that turns its records into events.
pub struct Tracing {
    pub collector: Collector,
    pub builder: EventBuilder,
}

impl Tracing {
    /// Loads the tracer and attaches `cfg`'s hooks; ready to see packets when it returns.
    pub fn start(cfg: &TraceConfig) -> Self {
        let collector = Collector::start(cfg).expect("load and attach the tracer");
        let builder = EventBuilder::new(collector.drop_reasons().clone());
        Self { collector, builder }
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
