//! The archiver's settings (flags, or a TOML file with the same keys: `guardian archive
//! --config FILE`) and the restore command's flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;
use serde::{Deserialize, Serialize};

/// Default bucket of the archive.
pub const DEFAULT_BUCKET: &str = "guardian-archive";
/// Default key prefix in the bucket.
pub const DEFAULT_PREFIX: &str = "archive";
/// Default of `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9469";

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka], S3 under [s3]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Topics to archive (full names); default: every topic of the catalogue
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Bucket of the archive
    #[arg(long, env = "GUARDIAN_ARCHIVE_BUCKET", default_value = DEFAULT_BUCKET)]
    pub bucket: String,
    /// Key prefix in the bucket
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Records per segment at most
    #[arg(long, default_value_t = 50_000)]
    pub segment_records: usize,
    /// Archive what is there now and exit (default: a pass every --interval-secs until SIGTERM)
    #[arg(long)]
    pub once: bool,
    /// Seconds between two passes
    #[arg(long, default_value_t = 60)]
    pub interval_secs: u64,
    /// Where /metrics, /healthz and /readyz listen (not with --once)
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

impl Default for ArchiveArgs {
    fn default() -> Self {
        ArchiveArgs {
            config: None,
            kafka: KafkaArgs::default(),
            s3: S3Args::default(),
            topics: Vec::new(),
            bucket: DEFAULT_BUCKET.into(),
            prefix: DEFAULT_PREFIX.into(),
            segment_records: 50_000,
            once: false,
            interval_secs: 60,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
        }
    }
}

impl ArchiveArgs {
    /// The settings from `--config` when given, else from the flags, checked.
    pub fn validate(self) -> Result<ArchiveArgs, crate::ArchiveError> {
        let args = guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?;
        if args.segment_records == 0 {
            return Err(crate::ArchiveError::Config("--segment-records must be at least 1".into()));
        }
        Ok(args)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Archived topic to restore (full name)
    #[arg(long)]
    pub topic: String,
    /// Topic to write into (default: the archived topic itself)
    #[arg(long)]
    pub to_topic: Option<String>,
    #[arg(long)]
    pub partition: Option<i32>,
    /// First offset to restore (inclusive)
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Last offset to restore (inclusive)
    #[arg(long)]
    pub to_offset: Option<i64>,
    #[arg(long, env = "GUARDIAN_ARCHIVE_BUCKET", default_value = DEFAULT_BUCKET)]
    pub bucket: String,
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Print the segments and records that would be restored, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_defaults_are_the_flag_defaults() {
        assert_eq!(ArchiveArgs::default(), guardian_runtime::config::flag_defaults::<ArchiveArgs>());
    }
}
