//! Privacy-loss-distribution (PLD) accounting of the Poisson-subsampled Gaussian: the
//! tighter second opinion to RDP, pessimistic by construction.
//!
//! The construction follows the one `dp_accounting` 0.6.0 uses by default, so the two
//! agree to its discretization error:
//! - each step's PLD is discretized on the grid of multiples of 1e-4 by the pessimistic
//!   "connect the dots" algorithm (Doroshenko, Ghazi, Kamath, Kumar, Manurangsi 2022,
//!   Algorithm 1): the hockey-stick divergence δ(ε) of the mechanism at every grid point
//!   between the losses at the tails (cut where the noise has e^-50 of its mass) gives
//!   the probabilities, the rest is the mass at +∞;
//! - both neighbouring directions (remove and add a record) are tracked; ε is the larger;
//! - composition convolves the probability vectors with an FFT; what falls outside the
//!   kept range (at most 1e-15 of the mass) goes pessimistically to the lowest bin or to
//!   +∞; `count` identical steps are composed at once by raising the spectrum to the
//!   power `count`, over a window sized by a Chernoff bound.
//!
//! Every rounding goes the pessimistic way: the ε reported is never below the true ε of
//! the mechanism (the tests check it against the exact Gaussian, q = 1).

use realfft::RealFftPlanner;
use realfft::num_complex::Complex64;

use crate::PrivacyError;
use crate::special::log_erfc;

/// Width of a bin of privacy loss.
pub const DISCRETIZATION: f64 = 1e-4;
/// The noise's tails beyond e^-50 of its mass are not discretized (their mass goes to ∞).
const LOG_MASS_TRUNCATION: f64 = -50.0;
/// The most bins a distribution may have (2^25: half a gigabyte of FFT buffers); larger
/// compositions (ε in the thousands) are refused with an error instead of exhausting
/// memory.
pub const MAX_BINS: usize = 1 << 25;
/// Mass a composition may move out of the kept range (pessimistically).
const TAIL_MASS_TRUNCATION: f64 = 1e-15;

/// A discretized privacy loss distribution: `probs[i]` is the mass at loss
/// `(lower + i) · DISCRETIZATION`, `infinity` the mass at +∞.
#[derive(Debug, Clone, PartialEq)]
pub struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity: f64,
}

impl Pmf {
    /// No privacy loss at all.
    pub fn identity() -> Self {
        Pmf { lower: 0, probs: vec![1.0], infinity: 0.0 }
    }

    pub fn len(&self) -> usize {
        self.probs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }

    /// The smallest ε with δ(ε) ≤ `delta`.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity > delta {
            return f64::INFINITY;
        }
        let (mut upper, mut lower) = (self.infinity, 0.0f64);
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let loss = (self.lower + i as i64) as f64 * DISCRETIZATION;
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= loss {
                break;
            }
            upper += p;
            lower += (-loss).exp() * p;
            if upper >= delta && lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if upper <= lower + delta { 0.0 } else { ((upper - delta) / lower).ln() }
    }

    /// The distribution of the sum of the losses of `self` and `other`.
    pub fn compose(&self, other: &Pmf, fft: &mut Fft) -> Result<Pmf, PrivacyError> {
        check_size(self.probs.len() + other.probs.len())?;
        let probs = fft.convolve(&self.probs, &other.probs);
        let infinity = self.infinity + other.infinity - self.infinity * other.infinity;
        let (offset, probs, right) = truncate_tails(probs);
        Ok(Pmf { lower: self.lower + other.lower + offset as i64, probs, infinity: infinity + right })
    }

    /// `count` independent copies of `self` composed.
    pub fn self_compose(&self, count: u64, fft: &mut Fft) -> Result<Pmf, PrivacyError> {
        if count == 1 {
            return Ok(self.clone());
        }
        let (lo, hi) = self_convolve_bounds(&self.probs, count);
        let out_len = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
        check_size(out_len)?;
        let n = out_len.max(self.probs.len()).next_power_of_two().max(2);
        let mut spectrum = fft.forward(&self.probs, n);
        for c in &mut spectrum {
            *c = c.powf(count as f64);
        }
        let circular = fft.inverse(spectrum, n);
        // The window [lo, hi] of the linear convolution, read off the circular one.
        let probs: Vec<f64> = (0..out_len).map(|k| circular[(lo as usize + k) % n].max(0.0)).collect();
        let infinity = TAIL_MASS_TRUNCATION - (count as f64 * (-self.infinity).ln_1p()).exp_m1();
        Ok(Pmf { lower: self.lower * count as i64 + lo, probs, infinity })
    }
}

