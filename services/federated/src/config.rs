//! The federated commands' settings: the aggregator's session (`FlStartArgs`) and a
//! hospital agent's (`FlAgentArgs`), as flags or as a TOML file with the same keys
//! (`--config FILE`), and [`plan`], which turns a session's settings into the decided
//! [`SessionPlan`]: the SecAgg+ threshold and neighbour degree, the noise multiplier for
//! the ε budget, the quantization that keeps the ring sum exact. Nothing here does I/O
//! beyond reading the files named in the settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Context, Result, ensure};
use guardian_fl::demo::DemoFederation;
use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;
use guardian_schemas::records::DpUnit;
use serde::{Deserialize, Serialize};

use crate::coordinator::SessionPlan;
use crate::registry::Registry;

/// Parameters of the shipped demo model (30 features + bias).
pub const DEMO_PARAMETERS: usize = 31;
/// Default of the agent's `--listen`.
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:9466";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpUnitArg {
    /// Each hospital trains with DP-SGD: patient-level privacy, spent per hospital
    Patient,
    /// Updates are clipped and noised so that the sum carries the noise (DP-FedAvg)
    Hospital,
}

#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlStartArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka], S3 under [s3]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// The aggregator's signing key
    #[arg(long, env = "GUARDIAN_FL_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// The registry of public keys
    #[arg(long, env = "GUARDIAN_FL_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// Session id (default: s-<unix seconds>). A session the topics already record and
    /// that has not ended is resumed where it stopped
    #[arg(long)]
    pub session: Option<String>,
    /// Resume this session from its topics, with the settings it was started with; fails
    /// when nothing of it is recorded
    #[arg(long, conflicts_with = "session", value_name = "SESSION")]
    pub resume: Option<String>,
    /// Hospitals taking part, comma-separated (default: every hospital in the registry)
    #[arg(long, value_delimiter = ',')]
    pub hospitals: Vec<String>,
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Privacy budget each hospital may spend over the session (sets the noise multiplier)
    #[arg(long, default_value_t = 2.0)]
    pub epsilon: f64,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Noise multiplier (default: the smallest that keeps --rounds within --epsilon)
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    #[arg(long, value_enum, default_value_t = DpUnitArg::Patient)]
    pub dp_unit: DpUnitArg,
    /// Shamir threshold t, the fewest survivors a round can finish with (default: a
    /// majority of a round's hospitals, the expected sample with --hospital-sampling-rate;
    /// in a sparse graph a majority of a neighbourhood, neighbours/2 + 1)
    #[arg(long)]
    pub threshold: Option<u32>,
    /// Neighbours per hospital in the SecAgg+ graph (default: all, up to 33 hospitals a
    /// round, else 2·⌈1.5·log2 n⌉ for a round of n, the expected sample when sampled)
    #[arg(long)]
    pub neighbours: Option<u32>,
    /// L2 clip norm (per record for patient, per update for hospital)
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Record sampling rate per DP-SGD step (patient unit)
    #[arg(long, default_value_t = 0.1)]
    pub sampling_rate: f64,
    /// Hospital unit: each round takes each eligible hospital with this probability, by a
    /// rule every agent checks (1: every eligible hospital, every round). A hospital is
    /// charged a full round each time it is sampled (the sample is public)
    #[arg(long, default_value_t = 1.0)]
    pub hospital_sampling_rate: f64,
    /// DP-SGD steps per round (patient) or local epochs (hospital)
    #[arg(long, default_value_t = 20)]
    pub local_steps: u32,
    #[arg(long, default_value_t = 0.5)]
    pub learning_rate: f32,
    /// Parameters per update chunk record
    #[arg(long, default_value_t = 65_536)]
    pub chunk_len: u32,
    /// Quantization range: update values are clamped to [-r, r]
    #[arg(long, default_value_t = 8.0)]
    pub clipping_range: f32,
    /// Seconds each stage waits for the parties before going on without the missing ones
    #[arg(long, default_value_t = 30)]
    pub stage_timeout_secs: u64,
    /// Initial weights (.npy); default: the demo logistic-regression model, all zeros
    #[arg(long)]
    pub initial_model: Option<PathBuf>,
    /// Whether a hospital's update is summed only once the privacy accountant accepted
    /// its spend for the round (`wait`, within the stage timeout; refused or undecided
    /// hospitals are dropped), or without asking (`off`: only where no accountant runs,
    /// e.g. development; the budget is then enforced by the agents alone)
    #[arg(long, value_enum, default_value_t = SpendGate::Wait)]
    pub spend_decisions: SpendGate,
    /// Where /metrics, /healthz and /readyz listen (rounds by outcome, model version,
    /// held-out accuracy, survivors); none by default, so that standbys of a session on
    /// one host do not compete for a port
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Whether the aggregator waits for the accountant's decision on each spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpendGate {
    Wait,
    Off,
}

