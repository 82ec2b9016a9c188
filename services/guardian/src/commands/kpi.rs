//! `guardian kpi`: checks its topics, then runs the KPI rollup service with /metrics,
//! /healthz and /readyz until SIGTERM.

use std::process::ExitCode;

use anyhow::{Context, Result};
use guardian_topics::TopicId;

use crate::cli::KpiArgs;
use crate::common;

pub async fn run(args: KpiArgs) -> Result<ExitCode> {
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let admin = common::admin(&args.kafka).await?;
    let needed = [TopicId::Encounters, TopicId::SloEvents, TopicId::KpiRollups, TopicId::DeadLetter];
    common::require_topics(&admin, &catalogue, &needed).await?;
    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    let config = guardian_kpi::Config {
        kafka: common::settings(&args.kafka, "kpi-rollup"),
        group: args.group,
        encounters_topic: catalogue.topic(TopicId::Encounters)?,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        rollups_topic: catalogue.topic(TopicId::KpiRollups)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        lateness_ms: args.lateness_secs as i64 * 1000,
        signers: common::signers(args.signers.as_deref())?,
        dedup_cache_events: args.dedup_cache_events,
        dedup_horizon_days: args.dedup_horizon_days,
    };
    tracing::info!(metrics = %format!("http://{bound}/metrics"), encounters = %config.encounters_topic, "kpi rollup starting");
    readiness.set_ready(true);
    guardian_kpi::run(config, pool, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn pilot(cmd: crate::cli::PilotCommand) -> Result<ExitCode> {
    use crate::cli::PilotCommand;
    match cmd {
        PilotCommand::Registry { database_url, file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let hospitals = guardian_kpi::readiness::parse_registry(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let pool = guardian_pg::connect(&database_url, 1).await?;
            guardian_kpi::readiness::load_registry(&pool, &hospitals).await?;
            println!("registry: {} hospitals loaded from {}", hospitals.len(), file.display());
            Ok(ExitCode::SUCCESS)
        }
        PilotCommand::Readiness { database_url, from, to, json } => {
            let day = 86_400_000;
            let today = guardian_runtime::now_ms().div_euclid(day) * day;
            let from = from
                .as_deref()
                .map(guardian_runtime::time::parse_day)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or(today - 7 * day);
            let to = to
                .as_deref()
                .map(guardian_runtime::time::parse_day)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or(today + day);
            let pool = guardian_pg::connect(&database_url, 1).await?;
            guardian_kpi::readiness::migrate(&pool).await?;
            let list = guardian_kpi::readiness::readiness(&pool, from, to).await?;
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0));
            if !json {
                println!(
                    "| hospital | phase | encounters | completeness | p95 generation | satisfaction | uptime | ready |"
                );
                println!("|---|---|---:|---:|---:|---:|---:|---|");
            }
            for r in &list {
                if json {
                    println!("{}", serde_json::to_string(r)?);
                    continue;
                }
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.hospital_id,
                    r.phase.as_deref().unwrap_or("(not registered)"),
                    r.encounters,
                    pct(r.completeness),
                    r.generation_p95_ms.map_or("-".into(), |v| format!("{:.0} ms", v)),
                    r.satisfaction.map_or("-".into(), |v| format!("{v:.2}")),
                    pct(r.uptime),
                    if r.ready() { "yes".to_string() } else { format!("no: {}", r.failing.join(", ")) }
                );
            }
            Ok(if list.iter().all(|r| r.ready()) { ExitCode::SUCCESS } else { ExitCode::from(5) })
        }
    }
}

pub async fn slo(args: crate::cli::SloArgs) -> Result<ExitCode> {
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let admin = common::admin(&args.kafka).await?;
    common::require_topics(&admin, &catalogue, &[TopicId::SloEvents]).await?;
    let config = guardian_slo::Config {
        kafka: common::settings(&args.kafka, "slo-monitor"),
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: i64::from(args.period_days.max(1)) * 86_400_000,
        publish_every: std::time::Duration::from_secs(args.publish_secs.max(1)),
    };
    tracing::info!(metrics = %format!("http://{bound}/metrics"), topic = %config.slo_topic, "slo monitor starting");
    guardian_slo::run(config, shutdown, || readiness.set_ready(true)).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn dashboard(args: crate::cli::DashboardArgs) -> Result<ExitCode> {
    let config = args.validate()?;
    let shutdown = guardian_runtime::Shutdown::on_signals();
    let k = config.k;
    guardian_dashboard::serve(config, shutdown, |bound| println!("dashboard: http://{bound}/ (k = {k})")).await?;
    Ok(ExitCode::SUCCESS)
}
