//! The demo federation: the shipped data split non-IID over n hospitals, standardised
//! with one scaler (fitted on the public data's training rows, shared by every party).

use crate::data::{Dataset, Scaler, split, wdbc};

/// Seed of the demo split: every party computes the same shards.
pub const DEMO_SEED: u64 = 20_261_125;
/// Label-skew concentration of the split (smaller: more non-IID).
pub const DEMO_ALPHA: f64 = 0.6;

#[derive(Debug, Clone)]
pub struct DemoFederation {
    pub shards: Vec<Dataset>,
    pub test: Dataset,
}

impl DemoFederation {
    pub fn new(hospitals: usize) -> Result<Self, crate::data::DataError> {
        let s = split(&wdbc(), hospitals, 0.2, DEMO_ALPHA, DEMO_SEED)?;
        let refs: Vec<&Dataset> = s.hospitals.iter().collect();
        let scaler = Scaler::fit(&refs);
        Ok(DemoFederation {
            shards: s.hospitals.iter().map(|d| scaler.apply(d)).collect(),
            test: scaler.apply(&s.test),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DpSgd, accuracy, apply_update, dp_sgd_update};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// The session defaults of `guardian fl start` (10 rounds, ε = 2 per hospital, the noise
    /// multiplier that budget gives) learn the task on the non-IID demo split.
    #[test]
    fn federated_dp_sgd_with_the_default_budget_learns() {
        let demo = DemoFederation::new(5).unwrap();
        let cfg = DpSgd {
            steps: 20,
            sampling_rate: 0.1,
            clip_norm: 1.0,
            noise_multiplier: 3.237,
            learning_rate: 0.5,
            l2: 1e-3,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut w = vec![0f32; 31];
        let start = accuracy(&w, &demo.test);
        let mut history = Vec::new();
        for _ in 0..10 {
            let updates: Vec<Vec<f32>> = demo.shards.iter().map(|s| dp_sgd_update(&w, s, &cfg, &mut rng)).collect();
            let mean: Vec<f64> =
                (0..31).map(|j| updates.iter().map(|u| f64::from(u[j])).sum::<f64>() / updates.len() as f64).collect();
            apply_update(&mut w, &mean, 1.0);
            history.push(accuracy(&w, &demo.test));
        }
        let end = *history.last().unwrap();
        assert!(end > 0.85 && end > start + 0.2, "accuracy {start} → {history:?}");
    }
}