impl Default for FlStartArgs {
    fn default() -> Self {
        FlStartArgs {
            config: None,
            kafka: KafkaArgs::default(),
            s3: S3Args::default(),
            identity: None,
            registry: None,
            session: None,
            resume: None,
            hospitals: Vec::new(),
            rounds: 10,
            epsilon: 2.0,
            delta: 1e-5,
            noise_multiplier: None,
            dp_unit: DpUnitArg::Patient,
            threshold: None,
            neighbours: None,
            clip_norm: 1.0,
            sampling_rate: 0.1,
            hospital_sampling_rate: 1.0,
            local_steps: 20,
            learning_rate: 0.5,
            chunk_len: 65_536,
            clipping_range: 8.0,
            stage_timeout_secs: 30,
            initial_model: None,
            spend_decisions: SpendGate::Wait,
            listen: None,
        }
    }
}

impl FlStartArgs {
    /// The settings from `--config` when given, else from the flags.
    pub fn resolve(self) -> Result<FlStartArgs> {
        Ok(guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?)
    }
}

#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlAgentArgs {
    /// Read every setting from this TOML file (keys as the flags, with underscores; Kafka
    /// settings under [kafka], S3 under [s3]); flags and their variables are then ignored
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// This hospital's id
    #[arg(long)]
    pub hospital: Option<String>,
    /// This hospital's signing key
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// The registry of public keys
    #[arg(long, env = "GUARDIAN_FL_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// Train on shard N of the shipped demo data (split over --demo-hospitals)
    #[arg(long, conflicts_with_all = ["data", "update", "train_cmd"])]
    pub demo_shard: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub demo_hospitals: usize,
    /// Train on this CSV (standardised features..., 0/1 label)
    #[arg(long, conflicts_with_all = ["update", "train_cmd"])]
    pub data: Option<PathBuf>,
    /// Send this precomputed update (.npy, float32/64) in hospital-unit sessions
    #[arg(long, conflicts_with = "train_cmd")]
    pub update: Option<PathBuf>,
    /// Run this site's own trainer each round (hospital-unit sessions; through `sh -c`):
    /// it reads the global model from $GUARDIAN_GLOBAL_MODEL and writes its update (new
    /// weights minus the global model) to $GUARDIAN_UPDATE, in --train-format; the agent
    /// clips, noises, quantizes, masks, signs and sends it
    #[arg(long)]
    pub train_cmd: Option<String>,
    /// The file format the trainer reads and writes
    #[arg(long, value_enum, default_value = "npy")]
    pub train_format: crate::trainer::Format,
    /// Seconds the trainer may run in a round before it is killed and the round sat out
    #[arg(long, default_value_t = 600)]
    pub train_timeout_secs: u64,
    /// This hospital's own epsilon limit (the accountant's applies too)
    #[arg(long, default_value_t = 2.0)]
    pub epsilon_limit: f64,
    /// Where /metrics, /healthz and /readyz listen
    #[arg(long, default_value = DEFAULT_AGENT_LISTEN)]
    pub listen: SocketAddr,
    /// Fault injection for chaos tests: before-input:<round> aborts before sending that round's
    /// update; slow:<ms> sends each answer that much later
    #[arg(long, env = "GUARDIAN_FL_FAULT", hide = true)]
    pub fault: Option<String>,
    /// Misbehaviour for tests of the aggregator, comma-separated, one per round in turn:
    /// forge-chunk, equivocate, garbage-shares, oversized-chunk, refused-spend. Refused unless
    /// GUARDIAN_ALLOW_MISBEHAVE=1 is set
    #[arg(long, value_delimiter = ',', hide = true)]
    pub misbehave: Vec<String>,
}

impl Default for FlAgentArgs {
    fn default() -> Self {
        FlAgentArgs {
            config: None,
            kafka: KafkaArgs::default(),
            s3: S3Args::default(),
            hospital: None,
            identity: None,
            registry: None,
            demo_shard: None,
            demo_hospitals: 5,
            data: None,
            update: None,
            train_cmd: None,
            train_format: crate::trainer::Format::Npy,
            train_timeout_secs: 600,
            epsilon_limit: 2.0,
            listen: DEFAULT_AGENT_LISTEN.parse().expect("a socket address"),
            fault: None,
            misbehave: Vec::new(),
        }
    }
}

