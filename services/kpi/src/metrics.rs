//! The KPI rollup service's own metrics, declared once (the consumer's are the Kafka
//! and PostgreSQL libraries').

/// Records left out of a batch because they fell behind the deduplication horizon while
/// the instance's memory of the newest event times was behind (see `store`).
pub const EXPIRED_SKIPPED: &str = "guardian_kpi_expired_skipped_total";
