//! Bounds a record must keep before it reaches any state: the rules producers check
//! before they publish and consumers check before they apply (what fails is dead-lettered
//! with the returned reason). Pure; no I/O.

use crate::records::{BudgetSpend, Encounter};

/// Why an encounter cannot be counted.
pub fn encounter(e: &Encounter) -> Result<(), String> {
    if e.hospital_id.is_empty() || e.event_id.is_empty() {
        return Err("event_id and hospital_id must not be empty".into());
    }
    if e.soap_sections_expected < 0
        || e.soap_sections_completed < 0
        || e.soap_sections_completed > e.soap_sections_expected
    {
        return Err(format!(
            "SOAP sections completed {} of {} expected",
            e.soap_sections_completed, e.soap_sections_expected
        ));
    }
    if e.generation_ms < 0 {
        return Err(format!("negative generation time {}", e.generation_ms));
    }
    if let Some(r) = e.physician_rating
        && !(1..=5).contains(&r)
    {
        return Err(format!("physician rating {r} outside 1..5"));
    }
    Ok(())
}

/// Why a budget spend cannot be accounted at all.
pub fn spend(s: &BudgetSpend) -> Result<(), String> {
    if s.event_id.is_empty() || s.hospital_id.is_empty() {
        return Err("event_id and hospital_id must not be empty".into());
    }
    if s.steps < 0 {
        return Err(format!("steps must be >= 0, got {}", s.steps));
    }
    if !(0.0..=1.0).contains(&s.sampling_rate) {
        return Err(format!("sampling rate {} outside [0, 1]", s.sampling_rate));
    }
    if !(s.noise_multiplier >= 0.0 && s.noise_multiplier.is_finite()) {
        return Err(format!("noise multiplier {} is not a finite value >= 0", s.noise_multiplier));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Synth;

    #[test]
    fn synthetic_records_are_valid_and_broken_ones_are_not() {
        let mut synth = Synth::new(7, 3);
        let mut spends = 0;
        for i in 0..400 {
            let (mut e, _, s) = synth.next(1_700_000_000_000 + i);
            assert_eq!(encounter(&e), Ok(()));
            if let Some(mut s) = s {
                spends += 1;
                assert_eq!(spend(&s), Ok(()));
                s.sampling_rate = 1.5;
                assert!(spend(&s).is_err());
                s.sampling_rate = 0.5;
                s.noise_multiplier = f64::NAN;
                assert!(spend(&s).is_err());
            }
            e.soap_sections_completed = e.soap_sections_expected + 1;
            assert!(encounter(&e).is_err());
        }
        assert!(spends > 0);
    }
}
