//! The discrete Gaussian, sampled exactly, and what a sum of parties' discrete Gaussian
//! noise guarantees.
//!
//! Floating-point noise leaks: the set of doubles a textbook Gaussian or Laplace sampler
//! can return next to an input depends on that input, and Mironov (CCS 2012) recovers
//! inputs from it. The discrete Gaussian on the integers has no such gaps. [`DiscreteGaussian`]
//! is the exact sampler of Canonne, Kamath & Steinke ("The Discrete Gaussian for
//! Differential Privacy", NeurIPS 2020, Algorithm 3): rejection from a discrete Laplace,
//! every coin an exact Bernoulli of a rational built from uniform integers (u128
//! arithmetic, no floating point anywhere on the sampling path).
//!
//! [`distributed_cdp_epsilon`]: when each of n parties adds DG(σ²) noise to an integer
//! vector and only the sum is seen (secure aggregation), the sum is within a tiny Rényi
//! divergence of DG(nσ²) (Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian
//! Mechanism for Federated Learning with Secure Aggregation", ICML 2021, Theorem 1):
//! with τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)), the mechanism is ½ε²-concentrated
//! DP with ε = min(√(Δ₂²/(nσ²) + τd/2), Δ₂/(√n·σ) + τ√d), for L2 sensitivity Δ₂ in
//! dimension d. For the variances used here (σ in the thousands of quantization steps)
//! τ underflows to 0 and the guarantee is the Gaussian mechanism's with variance nσ².
//! ½ε²-CDP is the Rényi curve α·ε²/2 of a Gaussian with noise multiplier 1/ε, which is
//! what the accountant charges.

use rand::Rng;

/// Bernoulli(num / den), exactly: a uniform integer below `den` falls below `num`.
fn bernoulli(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    rng.random_range(0..den) < num
}

/// Bernoulli(exp(−num/den)) for 0 ≤ num/den ≤ 1 (CKS20, Algorithm 1, first case): draw
/// A_k ~ Bernoulli(γ/k) for k = 1, 2, … until one is 0; the answer is whether that k is odd.
fn bernoulli_exp_small(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    let mut k: u128 = 1;
    while let Some(d) = den.checked_mul(k)
        && bernoulli(rng, num, d)
    {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(−num/den)) for any num/den ≥ 0 (CKS20, Algorithm 1): ⌊γ⌋ coins of
/// exp(−1), then one of exp(−(γ − ⌊γ⌋)).
pub fn bernoulli_exp(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    let mut left = num;
    while left > den {
        if !bernoulli_exp_small(rng, 1, 1) {
            return false;
        }
        left -= den;
    }
    bernoulli_exp_small(rng, left, den)
}

/// The discrete Laplace with scale t (P[x] ∝ exp(−|x|/t)), t ≥ 1 (CKS20, Algorithm 2).
fn discrete_laplace(rng: &mut impl Rng, t: u128) -> i128 {
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp_small(rng, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let negative = rng.random::<bool>();
        if negative && x == 0 {
            continue;
        }
        return if negative { -(x as i128) } else { x as i128 };
    }
}

/// The discrete Gaussian with variance parameter σ² = num/den on the integers:
/// P[x] ∝ exp(−x²/(2σ²)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    num: u128,
    den: u128,
    /// ⌊σ⌋ + 1, the discrete Laplace scale of the proposal.
    t: u128,
}

impl DiscreteGaussian {
    /// σ² = num/den, with 0 < σ² and num, den ≤ 2^60 (the rejection step's products then
    /// stay inside u128 for every proposal that has a chance above 2^−1000).
    pub fn new(num: u64, den: u64) -> Option<Self> {
        let (num, den) = (u128::from(num), u128::from(den));
        if num == 0 || den == 0 || num > 1 << 60 || den > 1 << 60 {
            return None;
        }
        let t = (num / den).isqrt() + 1;
        Some(DiscreteGaussian { num, den, t })
    }

    /// σ² as an integer (den = 1).
    pub fn with_variance(sigma2: u64) -> Option<Self> {
        Self::new(sigma2, 1)
    }

