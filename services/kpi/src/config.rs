//! The KPI rollup service's settings: flags, or a TOML file with the same keys
//! (`guardian kpi --config FILE`; Kafka settings under `[kafka]`), validated into a
//! [`KpiConfig`] before any connection is made.

use std::net::SocketAddr;
use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use guardian_kafka::event_time::DEFAULT_MAX_SKEW_SECS;
use guardian_topics::ServiceId;
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_DEDUP_CACHE_EVENTS, DEFAULT_DEDUP_HORIZON_DAYS, KpiError};

/// Default of `--lateness-secs`.
pub const DEFAULT_LATENESS_SECS: u64 = 300;
/// Default of `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9467";

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KpiArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL of the rollups
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Consumer group (also the key of the offsets kept with the rollups); the service's
    /// principal by default, which its ACLs allow
    #[arg(long, default_value_t = ServiceId::Kpi.group())]
    pub group: String,
    /// Seconds a record may trail its hospital's newest event and still be on time
    #[arg(long, default_value_t = DEFAULT_LATENESS_SECS)]
    pub lateness_secs: u64,
    /// Seconds an event time may run ahead of its record's broker timestamp; later ones go
    /// to the dead-letter topic (kind "future") and move nothing
    #[arg(long, default_value_t = DEFAULT_MAX_SKEW_SECS)]
    pub max_event_skew_secs: u64,
    /// Registry of hospital keys (registry.toml of `fl keygen`): encounters and
    /// availability events must be signed by the hospital they name, and unsigned or
    /// forged ones go to the dead-letter topic (kind "forged")
    #[arg(long, env = "GUARDIAN_SIGNERS")]
    pub signers: Option<PathBuf>,
    /// Event digests kept in memory to spot duplicates (about 50 bytes each); days used
    /// least recently are read back from PostgreSQL when a record of theirs arrives
    #[arg(long, default_value_t = DEFAULT_DEDUP_CACHE_EVENTS)]
    pub dedup_cache_events: usize,
    /// Days of event digests kept behind each hospital's newest event (0: all, growing 16
    /// bytes per event); older records go to the dead-letter topic (kind "expired"), as
    /// they could no longer be told from replays
    #[arg(long, default_value_t = DEFAULT_DEDUP_HORIZON_DAYS)]
    pub dedup_horizon_days: u32,
    /// Where /metrics, /healthz and /readyz listen
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

impl Default for KpiArgs {
    fn default() -> Self {
        KpiArgs {
            config: None,
            kafka: KafkaArgs::default(),
            database_url: None,
            group: ServiceId::Kpi.group(),
            lateness_secs: DEFAULT_LATENESS_SECS,
            max_event_skew_secs: DEFAULT_MAX_SKEW_SECS,
            signers: None,
            dedup_cache_events: DEFAULT_DEDUP_CACHE_EVENTS,
            dedup_horizon_days: DEFAULT_DEDUP_HORIZON_DAYS,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
        }
    }
}

/// The settings, validated (the catalogue and the signers are resolved at start).
#[derive(Debug, Clone)]
pub struct KpiConfig {
    pub kafka: KafkaArgs,
    pub database_url: String,
    pub group: String,
    pub lateness_ms: i64,
    pub max_skew_ms: i64,
    pub signers: Option<PathBuf>,
    pub dedup_cache_events: usize,
    pub dedup_horizon_days: u32,
    pub listen: SocketAddr,
}

impl KpiArgs {
    /// The settings from `--config` when given, else from the flags, checked.
    pub fn validate(self) -> Result<KpiConfig, KpiError> {
        let args = guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?;
        let database_url = args.database_url.filter(|u| !u.is_empty()).ok_or_else(|| {
            KpiError::Config("a database URL is required (--database-url or GUARDIAN_DATABASE_URL)".into())
        })?;
        if args.group.is_empty() {
            return Err(KpiError::Config("the consumer group must not be empty".into()));
        }
        let lateness_ms = i64::try_from(args.lateness_secs)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| KpiError::Config(format!("lateness of {} s is out of range", args.lateness_secs)))?;
        let max_skew_ms = guardian_kafka::event_time::skew_ms(args.max_event_skew_secs).map_err(KpiError::Config)?;
        Ok(KpiConfig {
            kafka: args.kafka,
            database_url,
            group: args.group,
            lateness_ms,
            max_skew_ms,
            signers: args.signers,
            dedup_cache_events: args.dedup_cache_events,
            dedup_horizon_days: args.dedup_horizon_days,
            listen: args.listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_round_trips_and_unknown_keys_are_refused() {
        let args = KpiArgs { database_url: Some("postgres://x/y".into()), lateness_secs: 7, ..KpiArgs::default() };
        let text = toml::to_string(&args).unwrap();
        let back: KpiArgs = toml::from_str(&text).unwrap();
        assert_eq!(back, args);
        assert_eq!(back.validate().unwrap().lateness_ms, 7000);
        assert!(toml::from_str::<KpiArgs>("databse_url = \"postgres://x/y\"").is_err());
        let defaults: KpiArgs = toml::from_str("").unwrap();
        assert_eq!(defaults.group, "svc-kpi");
        assert!(defaults.validate().is_err(), "no database URL");
    }

    #[test]
    fn file_defaults_are_the_flag_defaults() {
        assert_eq!(KpiArgs::default(), guardian_runtime::config::flag_defaults::<KpiArgs>());
    }
}
