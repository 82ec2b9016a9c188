//! Bounds a record must keep before it reaches any state: the rules producers check
//! before they publish and consumers check before they apply (what fails is dead-lettered
//! with the returned reason). Pure; no I/O.

use crate::records::{BudgetSpend, Encounter, SloEvent};

/// Longest hospital id: 1 to 64 of `[A-Za-z0-9._-]` (it keys rows, topics' records,
/// watermarks and principals).
pub const MAX_HOSPITAL_ID: usize = 64;
/// Longest event id, reference or session id a record may carry.
pub const MAX_ID: usize = 200;
/// Most SOAP sections an encounter may expect.
pub const MAX_SOAP_SECTIONS: i32 = 100;
/// Longest note generation time taken as a measurement (a day).
pub const MAX_GENERATION_MS: i64 = 86_400_000;

/// Why a hospital id is not one.
pub fn hospital_id(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= MAX_HOSPITAL_ID
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hospital id {:?} must be 1 to {MAX_HOSPITAL_ID} of letters, digits, '.', '_', '-'",
            h.chars().take(80).collect::<String>()
        ))
    }
}

fn id(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_ID {
        return Err(format!("{what} must have 1 to {MAX_ID} bytes, has {}", v.len()));
    }
    Ok(())
}

/// A reference (pseudonymous, may be empty) of at most [`MAX_ID`] bytes.
fn reference(what: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_ID {
        return Err(format!("{what} must have at most {MAX_ID} bytes, has {}", v.len()));
    }
    Ok(())
}

/// Why an encounter cannot be counted.
pub fn encounter(e: &Encounter) -> Result<(), String> {
    hospital_id(&e.hospital_id)?;
    id("event_id", &e.event_id)?;
    reference("encounter_ref", &e.encounter_ref)?;
    reference("clinician_ref", &e.clinician_ref)?;
    if e.soap_sections_expected > MAX_SOAP_SECTIONS {
        return Err(format!("{} SOAP sections expected (at most {MAX_SOAP_SECTIONS})", e.soap_sections_expected));
    }
    if e.generation_ms > MAX_GENERATION_MS {
        return Err(format!("generation time {} ms is over a day", e.generation_ms));
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

/// Why an SLO event cannot be counted.
pub fn slo(e: &SloEvent) -> Result<(), String> {
    id("event_id", &e.event_id)?;
    id("service", &e.service)?;
    if let Some(h) = &e.hospital_id {
        hospital_id(h)?;
    }
    if let Some(l) = e.latency_ms
        && !(l >= 0.0 && l.is_finite())
    {
        return Err(format!("latency {l} ms is not a finite value >= 0"));
    }
    Ok(())
}

/// Why a budget spend cannot be accounted at all.
pub fn spend(s: &BudgetSpend) -> Result<(), String> {
    hospital_id(&s.hospital_id)?;
    id("event_id", &s.event_id)?;
    id("session_id", &s.session_id)?;
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
            let (_, slo_event, _) = synth.next(1_700_000_000_000 + i);
            assert_eq!(slo(&slo_event), Ok(()));
            e.soap_sections_completed = e.soap_sections_expected + 1;
            assert!(encounter(&e).is_err());
        }
        assert!(spends > 0);
    }

    #[test]
    fn absurd_sizes_and_values_are_refused() {
        let (e, s, _) = Synth::new(1, 1).next(0);
        for (name, broken) in [
            ("long hospital", Encounter { hospital_id: "h".repeat(65), ..e.clone() }),
            ("odd hospital", Encounter { hospital_id: "h001; DROP".into(), ..e.clone() }),
            ("long event id", Encounter { event_id: "x".repeat(201), ..e.clone() }),
            ("long reference", Encounter { encounter_ref: "x".repeat(201), ..e.clone() }),
            ("sections", Encounter { soap_sections_expected: i32::MAX, soap_sections_completed: 1, ..e.clone() }),
            ("generation", Encounter { generation_ms: i64::MAX, ..e.clone() }),
        ] {
            assert!(encounter(&broken).is_err(), "{name}");
        }
        assert!(slo(&SloEvent { latency_ms: Some(f64::INFINITY), ..s.clone() }).is_err());
        assert!(slo(&SloEvent { hospital_id: Some(String::new()), ..s.clone() }).is_err());
        assert!(slo(&SloEvent { service: "s".repeat(201), ..s }).is_err());
    }
}
