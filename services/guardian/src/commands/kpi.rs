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

fn day_ms(day: &str) -> Result<i64> {
    let parts: Vec<&str> = day.split('-').collect();
    let bad = || anyhow::anyhow!("{day:?} is not a YYYY-MM-DD date");
    let [y, m, d] = parts.as_slice() else { return Err(bad()) };
    let (y, m, d): (i64, i64, i64) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days since the epoch (civil-from-days inverse, proleptic Gregorian).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400_000)
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
            let today = guardian_federated::now_ms().div_euclid(day) * day;
            let from = from.as_deref().map(day_ms).transpose()?.unwrap_or(today - 7 * day);
            let to = to.as_deref().map(day_ms).transpose()?.unwrap_or(today + day);
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

#[derive(Debug, serde::Deserialize)]
struct Query {
    by: Option<String>,
}

#[derive(Clone)]
struct DashboardState {
    pool: sqlx::PgPool,
    k: usize,
    days: i64,
    /// SHA-256 (hex) of each hospital API token → the tenant role it reads as.
    tokens: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    /// Federated sessions, followed from the model and round-control topics.
    fl: std::sync::Arc<std::sync::Mutex<guardian_kpi::dashboard::FlView>>,
    /// SLO counts, followed from the SLO topic.
    slo: std::sync::Arc<std::sync::Mutex<guardian_slo::Monitor>>,
    slo_period_ms: i64,
}

/// A hospital's own day windows, read as its tenant role: row-level security leaves only
/// its rows.
const HOSPITAL_DAYS_SQL: &str = "SELECT hospital_id, window_start_ms, encounters, soap_expected, soap_completed,
        ratings, rating_sum, slo_good, slo_total, generation_p95
   FROM kpi_rollups WHERE window_size = 'DAY' ORDER BY hospital_id, window_start_ms";

/// The tokens file: `[tokens]` "<sha-256 hex>" = "<tenant role>".
fn load_tokens(path: &std::path::Path) -> Result<std::collections::BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        tokens: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File = toml::from_str(&text).with_context(|| format!("{}: not a tokens file", path.display()))?;
    for (digest, role) in &file.tokens {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("{}: {digest:?} is not a SHA-256 in hex", path.display());
        }
        if !guardian_pg::tenancy::valid_role(role) {
            anyhow::bail!("{}: {role:?} is not a role name", path.display());
        }
    }
    Ok(file.tokens.into_iter().map(|(d, r)| (d.to_ascii_lowercase(), r)).collect())
}

/// Hospital comparison, daily trend and privacy budgets.
type Overview = (
    Vec<guardian_kpi::readiness::Readiness>,
    Vec<guardian_kpi::dashboard::DayTotal>,
    Vec<guardian_kpi::dashboard::BudgetRow>,
);

impl DashboardState {
    /// The days shown: the last `days` whole UTC days up to tomorrow.
    fn period(&self) -> (i64, i64) {
        let day = 86_400_000;
        let to = guardian_federated::now_ms().div_euclid(day) * day + day;
        (to - self.days * day, to)
    }

    async fn overview(&self) -> Result<Overview, String> {
        let (from, to) = self.period();
        let db = |e: sqlx::Error| format!("database: {e}");
        let comparison = guardian_kpi::readiness::readiness(&self.pool, from, to).await.map_err(db)?;
        let trend = guardian_kpi::dashboard::trend(&self.pool, self.k, from, to).await.map_err(db)?;
        let budgets = guardian_kpi::dashboard::budgets(&self.pool).await.map_err(db)?;
        Ok((comparison, trend, budgets))
    }

    /// Federated sessions and the SLO status, as followed from the topics.
    fn operations(&self) -> (Vec<guardian_kpi::dashboard::FlSession>, Vec<guardian_slo::SloStatus>) {
        let sessions = self.fl.lock().unwrap_or_else(|p| p.into_inner()).sessions();
        let slos =
            self.slo.lock().unwrap_or_else(|p| p.into_inner()).status(guardian_federated::now_ms(), self.slo_period_ms);
        (sessions, slos)
    }

    /// The tenant role of the request's bearer token, if it is a known one.
    fn tenant(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?;
        self.tokens.get(&super::db::token_digest(token)).cloned()
    }

    async fn groups(&self, q: &Query) -> Result<(String, Vec<guardian_kpi::dashboard::Group>), String> {
        let by = q.by.clone().unwrap_or_else(|| "region".into());
        if !guardian_kpi::dashboard::GROUPINGS.contains(&by.as_str()) {
            return Err(format!("by must be one of {}", guardian_kpi::dashboard::GROUPINGS.join(", ")));
        }
        let (from, to) = self.period();
        guardian_kpi::dashboard::aggregates(&self.pool, &by, self.k, from, to)
            .await
            .map(|g| (by, g))
            .map_err(|e| format!("database: {e}"))
    }
}

