//! The dashboard's configuration: flags, or a TOML file with the same keys
//! (`guardian dashboard --config FILE`). Validated before any I/O.

use std::net::SocketAddr;
use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardArgs {
    /// Read every setting from this TOML file (the keys are the flags' names with
    /// underscores, Kafka settings under [kafka]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(default)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL of the rollups
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    #[serde(default)]
    pub database_url: Option<String>,
    /// Smallest group of hospitals whose aggregates are shown (k-anonymity)
    #[serde(default = "default_k")]
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
    /// Days of day windows aggregated (ending tomorrow)
    #[serde(default = "default_days")]
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Where the page, the API, /metrics, /healthz and /readyz listen
    #[serde(default = "default_listen")]
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// API tokens of hospitals (TOML `[tokens]` "<sha-256 hex>" = "<tenant role>", lines from
    /// `guardian db role api-token`): /api/hospital answers each with its hospital's rows only
    #[serde(default)]
    #[arg(long, env = "GUARDIAN_DASHBOARD_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// SLO error budget period in days (as the SLO monitor's --period-days)
    #[serde(default = "default_days")]
    #[arg(long, default_value_t = 30)]
    pub slo_period_days: u32,
}

fn default_k() -> u32 {
    3
}

fn default_days() -> u32 {
    30
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The dashboard's settings, validated.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub kafka: KafkaArgs,
    pub database_url: String,
    /// Smallest group shown (k-anonymity), at least 1.
    pub k: usize,
    /// Days aggregated, at least 1.
    pub days: i64,
    pub listen: SocketAddr,
    pub tokens: Option<PathBuf>,
    pub slo_period_ms: i64,
}

impl DashboardArgs {
    /// The settings from `--config` when given, else from the flags; checked before any
    /// connection is made.
    pub fn validate(self) -> Result<DashboardConfig, crate::DashboardError> {
        let args = guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?;
        if args.k == 0 {
            return Err(crate::DashboardError::Config("k must be at least 1".into()));
        }
        let Some(database_url) = args.database_url else {
            return Err(crate::DashboardError::Config(
                "a database URL is required (--database-url or GUARDIAN_DATABASE_URL)".into(),
            ));
        };
        Ok(DashboardConfig {
            kafka: args.kafka,
            database_url,
            k: args.k as usize,
            days: i64::from(args.days.max(1)),
            listen: args.listen,
            tokens: args.tokens,
            slo_period_ms: i64::from(args.slo_period_days.max(1)) * guardian_runtime::time::DAY_MS,
        })
    }
}