    /// σ² as a float (for reports; never used to sample).
    pub fn variance(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// One sample (CKS20, Algorithm 3): Y from the discrete Laplace with scale t, kept
    /// with probability exp(−(|Y| − σ²/t)²/(2σ²)).
    pub fn sample(&self, rng: &mut impl Rng) -> i64 {
        loop {
            let y = discrete_laplace(rng, self.t);
            // (|Y| − σ²/t)² / (2σ²) = (|Y|·t·den − num)² / (2·num·den·t²)
            let Some(a) = y.unsigned_abs().checked_mul(self.t).and_then(|v| v.checked_mul(self.den)) else {
                continue;
            };
            let diff = a.abs_diff(self.num);
            let gamma = (
                diff.checked_mul(diff),
                self.t.checked_mul(self.t).and_then(|tt| tt.checked_mul(2 * self.num * self.den)),
            );
            // A proposal so far out that the products overflow is kept with probability
            // below 2^−1000: rejecting it is the same to any test that can be run.
            let (Some(gnum), Some(gden)) = gamma else { continue };
            if bernoulli_exp(rng, gnum, gden) {
                return y as i64;
            }
        }
    }
}

/// ε of the ½ε²-CDP guarantee of the sum of `parties` independent DG(σ²) noise vectors
/// of dimension `dimension` on a sum whose L2 sensitivity is `l2_sensitivity` (Kairouz,
/// Liu & Steinke 2021, Theorem 1; see the module doc).
pub fn distributed_cdp_epsilon(l2_sensitivity: f64, sigma2: f64, parties: u32, dimension: u64) -> f64 {
    let n = f64::from(parties.max(1));
    let d = dimension as f64;
    let tau: f64 = 10.0
        * (1..parties.max(1))
            .map(|k| {
                let k = f64::from(k);
                (-2.0 * std::f64::consts::PI.powi(2) * sigma2 * k / (k + 1.0)).exp()
            })
            .sum::<f64>();
    let first = (l2_sensitivity.powi(2) / (n * sigma2) + tau * d / 2.0).sqrt();
    let second = l2_sensitivity / (n.sqrt() * sigma2.sqrt()) + tau * d.sqrt();
    first.min(second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The exact distribution of DG(σ²) on [−m, m] (normalised over a range that holds
    /// all but a negligible mass).
    fn pmf(sigma2: f64, m: i64) -> Vec<f64> {
        let w: Vec<f64> = (-m..=m).map(|x| (-(x * x) as f64 / (2.0 * sigma2)).exp()).collect();
        let z: f64 = w.iter().sum();
        w.iter().map(|v| v / z).collect()
    }

    /// Mean, variance and tail of 200,000 samples against the exact distribution, for a
    /// small, a fractional and a large σ²: within 5 standard errors each; and a
    /// chi-square goodness of fit over the central cells.
    #[test]
    fn samples_follow_the_exact_discrete_gaussian() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2020);
        for (num, den) in [(1u64, 1u64), (5, 2), (400, 1), (1_000_000, 3)] {
            let dg = DiscreteGaussian::new(num, den).unwrap();
            let sigma2 = num as f64 / den as f64;
            let m = (12.0 * sigma2.sqrt()).ceil() as i64 + 2;
            let p = pmf(sigma2, m);
            let var_exact: f64 = (-m..=m).zip(&p).map(|(x, q)| (x * x) as f64 * q).sum();
            let kurt: f64 = (-m..=m).zip(&p).map(|(x, q)| (x as f64).powi(4) * q).sum();
            let n = 200_000;
            let xs: Vec<i64> = (0..n).map(|_| dg.sample(&mut rng)).collect();
            let mean = xs.iter().sum::<i64>() as f64 / n as f64;
            let var = xs.iter().map(|&x| (x * x) as f64).sum::<f64>() / n as f64;
            assert!(mean.abs() < 5.0 * (var_exact / n as f64).sqrt(), "σ²={sigma2}: mean {mean}");
            let var_se = ((kurt - var_exact * var_exact) / n as f64).sqrt();
            assert!((var - var_exact).abs() < 5.0 * var_se, "σ²={sigma2}: variance {var} vs {var_exact}");
            // Tail: P[|X| > 2σ], exact vs observed.
            let cut = (2.0 * sigma2.sqrt()).floor() as i64;
            let tail_exact: f64 = (-m..=m).zip(&p).filter(|(x, _)| x.abs() > cut).map(|(_, q)| q).sum();
            let tail = xs.iter().filter(|x| x.abs() > cut).count() as f64 / n as f64;
            let tail_se = (tail_exact * (1.0 - tail_exact) / n as f64).sqrt();
            assert!((tail - tail_exact).abs() < 5.0 * tail_se, "σ²={sigma2}: tail {tail} vs {tail_exact}");
            if sigma2 <= 400.0 {
                // Chi-square over cells with an expected count of at least 20.
                let mut chi2 = 0.0;
                let mut cells = 0;
                for (i, x) in (-m..=m).enumerate() {
                    let expected = p[i] * n as f64;
                    if expected >= 20.0 {
                        let observed = xs.iter().filter(|&&v| v == x).count() as f64;
                        chi2 += (observed - expected).powi(2) / expected;
                        cells += 1;
                    }
                }
                // Mean cells − 1, sd √(2(cells − 1)): 6 sd above is a real misfit.
                let df = f64::from(cells - 1);
                assert!(chi2 < df + 6.0 * (2.0 * df).sqrt(), "σ²={sigma2}: χ² {chi2} over {cells} cells");
            }
        }
    }

    #[test]
    fn bernoulli_exp_is_exact_in_frequency() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for (num, den) in [(0u128, 1u128), (1, 2), (3, 1), (7, 3)] {
            let n = 200_000;
            let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count() as f64 / n as f64;
            let p = (-(num as f64) / den as f64).exp();
            assert!((hits - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-12, "{num}/{den}: {hits} vs {p}");
        }
    }

    #[test]
    fn one_party_is_the_discrete_gaussian_mechanism_and_parties_add_up() {
        // One party: ε = Δ/σ, the discrete Gaussian's own ½(Δ/σ)²-CDP.
        assert!((distributed_cdp_epsilon(3.0, 9.0, 1, 10) - 1.0).abs() < 1e-12);
        // Four parties of variance σ² on a sum: the variance-4σ² Gaussian's, once τ vanishes.
        let e = distributed_cdp_epsilon(1000.0, 250_000.0, 4, 1_000_000);
        assert!((e - 1000.0 / (2.0 * 500.0)).abs() < 1e-12, "{e}");
        // Small σ: τ is not negligible and the guarantee is weaker than the ideal one.
        assert!(distributed_cdp_epsilon(1.0, 0.25, 4, 100) > 1.0 / (2.0 * 0.5));
        assert!(DiscreteGaussian::new(0, 1).is_none() && DiscreteGaussian::new(1, 0).is_none());
    }
}
