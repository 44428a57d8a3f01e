//! The tracer's user side: what to trace ([`config`]), running it ([`collector`]), decoding
//! what the hooks write ([`wire`], [`headers`]), and turning records into the events pktpath
//! prints ([`event`]) with journeys ([`journey`], packets known across rewrites by their
//! [`identity`]), drop reasons ([`drops`]) and kernel
//! symbols ([`kallsyms`]); the pcap-like filter language ([`filter`]); writing packets as
//! pcapng ([`pcapng`]); and what a trace adds up to ([`summary`], its latency percentiles
//! from [`latency`]). A [`Session`] runs a trace from start to end, writing to one of the
//! output formats of [`sink`].

pub mod collector;
pub mod config;
pub mod diff;
pub mod drops;
pub mod event;
pub mod fasthash;
pub mod filter;
pub mod headers;
pub mod identity;
pub mod journey;
pub mod kallsyms;
pub mod latency;
pub mod name;
pub mod pcapng;
pub mod saved;
pub mod schema;
pub mod session;
pub mod sink;
pub mod summary;
pub mod tap;
pub mod wire;

pub use collector::{Collector, HookStartup, Startup, TraceError};
pub use config::{ConfigError, TraceConfig, TraceRequest};
pub use event::{Event, EventBuilder, SCHEMA_VERSION};
pub use session::{Session, SessionError, SessionOptions};
pub use sink::{JsonSink, PcapngSink, Sink, TextSink};
pub use summary::{Report, Summary};
