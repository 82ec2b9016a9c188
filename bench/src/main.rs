//! `guardian-bench`: the benchmarks, each next to its named peer in the same run, each
//! printing a table (the README keeps the tables and their commands). A binary of its
//! own: the production image builds only `guardian`, never this.
//!
//! Every benchmark runs against the real local stack (`tests/stack/stack.sh up`; its env
//! file names the brokers, PostgreSQL and S3) on topics and schemas of its own.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;

mod cpu;
mod fl_scale;
mod kafka;
mod kpi;
mod latency;
mod privacy;
mod replay;
mod secagg;

/// Benchmarks of Phoenix Guardian next to their peers; each prints a table
#[derive(Debug, Parser)]
#[command(name = "guardian-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce and consume throughput of the Kafka library next to kcat, same broker, same run
    Kafka(BenchKafkaArgs),
    /// The RDP accountant next to Google's dp_accounting, same workloads, same run
    Privacy(BenchPrivacyArgs),
    /// `replay range` throughput next to the raw consume rate, same broker, same run
    Replay(BenchReplayArgs),
    /// Secure aggregation (masking, Shamir, server sum and unmask) next to Flower's SecAgg+
    Secagg(BenchSecaggArgs),
    /// KPI rollups (decode → window → exactly-once commit) next to the raw consume rate and a Python consumer
    Kpi(BenchKpiArgs),
    /// The aggregator running hospital-sampled rounds of a large simulated federation (real
    /// protocol, real Kafka and S3): server time per round, bytes per parameter, peak memory
    FlScale(BenchFlScaleArgs),
    /// End-to-end latency from produce to dashboard-visible at a steady encounter rate
    Latency(BenchLatencyArgs),
    /// The KPI rollup service on given topics until SIGTERM (`kpi` starts it as its own
    /// process, so that its CPU time is its own)
    #[command(hide = true)]
    KpiService(BenchKpiServiceArgs),
}

#[derive(Debug, Args)]
pub struct BenchKpiServiceArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[arg(long)]
    pub database_url: String,
    #[arg(long)]
    pub encounters: String,
    #[arg(long)]
    pub slo: String,
    #[arg(long)]
    pub rollups: String,
    #[arg(long)]
    pub dead_letter: String,
    #[arg(long)]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct BenchFlScaleArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Registered hospitals (keys generated for each)
    #[arg(long, default_value_t = 1_000)]
    pub hospitals: u32,
    /// Hospitals a round samples on average (the sampling rate is this over --hospitals)
    #[arg(long, default_value_t = 100)]
    pub expected: u32,
    /// Parameters of the model
    #[arg(long, default_value_t = 10_000_000)]
    pub parameters: u64,
    /// Share of each round's sample that stops after sharing its keys (their masks are
    /// recovered from the others' shares)
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// The aggregator's stage timeout: the input stage waits this long for the dropouts
    #[arg(long, default_value_t = 90)]
    pub stage_timeout_secs: u64,
    /// Parameters per update chunk record
    #[arg(long, default_value_t = 65_536)]
    pub chunk_len: u32,
    /// Seed of the simulated parties' updates and dropouts
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct BenchLatencyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL the rollups go to (a fresh schema per run)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Encounters per second
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of traffic
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

#[derive(Debug, Args)]
pub struct BenchKpiArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL the rollups go to (a fresh schema per run)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Encounters per measurement
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Python with confluent-kafka and fastavro (the stack's venv); without it the Python row is skipped
    #[arg(long, env = "GUARDIAN_PYTHON")]
    pub python: Option<String>,
    /// Class path of the Kafka Streams peer (`tests/stack/stack.sh bench-tools` builds it
    /// and puts this variable in the stack's env file); without it the peer's row is skipped
    #[arg(long, env = "GUARDIAN_KAFKA_STREAMS_CLASSPATH")]
    pub kafka_streams_classpath: Option<String>,
    /// Stream threads of the Kafka Streams peer (its default is 1)
    #[arg(long, default_value_t = 1)]
    pub kafka_streams_threads: u32,
    /// The Java that runs the peer
    #[arg(long, default_value = "java")]
    pub java: String,
}

#[derive(Debug, Args)]
pub struct BenchSecaggArgs {
    /// Repetitions of each measurement (the median and the best are reported)
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Scale every vector length by this factor (for a quick look; targets are for 1.0)
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Python with flwr installed (`tests/stack/stack.sh bench-tools` makes one); without
    /// it only this side is measured
    #[arg(long, env = "GUARDIAN_FLWR_PYTHON")]
    pub flower_python: Option<String>,
}

/// The load of a Kafka benchmark.
#[derive(Debug, Args)]
pub struct BenchLoadArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Records per measurement
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Target size of each Avro record in bytes
    #[arg(long, default_value_t = 300)]
    pub record_size: usize,
    /// Repetitions of each measurement (the best and the median are reported)
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
}

#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    #[command(flatten)]
    pub load: BenchLoadArgs,
    /// Where to archive for the archive and restore rows (skipped without S3 credentials)
    #[command(flatten)]
    pub s3: S3Args,
    #[arg(long, env = "GUARDIAN_ARCHIVE_BUCKET", default_value = "guardian-archive")]
    pub bucket: String,
}

#[derive(Debug, Args)]
pub struct BenchPrivacyArgs {
    /// Budget-spend events per RDP workload
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Budget-spend events per PLD workload
    #[arg(long, default_value_t = 1_000)]
    pub pld_events: usize,
    /// Python with dp-accounting 0.6.0 installed (`tests/stack/stack.sh bench-tools` makes one)
    #[arg(long, env = "GUARDIAN_DP_PYTHON")]
    pub dp_python: String,
}

#[derive(Debug, Args)]
pub struct BenchKafkaArgs {
    #[command(flatten)]
    pub load: BenchLoadArgs,
    /// Path to kcat
    #[arg(long, default_value = "kcat")]
    pub kcat: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = guardian_runtime::telemetry::init("guardian-bench", guardian_runtime::telemetry::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Kafka(args) => kafka::run(args).await,
            Command::Privacy(args) => privacy::run(args),
            Command::Replay(args) => replay::run(args).await,
            Command::Secagg(args) => secagg::run(args),
            Command::Kpi(args) => kpi::run(args).await,
            Command::FlScale(args) => fl_scale::run(args).await,
            Command::Latency(args) => latency::run(args).await,
            Command::KpiService(args) => kpi::service(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The client id of a benchmark's clients (under the ops principal).
fn client(bench: &str) -> String {
    guardian_topics::ServiceId::Ops.client_for(&format!("bench-{bench}"))
}

/// A child process killed when dropped (on every early return).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `guardian` binary the benchmarks start services from: `GUARDIAN_BIN`, else the one
/// beside this binary (the same target folder).
fn guardian_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("GUARDIAN_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("guardian");
    anyhow::ensure!(
        beside.exists(),
        "no guardian binary beside {} (build it with `cargo build --release -p guardian`, or set GUARDIAN_BIN)",
        exe.display()
    );
    Ok(beside)
}
