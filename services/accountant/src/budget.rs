//! The budget rules, pure: what one spend does to a hospital's and the federation's
//! budget, which level each is at, and which alerts that makes.
//!
//! - A spend is *accepted* when, composed into both the hospital's and the global RDP,
//!   neither ε exceeds its limit; otherwise it is *refused*: recorded in the ledger,
//!   counted in no budget (its update must not be aggregated), and alerted.
//! - Levels by the share of the limit used: NORMAL < 50 %, WARNING < 75 %, HIGH < 90 %,
//!   CRITICAL < 100 %, EXHAUSTED at 100 % or when another round like the last one no
//!   longer fits.
//! - One alert per level change of a scope, and one per refused spend; alert ids are
//!   derived from the triggering event, so a replay produces the same ids.

use guardian_privacy::inverse::{UNBOUNDED_ROUNDS, rounds_left};
use guardian_privacy::{PrivacyError, RdpAccountant, SampledGaussian};
use guardian_schemas::records::{BudgetLevel, BudgetScope, BudgetSpend, BudgetStatus, PrivacyAlert, SpendDecision};

/// Limits of the budgets, the same for every hospital.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub hospital_epsilon: f64,
    pub global_epsilon: f64,
    pub delta: f64,
}

impl Limits {
    /// The pilot's figures: ε 2.0 per hospital, 10.0 for the federation, δ 1e-5.
    pub const DEFAULT: Limits = Limits { hospital_epsilon: 2.0, global_epsilon: 10.0, delta: 1e-5 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// One scope's budget: what is stored per hospital and once for the federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub scope: BudgetScope,
    /// `None` for the global scope.
    pub hospital_id: Option<String>,
    pub rdp: RdpAccountant,
    pub epsilon_spent: f64,
    pub level: BudgetLevel,
    /// Accepted spends.
    pub events: i64,
    pub last_event_id: Option<String>,
    pub rounds_left: Option<i64>,
}

impl Budget {
    pub fn new(hospital_id: Option<String>) -> Self {
        Budget {
            scope: if hospital_id.is_some() { BudgetScope::Hospital } else { BudgetScope::Global },
            hospital_id,
            rdp: RdpAccountant::default(),
            epsilon_spent: 0.0,
            level: BudgetLevel::Normal,
            events: 0,
            last_event_id: None,
            rounds_left: None,
        }
    }

    /// The key of the scope on the status topic and in the database.
    pub fn key(&self) -> String {
        scope_key(self.hospital_id.as_deref())
    }

    pub fn status(&self, limit: f64, delta: f64) -> BudgetStatus {
        BudgetStatus {
            scope: self.scope,
            hospital_id: self.hospital_id.clone(),
            epsilon_spent: self.epsilon_spent,
            epsilon_limit: limit,
            delta,
            level: self.level,
            events: self.events,
            last_event_id: self.last_event_id.clone(),
            rounds_left: self.rounds_left,
        }
    }
}

pub fn scope_key(hospital_id: Option<&str>) -> String {
    match hospital_id {
        Some(h) => format!("hospital/{h}"),
        None => "global".to_string(),
    }
}

/// The level for `spent` of `limit`, given how many more rounds fit.
pub fn level_of(spent: f64, limit: f64, rounds_left: Option<i64>) -> BudgetLevel {
    let used = if limit > 0.0 { spent / limit } else { f64::INFINITY };
    if used >= 1.0 || rounds_left == Some(0) {
        BudgetLevel::Exhausted
    } else if used >= 0.9 {
        BudgetLevel::Critical
    } else if used >= 0.75 {
        BudgetLevel::High
    } else if used >= 0.5 {
        BudgetLevel::Warning
    } else {
        BudgetLevel::Normal
    }
}

/// Why a spend record cannot be accounted at all (it goes to the dead-letter topic).
pub fn validate(spend: &BudgetSpend) -> Result<SampledGaussian, String> {
    guardian_schemas::validate::spend(spend)?;
    let step = SampledGaussian {
        sampling_rate: spend.sampling_rate,
        noise_multiplier: spend.noise_multiplier,
        count: spend.steps as u64,
    };
    step.validate().map_err(|e| e.to_string())?;
    Ok(step)
}

/// What accounting one spend did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub accepted: bool,
    /// The hospital's ε after the spend (unchanged when refused).
    pub hospital_epsilon: f64,
    /// The federation's ε after the spend (unchanged when refused).
    pub global_epsilon: f64,
    /// Why a refused spend was refused.
    pub reason: Option<String>,
    pub alerts: Vec<PrivacyAlert>,
}