impl FlAgentArgs {
    /// The settings from `--config` when given, else from the flags.
    pub fn resolve(self) -> Result<FlAgentArgs> {
        Ok(guardian_runtime::config::file_or(self.config.clone().as_deref(), self)?)
    }
}

pub fn default_neighbours(n: u32) -> u32 {
    if n <= 33 {
        n.saturating_sub(1)
    } else {
        // SecAgg+: a logarithmic degree keeps the work per party small.
        (2 * (f64::from(n).log2() * 1.5).ceil() as u32).min(n - 1)
    }
}

pub fn plan(args: &FlStartArgs, registry: Option<&Registry>) -> Result<(SessionPlan, Vec<String>)> {
    let hospitals: Vec<String> = if args.hospitals.is_empty() {
        registry.map(|r| r.hospitals.keys().cloned().collect()).context("--hospitals is required without --registry")?
    } else {
        args.hospitals.clone()
    };
    let n = hospitals.len() as u32;
    ensure!(n >= 2, "a session needs at least 2 hospitals, got {n}");
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(
        args.epsilon > 0.0 && args.delta > 0.0 && args.delta < 1.0,
        "--epsilon must be positive and --delta in (0, 1)"
    );
    let (dp_unit, q, steps_per_round) = match args.dp_unit {
        DpUnitArg::Patient => (DpUnit::Patient, args.sampling_rate, u64::from(args.local_steps)),
        // The rate hospitals are sampled at; each sampled round is charged in full (see
        // `sampling`), so the noise is sized for a hospital sampled in every round.
        DpUnitArg::Hospital => (DpUnit::Hospital, args.hospital_sampling_rate, 1),
    };
    ensure!(q > 0.0 && q <= 1.0, "--sampling-rate and --hospital-sampling-rate must be in (0, 1]");
    // The defaults follow the size of a round: with hospital sampling, the expected sample.
    let round_size = if dp_unit == DpUnit::Hospital { ((f64::from(n) * q).ceil() as u32).clamp(2, n) } else { n };
    let neighbours = args.neighbours.unwrap_or_else(|| default_neighbours(round_size));
    // A party's secrets are shared among its neighbours: in a sparse graph the threshold is
    // a majority of a neighbourhood (SecAgg+), in the complete graph of the round.
    let threshold =
        args.threshold.unwrap_or(if neighbours + 1 >= round_size { round_size / 2 + 1 } else { neighbours / 2 + 1 });
    ensure!(
        args.dp_unit == DpUnitArg::Hospital || args.hospital_sampling_rate == 1.0,
        "--hospital-sampling-rate is for hospital-unit sessions (patient-unit rounds sample records: --sampling-rate)"
    );

    let noise_multiplier = match args.noise_multiplier {
        Some(z) => z,
        None => guardian_privacy::inverse::noise_for_target(
            if dp_unit == DpUnit::Hospital { 1.0 } else { q },
            steps_per_round * u64::from(args.rounds),
            args.delta,
            args.epsilon,
        )
        .context("deriving the noise multiplier from --epsilon")?,
    };
    let initial_model = match &args.initial_model {
        Some(p) => guardian_fl::npy::read(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("{}: not a float .npy file", p.display()))?,
        None => vec![0f32; DEMO_PARAMETERS],
    };
    // The widest quantization that keeps the sum of n updates exact in Z/2^32; in the
    // hospital unit, with room for the parties' integer noise on either side of the sum
    // (20 standard deviations of n parties' noise, read back around the middle).
    let mut levels = 1u32 << 22;
    let headroom = |levels: u32| -> f64 {
        if dp_unit != DpUnit::Hospital {
            return 0.0;
        }
        let scale = f64::from(levels - 1) / (2.0 * f64::from(args.clipping_range));
        let sensitivity = scale * args.clip_norm + 2.0 * (initial_model.len() as f64).sqrt();
        20.0 * noise_multiplier * sensitivity * (f64::from(n) / f64::from(threshold.max(1))).sqrt()
    };
    while u64::from(n) * u64::from(levels - 1) >= 1 << 32
        || f64::from(n) * f64::from(levels - 1) / 2.0 + headroom(levels) >= 2_147_483_648.0
    {
        levels /= 2;
    }
    let evaluate_on = (initial_model.len() == DEMO_PARAMETERS)
        .then(|| DemoFederation::new(n as usize).ok().map(|d| d.test))
        .flatten();
    let plan = SessionPlan {
        session: args
            .resume
            .clone()
            .or_else(|| args.session.clone())
            .unwrap_or_else(|| format!("s-{}", guardian_runtime::now_ms() / 1000)),
        resume_only: args.resume.is_some(),
        hospitals: hospitals.clone(),
        rounds: args.rounds,
        threshold,
        neighbours,
        dp_unit,
        clip_norm: args.clip_norm,
        noise_multiplier,
        sampling_rate: q,
        delta: args.delta,
        local_steps: args.local_steps,
        learning_rate: args.learning_rate,
        chunk_len: args.chunk_len,
        clipping_range: args.clipping_range,
        quantization_levels: levels,
        stage_timeout: Duration::from_secs(args.stage_timeout_secs.max(1)),
        initial_model,
        evaluate_on,
        spend_gate: args.spend_decisions == SpendGate::Wait,
    };
    // Catch bad combinations (threshold, neighbours, ranges) before touching anything.
    let probe = guardian_secagg::RoundConfig {
        session: plan.session.clone(),
        round: 1,
        model_version: 0,
        participants: hospitals.clone(),
        threshold,
        neighbours: neighbours.min(n - 1),
        dimension: plan.initial_model.len() as u64,
        chunk_len: plan.chunk_len,
        clipping_range: plan.clipping_range,
        quantization_levels: levels,
        clip_norm: plan.clip_norm,
        noise_multiplier,
        graph_seed: [0; 32],
    };
    probe.validate()?;
    Ok((plan, hospitals))
}

