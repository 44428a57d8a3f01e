//! The few random draws the generator needs, on the project's seeded xorshift generator:
//! wider words, inclusive ranges, weighted choices and a Zipf-like skew.

use pktpath_core::route::datapath::synth::Rng;

/// Draws beyond what [`Rng`] offers.
pub(super) trait Random {
    /// 128 random bits.
    fn next_u128(&mut self) -> u128;
    /// Uniform in `lo..=hi`.
    fn within(&mut self, lo: u64, hi: u64) -> u64;
    /// One of `choices`, each with its weight.
    fn weighted<T: Copy>(&mut self, choices: &[(u32, T)]) -> T;
}

impl Random for Rng {
    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    fn within(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn weighted<T: Copy>(&mut self, choices: &[(u32, T)]) -> T {
        let total: u64 = choices.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (w, value) in choices {
            if x < u64::from(*w) {
                return *value;
            }
            x -= u64::from(*w);
        }
        unreachable!("x < total")
    }
}

/// An index in `0..n`, index `i` with weight `1 / (i + 1)`: the first few are chosen
/// often, the rest form a long tail.
pub(super) fn zipf(rng: &mut Rng, n: usize) -> usize {
    let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut x = unit(rng) * total;
    for i in 0..n {
        x -= 1.0 / (i + 1) as f64;
        if x < 0.0 {
            return i;
        }
    }
    n - 1
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A Zipf-like distribution (exponent 1) over `0..n`, for choosing often from a large `n`.
pub(super) struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub(super) fn new(n: usize) -> Self {
        let mut sum = 0.0;
        let cumulative = (0..n)
            .map(|i| {
                sum += 1.0 / (i + 1) as f64;
                sum
            })
            .collect();
        Zipf { cumulative }
    }

    pub(super) fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = unit(rng) * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}
