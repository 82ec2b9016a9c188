//! `guardian privacy audit`: the privacy audit from the accountant's ledger, for the
//! people who answer for it. Per hospital and global: the budgets and their levels, every
//! spend with the parameters of its round (accepted or refused), and every alert. Writes
//! JSON, Markdown, CSV (one file per table) or HTML into a folder; the exit code says
//! whether a reported budget reached the `--fail-on` level (4), so CI can gate on it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{Column, Row, TypeInfo};

use crate::AccountantError;

type Result<T, E = AccountantError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Json,
    Md,
    Csv,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum FailOn {
    /// Exit 0 whatever the levels
    Never,
    /// Exit 4 when a budget in the report is HIGH or worse
    High,
    /// Exit 4 when a budget in the report is CRITICAL or EXHAUSTED
    Critical,
    /// Exit 4 when a budget in the report is EXHAUSTED
    Exhausted,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// PostgreSQL URL of the accountant's ledger
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: String,
    /// Hospitals to report (repeatable; default: all)
    #[arg(long = "hospital")]
    pub hospitals: Vec<String>,
    /// First day (YYYY-MM-DD, UTC) or epoch milliseconds of the spends to list
    #[arg(long, value_parser = guardian_runtime::time::parse_instant)]
    pub from: Option<i64>,
    /// Day after the last (YYYY-MM-DD, UTC) or epoch milliseconds, exclusive
    #[arg(long, value_parser = guardian_runtime::time::parse_instant)]
    pub to: Option<i64>,
    /// Report formats (repeatable)
    #[arg(long = "format", value_enum, default_values_t = [AuditFormat::Json, AuditFormat::Md])]
    pub formats: Vec<AuditFormat>,
    /// Folder for the reports (created if missing)
    #[arg(long, default_value = "privacy-audit")]
    pub output: PathBuf,
    /// Exit non-zero (4) when a reported budget is at or above this level
    #[arg(long, value_enum, default_value_t = FailOn::Critical)]
    pub fail_on: FailOn,
}

/// What an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOutcome {
    /// Budgets at or above `--fail-on`, as "scope LEVEL".
    pub failing: Vec<String>,
}

struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Value>>,
}

/// Column headers, in the order of the queries' select lists.
const BUDGET_COLUMNS: &[&str] = &["scope", "epsilon_spent", "level", "events", "last_event_id", "rounds_left"];
const SPEND_COLUMNS: &[&str] = &[
    "event_id",
    "hospital_id",
    "session_id",
    "round",
    "sampling_rate",
    "noise_multiplier",
    "steps",
    "delta",
    "occurred_at_ms",
    "accepted",
    "hospital_epsilon_after",
];
const ALERT_COLUMNS: &[&str] = &[
    "alert_id",
    "scope",
    "previous_level",
    "level",
    "over_budget",
    "epsilon_spent",
    "epsilon_limit",
    "trigger_event_id",
];

/// A row as JSON values, by the column types the ledger's tables use.
fn json_row(row: &PgRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| match row.columns()[i].type_info().name() {
            "INT8" => json!(row.try_get::<Option<i64>, _>(i).ok().flatten()),
            "INT4" => json!(row.try_get::<Option<i32>, _>(i).ok().flatten()),
            "FLOAT8" => json!(row.try_get::<Option<f64>, _>(i).ok().flatten()),
            "BOOL" => json!(row.try_get::<Option<bool>, _>(i).ok().flatten()),
            _ => json!(row.try_get::<Option<String>, _>(i).ok().flatten()),
        })
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn level_rank(level: &str) -> u8 {
    match level {
        "WARNING" => 1,
        "HIGH" => 2,
        "CRITICAL" => 3,
        "EXHAUSTED" => 4,
        _ => 0,
    }
}

fn fails(level: &str, fail_on: FailOn) -> bool {
    let threshold = match fail_on {
        FailOn::Never => return false,
        FailOn::High => 2,
        FailOn::Critical => 3,
        FailOn::Exhausted => 4,
    };
    level_rank(level) >= threshold
}

