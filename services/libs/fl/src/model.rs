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

/// Applies the federation's mean update to the global weights.
pub fn apply_update(global: &mut [f32], mean_update: &[f64], server_learning_rate: f64) {
    for (w, u) in global.iter_mut().zip(mean_update) {
        *w = (f64::from(*w) + server_learning_rate * u) as f32;
    }
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
}
