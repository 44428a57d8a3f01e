//! A trace from start to end: records read from the collector, built into events along
//! their journeys, written to a [`Sink`], added up in a [`Summary`], and the summary
//! written at the end ([`Session`]); a saved trace read back the same way ([`replay`]).
//! What the user should hear on the way (events lost, the counts at the end) goes to a
//! `notes` callback, one line each.

use std::time::{Duration, Instant};

use super::{
    collector::{Collector, TraceError},
    event::{EventBuilder, KallsymsLoading},
    pcapng::PcapngError,
    saved::{SavedFilter, SavedTrace},
    sink::Sink,
    summary::Summary,
    tap::Tap,
    wire::Record,
};

/// A trace session failed: reading the ring buffer, or writing the output.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Pcapng(#[from] PcapngError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// When a session stops, and what it writes at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionOptions {
    /// Stop after this many events written.
    pub count: Option<u64>,
    /// Stop after this long (a live trace).
    pub duration: Option<Duration>,
    /// A filter expression was given: routing lookups it could not judge are left out
    /// (see [`EventBuilder::is_unjudged_lookup`]).
    pub filtered: bool,
    /// Write the summary after the events.
    pub summary: bool,
}

/// A poll round of fewer records than this is followed by a [`COALESCE`] pause.
const COALESCE_BELOW: usize = 256;

/// How long the reader lets records gather after a small round.
const COALESCE: Duration = Duration::from_millis(1);

/// How long one poll waits for records at most (between checks of the stop condition).
const POLL_WAIT: Duration = Duration::from_millis(200);

/// How often the lost count is checked while tracing.
const LOST_CHECK: Duration = Duration::from_secs(1);

/// A live trace: a started [`Collector`] and the [`EventBuilder`] that follows its packets.
pub struct Session {
    collector: Collector,
    builder: EventBuilder,
    options: SessionOptions,
}

impl Session {
    /// A session reading `collector`, following the decisions of the data path `tap`
    /// listens to when given, naming drop locations with the symbols `kallsyms` is reading.
    pub fn new(
        mut collector: Collector,
        kallsyms: Option<KallsymsLoading>,
        tap: Option<Tap>,
        options: SessionOptions,
    ) -> Self {
        let mut builder =
            EventBuilder::new(collector.drop_reasons().clone()).with_kallsyms_loading(kallsyms);
        if let Some(tap) = tap {
            builder = builder.with_policies(tap.ids().clone());
            collector.follow(tap);
        }
        Self {
            collector,
            builder,
            options,
        }
    }

