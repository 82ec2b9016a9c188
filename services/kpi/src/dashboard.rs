//! Cross-hospital aggregates for the dashboard, built only from the rollups (never from
//! encounter records) and grouped by a registry attribute; a group of fewer than k
//! hospitals is suppressed, its numbers never leave the database.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::readiness::REGISTRY_DDL;
use crate::window::Acc;

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
    sqlx::raw_sql(REGISTRY_DDL).execute(pool).await?;
    let attribute: BTreeMap<String, String> = sqlx::query(&format!("SELECT hospital_id, {column} FROM kpi_hospitals"))
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut groups: BTreeMap<String, (usize, Acc)> = BTreeMap::new();
    for (hospital, acc) in crate::store::day_windows(pool, from_ms, to_ms).await? {
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

pub fn csv(groups: &[Group]) -> String {
    let mut out = String::from("group,hospitals,shown,encounters,completeness,generation_p95_ms,satisfaction,uptime\n");
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    for g in groups {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            g.key,
            g.hospitals,
            g.shown,
            g.encounters.map_or(String::new(), |v| v.to_string()),
            f(g.completeness),
            f(g.generation_p95_ms),
            f(g.satisfaction),
            f(g.uptime)
        ));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG (no script, no build step).
fn bars(title: &str, id: &str, items: &[(String, f64, String)], max: f64) -> String {
    let height = 30 + 26 * items.len();
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg id=\"{id}\" width=\"640\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    for (i, (label, value, text)) in items.iter().enumerate() {
        let y = 10 + i * 26;
        let w = if max > 0.0 { (value / max * 400.0).max(1.0) } else { 1.0 };
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><rect class=\"bar\" data-group=\"{}\" data-value=\"{value}\" x=\"160\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"#3b6ea5\"/><text class=\"value\" x=\"{:.1}\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 14,
            escape(label),
            escape(label),
            165.0 + w,
            y + 14,
            escape(text)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The dashboard page for one grouping.
pub fn html(by: &str, k: usize, groups: &[Group]) -> String {
    let shown: Vec<&Group> = groups.iter().filter(|g| g.shown).collect();
    let completeness: Vec<(String, f64, String)> = shown
        .iter()
        .filter_map(|g| g.completeness.map(|c| (g.key.clone(), c * 100.0, format!("{:.2} %", c * 100.0))))
        .collect();
    let p95: Vec<(String, f64, String)> =
        shown.iter().filter_map(|g| g.generation_p95_ms.map(|p| (g.key.clone(), p, format!("{p:.0} ms")))).collect();
    let max_p95 = p95.iter().map(|x| x.1).fold(0.0, f64::max);
    let mut rows = String::new();
    for g in groups {
        let f = |v: Option<f64>, pct: bool| match v {
            Some(v) if pct => format!("{:.2} %", v * 100.0),
            Some(v) => format!("{v:.2}"),
            None => "—".into(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&g.key),
            g.hospitals,
            if g.shown {
                g.encounters.map_or("—".into(), |e| e.to_string())
            } else {
                format!("suppressed (fewer than {k} hospitals)")
            },
            f(g.completeness, true),
            g.generation_p95_ms.map_or("—".into(), |p| format!("{p:.0} ms")),
            f(g.satisfaction, false),
            f(g.uptime, true),
        ));
    }
    let links: String =
        GROUPINGS.iter().map(|g| format!("<a href=\"/?by={g}\">{g}</a>")).collect::<Vec<_>>().join(" · ");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Phoenix Guardian — pilot KPIs by {by}</title>\
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head><body>\
<h1>Pilot KPIs by {by}</h1><p>Aggregates of the day rollups across hospitals; groups of fewer than {k} hospitals are suppressed. Group by: {links} · <a href=\"/api/aggregates.csv?by={by}\">CSV</a> · <a href=\"/api/aggregates?by={by}\">JSON</a></p>\
{}{}<table><thead><tr><th>{by}</th><th>hospitals</th><th>encounters</th><th>SOAP completeness</th><th>p95 generation</th><th>satisfaction</th><th>uptime</th></tr></thead><tbody>{rows}</tbody></table></body></html>",
        bars("SOAP completeness (%)", "completeness", &completeness, 100.0),
        bars("p95 note generation time (ms)", "p95", &p95, max_p95),
    )
}
