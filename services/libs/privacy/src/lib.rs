//! Privacy accounting for federated rounds: how much (ε, δ)-differential privacy a
//! schedule of sampled-Gaussian rounds has spent, and the questions an operator asks
//! back ("how many rounds are left?", "which noise keeps T rounds under ε?").
//!
//! - [`rdp`]: Rényi DP of the Poisson-subsampled Gaussian mechanism, composition of
//!   heterogeneous steps, conversion to (ε, δ); matches Google's `dp_accounting` 0.6.0
//!   to 1e-9 relative in ε (the reference table under `tests/privacy/` is checked).
//! - [`pld`]: the privacy loss distribution accountant, the tighter second opinion,
//!   pessimistic; matches dp_accounting's PLDAccountant to its discretization error.
//! - [`inverse`]: rounds left under a budget, noise for a target, both consistent with
//!   the forward computation by construction (they search it).
//! - [`discrete`]: the discrete Gaussian sampled exactly (no floating point), and the
//!   guarantee of a sum of parties' discrete Gaussian noise.
//! - [`special`]: log-space helpers and special functions accurate in the tails.
//!
//! No I/O, no allocation beyond small vectors, no panics on bad input: every invalid
//! parameter is a [`PrivacyError`].

pub mod discrete;
pub mod inverse;
pub mod pld;
pub mod rdp;
pub mod special;

pub use inverse::{noise_for_target, rounds_left};
pub use rdp::{RdpAccountant, SampledGaussian, default_orders};

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PrivacyError {
    #[error("sampling rate must be in [0, 1], got {0}")]
    SamplingRate(f64),
    #[error("noise multiplier must be a finite number >= 0, got {0}")]
    NoiseMultiplier(f64),
    #[error("delta must be in [0, 1), got {0}")]
    Delta(f64),
    #[error("epsilon must be >= 0, got {0}")]
    Epsilon(f64),
    #[error(
        "the privacy loss distribution would need {bins} bins (at most {max}): ε is far beyond any budget; use the RDP accountant"
    )]
    PldTooLarge { bins: usize, max: usize },
    #[error("no noise multiplier up to {max} keeps {count} rounds at q = {q} under epsilon {epsilon}")]
    Unreachable { q: f64, count: u64, epsilon: f64, max: f64 },
}

/// An ε that is a number and not negative (NaN fails).
pub(crate) fn check_epsilon(epsilon: f64) -> Result<(), PrivacyError> {
    if epsilon.is_nan() || epsilon < 0.0 { Err(PrivacyError::Epsilon(epsilon)) } else { Ok(()) }
}
