//! ε matches Google's dp_accounting 0.6.0 within 1e-9 relative (plus 1e-12 absolute)
//! on the grid and the heterogeneous compositions of `tests/privacy/reference.json`
//! (made by `tests/privacy/make_reference.py`; the file names the library version).

use guardian_privacy::{RdpAccountant, SampledGaussian};

const REFERENCE: &str = include_str!("../../../../tests/privacy/reference.json");

/// A case's `[q, sigma, count]` steps.
fn steps(case: &serde_json::Value) -> Vec<SampledGaussian> {
    case["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| SampledGaussian {
            sampling_rate: s[0].as_f64().unwrap(),
            noise_multiplier: s[1].as_f64().unwrap(),
            count: s[2].as_u64().unwrap(),
        })
        .collect()
}

#[test]
fn rdp_epsilon_matches_dp_accounting() {
    let doc: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    assert!(doc["library"].as_str().unwrap().starts_with("dp_accounting 0.6.0"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 280, "the grid is in the file");
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for case in cases {
        let mut acc = RdpAccountant::default();
        for step in steps(case) {
            acc.compose(&step).unwrap();
        }
        let delta = case["delta"].as_f64().unwrap();
        let expected = case["epsilon"].as_f64().unwrap();
        let (eps, order) = acc.epsilon(delta).unwrap();
        let err = (eps - expected).abs();
        worst = worst.max(err / expected.max(1e-300));
        if err > 1e-9 * expected + 1e-12 {
            failures
                .push(format!("{}: ε {eps} (order {order}) vs {expected} (order {})", case["steps"], case["order"]));
        }
    }
    eprintln!("{} cases, worst relative difference {worst:e}", cases.len());
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// PLD ε within 1e-4 relative of dp_accounting's PLDAccountant (both discretize the same
/// way at 1e-4; what differs is FFT rounding and truncation bounds).
#[test]
fn pld_epsilon_matches_dp_accounting() {
    use guardian_privacy::pld::PldAccountant;
    let doc: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let cases = doc["pld_cases"].as_array().unwrap();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for case in cases {
        let mut acc = PldAccountant::default();
        for step in steps(case) {
            acc.compose(&step).unwrap();
        }
        let expected = case["epsilon"].as_f64().unwrap();
        let eps = acc.epsilon(case["delta"].as_f64().unwrap()).unwrap();
        let rel = (eps - expected).abs() / expected;
        worst = worst.max(rel);
        if rel > 1e-4 {
            failures.push(format!("{}: ε {eps} vs {expected} ({rel:e})", case["steps"]));
        }
    }
    eprintln!("{} PLD cases, worst relative difference {worst:e}", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
