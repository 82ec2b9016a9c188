//! The KPI rollup tables: their definitions, the aggregate view, and every read of them
//! that another service needs (the dashboard's k-anonymous aggregates and trend, a
//! hospital's own days under row-level security, pilot readiness in [`crate::readiness`]).
//! The KPI rollup service writes them; nothing else does.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::window::{self, Acc};

/// The tables a hospital's tenant role reads (its own rows only, by row-level security).
pub const TENANT_TABLES: [&str; 2] = ["kpi_rollups", "kpi_hospitals"];

/// A hospital's own day windows, read as its tenant role: row-level security leaves only
/// its rows (see `guardian_pg::tenancy::query_as_tenant`).
pub const HOSPITAL_DAYS_SQL: &str = "SELECT hospital_id, window_start_ms, encounters, soap_expected, soap_completed,
        ratings, rating_sum, slo_good, slo_total, generation_p95
   FROM kpi_rollups WHERE window_size = 'DAY' ORDER BY hospital_id, window_start_ms";

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS kpi_rollups (
    hospital_id       text   NOT NULL,
    window_size       text   NOT NULL,
    window_start_ms   bigint NOT NULL,
    encounters        bigint NOT NULL,
    soap_expected     bigint NOT NULL,
    soap_completed    bigint NOT NULL,
    ratings           bigint NOT NULL,
    rating_sum        bigint NOT NULL,
    slo_good          bigint NOT NULL,
    slo_total         bigint NOT NULL,
    late_corrections  bigint NOT NULL,
    generation_sketch bytea  NOT NULL,
    generation_p50    float8,
    generation_p95    float8,
    generation_p99    float8,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hospital_id, window_size, window_start_ms)
);
CREATE TABLE IF NOT EXISTS kpi_watermarks (
    hospital_id text PRIMARY KEY,
    newest_ms   bigint NOT NULL
);";

/// What the aggregate role may read (see `guardian_pg::tenancy`): daily KPIs per region
/// across hospitals, only for groups of at least 3 hospitals (k-anonymity), never a
/// hospital's own row. The view runs with its owner's rights, so row-level security on
/// the tables does not hide the other hospitals' rows from the sums.
pub const AGGREGATE_VIEW: &str = "kpi_aggregate_daily";
pub const AGGREGATE_VIEW_DDL: &str = "
CREATE OR REPLACE VIEW kpi_aggregate_daily WITH (security_barrier) AS
SELECT h.region,
       r.window_start_ms                                               AS day_start_ms,
       count(DISTINCT r.hospital_id)                                   AS hospitals,
       sum(r.encounters)::bigint                                       AS encounters,
       sum(r.soap_completed)::float8 / NULLIF(sum(r.soap_expected), 0) AS soap_completeness,
       sum(r.rating_sum)::float8 / NULLIF(sum(r.ratings), 0)           AS satisfaction,
       sum(r.slo_good)::float8 / NULLIF(sum(r.slo_total), 0)           AS uptime
  FROM kpi_rollups r JOIN kpi_hospitals h USING (hospital_id)
 WHERE r.window_size = 'DAY'
 GROUP BY h.region, r.window_start_ms
HAVING count(DISTINCT r.hospital_id) >= 3";

/// The columns of a stored window that [`acc_from_row`] reads, in its order.
pub const ACC_COLUMNS: &str = "encounters, soap_expected, soap_completed, ratings, rating_sum, slo_good, slo_total, late_corrections, generation_sketch";

/// A stored window read back from [`ACC_COLUMNS`] starting at column `first`.
pub fn acc_from_row(r: &PgRow, first: usize) -> Acc {
    let sketch: Vec<u8> = r.get(first + 8);
    Acc {
        encounters: r.get(first),
        soap_expected: r.get(first + 1),
        soap_completed: r.get(first + 2),
        ratings: r.get(first + 3),
        rating_sum: r.get(first + 4),
        slo_good: r.get(first + 5),
        slo_total: r.get(first + 6),
        late_corrections: r.get(first + 7),
        generation: window::decode_sketch(&sketch).unwrap_or_else(window::new_sketch),
    }
}

