//! The privacy accountant's settings: flags, or a TOML file with the same keys
//! (`guardian accountant --config FILE`; Kafka settings under `[kafka]`), validated into
//! an [`AccountantConfig`] before any connection is made.

use std::net::SocketAddr;
use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use guardian_topics::ServiceId;
use serde::{Deserialize, Serialize};

use crate::{AccountantError, Limits};

/// Default of `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountantArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL of the ledger
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Consumer group (also the key of the offsets kept with the ledger); the service's
    /// principal by default, which its ACLs allow
    #[arg(long, default_value_t = ServiceId::Accountant.group())]
    pub group: String,
    /// Registry of hospital keys (registry.toml of `fl keygen`): records must be signed by
    /// their hospital, and unsigned or forged ones go to the dead-letter topic
    #[arg(long, env = "GUARDIAN_SIGNERS")]
    pub signers: Option<PathBuf>,
    /// Seconds a spend's time may run ahead of its record's broker timestamp; later ones go
    /// to the dead-letter topic (kind "future") and are not accounted
    #[arg(long, default_value_t = guardian_kafka::event_time::DEFAULT_MAX_SKEW_SECS)]
    pub max_event_skew_secs: u64,
    /// Epsilon budget of each hospital
    #[arg(long, default_value_t = Limits::DEFAULT.hospital_epsilon)]
    pub hospital_epsilon: f64,
    /// Epsilon budget of the federation (every hospital's accepted spends composed)
    #[arg(long, default_value_t = Limits::DEFAULT.global_epsilon)]
    pub global_epsilon: f64,
    /// Delta of every budget
    #[arg(long, default_value_t = Limits::DEFAULT.delta)]
    pub delta: f64,
    /// Where /metrics, /healthz and /readyz listen
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

impl Default for AccountantArgs {
    fn default() -> Self {
        AccountantArgs {
            config: None,
            kafka: KafkaArgs::default(),
            database_url: None,
            group: ServiceId::Accountant.group(),
            signers: None,
            max_event_skew_secs: guardian_kafka::event_time::DEFAULT_MAX_SKEW_SECS,
            hospital_epsilon: Limits::DEFAULT.hospital_epsilon,
            global_epsilon: Limits::DEFAULT.global_epsilon,
            delta: Limits::DEFAULT.delta,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
        }
    }
}

/// The settings, validated.
#[derive(Debug, Clone)]
pub struct AccountantConfig {
    pub kafka: KafkaArgs,
    pub database_url: String,
    pub group: String,
    pub signers: Option<PathBuf>,
    pub max_skew_ms: i64,
    pub limits: Limits,
    pub listen: SocketAddr,
}

impl AccountantArgs {
    /// The settings from `--config` when given, else from the flags, checked.
    pub fn validate(self) -> Result<AccountantConfig, AccountantError> {
        let args = guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?;
        let limits =
            Limits { hospital_epsilon: args.hospital_epsilon, global_epsilon: args.global_epsilon, delta: args.delta };
        limits.validate()?;
        let database_url = args.database_url.filter(|u| !u.is_empty()).ok_or_else(|| {
            AccountantError::Config("a database URL is required (--database-url or GUARDIAN_DATABASE_URL)".into())
        })?;
        if args.group.is_empty() {
            return Err(AccountantError::Config("the consumer group must not be empty".into()));
        }
        Ok(AccountantConfig {
            kafka: args.kafka,
            database_url,
            group: args.group,
            signers: args.signers,
            max_skew_ms: guardian_kafka::event_time::skew_ms(args.max_event_skew_secs)
                .map_err(AccountantError::Config)?,
            limits,
            listen: args.listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_round_trips_and_is_checked() {
        let args = AccountantArgs { database_url: Some("postgres://x/y".into()), ..AccountantArgs::default() };
        let back: AccountantArgs = toml::from_str(&toml::to_string(&args).unwrap()).unwrap();
        assert_eq!(back, args);
        assert_eq!(back.validate().unwrap().group, "svc-accountant");
        let bad = AccountantArgs { hospital_epsilon: -1.0, ..args };
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<AccountantArgs>("epsilon = 3.0").is_err());
    }

    #[test]
    fn file_defaults_are_the_flag_defaults() {
        assert_eq!(AccountantArgs::default(), guardian_runtime::config::flag_defaults::<AccountantArgs>());
    }
}
