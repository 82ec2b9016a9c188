//! Which hospitals take part in a hospital-unit round: each one independently with
//! probability q, decided by a hash every party can recompute from the round's OPEN
//! record (session, round, the model the round trains from, the hospital id). The
//! aggregator cannot add a hospital the rule leaves out: agents refuse a round whose
//! participant list breaks the rule.
//!
//! The accounting charges a sampled round in full (q = 1), not the subsampled Gaussian at
//! q. Amplification by subsampling holds only against an observer who does not know
//! whether a hospital was in the sample; here the sample is public by design (the
//! participant list is in the round's record and in every model version), so the
//! sound charge for a hospital is one full Gaussian step per round it was sampled in, and
//! nothing for the others. Sampling still saves budget: a hospital spends in about q of
//! the rounds.

use sha2::{Digest, Sha256};

/// True when `hospital` is in the sample of `round` at rate `q`. `model_sha256` is the
/// SHA-256 of the model the round trains from (None for the first round's zero model):
/// the aggregator cannot steer it without changing the federation's model.
pub fn sampled(session: &str, round: i64, model_sha256: Option<&str>, q: f64, hospital: &str) -> bool {
    if q >= 1.0 {
        return true;
    }
    let mut h = Sha256::new();
    h.update(b"phoenix-guardian/fl/hospital-sampling/v1");
    for field in [session.as_bytes(), &round.to_be_bytes(), model_sha256.unwrap_or("").as_bytes(), hospital.as_bytes()]
    {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let digest = h.finalize();
    let u = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    // u / 2^64 < q, without rounding q · 2^64 up past u64::MAX.
    (u as f64) < q * 18_446_744_073_709_551_616.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over 20 hospitals × 1,000 rounds at q = 0.3, each hospital is sampled at a rate
    /// within 5 standard deviations of q, and the overall rate within 5 too.
    #[test]
    fn hospitals_are_sampled_at_rate_q_independently_of_their_names() {
        let q = 0.3;
        let rounds = 1_000;
        let mut total = 0u64;
        for h in 0..20 {
            let hospital = format!("h{h:03}");
            let hits = (1..=rounds).filter(|&r| sampled("s-1", r, Some("ab"), q, &hospital)).count() as f64;
            let sd = (rounds as f64 * q * (1.0 - q)).sqrt();
            assert!((hits - rounds as f64 * q).abs() < 5.0 * sd, "{hospital}: {hits} of {rounds}");
            total += hits as u64;
        }
        let n = 20.0 * rounds as f64;
        let sd = (n * q * (1.0 - q)).sqrt();
        assert!((total as f64 - n * q).abs() < 5.0 * sd, "{total} of {n}");
    }

    /// The spends of a hospital-unit session at sampling rate q: a hospital spends once,
    /// at q = 1, in each round it is sampled in, so its spends follow the sampling rate
    /// and each charges what a round the observers know it took part in costs.
    #[test]
    fn hospital_unit_spends_follow_the_sample_and_charge_full_rounds() {
        use guardian_schemas::records::{DpUnit, RoundSettings};
        let q = 0.25;
        let settings = RoundSettings {
            model_version: 0,
            model_uri: None,
            model_sha256: None,
            participants: vec![],
            threshold: 2,
            neighbours: 2,
            dimension: 31,
            chunk_len: 8,
            clipping_range: 8.0,
            quantization_levels: 1 << 20,
            dp_unit: DpUnit::Hospital,
            clip_norm: 1.0,
            noise_multiplier: 1.1,
            sampling_rate: q,
            delta: 1e-5,
            graph_seed: vec![0; 32],
            aggregator_key: vec![0; 32],
            stage_timeout_ms: 1000,
            local_steps: 1,
            learning_rate: 1.0,
        };
        let step = crate::agent::charge(&settings);
        assert_eq!((step.sampling_rate, step.count), (1.0, 1), "a sampled round is charged in full");
        let rounds = 4_000;
        let spends = (1..=rounds).filter(|&r| sampled("s-q", r, None, q, "h007")).count() as f64;
        let sd = (rounds as f64 * q * (1.0 - q)).sqrt();
        assert!((spends / rounds as f64 - q).abs() < 5.0 * sd / rounds as f64, "{spends} spends in {rounds} rounds");
        let patient = crate::agent::charge(&RoundSettings { dp_unit: DpUnit::Patient, local_steps: 20, ..settings });
        assert_eq!((patient.sampling_rate, patient.count), (q, 20), "DP-SGD keeps its record sampling");
    }

    #[test]
    fn the_rule_is_a_pure_function_of_the_open_record() {
        assert!(sampled("s", 1, None, 1.0, "h001"));
        assert!(!sampled("s", 1, None, 0.0, "h001"));
        let a: Vec<bool> = (1..200).map(|r| sampled("s", r, Some("x"), 0.5, "h001")).collect();
        let b: Vec<bool> = (1..200).map(|r| sampled("s", r, Some("x"), 0.5, "h001")).collect();
        let other: Vec<bool> = (1..200).map(|r| sampled("s", r, Some("y"), 0.5, "h001")).collect();
        assert_eq!(a, b);
        assert_ne!(a, other, "the model the round trains from changes the sample");
    }
}
