//! `guardian fl ...`: federated sessions (the aggregator), the hospital agent, keys, model
//! versions and the replay check.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use guardian_federated::agent::{Agent, Fault, UpdateSource};
use guardian_federated::coordinator::{Coordinator, RoundOutcome, SessionPlan};
use guardian_federated::registry::{self, Registry};
use guardian_federated::replay::replay_session;
use guardian_federated::{FlTopics, wire};
use guardian_fl::demo::DemoFederation;
use guardian_kafka::Producer;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::reader::read_range;
use guardian_runtime::Shutdown;
use guardian_schemas::records::{DpUnit, ModelVersion, RoundControl, RoundControlKind};

use crate::cli::{DpUnitArg, FlAgentArgs, FlCommand, FlQueryArgs, FlStartArgs, KafkaArgs, S3Args};
use crate::common;

/// Parameters of the shipped demo model (30 features + bias).
const DEMO_PARAMETERS: usize = 31;

async fn topics(kafka: &KafkaArgs) -> Result<FlTopics> {
    let catalogue = common::kafka_catalogue(kafka)?;
    let admin = common::admin(kafka).await?;
    common::require_topics(&admin, &catalogue, &FlTopics::NEEDED).await?;
    Ok(FlTopics::from_catalogue(&catalogue)?)
}