pub fn plan_json(p: &SessionPlan) -> String {
    serde_json::json!({
        "session": p.session,
        "hospitals": p.hospitals,
        "rounds": p.rounds,
        "threshold": p.threshold,
        "neighbours": p.neighbours,
        "dp_unit": format!("{:?}", p.dp_unit).to_uppercase(),
        "clip_norm": p.clip_norm,
        "noise_multiplier": p.noise_multiplier,
        "sampling_rate": p.sampling_rate,
        "delta": p.delta,
        "local_steps": p.local_steps,
        "learning_rate": p.learning_rate,
        "chunk_len": p.chunk_len,
        "clipping_range": p.clipping_range,
        "quantization_levels": p.quantization_levels,
        "stage_timeout_secs": p.stage_timeout.as_secs(),
        "parameters": p.initial_model.len(),
        "spend_decisions": if p.spend_gate { "wait" } else { "off" },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_defaults_are_the_flag_defaults() {
        assert_eq!(FlStartArgs::default(), guardian_runtime::config::flag_defaults::<FlStartArgs>());
    }

    #[test]
    fn agent_file_defaults_are_the_flag_defaults() {
        assert_eq!(FlAgentArgs::default(), guardian_runtime::config::flag_defaults::<FlAgentArgs>());
    }

    #[test]
    fn a_session_plan_takes_a_majority_threshold_and_a_complete_graph_when_small() {
        let args = FlStartArgs { hospitals: (1..=5).map(|i| format!("h{i}")).collect(), ..FlStartArgs::default() };
        let (p, hospitals) = plan(&args, None).unwrap();
        assert_eq!((p.threshold, p.neighbours, hospitals.len()), (3, 4, 5));
        assert!(p.noise_multiplier > 0.0);
        // n · (levels − 1) stays below 2^32: the ring sum of n updates is exact.
        assert!(5 * u64::from(p.quantization_levels - 1) < 1 << 32);
        assert_eq!(default_neighbours(100), 2 * (100f64.log2() * 1.5).ceil() as u32);
        let one = FlStartArgs { hospitals: vec!["h1".into()], ..FlStartArgs::default() };
        assert!(plan(&one, None).is_err());
    }

    #[test]
    fn sampled_rounds_take_their_defaults_from_the_expected_sample() {
        let args = FlStartArgs {
            hospitals: (0..1000).map(|i| format!("h{i:04}")).collect(),
            dp_unit: DpUnitArg::Hospital,
            hospital_sampling_rate: 0.1,
            ..FlStartArgs::default()
        };
        let (p, hospitals) = plan(&args, None).unwrap();
        assert_eq!(hospitals.len(), 1000);
        assert_eq!((p.threshold, p.neighbours), (11, 20));
        // The ring stays exact for every registered hospital at once.
        assert!(1000 * u64::from(p.quantization_levels - 1) < 1 << 32);
    }
}