pub async fn dashboard(args: crate::cli::DashboardArgs) -> Result<ExitCode> {
    use axum::extract::{Query as Q, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    // The registry table once here, not in every request.
    guardian_kpi::readiness::migrate(&pool).await?;
    let tokens = match &args.tokens {
        Some(path) => load_tokens(path)?,
        None => Default::default(),
    };
    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let state = DashboardState {
        pool,
        k: args.k as usize,
        days: i64::from(args.days.max(1)),
        tokens: std::sync::Arc::new(tokens),
        fl: Default::default(),
        slo: Default::default(),
        slo_period_ms: i64::from(args.slo_period_days.max(1)) * 86_400_000,
    };
    let (fl, slo) = (state.fl.clone(), state.slo.clone());
    let pages = axum::Router::new()
        .route(
            "/",
            get(|State(s): State<DashboardState>, Q(q): Q<Query>| async move {
                match s.groups(&q).await {
                    Ok((by, g)) => match s.overview().await {
                        Ok((comparison, trend, budgets)) => {
                            let (sessions, slos) = s.operations();
                            let extra = guardian_kpi::dashboard::overview_html(&comparison, &trend, &budgets)
                                + &guardian_kpi::dashboard::operations_html(&sessions, &slos);
                            axum::response::Html(guardian_kpi::dashboard::html(&by, s.k, &g, &extra)).into_response()
                        }
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                    },
                    Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
                }
            }),
        )
        .route(
            "/api/aggregates",
            get(|State(s): State<DashboardState>, Q(q): Q<Query>| async move {
                match s.groups(&q).await {
                    Ok((by, g)) => axum::Json(serde_json::json!({"by": by, "k": s.k, "groups": g})).into_response(),
                    Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
                }
            }),
        )
        .route(
            "/api/overview",
            get(|State(s): State<DashboardState>| async move {
                match s.overview().await {
                    Ok((comparison, trend, budgets)) => axum::Json(serde_json::json!({
                        "hospitals": comparison, "trend": trend, "budgets": budgets
                    }))
                    .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }),
        )
        .route(
            "/api/operations",
            get(|State(s): State<DashboardState>| async move {
                let (sessions, slos) = s.operations();
                axum::Json(serde_json::json!({ "fl_sessions": sessions, "slo": slos }))
            }),
        )
        .route(
            "/api/aggregates.csv",
            get(|State(s): State<DashboardState>, Q(q): Q<Query>| async move {
                match s.groups(&q).await {
                    Ok((_, g)) => {
                        ([(header::CONTENT_TYPE, "text/csv")], guardian_kpi::dashboard::csv(&g)).into_response()
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
                }
            }),
        )
        .route(
            "/api/hospital",
            get(|State(s): State<DashboardState>, headers: axum::http::HeaderMap| async move {
                let Some(role) = s.tenant(&headers) else {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "a hospital API token is required (Authorization: Bearer <token>)",
                    )
                        .into_response();
                };
                match guardian_pg::tenancy::query_as_tenant(&s.pool, &role, HOSPITAL_DAYS_SQL).await {
                    Ok(rows) => {
                        use sqlx::Row;
                        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
                        let days: Vec<serde_json::Value> = rows
                            .iter()
                            .map(|r| {
                                serde_json::json!({
                                    "hospital": r.get::<String, _>(0),
                                    "day_start_ms": r.get::<i64, _>(1),
                                    "encounters": r.get::<i64, _>(2),
                                    "completeness": ratio(r.get(4), r.get(3)),
                                    "satisfaction": ratio(r.get(6), r.get(5)),
                                    "uptime": ratio(r.get(7), r.get(8)),
                                    "generation_p95_ms": r.get::<Option<f64>, _>(9),
                                })
                            })
                            .collect();
                        axum::Json(serde_json::json!({ "days": days })).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}")).into_response(),
                }
            }),
        )
        .with_state(state);
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, Some(pages)).await?;
    let settings = common::settings(&args.kafka, "dashboard");
    let fl_topics = [catalogue.topic(TopicId::ModelVersions)?, catalogue.topic(TopicId::RoundControl)?];
    tokio::spawn(follow_fl(settings.clone(), fl_topics, fl, shutdown.clone()));
    let slo_config = guardian_slo::Config {
        kafka: settings,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: i64::from(args.slo_period_days.max(1)) * 86_400_000,
        publish_every: std::time::Duration::from_secs(5),
    };
    let follow_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let shutdown = follow_shutdown;
        // Kept going while the broker is away: the page shows what was read so far.
        while !shutdown.is_triggered() {
            // The topic is read again from the start of the period: counts start afresh.
            *slo.lock().unwrap_or_else(|p| p.into_inner()) = guardian_slo::Monitor::default();
            if let Err(e) = guardian_slo::follow(&slo_config, &slo, shutdown.clone(), || {}, |_| {}).await {
                tracing::warn!(error = %e, "following the SLO topic failed; trying again in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    });
    println!("dashboard: http://{bound}/ (k = {})", args.k);
    readiness.set_ready(true);
    shutdown.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// Follows the model and round-control topics into `view` until `shutdown`, starting
/// again (from the beginning: the view is idempotent) after an error.
async fn follow_fl(
    settings: guardian_kafka::KafkaSettings,
    topics: [String; 2],
    view: std::sync::Arc<std::sync::Mutex<guardian_kpi::dashboard::FlView>>,
    shutdown: guardian_runtime::Shutdown,
) {
    use guardian_federated::reader::{Start, Tail};
    use guardian_schemas::records::{ModelVersion, RoundControl};
    let codec = guardian_schemas::Codec::embedded();
    while !shutdown.is_triggered() {
        let tail = match Tail::open(&settings, "dashboard-fl", &[&topics[0], &topics[1]], Start::Beginning) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "following the federated topics failed; trying again in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        while !shutdown.is_triggered() {
            match tail.next(std::time::Duration::from_millis(500)).await {
                Ok(Some(m)) if m.topic == topics[0] => {
                    if let Ok(v) = codec.decode::<ModelVersion>(&m.payload) {
                        view.lock().unwrap_or_else(|p| p.into_inner()).model(&v);
                    }
                }
                Ok(Some(m)) => {
                    if let Ok(c) = codec.decode::<RoundControl>(&m.payload) {
                        view.lock().unwrap_or_else(|p| p.into_inner()).control(&c);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the federated topics failed; starting again in 5 s");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    break;
                }
            }
        }
    }
}
