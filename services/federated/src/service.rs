//! The federated processes as services: the aggregator of one session and a hospital
//! agent, each started from its settings (keys and registry checked, topics checked,
//! clients named by their principal), and the demo's in-process session.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Context, Result, bail};
use guardian_fl::demo::DemoFederation;
use guardian_kafka::lease::Lease;
use guardian_kafka::reader::read_range;
use guardian_kafka::{KafkaArgs, Producer};
use guardian_objects::S3Args;
use guardian_runtime::Shutdown;
use guardian_schemas::records::ModelVersion;
use guardian_topics::{ServiceId, hospital_client};

use crate::FlTopics;
use crate::agent::{Agent, AgentReport, Fault, MISBEHAVE_ENV, Misbehave, UpdateSource};
use crate::config::{FlAgentArgs, FlStartArgs, plan, plan_json};
use crate::coordinator::{Coordinator, RoundOutcome, SESSION_SCOPE, SessionPlan};
use crate::registry::{self, Registry};
use crate::replay::replay_session;

/// What a hospital's federated agent is called: its Kafka client id's role and its
/// service name in metrics discovery.
pub const AGENT_ROLE: &str = "fl-agent";

/// The session's topics, once each exists as declared.
pub async fn topics(kafka: &KafkaArgs, service: ServiceId) -> Result<FlTopics> {
    let catalogue = kafka.checked_catalogue(service, &FlTopics::NEEDED).await?;
    Ok(FlTopics::from_catalogue(&catalogue)?)
}

/// The aggregator: checks its key against the registry, decides the session's plan and
/// runs it until it ends or `shutdown`. Returns the plan and each round's outcome.
pub async fn aggregate(args: FlStartArgs, shutdown: &Shutdown) -> Result<(SessionPlan, Vec<RoundOutcome>)> {
    let args = args.resolve()?;
    let registry_path = args.registry.clone().context("--registry (or GUARDIAN_FL_REGISTRY) is required")?;
    let identity_path = args.identity.clone().context("--identity (or GUARDIAN_FL_IDENTITY) is required")?;
    let registry = Registry::load(&registry_path)?;
    let identity = registry::load_identity(&identity_path)?;
    if identity.verifying_key() != registry.aggregator {
        bail!("{} is not the aggregator key named in {}", identity_path.display(), registry_path.display());
    }
    let (plan, hospitals) = plan(&args, Some(&registry))?;
    registry.directory(&hospitals)?;
    let ops = match args.listen {
        Some(listen) => {
            Some(guardian_runtime::http::serve_ops(ServiceId::Aggregator.name(), listen, None, shutdown).await?)
        }
        None => None,
    };
    let t = topics(&args.kafka, ServiceId::Aggregator).await?;
    let kafka = args.kafka.settings(&ServiceId::Aggregator.client_id());
    // One aggregator acts for a session: the others wait as standbys and take over when
    // its lease lapses (fencing it through the session's transactional id).
    let group = ServiceId::Aggregator.group_for(&format!("{SESSION_SCOPE}-{}", plan.session));
    let lease = Lease::acquire(&kafka, &group, &t.rounds, || {
        tracing::info!(session = %plan.session, "standby: another aggregator leads the session; taking over when its lease lapses");
        eprintln!("fl: standby for session {}: another aggregator leads it", plan.session);
    })
    .await?;
    tracing::info!(session = %plan.session, "leading the session");
    if let Some(ops) = &ops {
        ops.readiness.set_ready(true);
    }
    eprintln!("fl: leading session {}", plan.session);
    let coordinator = Coordinator::new(kafka, t, args.s3.models()?, identity, registry, &plan.session).await?;
    eprintln!("fl: session {} settings {}", plan.session, plan_json(&plan));
    let outcomes = coordinator.run(&plan, shutdown).await?;
    coordinator.producer.flush(Duration::from_secs(10)).await?;
    drop(lease);
    Ok((plan, outcomes))
}

/// Shard `shard` of the demo data split over `hospitals`, as CSV (what `--demo-shard`
/// trains on).
pub fn demo_shard_csv(hospitals: usize, shard: usize) -> Result<String> {
    let demo = DemoFederation::new(hospitals)?;
    let data = demo.shards.get(shard).with_context(|| format!("shard {shard} of {hospitals} hospitals"))?;
    Ok(guardian_fl::data::to_csv(data))
}

