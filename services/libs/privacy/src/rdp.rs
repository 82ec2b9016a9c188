//! Rényi differential privacy of the Poisson-subsampled Gaussian mechanism (Mironov,
//! Talwar, Zhang 2019), its composition, and the conversion to (ε, δ).
//!
//! The numbers follow Google's `dp_accounting` 0.6.0 (`RdpAccountant`) so that the two
//! agree to 1e-9 relative in ε (`tests/privacy/reference.json` holds the values it
//! computed; the tests compare):
//! - the same 156 default orders; whole-number orders take the exact binomial sum;
//! - fractional orders sum both series of MTZ §3.3 with the magnitude of the generalised
//!   binomial coefficient (every term added: an upper bound), stopping when both terms
//!   fall and the larger is 30 below the running total; an order that has not stopped
//!   after 1,000 terms is +∞ and drops out of the minimum;
//! - the conversion of Balle et al. 2020 (Prop. 12) / Asoodeh et al.: for each order
//!   ε = r + ln(1 − 1/α) − ln(δ·α)/(α − 1), the KL shortcut (ε = 0 when δ² + expm1(−r) > 0),
//!   orders ≤ 1.01 skipped, minimum over orders, ties to the first.
//!
//! Nothing here allocates per call beyond the accountant's two vectors, and nothing
//! panics: invalid parameters are a [`PrivacyError`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::PrivacyError;
use crate::special::{LogSum, ln_abs_gamma, log_erfc};

/// `dp_accounting`'s default orders: 1.1 … 10.9 by 0.1, 11 … 63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// Terms of the fractional-order series before the order is given up as +∞.
const MAX_FRACTIONAL_TERMS: usize = 1000;

/// One step of a training schedule: `count` rounds of the Gaussian mechanism with noise
/// multiplier `noise_multiplier`, each on a Poisson sample of rate `sampling_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledGaussian {
    /// q in [0, 1]; 1 is the Gaussian mechanism without subsampling.
    pub sampling_rate: f64,
    /// σ ≥ 0, the noise standard deviation over the clipping norm; 0 is no privacy.
    pub noise_multiplier: f64,
    pub count: u64,
}

impl SampledGaussian {
    pub fn validate(&self) -> Result<(), PrivacyError> {
        if !(0.0..=1.0).contains(&self.sampling_rate) {
            return Err(PrivacyError::SamplingRate(self.sampling_rate));
        }
        if !(self.noise_multiplier >= 0.0 && self.noise_multiplier.is_finite()) {
            return Err(PrivacyError::NoiseMultiplier(self.noise_multiplier));
        }
        Ok(())
    }
}

/// RDP of one sampled-Gaussian step at order `alpha` (> 1).
pub fn sampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if alpha.is_infinite() || sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 { log_a_integer(q, sigma, alpha) } else { log_a_fractional(q, sigma, alpha) };
    log_a / (alpha - 1.0)
}

/// log A_α for whole-number α: the binomial expansion, summed in order of i.
fn log_a_integer(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let mut sum = LogSum::default();
    let n = alpha as usize;
    let lf_n = log_factorial(n);
    for k in 0..=n {
        let i = k as f64;
        // log C(α, i) = ln Γ(α+1) − ln Γ(i+1) − ln Γ(α−i+1), all three from the table.
        let log_comb = lf_n - log_factorial(k) - log_factorial(n - k);
        sum.add(log_comb + i * log_q + (alpha - i) * log_1mq + (i * i - i) / two_var);
    }
    sum.ln()
}

/// ln Γ(k + 1), the very value `ln_abs_gamma` gives (so sums built from the table equal
/// sums built from the calls), from a table computed once per process.
fn log_factorial(k: usize) -> f64 {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=TABLE_LEN).map(|k| ln_abs_gamma(k as f64 + 1.0)).collect());
    table.get(k).copied().unwrap_or_else(|| ln_abs_gamma(k as f64 + 1.0))
}

/// Covers the default orders (up to 1024) and the fractional series' 1,000 terms.
const TABLE_LEN: usize = 1024;

