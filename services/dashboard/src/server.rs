//! The dashboard's HTTP side: the page, the JSON API and the hospital API.
//!
//! - `/` and `/api/aggregates[.csv]`: k-anonymous aggregates by a registry attribute;
//! - `/api/overview`: hospital comparison, daily trend (k-anonymous), privacy budgets;
//! - `/api/operations`: federated sessions and SLO status;
//! - `/api/hospital`: a hospital's own days, answered as its tenant role (bearer token).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use guardian_burnrate::{Monitor, SloStatus};
use guardian_rollups::readiness::{self, Readiness};
use guardian_rollups::tables::{self, DayTotal, GROUPINGS, Group, HOSPITAL_DAYS_SQL};
use serde_json::json;
use sqlx::Row;

use crate::view::{self, BudgetRow, BudgetsView, FlSession, FlView};

#[derive(Debug, Clone)]
pub struct DashboardState {
    pub pool: sqlx::PgPool,
    pub k: usize,
    pub days: i64,
    /// SHA-256 (hex) of each hospital API token → the tenant role it reads as.
    pub tokens: Arc<BTreeMap<String, String>>,
    /// Federated sessions, followed from the model and round-control topics.
    pub fl: Arc<Mutex<FlView>>,
    /// Privacy budgets, followed from the budget status topic.
    pub budgets: Arc<Mutex<BudgetsView>>,
    /// SLO counts, followed from the SLO topic.
    pub slo: Arc<Mutex<Monitor>>,
    pub slo_period_ms: i64,
}

#[derive(Debug, serde::Deserialize)]
pub struct Grouping {
    by: Option<String>,
}

/// Hospital comparison, daily trend and privacy budgets.
type Overview = (Vec<Readiness>, Vec<DayTotal>, Vec<BudgetRow>);

impl DashboardState {
    /// The days shown: the last `days` whole UTC days up to tomorrow.
    fn period(&self) -> (i64, i64) {
        let day = guardian_runtime::time::DAY_MS;
        let to = guardian_runtime::now_ms().div_euclid(day) * day + day;
        (to - self.days * day, to)
    }

    async fn overview(&self) -> Result<Overview, String> {
        let (from, to) = self.period();
        let db = |e: sqlx::Error| format!("database: {e}");
        let comparison = readiness::readiness(&self.pool, from, to).await.map_err(db)?;
        let trend = tables::trend(&self.pool, self.k, from, to).await.map_err(db)?;
        let budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner()).rows();
        Ok((comparison, trend, budgets))
    }

    /// Federated sessions and the SLO status, as followed from the topics.
    fn operations(&self) -> (Vec<FlSession>, Vec<SloStatus>) {
        let sessions = self.fl.lock().unwrap_or_else(|p| p.into_inner()).sessions();
        let slos =
            self.slo.lock().unwrap_or_else(|p| p.into_inner()).status(guardian_runtime::now_ms(), self.slo_period_ms);
        (sessions, slos)
    }

    /// The tenant role of the request's bearer token, if it is a known one.
    fn tenant(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?;
        self.tokens.get(&crate::tokens::digest(token)).cloned()
    }

    async fn groups(&self, q: &Grouping) -> Result<(String, Vec<Group>), String> {
        let by = q.by.clone().unwrap_or_else(|| "region".into());
        if !GROUPINGS.contains(&by.as_str()) {
            return Err(format!("by must be one of {}", GROUPINGS.join(", ")));
        }
        let (from, to) = self.period();
        tables::aggregates(&self.pool, &by, self.k, from, to)
            .await
            .map(|g| (by, g))
            .map_err(|e| format!("database: {e}"))
    }
}

async fn page(State(s): State<DashboardState>, Query(q): Query<Grouping>) -> Response {
    match s.groups(&q).await {
        Ok((by, g)) => match s.overview().await {
            Ok((comparison, trend, budgets)) => {
                let (sessions, slos) = s.operations();
                let extra =
                    view::overview_html(&comparison, &trend, &budgets) + &view::operations_html(&sessions, &slos);
                axum::response::Html(view::html(&by, s.k, &g, &extra)).into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        },
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn aggregates(State(s): State<DashboardState>, Query(q): Query<Grouping>) -> Response {
    match s.groups(&q).await {
        Ok((by, g)) => axum::Json(json!({"by": by, "k": s.k, "groups": g})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn aggregates_csv(State(s): State<DashboardState>, Query(q): Query<Grouping>) -> Response {
    match s.groups(&q).await {
        Ok((_, g)) => ([(header::CONTENT_TYPE, "text/csv")], view::csv(&g)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn overview(State(s): State<DashboardState>) -> Response {
    match s.overview().await {
        Ok((comparison, trend, budgets)) => {
            axum::Json(json!({ "hospitals": comparison, "trend": trend, "budgets": budgets })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn operations(State(s): State<DashboardState>) -> Response {
    let (sessions, slos) = s.operations();
    axum::Json(json!({ "fl_sessions": sessions, "slo": slos })).into_response()
}

async fn hospital(State(s): State<DashboardState>, headers: HeaderMap) -> Response {
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
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            let days: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    json!({
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
            axum::Json(json!({ "days": days })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}")).into_response(),
    }
}

/// Every route of the dashboard, on `state`.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/aggregates", get(aggregates))
        .route("/api/overview", get(overview))
        .route("/api/operations", get(operations))
        .route("/api/aggregates.csv", get(aggregates_csv))
        .route("/api/hospital", get(hospital))
        .with_state(state)
}
