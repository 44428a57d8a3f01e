//! Latency percentiles in bounded memory: [`Latencies`] counts nanosecond samples in a
//! fixed-size HdrHistogram (the `hdrhistogram` crate) and gives nearest-rank percentiles
//! within a documented precision. The trace summary keeps one per hop pair (and one for the
//! demo's span); the benchmarks use it for their latency rows, so every latency percentile
//! pktpath reports is computed here.

use hdrhistogram::Histogram;

/// The highest latency the histogram tells apart: one hour, in ns.
pub const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept: 3 makes each bucket at most 1/1024 of its values wide.
const SIGNIFICANT_FIGURES: u8 = 3;

/// Latency samples (ns) and their count, maximum and nearest-rank percentiles.
///
/// Precision: `count` and `max` are exact. A percentile is the nearest-rank value of the
/// samples, exact below 2,048 ns and otherwise at most 1/1024 (under 0.1 %) below it, never
/// above: the lowest value of the histogram bucket that holds the sample of that rank.
///
/// Memory: the histogram covers 1 ns to one hour ([`HIGHEST_NS`]) at 3 significant figures,
/// 33,792 counters (264 KiB), allocated once; it never resizes, so it does not grow with the
/// number of samples however long a trace runs. A sample above one hour is counted as one
/// hour (a percentile that falls on it reads just under an hour); `max` still has its value.
///
/// HdrHistogram (the crate) rather than a histogram of pktpath's own: a well-kept
/// implementation with a stated precision, whose size with a fixed range is known up front
/// and stays constant.
pub struct Latencies {
    histogram: Histogram<u64>,
    max: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Latencies {
    // The counters themselves say nothing to a reader.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("count", &self.count())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Latencies {
    /// No samples yet; the whole histogram is allocated here.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, HIGHEST_NS, SIGNIFICANT_FIGURES)
            .expect("1 ns to one hour at 3 significant figures is a valid histogram");
        Self { histogram, max: 0 }
    }

    /// Adds one sample; a value above [`HIGHEST_NS`] is counted as [`HIGHEST_NS`].
    pub fn add(&mut self, ns: u64) {
        // Its last bucket reaches on to 2^42 ns: clamped here, the limit is one hour. Never
        // fails and never resizes (auto-resize is off).
        self.histogram.saturating_record(ns.min(HIGHEST_NS));
        self.max = self.max.max(ns);
    }