fn check_size(bins: usize) -> Result<(), PrivacyError> {
    if bins > MAX_BINS { Err(PrivacyError::PldTooLarge { bins, max: MAX_BINS }) } else { Ok(()) }
}

/// Pessimistic truncation: the lowest bins holding half the truncation budget join the
/// first bin kept, the highest go to +∞. Returns (offset, probs, mass moved to +∞).
fn truncate_tails(mut probs: Vec<f64>) -> (usize, Vec<f64>, f64) {
    let prefix = |it: &mut dyn Iterator<Item = f64>| {
        let mut s = 0.0;
        let mut n = 0;
        for v in it {
            s += v;
            if s > TAIL_MASS_TRUNCATION / 2.0 {
                return n;
            }
            n += 1;
        }
        n
    };
    let left = prefix(&mut probs.iter().copied());
    let right_len = prefix(&mut probs.iter().rev().copied());
    let right = (probs.len() - right_len).max(left + 1).min(probs.len());
    let left_mass: f64 = probs[..left].iter().sum();
    let right_mass: f64 = probs[right..].iter().sum();
    probs.truncate(right);
    let mut kept = probs.split_off(left);
    kept[0] += left_mass;
    (left, kept, right_mass)
}

/// The index range outside which `count`-fold self-convolution of `probs` has at most
/// `TAIL_MASS_TRUNCATION` of its mass (Chernoff bounds at 40 orders), as dp_accounting
/// bounds it.
fn self_convolve_bounds(probs: &[f64], count: u64) -> (i64, i64) {
    let len = probs.len() as f64;
    let mut upper = ((probs.len() - 1) as u64 * count) as i64;
    let mut lower = 0i64;
    for k in (-20..0).chain(1..21) {
        let order = k as f64 / len;
        // log Σ p_i e^{order·i}
        let terms = probs.iter().enumerate().filter(|(_, p)| **p > 0.0).map(|(i, p)| p.ln() + order * i as f64);
        let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
        let log_mgf = max + terms.map(|t| (t - max).exp()).sum::<f64>().ln();
        let bound = (count as f64 * log_mgf + (2.0 / TAIL_MASS_TRUNCATION).ln()) / order;
        if !bound.is_finite() {
            continue;
        }
        if order > 0.0 {
            upper = upper.min(bound.ceil() as i64);
        } else {
            lower = lower.max(bound.floor() as i64);
        }
    }
    (lower, upper.max(lower))
}

/// Real-input FFT plans, reused across compositions (half the work of complex FFTs).
pub struct Fft {
    planner: RealFftPlanner<f64>,
}

impl std::fmt::Debug for Fft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fft")
    }
}

impl Default for Fft {
    fn default() -> Self {
        Fft { planner: RealFftPlanner::new() }
    }
}

impl Fft {
    /// The spectrum of `x` zero-padded to `n` (even) points: n/2 + 1 values.
    fn forward(&mut self, x: &[f64], n: usize) -> Vec<Complex64> {
        let plan = self.planner.plan_fft_forward(n);
        let mut input = plan.make_input_vec();
        input[..x.len()].copy_from_slice(x);
        let mut spectrum = plan.make_output_vec();
        plan.process(&mut input, &mut spectrum).expect("buffer sizes come from the plan");
        spectrum
    }

    /// The real signal of an n-point spectrum (n/2 + 1 values), normalised.
    fn inverse(&mut self, mut spectrum: Vec<Complex64>, n: usize) -> Vec<f64> {
        let plan = self.planner.plan_fft_inverse(n);
        // A real signal's spectrum is real at 0 and n/2; rounding may have left a trace.
        spectrum[0].im = 0.0;
        if let Some(last) = spectrum.last_mut() {
            last.im = 0.0;
        }
        let mut out = plan.make_output_vec();
        plan.process(&mut spectrum, &mut out).expect("buffer sizes come from the plan");
        let scale = 1.0 / n as f64;
        out.iter_mut().for_each(|v| *v *= scale);
        out
    }

