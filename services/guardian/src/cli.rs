//! Command-line definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use guardian_accountant::AccountantArgs;
pub use guardian_accountant::audit::AuditArgs;
pub use guardian_archiver::{ArchiveArgs, RestoreArgs};
pub use guardian_chaos::ChaosRunArgs;
pub use guardian_dashboard::DashboardArgs;
pub use guardian_doctor::DoctorArgs;
pub use guardian_dr::{DrCommand, ReplayCommand};
pub use guardian_federated::config::{FlAgentArgs, FlStartArgs};
pub use guardian_kafka::KafkaArgs;
pub use guardian_kpi::KpiArgs;
pub use guardian_objects::S3Args;
pub use guardian_slo::SloArgs;

#[derive(Debug, Parser)]
#[command(
    name = "guardian",
    version,
    about = "Phoenix Guardian streams: federated learning, privacy accounting and pilot KPIs over Kafka",
    long_about = "Phoenix Guardian streams: federated learning, privacy accounting and pilot KPIs over Kafka.\n\n\
Every service and ops tool is a subcommand. Connection settings come from flags or the\n\
GUARDIAN_* environment variables that `tests/stack/stack.sh env` prints for the local stack."
)]
pub struct Cli {
    /// Log format on stderr (RUST_LOG filters).
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for guardian_runtime::telemetry::LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => guardian_runtime::telemetry::LogFormat::Text,
            LogFormatArg::Json => guardian_runtime::telemetry::LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Declarative topics: create, grow and re-configure topics from topics/*.toml
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// A hospital's guardian agent
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Print a topic's records as JSON lines, decoded with the schemas
    Tail(TailArgs),
    /// Database housekeeping
    #[command(subcommand)]
    Db(DbCommand),
    /// Run the local demo: topics, synthetic hospitals, consumers, /metrics
    Demo(DemoArgs),
    /// The privacy accountant service: budget spends into the ledger, budget status and alerts out
    Accountant(AccountantArgs),
    /// Ops: replay a topic range into a topic, or move a consumer group to a point in time
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// Privacy accounting questions: epsilon of a schedule, rounds left, noise for a target
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// Federated learning with secure aggregation: keys, sessions, the agent, models, replay
    #[command(subcommand)]
    Fl(FlCommand),
    /// Archive topics to S3 as Avro object-container segments (idempotent; resumes from the bucket)
    Archive(ArchiveArgs),
    /// The KPI rollup service: encounters and SLO events into per-hospital windows
    Kpi(KpiArgs),
    /// The SLO monitor: error ratios, burn rates and error budgets on /metrics for Prometheus
    Slo(SloArgs),
    /// The aggregate dashboard: KPIs across hospitals by region, EHR vendor, tier or phase (HTML, JSON, CSV)
    Dashboard(DashboardArgs),
    /// The hospital registry and the pilot readiness checks over the KPI rollups
    #[command(subcommand)]
    Pilot(PilotCommand),
    /// Multi-region disaster recovery over MirrorMaker 2: replication status, failover
    #[command(subcommand)]
    Dr(DrCommand),
    /// Write an archived range from S3 back into a topic
    Restore(RestoreArgs),
    /// Chaos experiments on the real local stack (see chaos/README.md)
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Production readiness of a live deployment, checked from the outside: Kafka topics,
    /// PostgreSQL row-level security, S3, services, Prometheus, MirrorMaker 2, privacy
    /// budgets (exit 0 ready, 1 warnings with --strict, 2 not ready)
    Doctor(DoctorArgs),
}

#[derive(Debug, Subcommand)]
pub enum PilotCommand {
    /// Load hospitals (region, EHR vendor, tier, pilot phase) from a TOML file of [[hospital]] tables
    Registry {
        #[arg(long, env = "GUARDIAN_DATABASE_URL")]
        database_url: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Each hospital's KPIs over a period against the pilot targets; exit 5 when one is not ready
    Readiness {
        #[arg(long, env = "GUARDIAN_DATABASE_URL")]
        database_url: String,
        /// First day (YYYY-MM-DD, UTC; default: 7 days ago)
        #[arg(long)]
        from: Option<String>,
        /// Day after the last (YYYY-MM-DD, UTC; default: tomorrow)
        #[arg(long)]
        to: Option<String>,
        /// One JSON object per hospital
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlCommand {
    /// Create the aggregator's and each hospital's signing key and the registry of public keys
    Keygen {
        /// Folder for aggregator.key, <hospital>.key and registry.toml (keys are never overwritten)
        #[arg(long)]
        dir: PathBuf,
        /// Hospital ids, comma-separated
        #[arg(long, value_delimiter = ',', required = true)]
        hospitals: Vec<String>,
    },
    /// Run a federated session as the aggregator, in the foreground, until its last round.
    ///
    /// A session the topics already record is resumed where it stopped. A second `fl start`
    /// of the same session waits as a standby and takes over when the leader's lease
    /// lapses (about 6 s after it stops); the old leader is fenced.
    Start(FlStartArgs),
    /// Print the settings `start` would use (derived noise multiplier included), as JSON
    Config(FlStartArgs),
    /// Run a hospital's agent: take part in every round that samples it
    Agent(FlAgentArgs),
    /// Rounds and model versions of every session (or one)
    Status(FlQueryArgs),
    /// Sessions and their model versions
    List(FlQueryArgs),
    /// Ask a running session to end after its current round
    Stop {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long)]
        session: String,
    },
    /// Write a model version's weights to a .npy file (checksum verified)
    Export {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        s3: S3Args,
        #[arg(long)]
        session: String,
        /// Version to export (default: the latest)
        #[arg(long)]
        version: Option<i64>,
        /// Output file
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a hospital's shard of the demo data as CSV (standardised features, then the
    /// 0/1 label): what `agent --demo-shard` trains on, for `agent --data` or a trainer
    DemoData {
        /// Hospitals the demo data is split over
        #[arg(long, default_value_t = 5)]
        hospitals: usize,
        /// Which hospital's shard (0-based)
        #[arg(long)]
        shard: usize,
        /// Output file
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute every model of a session from its topics; exit 1 if any differs
    Replay {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        s3: S3Args,
        #[arg(long)]
        session: String,
        /// The registry of public keys
        #[arg(long, env = "GUARDIAN_FL_REGISTRY")]
        registry: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct FlQueryArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Only this session
    #[arg(long)]
    pub session: Option<String>,
    /// One JSON object per line instead of text
    #[arg(long)]
    pub json: bool,
}

/// One or more groups of sampled-Gaussian rounds. Repeat the three flags to compose
/// groups with different parameters: the n-th --sampling-rate, --noise-multiplier and
/// --steps form the n-th group.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Poisson sampling rate q of a group, in [0, 1] (1: every record every round)
    #[arg(long = "sampling-rate", value_name = "Q", required = true)]
    pub sampling_rates: Vec<f64>,
    /// Noise multiplier sigma of a group (noise std / clipping norm)
    #[arg(long = "noise-multiplier", value_name = "SIGMA", required = true)]
    pub noise_multipliers: Vec<f64>,
    /// Rounds in a group
    #[arg(long = "steps", value_name = "T", required = true)]
    pub steps: Vec<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccountantArg {
    /// Renyi DP of the sampled Gaussian, converted as Google's dp_accounting does
    Rdp,
    /// Privacy loss distribution (discretized at 1e-4, pessimistic): tighter, slower
    Pld,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Epsilon spent by a schedule of rounds at a given delta
    Epsilon {
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Target delta
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Accounting method
        #[arg(long, value_enum, default_value_t = AccountantArg::Rdp)]
        accountant: AccountantArg,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Rounds of one more kind that still fit under a budget, after what was spent
    RoundsLeft {
        /// Sampling rate of the next rounds
        #[arg(long)]
        sampling_rate: f64,
        /// Noise multiplier of the next rounds
        #[arg(long)]
        noise_multiplier: f64,
        /// Epsilon budget
        #[arg(long, default_value_t = 2.0)]
        budget: f64,
        /// Target delta
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Already spent, as Q,SIGMA,T (repeatable)
        #[arg(long = "spent", value_name = "Q,SIGMA,T", value_parser = parse_spent)]
        spent: Vec<(f64, f64, u64)>,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// The privacy audit from the accountant's ledger: spend history with every round's
    /// parameters, budget levels and alerts, per hospital and global
    Audit(AuditArgs),
    /// The smallest noise multiplier that keeps T rounds at rate Q under a target epsilon
    Noise {
        /// Sampling rate
        #[arg(long)]
        sampling_rate: f64,
        /// Rounds
        #[arg(long)]
        steps: u64,
        /// Target epsilon
        #[arg(long)]
        epsilon: f64,
        /// Target delta
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

/// `Q,SIGMA,T` of `--spent`.
fn parse_spent(s: &str) -> Result<(f64, f64, u64), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [q, sigma, t] = parts.as_slice() else {
        return Err(format!("expected Q,SIGMA,T (for example 0.01,1.1,500), got {s:?}"));
    };
    let q = q.parse().map_err(|e| format!("sampling rate {q:?}: {e}"))?;
    let sigma = sigma.parse().map_err(|e| format!("noise multiplier {sigma:?}: {e}"))?;
    let t = t.parse().map_err(|e| format!("steps {t:?}: {e}"))?;
    Ok((q, sigma, t))
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics, add partitions and fix configs; with a schema registry,
    /// register each topic's value schema (subject <topic>-value) and set its
    /// compatibility, refusing an incompatible schema; prints the diff
    Apply {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Print the diff without changing anything (schemas: checked for compatibility)
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit non-zero, listing every difference, when the cluster (or the schema registry's
    /// subjects) differ from the catalogue
    Verify {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// List the catalogue (no cluster needed)
    List {
        /// Read the topic catalogue from this folder instead of the one built in
        #[arg(long, env = "GUARDIAN_TOPICS_DIR")]
        topics_dir: Option<PathBuf>,
        /// Prefix of every topic name
        #[arg(long, env = "GUARDIAN_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
    },
    /// Print the least-privilege Kafka ACLs of every service and hospital principal, from
    /// the catalogue's [access] tables: one `kafka-acls` argument line per invocation
    /// (tests/stack/kafka-admin.sh acls applies them), or JSON
    Acls {
        /// Read the topic catalogue from this folder instead of the one built in
        #[arg(long, env = "GUARDIAN_TOPICS_DIR")]
        topics_dir: Option<PathBuf>,
        /// Prefix of every topic name
        #[arg(long, env = "GUARDIAN_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        /// Hospital ids, comma-separated (principal hospital-<id> each)
        #[arg(long, value_delimiter = ',', required = true)]
        hospitals: Vec<String>,
        /// One JSON object per rule instead of kafka-acls lines
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Publish synthetic encounters, SLO observations and budget spends for N hospitals
    Simulate(SimulateArgs),
    /// Publish encounters from a file (NDJSON or CSV, checked line by line) or a seeded generator
    Encounters(EncountersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EncountersArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// NDJSON (.ndjson, .jsonl, .json) or CSV (.csv, header = field names) file of encounters
    #[arg(long, conflicts_with = "generate")]
    pub file: Option<PathBuf>,
    /// Generate seeded synthetic encounters instead of reading a file
    #[arg(long)]
    pub generate: bool,
    /// Synthetic hospitals (h001, h002, ...)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub hospitals: u32,
    /// Synthetic encounters in all (default: until Ctrl-C)
    #[arg(long)]
    pub count: Option<u64>,
    /// Encounters per second (0: as fast as the broker takes them)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Event time of the first synthetic encounter (ms since the epoch); by default the
    /// times end at the present (with --count) or follow the clock, never ahead of it
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Milliseconds of event time between synthetic encounters
    #[arg(long, default_value_t = 100)]
    pub step_ms: i64,
    /// Every Nth synthetic encounter is stamped 3 minutes in the past (0: none): late data
    #[arg(long, default_value_t = 50)]
    pub late_every: u64,
    /// With --generate: write NDJSON here instead of publishing
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sign every encounter with this hospital identity key (`fl keygen`'s <hospital>.key);
    /// consumers started with --signers dead-letter unsigned and forged records
    #[arg(long, env = "GUARDIAN_AGENT_IDENTITY", requires = "sign_as")]
    pub identity: Option<PathBuf>,
    /// The hospital the identity key belongs to (every encounter must be this hospital's)
    #[arg(long, requires = "identity")]
    pub sign_as: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Number of synthetic hospitals (h001, h002, ...)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub hospitals: u32,
    /// Encounters per second across all hospitals
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seed of the generator: the same seed gives the same events
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Stop after this many encounters (default: run until Ctrl-C)
    #[arg(long)]
    pub count: Option<u64>,
    /// Fraction of encounters sent as undecodable bytes (exercises the dead-letter path)
    #[arg(long, default_value_t = 0.0)]
    pub poison_rate: f64,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic role (encounters, budget-spend, dead-letter, ...) or full topic name
    pub topic: String,
    /// Start from the beginning (default: only new records)
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no record arrived for this many seconds
    #[arg(long)]
    pub idle_exit_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Run experiments (chaos/experiments/*.toml): start the KPI rollup and the accountant
    /// (and, as the experiment asks, the archiver, hospital agents and an aggregator) on
    /// topics and a schema of their own, send seeded traffic, inject the faults, then check
    /// the steady-state hypotheses (encounters and spends counted exactly once, dead letters
    /// exactly the poison, lag back to zero, services ready, archive complete, models equal
    /// to their replay). Writes a Markdown and a JSON report per experiment; exits 1 when a
    /// hypothesis is violated. Topic names get a prefix of their own per run
    Run(ChaosRunArgs),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create every service's tables, the aggregate views and the row-level security of
    /// the per-hospital tables; safe to re-run
    Migrate {
        /// PostgreSQL URL
        #[arg(long, env = "GUARDIAN_DATABASE_URL")]
        database_url: String,
    },
    /// Database roles of hospitals (their own rows only) and of aggregate readers
    #[command(subcommand)]
    Role(RoleCommand),
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create (or re-key) a login role that reads only this hospital's rows
    Tenant {
        /// Role name (lower-case letters, digits, underscores)
        #[arg(long)]
        role: String,
        /// The hospital whose rows it reads
        #[arg(long)]
        hospital: String,
        #[command(flatten)]
        password: RolePassword,
    },
    /// A new API token for a tenant role: prints the token once, and the line that lets
    /// `guardian dashboard --tokens FILE` accept it (only its SHA-256 is kept)
    ApiToken {
        /// The tenant role the token reads as
        #[arg(long)]
        role: String,
    },
    /// A new operator token for the dashboard (the per-hospital comparison, the budgets,
    /// the operations panels): prints the token once, and the line for the `[operators]`
    /// table of `guardian dashboard --tokens FILE` (only its SHA-256 is kept)
    OperatorToken {
        /// Who holds it (shown in the dashboard's logs)
        #[arg(long)]
        name: String,
    },
    /// Create (or re-key) a login role that reads only the cross-hospital aggregate views
    Aggregate {
        /// Role name (lower-case letters, digits, underscores)
        #[arg(long)]
        role: String,
        #[command(flatten)]
        password: RolePassword,
    },
    /// Drop a tenant or aggregate role (other roles are refused)
    Remove {
        #[arg(long)]
        role: String,
        /// PostgreSQL URL (a role that may create roles)
        #[arg(long, env = "GUARDIAN_DATABASE_URL")]
        database_url: String,
    },
    /// Tenant roles and their hospitals
    List {
        /// PostgreSQL URL
        #[arg(long, env = "GUARDIAN_DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RolePassword {
    /// PostgreSQL URL (a role that may create roles)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Read the new role's password from this file (default: generate one and print it once)
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL (the demo's consumers keep their offsets and effects there)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Where /metrics, /healthz and /readyz listen
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Where the dashboard listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub dashboard_listen: SocketAddr,
    /// Number of synthetic hospitals (h001...; loaded into the registry with regions, EHR
    /// vendors, tiers and phases; 12 or more fill every dashboard group past k = 3)
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub hospitals: u32,
    /// Encounters per second
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C)
    #[arg(long)]
    pub duration_secs: Option<u64>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Rounds of the federated session (five fresh demo hospitals h101-<run>..h105-<run>; 0: none)
    #[arg(long, default_value_t = 10)]
    pub fl_rounds: u32,
}
