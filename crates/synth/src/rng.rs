//! The seeded pseudo-random generator and the few distributions the generators draw from.
//!
//! Determinism is the whole point of this crate, so the generator is implemented here rather
//! than taken from a crate whose algorithm may change between versions: wyrand (one `u64` of
//! state, a 64x64->128 multiply per draw), seeded through splitmix64. Every stream a caller
//! can ask for (a register, a listing shard, a delta) is seeded from the user's seed and a
//! fixed stream label with [`derive`], so streams never overlap by accident.

use std::sync::Arc;

/// The splitmix64 finaliser: a bijective 64-bit mix. Also used as an order-independent hash
/// (e.g. to pick delta candidates whatever order the base is read in).
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the sub-stream `label` of `seed`.
pub(crate) fn derive(seed: u64, label: u64) -> u64 {
    mix64(seed ^ mix64(label.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// wyrand: small, fast, and good enough for simulation (it passes BigCrush and PractRand to
/// large sizes); not for anything secret.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for this seed.
    pub(crate) fn new(seed: u64) -> Self {
        Rng {
            state: mix64(seed.wrapping_add(0x6a09_e667_f3bc_c909)),
        }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state).wrapping_mul(u128::from(self.state ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift. The bias is below 2^-32 for
    /// every `n` used here, and skipping the rejection step keeps the stream's length fixed.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform index into a slice of length `n` (`n > 0`).
    #[inline]
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub(crate) fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        debug_assert!(lo <= hi);
        lo + self.below((i64::from(hi) - i64::from(lo) + 1) as u64) as i32
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    #[inline]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen element.
    #[inline]
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

/// Weighted choice among a fixed set, by cumulative thresholds on a `u64` draw.
#[derive(Clone, Debug)]
pub(crate) struct Weighted {
    thresholds: Vec<u64>,
}

impl Weighted {
    /// Weights need not sum to anything in particular; at least one must be positive.
    pub(crate) fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let w: Vec<f64> = weights.into_iter().map(|x| x.max(0.0)).collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let mut thresholds = Vec::with_capacity(w.len());
        for x in &w {
            acc += x;
            let t = if total > 0.0 { acc / total } else { 1.0 };
            thresholds.push(if t >= 1.0 {
                u64::MAX
            } else {
                (t * u64::MAX as f64) as u64
            });
        }
        if let Some(last) = thresholds.last_mut() {
            *last = u64::MAX;
        }
        Weighted { thresholds }
    }

    /// The index of the chosen weight.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.next_u64();
        let i = self.thresholds.partition_point(|&t| t < x);
        i.min(self.thresholds.len().saturating_sub(1))
    }
}

/// A Zipf-like rank in `0..n`: the continuous power law `x^-s` on `[1, n+1)`, floored, so
/// rank 0 is the most frequent. Its inverse CDF is tabulated at [`ZIPF_STEPS`] points and
/// interpolated, so a draw costs a multiply and two loads, not a `powf` (which dominated the
/// listing generator's profile).
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    n: u64,
    quantiles: Arc<[f64]>,
}

/// Points of the tabulated inverse CDF.
pub(crate) const ZIPF_STEPS: usize = 4096;

impl Zipf {
    pub(crate) fn new(n: u64, s: f64) -> Self {
        let n = n.max(1);
        let top = (n + 1) as f64;
        let a = 1.0 - s;
        let inverse = |u: f64| {
            if a.abs() < 1e-9 {
                (u * top.ln()).exp()
            } else {
                (1.0 + u * (top.powf(a) - 1.0)).powf(1.0 / a)
            }
        };
        let quantiles = (0..=ZIPF_STEPS)
            .map(|i| inverse(i as f64 / ZIPF_STEPS as f64))
            .collect();
        Zipf { n, quantiles }
    }

    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> u64 {
        let x = rng.unit() * ZIPF_STEPS as f64;
        let i = (x as usize).min(ZIPF_STEPS - 1);
        let (lo, hi) = (self.quantiles[i], self.quantiles[i + 1]);
        let v = lo + (x - i as f64) * (hi - lo);
        ((v as u64).saturating_sub(1)).min(self.n - 1)
    }
}

/// A discrete Pareto count `>= 1`: `floor(u^(-1/alpha))`, capped.
#[inline]
pub(crate) fn pareto(rng: &mut Rng, alpha: f64, cap: u32) -> u32 {
    let u = 1.0 - rng.unit(); // (0, 1]
    let x = u.powf(-1.0 / alpha);
    if x >= f64::from(cap) {
        cap
    } else {
        (x as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_stream_and_other_seeds_differ() {
        let a: Vec<u64> = (0..8)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(derive(1, 1), derive(1, 2));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            seen[r.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        for _ in 0..1000 {
            let x = r.range_i32(-3, 3);
            assert!((-3..=3).contains(&x));
        }
    }

    #[test]
    fn weighted_choice_follows_the_weights_and_never_picks_zero_weight() {
        let w = Weighted::new([1.0, 0.0, 3.0]);
        let mut r = Rng::new(2);
        let mut n = [0u32; 3];
        for _ in 0..40_000 {
            n[w.sample(&mut r)] += 1;
        }
        assert_eq!(n[1], 0);
        assert!((9_000..11_000).contains(&n[0]), "{n:?}");
        assert!((29_000..31_000).contains(&n[2]), "{n:?}");
    }

    #[test]
    fn zipf_ranks_are_skewed_towards_the_head_and_in_range() {
        for s in [1.0, 0.9] {
            let z = Zipf::new(1000, s);
            let mut r = Rng::new(3);
            let mut head = 0;
            for _ in 0..10_000 {
                let k = z.sample(&mut r);
                assert!(k < 1000);
                if k < 10 {
                    head += 1;
                }
            }
            // Uniform would put 1% in the top 10 ranks; a power law puts far more.
            assert!(head > 2_000, "s={s}: {head}");
        }
    }

    #[test]
    fn pareto_counts_are_at_least_one_capped_and_long_tailed() {
        let mut r = Rng::new(4);
        let xs: Vec<u32> = (0..100_000).map(|_| pareto(&mut r, 1.5, 400)).collect();
        assert!(xs.iter().all(|&x| (1..=400).contains(&x)));
        assert!(xs.iter().filter(|&&x| x == 1).count() > 50_000);
        assert!(xs.iter().any(|&x| x >= 100));
    }
}
