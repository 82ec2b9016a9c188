//! `guardian bench kpi`: encounters per second through the KPI rollup (decode → window →
//! exactly-once commit in PostgreSQL, outbox to the compacted topic), next to the raw
//! consume rate of the same topic and a straightforward Python consumer doing the same
//! rollup in memory (`tests/kpi/bench_python_rollup.py`), in the same run.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use sqlx::Row;

use super::bench::{consume_raw, fresh_topic, record};
use crate::cli::BenchKpiArgs;
use crate::common;

pub async fn run(args: BenchKpiArgs) -> Result<ExitCode> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let settings = common::settings(&args.kafka, "guardian-bench-kpi");
    let admin = common::admin(&args.kafka).await?;
    let encounters = fresh_topic(&admin, "kpi-encounters").await?;
    let slo = fresh_topic(&admin, "kpi-slo").await?;
    let rollups = fresh_topic(&admin, "kpi-rollups").await?;
    let dlq = fresh_topic(&admin, "kpi-dlq").await?;
    let records: Vec<_> = (0..args.records).map(|i| record(i, 300)).collect();
    eprintln!("bench: writing {} encounters to {encounters}", args.records);
    Producer::new(&settings)?.send_batch(&encounters, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    let n = args.records as f64;

    let raw = consume_raw(&settings, &encounters, args.records).await?;
    eprintln!("bench: raw consume {:.2} s", raw.as_secs_f64());

    let schema = format!("bench_kpi_{:x}", rand::random::<u32>());
    let url = guardian_pg::with_new_schema(&args.database_url, &schema).await?;
    let pool = guardian_pg::connect(&url, 4).await?;
    let config = guardian_kpi::Config {
        kafka: settings.clone(),
        group: "bench-kpi".into(),
        encounters_topic: encounters.clone(),
        slo_topic: slo.clone(),
        rollups_topic: rollups.clone(),
        dead_letter_topic: dlq.clone(),
        signers: None,
        lateness_ms: 300_000,
    };
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let task = tokio::spawn(guardian_kpi::run(config, pool.clone(), shutdown.clone()));
    loop {
        let done: i64 =
            sqlx::query("SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
                .fetch_one(&pool)
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
        if done >= args.records as i64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the rollup did not finish in 10 minutes ({done} of {} applied)", args.records);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pipeline = started.elapsed();
    shutdown.trigger();
    task.await?.context("the rollup service")?;
    eprintln!("bench: kpi rollup {:.2} s", pipeline.as_secs_f64());

    let python = match &args.python {
        Some(py) => {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
            let out = Command::new(py)
                .arg(format!("{dir}/tests/kpi/bench_python_rollup.py"))
                .args([
                    &args.kafka.bootstrap_servers,
                    &encounters,
                    &args.records.to_string(),
                    &format!("{dir}/schemas/encounter.avsc"),
                ])
                .output()
                .with_context(|| format!("running {py}"))?;
            if !out.status.success() {
                bail!("the Python consumer failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            v["seconds"].as_f64()
        }
        None => None,
    };
    let _ = admin.delete(&[encounters, slo, rollups, dlq]).await;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await;

    let rate = |d: f64| n / d;
    println!();
    println!("{} encounters of 300 bytes, 6 partitions, 10 hospitals; one run each", args.records);
    println!();
    println!("| measurement | records/s | vs raw consume | target |");
    println!("|---|---:|---:|---|");
    println!("| raw consume (rust-rdkafka loop) | {:.0} | 100% | |", rate(raw.as_secs_f64()));
    let ours = rate(pipeline.as_secs_f64());
    println!(
        "| guardian kpi: decode → windows → PostgreSQL commit with offsets | {ours:.0} | {:.0}% | ≥ 70% of raw |",
        100.0 * raw.as_secs_f64() / pipeline.as_secs_f64()
    );
    if let Some(py) = python {
        println!(
            "| Python (confluent-kafka + fastavro), same rollup in memory | {:.0} | {:.0}% | ours ≥ 20× ({:.1}×) |",
            rate(py),
            100.0 * raw.as_secs_f64() / py,
            py / pipeline.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
