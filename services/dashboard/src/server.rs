//! The dashboard's HTTP side: the page, the JSON API and the hospital API. Private by
//! default ([`crate::tokens`]):
//!
//! - for anyone: `/` (the public page), `/api/aggregates[.csv]` (k-anonymous aggregates
//!   by a registry attribute) and `/api/trend` (the daily trend, days with at least k
//!   hospitals reporting); nothing per hospital;
//! - for an operator token: `/operator` (the whole page), `/api/overview` (hospital
//!   comparison, trend, privacy budgets) and `/api/operations` (federated sessions, SLOs);
//! - for a hospital token: `/api/hospital`, its own days, read as its tenant role.
//!
//! Tokens come as `Authorization: Bearer <token>`, or as the password of HTTP Basic (so
//! a browser can open `/operator`). A token that is presented but unknown is refused
//! (401) on every path, the public ones included; a known token on a path it does not
//! grant gets 403.

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

use crate::tokens::{Credentials, Grant};
use crate::view::{self, BudgetRow, BudgetsView, FlSession, FlView};

const OPERATOR_REALM: &str = "Basic realm=\"Phoenix Guardian operators\", Bearer";

#[derive(Debug, Clone)]
pub struct DashboardState {
    pub pool: sqlx::PgPool,
    pub k: usize,
    pub days: i64,
    /// The hospital and operator tokens.
    pub credentials: Arc<Credentials>,
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

    /// What the request's credential grants: `Ok(None)` without one, an error response
    /// (401) for one that is not known.
    fn caller(&self, headers: &HeaderMap) -> Result<Option<Grant>, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
        let token = value.to_str().ok().and_then(|v| {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return Some(t.to_string());
            }
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(v.strip_prefix("Basic ")?.trim()).ok()?;
            Some(String::from_utf8(decoded).ok()?.split_once(':')?.1.to_string())
        });
        match token.and_then(|t| self.credentials.grant(&t)) {
            Some(grant) => Ok(Some(grant)),
            None => {
                tracing::warn!("request with an unknown credential refused");
                Err(refused(StatusCode::UNAUTHORIZED, "the credential is not valid"))
            }
        }
    }

    /// The operator's name, or the refusal.
    fn operator(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        match self.caller(headers)? {
            Some(Grant::Operator(name)) => {
                tracing::info!(operator = %name, "operator request");
                Ok(name)
            }
            Some(Grant::Tenant(_)) => Err(refused(StatusCode::FORBIDDEN, "an operator token is required")),
            None => Err(refused(StatusCode::UNAUTHORIZED, "an operator token is required")),
        }
    }

    /// The hospital's tenant role, or the refusal.
    fn tenant(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        match self.caller(headers)? {
            Some(Grant::Tenant(role)) => Ok(role),
            Some(Grant::Operator(_)) => Err(refused(StatusCode::FORBIDDEN, "a hospital API token is required")),
            None => Err(refused(
                StatusCode::UNAUTHORIZED,
                "a hospital API token is required (Authorization: Bearer <token>)",
            )),
        }
    }

    async fn trend(&self) -> Result<Vec<DayTotal>, String> {
        let (from, to) = self.period();
        tables::trend(&self.pool, self.k, from, to).await.map_err(|e| format!("database: {e}"))
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

/// A request refused for its credential (401: none or unknown; 403: not this path's).
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    status: StatusCode,
    why: &'static str,
}

fn refused(status: StatusCode, why: &'static str) -> Refusal {
    Refusal { status, why }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, [(header::WWW_AUTHENTICATE, OPERATOR_REALM)], self.why).into_response()
    }
}

/// The public page: k-anonymous aggregates and the trend.
async fn page(State(s): State<DashboardState>, headers: HeaderMap, Query(q): Query<Grouping>) -> Response {
    if let Err(refusal) = s.caller(&headers) {
        return refusal.into_response();
    }
    match s.groups(&q).await {
        Ok((by, g)) => match s.trend().await {
            Ok(trend) => axum::response::Html(view::html("/", &by, s.k, &g, &view::trend_html(&trend))).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        },
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// The operator's page: the public page, the per-hospital comparison, the budgets and
/// the operations panels.
async fn operator_page(State(s): State<DashboardState>, headers: HeaderMap, Query(q): Query<Grouping>) -> Response {
    if let Err(refusal) = s.operator(&headers) {
        return refusal.into_response();
    }
    match s.groups(&q).await {
        Ok((by, g)) => match s.overview().await {
            Ok((comparison, trend, budgets)) => {
                let (sessions, slos) = s.operations();
                let extra = view::comparison_html(&comparison)
                    + &view::trend_html(&trend)
                    + &view::budgets_html(&budgets)
                    + &view::operations_html(&sessions, &slos);
                axum::response::Html(view::html("/operator", &by, s.k, &g, &extra)).into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        },
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn aggregates(State(s): State<DashboardState>, headers: HeaderMap, Query(q): Query<Grouping>) -> Response {
    if let Err(refusal) = s.caller(&headers) {
        return refusal.into_response();
    }
    match s.groups(&q).await {
        Ok((by, g)) => axum::Json(json!({"by": by, "k": s.k, "groups": g})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn aggregates_csv(State(s): State<DashboardState>, headers: HeaderMap, Query(q): Query<Grouping>) -> Response {
    if let Err(refusal) = s.caller(&headers) {
        return refusal.into_response();
    }
    match s.groups(&q).await {
        Ok((_, g)) => ([(header::CONTENT_TYPE, "text/csv")], view::csv(&g)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn trend(State(s): State<DashboardState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = s.caller(&headers) {
        return refusal.into_response();
    }
    match s.trend().await {
        Ok(trend) => axum::Json(json!({ "k": s.k, "trend": trend })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn overview(State(s): State<DashboardState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = s.operator(&headers) {
        return refusal.into_response();
    }
    match s.overview().await {
        Ok((comparison, trend, budgets)) => {
            axum::Json(json!({ "hospitals": comparison, "trend": trend, "budgets": budgets })).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn operations(State(s): State<DashboardState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = s.operator(&headers) {
        return refusal.into_response();
    }
    let (sessions, slos) = s.operations();
    axum::Json(json!({ "fl_sessions": sessions, "slo": slos })).into_response()
}

async fn hospital(State(s): State<DashboardState>, headers: HeaderMap) -> Response {
    let role = match s.tenant(&headers) {
        Ok(role) => role,
        Err(refusal) => return refusal.into_response(),
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
        .route("/operator", get(operator_page))
        .route("/api/trend", get(trend))
        .route("/api/aggregates", get(aggregates))
        .route("/api/overview", get(overview))
        .route("/api/operations", get(operations))
        .route("/api/aggregates.csv", get(aggregates_csv))
        .route("/api/hospital", get(hospital))
        .with_state(state)
}
