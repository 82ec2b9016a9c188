//! What every service process needs around its work: logs and traces
//! ([`telemetry`]), the Prometheus endpoint and health probes ([`http`]) and its
//! discovery by a local Prometheus ([`scrape`]), graceful
//! shutdown on SIGTERM / Ctrl-C ([`shutdown`]), clocks and civil dates ([`time`]), typed
//! configuration files ([`config`]).

pub mod config;
pub mod http;
pub mod scrape;
pub mod shutdown;
pub mod telemetry;
pub mod time;

pub use shutdown::Shutdown;
pub use time::now_ms;

/// Errors of the process runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: std::net::SocketAddr, error: std::io::Error },
    #[error("config {path}: {error}")]
    Config { path: String, error: String },
}
