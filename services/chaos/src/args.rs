//! `guardian chaos run`'s flags.

use std::path::PathBuf;

use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosRunArgs {
    /// Experiment files
    #[arg(required = true)]
    pub experiments: Vec<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL (each run makes a schema of its own)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Where the reports go (<name>-<start ms>.md/.json and <name>-latest.md/.json)
    #[arg(long, default_value = ".stack/chaos")]
    pub report_dir: PathBuf,
    /// The stack script that kills and restarts the broker and the database
    #[arg(long, env = "GUARDIAN_STACK_SCRIPT", default_value = "tests/stack/stack.sh")]
    pub stack_script: PathBuf,
    /// S3 of the archive (experiments with `archiver = true`)
    #[command(flatten)]
    pub s3: S3Args,
    /// Where the network-fault proxy listens: the address the broker's CHAOS listener
    /// advertises (the supervised services bootstrap from it)
    #[arg(long, env = "GUARDIAN_KAFKA_CHAOS_PROXY", requires = "chaos_upstream")]
    pub chaos_proxy: Option<String>,
    /// The broker's CHAOS listener, where the proxy forwards to
    #[arg(long, env = "GUARDIAN_KAFKA_CHAOS_UPSTREAM", requires = "chaos_proxy")]
    pub chaos_upstream: Option<String>,
}