/// A hospital agent: checks its key against the registry, serves its probes on
/// `args.listen`, and takes part in every round until `shutdown`.
pub async fn agent(args: FlAgentArgs, shutdown: &Shutdown) -> Result<(String, AgentReport)> {
    let args = args.resolve()?;
    let hospital = args.hospital.clone().context("--hospital is required")?;
    let identity_path = args.identity.clone().context("--identity is required")?;
    let registry_path = args.registry.clone().context("--registry (or GUARDIAN_FL_REGISTRY) is required")?;
    let registry = Registry::load(&registry_path)?;
    let identity = registry::load_identity(&identity_path)?;
    match registry.hospitals.get(&hospital) {
        Some(k) if *k == identity.verifying_key() => {}
        Some(_) => bail!("{} is not the key registered for {hospital}", identity_path.display()),
        None => bail!("hospital {hospital} is not in the registry"),
    }
    let source = match (&args.demo_shard, &args.data, &args.update) {
        (None, None, None) if args.train_cmd.is_some() => UpdateSource::Command(crate::trainer::TrainCommand {
            command: args.train_cmd.clone().unwrap_or_default(),
            format: args.train_format,
            timeout: std::time::Duration::from_secs(args.train_timeout_secs.max(1)),
            work_dir: std::env::temp_dir().join(format!("guardian-trainer-{hospital}-{}", std::process::id())),
        }),
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
        (None, None, None) => bail!("give the agent --demo-shard, --data, --update or --train-cmd"),
    };
    let fault = args.fault.as_deref().map(str::parse::<Fault>).transpose().map_err(crate::error::FlError::Invalid)?;
    let misbehave: Vec<Misbehave> = args
        .misbehave
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, String>>()
        .map_err(crate::error::FlError::Invalid)?;
    if !misbehave.is_empty() && std::env::var(MISBEHAVE_ENV).as_deref() != Ok("1") {
        bail!("--misbehave is for tests of the aggregator only: set {MISBEHAVE_ENV}=1 to use it");
    }
    let ops = guardian_runtime::http::serve_ops(AGENT_ROLE, args.listen, None, shutdown).await?;
    let t = topics(&args.kafka, ServiceId::Aggregator).await?;
    let kafka = args.kafka.settings(&hospital_client(&hospital, AGENT_ROLE));
    let agent = Agent {
        hospital: hospital.clone(),
        producer: Producer::new(&kafka)?,
        kafka,
        topics: t,
        store: args.s3.models()?,
        identity,
        registry,
        source,
        epsilon_limit: args.epsilon_limit,
        fault,
        misbehave,
    };
    tracing::info!(hospital = %hospital, metrics = %format!("http://{}/metrics", ops.bound), "agent starting");
    let report = agent.run(shutdown, || ops.readiness.set_ready(true)).await?;
    agent.producer.flush(Duration::from_secs(10)).await?;
    Ok((hospital, report))
}

/// Every published model version per session, in version order.
pub async fn model_versions(kafka: &KafkaArgs, t: &FlTopics) -> Result<BTreeMap<String, Vec<ModelVersion>>> {
    let codec = guardian_schemas::Codec::embedded();
    let settings = kafka.settings(&ServiceId::Ops.client_for("fl"));
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

/// The demo's federated session: five hospitals (h101..h105, demo shards) and the
/// aggregator in this process, keys generated in memory; prints each round and the
/// replay check.
pub async fn demo_session(kafka: KafkaArgs, s3: S3Args, rounds: u32, shutdown: Shutdown) -> Result<()> {
    let shutdown = &shutdown;
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
    let t = topics(&kafka, ServiceId::Aggregator).await?;
    let demo = DemoFederation::new(hospitals.len())?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut agents = Vec::new();
    for ((h, id), shard) in hospitals.iter().zip(identities).zip(demo.shards.clone()) {
        let settings = kafka.settings(&hospital_client(h, AGENT_ROLE));
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
            misbehave: Vec::new(),
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
    let kafka_settings = kafka.settings(&ServiceId::Aggregator.client_id());
    let session = format!("demo-{}", guardian_runtime::now_ms() / 1000);
    let coordinator =
        Coordinator::new(kafka_settings.clone(), t.clone(), s3.models()?, aggregator, registry.clone(), &session)
            .await?;
    let args = FlStartArgs {
        kafka: kafka.clone(),
        s3: s3.clone(),
        session: Some(session),
        hospitals: hospitals.clone(),
        rounds,
        chunk_len: 16,
        stage_timeout_secs: 10,
        ..FlStartArgs::default()
    };
    let (plan, _) = plan(&args, Some(&registry))?;
    println!(
        "federated: session {} with {}: {} rounds, DP-SGD noise multiplier {:.3} for ε = 2 per hospital",
        plan.session,
        hospitals.join(","),
        plan.rounds,
        plan.noise_multiplier
    );
    let outcomes = coordinator.run(&plan, shutdown).await?;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            RoundOutcome::Finished { version, survivors, accuracy, sha256, .. } => println!(
                "federated: round {} → version {version}, {} hospitals, held-out accuracy {}, sha256 {}",
                i + 1,
                survivors.len(),
                accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                &sha256[..16]
            ),
            RoundOutcome::Failed { reason, .. } => println!("federated: round {} failed: {reason}", i + 1),
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
