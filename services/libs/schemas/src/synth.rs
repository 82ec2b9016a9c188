//! Deterministic synthetic hospitals for demos, load and chaos experiments.
//!
//! The generator is seeded: the same seed and counts give the same events (ids, values),
//! only the event times come from the caller. Events carry pseudonymous references, never
//! PHI, and are valid by [`crate::validate`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::records::{BudgetSpend, Encounter, EncounterType, Mechanism, SloEvent, SloKind};

/// Deterministic synthetic events.
#[derive(Debug)]
pub struct Synth {
    seed: u64,
    rng: StdRng,
    hospitals: Vec<String>,
    encounters: u64,
    /// Encounters per hospital between two federated rounds (one budget spend each).
    round_every: u64,
}

impl Synth {
    pub fn new(seed: u64, hospitals: u32) -> Self {
        Synth {
            seed,
            rng: StdRng::seed_from_u64(seed),
            hospitals: (1..=hospitals).map(|i| format!("h{i:03}")).collect(),
            encounters: 0,
            round_every: 50,
        }
    }

    /// The next encounter, its SLO observation, and a budget spend when a round ends.
    pub fn next(&mut self, now_ms: i64) -> (Encounter, SloEvent, Option<BudgetSpend>) {
        let n = self.encounters;
        self.encounters += 1;
        let h = (n % self.hospitals.len() as u64) as usize;
        let hospital = self.hospitals[h].clone();
        // Hospitals differ a little, so comparisons show something.
        let skill = 1.0 + h as f64 * 0.15;
        let generation_ms = (self.rng.random_range(800.0..3500.0) * skill) as i64;
        let completed = if self.rng.random_bool(0.96) { 4 } else { 3 };
        let rating = self.rng.random_bool(0.4).then(|| self.rng.random_range(3..=5));
        let encounter_type = match self.rng.random_range(0..10) {
            0..=5 => EncounterType::Outpatient,
            6 | 7 => EncounterType::Inpatient,
            8 => EncounterType::Emergency,
            _ => EncounterType::Telehealth,
        };
        let encounter = Encounter {
            // The seed is part of the id: runs with different seeds never collide (consumers
            // deduplicate by event id), the same seed gives the same events.
            event_id: format!("enc-{}-{hospital}-{n}", self.seed),
            hospital_id: hospital.clone(),
            encounter_ref: format!("{:016x}", self.rng.random::<u64>()),
            clinician_ref: format!("{:08x}", self.rng.random_range(0..64u32) + (h as u32) * 1000),
            occurred_at: now_ms,
            encounter_type,
            soap_sections_expected: 4,
            soap_sections_completed: completed,
            generation_ms,
            physician_rating: rating,
            model_version: None,
        };
        let slo = SloEvent {
            event_id: format!("slo-{}-{hospital}-{n}", self.seed),
            service: "guardian-agent".into(),
            hospital_id: Some(hospital.clone()),
            slo: SloKind::SoapGenerationLatency,
            good: generation_ms < 5000,
            latency_ms: Some(generation_ms as f64),
            observed_at: now_ms,
        };
        let per_hospital = n / self.hospitals.len() as u64;
        let spend = (per_hospital % self.round_every == self.round_every - 1).then(|| {
            let round = per_hospital / self.round_every + 1;
            BudgetSpend {
                event_id: format!("demo-r{round}-{hospital}"),
                hospital_id: hospital.clone(),
                session_id: "demo".into(),
                round: round as i64,
                mechanism: Mechanism::SampledGaussian,
                sampling_rate: 0.01,
                noise_multiplier: 1.1,
                steps: 100,
                delta: 1e-5,
                occurred_at: now_ms,
            }
        });
        (encounter, slo, spend)
    }
}
