//! Logistic regression: weights are the 30 feature weights followed by the bias. Local
//! training is mini-batch gradient descent with L2 regularisation; the federation's
//! privacy comes from the agent's clip-and-noise step on the whole update (DP-FedAvg,
//! McMahan et al. 2018: DP-SGD where the unit of privacy is a hospital).

use rand::Rng;
use rand::seq::SliceRandom;

use crate::data::Dataset;

/// Local training settings of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalTraining {
    pub epochs: u32,
    pub learning_rate: f32,
    pub batch_size: usize,
    pub l2: f32,
}

impl Default for LocalTraining {
    fn default() -> Self {
        LocalTraining { epochs: 2, learning_rate: 0.1, batch_size: 16, l2: 1e-3 }
    }
}

/// Number of parameters for `features` inputs.
pub fn parameters(features: usize) -> usize {
    features + 1
}

fn logit(w: &[f32], x: &[f32]) -> f32 {
    let (bias, weights) = w.split_last().expect("at least the bias");
    weights.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + bias
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Fraction of rows classified correctly (threshold 0.5).
pub fn accuracy(w: &[f32], ds: &Dataset) -> f64 {
    let right = ds.features.iter().zip(&ds.labels).filter(|(x, y)| (logit(w, x) >= 0.0) == (**y == 1)).count();
    right as f64 / ds.len().max(1) as f64
}

/// Mean cross-entropy.
pub fn log_loss(w: &[f32], ds: &Dataset) -> f64 {
    let total: f64 = ds
        .features
        .iter()
        .zip(&ds.labels)
        .map(|(x, &y)| {
            let p = f64::from(sigmoid(logit(w, x))).clamp(1e-12, 1.0 - 1e-12);
            if y == 1 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / ds.len().max(1) as f64
}

/// Trains from `global` on `ds` and returns the update (local weights − global weights).
pub fn local_update(global: &[f32], ds: &Dataset, cfg: &LocalTraining, rng: &mut impl Rng) -> Vec<f32> {
    let mut w = global.to_vec();
    let mut order: Vec<usize> = (0..ds.len()).collect();
    let mut grad = vec![0f32; w.len()];
    for _ in 0..cfg.epochs {
        order.shuffle(rng);
        for batch in order.chunks(cfg.batch_size.max(1)) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for &i in batch {
                let x = &ds.features[i];
                let err = sigmoid(logit(&w, x)) - f32::from(ds.labels[i]);
                for (g, v) in grad.iter_mut().zip(x) {
                    *g += err * v;
                }
                *grad.last_mut().expect("bias") += err;
            }
            let scale = cfg.learning_rate / batch.len() as f32;
            let last = w.len() - 1;
            for (j, (wj, g)) in w.iter_mut().zip(&grad).enumerate() {
                let reg = if j == last { 0.0 } else { cfg.l2 * *wj };
                *wj -= scale * g + cfg.learning_rate * reg;
            }
        }
    }
    w.iter().zip(global).map(|(a, b)| a - b).collect()
}

/// DP-SGD settings (Abadi et al. 2016): every step samples each record with probability
/// `sampling_rate` (Poisson), clips each sampled record's gradient to `clip_norm`, adds
/// Gaussian noise of standard deviation `noise_multiplier · clip_norm` to the sum and
/// divides by the expected batch size. `steps` such steps are one application of the
/// sampled Gaussian mechanism `steps` times: exactly what the privacy accountant composes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    pub steps: u32,
    pub sampling_rate: f64,
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    pub learning_rate: f32,
    pub l2: f32,
}

/// One Gaussian sample of standard deviation `std`, drawn as Opacus's secure mode does
/// (Holohan & Braghin, "Secure Random Sampling in Differential Privacy", ESORICS 2021):
/// the sum of four independent standard-normal draws, halved, times `std`. Mironov's
/// floating-point attack (CCS 2012) reads the input off the gaps between the doubles a
/// single draw can produce next to it; a sum of several draws has no such gaps to read.
/// With a CSPRNG (the agent's is ChaCha20 seeded from the OS) the draws are
/// unpredictable too. DP-SGD adds this noise to floating-point gradients, which a
/// discrete mechanism would have to snap to a grid first; hospital-unit rounds, whose
/// updates are integers after quantization, use the exact discrete Gaussian instead.
pub fn secure_normal(std: f64, rng: &mut impl Rng) -> f64 {
    use rand_distr::{Distribution, StandardNormal};
    let sum: f64 = (0..4).map(|_| <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)).sum();
    sum / 2.0 * std
}

