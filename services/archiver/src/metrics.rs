//! The archiver's metrics, declared once.

/// Passes that failed (S3 or the broker away); the archiver is not ready until one passes.
pub const PASS_FAILURES: &str = "guardian_archive_pass_failures_total";