    /// The collector (its hooks and start-up times, for a banner).
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Traces until `stop` says so or the count or duration is reached, writing to `sink`;
    /// then detaches the hooks, closes the sink and writes the summary (when asked for and
    /// nothing failed). `notes` hears of lost events as their count grows (checked once a
    /// second), the sink's closing note, the short summary and the final counts.
    pub fn run(
        mut self,
        sink: &mut impl Sink,
        stop: impl Fn() -> bool,
        mut notes: impl FnMut(String),
    ) -> Result<(), SessionError> {
        let count = self.options.count;
        let deadline = self.options.duration.map(|d| Instant::now() + d);
        let mut summary = Summary::new();
        let mut events: u64 = 0;
        let mut t0: Option<u64> = None;
        let mut lost_reported = 0;
        let mut lost_checked = Instant::now();
        let mut result = Ok(());
        let mut last = false;
        while !last {
            // The trace ends: one more read hands over what the collector held back.
            last = stop()
                || count.is_some_and(|c| events >= c)
                || deadline.is_some_and(|d| Instant::now() >= d);
            if last {
                self.collector.release_held();
            }
            let wait = if last {
                Duration::ZERO
            } else {
                deadline.map_or(POLL_WAIT, |d| {
                    d.saturating_duration_since(Instant::now()).min(POLL_WAIT)
                })
            };
            let mut write_err = None;
            let (builder, filtered) = (&mut self.builder, self.options.filtered);
            let polled = self.collector.poll(wait, |rec| {
                if write_err.is_some() || count.is_some_and(|c| events >= c) {
                    return;
                }
                let ev = match &rec {
                    Record::Tc(t) if !builder.follows(t.skb) => return,
                    // Kept when it continues the journey of a packet the trace reported
                    // (or, below, begins one the trace reports next).
                    Record::Xdp(x) => match builder.build_xdp(x) {
                        Some(ev) => ev,
                        None => return,
                    },
                    _ => builder.build_record(&rec),
                };
                if filtered && EventBuilder::is_unjudged_lookup(&ev) {
                    return;
                }
                // An XDP decision that was its packet's first sighting, before the event
                // that carries the packet on.
                let first = builder.take_preceding();
                let both = first.as_ref().map(|p| (p, None));
                for (ev, rec) in both.into_iter().chain([(&ev, Some(&rec))]) {
                    if count.is_some_and(|c| events >= c) {
                        break;
                    }
                    summary.add(ev);
                    let t = *t0.get_or_insert(ev.ts_ns);
                    match sink.event(ev, rec, t) {
                        Ok(true) => events += 1,
                        Ok(false) => {}
                        Err(e) => write_err = Some(e),
                    }
                }
            });
            let round = match polled {
                Ok(n) => n,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            // Live: when the count grew.
            if lost_checked.elapsed() >= LOST_CHECK {
                lost_checked = Instant::now();
                if let Ok(lost) = self.collector.lost()
                    && lost > lost_reported
                {
                    notes(format!("{lost} lost"));
                    lost_reported = lost;
                }
            }
            let flushed = sink.flush();
            if let Some(e) = write_err.or_else(|| flushed.err()) {
                result = Err(e);
                break;
            }
            // A small round means the reader caught up with the hooks. Waiting a moment
            // before the next makes each round (a poll, a wake-up, an output write) carry a
            // millisecond of a steady stream rather than one packet's few hops: at a few
            // hundred thousand events a second, those per-round costs were what the reader
            // ran out of time on. Output stays live.
            if (1..COALESCE_BELOW).contains(&round) {
                std::thread::sleep(COALESCE);
            }
        }
        // Output of a round a poll error ended before its flush.
        result = result.and(sink.flush());
        let lost = self.collector.lost();
        drop(self.collector);
        result = result.and(sink.close());
        if let Some(note) = sink.closing_note(events) {
            notes(note);
        }
        let report = summary.report(lost.as_ref().ok().copied());
        if self.options.summary && result.is_ok() {
            result = sink.summary(&report);
        }
        notes(format!("summary: {}", report.short()));
        notes(match lost {
            Ok(lost) => format!("{events} events, {lost} lost"),
            Err(e) => format!("{events} events, lost count unavailable: {e}"),
        });
        result
    }
}

/// The events of a saved trace through `filter` to `sink`, as the live trace would have
/// written them (times shown since its first event), up to `options.count`; then the
/// summary when asked for. `notes` hears the short summary and the counts.
pub fn replay(
    saved: &SavedTrace,
    filter: &mut SavedFilter,
    options: SessionOptions,
    sink: &mut impl Sink,
    mut notes: impl FnMut(String),
) -> Result<(), SessionError> {
    let mut summary = Summary::new();
    let mut events: u64 = 0;
    let t0 = saved.events.first().map_or(0, |e| e.ts_ns);
    for ev in &saved.events {
        if options.count.is_some_and(|c| events >= c) {
            break;
        }
        if !filter.wants(ev) {
            continue;
        }
        summary.add(ev);
        if sink.event(ev, None, t0)? {
            events += 1;
        }
    }
    sink.close()?;
    let report = summary.report(saved.lost);
    if options.summary {
        sink.summary(&report)?;
    }
    notes(format!("summary: {}", report.short()));
    notes(match saved.lost {
        Some(lost) => format!("{events} events, {lost} lost when recorded"),
        None => format!("{events} events (the file does not say how many were lost)"),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{
        Event,
        sink::{JsonSink, Output, TextSink},
    };

    fn saved() -> SavedTrace {
        let ev = |hop, ts_ns, hook| Event {
            schema_version: crate::trace::SCHEMA_VERSION,
            packet_id: 1,
            hop,
            ts_ns,
            hook,
            proto: "udp".into(),
            ifname: "veth-a".into(),
            ..Event::default()
        };
        SavedTrace {
            events: vec![
                ev(1, 1_000, "netif_receive_skb"),
                ev(2, 3_000, "consume_skb"),
            ],
            lost: Some(0),
        }
    }

    /// What a replay of [`saved`] writes (as JSON Lines or text) and the notes it makes.
    fn replayed(options: SessionOptions, json: bool) -> (String, Vec<String>) {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        let mut sink: Output<_, std::io::Sink> = if json {
            Output::Json(JsonSink::new(&mut out))
        } else {
            Output::Text(TextSink::new(&mut out))
        };
        let mut filter = SavedFilter::default();
        replay(&saved(), &mut filter, options, &mut sink, |n| notes.push(n)).unwrap();
        drop(sink);
        (String::from_utf8(out).unwrap(), notes)
    }

    #[test]
    fn a_replay_writes_the_events_then_the_summary_and_tells_the_counts() {
        let options = SessionOptions {
            summary: true,
            ..SessionOptions::default()
        };
        let (text, notes) = replayed(options, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, ev) in lines.iter().zip(&saved().events) {
            assert_eq!(*line, serde_json::to_string(ev).unwrap());
        }
        let summary: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(summary["summary"]["events"], 2, "{summary}");
        assert_eq!(
            notes.last().map(String::as_str),
            Some("2 events, 0 lost when recorded")
        );
    }

    #[test]
    fn a_replay_stops_at_the_count_and_times_text_from_the_first_event() {
        let options = SessionOptions {
            count: Some(1),
            ..SessionOptions::default()
        };
        let (text, _) = replayed(options, false);
        assert_eq!(text, format!("{}\n", saved().events[0].to_text(1_000)));
    }
}
