//! The KPI rollups as data: window arithmetic and accumulators ([`window`]), the tables
//! and the reads other services make of them ([`tables`]), and the hospital registry with
//! pilot readiness ([`readiness`]).
//!
//! The KPI rollup service writes the tables; the dashboard and the `pilot` tools read
//! them through this crate, never by naming the tables themselves.

pub mod readiness;
pub mod tables;
pub mod window;
