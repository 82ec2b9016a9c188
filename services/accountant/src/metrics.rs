//! The accountant's metrics, declared once: names in Prometheus style (base units,
//! bounded labels: the scope is `global` or a hospital of the registry).

/// ε spent per scope (`hospital/<id>` or `global`).
pub const EPSILON_SPENT: &str = "guardian_privacy_epsilon_spent";
/// ε limit per scope.
pub const EPSILON_LIMIT: &str = "guardian_privacy_epsilon_limit";
/// Level per scope: 0 NORMAL, 1 WARNING, 2 HIGH, 3 CRITICAL, 4 EXHAUSTED.
pub const BUDGET_LEVEL: &str = "guardian_privacy_budget_level";
pub const SCOPE: &str = "scope";
