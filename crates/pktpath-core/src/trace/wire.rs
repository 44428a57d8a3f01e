//! Decoding ring buffer records into [`TraceEvent`]s: the one place raw record bytes become
//! events, and the accessors for their variable-length parts (header bytes, interface name).

use pktpath_common::trace::TraceEvent;

/// A ring buffer record that is not a [`TraceEvent`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("trace record of {got} bytes, expected {expected}: tracer and pktpath versions differ?")]
pub struct WireError {
    pub got: usize,
    pub expected: usize,
}

/// Decodes one record (as read from the ring buffer, any alignment).
pub fn decode(bytes: &[u8]) -> Result<TraceEvent, WireError> {
    let expected = size_of::<TraceEvent>();
    if bytes.len() < expected {
        return Err(WireError {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: TraceEvent is repr(C) plain data (every bit pattern valid) and `bytes` holds at
    // least size_of::<TraceEvent>() bytes; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TraceEvent>()) })
}

/// The valid packet header bytes of an event (from the network header on).
pub fn header(ev: &TraceEvent) -> &[u8] {
    let n = usize::from(ev.header_len).min(ev.header.len());
    &ev.header[..n]
}

/// The interface name in an event, up to its NUL.
pub fn ifname(ev: &TraceEvent) -> String {
    let end = ev
        .ifname
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.ifname.len());
    String::from_utf8_lossy(&ev.ifname[..end]).into_owned()
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
            ts_ns: 1_000_000_123,
            skb_addr: 0xffff_8880_1234_5600,
            location: 0,
            netns: 4_026_531_840,
            ifindex: 7,
            len: 84,
            mark: 0,
            drop_reason: 0,
            _pad: 0,
            hook: Hook::NetifReceiveSkb as u16,
            protocol: 0x0800,
            header_len: 84,
            cpu: 1,
            ifname,
            header,
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
    fn short_records_are_refused() {
        let err = decode(&[0u8; 10]).unwrap_err();
        assert_eq!(err.got, 10);
        assert!(err.to_string().contains("expected"));
    }
}
