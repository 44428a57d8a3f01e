//! Decoding ring buffer records into [`Record`]s ([`TraceEvent`] for hooks that see a
//! packet, [`FibEvent`] for routing lookups, told apart by the kind their [`RecordHead`]
//! names): the one place raw record bytes become events, and the accessors for their
//! variable-length parts (header bytes, interface names).

use pktpath_common::trace::{FibEvent, RECORD_FIB, RECORD_SKB, RecordHead, TraceEvent};

/// A ring buffer record that is neither a [`TraceEvent`] nor a [`FibEvent`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error(
        "trace record of {got} bytes, expected {expected}: tracer and pktpath versions differ?"
    )]
    Short { got: usize, expected: usize },
    #[error("trace record of unknown kind {0}: tracer and pktpath versions differ?")]
    Kind(u32),
}

/// One record of the tracer's ring buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A hook that saw a packet (`sk_buff`).
    Skb(TraceEvent),
    /// A routing table lookup.
    Fib(FibEvent),
    /// A decision of `pktpath route`'s data path (from its own ring, see [`super::tap`]).
    Tc(pktpath_common::route::TapEvent),
    /// A decision of the data path's XDP program, with the frame's headers (from the same
    /// ring).
    Xdp(pktpath_common::route::XdpTapEvent),
}

impl Record {
    /// `bpf_ktime_get_ns()` at the hook.
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Skb(e) => e.ts_ns,
            Self::Fib(e) => e.ts_ns,
            Self::Tc(e) => e.ts_ns,
            Self::Xdp(e) => e.tap.ts_ns,
        }
    }
}

/// Decodes one record of either kind, by the kind its head names.
pub fn decode_record(bytes: &[u8]) -> Result<Record, WireError> {
    match read::<RecordHead>(bytes)?.kind {
        RECORD_SKB => read(bytes).map(Record::Skb),
        RECORD_FIB => read(bytes).map(Record::Fib),
        kind => Err(WireError::Kind(kind)),
    }
}

/// A `T` from the start of `bytes` (any alignment), which must hold at least its size.
fn read<T: aya::Pod>(bytes: &[u8]) -> Result<T, WireError> {
    let expected = size_of::<T>();
    if bytes.len() < expected {
        return Err(WireError::Short {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: T is plain data (Pod: every bit pattern valid) and `bytes` holds at least its
    // size; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A NUL-padded kernel name (interface, qdisc kind) as a string.
pub fn name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Decodes one packet record (as read from the ring buffer, any alignment).
pub fn decode(bytes: &[u8]) -> Result<TraceEvent, WireError> {
    let ev: TraceEvent = read(bytes)?;
    match ev.head.kind {
        RECORD_SKB => Ok(ev),
        kind => Err(WireError::Kind(kind)),
    }
}

/// The valid packet header bytes of an event (from the network header on).
pub fn header(ev: &TraceEvent) -> &[u8] {
    let n = usize::from(ev.header_len).min(ev.header.len());
    &ev.header[..n]
}

/// The interface name in an event, up to its NUL.
pub fn ifname(ev: &TraceEvent) -> String {
    name(&ev.ifname)
}

#[cfg(test)]
mod tests {
    use pktpath_common::trace::{HEADER_BYTES, Hook};

    use super::*;

    fn sample() -> TraceEvent {
        let mut ifname = [0u8; 16];
        ifname[..4].copy_from_slice(b"veth");
        let mut header = [0u8; HEADER_BYTES];
        header[0] = 0x45;
        TraceEvent {
            head: pktpath_common::trace::RecordHead::SKB,
            ts_ns: 1_000_000_123,
            skb_addr: 0xffff_8880_1234_5600,
            location: 0,
            buffer: 0,
            netns: 4_026_531_840,
            ifindex: 7,
            len: 84,
            mark: 0,
            drop_reason: 0,
            qdisc_handle: 0,
            flags: 0,
            _pad: 0,
            hook: Hook::NetifReceiveSkb as u16,
            protocol: 0x0800,
            header_len: 84,
            cpu: 1,
            ifname,
            header,
            qdisc_kind: [0; 16],
        }
    }

    #[test]
    fn records_decode_at_any_alignment() {
        let ev = sample();
        // SAFETY: viewing a repr(C) value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const TraceEvent).cast::<u8>(),
                size_of::<TraceEvent>(),
            )
        };
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(bytes);
        let got = decode(&shifted[1..]).unwrap();
        assert_eq!(got, ev);
        assert_eq!(ifname(&got), "veth");
        assert_eq!(header(&got).len(), 84);
        assert_eq!(header(&got)[0], 0x45);
    }

    #[test]
    fn header_length_is_bounded_by_the_buffer() {
        let mut ev = sample();
        ev.header_len = 1000;
        assert_eq!(header(&ev).len(), HEADER_BYTES);
        ev.header_len = 0;
        assert!(header(&ev).is_empty());
        ev.ifname = [b'x'; 16];
        assert_eq!(ifname(&ev), "x".repeat(16));
    }

    #[test]
    fn records_are_told_apart_by_kind() {
        let ev = sample();
        // SAFETY: viewing a repr(C) value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const TraceEvent).cast::<u8>(),
                size_of::<TraceEvent>(),
            )
        };
        assert_eq!(decode_record(bytes).unwrap(), Record::Skb(ev));
        let mut fib = [0u8; size_of::<FibEvent>()];
        fib[..4].copy_from_slice(&RECORD_FIB.to_ne_bytes());
        fib[8..16].copy_from_slice(&77u64.to_ne_bytes());
        match decode_record(&fib).unwrap() {
            Record::Fib(f) => assert_eq!(f.ts_ns, 77),
            other => panic!("a fib record decoded as {other:?}"),
        }
        assert!(decode_record(&fib[..50]).is_err());
        // An unknown kind is refused whatever the record's size, and a packet's decoding
        // takes nothing but a packet record.
        let mut odd = bytes.to_vec();
        odd[..4].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(decode_record(&odd), Err(WireError::Kind(9)));
        odd[..4].copy_from_slice(&RECORD_FIB.to_ne_bytes());
        assert_eq!(decode(&odd), Err(WireError::Kind(RECORD_FIB)));
    }

    #[test]
    fn short_records_are_refused() {
        let err = decode(&[0u8; 10]).unwrap_err();
        assert_eq!(
            err,
            WireError::Short {
                got: 10,
                expected: size_of::<TraceEvent>()
            }
        );
        assert!(err.to_string().contains("expected"));
    }
}
