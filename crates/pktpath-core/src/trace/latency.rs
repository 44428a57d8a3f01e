//! Latency percentiles in bounded memory: [`Latencies`] counts nanosecond samples in
//! HdrHistogram buckets (the `hdrhistogram` crate's, 1 ns to one hour at 3 significant
//! figures) and gives nearest-rank percentiles within a documented precision. The trace
//! summary keeps one per hop pair (and one for the demo's span); the benchmarks use it for
//! their latency rows, so every latency percentile pktpath reports is computed here.

use hdrhistogram::Histogram;

/// The highest latency the histogram tells apart: one hour, in ns.
pub const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept: 3 makes each bucket at most 1/1024 of its values wide.
const SIGNIFICANT_FIGURES: u8 = 3;
/// Buckets a sparse count holds before the full histogram takes over (8 bytes each: 32 KiB,
/// an eighth of the histogram). A rare pair under heavy loss can use a thousand buckets in
/// a few minutes; a new bucket costs a move of the list's tail.
const SPARSE_MAX_BUCKETS: usize = 4096;
/// Samples a sparse count holds before the full histogram takes over: a pair this busy
/// records in constant time from then on.
const SPARSE_MAX_SAMPLES: u32 = 1 << 20;

/// Latency samples (ns) and their count, maximum and nearest-rank percentiles.
///
/// Precision: `count` and `max` are exact. A percentile is the nearest-rank value of the
/// samples, exact below 2,048 ns and otherwise at most 1/1024 (under 0.1 %) below it, never
/// above: the lowest value of the histogram bucket that holds the sample of that rank. A
/// sample above one hour ([`HIGHEST_NS`]) is counted as one hour (a percentile that falls on
/// it reads just under an hour); `max` still has its value.
///
/// Memory: the samples start in a sparse list of (bucket, count), 8 bytes per bucket
/// used, and move to the full histogram (33,792 counters, 264 KiB, allocated once and never
/// resized) when the list would pass 4,096 buckets or a million samples. A trace has a few
/// busy hop pairs, which take the full histogram within seconds, and many rare ones (a pair
/// of hops with a lost event between them is one), which stay at a few KiB; with a full
/// histogram each, every rare pair first seen late in a long trace would add 264 KiB to it.
/// Either way the memory does not grow with the number of samples however long a trace runs.
///
/// HdrHistogram (the crate) rather than a histogram of pktpath's own: a well-kept
/// implementation with a stated precision, whose size with a fixed range is known up front
/// and stays constant; the sparse list uses its buckets (see [`bucket_of`]).
pub struct Latencies {
    counts: Counts,
    max: u64,
}

/// The counts of [`Latencies`]: sparse while few buckets are used, then the histogram.
enum Counts {
    /// (bucket index, count) sorted by index, and the samples counted.
    Sparse(Vec<(u32, u32)>, u32),
    Full(Box<Histogram<u64>>),
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
    /// No samples yet; nothing allocated.
    pub fn new() -> Self {
        Self {
            counts: Counts::Sparse(Vec::new(), 0),
            max: 0,
        }
    }

    /// Adds one sample; a value above [`HIGHEST_NS`] is counted as [`HIGHEST_NS`].
    pub fn add(&mut self, ns: u64) {
        self.max = self.max.max(ns);
        // The histogram's last bucket reaches on to 2^42 ns: clamped here, the limit is one
        // hour.
        let ns = ns.min(HIGHEST_NS);
        match &mut self.counts {
            // Never fails and never resizes (auto-resize is off).
            Counts::Full(h) => h.saturating_record(ns),
            Counts::Sparse(buckets, samples) => {
                let b = bucket_of(ns);
                match buckets.binary_search_by_key(&b, |&(b, _)| b) {
                    Ok(i) => buckets[i].1 += 1,
                    Err(i) => buckets.insert(i, (b, 1)),
                }
                *samples += 1;
                if buckets.len() > SPARSE_MAX_BUCKETS || *samples >= SPARSE_MAX_SAMPLES {
                    self.counts = Counts::Full(Box::new(full(buckets)));
                }
            }
        }
    }

    /// Samples added.
    pub fn count(&self) -> u64 {
        match &self.counts {
            Counts::Sparse(_, samples) => u64::from(*samples),
            Counts::Full(h) => h.len(),
        }
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
            match &self.counts {
                Counts::Sparse(buckets, _) => {
                    let mut below = 0;
                    let (b, _) = buckets
                        .iter()
                        .find(|&&(_, n)| {
                            below += u64::from(n);
                            below >= rank
                        })
                        .expect("the rank is at most the count");
                    lowest_of(*b)
                }
                Counts::Full(h) => {
                    // hdrhistogram takes a quantile q and rounds q * count up to a rank in
                    // floating point, where p / 100 can land just past a whole rank (0.07 *
                    // 100 is 7.000000000000001: rank 8); the middle of the rank rounds up to
                    // the rank.
                    let q = (rank as f64 - 0.5) / count as f64;
                    h.lowest_equivalent(h.value_at_quantile(q))
                }
            }
        })
    }
}

/// The full histogram: 1 ns to one hour at 3 significant figures, holding `buckets`.
fn full(buckets: &[(u32, u32)]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, SIGNIFICANT_FIGURES)
        .expect("1 ns to one hour at 3 significant figures is a valid histogram");
    for &(b, n) in buckets {
        h.saturating_record_n(lowest_of(b), u64::from(n));
    }
    h
}

