//! The dashboard: the one page a person opens, its JSON API, and the hospital API.
//!
//! It never combines PHI: cross-hospital figures come from the KPI rollups
//! (`guardian_rollups`), grouped by a registry attribute, and a group of fewer than k
//! hospitals is suppressed before it leaves the database; a hospital's own rows are read
//! as its tenant role, so row-level security decides. Other services' state comes from
//! what they publish: privacy budgets from `privacy.status`, federated sessions from
//! `fl.models` / `fl.rounds`, SLO status from `slo.events` ([`follow`]).
//!
//! How it fails: a database error answers that request with 500 and the next request
//! tries again; a lost broker leaves the followed views as they were until it is back.

pub mod config;
pub mod error;
pub mod follow;
pub mod server;
pub mod tokens;
pub mod view;

use std::sync::Arc;

pub use config::{DashboardArgs, DashboardConfig};
pub use error::DashboardError;
use guardian_runtime::Shutdown;
use guardian_topics::{ServiceId, TopicId};

/// Runs the dashboard until `shutdown`: connects, starts the followers, serves the page,
/// the API and the ops endpoints on `config.listen`, and calls `started` with the bound
/// address once it answers.
pub async fn serve(
    config: DashboardConfig,
    shutdown: Shutdown,
    started: impl FnOnce(std::net::SocketAddr),
) -> Result<(), DashboardError> {
    let catalogue = config.kafka.catalogue()?;
    config.kafka.use_wire_format(&catalogue).await?;
    let pool = guardian_pg::connect(&config.database_url, 4).await?;
    // The registry table once here, not in every request.
    guardian_rollups::readiness::migrate(&pool).await?;
    let credentials = match &config.tokens {
        Some(path) => tokens::Credentials::load(path)?,
        None => Default::default(),
    };
    let state = server::DashboardState {
        pool,
        k: config.k,
        days: config.days,
        credentials: Arc::new(credentials),
        fl: Default::default(),
        budgets: Default::default(),
        slo: Default::default(),
        slo_period_ms: config.slo_period_ms,
    };
    let settings = config.kafka.settings(&ServiceId::Dashboard.client_id());
    tokio::spawn(follow::federated(
        settings.clone(),
        catalogue.topic(TopicId::ModelVersions)?,
        catalogue.topic(TopicId::RoundControl)?,
        state.fl.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow::budgets(
        settings.clone(),
        catalogue.topic(TopicId::BudgetStatus)?,
        state.budgets.clone(),
        shutdown.clone(),
    ));
    let source = guardian_burnrate::Source {
        kafka: settings,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: config.slo_period_ms,
        publish_every: std::time::Duration::from_secs(5),
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    tokio::spawn(follow::slo(source, state.slo.clone(), shutdown.clone()));
    let ops = guardian_runtime::http::serve_ops(
        ServiceId::Dashboard.name(),
        config.listen,
        Some(server::router(state)),
        &shutdown,
    )
    .await?;
    started(ops.bound);
    ops.readiness.set_ready(true);
    shutdown.wait().await;
    Ok(())
}
