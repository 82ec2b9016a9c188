//! What the runner needs from the services it exercises, without depending on them: how
//! to start each supervised process from its typed config, and how to read the results
//! it judges. The `guardian` binary implements [`Subject`] with the services' own config
//! types and read APIs, so a supervised process is started from exactly what the CLI
//! would build, and the hypotheses read the services' state through what they export.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;

/// One supervised process of an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The KPI rollup service.
    Kpi,
    /// The privacy accountant.
    Accountant,
    /// The archiver, writing the encounter and spend topics to S3.
    Archiver,
    /// A hospital's federated agent training on demo shard `shard`.
    Agent { hospital: String, shard: usize },
    /// The aggregator of the experiment's federated session.
    Aggregator,
}

impl Role {
    /// The experiment files' name of the role (what `kill-service` targets).
    pub fn name(&self) -> &'static str {
        match self {
            Role::Kpi => "kpi",
            Role::Accountant => "accountant",
            Role::Archiver => "archiver",
            Role::Agent { .. } => "agent",
            Role::Aggregator => "aggregator",
        }
    }
}

/// Where an experiment's services are wired: their own topics, schema, groups and keys.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Kafka as the services see it (through the network-fault proxy when there is one,
    /// the experiment's topic prefix, short consumer sessions).
    pub kafka: KafkaArgs,
    pub s3: S3Args,
    /// The experiment's own schema.
    pub database_url: String,
    pub kpi_group: String,
    pub accountant_group: String,
    /// What the archiver archives, and where.
    pub archive_topics: Vec<String>,
    pub archive_bucket: String,
    pub archive_prefix: String,
    /// Keys of the federated session (`<who>.key`) and its registry.
    pub keys: PathBuf,
    pub registry: PathBuf,
    pub session: String,
    /// The session's rounds and stage timeout.
    pub rounds: u32,
    pub stage_timeout_secs: u64,
}

/// A process to start: `guardian <subcommand...> --config <file>`, the file holding
/// `config` (the service's typed settings as TOML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub subcommand: Vec<String>,
    pub config: String,
}

/// One archived segment of a topic partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
}

/// What the services hold after a run, per hospital where it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// Encounters the rollup's deduplication has seen.
    pub seen: BTreeMap<String, i64>,
    /// Encounters counted in the day windows.
    pub in_windows: BTreeMap<String, i64>,
    /// Event ids of the privacy ledger's rows.
    pub ledger: Vec<String>,
}

pub trait Subject: Sync {
    /// The process of `role`, its probes on `listen` (None for the aggregator).
    fn launch(&self, role: &Role, wiring: &Wiring, listen: Option<SocketAddr>) -> anyhow::Result<Launch>;

    /// Signing keys for the aggregator and `hospitals` in `dir`, and the registry.
    fn keygen(&self, dir: &Path, hospitals: &[String]) -> anyhow::Result<()>;

    /// Replays `session` from its topics: (every published version bit-identical, what was
    /// compared).
    fn replay(
        &self,
        kafka: &KafkaArgs,
        s3: &S3Args,
        registry: &Path,
        session: &str,
    ) -> impl Future<Output = anyhow::Result<(bool, String)>> + Send;

    /// The segments of `topic` archived in `store` under `prefix`.
    fn archived(
        &self,
        store: &guardian_objects::ObjectStore,
        prefix: &str,
        topic: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<Segment>>> + Send;

    /// What the KPI rollup and the accountant hold in `database_url`'s schema.
    fn counted(&self, pool: &sqlx::PgPool) -> impl Future<Output = anyhow::Result<Counted>> + Send;
}
