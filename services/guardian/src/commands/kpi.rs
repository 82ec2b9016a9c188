//! `guardian kpi`: checks its topics, then runs the KPI rollup service with /metrics,
//! /healthz and /readyz until SIGTERM.

use std::process::ExitCode;

use anyhow::{Context, Result};
use guardian_runtime::Shutdown;
use guardian_runtime::http::{Readiness, install_metrics, ops_router, serve};
use guardian_topics::TopicId;

use crate::cli::KpiArgs;
use crate::common;

pub async fn run(args: KpiArgs) -> Result<ExitCode> {
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::default();
    let bound = serve(args.listen, ops_router(install_metrics(), readiness.clone()), shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
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
    };
    tracing::info!(metrics = %format!("http://{bound}/metrics"), encounters = %config.encounters_topic, "kpi rollup starting");
    readiness.set_ready(true);
    guardian_kpi::run(config, pool, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
