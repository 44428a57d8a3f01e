//! Where a trace's events go: one [`Sink`] per output format, as text lines ([`TextSink`]),
//! JSON Lines ([`JsonSink`]) or pcapng packets ([`PcapngSink`]), and [`Output`], the one
//! of them a command chose. A [`Session`] hands each event to its sink, flushes it at the
//! end of every poll round and asks it for the summary at the end.
//!
//! [`Session`]: super::session::Session

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
};

use super::{
    event::Event,
    pcapng::{PcapngWriter, Written},
    session::SessionError,
    summary::Report,
    wire::Record,
};

/// Bytes of output gathered before a write(2) (also written at the end of each poll round).
/// Rust's stdout is line buffered: one write(2) per event, and a scan of every piece serde
/// writes for a newline.
pub const OUT_BUFFER: usize = 256 * 1024;

/// One output format of a trace.
pub trait Sink {
    /// Writes `ev`, built from the wire record `rec` (none: a saved trace's event); text
    /// shows times since `t0_ns`. Returns whether it counts as written (pcapng writes
    /// packets, not routing lookups or decisions).
    fn event(&mut self, ev: &Event, rec: Option<&Record>, t0_ns: u64)
    -> Result<bool, SessionError>;

    /// Hands what was written on (end of a poll round: live output stays live).
    fn flush(&mut self) -> Result<(), SessionError>;

    /// Completes the output after its last event.
    fn close(&mut self) -> Result<(), SessionError> {
        self.flush()
    }

    /// A line for the user once the output is closed, after `events` events.
    fn closing_note(&self, _events: u64) -> Option<String> {
        None
    }

    /// Writes and flushes the summary after the events.
    fn summary(&mut self, report: &Report) -> Result<(), SessionError>;
}

/// One line of text per event ([`Event::to_text`]), and the summary as text.
#[derive(Debug)]
pub struct TextSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(OUT_BUFFER, out),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(
        &mut self,
        ev: &Event,
        _rec: Option<&Record>,
        t0_ns: u64,
    ) -> Result<bool, SessionError> {
        writeln!(self.out, "{}", ev.to_text(t0_ns))?;
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), SessionError> {
        Ok(self.out.flush()?)
    }

    fn summary(&mut self, report: &Report) -> Result<(), SessionError> {
        write!(self.out, "{}", report.to_text())?;
        Ok(self.out.flush()?)
    }
}

/// JSON Lines: one event object per line ([`Event::write_json`]), the summary as one
/// `{"summary": {...}}` object on the last line.
#[derive(Debug)]
pub struct JsonSink<W: Write> {
    out: BufWriter<W>,
    /// Lines are written straight into this buffer (not one by one into `out`, a copy per
    /// event), which goes to `out` when full and at every flush.
    lines: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(OUT_BUFFER, out),
            lines: Vec::with_capacity(OUT_BUFFER + 4096),
        }
    }

    /// Moves the gathered lines to `out` (they are gone even if that fails).
    fn pass_on(&mut self) -> std::io::Result<()> {
        let written = self.out.write_all(&self.lines);
        self.lines.clear();
        written
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(
        &mut self,
        ev: &Event,
        _rec: Option<&Record>,
        _t0_ns: u64,
    ) -> Result<bool, SessionError> {
        ev.write_json(&mut self.lines);
        self.lines.push(b'\n');
        if self.lines.len() >= OUT_BUFFER {
            self.pass_on()?;
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), SessionError> {
        self.pass_on()?;
        Ok(self.out.flush()?)
    }

    fn summary(&mut self, report: &Report) -> Result<(), SessionError> {
        self.pass_on()?;
        serde_json::to_writer(&mut self.out, &serde_json::json!({ "summary": report }))
            .map_err(std::io::Error::from)?;
        writeln!(self.out)?;
        Ok(self.out.flush()?)
    }
}

/// Packets written as pcapng to a file; the summary goes as text to another writer
/// (standard output).
pub struct PcapngSink<W: Write, O: Write> {
    /// None once closed.
    pcapng: Option<PcapngWriter<W>>,
    /// Where the file is, for the closing note.
    path: PathBuf,
    summary: TextSink<O>,
    /// Events pcapng cannot carry (not IP).
    skipped: u64,
    /// Interfaces described in the file when it was closed.
    interfaces: usize,
}

impl<W: Write, O: Write> PcapngSink<W, O> {
    /// Writes packets with `pcapng` (a section started on the file at `path`), the summary
    /// as text to `summary`.
    pub fn new(pcapng: PcapngWriter<W>, path: PathBuf, summary: O) -> Self {
        Self {
            pcapng: Some(pcapng),
            path,
            summary: TextSink::new(summary),
            skipped: 0,
            interfaces: 0,
        }
    }
}

impl<W: Write, O: Write> Sink for PcapngSink<W, O> {
    fn event(
        &mut self,
        ev: &Event,
        rec: Option<&Record>,
        _t0_ns: u64,
    ) -> Result<bool, SessionError> {
        let Some(w) = &mut self.pcapng else {
            return Ok(false);
        };
        match rec {
            Some(Record::Skb(raw)) => match w.write(raw, ev)? {
                Written::Packet { .. } => Ok(true),
                Written::Skipped(_) => {
                    self.skipped += 1;
                    Ok(false)
                }
            },
            Some(Record::Fib(_)) => {
                w.note_route(ev);
                Ok(false)
            }
            Some(Record::Tc(_) | Record::Xdp(_)) | None => Ok(false),
        }
    }

    fn flush(&mut self) -> Result<(), SessionError> {
        match &mut self.pcapng {
            Some(w) => Ok(w.flush()?),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<(), SessionError> {
        let Some(w) = self.pcapng.take() else {
            return Ok(());
        };
        self.interfaces = w.interfaces();
        w.finish()?;
        Ok(())
    }

    fn closing_note(&self, events: u64) -> Option<String> {
        Some(format!(
            "{events} packets on {} interfaces written to {}, {} non-IP events skipped",
            self.interfaces,
            self.path.display(),
            self.skipped
        ))
    }

    fn summary(&mut self, report: &Report) -> Result<(), SessionError> {
        self.summary.summary(report)
    }
}

/// The sink of the output format chosen: one type for the three, so that a command picks
/// one and hands it on (one indirect call per event: a few ns of the ~700 ns an event
/// takes to build and write).
pub enum Output<W: Write, F: Write> {
    Text(TextSink<W>),
    Json(JsonSink<W>),
    /// Packets to a file (`F`), the summary as text to `W`.
    Pcapng(PcapngSink<F, W>),
}

impl<W: Write, F: Write> Output<W, F> {
    fn chosen(&mut self) -> &mut dyn Sink {
        match self {
            Self::Text(s) => s,
            Self::Json(s) => s,
            Self::Pcapng(s) => s,
        }
    }
}

impl<W: Write, F: Write> Sink for Output<W, F> {
    fn event(
        &mut self,
        ev: &Event,
        rec: Option<&Record>,
        t0_ns: u64,
    ) -> Result<bool, SessionError> {
        self.chosen().event(ev, rec, t0_ns)
    }

    fn flush(&mut self) -> Result<(), SessionError> {
        self.chosen().flush()
    }

    fn close(&mut self) -> Result<(), SessionError> {
        self.chosen().close()
    }

    fn closing_note(&self, events: u64) -> Option<String> {
        match self {
            Self::Pcapng(s) => s.closing_note(events),
            Self::Text(_) | Self::Json(_) => None,
        }
    }

    fn summary(&mut self, report: &Report) -> Result<(), SessionError> {
        self.chosen().summary(report)
    }
}