impl Outcome {
    /// The decision record the aggregator waits for.
    pub fn decision(&self, spend: &BudgetSpend, delta: f64, decided_at: i64) -> SpendDecision {
        SpendDecision {
            event_id: spend.event_id.clone(),
            hospital_id: spend.hospital_id.clone(),
            session_id: spend.session_id.clone(),
            round: spend.round,
            accepted: self.accepted,
            reason: self.reason.clone(),
            hospital_epsilon: self.hospital_epsilon,
            global_epsilon: self.global_epsilon,
            delta,
            decided_at,
        }
    }
}

/// Accounts `spend` against the hospital's and the global budget, in place.
pub fn account(
    hospital: &mut Budget,
    global: &mut Budget,
    spend: &BudgetSpend,
    step: &SampledGaussian,
    limits: &Limits,
) -> Result<Outcome, PrivacyError> {
    let mut h_rdp = hospital.rdp.clone();
    h_rdp.compose(step)?;
    let mut g_rdp = global.rdp.clone();
    g_rdp.compose(step)?;
    let (h_eps, _) = h_rdp.epsilon(limits.delta)?;
    let (g_eps, _) = g_rdp.epsilon(limits.delta)?;
    let accepted = h_eps <= limits.hospital_epsilon && g_eps <= limits.global_epsilon;
    let mut alerts = Vec::new();
    if !accepted {
        // An alert for each budget the spend would have taken past its limit.
        let over = [
            (&*hospital, limits.hospital_epsilon, h_eps > limits.hospital_epsilon),
            (&*global, limits.global_epsilon, g_eps > limits.global_epsilon),
        ];
        for (budget, limit, _) in over.into_iter().filter(|o| o.2) {
            alerts.push(PrivacyAlert {
                alert_id: format!("{}:over-budget:{}", budget.key(), spend.event_id),
                scope: budget.scope,
                hospital_id: budget.hospital_id.clone(),
                previous_level: budget.level,
                level: budget.level,
                epsilon_spent: budget.epsilon_spent,
                epsilon_limit: limit,
                over_budget: true,
                trigger_event_id: spend.event_id.clone(),
            });
        }
        let mut why = Vec::new();
        if h_eps > limits.hospital_epsilon {
            why.push(format!("the hospital's ε to {h_eps:.4} (limit {})", limits.hospital_epsilon));
        }
        if g_eps > limits.global_epsilon {
            why.push(format!("the federation's ε to {g_eps:.4} (limit {})", limits.global_epsilon));
        }
        return Ok(Outcome {
            accepted,
            hospital_epsilon: hospital.epsilon_spent,
            global_epsilon: global.epsilon_spent,
            reason: Some(format!("would take {} at δ = {}", why.join(" and "), limits.delta)),
            alerts,
        });
    }
    // The next round is assumed to look like this one (one step's worth).
    let next = SampledGaussian { count: 1, ..*step };
    for (budget, rdp, eps, limit) in
        [(&mut *hospital, h_rdp, h_eps, limits.hospital_epsilon), (&mut *global, g_rdp, g_eps, limits.global_epsilon)]
    {
        // rounds_left counts steps; a round is `step.count` of them.
        let steps_left = rounds_left(&rdp, &next, limits.delta, limit)?;
        let left =
            (steps_left != UNBOUNDED_ROUNDS).then(|| i64::try_from(steps_left / step.count.max(1)).unwrap_or(i64::MAX));
        let level = level_of(eps, limit, left);
        if level != budget.level {
            alerts.push(PrivacyAlert {
                alert_id: format!("{}:{:?}:{}", budget.key(), level, spend.event_id),
                scope: budget.scope,
                hospital_id: budget.hospital_id.clone(),
                previous_level: budget.level,
                level,
                epsilon_spent: eps,
                epsilon_limit: limit,
                over_budget: false,
                trigger_event_id: spend.event_id.clone(),
            });
        }
        budget.rdp = rdp;
        budget.epsilon_spent = eps;
        budget.level = level;
        budget.events += 1;
        budget.last_event_id = Some(spend.event_id.clone());
        budget.rounds_left = left;
    }
    Ok(Outcome { accepted, hospital_epsilon: h_eps, global_epsilon: g_eps, reason: None, alerts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardian_schemas::records::Mechanism;

    fn spend(id: &str, q: f64, sigma: f64, steps: i64) -> BudgetSpend {
        BudgetSpend {
            event_id: id.into(),
            hospital_id: "h001".into(),
            session_id: "s".into(),
            round: 0,
            mechanism: Mechanism::SampledGaussian,
            sampling_rate: q,
            noise_multiplier: sigma,
            steps,
            delta: 1e-5,
            occurred_at: 0,
        }
    }

    #[test]
    fn levels_follow_the_share_of_the_limit() {
        assert_eq!(level_of(0.99, 2.0, None), BudgetLevel::Normal);
        assert_eq!(level_of(1.0, 2.0, None), BudgetLevel::Warning);
        assert_eq!(level_of(1.5, 2.0, None), BudgetLevel::High);
        assert_eq!(level_of(1.8, 2.0, None), BudgetLevel::Critical);
        assert_eq!(level_of(2.0, 2.0, None), BudgetLevel::Exhausted);
        assert_eq!(level_of(1.0, 2.0, Some(0)), BudgetLevel::Exhausted, "nothing more fits");
    }

    #[test]
    fn a_hospital_walks_through_every_level_once_then_is_refused() {
        let limits = Limits::default();
        let (mut h, mut g) = (Budget::new(Some("h001".into())), Budget::new(None));
        let mut alerts = Vec::new();
        let mut refused = 0;
        for i in 0..2000 {
            let s = spend(&format!("e{i}"), 0.01, 1.1, 1);
            let step = validate(&s).unwrap();
            let out = account(&mut h, &mut g, &s, &step, &limits).unwrap();
            if !out.accepted {
                refused += 1;
            }
            alerts.extend(out.alerts.into_iter().filter(|a| a.scope == BudgetScope::Hospital));
        }
        let changes: Vec<_> = alerts.iter().filter(|a| !a.over_budget).map(|a| (a.previous_level, a.level)).collect();
        assert_eq!(
            changes,
            vec![
                (BudgetLevel::Normal, BudgetLevel::Warning),
                (BudgetLevel::Warning, BudgetLevel::High),
                (BudgetLevel::High, BudgetLevel::Critical),
                (BudgetLevel::Critical, BudgetLevel::Exhausted),
            ]
        );
        // 1,404 rounds fit under ε = 2 at q = 0.01, σ = 1.1, δ = 1e-5.
        assert_eq!(h.events, 1404);
        assert!(h.epsilon_spent <= 2.0);
        assert_eq!(refused, 2000 - 1404);
        assert_eq!(alerts.iter().filter(|a| a.over_budget).count(), refused);
        assert_eq!(g.events, 1404);
    }

    #[test]
    fn invalid_spends_are_refused_before_accounting() {
        assert!(validate(&spend("e", 1.5, 1.0, 1)).is_err());
        assert!(validate(&spend("e", 0.1, -1.0, 1)).is_err());
        assert!(validate(&spend("e", 0.1, 1.0, -3)).is_err());
        assert!(validate(&spend("", 0.1, 1.0, 1)).is_err());
    }
}
