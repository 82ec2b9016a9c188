//! The noise of a hospital-unit round: the distributed discrete Gaussian (Kairouz, Liu &
//! Steinke, ICML 2021). Each party clips its update to the round's L2 norm C, quantizes it
//! (scale s = (L − 1)/(2r), stochastic rounding), and adds integer noise from DG(σ²) to
//! every quantized coordinate, sampled exactly ([`guardian_privacy::discrete`]). Only the
//! sum of at least t parties is ever unmasked, and the sum of their noise is within a
//! negligible Rényi divergence of DG(tσ²) or more.
//!
//! Sensitivity, in quantized units, of one hospital's contribution (its update against a
//! zero update, the adjacency of DP-FedAvg): s·C from the clipped update, plus at most 2
//! per coordinate from the two roundings, so Δ₂ = s·C + 2√d. Each party's σ² is
//! ⌈(z·Δ₂)²/t⌉, so that t parties carry the round's noise multiplier z. The accountant is
//! charged what that actually gives: the noise multiplier 1/ε of the ½ε²-CDP guarantee of
//! [`guardian_privacy::discrete::distributed_cdp_epsilon`] for t parties: at least z (σ²
//! is rounded up, so the noise is never less than the round's), and equal to it up to
//! that rounding once τ vanishes.

use crate::error::{Context, Result, ensure};
use guardian_privacy::discrete::{DiscreteGaussian, distributed_cdp_epsilon};
use guardian_secagg::RoundConfig;
use rand::Rng;

/// What one party adds in a hospital-unit round, and what it costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedNoise {
    pub noise: DiscreteGaussian,
    /// Δ₂ in quantized units.
    pub sensitivity: f64,
    /// The noise multiplier the accountant is charged (one Gaussian step at q = 1).
    pub charged_multiplier: f64,
}

impl DistributedNoise {
    pub fn for_round(cfg: &RoundConfig) -> Result<Self> {
        let positive = cfg.noise_multiplier > 0.0;
        ensure!(positive, "a hospital-unit round needs a positive noise multiplier");
        let scale = f64::from(cfg.quantization_levels - 1) / (2.0 * f64::from(cfg.clipping_range));
        let sensitivity = scale * cfg.clip_norm + 2.0 * (cfg.dimension as f64).sqrt();
        let sigma2 = ((cfg.noise_multiplier * sensitivity).powi(2) / f64::from(cfg.threshold)).ceil();
        ensure!(sigma2 >= 1.0 && sigma2 < (1u64 << 60) as f64, "per-party noise variance {sigma2} is out of range");
        let noise = DiscreteGaussian::with_variance(sigma2 as u64).context("discrete Gaussian variance")?;
        let epsilon = distributed_cdp_epsilon(sensitivity, sigma2, cfg.threshold, cfg.dimension);
        Ok(DistributedNoise { noise, sensitivity, charged_multiplier: 1.0 / epsilon })
    }

    /// Adds one sample to every quantized coordinate (in the ring Z/2^32).
    pub fn add(&self, quantized: &mut [u32], rng: &mut impl Rng) {
        for w in quantized.iter_mut() {
            *w = w.wrapping_add(self.noise.sample(rng) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(z: f64, t: u32) -> RoundConfig {
        RoundConfig {
            session: "s".into(),
            round: 1,
            model_version: 0,
            participants: (0..5).map(|i| format!("h{i}")).collect(),
            threshold: t,
            neighbours: 4,
            dimension: 31,
            chunk_len: 8,
            clipping_range: 8.0,
            quantization_levels: 1 << 20,
            clip_norm: 1.0,
            noise_multiplier: z,
            graph_seed: [0; 32],
        }
    }

    #[test]
    fn the_charge_is_the_round_multiplier_up_to_rounding_and_never_less_noise() {
        for (z, t) in [(0.5, 2), (1.1, 3), (4.0, 5)] {
            let n = DistributedNoise::for_round(&cfg(z, t)).unwrap();
            assert!(n.charged_multiplier >= z * (1.0 - 1e-12), "{z}: charged {}", n.charged_multiplier);
            assert!(n.charged_multiplier < z * (1.0 + 1e-6), "{z}: charged {}", n.charged_multiplier);
            // t parties' variance carries z·Δ₂.
            assert!(f64::from(t) * n.noise.variance() >= (z * n.sensitivity).powi(2));
        }
    }
}
