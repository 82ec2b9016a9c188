//! The SLO monitor's settings: flags, or a TOML file with the same keys
//! (`guardian slo --config FILE`; Kafka settings under `[kafka]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use serde::{Deserialize, Serialize};

use crate::SloError;

/// Default of `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9468";

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Error budget period in days (also how far back the topic is read)
    #[arg(long, default_value_t = 30)]
    pub period_days: u32,
    /// Seconds between two updates of the gauges
    #[arg(long, default_value_t = 5)]
    pub publish_secs: u64,
    /// Seconds an event time may run ahead of its record's broker timestamp; later events
    /// are left out of every window (and counted in the log)
    #[arg(long, default_value_t = guardian_kafka::event_time::DEFAULT_MAX_SKEW_SECS)]
    pub max_event_skew_secs: u64,
    /// Where /metrics, /healthz and /readyz listen
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

impl Default for SloArgs {
    fn default() -> Self {
        SloArgs {
            config: None,
            kafka: KafkaArgs::default(),
            period_days: 30,
            publish_secs: 5,
            max_event_skew_secs: guardian_kafka::event_time::DEFAULT_MAX_SKEW_SECS,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
        }
    }
}

impl SloArgs {
    /// The settings from `--config` when given, else from the flags, checked.
    pub fn validate(self) -> Result<SloArgs, SloError> {
        let args = guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?;
        if args.period_days == 0 || args.publish_secs == 0 {
            return Err(SloError::Config("--period-days and --publish-secs must be at least 1".into()));
        }
        guardian_kafka::event_time::skew_ms(args.max_event_skew_secs).map_err(SloError::Config)?;
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_defaults_are_the_flag_defaults() {
        assert_eq!(SloArgs::default(), guardian_runtime::config::flag_defaults::<SloArgs>());
    }
}