    /// Samples added.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The largest sample added, exactly; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Nearest-rank percentiles `ps` (each 0-100, larger taken as 100) within the precision
    /// above; 0 when empty.
    pub fn percentiles<const N: usize>(&self, ps: [u64; N]) -> [u64; N] {
        let count = self.count();
        if count == 0 {
            return [0; N];
        }
        ps.map(|p| {
            let rank = (p.min(100) * count).div_ceil(100).max(1);
            // hdrhistogram takes a quantile q and rounds q * count up to a rank in floating
            // point, where p / 100 can land just past a whole rank (0.07 * 100 is
            // 7.000000000000001: rank 8); the middle of the rank rounds up to the rank.
            let q = (rank as f64 - 0.5) / count as f64;
            self.histogram
                .lowest_equivalent(self.histogram.value_at_quantile(q))
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: nearest-rank percentile `p` of sorted, non-empty `v`.
    fn nearest_rank(v: &[u64], p: u64) -> u64 {
        let rank = (p as usize * v.len()).div_ceil(100).max(1);
        v[rank.min(v.len()) - 1]
    }

    /// Each of `l`'s percentiles `ps` is within the precision contract of the exact one.
    fn assert_within_contract<const N: usize>(l: &Latencies, sorted: &[u64], ps: [u64; N]) {
        for (p, got) in ps.into_iter().zip(l.percentiles(ps)) {
            let exact = nearest_rank(sorted, p).min(HIGHEST_NS);
            if exact < 2048 {
                assert_eq!(got, exact, "p{p} of {}", sorted.len());
            } else {
                assert!(
                    got <= exact && exact - got <= exact / 1024,
                    "p{p} of {}: {got} vs exact {exact}",
                    sorted.len()
                );
            }
        }
    }

    fn fed(samples: &[u64]) -> (Latencies, Vec<u64>) {
        let mut l = Latencies::new();
        for &v in samples {
            l.add(v);
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        (l, sorted)
    }

    #[test]
    fn the_reference_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(
            [0, 50, 90, 99, 100].map(|p| nearest_rank(&v, p)),
            [1, 50, 90, 99, 100]
        );
        assert_eq!(nearest_rank(&[7], 99), 7);
        assert_eq!(nearest_rank(&[1, 2], 50), 1);
    }

    #[test]
    fn every_percentile_lands_on_its_rank() {
        // Neighbours more than 1/1024 apart, so a rank off by one breaks the contract; among
        // the counts, some where p / 100 * count is just past a whole number for some p.
        for n in [1, 2, 25, 50, 100, 180, 300, 1000] {
            let samples: Vec<u64> = (1..=n).rev().map(|i| i * 100_000).collect();
            let (l, sorted) = fed(&samples);
            assert_within_contract(&l, &sorted, std::array::from_fn::<_, 101, _>(|p| p as u64));
        }
    }

    #[test]
    fn small_values_are_exact_and_an_empty_set_reads_zero() {
        let (l, _) = fed(&[3, 2047, 1, 0, 2047]);
        assert_eq!(l.percentiles([1, 40, 60, 80, 100]), [0, 1, 3, 2047, 2047]);
        assert_eq!((l.count(), l.max()), (5, 2047));
        assert_eq!(Latencies::new().percentiles([50, 99]), [0, 0]);
        assert_eq!((Latencies::new().count(), Latencies::new().max()), (0, 0));
    }

    /// Values of any magnitude, most far past the range.
    fn any_magnitude() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(x, shift)| x >> shift)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any magnitude, far past the range among them: about 300,000 values over the cases.
        #[test]
        fn a_value_out_of_range_counts_as_an_hour_and_nothing_grows(
            values in proptest::collection::vec(any_magnitude(), 1..2000)
        ) {
            let size = Latencies::new().histogram.distinct_values();
            prop_assert_eq!(size, 33_792, "the size the doc comment states");
            let mut l = Latencies::new();
            for &x in &values {
                l.add(x);
            }
            l.add(u64::MAX);
            prop_assert_eq!(l.histogram.distinct_values(), size);
            prop_assert_eq!((l.count(), l.max()), (values.len() as u64 + 1, u64::MAX));
            let [top] = l.percentiles([100]);
            prop_assert!(
                top <= HIGHEST_NS && HIGHEST_NS - top <= HIGHEST_NS / 1024,
                "{}",
                top
            );
        }
    }

    /// Values of every magnitude up to a few hours, the bucket edges among them.
    fn latency() -> impl Strategy<Value = u64> {
        prop_oneof![
            proptest::sample::select(vec![0, 1, 2047, 2048, 2049, 4095, 4096, HIGHEST_NS]),
            (0..4 * HIGHEST_NS, 0u32..43).prop_map(|(x, shift)| x >> shift),
        ]
    }

    proptest! {
        /// Every percentile of any samples is within the contract; count and max exact.
        #[test]
        fn percentiles_are_nearest_rank_within_a_1024th(
            samples in proptest::collection::vec(latency(), 1..2000)
        ) {
            let (l, sorted) = fed(&samples);
            prop_assert_eq!(l.count(), samples.len() as u64);
            prop_assert_eq!(l.max(), *sorted.last().unwrap());
            // The usual ones, and some whose p / 100 is inexact in floating point.
            assert_within_contract(&l, &sorted, [0, 1, 7, 14, 28, 50, 56, 90, 99, 100]);
        }
    }
}
