//! What the dashboard shows, as data and as HTML: cross-hospital aggregates (read from
//! the rollups by `guardian_rollups::tables`, never from encounter records; a group of
//! fewer than k hospitals is suppressed), the hospital comparison and daily trend, the
//! privacy budgets followed from `privacy.status`, the federated sessions followed from
//! `fl.models` and `fl.rounds`, and the SLO status. Pure: no I/O here.

use std::collections::{BTreeMap, BTreeSet};

use guardian_rollups::readiness::Readiness;
use guardian_rollups::tables::{DayTotal, GROUPINGS, Group};
use guardian_runtime::time::day_label;
use guardian_schemas::records::{BudgetLevel, BudgetScope, BudgetStatus, ModelVersion, RoundControl, RoundControlKind};
use serde::Serialize;

/// One privacy budget as the accountant keeps it (the same state it publishes on the
/// budget status topic).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetRow {
    /// None: the global budget.
    pub hospital: Option<String>,
    pub epsilon_spent: f64,
    pub level: String,
    pub rounds_left: Option<i64>,
    pub events: i64,
}

/// The budgets as the accountant last published them on `privacy.status` (a compacted
/// topic: the newest status per scope wins), followed by the dashboard.
#[derive(Debug, Default, Clone)]
pub struct BudgetsView {
    /// None: the global budget (sorts first).
    rows: BTreeMap<Option<String>, BudgetRow>,
}

impl BudgetsView {
    pub fn status(&mut self, s: &BudgetStatus) {
        let hospital = match s.scope {
            BudgetScope::Global => None,
            BudgetScope::Hospital => s.hospital_id.clone(),
        };
        let level = match s.level {
            BudgetLevel::Normal => "NORMAL",
            BudgetLevel::Warning => "WARNING",
            BudgetLevel::High => "HIGH",
            BudgetLevel::Critical => "CRITICAL",
            BudgetLevel::Exhausted => "EXHAUSTED",
        };
        let row = BudgetRow {
            hospital: hospital.clone(),
            epsilon_spent: s.epsilon_spent,
            level: level.into(),
            rounds_left: s.rounds_left,
            events: s.events,
        };
        self.rows.insert(hospital, row);
    }

    /// Every budget, the global one first; empty before the accountant published any.
    pub fn rows(&self) -> Vec<BudgetRow> {
        self.rows.values().cloned().collect()
    }
}