    /// The linear convolution of `a` and `b` (negative rounding noise clipped to 0).
    fn convolve(&mut self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let out = a.len() + b.len() - 1;
        let n = out.next_power_of_two().max(2);
        let fa = self.forward(a, n);
        let fb = self.forward(b, n);
        let product: Vec<Complex64> = fa.iter().zip(&fb).map(|(x, y)| x * y).collect();
        let mut c = self.inverse(product, n);
        c.truncate(out);
        for v in &mut c {
            *v = v.max(0.0);
        }
        c
    }
}

/// Which neighbouring dataset is the larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Remove,
    Add,
}

/// log Φ(z), the standard normal log-CDF, accurate in both tails.
fn log_ndtr(z: f64) -> f64 {
    log_erfc(-z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// Φ(z) = erfc(−z/√2)/2: one call, with erfc's relative accuracy in the lower tail.
fn ndtr(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(p) for tiny p, by Newton's method on log Φ (the noise tail cut).
fn ndtri_log(log_p: f64) -> f64 {
    let mut z = -(-2.0 * log_p).sqrt();
    for _ in 0..50 {
        let f = log_ndtr(z) - log_p;
        // d/dz log Φ(z) = φ(z)/Φ(z)
        let log_phi = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln();
        let step = f / (log_phi - log_ndtr(z)).exp();
        z -= step;
        if step.abs() < 1e-14 * z.abs() {
            break;
        }
    }
    z
}

/// The subsampled Gaussian with sensitivity 1, in one direction.
struct Mechanism {
    sigma: f64,
    q: f64,
    dir: Direction,
}

impl Mechanism {
    fn privacy_loss(&self, x: f64) -> f64 {
        let s2 = self.sigma * self.sigma;
        match self.dir {
            Direction::Remove if self.q == 1.0 => -(2.0 * x + 1.0) / (2.0 * s2),
            Direction::Remove => ((1.0 - self.q) + self.q * (-(2.0 * x + 1.0) / (2.0 * s2)).exp()).ln(),
            Direction::Add if self.q == 1.0 => (1.0 - 2.0 * x) / (2.0 * s2),
            Direction::Add => -((1.0 - self.q) + self.q * ((2.0 * x - 1.0) / (2.0 * s2)).exp()).ln(),
        }
    }

    fn inverse_privacy_loss(&self, loss: f64) -> f64 {
        let s2 = self.sigma * self.sigma;
        match self.dir {
            Direction::Remove if self.q == 1.0 => -loss * s2 - 0.5,
            Direction::Remove => -s2 * ((loss.exp() - (1.0 - self.q)) / self.q).ln() - 0.5,
            Direction::Add if self.q == 1.0 => 0.5 - loss * s2,
            Direction::Add => s2 * (((-loss).exp() - (1.0 - self.q)) / self.q).ln() + 0.5,
        }
    }

    fn mu_upper_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.dir {
            Direction::Add => ndtr(x / s),
            Direction::Remove if self.q == 1.0 => ndtr((x + 1.0) / s),
            Direction::Remove => (1.0 - self.q) * ndtr(x / s) + self.q * ndtr((x + 1.0) / s),
        }
    }

    fn mu_lower_log_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.dir {
            Direction::Remove => log_ndtr(x / s),
            Direction::Add if self.q == 1.0 => log_ndtr((x - 1.0) / s),
            Direction::Add => {
                crate::special::log_add((-self.q).ln_1p() + log_ndtr(x / s), self.q.ln() + log_ndtr((x - 1.0) / s))
            }
        }
    }

    /// The ε-hockey-stick divergence of the mechanism.
    fn delta_for_epsilon(&self, eps: f64) -> f64 {
        let log_1mq = (-self.q).ln_1p();
        let delta = match self.dir {
            Direction::Add if self.q < 1.0 && eps >= -log_1mq => 0.0,
            Direction::Remove if self.q < 1.0 && eps <= log_1mq => -eps.exp_m1(),
            _ => {
                let x = self.inverse_privacy_loss(eps);
                self.mu_upper_cdf(x) - (eps + self.mu_lower_log_cdf(x)).exp()
            }
        };
        delta.clamp(0.0, 1.0)
    }

    /// The pessimistic connect-the-dots discretization of one step.
    fn pmf(&self) -> Pmf {
        let mut lower_x = self.sigma * ndtri_log(0.5f64.ln() + LOG_MASS_TRUNCATION);
        let mut upper_x = -lower_x;
        match self.dir {
            Direction::Add => upper_x += 1.0,
            Direction::Remove => lower_x -= 1.0,
        }
        let hi = (self.privacy_loss(lower_x) / DISCRETIZATION).ceil() as i64;
        let lo = (self.privacy_loss(upper_x) / DISCRETIZATION).floor() as i64;
        let mut deltas: Vec<f64> = (lo..=hi).map(|k| self.delta_for_epsilon(k as f64 * DISCRETIZATION)).collect();
        if deltas.len() == 1 {
            return Pmf { lower: lo, probs: vec![1.0 - deltas[0]], infinity: deltas[0] };
        }
        // δ is non-increasing in ε; rounding noise is flattened as dp_accounting does.
        for i in 1..deltas.len() {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let d = DISCRETIZATION;
        let (em1, e) = (d.exp_m1(), d.exp());
        let n = deltas.len();
        let diff = |i: usize| deltas[i + 1] - deltas[i];
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diff(0) / em1;
        for (i, p) in probs.iter_mut().enumerate().take(n - 1).skip(1) {
            *p = (diff(i) - diff(i - 1) * e) / em1;
        }
        probs[n - 1] = diff(n - 2) / (-d).exp_m1();
        for p in &mut probs {
            *p = p.max(0.0);
        }
        Pmf { lower: lo, probs, infinity: deltas[n - 1] }
    }
}

/// Composes distributions pairwise, level by level.
fn tree_compose(mut pmfs: Vec<Pmf>, fft: &mut Fft) -> Result<Option<Pmf>, PrivacyError> {
    while pmfs.len() > 1 {
        let mut next = Vec::with_capacity(pmfs.len().div_ceil(2));
        let mut it = pmfs.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => a.compose(&b, fft)?,
                None => a,
            });
        }
        pmfs = next;
    }
    Ok(pmfs.pop())
}