/// log A_α for fractional α: both tails of MTZ §3.3, terms added by magnitude.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    // The two tails, A_α = a0 + a1, in one sum: only their total is wanted.
    let mut total = LogSum::default();
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let inv_sqrt2_sigma = 1.0 / (std::f64::consts::SQRT_2 * sigma);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let lg_alpha = ln_abs_gamma(alpha + 1.0);
    // ln|Γ(α − i + 1)|, carried from term to term by Γ(x + 1) = x·Γ(x) instead of a
    // log-gamma per term (it drifts by ~1e-14 over a thousand terms; the budget is 1e-9).
    let mut lg_j1 = lg_alpha;
    let log_half = 0.5f64.ln();
    for k in 0..MAX_FRACTIONAL_TERMS {
        let i = k as f64;
        let j = alpha - i;
        // log |C(α, i)| = ln|Γ(α+1)| − ln Γ(i+1) − ln|Γ(α−i+1)|.
        if k > 0 {
            lg_j1 -= (j + 1.0).abs().ln();
        }
        let log_coef = lg_alpha - log_factorial(k) - lg_j1;
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = log_half + log_erfc((i - z0) * inv_sqrt2_sigma);
        let log_e1 = log_half + log_erfc((z0 - j) * inv_sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) * inv_two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) * inv_two_var + log_e1;
        total.add(log_s0);
        total.add(log_s1);
        // Stop when both terms fall and the larger is 30 below the running total.
        if log_s0 < last0 && log_s1 < last1 && total.is_below_by(log_s0.max(log_s1), 30.0) {
            return total.ln();
        }
        last0 = log_s0;
        last1 = log_s1;
    }
    f64::INFINITY
}

/// ε (and the order that gave it) for a vector of RDP values at `orders`.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), PrivacyError> {
    if !(0.0..1.0).contains(&delta) {
        return Err(PrivacyError::Delta(delta));
    }
    if delta == 0.0 {
        return Ok(if rdp.iter().all(|r| *r == 0.0) { (0.0, 0.0) } else { (f64::INFINITY, 0.0) });
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(0.0));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        // NaN (an order that is +∞ minus +∞) never wins; ties keep the first order.
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// δ (and its order) for a vector of RDP values and a target ε.
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<(f64, f64), PrivacyError> {
    crate::check_epsilon(epsilon)?;
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(0.0));
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r <= 0.0 { f64::NEG_INFINITY } else { 0.5 * (-(-r).exp()).ln_1p() };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    Ok((best.0.exp().min(1.0), best.1))
}

/// Per-step RDP vectors already computed, by (q, σ) bit patterns. A federated schedule
/// repeats the same parameters round after round; computing a vector costs thousands of
/// special-function calls, adding one costs 156 additions.
const MEMO_CAPACITY: usize = 4096;

/// The RDP of everything composed so far, order by order.
///
/// Steps are counted per (q, σ) and the totals recomputed as Σ count × per-step RDP in the
/// order of the (q, σ) bit patterns, so the result does not depend on the order in which
/// events were composed (a budget fed by several partitions gets the same bits however
/// they interleave), up to [`CANONICAL_KEYS`] distinct (q, σ).
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    /// RDP held without a breakdown: restored from a stored total ([`RdpAccountant::from_rdp`])
    /// or added as a vector ([`RdpAccountant::add_steps`]).
    base: Vec<f64>,
    /// Steps composed per (q, σ) bit pattern, with the per-step vector.
    steps: std::collections::BTreeMap<(u64, u64), CountedStep>,
    /// `base` + Σ count × step over `steps`, in key order.
    rdp: Vec<f64>,
    memo: StepMemo,
}

/// Distinct (q, σ) up to which [`RdpAccountant::compose`] keeps its totals independent of
/// the composition order (a federation uses a handful).
/// Also the cap of the breakdown.
pub const CANONICAL_KEYS: usize = 64;

/// Per-step vectors by (q, σ) bit pattern.
type StepMemo = HashMap<(u64, u64), Arc<[f64]>>;

/// How many steps of one (q, σ) were composed, and one step's per-order RDP.
type CountedStep = (u64, Arc<[f64]>);

/// Equal when they hold the same orders and the same totals (the memo is a cache).
impl PartialEq for RdpAccountant {
    fn eq(&self, other: &Self) -> bool {
        self.orders == other.orders && self.rdp == other.rdp
    }
}

impl Default for RdpAccountant {
    fn default() -> Self {
        RdpAccountant::with_orders(default_orders())
    }
}

/// Per-step vectors at the default orders, shared by every accountant of the process (a
/// service restores its budgets from storage for every batch).
fn shared_steps() -> &'static std::sync::Mutex<StepMemo> {
    static SHARED: OnceLock<std::sync::Mutex<StepMemo>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