/// The sections below the grouped aggregates: hospital comparison against the pilot
/// targets, the daily trend, and the privacy budgets.
/// The per-hospital comparison (operators only).
pub fn comparison_html(comparison: &[Readiness]) -> String {
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.2} %", v * 100.0));
    let mut out = String::from(
        "<h2>Hospital comparison</h2><p>Each hospital's day rollups over the period against the pilot targets \
         (completeness &gt; 95 %, p95 generation &lt; 5 s, satisfaction &gt; 4.0, uptime &gt; 99.5 %).</p>\
         <table id=\"comparison\"><thead><tr><th>hospital</th><th>phase</th><th>encounters</th><th>SOAP completeness</th>\
         <th>p95 generation</th><th>satisfaction</th><th>uptime</th><th>ready</th></tr></thead><tbody>",
    );
    for r in comparison {
        out.push_str(&format!(
            "<tr data-hospital=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.hospital_id),
            escape(&r.hospital_id),
            escape(r.phase.as_deref().unwrap_or("—")),
            r.encounters,
            pct(r.completeness),
            r.generation_p95_ms.map_or("—".into(), |p| format!("{p:.0} ms")),
            r.satisfaction.map_or("—".into(), |v| format!("{v:.2}")),
            pct(r.uptime),
            if r.ready() { "yes".to_string() } else { format!("no: {}", escape(&r.failing.join(", "))) },
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// The daily trend (days with at least k hospitals reporting: public).
pub fn trend_html(trend: &[DayTotal]) -> String {
    let mut out = String::new();
    let days: Vec<(String, f64, String)> = trend
        .iter()
        .map(|d| {
            (day_label(d.day_start_ms), d.encounters as f64, format!("{} ({} hospitals)", d.encounters, d.hospitals))
        })
        .collect();
    let max = days.iter().map(|d| d.1).fold(0.0, f64::max);
    out.push_str("<h2>Trend</h2>");
    out.push_str(&bars("Encounters per day, all hospitals (days with at least k reporting)", "trend", &days, max));
    out
}

/// The privacy budgets of every hospital and the federation (operators only).
pub fn budgets_html(budgets: &[BudgetRow]) -> String {
    let mut out = String::from("<h2>Privacy budgets</h2>");
    if budgets.is_empty() {
        out.push_str("<p>No privacy accountant data in this database.</p>");
    } else {
        out.push_str(
            "<table id=\"budgets\"><thead><tr><th>scope</th><th>ε spent</th><th>level</th><th>rounds left</th><th>spends</th></tr></thead><tbody>",
        );
        for b in budgets {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(b.hospital.as_deref().unwrap_or("global")),
                b.epsilon_spent,
                escape(&b.level),
                b.rounds_left.map_or("—".into(), |n| n.to_string()),
                b.events
            ));
        }
        out.push_str("</tbody></table>");
    }
    out
}

/// A federated session as the dashboard shows it: its rounds and model versions.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FlSession {
    pub session_id: String,
    pub rounds_finished: usize,
    pub rounds_failed: usize,
    pub last_round: Option<i64>,
    pub versions: Vec<FlVersion>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlVersion {
    pub version: i64,
    pub round: i64,
    pub participants: usize,
    pub accuracy: Option<f64>,
    pub sha256: String,
}

/// Sessions built from `fl.models` and `fl.rounds` (idempotent: a record read twice, as
/// after a replay, changes nothing).
#[derive(Debug, Default)]
pub struct FlView {
    sessions: BTreeMap<String, SessionRecords>,
}

/// Rounds finished, rounds failed, versions by number.
type SessionRecords = (BTreeSet<i64>, BTreeSet<i64>, BTreeMap<i64, FlVersion>);

impl FlView {
    pub fn model(&mut self, m: &ModelVersion) {
        let version = FlVersion {
            version: m.version,
            round: m.round,
            participants: m.participants.len(),
            accuracy: m.accuracy,
            sha256: m.sha256.clone(),
        };
        self.sessions.entry(m.session_id.clone()).or_default().2.insert(m.version, version);
    }

    pub fn control(&mut self, c: &RoundControl) {
        let s = self.sessions.entry(c.session_id.clone()).or_default();
        match c.kind {
            RoundControlKind::Finished => {
                s.0.insert(c.round);
            }
            RoundControlKind::Failed => {
                s.1.insert(c.round);
            }
            _ => {}
        }
    }

    pub fn sessions(&self) -> Vec<FlSession> {
        self.sessions
            .iter()
            .map(|(id, (finished, failed, versions))| FlSession {
                session_id: id.clone(),
                rounds_finished: finished.len(),
                rounds_failed: failed.len(),
                last_round: finished.iter().chain(failed).max().copied(),
                versions: versions.values().cloned().collect(),
            })
            .collect()
    }
}

/// Federated sessions (a chart of accuracy per version each) and the SLO status.
pub fn operations_html(sessions: &[FlSession], slos: &[guardian_burnrate::SloStatus]) -> String {
    let mut out = String::from("<h2>Federated learning</h2>");
    if sessions.is_empty() {
        out.push_str("<p>No federated sessions on the model topics yet.</p>");
    }
    for s in sessions {
        out.push_str(&format!(
            "<h3>Session {}</h3><p>{} rounds finished, {} failed; {} model versions.</p>",
            escape(&s.session_id),
            s.rounds_finished,
            s.rounds_failed,
            s.versions.len()
        ));
        let accuracy: Vec<(String, f64, String)> = s
            .versions
            .iter()
            .filter_map(|v| {
                v.accuracy.map(|a| {
                    (
                        format!("v{} (round {})", v.version, v.round),
                        a * 100.0,
                        format!("{:.1} % ({} hospitals)", a * 100.0, v.participants),
                    )
                })
            })
            .collect();
        out.push_str(&bars(
            "Held-out accuracy per model version (%)",
            &format!("accuracy-{}", escape(&s.session_id)),
            &accuracy,
            100.0,
        ));
    }
    out.push_str(
        "<h2>Service levels</h2><table id=\"slo\"><thead><tr><th>objective</th><th>target</th><th>events</th>\
         <th>error budget left</th><th>burn 1h</th><th>burn 6h</th><th>burn 3d</th><th>alerting</th></tr></thead><tbody>",
    );
    if slos.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No SLO events in the period yet.</td></tr>");
    }
    for s in slos {
        let burn = |w: &str| s.burn_rates.get(w).map_or("—".into(), |r| format!("{r:.2}×"));
        out.push_str(&format!(
            "<tr data-slo=\"{}\"><td>{}</td><td>{:.2} %</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.slo,
            s.slo,
            s.objective * 100.0,
            s.events,
            s.budget_remaining.map_or("—".into(), |r| format!("{:.1} %", r * 100.0)),
            burn("1h"),
            burn("6h"),
            burn("3d"),
            if s.alerts.is_empty() { "no".to_string() } else { s.alerts.join(", ") },
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// YYYY-MM-DD of a UTC day start.
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

/// Widest a character of the charts' 13 px sans-serif text is taken to be, in pixels (an
/// upper bound for digits, letters and punctuation of the labels; wide glyphs are rare).
const CHAR_PX: f64 = 8.5;

/// A horizontal bar chart as inline SVG (no script, no build step). The label column and
/// the canvas grow with the longest label and value text, so none is cut off.
fn bars(title: &str, id: &str, items: &[(String, f64, String)], max: f64) -> String {
    let height = 30 + 26 * items.len();
    let widest = |f: &dyn Fn(&(String, f64, String)) -> usize| items.iter().map(f).max().unwrap_or(0) as f64;
    let label_w = (widest(&|i| i.0.chars().count()) * CHAR_PX + 10.0).max(160.0);
    let width = label_w + 400.0 + 5.0 + widest(&|i| i.2.chars().count()) * CHAR_PX + 10.0;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg id=\"{id}\" width=\"{width:.0}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    for (i, (label, value, text)) in items.iter().enumerate() {
        let y = 10 + i * 26;
        let w = if max > 0.0 { (value / max * 400.0).max(1.0) } else { 1.0 };
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><rect class=\"bar\" data-group=\"{}\" data-value=\"{value}\" x=\"{label_w:.0}\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"#3b6ea5\"/><text class=\"value\" x=\"{:.1}\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 14,
            escape(label),
            escape(label),
            label_w.round() + w + 5.0,
            y + 14,
            escape(text)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The dashboard page for one grouping, with `extra` sections (see [`overview_html`]).
/// The page at `page` (`/` or `/operator`, where its group-by links lead).
pub fn html(page: &str, by: &str, k: usize, groups: &[Group], extra: &str) -> String {
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
        GROUPINGS.iter().map(|g| format!("<a href=\"{page}?by={g}\">{g}</a>")).collect::<Vec<_>>().join(" · ");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Phoenix Guardian — pilot KPIs by {by}</title>\
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head><body>\
<h1>Pilot KPIs by {by}</h1><p>Aggregates of the day rollups across hospitals; groups of fewer than {k} hospitals are suppressed. Group by: {links} · <a href=\"/api/aggregates.csv?by={by}\">CSV</a> · <a href=\"/api/aggregates?by={by}\">JSON</a></p>\
{}{}<table><thead><tr><th>{by}</th><th>hospitals</th><th>encounters</th><th>SOAP completeness</th><th>p95 generation</th><th>satisfaction</th><th>uptime</th></tr></thead><tbody>{rows}</tbody></table>{extra}</body></html>",
        bars("SOAP completeness (%)", "completeness", &completeness, 100.0),
        bars("p95 note generation time (ms)", "p95", &p95, max_p95),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_chart_text_is_cut_off() {
        let items = vec![
            ("critical-access".to_string(), 7681.0, "7681 (9 hospitals)".to_string()),
            ("2026-12-07".to_string(), 12.0, "12 (3 hospitals)".to_string()),
        ];
        let svg = bars("t", "x", &items, 7681.0);
        let width: f64 = svg.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        for (i, (label, _, text)) in items.iter().enumerate() {
            let bar_end: f64 =
                svg.split("class=\"value\" x=\"").nth(i + 1).unwrap().split('"').next().unwrap().parse().unwrap();
            assert!(bar_end + CHAR_PX * text.chars().count() as f64 <= width, "{text} ends past {width}");
            let bar_x: f64 = svg
                .split("class=\"bar\"")
                .nth(i + 1)
                .unwrap()
                .split("x=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(CHAR_PX * label.chars().count() as f64 <= bar_x, "{label} runs into its bar");
        }
    }

    #[test]
    fn the_overview_shows_every_hospital_the_trend_and_the_budgets() {
        let r = Readiness {
            hospital_id: "h001".into(),
            phase: Some("cutover".into()),
            encounters: 12,
            completeness: Some(0.9),
            generation_p95_ms: Some(1200.0),
            satisfaction: Some(4.5),
            uptime: None,
            failing: vec!["completeness 0.9000".into(), "uptime: no data".into()],
        };
        let day = DayTotal { day_start_ms: 1_764_115_200_000, hospitals: 3, encounters: 40, completeness: Some(0.97) };
        let b = BudgetRow { hospital: None, epsilon_spent: 1.5, level: "HIGH".into(), rounds_left: Some(3), events: 9 };
        let html = comparison_html(&[r]) + &trend_html(&[day]) + &budgets_html(&[b]);
        assert!(html.contains("data-hospital=\"h001\"") && html.contains("no: completeness 0.9000, uptime: no data"));
        assert!(html.contains("id=\"trend\"") && html.contains("2025-11-26") && html.contains("40 (3 hospitals)"));
        assert!(html.contains("<td>global</td><td>1.500</td><td>HIGH</td><td>3</td><td>9</td>"));
        assert!(budgets_html(&[]).contains("No privacy accountant data"));
        assert!(!trend_html(&[]).contains("data-hospital"), "the public part names no hospital");
    }

    #[test]
    fn budgets_keep_the_newest_status_per_scope_global_first() {
        let status = |scope, hospital: Option<&str>, eps: f64, level| BudgetStatus {
            scope,
            hospital_id: hospital.map(str::to_string),
            epsilon_spent: eps,
            epsilon_limit: 2.0,
            delta: 1e-5,
            level,
            events: 1,
            last_event_id: None,
            rounds_left: None,
        };
        let mut v = BudgetsView::default();
        v.status(&status(BudgetScope::Hospital, Some("h002"), 0.5, BudgetLevel::Normal));
        v.status(&status(BudgetScope::Global, None, 0.7, BudgetLevel::Normal));
        v.status(&status(BudgetScope::Hospital, Some("h002"), 1.9, BudgetLevel::Critical));
        let rows = v.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].hospital.as_deref(), rows[0].epsilon_spent), (None, 0.7));
        assert_eq!((rows[1].hospital.as_deref(), rows[1].level.as_str()), (Some("h002"), "CRITICAL"));
    }

    #[test]
    fn sessions_count_rounds_once_and_chart_accuracy_per_version() {
        let model = |version: i64, accuracy: f64| ModelVersion {
            session_id: "s1".into(),
            version,
            round: version,
            parent_version: None,
            object_uri: String::new(),
            sha256: format!("{version:064x}"),
            parameters: 31,
            participants: vec!["h001".into(), "h002".into(), "h003".into()],
            accuracy: Some(accuracy),
        };
        let control = |round: i64, kind: RoundControlKind| RoundControl {
            session_id: "s1".into(),
            round,
            kind,
            issued_at: 0,
            settings: None,
            first: vec![],
            second: vec![],
            signature: None,
            reason: None,
            evicted: vec![],
        };
        let mut view = FlView::default();
        for _ in 0..2 {
            // Read twice, as after a replay.
            view.model(&model(1, 0.8));
            view.model(&model(2, 0.93));
            view.control(&control(1, RoundControlKind::Open));
            view.control(&control(1, RoundControlKind::Finished));
            view.control(&control(2, RoundControlKind::Finished));
            view.control(&control(3, RoundControlKind::Failed));
        }
        let sessions = view.sessions();
        assert_eq!(sessions.len(), 1);
        let s = &sessions[0];
        assert_eq!((s.rounds_finished, s.rounds_failed, s.last_round, s.versions.len()), (2, 1, Some(3), 2));
        let slo = guardian_burnrate::SloStatus {
            slo: "availability",
            objective: 0.995,
            events: 1000,
            budget_remaining: Some(0.4),
            burn_rates: [("1h", 16.0), ("5m", 20.0)].into_iter().collect(),
            alerts: vec!["fast burn"],
        };
        let html = operations_html(&sessions, &[slo]);
        assert!(html.contains("2 rounds finished, 1 failed; 2 model versions"));
        assert!(
            html.contains("data-group=\"v2 (round 2)\" data-value=\"93\"") && html.contains("93.0 % (3 hospitals)")
        );
        assert!(html.contains("<td>availability</td><td>99.50 %</td><td>1000</td><td>40.0 %</td><td>16.00×</td><td>—</td><td>—</td><td>fast burn</td>"));
        assert!(operations_html(&[], &[]).contains("No federated sessions"));
    }
}