pub async fn run(cmd: FlCommand) -> Result<ExitCode> {
    match cmd {
        FlCommand::Keygen { dir, hospitals } => {
            registry::keygen(&dir, &hospitals)?;
            println!(
                "wrote {}/aggregator.key, {} hospital keys and {}/registry.toml",
                dir.display(),
                hospitals.len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Config(args) => {
            let (plan, _) = plan(&args, None)?;
            println!("{}", plan_json(&plan));
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Start(args) => start(args).await,
        FlCommand::Agent(args) => agent(args).await,
        FlCommand::Status(args) => status(args, false).await,
        FlCommand::List(args) => status(args, true).await,
        FlCommand::Stop { kafka, session } => {
            let t = topics(&kafka).await?;
            let producer = Producer::new(&common::settings(&kafka, "guardian-fl"))?;
            producer.send(&t.rounds, &session, &wire::control(&session, 0, RoundControlKind::Stop)).await?;
            producer.flush(Duration::from_secs(10)).await?;
            println!("asked session {session} to stop after its current round");
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Export { kafka, s3, session, version, out } => {
            let t = topics(&kafka).await?;
            let versions = model_versions(&kafka, &t).await?;
            let list = versions.get(&session).with_context(|| format!("no model versions of session {session}"))?;
            let v = match version {
                Some(n) => list
                    .iter()
                    .find(|v| v.version == n)
                    .with_context(|| format!("session {session} has no version {n}"))?,
                None => list.last().context("no versions")?,
            };
            let bytes = s3.models()?.get_verified(&v.object_uri, &v.sha256).await?;
            guardian_fl::npy::read(&bytes).context("the stored model is not a .npy file")?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "version {} of {session} ({} parameters, sha256 {}) → {}",
                v.version,
                v.parameters,
                v.sha256,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Replay { kafka, s3, session, registry } => {
            let t = topics(&kafka).await?;
            let registry = Registry::load(&registry)?;
            let settings = common::settings(&kafka, "guardian-fl-replay");
            let codec = guardian_schemas::Codec::embedded();
            let checks = replay_session(&settings, &t, &s3.models()?, &registry, &codec, &session).await?;
            println!("| round | version | published sha256 | replayed sha256 | match |");
            println!("|---:|---:|---|---|:---:|");
            for c in &checks {
                println!(
                    "| {} | {} | {} | {} | {} |",
                    c.round,
                    c.version,
                    &c.published_sha256[..16],
                    &c.replayed_sha256[..16],
                    if c.matches() { "yes" } else { "NO" }
                );
            }
            let bad = checks.iter().filter(|c| !c.matches()).count();
            if bad > 0 || checks.is_empty() {
                eprintln!("error: {bad} of {} model versions differ from their replay", checks.len());
                return Ok(ExitCode::FAILURE);
            }
            println!("all {} model versions of {session} are bit-identical to their replay", checks.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_neighbours(n: u32) -> u32 {
    if n <= 33 {
        n.saturating_sub(1)
    } else {
        // SecAgg+: a logarithmic degree keeps the work per party small.
        (2 * (f64::from(n).log2() * 1.5).ceil() as u32).min(n - 1)
    }
}

fn plan(args: &FlStartArgs, registry: Option<&Registry>) -> Result<(SessionPlan, Vec<String>)> {
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
    let threshold = args.threshold.unwrap_or(n / 2 + 1);
    let neighbours = args.neighbours.unwrap_or_else(|| default_neighbours(n));
    let (dp_unit, q, steps_per_round) = match args.dp_unit {
        DpUnitArg::Patient => (DpUnit::Patient, args.sampling_rate, u64::from(args.local_steps)),
        DpUnitArg::Hospital => {
            let total = registry.map_or(n as usize, |r| r.hospitals.len()).max(n as usize);
            (DpUnit::Hospital, f64::from(n) / total as f64, 1)
        }
    };
    ensure!(q > 0.0 && q <= 1.0, "--sampling-rate must be in (0, 1]");
    let noise_multiplier = match args.noise_multiplier {
        Some(z) => z,
        None => guardian_privacy::inverse::noise_for_target(
            q,
            steps_per_round * u64::from(args.rounds),
            args.delta,
            args.epsilon,
        )
        .context("deriving the noise multiplier from --epsilon")?,
    };
    // The widest quantization that keeps the sum of n updates exact in Z/2^32.
    let mut levels = 1u32 << 22;
    while u64::from(n) * u64::from(levels - 1) >= 1 << 32 {
        levels /= 2;
    }
    let initial_model = match &args.initial_model {
        Some(p) => guardian_fl::npy::read(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("{}: not a float .npy file", p.display()))?,
        None => vec![0f32; DEMO_PARAMETERS],
    };
    let evaluate_on = (initial_model.len() == DEMO_PARAMETERS)
        .then(|| DemoFederation::new(n as usize).ok().map(|d| d.test))
        .flatten();
    let plan = SessionPlan {
        session: args.session.clone().unwrap_or_else(|| format!("s-{}", guardian_runtime::now_ms() / 1000)),
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

fn plan_json(p: &SessionPlan) -> String {
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
    })
    .to_string()
}

async fn start(args: FlStartArgs) -> Result<ExitCode> {
    let registry_path = args.registry.clone().context("--registry (or GUARDIAN_FL_REGISTRY) is required")?;
    let identity_path = args.identity.clone().context("--identity (or GUARDIAN_FL_IDENTITY) is required")?;
    let registry = Registry::load(&registry_path)?;
    let identity = registry::load_identity(&identity_path)?;
    if identity.verifying_key() != registry.aggregator {
        bail!("{} is not the aggregator key named in {}", identity_path.display(), registry_path.display());
    }
    let (plan, hospitals) = plan(&args, Some(&registry))?;
    registry.directory(&hospitals)?;
    let t = topics(&args.kafka).await?;
    let kafka = common::settings(&args.kafka, "fl-aggregator");
    let producer = Producer::new(&kafka)?;
    let coordinator = Coordinator {
        dead_letters: DeadLetterSink::new(Producer::new(&kafka)?, t.dead_letter.clone(), "fl-aggregator"),
        kafka,
        topics: t,
        producer,
        store: args.s3.models()?,
        identity,
        registry,
    };
    let shutdown = Shutdown::on_signals();
    eprintln!("fl: session {} settings {}", plan.session, plan_json(&plan));
    let outcomes = coordinator.run(&plan, &shutdown).await?;
    coordinator.producer.flush(Duration::from_secs(10)).await?;
    println!("session {}: {} rounds", plan.session, outcomes.len());
    println!("| round | outcome | version | survivors | dropped | accuracy |");
    println!("|---:|---|---:|---|---|---:|");
    let mut finished = 0;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            RoundOutcome::Finished { version, survivors, dropped, accuracy, .. } => {
                finished += 1;
                println!(
                    "| {} | finished | {version} | {} | {} | {} |",
                    i + 1,
                    survivors.join(","),
                    dropped.join(","),
                    accuracy.map_or("-".into(), |a| format!("{a:.3}"))
                );
            }
            RoundOutcome::Failed { reason } => println!("| {} | failed: {reason} | | | | |", i + 1),
        }
    }
    Ok(if finished > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn agent(args: FlAgentArgs) -> Result<ExitCode> {
    let registry = Registry::load(&args.registry)?;
    let identity = registry::load_identity(&args.identity)?;
    match registry.hospitals.get(&args.hospital) {
        Some(k) if *k == identity.verifying_key() => {}
        Some(_) => bail!("{} is not the key registered for {}", args.identity.display(), args.hospital),
        None => bail!("hospital {} is not in the registry", args.hospital),
    }
    let source = match (&args.demo_shard, &args.data, &args.update) {
        (Some(i), _, _) => {
            let demo = DemoFederation::new(args.demo_hospitals)?;
            UpdateSource::Data(
                demo.shards
                    .get(*i)
                    .cloned()
                    .with_context(|| format!("--demo-shard {i} of {} hospitals", args.demo_hospitals))?,
            )
        }
        (None, Some(path), _) => UpdateSource::Data(
            guardian_fl::data::parse_csv(
                &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{}", path.display()))?,
        ),
        (None, None, Some(path)) => UpdateSource::File(
            guardian_fl::npy::read(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
                .with_context(|| format!("{}", path.display()))?,
        ),
        (None, None, None) => bail!("give the agent --demo-shard, --data or --update"),
    };
    let fault = args.fault.as_deref().map(str::parse::<Fault>).transpose().map_err(anyhow::Error::msg)?;
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;
    let t = topics(&args.kafka).await?;
    let kafka = common::settings(&args.kafka, &format!("fl-agent-{}", args.hospital));
    let agent = Agent {
        hospital: args.hospital.clone(),
        producer: Producer::new(&kafka)?,
        kafka,
        topics: t,
        store: args.s3.models()?,
        identity,
        registry,
        source,
        epsilon_limit: args.epsilon_limit,
        fault,
    };
    tracing::info!(hospital = %args.hospital, metrics = %format!("http://{bound}/metrics"), "agent starting");
    let report = agent.run(&shutdown, || readiness.set_ready(true)).await?;
    agent.producer.flush(Duration::from_secs(10)).await?;
    println!(
        "agent {}: joined rounds {:?}, refused {:?}, epsilon spent {:.3}",
        args.hospital,
        report.rounds_joined,
        report.rounds_refused.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        report.epsilon_spent
    );
    Ok(ExitCode::SUCCESS)
}

async fn model_versions(kafka: &KafkaArgs, t: &FlTopics) -> Result<BTreeMap<String, Vec<ModelVersion>>> {
    let codec = guardian_schemas::Codec::embedded();
    let settings = common::settings(kafka, "guardian-fl");
    let mut out: BTreeMap<String, Vec<ModelVersion>> = BTreeMap::new();
    for m in read_range(&settings, "fl-models", &[&t.models], None).await? {
        if let Ok(v) = codec.decode::<ModelVersion>(&m.payload) {
            out.entry(v.session_id.clone()).or_default().push(v);
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|v| v.version);
        list.dedup_by_key(|v| v.version);
    }
    Ok(out)
}

async fn status(args: FlQueryArgs, versions_only: bool) -> Result<ExitCode> {
    let t = topics(&args.kafka).await?;
    let codec = guardian_schemas::Codec::embedded();
    let settings = common::settings(&args.kafka, "guardian-fl");
    let models = model_versions(&args.kafka, &t).await?;
    let mut sessions: BTreeMap<String, BTreeMap<i64, Vec<RoundControl>>> = BTreeMap::new();
    if !versions_only {
        for m in read_range(&settings, "fl-status", &[&t.rounds], None).await? {
            if let Ok(c) = codec.decode::<RoundControl>(&m.payload) {
                sessions.entry(c.session_id.clone()).or_default().entry(c.round).or_default().push(c);
            }
        }
    }
    let names: std::collections::BTreeSet<String> = sessions.keys().chain(models.keys()).cloned().collect();
    for name in names.iter().filter(|n| args.session.as_ref().is_none_or(|s| s == *n)) {
        let rounds = sessions.get(name);
        let versions = models.get(name).map_or(&[][..], Vec::as_slice);
        let count =
            |k: RoundControlKind| rounds.map_or(0, |r| r.values().filter(|cs| cs.iter().any(|c| c.kind == k)).count());
        let latest = versions.last();
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "session": name,
                    "rounds_opened": count(RoundControlKind::Open),
                    "rounds_finished": count(RoundControlKind::Finished),
                    "rounds_failed": count(RoundControlKind::Failed),
                    "stopped": count(RoundControlKind::Stop) > 0,
                    "versions": versions.iter().map(|v| serde_json::json!({
                        "version": v.version, "round": v.round, "sha256": v.sha256, "uri": v.object_uri,
                        "accuracy": v.accuracy, "participants": v.participants,
                    })).collect::<Vec<_>>(),
                })
            );
            continue;
        }
        if versions_only {
            println!("{name}: {} versions", versions.len());
        } else {
            println!(
                "{name}: {} rounds opened, {} finished, {} failed{}",
                count(RoundControlKind::Open),
                count(RoundControlKind::Finished),
                count(RoundControlKind::Failed),
                if count(RoundControlKind::Stop) > 0 { ", stop requested" } else { "" }
            );
            if let Some(r) = rounds {
                for (round, cs) in r.iter().filter(|(round, _)| **round > 0) {
                    if let Some(f) = cs.iter().find(|c| c.kind == RoundControlKind::Failed) {
                        println!("  round {round}: failed: {}", f.reason.as_deref().unwrap_or("?"));
                    }
                }
            }
        }
        for v in versions {
            println!(
                "  version {} (round {}): accuracy {}, {} hospitals, {}",
                v.version,
                v.round,
                v.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                v.participants.len(),
                v.object_uri
            );
        }
        if latest.is_none() && versions_only {
            println!("  (no versions)");
        }
    }
    if names.is_empty() {
        println!("no federated sessions on {}", t.rounds);
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's federated session: five hospitals (h101..h105, demo shards) and the
/// aggregator in this process, keys generated in memory; prints each round and the
/// replay check.
pub async fn demo_session(kafka: KafkaArgs, s3: S3Args, rounds: u32, shutdown: Shutdown) -> Result<()> {
    use ed25519_dalek::SigningKey;
    use rand::TryRngCore;
    let key = || -> Result<SigningKey> {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut b).context("the OS random number generator")?;
        Ok(SigningKey::from_bytes(&b))
    };
    // Fresh hospital ids per run: privacy budgets are per hospital and never reset, so a
    // second demo with the same ids would (rightly) be refused.
    let run = guardian_runtime::now_ms() / 1000 % 100_000;
    let hospitals: Vec<String> = (101..=105).map(|i| format!("h{i}-{run:05}")).collect();
    let aggregator = key()?;
    let identities: Vec<SigningKey> = hospitals.iter().map(|_| key()).collect::<Result<_>>()?;
    let registry = Registry {
        aggregator: aggregator.verifying_key(),
        hospitals: hospitals.iter().cloned().zip(identities.iter().map(SigningKey::verifying_key)).collect(),
    };
    let t = topics(&kafka).await?;
    let demo = DemoFederation::new(hospitals.len())?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut agents = Vec::new();
    for ((h, id), shard) in hospitals.iter().zip(identities).zip(demo.shards.clone()) {
        let settings = common::settings(&kafka, &format!("fl-agent-{h}"));
        let agent = Agent {
            hospital: h.clone(),
            producer: Producer::new(&settings)?,
            kafka: settings,
            topics: t.clone(),
            store: s3.models()?,
            identity: id,
            registry: registry.clone(),
            source: UpdateSource::Data(shard),
            epsilon_limit: 2.0,
            fault: None,
        };
        let (shutdown, ready) = (shutdown.clone(), ready_tx.clone());
        agents.push(tokio::spawn(async move {
            let report = agent.run(&shutdown, move || {
                let _ = ready.send(());
            });
            report.await
        }));
    }
    for _ in 0..hospitals.len() {
        ready_rx.recv().await.context("an agent stopped before it was ready")?;
    }
    let kafka_settings = common::settings(&kafka, "fl-aggregator");
    let coordinator = Coordinator {
        dead_letters: DeadLetterSink::new(Producer::new(&kafka_settings)?, t.dead_letter.clone(), "fl-aggregator"),
        producer: Producer::new(&kafka_settings)?,
        kafka: kafka_settings.clone(),
        topics: t.clone(),
        store: s3.models()?,
        identity: aggregator,
        registry: registry.clone(),
    };
    let args = FlStartArgs {
        kafka: kafka.clone(),
        s3: s3.clone(),
        identity: None,
        registry: None,
        session: Some(format!("demo-{}", guardian_runtime::now_ms() / 1000)),
        hospitals: hospitals.clone(),
        rounds,
        epsilon: 2.0,
        delta: 1e-5,
        noise_multiplier: None,
        dp_unit: DpUnitArg::Patient,
        threshold: None,
        neighbours: None,
        clip_norm: 1.0,
        sampling_rate: 0.1,
        local_steps: 20,
        learning_rate: 0.5,
        chunk_len: 16,
        clipping_range: 8.0,
        stage_timeout_secs: 10,
        initial_model: None,
    };
    let (plan, _) = plan(&args, Some(&registry))?;
    println!(
        "federated: session {} with {}: {} rounds, DP-SGD noise multiplier {:.3} for ε = 2 per hospital",
        plan.session,
        hospitals.join(","),
        plan.rounds,
        plan.noise_multiplier
    );
    let outcomes = coordinator.run(&plan, &shutdown).await?;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            RoundOutcome::Finished { version, survivors, accuracy, sha256, .. } => println!(
                "federated: round {} → version {version}, {} hospitals, held-out accuracy {}, sha256 {}",
                i + 1,
                survivors.len(),
                accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                &sha256[..16]
            ),
            RoundOutcome::Failed { reason } => println!("federated: round {} failed: {reason}", i + 1),
        }
    }
    let checks =
        replay_session(&kafka_settings, &t, &s3.models()?, &registry, coordinator.producer.codec(), &plan.session)
            .await?;
    let same = checks.iter().filter(|c| c.matches()).count();
    println!(
        "federated: replayed the session from its topics: {same} of {} model versions bit-identical",
        checks.len()
    );
    // The agents run until the demo stops.
    drop(agents);
    Ok(())
}
