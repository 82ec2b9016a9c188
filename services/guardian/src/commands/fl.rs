//! `guardian fl ...`: federated sessions (the aggregator), the hospital agent, keys, model
//! versions and the replay check.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use guardian_federated::config::{plan, plan_json};
use guardian_federated::coordinator::RoundOutcome;
use guardian_federated::registry::{self, Registry};
use guardian_federated::replay::replay_session;
use guardian_federated::service::{model_versions, topics};
use guardian_federated::wire;
use guardian_kafka::Producer;
use guardian_kafka::reader::read_range;
use guardian_runtime::Shutdown;
use guardian_schemas::records::{RoundControl, RoundControlKind};
use guardian_topics::ServiceId;

use crate::cli::{FlAgentArgs, FlCommand, FlQueryArgs, FlStartArgs};

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
            let (plan, _) = plan(&args.resolve()?, None)?;
            println!("{}", plan_json(&plan));
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::DemoData { hospitals, shard, out } => {
            let csv = guardian_federated::service::demo_shard_csv(hospitals, shard)?;
            std::fs::write(&out, csv).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote shard {shard} of {hospitals} to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Start(args) => start(args).await,
        FlCommand::Agent(args) => agent(args).await,
        FlCommand::Status(args) => status(args, false).await,
        FlCommand::List(args) => status(args, true).await,
        FlCommand::Stop { kafka, session } => {
            let t = topics(&kafka, ServiceId::Ops).await?;
            let producer = Producer::new(&kafka.settings(&ServiceId::Ops.client_for("fl")))?;
            producer.send(&t.rounds, &session, &wire::control(&session, 0, RoundControlKind::Stop)).await?;
            producer.flush(Duration::from_secs(10)).await?;
            println!("asked session {session} to stop after its current round");
            Ok(ExitCode::SUCCESS)
        }
        FlCommand::Export { kafka, s3, session, version, out } => {
            let t = topics(&kafka, ServiceId::Ops).await?;
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
            let t = topics(&kafka, ServiceId::Ops).await?;
            let registry = Registry::load(&registry)?;
            let settings = kafka.settings(&ServiceId::Ops.client_for("fl-replay"));
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

async fn start(args: FlStartArgs) -> Result<ExitCode> {
    let shutdown = Shutdown::on_signals();
    let (plan, outcomes) = guardian_federated::service::aggregate(args, &shutdown).await?;
    println!("session {}: {} rounds", plan.session, outcomes.len());
    println!("| round | outcome | version | survivors | dropped | accuracy | misbehaved |");
    println!("|---:|---|---:|---|---|---:|---|");
    let mut finished = 0;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            RoundOutcome::Finished { version, survivors, dropped, evicted, accuracy, .. } => {
                finished += 1;
                println!(
                    "| {} | finished | {version} | {} | {} | {} | {} |",
                    i + 1,
                    survivors.join(","),
                    dropped.join(","),
                    accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                    evicted.join("; ")
                );
            }
            RoundOutcome::Failed { reason, named } => {
                println!("| {} | failed: {reason} | | | | | {} |", i + 1, named.join(","))
            }
        }
    }
    Ok(if finished > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn agent(args: FlAgentArgs) -> Result<ExitCode> {
    let shutdown = Shutdown::on_signals();
    let (hospital, report) = guardian_federated::service::agent(args, &shutdown).await?;
    println!(
        "agent {hospital}: joined rounds {:?}, refused {:?}, epsilon spent {:.3}",
        report.rounds_joined,
        report.rounds_refused.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        report.epsilon_spent
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(args: FlQueryArgs, versions_only: bool) -> Result<ExitCode> {
    let t = topics(&args.kafka, ServiceId::Ops).await?;
    let codec = guardian_schemas::Codec::embedded();
    let settings = args.kafka.settings(&ServiceId::Ops.client_for("fl"));
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
