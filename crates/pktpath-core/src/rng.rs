//! Seeded randomness for the benchmark's rule sets, the privileged tests and the filter
//! samples: xorshift64*.
//!
//! The project's own rather than `rand`: the benchmark's generated rule sets and headers
//! are drawn from it, and they must be the same sets from run to run and release to release
//! for the figures in BENCHMARKS.md to compare (no `rand` generator promises xorshift64*'s
//! sequence). The privileged tests replay fixed sequences in the kernel with it. Root-free
//! tests draw their inputs from proptest strategies, which shrink a failure.

/// xorshift64*: deterministic, seedable, good enough to explore inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (its lowest bit set: the state must not be 0).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with the given probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}
