//! The hospital registry (region, EHR vendor, tier, pilot phase) and the readiness checks
//! of the pilot targets: SOAP completeness above 95 %, p95 note generation under 5 s,
//! physician satisfaction above 4.0, uptime above 99.5 %.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use crate::window::Acc;

pub const REGISTRY_DDL: &str = "
CREATE TABLE IF NOT EXISTS kpi_hospitals (
    hospital_id text PRIMARY KEY,
    region      text NOT NULL,
    ehr_vendor  text NOT NULL,
    tier        text NOT NULL,
    phase       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
)";

pub const PHASES: [&str; 4] = ["pre-deployment", "deployment", "cutover", "steady-state"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hospital {
    pub id: String,
    pub region: String,
    pub ehr_vendor: String,
    pub tier: String,
    pub phase: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    hospital: Vec<Hospital>,
}

/// Parses a registry file (`[[hospital]]` tables); errors name the hospital and field.
pub fn parse_registry(text: &str) -> Result<Vec<Hospital>, String> {
    let file: RegistryFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    for h in &file.hospital {
        if h.id.is_empty() || h.region.is_empty() || h.ehr_vendor.is_empty() || h.tier.is_empty() {
            return Err(format!("hospital {:?}: id, region, ehr_vendor and tier must not be empty", h.id));
        }
        if !PHASES.contains(&h.phase.as_str()) {
            return Err(format!("hospital {}: phase {:?} is not one of {}", h.id, h.phase, PHASES.join(", ")));
        }
        if !seen.insert(h.id.clone()) {
            return Err(format!("hospital {} is listed twice", h.id));
        }
    }
    Ok(file.hospital)
}

/// The demo's registry of `n` synthetic hospitals (`h001`...): four regions, three EHR
/// vendors, three tiers and the four pilot phases, spread so that with 12 or more
/// hospitals every group has at least three (the dashboard's default k).
pub fn demo_registry(n: u32) -> Vec<Hospital> {
    const REGIONS: [&str; 4] = ["northeast", "midwest", "south", "west"];
    const VENDORS: [&str; 3] = ["epic", "oracle-health", "meditech"];
    const TIERS: [&str; 3] = ["academic", "community", "critical-access"];
    (0..n as usize)
        .map(|i| Hospital {
            id: format!("h{:03}", i + 1),
            region: REGIONS[i % 4].into(),
            ehr_vendor: VENDORS[i % 3].into(),
            tier: TIERS[(i / 4) % 3].into(),
            phase: PHASES[(i / 3) % 4].into(),
        })
        .collect()
}

/// Creates the registry table (idempotent): once per process, before [`readiness`] or the
/// dashboard's queries.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    guardian_pg::apply_ddl(pool, REGISTRY_DDL).await
}

pub async fn load_registry(pool: &PgPool, hospitals: &[Hospital]) -> Result<u64, sqlx::Error> {
    migrate(pool).await?;
    let mut tx = pool.begin().await?;
    let mut n = 0;
    for h in hospitals {
        n += sqlx::query(
            "INSERT INTO kpi_hospitals (hospital_id, region, ehr_vendor, tier, phase) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hospital_id) DO UPDATE SET region = excluded.region, ehr_vendor = excluded.ehr_vendor,
               tier = excluded.tier, phase = excluded.phase, updated_at = now()",
        )
        .bind(&h.id)
        .bind(&h.region)
        .bind(&h.ehr_vendor)
        .bind(&h.tier)
        .bind(&h.phase)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

/// One hospital's KPIs over a period and whether each pilot target is met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    pub hospital_id: String,
    pub phase: Option<String>,
    pub encounters: i64,
    pub completeness: Option<f64>,
    pub generation_p95_ms: Option<f64>,
    pub satisfaction: Option<f64>,
    pub uptime: Option<f64>,
    /// Targets not met (or without data).
    pub failing: Vec<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.failing.is_empty()
    }
}

/// Evaluates the pilot targets on a hospital's merged windows.
pub fn evaluate(hospital_id: &str, phase: Option<String>, acc: &Acc) -> Readiness {
    let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
    let completeness = ratio(acc.soap_completed, acc.soap_expected);
    let p95 = (!acc.generation.is_empty()).then(|| acc.generation.value_at_quantile(0.95) as f64);
    let satisfaction = ratio(acc.rating_sum, acc.ratings);
    let uptime = ratio(acc.slo_good, acc.slo_total);
    let mut failing = Vec::new();
    let mut check = |name: &str, value: Option<f64>, ok: fn(f64) -> bool| match value {
        Some(v) if ok(v) => {}
        Some(v) => failing.push(format!("{name} {v:.4}")),
        None => failing.push(format!("{name}: no data")),
    };
    check("completeness", completeness, |v| v > 0.95);
    check("generation p95 ms", p95, |v| v < 5000.0);
    check("satisfaction", satisfaction, |v| v > 4.0);
    check("uptime", uptime, |v| v > 0.995);
    Readiness {
        hospital_id: hospital_id.to_string(),
        phase,
        encounters: acc.encounters,
        completeness,
        generation_p95_ms: p95,
        satisfaction,
        uptime,
        failing,
    }
}

/// Readiness of every hospital with rollups, from its DAY windows in [from_ms, to_ms).
/// Needs the registry table ([`migrate`]).
pub async fn readiness(pool: &PgPool, from_ms: i64, to_ms: i64) -> Result<Vec<Readiness>, sqlx::Error> {
    let phases: BTreeMap<String, String> = sqlx::query("SELECT hospital_id, phase FROM kpi_hospitals")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let merged = crate::tables::day_windows(pool, from_ms, to_ms).await?;
    Ok(merged.iter().map(|(h, acc)| evaluate(h, phases.get(h).cloned(), acc)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_files_are_checked() {
        let ok = "[[hospital]]\nid = \"h001\"\nregion = \"us-east\"\nehr_vendor = \"epic\"\ntier = \"academic\"\nphase = \"cutover\"\n";
        assert_eq!(parse_registry(ok).unwrap()[0].phase, "cutover");
        let bad = ok.replace("cutover", "launch");
        assert!(parse_registry(&bad).unwrap_err().contains("phase \"launch\""));
        assert!(parse_registry(&format!("{ok}{ok}")).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn targets_are_strict_and_missing_data_fails() {
        let mut acc = Acc {
            soap_expected: 100,
            soap_completed: 96,
            ratings: 10,
            rating_sum: 41,
            slo_good: 996,
            slo_total: 1000,
            ..Acc::default()
        };
        acc.generation.record(4000).unwrap();
        assert!(evaluate("h", None, &acc).ready());
        acc.slo_good = 995;
        assert_eq!(evaluate("h", None, &acc).failing, vec!["uptime 0.9950".to_string()]);
        let empty = evaluate("h", None, &Acc::default());
        assert_eq!(empty.failing.len(), 4);
    }
}
