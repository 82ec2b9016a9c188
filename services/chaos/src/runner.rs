//! `guardian chaos run`: one experiment on the real local stack. The runner starts the
//! services it supervises (the KPI rollup and the privacy accountant, and as the
//! experiment asks the archiver, hospital agents and an aggregator, as processes started
//! from typed config files built by the [`Subject`], on topics and a schema of their
//! own), sends seeded traffic, fires the experiment's faults
//! at their planned times, samples the consumers' lag, and checks the steady-state
//! hypotheses before the faults and after recovery:
//!
//! - encounters exactly once: every valid encounter in the topic is counted once in the
//!   rollups (per hospital: the seen ids and the day windows), nothing else is;
//! - spends exactly once: the privacy ledger holds exactly the valid spends of the topic;
//! - dead letters exact: the dead-letter topic names exactly the undecodable, invalid and
//!   future-dated records;
//! - lag recovers: every partition is applied to its end within `recover_secs`;
//! - services up: both services answer /readyz before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::{KafkaSettings, Producer};
use guardian_runtime::now_ms;
use guardian_schemas::Codec;
use guardian_schemas::records::{BudgetSpend, DeadLetter, Encounter};
use guardian_schemas::synth::Synth;
use guardian_topics::{ServiceId, TopicId, plan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::proxy::Proxy;
use crate::subject::{Role, Subject, Wiring};
use crate::supervisor::{Service, free_listen, ready_all, supervise, wait_ready};
use crate::{ChaosRunArgs, Experiment, Fault, FaultKind, Hypothesis, Planned, Report};

/// What the runner needs to reach and to name.
#[derive(Clone)]
struct Setup {
    kafka: KafkaSettings,
    encounters: String,
    spends: String,
    dead_letters: String,
    kpi_group: String,
    accountant_group: String,
    archive_prefix: String,
    /// The archive's bucket, when the experiment runs the archiver (one client for every
    /// look at it).
    archive: Option<guardian_objects::ObjectStore>,
    /// One small pool for the runner's own queries (lag samples, checks).
    pool: sqlx::PgPool,
    stack_script: PathBuf,
}

/// Runs every experiment of `args` against `subject`'s services; exit code 1 when a
/// hypothesis is violated.
pub async fn run(args: ChaosRunArgs, subject: &impl Subject) -> Result<ExitCode> {
    let mut reports = Vec::new();
    for path in &args.experiments {
        let exp = Experiment::load(path).map_err(anyhow::Error::msg)?;
        let report = run_one(&args, &exp, subject).await?;
        let stamp = report.started_at_ms;
        std::fs::create_dir_all(&args.report_dir).with_context(|| format!("creating {}", args.report_dir.display()))?;
        let base = args.report_dir.join(format!("{}-{stamp}", exp.name));
        std::fs::write(base.with_extension("json"), report.to_json())?;
        std::fs::write(base.with_extension("md"), report.to_markdown())?;
        for name in ["json", "md"] {
            let latest = args.report_dir.join(format!("{}-latest.{name}", exp.name));
            std::fs::copy(base.with_extension(name), latest)?;
        }
        println!("{}", report.to_markdown());
        println!("chaos: report {}.{{md,json}}", base.display());
        reports.push(report);
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed()).map(|r| r.experiment.as_str()).collect();
    if failed.is_empty() {
        println!("chaos: {} experiment(s) passed", reports.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("chaos: hypotheses violated in {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

async fn run_one(args: &ChaosRunArgs, exp: &Experiment, subject: &impl Subject) -> Result<Report> {
    let tag = format!("{:08x}", rand::random::<u32>());
    let prefix = format!("chaos-{}-{tag}.", exp.name);
    let mut kafka_args = args.kafka.clone();
    kafka_args.topic_prefix = prefix.clone();
    let catalogue = kafka_args.catalogue()?;
    let admin = kafka_args.admin(&ServiceId::Ops.client_for("chaos")).await?;
    let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    let view = admin.observe(&names).await?;
    admin.apply(&plan(&catalogue, &view.topics, view.brokers)).await?;
    let schema = format!("chaos_{}_{tag}", exp.name.replace('-', "_"));
    let url = guardian_pg::with_new_schema(&args.database_url, &schema).await?;
    let setup = Setup {
        kafka: kafka_args.settings(&ServiceId::Ops.client_for("chaos")),
        encounters: catalogue.topic(TopicId::Encounters)?,
        spends: catalogue.topic(TopicId::BudgetSpend)?,
        dead_letters: catalogue.topic(TopicId::DeadLetter)?,
        kpi_group: ServiceId::Kpi.group_for(&format!("chaos-{tag}")),
        archive_prefix: format!("chaos-{tag}"),
        archive: if exp.archiver { Some(args.s3.store(ARCHIVE_BUCKET)?) } else { None },
        accountant_group: ServiceId::Accountant.group_for(&format!("chaos-{tag}")),
        pool: guardian_pg::connect(&url, 2).await?,
        stack_script: args.stack_script.clone(),
    };
    // With the stack's CHAOS listener, the services reach the broker through the proxy
    // (network faults); the workload and the checks go straight to it.
    let proxy = match (&args.chaos_proxy, &args.chaos_upstream) {
        (Some(listen), Some(upstream)) => Some(Proxy::start(listen, upstream).await?),
        _ => None,
    };
    let services_bootstrap =
        args.chaos_proxy.clone().filter(|_| proxy.is_some()).unwrap_or(args.kafka.bootstrap_servers.clone());
    std::fs::create_dir_all(&args.report_dir).with_context(|| format!("creating {}", args.report_dir.display()))?;
    // A federated session: keys for the aggregator and each hospital, beside the reports.
    let hospitals: Vec<String> =
        (1..=exp.federated.as_ref().map_or(0, |f| f.hospitals)).map(|i| format!("h{i:03}")).collect();
    let keys = args.report_dir.join(format!("{}-{tag}-keys", exp.name));
    let session = format!("chaos-{tag}");
    if !hospitals.is_empty() {
        subject.keygen(&keys, &hospitals)?;
    }
    // The services' own view of Kafka: through the proxy, on the experiment's topics, with
    // 10 s consumer sessions (a killed member's partitions move on within seconds; the
    // default 45 s would dominate every recovery time measured here).
    let mut service_kafka = kafka_args.clone();
    service_kafka.bootstrap_servers = services_bootstrap;
    service_kafka.kafka_config.push(("session.timeout.ms".into(), "10000".into()));
    let wiring = Wiring {
        kafka: service_kafka,
        s3: args.s3.clone(),
        database_url: url.clone(),
        kpi_group: setup.kpi_group.clone(),
        accountant_group: setup.accountant_group.clone(),
        archive_topics: vec![setup.encounters.clone(), setup.spends.clone()],
        archive_bucket: ARCHIVE_BUCKET.into(),
        archive_prefix: setup.archive_prefix.clone(),
        registry: keys.join("registry.toml"),
        keys: keys.clone(),
        session: session.clone(),
        rounds: exp.federated.as_ref().map_or(0, |f| f.rounds),
        stage_timeout_secs: exp.federated.as_ref().map_or(0, |f| f.stage_timeout_secs),
    };
    // One process each; agents one per hospital.
    let mut roles: Vec<Role> = Vec::new();
    for name in exp.services() {
        match name {
            "kpi" => roles.push(Role::Kpi),
            "accountant" => roles.push(Role::Accountant),
            "archiver" => roles.push(Role::Archiver),
            "agent" => {
                roles.extend(hospitals.iter().enumerate().map(|(shard, h)| Role::Agent { hospital: h.clone(), shard }))
            }
            _ => roles.push(Role::Aggregator),
        }
    }
    let mut list = Vec::new();
    for role in roles {
        let label = match &role {
            Role::Agent { hospital, .. } => format!("agent {hospital}"),
            other => other.name().to_string(),
        };
        // The aggregator has no probes; every other service listens on a port of its own.
        let listen = if role == Role::Aggregator { None } else { Some(free_listen()?) };
        let launch = subject.launch(&role, &wiring, listen.as_deref().map(str::parse).transpose()?)?;
        let stem = format!("{}-{tag}-{}", exp.name, label.replace(' ', "-"));
        let config = args.report_dir.join(format!("{stem}.toml"));
        guardian_runtime::config::write_text(&config, &launch.config)?;
        let mut cli = launch.subcommand;
        cli.extend(["--config".to_string(), config.display().to_string()]);
        list.push(Service {
            name: role.name(),
            label,
            args: cli,
            listen: listen.unwrap_or_default(),
            log: args.report_dir.join(format!("{stem}.log")),
            child: None,
            crashes: Vec::new(),
            restart: role != Role::Aggregator,
            ended: None,
        });
    }
    let services = Arc::new(Mutex::new(list));
    // Everything but the aggregator now; the session starts once the agents are ready.
    for s in services.lock().expect("services").iter_mut().filter(|s| s.name != "aggregator") {
        s.spawn()?;
    }
    let started_at_ms = now_ms();
    println!("chaos: {} (seed {}): topics {prefix}*, schema {schema}", exp.name, exp.seed);

    // Before: both services ready (a service that exits on its way up is restarted, and
    // the report says so), nothing behind. The experiment's clock starts after.
    let ready_before = wait_ready(&services, Duration::from_secs(STARTUP_SECS)).await;
    // The steady state before the faults: lag 0, given up to 30 s (a service reports ready
    // before its first batch has created the offset table the lag is read from).
    let lag_before = {
        let settle = Instant::now() + Duration::from_secs(30);
        loop {
            match lag(&setup).await {
                Ok(0) => break 0,
                Ok(l) if Instant::now() >= settle => break l,
                Err(e) if Instant::now() >= settle => {
                    tracing::warn!(error = %e, "chaos: the lag before the faults could not be read");
                    break i64::MAX;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    };
    for s in services.lock().expect("services").iter_mut().filter(|s| s.name == "aggregator") {
        s.spawn()?;
    }
    let start = Instant::now();

    // Traffic, faults and the lag sampler, side by side.
    let skew = Arc::new(AtomicI64::new(0));
    let traffic_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = Producer::new(&setup.kafka)?;
    let traffic = tokio::spawn(traffic(
        exp.clone(),
        producer.clone(),
        setup.encounters.clone(),
        setup.spends.clone(),
        skew.clone(),
        sent.clone(),
    ));
    let max_lag = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (setup_kafka, done, max_lag, services) =
            (setup.clone(), traffic_done.clone(), max_lag.clone(), services.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                supervise(&services);
                if let Ok(l) = lag(&setup_kafka).await {
                    max_lag.fetch_max(l, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut faults = Vec::new();
    for p in exp.plan() {
        let due = Duration::from_millis(p.at_ms);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let at_ms = start.elapsed().as_millis() as u64;
        let detail = match inject(&p, &setup, &services, &producer, &skew, proxy.as_ref(), exp.seed ^ at_ms).await {
            Ok(d) => d,
            Err(e) => format!("injection failed: {e:#}"),
        };
        println!("chaos: {:>6.1} s {:?} {} {detail}", at_ms as f64 / 1000.0, p.kind, p.target);
        faults.push(Fault { at_ms, kind: kind_name(p.kind).into(), target: p.target.clone(), detail });
    }
    traffic.await.context("traffic task")??;
    traffic_done.store(true, Ordering::Release);
    let _ = sampler.await;
    let traffic_ms = start.elapsed().as_millis() as u64;

    // Recovery: everything applied to the end within the deadline.
    let recover_deadline = Instant::now() + Duration::from_secs(exp.recover_secs);
    let mut recovered_after = None;
    while Instant::now() < recover_deadline {
        supervise(&services);
        let archived =
            archive_state(&setup, subject).await.map(|a| a.is_none_or(|(complete, _)| complete)).unwrap_or(false);
        // A session's aggregator has ended (finished, or killed by the experiment).
        let session_over = services.lock().expect("services").iter().all(|s| s.restart || s.child.is_none());
        if !session_over {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if archived && lag(&setup).await.is_ok_and(|l| l == 0) && ready_all(&services) {
            recovered_after = Some(start.elapsed().as_millis() as u64 - traffic_ms);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lag_after = lag(&setup).await.unwrap_or(i64::MAX);
    let ready_after = ready_all(&services);
    // The outbox and dead letters settle; then judge.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checks = check(&setup, subject).await?;
    let mut crashes = Vec::new();
    for s in services.lock().expect("services").iter_mut() {
        s.stop();
        crashes.append(&mut s.crashes);
    }

    let mut hypotheses = vec![
        Hypothesis {
            name: "encounters-exactly-once".into(),
            statement: "every valid encounter in the topic is counted once in the rollups".into(),
            before: None,
            holds: checks.encounters_ok,
            detail: checks.encounters_detail.clone(),
        },
        Hypothesis {
            name: "spends-exactly-once".into(),
            statement: "the privacy ledger holds exactly the valid spends of the topic".into(),
            before: None,
            holds: checks.spends_ok,
            detail: checks.spends_detail.clone(),
        },
        Hypothesis {
            name: "dead-letters-exact".into(),
            statement: "the dead-letter topic names exactly the undecodable, invalid and future-dated records".into(),
            before: None,
            holds: checks.letters_ok,
            detail: checks.letters_detail.clone(),
        },
        Hypothesis {
            name: "lag-recovers".into(),
            statement: format!(
                "every partition is applied to its end within {} s of the traffic's end",
                exp.recover_secs
            ),
            before: Some(lag_before == 0),
            holds: recovered_after.is_some(),
            detail: match recovered_after {
                Some(ms) => format!(
                    "lag 0 after {:.1} s (max during the run: {})",
                    ms as f64 / 1000.0,
                    max_lag.load(Ordering::Acquire)
                ),
                None => format!("lag still {lag_after} record(s) at the deadline"),
            },
        },
        Hypothesis {
            name: "services-up".into(),
            statement: "every supervised service answers /readyz".into(),
            before: Some(ready_before),
            holds: ready_after,
            detail: format!(
                "{}; {} exit(s) the runner did not cause{}",
                if ready_after { "all ready" } else { "a service is not ready after recovery" },
                crashes.len(),
                if crashes.is_empty() { String::new() } else { format!(": {}", crashes.join("; ")) }
            ),
        },
    ];
    if exp.federated.is_some() {
        let (holds, detail) = match subject.replay(&kafka_args, &args.s3, &wiring.registry, &session).await {
            Ok(d) => d,
            Err(e) => (false, format!("cannot replay the session: {e:#}")),
        };
        let ended = services.lock().expect("services").iter().find_map(|s| s.ended.clone()).unwrap_or_default();
        hypotheses.push(Hypothesis {
            name: "model-equals-replay".into(),
            statement: "every model version the aggregator published equals its replay from the topics".into(),
            before: None,
            holds,
            detail: format!("{detail}; the aggregator {ended}"),
        });
    }
    if let Some(archive) = archive_state(&setup, subject).await.transpose() {
        let (holds, detail) = archive.unwrap_or_else(|e| (false, format!("cannot read the archive: {e:#}")));
        hypotheses.push(Hypothesis {
            name: "archive-complete".into(),
            statement: "every offset of the encounter and spend topics is archived in exactly one segment".into(),
            before: None,
            holds,
            detail,
        });
    }
    hypotheses.sort_by_key(|h| !h.holds);
    let kills = faults.iter().filter(|f| f.kind.starts_with("kill")).count();
    Ok(Report {
        experiment: exp.name.clone(),
        description: exp.description.clone(),
        seed: exp.seed,
        started_at_ms,
        duration_ms: start.elapsed().as_millis() as u64,
        faults,
        hypotheses,
        measurements: vec![
            ("records sent by the workload".into(), json!(sent.load(Ordering::Acquire))),
            ("valid encounters in the topic (distinct)".into(), json!(checks.encounters_in)),
            ("encounters counted in the rollups".into(), json!(checks.encounters_counted)),
            ("duplicate encounter records in the topic".into(), json!(checks.encounter_duplicates)),
            ("valid spends in the topic (distinct)".into(), json!(checks.spends_in)),
            ("ledger rows".into(), json!(checks.ledger_rows)),
            ("undecodable records in the topics".into(), json!(checks.poison_in)),
            (
                "dead letters (distinct sources / records)".into(),
                json!(format!("{} / {}", checks.letters_distinct, checks.letters_total)),
            ),
            ("faults injected (kills)".into(), json!(format!("{} ({kills})", exp.plan().len()))),
            ("service exits the runner did not cause".into(), json!(crashes.len())),
            (
                "service connections through the network-fault proxy".into(),
                json!(proxy.as_ref().map(Proxy::connections)),
            ),
            ("max lag during the run (records)".into(), json!(max_lag.load(Ordering::Acquire))),
            ("recovery after the traffic (s)".into(), json!(recovered_after.map(|ms| ms as f64 / 1000.0))),
        ],
    })
}

fn kind_name(k: FaultKind) -> &'static str {
    match k {
        FaultKind::KillService => "kill-service",
        FaultKind::KillBroker => "kill-broker",
        FaultKind::KillPostgres => "kill-postgres",
        FaultKind::KillS3 => "kill-s3",
        FaultKind::PoisonStorm => "poison-storm",
        FaultKind::ReplayDuplicates => "replay-duplicates",
        FaultKind::ClockSkew => "clock-skew",
        FaultKind::NetworkDelay => "network-delay",
        FaultKind::NetworkPartition => "network-partition",
        FaultKind::HostileRecords => "hostile-records",
    }
}

/// The bucket the supervised archiver writes to.
const ARCHIVE_BUCKET: &str = "guardian-archive";

/// How long the services may take to come up before the faults start.
const STARTUP_SECS: u64 = 120;

/// Seeded encounters (and the spends that end a hospital's rounds) at the workload's
/// rate, with poison mixed in; producer clocks follow `skew`.
async fn traffic(
    exp: Experiment,
    producer: Producer,
    encounters: String,
    spends: String,
    skew: Arc<AtomicI64>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let w = &exp.workload;
    let mut synth = Synth::new(exp.seed, w.hospitals);
    let mut rng = StdRng::seed_from_u64(exp.seed ^ 0x7ea1);
    let tick = Duration::from_millis(100);
    let (mut carry, mut poison_carry) = (0.0, 0.0);
    let start = Instant::now();
    let mut interval = tokio::time::interval(tick);
    while start.elapsed() < Duration::from_secs(exp.traffic_secs) {
        interval.tick().await;
        carry += w.encounters_per_sec * tick.as_secs_f64();
        poison_carry += w.poison_per_sec * tick.as_secs_f64();
        let n = carry as usize;
        carry -= n as f64;
        let now = now_ms() + skew.load(Ordering::Acquire);
        let mut batch: Vec<Encounter> = Vec::with_capacity(n);
        let mut spend_batch: Vec<BudgetSpend> = Vec::new();
        for _ in 0..n {
            let (e, _, s) = synth.next(now);
            batch.push(e);
            spend_batch.extend(s);
        }
        // A broker outage makes sends fail after the producer's own retries: what was not
        // acknowledged may or may not be in the topic; the hypotheses read the topic.
        // Keyed pairs collected first: the spawned future must not hold a closure over them.
        let keyed: Vec<(&str, &Encounter)> = batch.iter().map(|e| (e.hospital_id.as_str(), e)).collect();
        if let Err(e) = producer.send_batch(&encounters, keyed).await {
            tracing::warn!(error = %e, "chaos traffic: encounters not acknowledged");
        }
        let keyed: Vec<(&str, &BudgetSpend)> = spend_batch.iter().map(|s| (s.hospital_id.as_str(), s)).collect();
        if let Err(e) = producer.send_batch(&spends, keyed).await {
            tracing::warn!(error = %e, "chaos traffic: spends not acknowledged");
        }
        sent.fetch_add((batch.len() + spend_batch.len()) as u64, Ordering::AcqRel);
        let p = poison_carry as usize;
        poison_carry -= p as f64;
        for _ in 0..p {
            let topic = if rng.random_bool(0.5) { &encounters } else { &spends };
            let _ = producer.send_bytes(topic, Some(b"poison"), b"\x00not an avro record", None).await;
            sent.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(())
}

fn stack(script: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} {}: {}", script.display(), args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

async fn inject(
    p: &Planned,
    setup: &Setup,
    services: &Arc<Mutex<Vec<Service>>>,
    producer: &Producer,
    skew: &Arc<AtomicI64>,
    proxy: Option<&Proxy>,
    seed: u64,
) -> Result<String> {
    let down = Duration::from_millis(p.spec.down_ms);
    match p.kind {
        FaultKind::KillService => {
            // One of the processes of that service (agents: one per hospital), seeded.
            let (index, pid, restart) = {
                let mut all = services.lock().expect("services");
                let matching: Vec<usize> = (0..all.len()).filter(|&i| all[i].name == p.target).collect();
                anyhow::ensure!(!matching.is_empty(), "no such service");
                let index = matching[StdRng::seed_from_u64(seed).random_range(0..matching.len())];
                let s = &mut all[index];
                let pid = s.kill();
                if !s.restart && pid.is_some() {
                    s.ended = Some("killed mid-session".into());
                }
                (index, pid, s.restart)
            };
            let Some(pid) = pid else { return Ok("not running any more: nothing to kill".into()) };
            if !restart {
                return Ok(format!("SIGKILL pid {pid}: not restarted (a node failure)"));
            }
            tokio::time::sleep(down).await;
            let (label, new_pid) = {
                let mut all = services.lock().expect("services");
                let s = &mut all[index];
                (s.label.clone(), s.spawn()?)
            };
            Ok(format!("{label}: SIGKILL pid {pid}, restarted after {} ms as pid {new_pid}", p.spec.down_ms))
        }
        FaultKind::KillBroker | FaultKind::KillPostgres | FaultKind::KillS3 => {
            let component = match p.kind {
                FaultKind::KillBroker => "kafka-a",
                FaultKind::KillPostgres => "postgres",
                _ => "s3",
            };
            let script = setup.stack_script.clone();
            let t = Instant::now();
            tokio::task::spawn_blocking({
                let script = script.clone();
                move || stack(&script, &["kill", component])
            })
            .await??;
            tokio::time::sleep(down).await;
            tokio::task::spawn_blocking(move || stack(&script, &["up"])).await??;
            Ok(format!("{component} killed, restarted after {:.1} s", t.elapsed().as_secs_f64()))
        }
        FaultKind::PoisonStorm => {
            for i in 0..p.spec.records {
                let topic = if i % 2 == 0 { &setup.encounters } else { &setup.spends };
                producer.send_bytes(topic, Some(b"storm"), format!("\x00poison {i}").as_bytes(), None).await?;
            }
            Ok(format!("{} undecodable records into the encounter and spend topics", p.spec.records))
        }
        FaultKind::HostileRecords => {
            let mut synth = Synth::new(seed, 3);
            let codec = Codec::embedded();
            let mut rng = StdRng::seed_from_u64(seed);
            for i in 0..p.spec.records {
                let (mut e, _, _) = synth.next(now_ms());
                let mut s = guardian_schemas::records::BudgetSpend {
                    event_id: format!("hostile-spend-{seed}-{i}"),
                    hospital_id: "h002".into(),
                    session_id: "hostile".into(),
                    round: i64::from(i),
                    mechanism: guardian_schemas::records::Mechanism::SampledGaussian,
                    sampling_rate: 0.01,
                    noise_multiplier: 1.1,
                    steps: 1,
                    delta: 1e-5,
                    occurred_at: now_ms(),
                };
                e.event_id = format!("hostile-{seed}-{i}");
                let (topic, key, bytes) = match i % 7 {
                    0 => {
                        e.soap_sections_completed = e.soap_sections_expected + 1;
                        (&setup.encounters, e.hospital_id.clone(), codec.encode(&e)?)
                    }
                    1 => {
                        s.sampling_rate = 2.0;
                        (&setup.spends, s.hospital_id.clone(), codec.encode(&s)?)
                    }
                    2 => {
                        e.hospital_id = "h".repeat(1000);
                        (&setup.encounters, "h001".to_string(), codec.encode(&e)?)
                    }
                    3 => {
                        e.generation_ms = i64::MAX;
                        (&setup.encounters, e.hospital_id.clone(), codec.encode(&e)?)
                    }
                    4 => {
                        // A day ahead, naming h001 (written by anyone).
                        e.hospital_id = "h001".into();
                        e.occurred_at = now_ms() + 86_400_000;
                        (&setup.encounters, "h001".to_string(), codec.encode(&e)?)
                    }
                    5 => {
                        s.hospital_id = "h001".into();
                        s.occurred_at = now_ms() + 86_400_000;
                        (&setup.spends, "h001".to_string(), codec.encode(&s)?)
                    }
                    _ => {
                        let big: Vec<u8> = (0..900_000).map(|_| rng.random()).collect();
                        let topic = if i % 2 == 0 { &setup.encounters } else { &setup.spends };
                        (topic, "h003".to_string(), big)
                    }
                };
                producer.send_bytes(topic, Some(key.as_bytes()), &bytes, None).await?;
            }
            Ok(format!(
                "{} hostile records (invalid, absurd, future-dated about another hospital, oversized)",
                p.spec.records
            ))
        }
        FaultKind::ReplayDuplicates => {
            let records = guardian_kafka::reader::read_range(
                &setup.kafka,
                "chaos-replay",
                &[&setup.encounters, &setup.spends],
                None,
            )
            .await?;
            if records.is_empty() {
                return Ok("nothing to replay yet".into());
            }
            let mut rng = StdRng::seed_from_u64(seed);
            let from = rng.random_range(0..records.len());
            let len = rng.random_range(1..=500.min(records.len() - from));
            let mut window: Vec<_> = records[from..from + len].iter().collect();
            // Reordered as well as duplicated.
            for i in (1..window.len()).rev() {
                window.swap(i, rng.random_range(0..=i));
            }
            for r in &window {
                producer.send_bytes(&r.topic, r.key.as_deref(), &r.payload, None).await?;
            }
            Ok(format!("{len} records sent again, shuffled"))
        }
        FaultKind::NetworkDelay | FaultKind::NetworkPartition => {
            let proxy = proxy.context(
                "no network path to fault: start the stack with this version of stack.sh (kafka-a's CHAOS listener)",
            )?;
            if p.kind == FaultKind::NetworkDelay {
                let (latency, jitter) = (p.spec.latency_ms, p.spec.jitter_ms);
                proxy.set_delay(Duration::from_millis(latency), Duration::from_millis(jitter));
                tokio::time::sleep(down).await;
                proxy.set_delay(Duration::ZERO, Duration::ZERO);
                Ok(format!(
                    "{latency} ± {jitter} ms on every packet between the services and the broker for {} ms",
                    p.spec.down_ms
                ))
            } else {
                proxy.set_partitioned(true);
                tokio::time::sleep(down).await;
                proxy.set_partitioned(false);
                Ok(format!("services cut off from the broker for {} ms, then healed", p.spec.down_ms))
            }
        }
        FaultKind::ClockSkew => {
            skew.store(p.spec.skew_ms, Ordering::Release);
            tokio::time::sleep(down).await;
            skew.store(0, Ordering::Release);
            Ok(format!("producer clocks {} ms off for {} ms", p.spec.skew_ms, p.spec.down_ms))
        }
    }
}

/// Whether the archive covers every offset of the encounter and spend topics exactly
/// once (segments contiguous from the low to the high watermark of each partition), and
/// what it holds. `None` without an archiver.
async fn archive_state(setup: &Setup, subject: &impl Subject) -> Result<Option<(bool, String)>> {
    let Some(store) = &setup.archive else { return Ok(None) };
    let mut problems = Vec::new();
    let (mut segments, mut records) = (0usize, 0u64);
    for topic in [&setup.encounters, &setup.spends] {
        let marks = guardian_kafka::reader::topic_watermarks(&setup.kafka, "chaos-archive", &[topic]).await?;
        let archived = subject.archived(store, &setup.archive_prefix, topic).await?;
        segments += archived.len();
        for ((_, p), (lo, hi)) in marks {
            let mut mine: Vec<_> = archived.iter().filter(|s| s.partition == p).collect();
            mine.sort_by_key(|s| s.first_offset);
            let mut next = lo;
            for s in &mine {
                if s.first_offset != next {
                    problems.push(format!("{topic}/{p}: segment at {} where {next} was due", s.first_offset));
                }
                next = s.last_offset + 1;
                records += s.records;
            }
            if next != hi {
                problems.push(format!("{topic}/{p}: archived up to {next}, the topic ends at {hi}"));
            }
        }
    }
    let detail = if problems.is_empty() {
        format!("{segments} segments, {records} records, every offset once")
    } else {
        format!("{segments} segments, {records} records; {}", problems.join("; "))
    };
    Ok(Some((problems.is_empty(), detail)))
}

/// Records not yet applied by either group (end offsets minus the offsets stored with the
/// effects in PostgreSQL).
async fn lag(setup: &Setup) -> Result<i64> {
    let mut total = 0;
    for (group, topic) in [(&setup.kpi_group, &setup.encounters), (&setup.accountant_group, &setup.spends)] {
        let marks = guardian_kafka::reader::topic_watermarks(&setup.kafka, "chaos-lag", &[topic]).await?;
        total += guardian_pg::offsets::lag(&setup.pool, group, &marks).await?.values().sum::<i64>();
    }
    Ok(total)
}

#[derive(Debug, Default)]
struct Checks {
    encounters_ok: bool,
    encounters_detail: String,
    encounters_in: usize,
    encounters_counted: i64,
    encounter_duplicates: usize,
    spends_ok: bool,
    spends_detail: String,
    spends_in: usize,
    ledger_rows: usize,
    letters_ok: bool,
    letters_detail: String,
    poison_in: usize,
    letters_distinct: usize,
    letters_total: usize,
}

/// Whether an event time is within the services' default skew of its record's timestamp
/// (later ones are dead-lettered as `future`: the poison of a lying clock).
fn on_time(event_ms: i64, record_ms: Option<i64>) -> bool {
    guardian_kafka::event_time::check(event_ms, record_ms, guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS).is_ok()
}

async fn check(setup: &Setup, subject: &impl Subject) -> Result<Checks> {
    let codec = Codec::embedded();
    let mut c = Checks::default();
    let read = |topics: Vec<String>| {
        let kafka = setup.kafka.clone();
        async move {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            guardian_kafka::reader::read_range(&kafka, "chaos-check", &refs, None).await
        }
    };
    let mut poison: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    // Encounters: the topic is the truth.
    let mut by_hospital: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut records = 0usize;
    for m in read(vec![setup.encounters.clone()]).await? {
        match codec.decode::<Encounter>(&m.payload) {
            Ok(e) if guardian_schemas::validate::encounter(&e).is_ok() && on_time(e.occurred_at, m.timestamp) => {
                records += 1;
                by_hospital.entry(e.hospital_id.clone()).or_default().insert(e.event_id);
            }
            _ => {
                poison.insert((m.topic.clone(), m.partition, m.offset));
            }
        }
    }
    let expected: BTreeMap<String, i64> = by_hospital.iter().map(|(h, ids)| (h.clone(), ids.len() as i64)).collect();
    c.encounters_in = expected.values().sum::<i64>() as usize;
    c.encounter_duplicates = records - c.encounters_in;
    let counted = subject.counted(&setup.pool).await?;
    let (seen, days) = (counted.seen, counted.in_windows);
    c.encounters_counted = days.values().sum();
    c.encounters_ok = seen == expected && days == expected;
    c.encounters_detail = format!(
        "{} distinct in the topic ({} duplicate records), {} seen, {} in the day windows",
        c.encounters_in,
        c.encounter_duplicates,
        seen.values().sum::<i64>(),
        c.encounters_counted
    );
    // Spends.
    let mut spend_ids: BTreeSet<String> = BTreeSet::new();
    for m in read(vec![setup.spends.clone()]).await? {
        match codec.decode::<BudgetSpend>(&m.payload) {
            Ok(s) if guardian_schemas::validate::spend(&s).is_ok() && on_time(s.occurred_at, m.timestamp) => {
                spend_ids.insert(s.event_id);
            }
            _ => {
                poison.insert((m.topic.clone(), m.partition, m.offset));
            }
        }
    }
    let ledger = counted.ledger;
    let ledger_set: BTreeSet<String> = ledger.iter().cloned().collect();
    c.spends_in = spend_ids.len();
    c.ledger_rows = ledger.len();
    c.spends_ok = ledger_set == spend_ids && ledger.len() == ledger_set.len();
    c.spends_detail = format!(
        "{} distinct valid spends in the topic, {} ledger rows; missing {}, unexpected {}",
        c.spends_in,
        c.ledger_rows,
        spend_ids.difference(&ledger_set).count(),
        ledger_set.difference(&spend_ids).count()
    );
    // Dead letters of this run's groups.
    let mut letters: Vec<(String, i32, i64)> = Vec::new();
    for m in read(vec![setup.dead_letters.clone()]).await? {
        if let Ok(d) = codec.decode::<DeadLetter>(&m.payload)
            && (d.consumer_group == setup.kpi_group || d.consumer_group == setup.accountant_group)
        {
            letters.push((d.source_topic, d.source_partition, d.source_offset));
        }
    }
    let distinct: BTreeSet<(String, i32, i64)> = letters.iter().cloned().collect();
    c.poison_in = poison.len();
    c.letters_total = letters.len();
    c.letters_distinct = distinct.len();
    c.letters_ok = distinct == poison;
    c.letters_detail = format!(
        "{} undecodable records, {} dead-lettered ({} records: at least once); missing {}, unexpected {}",
        poison.len(),
        distinct.len(),
        letters.len(),
        poison.difference(&distinct).count(),
        distinct.difference(&poison).count()
    );
    Ok(c)
}