/// The PLD of everything composed so far, in both directions.
///
/// Composition is commutative, so steps are collected by (q, σ) and composed when an ε
/// is asked for: `n` identical steps cost one FFT power instead of `n` convolutions.
#[derive(Debug)]
pub struct PldAccountant {
    remove: Pmf,
    add: Pmf,
    /// Both directions are the same distribution (nothing subsampled composed yet): one
    /// is computed, and copied.
    symmetric: bool,
    /// Steps not composed yet: (q, σ) bit patterns → count, in first-seen order.
    pending: Vec<((u64, u64), u64)>,
    fft: Fft,
}

impl Default for PldAccountant {
    fn default() -> Self {
        PldAccountant {
            remove: Pmf::identity(),
            add: Pmf::identity(),
            symmetric: true,
            pending: Vec::new(),
            fft: Fft::default(),
        }
    }
}

impl Clone for PldAccountant {
    fn clone(&self) -> Self {
        PldAccountant {
            remove: self.remove.clone(),
            add: self.add.clone(),
            symmetric: self.symmetric,
            pending: self.pending.clone(),
            fft: Fft::default(),
        }
    }
}

impl PldAccountant {
    /// Adds `event.count` steps of the sampled Gaussian (composed lazily).
    pub fn compose(&mut self, event: &crate::SampledGaussian) -> Result<&mut Self, PrivacyError> {
        event.validate()?;
        if event.count == 0 || event.sampling_rate == 0.0 {
            return Ok(self);
        }
        let key = (event.sampling_rate.to_bits(), event.noise_multiplier.to_bits());
        match self.pending.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += event.count,
            None => self.pending.push((key, event.count)),
        }
        Ok(self)
    }

    /// Composes the pending steps: each group by one FFT power, then the groups pairwise
    /// (a balanced tree convolves small distributions with small ones, instead of every
    /// step with the whole accumulated distribution), then into the totals.
    fn flush(&mut self) -> Result<(), PrivacyError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let fft = &mut self.fft;
        let (mut removes, mut adds) = (Vec::new(), Vec::new());
        let mut all_symmetric = true;
        for ((q, sigma), count) in pending {
            let (q, sigma) = (f64::from_bits(q), f64::from_bits(sigma));
            if sigma == 0.0 {
                // No noise: the loss is unbounded.
                self.remove.infinity = 1.0;
                self.add.infinity = 1.0;
                continue;
            }
            let remove_step = Mechanism { sigma, q, dir: Direction::Remove }.pmf().self_compose(count, fft)?;
            // Without subsampling the mechanism is symmetric: adding a record costs what
            // removing one does (dp_accounting keeps one distribution then, too).
            let add_step = if q == 1.0 {
                None
            } else {
                all_symmetric = false;
                Some(Mechanism { sigma, q, dir: Direction::Add }.pmf().self_compose(count, fft)?)
            };
            adds.push(add_step.unwrap_or_else(|| remove_step.clone()));
            removes.push(remove_step);
        }
        let (Some(remove), Some(add)) = (tree_compose(removes, fft)?, tree_compose(adds, fft)?) else {
            return Ok(());
        };
        self.remove = self.remove.compose(&remove, fft)?;
        if self.symmetric && all_symmetric {
            self.add = self.remove.clone();
        } else {
            self.add = self.add.compose(&add, fft)?;
            self.symmetric = false;
        }
        Ok(())
    }

    /// ε at `delta`: the larger of the two directions.
    pub fn epsilon(&mut self, delta: f64) -> Result<f64, PrivacyError> {
        if !(0.0..1.0).contains(&delta) {
            return Err(PrivacyError::Delta(delta));
        }
        self.flush()?;
        Ok(self.remove.epsilon_for_delta(delta).max(self.add.epsilon_for_delta(delta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_cut_is_where_dp_accounting_puts_it() {
        // scipy.stats.norm.ppf(0.5 * exp(-50)) = -9.745474864965935
        let z = ndtri_log(0.5f64.ln() - 50.0);
        assert!((log_ndtr(z) - (0.5f64.ln() - 50.0)).abs() < 1e-12);
        assert!((z + 9.745_474_864_965_935).abs() < 1e-12, "{z}");
    }

    #[test]
    fn a_composition_too_large_for_memory_is_an_error() {
        let mut acc = PldAccountant::default();
        acc.compose(&crate::SampledGaussian { sampling_rate: 1.0, noise_multiplier: 0.3, count: 100_000 }).unwrap();
        let err = acc.epsilon(1e-5).unwrap_err();
        assert!(matches!(err, PrivacyError::PldTooLarge { .. }), "{err}");
    }

    #[test]
    fn a_discretized_step_is_a_distribution() {
        for (q, s) in [(1.0, 1.0), (0.01, 1.1), (0.1, 2.0)] {
            for dir in [Direction::Remove, Direction::Add] {
                let pmf = Mechanism { sigma: s, q, dir }.pmf();
                // Clipping the few negative connect-the-dots masses to 0 adds ~1e-8, as
                // in dp_accounting (1.0000000172 for σ = 1, q = 1 there too).
                let total: f64 = pmf.probs.iter().sum::<f64>() + pmf.infinity;
                assert!((total - 1.0).abs() < 1e-6, "{q} {s} {dir:?}: {total}");
                if (q, s, dir) == (1.0, 1.0, Direction::Remove) {
                    assert_eq!((pmf.lower, pmf.len()), (-102_455, 204_911), "dp_accounting's grid");
                }
            }
        }
    }

    #[test]
    fn the_exact_gaussian_is_never_undercut() {
        // q = 1: the composition of T Gaussians with σ is one Gaussian with σ/√T, whose
        // δ(ε) is known exactly: Φ(-ε/μ + μ/2) − e^ε Φ(-ε/μ − μ/2), μ = √T/σ.
        let (sigma, t, delta) = (2.0f64, 10u64, 1e-5);
        let mut acc = PldAccountant::default();
        acc.compose(&crate::SampledGaussian { sampling_rate: 1.0, noise_multiplier: sigma, count: t }).unwrap();
        let eps = acc.epsilon(delta).unwrap();
        let mu = (t as f64).sqrt() / sigma;
        let exact_delta = |e: f64| ndtr(-e / mu + mu / 2.0) - e.exp() * ndtr(-e / mu - mu / 2.0);
        // The exact ε: bisection on the exact δ.
        let (mut lo, mut hi) = (0.0, 50.0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if exact_delta(mid) > delta { lo = mid } else { hi = mid }
        }
        assert!(eps >= hi - 1e-12, "pessimistic: {eps} vs exact {hi}");
        assert!(eps - hi < 1e-3, "tight: {eps} vs exact {hi}");
    }
}
