//! eBPF objects that exist only for pktpath's tests and benchmarks, one `[[bin]]` per
//! object: `filtertest` (the trace filter run on a frame, for the kernel-against-user-space
//! filter tests), `floor` and `linear` (the classification benchmark's baselines) and
//! `hookfloor` (empty programs on the tracer's hooks). `pktpath-tests` builds and embeds
//! them (its build.rs); the `pktpath` binary never carries them.
//!
//! The library is empty: it exists so `pktpath-tests` can list this crate as a build
//! dependency, and cargo rebuilds the objects when the crates they use change.
#![no_std]
