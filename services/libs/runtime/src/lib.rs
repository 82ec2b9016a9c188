//! What every service process needs around its work: logs and traces
//! ([`telemetry`]), the Prometheus endpoint and health probes ([`http`]), and graceful
//! shutdown on SIGTERM / Ctrl-C ([`shutdown`]).

pub mod http;
pub mod shutdown;
pub mod telemetry;

pub use shutdown::Shutdown;
