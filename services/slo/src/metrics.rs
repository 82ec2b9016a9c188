//! The SLO monitor's metrics, declared once: what `prometheus/rules.yaml` alerts on.
//! Labels are bounded: `slo` is one of the objectives, `window` one of the burn-rate
//! windows.

pub const OBJECTIVE: &str = "guardian_slo_objective";
pub const ERROR_RATIO: &str = "guardian_slo_error_ratio";
pub const BURN_RATE: &str = "guardian_slo_burn_rate";
pub const EVENTS: &str = "guardian_slo_events";
pub const ERROR_BUDGET_REMAINING: &str = "guardian_slo_error_budget_remaining";
pub const SLO: &str = "slo";
pub const WINDOW: &str = "window";