/// Each hospital's DAY windows of [from_ms, to_ms) merged into one (sketches included).
pub async fn day_windows(pool: &PgPool, from_ms: i64, to_ms: i64) -> Result<BTreeMap<String, Acc>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT hospital_id, {ACC_COLUMNS} FROM kpi_rollups
         WHERE window_size = 'DAY' AND window_start_ms >= $1 AND window_start_ms < $2"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    let mut merged: BTreeMap<String, Acc> = BTreeMap::new();
    for r in &rows {
        merged.entry(r.get(0)).or_default().merge(&acc_from_row(r, 1));
    }
    Ok(merged)
}

/// The registry attributes the dashboard groups by.
pub const GROUPINGS: [&str; 4] = ["region", "ehr_vendor", "tier", "phase"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    pub hospitals: usize,
    /// False when the group has fewer than k hospitals: every figure below is None.
    pub shown: bool,
    pub encounters: Option<i64>,
    pub completeness: Option<f64>,
    pub generation_p95_ms: Option<f64>,
    pub satisfaction: Option<f64>,
    pub uptime: Option<f64>,
}

/// Aggregates of the DAY windows in [from_ms, to_ms) by `by` (one of [`GROUPINGS`]).
pub async fn aggregates(
    pool: &PgPool,
    by: &str,
    k: usize,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Group>, sqlx::Error> {
    let column = GROUPINGS.iter().find(|g| **g == by).copied().unwrap_or("region");
    let attribute: BTreeMap<String, String> = sqlx::query(&format!("SELECT hospital_id, {column} FROM kpi_hospitals"))
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut groups: BTreeMap<String, (usize, Acc)> = BTreeMap::new();
    for (hospital, acc) in day_windows(pool, from_ms, to_ms).await? {
        // Hospitals missing from the registry belong to no group.
        if let Some(key) = attribute.get(&hospital) {
            let g = groups.entry(key.clone()).or_default();
            g.0 += 1;
            g.1.merge(&acc);
        }
    }
    let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
    Ok(groups
        .into_iter()
        .map(|(key, (hospitals, acc))| {
            let shown = hospitals >= k;
            Group {
                key,
                hospitals,
                shown,
                encounters: shown.then_some(acc.encounters),
                completeness: ratio(acc.soap_completed, acc.soap_expected).filter(|_| shown),
                generation_p95_ms: (shown && !acc.generation.is_empty())
                    .then(|| acc.generation.value_at_quantile(0.95) as f64),
                satisfaction: ratio(acc.rating_sum, acc.ratings).filter(|_| shown),
                uptime: ratio(acc.slo_good, acc.slo_total).filter(|_| shown),
            }
        })
        .collect())
}

/// All hospitals' totals of one day; only days on which at least k hospitals reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayTotal {
    pub day_start_ms: i64,
    pub hospitals: i64,
    pub encounters: i64,
    pub completeness: Option<f64>,
}

/// The daily trend across hospitals in [from_ms, to_ms), k-anonymous like the groups.
pub async fn trend(pool: &PgPool, k: usize, from_ms: i64, to_ms: i64) -> Result<Vec<DayTotal>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT window_start_ms, count(DISTINCT hospital_id)::bigint, sum(encounters)::bigint,
                sum(soap_completed)::float8 / NULLIF(sum(soap_expected), 0)
           FROM kpi_rollups WHERE window_size = 'DAY' AND window_start_ms >= $1 AND window_start_ms < $2
          GROUP BY window_start_ms HAVING count(DISTINCT hospital_id) >= $3 ORDER BY window_start_ms",
    )
    .bind(from_ms)
    .bind(to_ms)
    .bind(k as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| DayTotal { day_start_ms: r.get(0), hospitals: r.get(1), encounters: r.get(2), completeness: r.get(3) })
        .collect())
}

/// Encounters counted per hospital over every DAY window.
pub async fn encounters_per_hospital(pool: &PgPool) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT hospital_id, sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY' GROUP BY hospital_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
}
