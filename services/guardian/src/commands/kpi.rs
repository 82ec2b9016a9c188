//! `guardian kpi`, `slo`, `dashboard` and `pilot`: the KPI services and the pilot's
//! registry and readiness report.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::KpiArgs;

pub async fn run(args: KpiArgs) -> Result<ExitCode> {
    let config = args.validate()?;
    guardian_kpi::serve(config, guardian_runtime::Shutdown::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
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
            let today = guardian_runtime::now_ms().div_euclid(day) * day;
            let from = from
                .as_deref()
                .map(guardian_runtime::time::parse_day)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or(today - 7 * day);
            let to = to
                .as_deref()
                .map(guardian_runtime::time::parse_day)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or(today + day);
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
    let args = args.validate()?;
    guardian_slo::serve(args, guardian_runtime::Shutdown::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn dashboard(args: crate::cli::DashboardArgs) -> Result<ExitCode> {
    let config = args.validate()?;
    let shutdown = guardian_runtime::Shutdown::on_signals();
    let k = config.k;
    guardian_dashboard::serve(config, shutdown, |bound| println!("dashboard: http://{bound}/ (k = {k})")).await?;
    Ok(ExitCode::SUCCESS)
}
