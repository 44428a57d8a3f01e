//! The kernel's clocks: the offset that turns `CLOCK_MONOTONIC` times (what
//! `bpf_ktime_get_ns` returns) into wall-clock `CLOCK_REALTIME` times.

use super::SysError;

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` in nanoseconds, measured once.
///
/// Precision: the offset is the midpoint of two realtime reads around one monotonic read,
/// so it is off by at most half the time between them (reported as [`Self::uncertainty_ns`],
/// typically well under a microsecond). Later NTP steps or slews of the wall clock are not
/// followed: times are exact relative to each other, wall-clock to within the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonotonicToRealtime {
    /// Nanoseconds to add to a monotonic time to get nanoseconds since the Unix epoch.
    pub offset_ns: i64,
    /// Half the gap between the two realtime reads.
    pub uncertainty_ns: u64,
}

impl MonotonicToRealtime {
    /// Measures the offset now (the best of a few tries).
    pub fn measure() -> Result<Self, SysError> {
        let mut best: Option<Self> = None;
        for _ in 0..5 {
            let before = now_ns(libc::CLOCK_REALTIME, "clock_gettime(CLOCK_REALTIME)")?;
            let mono = now_ns(libc::CLOCK_MONOTONIC, "clock_gettime(CLOCK_MONOTONIC)")?;
            let after = now_ns(libc::CLOCK_REALTIME, "clock_gettime(CLOCK_REALTIME)")?;
            let gap = after.saturating_sub(before);
            let try_ = Self {
                offset_ns: (before + gap / 2 - mono) as i64,
                uncertainty_ns: gap.unsigned_abs() as u64 / 2,
            };
            if best.is_none_or(|b| try_.uncertainty_ns < b.uncertainty_ns) {
                best = Some(try_);
            }
        }
        Ok(best.expect("measured at least once"))
    }

    /// A fixed offset (recorded traces, tests).
    pub fn fixed(offset_ns: i64) -> Self {
        Self {
            offset_ns,
            uncertainty_ns: 0,
        }
    }

    /// Nanoseconds since the Unix epoch for a monotonic time; 0 if it would be negative.
    pub fn to_realtime_ns(self, monotonic_ns: u64) -> u64 {
        let t = i128::from(monotonic_ns) + i128::from(self.offset_ns);
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> Result<u64, SysError> {
    Ok(now_ns(libc::CLOCK_MONOTONIC, "clock_gettime(CLOCK_MONOTONIC)")? as u64)
}

fn now_ns(clock: libc::clockid_t, call: &'static str) -> Result<i128, SysError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(SysError::last(call));
    }
    Ok(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_offset_maps_monotonic_now_to_wall_clock_now() {
        let m = MonotonicToRealtime::measure().unwrap();
        let mono = now_ns(libc::CLOCK_MONOTONIC, "mono").unwrap() as u64;
        let wall = now_ns(libc::CLOCK_REALTIME, "real").unwrap();
        let mapped = i128::from(m.to_realtime_ns(mono));
        // Same instant, give or take the reads in between.
        assert!((wall - mapped).abs() < 50_000_000, "{wall} vs {mapped}");
        assert!(m.uncertainty_ns < 10_000_000, "{m:?}");
    }

    #[test]
    fn fixed_offsets_add_and_clamp_at_the_epoch() {
        assert_eq!(MonotonicToRealtime::fixed(100).to_realtime_ns(5), 105);
        assert_eq!(MonotonicToRealtime::fixed(-100).to_realtime_ns(5), 0);
    }
}
