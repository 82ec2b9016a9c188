//! The agent's differential-privacy step on its update: clip to the round's L2 norm C,
//! then add Gaussian noise with standard deviation σ·C/√t per coordinate. A round only
//! finishes with at least t survivors, so the noise in the sum has standard deviation at
//! least σ·C: the aggregate is the Gaussian mechanism with noise multiplier σ on a
//! sensitivity-C sum, whichever parties drop out (distributed DP; more survivors only add
//! noise).

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// What `privatize` did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Privatized {
    pub norm_before: f64,
    pub clipped: bool,
    pub noise_std: f64,
}

/// Per-party noise standard deviation for a round with threshold `t`.
pub fn party_noise_std(clip_norm: f64, noise_multiplier: f64, threshold: u32) -> f64 {
    noise_multiplier * clip_norm / f64::from(threshold.max(1)).sqrt()
}

/// Clips `update` to `clip_norm` and adds the party's share of the noise.
pub fn privatize(update: &mut [f32], clip_norm: f64, noise_std: f64, rng: &mut impl Rng) -> Privatized {
    let norm = update.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    let clipped = norm > clip_norm;
    if clipped {
        let factor = (clip_norm / norm) as f32;
        update.iter_mut().for_each(|v| *v *= factor);
    }
    if noise_std > 0.0 {
        let normal = Normal::new(0.0, noise_std).expect("finite positive std");
        for v in update.iter_mut() {
            *v += normal.sample(rng) as f32;
        }
    }
    Privatized { norm_before: norm, clipped, noise_std }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn clips_then_adds_noise_of_the_right_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut v = vec![3.0f32, 4.0];
        let p = privatize(&mut v, 1.0, 0.0, &mut rng);
        assert!(p.clipped && (p.norm_before - 5.0).abs() < 1e-9);
        assert!(((v[0] * v[0] + v[1] * v[1]).sqrt() - 1.0).abs() < 1e-6);
        let mut zeros = vec![0f32; 100_000];
        let std = party_noise_std(2.0, 1.5, 9);
        privatize(&mut zeros, 2.0, std, &mut rng);
        let var = zeros.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / zeros.len() as f64;
        assert!((var.sqrt() - 1.0).abs() < 0.01, "std {}", var.sqrt());
    }
}