/// The index of the bucket of `ns` (at most [`HIGHEST_NS`]) in the full histogram, as
/// hdrhistogram computes it for a lowest value of 1 at 3 significant figures: 2,048
/// sub-buckets, one per ns below 2,048 ns; above, each power of two split in 1,024 buckets,
/// the bucket's width the power's 1/1024.
fn bucket_of(ns: u64) -> u32 {
    // Powers of two above 2,048 (0 below).
    let shift = 53 - (ns | 2047).leading_zeros();
    (shift << 10) + (ns >> shift) as u32
}

/// The lowest value of bucket `b` (see [`bucket_of`]).
fn lowest_of(b: u32) -> u64 {
    if b < 2048 {
        return u64::from(b);
    }
    let shift = (b >> 10) - 1;
    u64::from((b & 1023) + 1024) << shift
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
        fed_into(Latencies::new(), samples)
    }

    /// A [`Latencies`] with the full histogram from its first sample.
    fn full_from_start() -> Latencies {
        Latencies {
            counts: Counts::Full(Box::new(full(&[]))),
            max: 0,
        }
    }

    fn is_full(l: &Latencies) -> bool {
        matches!(l.counts, Counts::Full(_))
    }

    fn fed_into(mut l: Latencies, samples: &[u64]) -> (Latencies, Vec<u64>) {
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
            let all = std::array::from_fn::<_, 101, _>(|p| p as u64);
            let (l, sorted) = fed(&samples);
            assert!(!is_full(&l));
            assert_within_contract(&l, &sorted, all);
            let (l, sorted) = fed_into(full_from_start(), &samples);
            assert_within_contract(&l, &sorted, all);
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

        /// Any magnitude, far past the range among them (about 300,000 values over the
        /// cases), sparse and in the full histogram: nothing grows past its stated size.
        #[test]
        fn a_value_out_of_range_counts_as_an_hour_and_nothing_grows(
            values in proptest::collection::vec(any_magnitude(), 1..2000)
        ) {
            for start in [Latencies::new(), full_from_start()] {
                let (mut l, _) = fed_into(start, &values);
                l.add(u64::MAX);
                match &l.counts {
                    Counts::Sparse(buckets, _) => {
                        prop_assert!(buckets.len() <= SPARSE_MAX_BUCKETS)
                    }
                    Counts::Full(h) => {
                        prop_assert_eq!(h.distinct_values(), 33_792, "the size the doc states")
                    }
                }
                prop_assert_eq!((l.count(), l.max()), (values.len() as u64 + 1, u64::MAX));
                let [top] = l.percentiles([100]);
                prop_assert!(
                    top <= HIGHEST_NS && HIGHEST_NS - top <= HIGHEST_NS / 1024,
                    "{}",
                    top
                );
            }
        }
    }

    #[test]
    fn a_rare_pair_stays_small_and_a_busy_one_takes_the_histogram() {
        // A rare hop pair: a few thousand samples, 400 values from 5 to 25 us.
        let mut l = Latencies::new();
        for i in 0..5_000u64 {
            l.add(5_000 + (i * 7_919) % 400 * 50);
        }
        let Counts::Sparse(buckets, 5_000) = &l.counts else {
            panic!("a few hundred buckets used, not sparse");
        };
        assert!(buckets.len() <= SPARSE_MAX_BUCKETS, "{}", buckets.len());
        assert!(buckets.capacity() * 8 <= 8 * 1024, "{}", buckets.capacity());
        // One more bucket than the list holds: the histogram, the percentiles unchanged.
        let mut l = Latencies::new();
        let samples: Vec<u64> = (0..=SPARSE_MAX_BUCKETS as u32).map(lowest_of).collect();
        for (i, &v) in samples.iter().enumerate() {
            l.add(v);
            assert_eq!(is_full(&l), i == SPARSE_MAX_BUCKETS, "after {i}");
        }
        let (from_start, _) = fed_into(full_from_start(), &samples);
        let ps = [0, 1, 50, 90, 99, 100];
        assert_eq!(l.percentiles(ps), from_start.percentiles(ps));
        // A busy pair in few buckets: the histogram after a million samples.
        let mut l = Latencies::new();
        for i in 0..u64::from(SPARSE_MAX_SAMPLES) {
            l.add(1_000 + i % 7);
        }
        assert!(is_full(&l));
        assert_eq!(l.count(), u64::from(SPARSE_MAX_SAMPLES));
        assert_eq!(l.percentiles([0, 100]), [1_000, 1_006]);
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

        /// The sparse list (with or without a move to the histogram on the way) reads the
        /// same percentiles as the histogram from the start.
        #[test]
        fn sparse_and_full_agree(samples in proptest::collection::vec(latency(), 1..6000)) {
            let ps = [0, 1, 7, 14, 28, 50, 56, 90, 99, 100];
            let (sparse, _) = fed(&samples);
            let (full, _) = fed_into(full_from_start(), &samples);
            prop_assert_eq!(sparse.percentiles(ps), full.percentiles(ps));
            prop_assert_eq!(sparse.count(), full.count());
        }

        /// The sparse list's buckets are the histogram's.
        #[test]
        fn buckets_are_hdrhistograms(v in latency()) {
            let v = v.min(HIGHEST_NS);
            let h = full(&[]);
            let b = bucket_of(v);
            prop_assert!((b as usize) < h.distinct_values());
            prop_assert_eq!(lowest_of(b), h.lowest_equivalent(v));
            prop_assert_eq!(bucket_of(lowest_of(b)), b);
            prop_assert!(v == 0 || bucket_of(v - 1) <= b);
        }
    }
}
