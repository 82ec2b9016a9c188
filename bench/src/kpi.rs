//! `guardian-bench kpi`: encounters per second through the KPI rollup (decode → window →
//! exactly-once commit in PostgreSQL, outbox to the compacted topic), next to the raw
//! consume rate of the same topic and a straightforward Python consumer doing the same
//! rollup in memory (`tests/kpi/bench_python_rollup.py`), in the same run.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use sqlx::Row;

use crate::BenchKpiArgs;
use crate::kafka::{consume_raw_timed, fresh_topic, record};

pub async fn run(args: BenchKpiArgs) -> Result<ExitCode> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let settings = args.kafka.settings(&crate::client("kpi"));
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let topics = RollupTopics::fresh(&admin, "kpi").await?;
    let encounters = topics.encounters.clone();
    let records: Vec<_> = (0..args.records).map(|i| record(i, 300)).collect();
    eprintln!("bench: writing {} encounters to {encounters}", args.records);
    Producer::new(&settings)?.send_batch(&encounters, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    let n = args.records as f64;

    let (raw_all, raw) = consume_raw_timed(&settings, &encounters, args.records).await?;
    eprintln!(
        "bench: raw consume {:.2} s in all, {:.2} s from the first record",
        raw_all.as_secs_f64(),
        raw.as_secs_f64()
    );

    let schema = format!("bench_kpi_{:x}", rand::random::<u32>());
    let url = guardian_pg::with_new_schema(&args.database_url, &schema).await?;
    let pool = guardian_pg::connect(&url, 4).await?;
    let config = topics.config(&settings, "bench-kpi");
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let task = tokio::spawn(guardian_kpi::run(config, pool.clone(), shutdown.clone()));
    // The rate is timed from the first committed batch (start-up, migrations and the
    // consumer group's join are reported apart) to the last record in the day windows.
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let done: i64 =
            sqlx::query("SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
                .fetch_one(&pool)
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= args.records as i64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the rollup did not finish in 10 minutes ({done} of {} applied)", args.records);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished = Instant::now();
    shutdown.trigger();
    task.await?.context("the rollup service")?;
    let (first_at, first_done) = first.expect("done > 0 was seen");
    let startup = first_at - started;
    let steady = (args.records as i64 - first_done) as f64 / (finished - first_at).as_secs_f64().max(1e-6);
    eprintln!(
        "bench: kpi rollup {:.2} s in all; first batch ({first_done} records) committed after {:.2} s",
        (finished - started).as_secs_f64(),
        startup.as_secs_f64()
    );
    if first_done as u64 * 2 > args.records {
        bail!("the first batch held {first_done} of {} records: raise --records for a steady rate", args.records);
    }

    let python = match args.python.as_deref().filter(|p| !p.is_empty()) {
        Some(py) => {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
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
    topics.delete(&admin).await;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await;

    let rate = |d: f64| n / d;
    println!();
    println!(
        "{} encounters of 300 bytes, 6 partitions, 10 hospitals; one run each; rates from the first record (ours: from the first committed batch)",
        args.records
    );
    println!();
    println!("| measurement | records/s | vs raw consume | target |");
    println!("|---|---:|---:|---|");
    let raw_rate = (n - 1.0) / raw.as_secs_f64().max(1e-6);
    println!("| raw consume (rust-rdkafka loop) | {raw_rate:.0} | 100% | |");
    println!(
        "| guardian kpi: decode → windows → PostgreSQL commit with offsets | {steady:.0} | {:.0}% | ≥ 70% of raw |",
        100.0 * steady / raw_rate
    );
    if let Some(py) = python {
        println!(
            "| Python (confluent-kafka + fastavro), same rollup in memory | {:.0} | {:.0}% | ours ≥ 20× ({:.1}×) |",
            rate(py),
            100.0 * rate(py) / raw_rate,
            steady / rate(py)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The four topics of a rollup service under benchmark, made fresh for the run.
pub(super) struct RollupTopics {
    pub encounters: String,
    slo: String,
    rollups: String,
    dlq: String,
}

impl RollupTopics {
    pub async fn fresh(admin: &guardian_kafka::admin::Admin, base: &str) -> Result<Self> {
        Ok(RollupTopics {
            encounters: fresh_topic(admin, &format!("{base}-encounters")).await?,
            slo: fresh_topic(admin, &format!("{base}-slo")).await?,
            rollups: fresh_topic(admin, &format!("{base}-rollups")).await?,
            dlq: fresh_topic(admin, &format!("{base}-dlq")).await?,
        })
    }

    /// The service's configuration on these topics, with the production defaults.
    pub fn config(&self, settings: &guardian_kafka::KafkaSettings, group: &str) -> guardian_kpi::Config {
        guardian_kpi::Config {
            kafka: settings.clone(),
            group: group.into(),
            encounters_topic: self.encounters.clone(),
            slo_topic: self.slo.clone(),
            rollups_topic: self.rollups.clone(),
            dead_letter_topic: self.dlq.clone(),
            signers: None,
            lateness_ms: 300_000,
            max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
            dedup_cache_events: guardian_kpi::DEFAULT_DEDUP_CACHE_EVENTS,
            dedup_horizon_days: guardian_kpi::DEFAULT_DEDUP_HORIZON_DAYS,
        }
    }

    pub async fn delete(self, admin: &guardian_kafka::admin::Admin) {
        let _ = admin.delete(&[self.encounters, self.slo, self.rollups, self.dlq]).await;
    }
}
