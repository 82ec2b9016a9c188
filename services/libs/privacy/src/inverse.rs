//! The questions an operator asks back. Both answers come from searching the forward
//! computation, so they agree with it exactly: `rounds_left` returns the largest n with
//! ε(spent + n steps) ≤ budget, `noise_for_target` a σ whose ε is within the target.

use crate::PrivacyError;
use crate::rdp::{RdpAccountant, SampledGaussian};

/// More rounds than any schedule runs: the answer when a step spends nothing.
pub const UNBOUNDED_ROUNDS: u64 = u64::MAX;

/// How many more steps of `step` (its count ignored) fit on top of `spent` before ε at
/// `delta` exceeds `budget`. 0 when the budget is already spent (or overspent).
pub fn rounds_left(
    spent: &RdpAccountant,
    step: &SampledGaussian,
    delta: f64,
    budget: f64,
) -> Result<u64, PrivacyError> {
    crate::check_epsilon(budget)?;
    let per_step = spent.step_rdp(step)?;
    let eps_after = |n: u64| -> Result<f64, PrivacyError> {
        let mut acc = spent.clone();
        acc.add_steps(&per_step, n);
        acc.epsilon(delta).map(|(e, _)| e)
    };
    if eps_after(0)? > budget {
        return Ok(0);
    }
    if per_step.iter().all(|r| *r == 0.0) {
        return Ok(UNBOUNDED_ROUNDS);
    }
    // Exponential search for an n that does not fit, then bisection: invariant
    // fits(lo) && !fits(hi).
    let (mut lo, mut hi) = (0u64, 1u64);
    while eps_after(hi)? <= budget {
        lo = hi;
        if hi >= 1 << 60 {
            return Ok(UNBOUNDED_ROUNDS);
        }
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if eps_after(mid)? <= budget { lo = mid } else { hi = mid }
    }
    Ok(lo)
}

/// Largest noise multiplier tried before the target is declared unreachable.
const MAX_SIGMA: f64 = 1e6;

/// The smallest noise multiplier (to a relative 1e-6) that keeps `count` rounds at
/// sampling rate `q` within `target` ε at `delta`; the returned σ always satisfies the
/// target (it is the upper end of the final bracket).
pub fn noise_for_target(q: f64, count: u64, delta: f64, target: f64) -> Result<f64, PrivacyError> {
    crate::check_epsilon(target)?;
    let eps = |sigma: f64| -> Result<f64, PrivacyError> {
        let mut acc = RdpAccountant::default();
        acc.compose(&SampledGaussian { sampling_rate: q, noise_multiplier: sigma, count })?;
        acc.epsilon(delta).map(|(e, _)| e)
    };
    let mut hi = 1.0;
    while eps(hi)? > target {
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(PrivacyError::Unreachable { q, count, epsilon: target, max: MAX_SIGMA });
        }
    }
    let mut lo = hi / 2.0;
    if eps(lo)? <= target {
        // Below 1: keep halving until it no longer fits.
        while eps(lo)? <= target {
            hi = lo;
            lo /= 2.0;
            if lo < 1e-6 {
                return Ok(hi);
            }
        }
    }
    while (hi - lo) > 1e-6 * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid)? <= target { hi = mid } else { lo = mid }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_notes_figure_for_q_001_sigma_1_1() {
        // q = 0.01, σ = 1.1, δ = 1e-5: RDP allows 1,404 rounds under ε = 2.
        let step = SampledGaussian { sampling_rate: 0.01, noise_multiplier: 1.1, count: 1 };
        let n = rounds_left(&RdpAccountant::default(), &step, 1e-5, 2.0).unwrap();
        assert_eq!(n, 1404);
    }

    #[test]
    fn a_spent_budget_leaves_nothing_and_a_free_step_is_unbounded() {
        let mut spent = RdpAccountant::default();
        spent.compose(&SampledGaussian { sampling_rate: 1.0, noise_multiplier: 0.5, count: 10 }).unwrap();
        let step = SampledGaussian { sampling_rate: 0.01, noise_multiplier: 1.0, count: 1 };
        assert_eq!(rounds_left(&spent, &step, 1e-5, 1.0).unwrap(), 0);
        let free = SampledGaussian { sampling_rate: 0.0, noise_multiplier: 1.0, count: 1 };
        assert_eq!(rounds_left(&RdpAccountant::default(), &free, 1e-5, 1.0).unwrap(), UNBOUNDED_ROUNDS);
    }

    #[test]
    fn noise_for_target_meets_the_target_tightly() {
        let sigma = noise_for_target(0.01, 1000, 1e-5, 2.0).unwrap();
        let eps = |s: f64| {
            let mut acc = RdpAccountant::default();
            acc.compose(&SampledGaussian { sampling_rate: 0.01, noise_multiplier: s, count: 1000 }).unwrap();
            acc.epsilon(1e-5).unwrap().0
        };
        assert!(eps(sigma) <= 2.0);
        assert!(eps(sigma * (1.0 - 1e-5)) > 2.0 - 1e-3, "σ is the smallest within tolerance");
        assert!(noise_for_target(1.0, 1, 1e-5, -1.0).is_err());
    }
}