/// Trains from `global` with DP-SGD on `ds`; returns the update (local − global).
pub fn dp_sgd_update(global: &[f32], ds: &Dataset, cfg: &DpSgd, rng: &mut impl Rng) -> Vec<f32> {
    let mut w = global.to_vec();
    let mut grad = vec![0f64; w.len()];
    let mut g = vec![0f64; w.len()];
    let expected_batch = (cfg.sampling_rate * ds.len() as f64).max(1.0);
    let std = (cfg.noise_multiplier * cfg.clip_norm).max(0.0);
    let last = w.len() - 1;
    for _ in 0..cfg.steps {
        grad.iter_mut().for_each(|v| *v = 0.0);
        for (x, &y) in ds.features.iter().zip(&ds.labels) {
            if rng.random::<f64>() >= cfg.sampling_rate {
                continue;
            }
            let err = f64::from(sigmoid(logit(&w, x)) - f32::from(y));
            for (gj, v) in g.iter_mut().zip(x) {
                *gj = err * f64::from(*v);
            }
            g[last] = err;
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            let scale = if norm > cfg.clip_norm { cfg.clip_norm / norm } else { 1.0 };
            for (acc, v) in grad.iter_mut().zip(&g) {
                *acc += v * scale;
            }
        }
        if cfg.noise_multiplier > 0.0 {
            for acc in grad.iter_mut() {
                *acc += secure_normal(std, rng);
            }
        }
        let lr = f64::from(cfg.learning_rate);
        for (j, (wj, acc)) in w.iter_mut().zip(&grad).enumerate() {
            let reg = if j == last { 0.0 } else { f64::from(cfg.l2) * f64::from(*wj) };
            *wj = (f64::from(*wj) - lr * (acc / expected_batch + reg)) as f32;
        }
    }
    w.iter().zip(global).map(|(a, b)| a - b).collect()
}

/// Applies the federation's mean update to the global weights.
pub fn apply_update(global: &mut [f32], mean_update: &[f64], server_learning_rate: f64) {
    for (w, u) in global.iter_mut().zip(mean_update) {
        *w = step(*w, *u, server_learning_rate);
    }
}

/// One weight moved by its mean update (what [`apply_update`] does to each).
pub fn step(weight: f32, mean_update: f64, server_learning_rate: f64) -> f32 {
    (f64::from(weight) + server_learning_rate * mean_update) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Scaler, split, wdbc};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn centralised_training_learns_the_task() {
        let s = split(&wdbc(), 1, 0.2, 100.0, 1).unwrap();
        let scaler = Scaler::fit(&[&s.hospitals[0]]);
        let (train, test) = (scaler.apply(&s.hospitals[0]), scaler.apply(&s.test));
        let mut w = vec![0f32; parameters(30)];
        let before = accuracy(&w, &test);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let cfg = LocalTraining { epochs: 5, ..LocalTraining::default() };
        let u = local_update(&w, &train, &cfg, &mut rng);
        apply_update(&mut w, &u.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 1.0);
        let after = accuracy(&w, &test);
        assert!(after > 0.93 && after > before, "accuracy {before} → {after}");
        assert!(log_loss(&w, &test) < 0.2);
    }

    #[test]
    fn dp_sgd_learns_with_noise_and_is_clipped() {
        let s = split(&wdbc(), 1, 0.2, 100.0, 1).unwrap();
        let scaler = Scaler::fit(&[&s.hospitals[0]]);
        let (train, test) = (scaler.apply(&s.hospitals[0]), scaler.apply(&s.test));
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let cfg = DpSgd {
            steps: 60,
            sampling_rate: 0.1,
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            learning_rate: 0.5,
            l2: 1e-3,
        };
        let mut w = vec![0f32; parameters(30)];
        let u = dp_sgd_update(&w, &train, &cfg, &mut rng);
        apply_update(&mut w, &u.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), 1.0);
        let acc = accuracy(&w, &test);
        assert!(acc > 0.9, "accuracy {acc}");
        // With no noise and a tiny clip norm every step moves at most lr · C / batch · n.
        let tiny = DpSgd { clip_norm: 1e-3, noise_multiplier: 0.0, steps: 1, ..cfg };
        let u = dp_sgd_update(&[0f32; 31], &train, &tiny, &mut rng);
        let norm = u.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!(norm < 0.5 * 1e-3 * 3.0, "update norm {norm}");
    }
}