impl RdpAccountant {
    pub fn with_orders(orders: Vec<f64>) -> Self {
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, base: rdp.clone(), steps: Default::default(), rdp, memo: HashMap::new() }
    }

    /// An accountant at the default orders holding `rdp` (as stored by
    /// [`RdpAccountant::rdp`]) without its breakdown; `None` when the length does not
    /// match the orders.
    pub fn from_rdp(rdp: Vec<f64>) -> Option<Self> {
        let mut acc = RdpAccountant::default();
        if rdp.len() != acc.orders.len() {
            return None;
        }
        acc.base = rdp.clone();
        acc.rdp = rdp;
        Some(acc)
    }

    /// An accountant at the default orders from the parts [`RdpAccountant::base`] and
    /// [`RdpAccountant::steps`] return; `None` when `base` has the wrong length.
    pub fn from_parts(base: Vec<f64>, steps: &[SampledGaussian]) -> Result<Option<Self>, PrivacyError> {
        let Some(mut acc) = RdpAccountant::from_rdp(base) else { return Ok(None) };
        for s in steps {
            acc.count_steps(s)?;
        }
        acc.recompute();
        Ok(Some(acc))
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The part held without a breakdown (zeros for an accountant that only composed).
    pub fn base(&self) -> &[f64] {
        &self.base
    }

    /// The steps composed, one entry per (q, σ) with its total count, in key order.
    pub fn steps(&self) -> Vec<SampledGaussian> {
        self.steps
            .iter()
            .map(|((q, sigma), (count, _))| SampledGaussian {
                sampling_rate: f64::from_bits(*q),
                noise_multiplier: f64::from_bits(*sigma),
                count: *count,
            })
            .collect()
    }

    /// The per-order RDP of one step of `event` (its count ignored).
    pub fn step_rdp(&self, event: &SampledGaussian) -> Result<Vec<f64>, PrivacyError> {
        event.validate()?;
        Ok(self.orders.iter().map(|&a| sampled_gaussian_rdp(event.sampling_rate, event.noise_multiplier, a)).collect())
    }

    /// The per-step vector of `event`, from the memo (or the process-wide one at the
    /// default orders) when it was computed before.
    fn step_vector(&mut self, event: &SampledGaussian) -> Result<Arc<[f64]>, PrivacyError> {
        let key = (event.sampling_rate.to_bits(), event.noise_multiplier.to_bits());
        if let Some(step) = self.memo.get(&key) {
            return Ok(step.clone());
        }
        let default = self.orders == default_orders();
        let shared = default.then(|| shared_steps().lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned());
        let step: Arc<[f64]> = match shared.flatten() {
            Some(step) => step,
            None => {
                let step: Arc<[f64]> = self.step_rdp(event)?.into();
                if default {
                    let mut shared = shared_steps().lock().unwrap_or_else(|p| p.into_inner());
                    if shared.len() >= MEMO_CAPACITY {
                        shared.clear();
                    }
                    shared.insert(key, step.clone());
                }
                step
            }
        };
        if self.memo.len() >= MEMO_CAPACITY {
            self.memo.clear();
        }
        self.memo.insert(key, step.clone());
        Ok(step)
    }

    /// Counts `event.count` steps of `event` without recomputing the totals. The
    /// breakdown is capped at [`CANONICAL_KEYS`] distinct (q, σ): the steps of any further
    /// (q, σ) are added to `base` and the running totals at once (returns false then), so
    /// the state and the cost of a recomputation stay bounded whatever a stream of spends
    /// holds.
    fn count_steps(&mut self, event: &SampledGaussian) -> Result<bool, PrivacyError> {
        event.validate()?;
        if event.count == 0 {
            return Ok(false); // 0 × ∞ would poison the order with NaN
        }
        let step = self.step_vector(event)?;
        let key = (event.sampling_rate.to_bits(), event.noise_multiplier.to_bits());
        if let Some(entry) = self.steps.get_mut(&key) {
            entry.0 = entry.0.saturating_add(event.count);
            return Ok(true);
        }
        if self.steps.len() < CANONICAL_KEYS {
            self.steps.insert(key, (event.count, step));
            return Ok(true);
        }
        self.add_steps(&step, event.count);
        Ok(false)
    }

    /// `rdp` = `base` + Σ count × step, in key order.
    fn recompute(&mut self) {
        self.rdp.clone_from(&self.base);
        for (count, step) in self.steps.values() {
            let count = *count as f64;
            for (total, s) in self.rdp.iter_mut().zip(step.iter()) {
                *total += count * s;
            }
        }
    }

    /// Adds `event.count` steps of `event`. The first [`CANONICAL_KEYS`] distinct (q, σ)
    /// are kept in the breakdown and the totals recomputed in key order (the same bits in
    /// any composition order); the steps of any further (q, σ) are added to the part held
    /// without a breakdown as they come (the composition is the same sum, its last bits
    /// then depend on the order). The breakdown never holds more than [`CANONICAL_KEYS`]
    /// entries, so neither the stored state nor the cost of an event grows with the
    /// number of distinct (q, σ) a stream of spends carries.
    pub fn compose(&mut self, event: &SampledGaussian) -> Result<&mut Self, PrivacyError> {
        if self.count_steps(event)? {
            self.recompute();
        }
        Ok(self)
    }

    /// Adds `count` times a per-order RDP vector from [`RdpAccountant::step_rdp`] to the
    /// part held without a breakdown.
    pub fn add_steps(&mut self, step: &[f64], count: u64) {
        if count == 0 {
            return; // 0 × ∞ would poison the order with NaN
        }
        let count = count as f64;
        for ((base, total), s) in self.base.iter_mut().zip(self.rdp.iter_mut()).zip(step) {
            *base += count * s;
            *total += count * s;
        }
    }

    /// (ε, optimal order) at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), PrivacyError> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }

    /// (δ, optimal order) at `epsilon`.
    pub fn delta(&self, epsilon: f64) -> Result<(f64, f64), PrivacyError> {
        delta_from_rdp(&self.orders, &self.rdp, epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_orders_are_dp_accountings() {
        let o = default_orders();
        assert_eq!(o.len(), 156);
        assert_eq!(o[0], 1.1);
        assert_eq!(o[9], 2.0, "whole numbers among the fractional grid take the integer path");
        assert_eq!(o[98], 10.9);
        assert_eq!(o[99], 11.0);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }

    #[test]
    fn edge_cases_of_one_step() {
        assert_eq!(sampled_gaussian_rdp(0.0, 1.0, 2.0), 0.0);
        assert_eq!(sampled_gaussian_rdp(0.5, 0.0, 2.0), f64::INFINITY);
        assert_eq!(sampled_gaussian_rdp(1.0, 2.0, 8.0), 8.0 / 8.0);
    }

    #[test]
    fn order_two_has_a_closed_form() {
        // A_2 = 1 + q²(e^{1/σ²} − 1), so RDP(2) = ln(1 + q²(e^{1/σ²} − 1)).
        for (q, s) in [(0.01, 1.1), (0.1, 0.7), (0.5, 3.0)] {
            let closed = (q * q * ((1.0f64 / (s * s)).exp() - 1.0)).ln_1p();
            let got = sampled_gaussian_rdp(q, s, 2.0);
            assert!((got - closed).abs() <= 1e-13 * closed, "{q} {s}: {got} vs {closed}");
        }
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let mut acc = RdpAccountant::default();
        let bad = SampledGaussian { sampling_rate: 1.5, noise_multiplier: 1.0, count: 1 };
        assert!(acc.compose(&bad).is_err());
        let bad = SampledGaussian { sampling_rate: 0.1, noise_multiplier: f64::NAN, count: 1 };
        assert!(acc.compose(&bad).is_err());
        assert!(acc.epsilon(1.0).is_err());
        assert!(acc.delta(-1.0).is_err());
    }

    #[test]
    fn nothing_composed_is_free() {
        let acc = RdpAccountant::default();
        assert_eq!(acc.epsilon(1e-5).unwrap().0, 0.0);
        assert_eq!(acc.delta(1.0).unwrap().0, 0.0);
    }

    #[test]
    fn the_breakdown_is_capped_and_the_composition_stays_the_sum() {
        // A stream of near-free spends, each with a distinct q: the breakdown stops at the
        // cap, the totals stay the plain sum of every step.
        let mut acc = RdpAccountant::default();
        let mut expected = vec![0.0; acc.orders().len()];
        for i in 0..1_000u32 {
            let event = SampledGaussian { sampling_rate: 1e-6 * f64::from(i + 1), noise_multiplier: 50.0, count: 2 };
            for (e, s) in expected.iter_mut().zip(acc.step_rdp(&event).unwrap()) {
                *e += 2.0 * s;
            }
            acc.compose(&event).unwrap();
            assert!(acc.steps().len() <= CANONICAL_KEYS);
        }
        assert_eq!(acc.steps().len(), CANONICAL_KEYS);
        for (got, want) in acc.rdp().iter().zip(&expected) {
            assert!((got - want).abs() <= 1e-9 * want.abs().max(1e-300), "{got} vs {want}");
        }
        // More of a (q, σ) in the breakdown still counts there; the stored parts restore the
        // same totals.
        let first = acc.steps()[0];
        acc.compose(&SampledGaussian { count: 5, ..first }).unwrap();
        assert_eq!(acc.steps()[0].count, first.count + 5);
        let back = RdpAccountant::from_parts(acc.base().to_vec(), &acc.steps()).unwrap().unwrap();
        assert_eq!(back.rdp(), acc.rdp());
        assert_eq!(back.steps().len(), CANONICAL_KEYS);
    }
}