/// Writes the audit reports; returns the budgets at or above `--fail-on`.
pub async fn run(args: AuditArgs) -> Result<AuditOutcome> {
    let pool = guardian_pg::connect(&args.database_url, 2).await?;
    let exists: bool = sqlx::query("SELECT to_regclass('privacy_ledger') IS NOT NULL").fetch_one(&pool).await?.get(0);
    if !exists {
        return Err(AccountantError::Config(format!(
            "no privacy ledger in {}: the accountant has not run against this database",
            guardian_pg::connect::redact(&args.database_url)
        )));
    }
    let hospitals: Option<Vec<String>> = (!args.hospitals.is_empty()).then(|| args.hospitals.clone());
    let scope_keys: Option<Vec<String>> =
        hospitals.as_ref().map(|hs| hs.iter().map(|h| format!("hospital/{h}")).chain(["global".to_string()]).collect());

    let budgets = sqlx::query(
        "SELECT scope_key, epsilon_spent, level, events, last_event_id, rounds_left FROM privacy_budgets
         WHERE $1::text[] IS NULL OR scope_key = ANY($1) ORDER BY scope_key = 'global', scope_key",
    )
    .bind(&scope_keys)
    .fetch_all(&pool)
    .await?;
    let spends = sqlx::query(
        "SELECT event_id, hospital_id, session_id, round, sampling_rate, noise_multiplier, steps, delta, occurred_at_ms,
                accepted, hospital_epsilon
         FROM privacy_ledger
         WHERE ($1::text[] IS NULL OR hospital_id = ANY($1)) AND ($2::bigint IS NULL OR occurred_at_ms >= $2)
           AND ($3::bigint IS NULL OR occurred_at_ms < $3)
         ORDER BY hospital_id, occurred_at_ms, event_id",
    )
    .bind(&hospitals)
    .bind(args.from)
    .bind(args.to)
    .fetch_all(&pool)
    .await?;
    let alerts = sqlx::query(
        "SELECT alert_id, scope_key, previous_level, level, over_budget, epsilon_spent, epsilon_limit, trigger_event_id
         FROM privacy_alerts WHERE $1::text[] IS NULL OR scope_key = ANY($1) ORDER BY scope_key, trigger_event_id, alert_id",
    )
    .bind(&scope_keys)
    .fetch_all(&pool)
    .await?;

    let tables = [
        Table { name: "budgets", columns: BUDGET_COLUMNS, rows: budgets.iter().map(json_row).collect() },
        Table { name: "spends", columns: SPEND_COLUMNS, rows: spends.iter().map(json_row).collect() },
        Table { name: "alerts", columns: ALERT_COLUMNS, rows: alerts.iter().map(json_row).collect() },
    ];

    std::fs::create_dir_all(&args.output)
        .map_err(|e| AccountantError::Config(format!("cannot create {}: {e}", args.output.display())))?;
    let filters = json!({"hospitals": args.hospitals, "from_ms": args.from, "to_ms": args.to});
    for format in &args.formats {
        write_report(&args.output, *format, &tables, &filters)?;
    }
    let failing: Vec<String> = budgets
        .iter()
        .filter(|r| fails(r.get::<&str, _>(2), args.fail_on))
        .map(|r| format!("{} {}", r.get::<String, _>(0), r.get::<String, _>(2)))
        .collect();
    println!(
        "audit: {} budget(s), {} spend(s), {} alert(s) written to {}",
        tables[0].rows.len(),
        tables[1].rows.len(),
        tables[2].rows.len(),
        args.output.display()
    );
    Ok(AuditOutcome { failing })
}

fn write_report(dir: &Path, format: AuditFormat, tables: &[Table], filters: &Value) -> Result<()> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| AccountantError::Config(format!("cannot write {}: {e}", path.display())))
    };
    match format {
        AuditFormat::Json => {
            let mut doc = serde_json::Map::new();
            doc.insert("filters".into(), filters.clone());
            for t in tables {
                let rows: Vec<Value> = t
                    .rows
                    .iter()
                    .map(|r| Value::Object(t.columns.iter().map(|c| c.to_string()).zip(r.iter().cloned()).collect()))
                    .collect();
                doc.insert(t.name.into(), Value::Array(rows));
            }
            write(
                "audit.json",
                serde_json::to_string_pretty(&Value::Object(doc)).expect("JSON values serialize") + "\n",
            )
        }
        AuditFormat::Csv => {
            for t in tables {
                let mut out = t.columns.join(",") + "\n";
                for r in &t.rows {
                    let cells: Vec<String> = r.iter().map(|v| csv_field(&cell(v))).collect();
                    out.push_str(&(cells.join(",") + "\n"));
                }
                write(&format!("{}.csv", t.name), out)?;
            }
            Ok(())
        }
        AuditFormat::Md => {
            let mut out = format!("# Privacy audit\n\nFilters: `{filters}`\n");
            for t in tables {
                let _ = write!(
                    out,
                    "\n## {}\n\n| {} |\n|{}\n",
                    t.name,
                    t.columns.join(" | "),
                    "---|".repeat(t.columns.len())
                );
                for r in &t.rows {
                    let cells: Vec<String> = r.iter().map(|v| cell(v).replace('|', "\\|")).collect();
                    let _ = writeln!(out, "| {} |", cells.join(" | "));
                }
            }
            write("audit.md", out)
        }
        AuditFormat::Html => {
            let mut out = String::from(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Privacy audit</title>\
                 <style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}</style>\
                 </head><body><h1>Privacy audit</h1>",
            );
            let _ = write!(out, "<p>Filters: <code>{}</code></p>", html(&filters.to_string()));
            for t in tables {
                let _ = write!(out, "<h2>{}</h2><table><tr>", t.name);
                for c in t.columns {
                    let _ = write!(out, "<th>{}</th>", html(c));
                }
                out.push_str("</tr>");
                for r in &t.rows {
                    out.push_str("<tr>");
                    for v in r {
                        let _ = write!(out, "<td>{}</td>", html(&cell(v)));
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</table>");
            }
            out.push_str("</body></html>\n");
            write("audit.html", out)
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
