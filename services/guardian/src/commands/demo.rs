//! `guardian demo`: the whole pipeline that exists so far, on the local stack.
//!
//! Applies the topic catalogue, runs synthetic hospitals (with a trickle of undecodable
//! records), an exactly-once encounter ledger in PostgreSQL (offsets in the same
//! transaction; bad records to the dead-letter topic) and the privacy accountant, whose
//! budgets climb through every level until the hospitals' spends are refused, the KPI
//! rollups (day windows printed) and the SLO monitor (burn rates on /metrics). Alongside, a
//! federated session: five demo hospitals train the logistic-regression model with DP-SGD
//! and secure aggregation, the models go to S3, and the session is replayed from its topics
//! at the end. Serves /metrics, /healthz and /readyz, prints progress every 5 seconds,
//! stops on Ctrl-C or after --duration-secs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use guardian_kafka::consumer::BatchPolicy;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{ProcessError, Producer};
use guardian_pg::{PgEffect, PgOffsetConsumer};
use guardian_schemas::Codec;
use guardian_schemas::records::Encounter;
use guardian_topics::{TopicId, plan};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::{PgConnection, Row};

use crate::cli::{DemoArgs, SimulateArgs};
use crate::common;

const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS demo_encounter_ledger (
    hospital_id text PRIMARY KEY,
    encounters bigint NOT NULL,
    soap_complete bigint NOT NULL
)";

/// Counts encounters per hospital, exactly once.
struct Ledger {
    codec: Codec,
}

impl PgEffect for Ledger {
    type Item = Encounter;

    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Encounter, ProcessError> {
        let payload = msg.payload().ok_or_else(|| ProcessError::decode("empty record"))?;
        let e: Encounter = self.codec.decode(payload)?;
        if e.soap_sections_completed > e.soap_sections_expected || e.soap_sections_completed < 0 {
            return Err(ProcessError::poison("validation", "more SOAP sections completed than expected"));
        }
        Ok(e)
    }

    async fn apply(&mut self, tx: &mut PgConnection, items: &[Encounter]) -> Result<(), sqlx::Error> {
        let hospitals: Vec<&str> = items.iter().map(|e| e.hospital_id.as_str()).collect();
        let complete: Vec<i64> =
            items.iter().map(|e| i64::from(e.soap_sections_completed == e.soap_sections_expected)).collect();
        sqlx::query(
            "INSERT INTO demo_encounter_ledger (hospital_id, encounters, soap_complete)
             SELECT h, count(*), sum(c) FROM unnest($1::text[], $2::bigint[]) AS x(h, c) GROUP BY h
             ON CONFLICT (hospital_id) DO UPDATE SET
               encounters = demo_encounter_ledger.encounters + excluded.encounters,
               soap_complete = demo_encounter_ledger.soap_complete + excluded.soap_complete",
        )
        .bind(&hospitals)
        .bind(&complete)
        .execute(&mut *tx)
        .await
        .map(|_| ())
    }
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;

    let catalogue = common::kafka_catalogue(&args.kafka)?;
    let admin = common::admin(&args.kafka).await?;
    let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    let view = admin.observe(&names).await?;
    let p = plan(&catalogue, &view.topics, view.brokers);
    for change in &p.changes {
        println!("{change}");
    }
    admin.apply(&p).await?;
    println!("topics: {} declared, {} change(s) applied", names.len(), p.changes.len());

    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    guardian_pg::apply_ddl(&pool, LEDGER_DDL).await.context("creating the demo ledger")?;
    let settings = common::settings(&args.kafka, "guardian-demo");
    let dlq =
        DeadLetterSink::new(Producer::new(&settings)?, catalogue.topic(TopicId::DeadLetter)?, "guardian-demo-ledger");
    let encounters = catalogue.topic(TopicId::Encounters)?;
    let consumer = PgOffsetConsumer::new(
        &settings,
        pool.clone(),
        "guardian-demo-ledger",
        &[&encounters],
        dlq,
        BatchPolicy::default(),
    )
    .await?;
    let accountant = guardian_accountant::Config {
        kafka: common::settings(&args.kafka, "guardian-demo-accountant"),
        group: "guardian-demo-accountant".into(),
        spend_topic: catalogue.topic(TopicId::BudgetSpend)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        destinations: guardian_accountant::publish::Destinations {
            status_topic: catalogue.topic(TopicId::BudgetStatus)?,
            alerts_topic: catalogue.topic(TopicId::PrivacyAlerts)?,
        },
        limits: guardian_accountant::Limits::default(),
        signers: None,
    };
    let accountant = tokio::spawn(guardian_accountant::run(accountant, pool.clone(), shutdown.clone()));
    let kpi = guardian_kpi::Config {
        kafka: common::settings(&args.kafka, "guardian-demo-kpi"),
        group: "guardian-demo-kpi".into(),
        encounters_topic: catalogue.topic(TopicId::Encounters)?,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        rollups_topic: catalogue.topic(TopicId::KpiRollups)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        signers: None,
        lateness_ms: 300_000,
        dedup_cache_events: guardian_kpi::DEFAULT_DEDUP_CACHE_EVENTS,
        dedup_horizon_days: guardian_kpi::DEFAULT_DEDUP_HORIZON_DAYS,
    };
    let kpi = tokio::spawn(guardian_kpi::run(kpi, pool.clone(), shutdown.clone()));
    let slo = guardian_slo::Config {
        kafka: common::settings(&args.kafka, "guardian-demo-slo"),
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: 30 * 86_400_000,
        publish_every: Duration::from_secs(5),
    };
    let slo = tokio::spawn(guardian_slo::run(slo, shutdown.clone(), || {}));
    readiness.set_ready(true);

    println!("metrics:   http://{bound}/metrics");
    println!("health:    http://{bound}/healthz  http://{bound}/readyz");
    println!("database:  {} (table demo_encounter_ledger)", guardian_pg::connect::redact(&args.database_url));
    println!("hospitals: {} synthetic, {} encounters/s; Ctrl-C stops", args.hospitals, args.rate);

    let sim_args = SimulateArgs {
        kafka: args.kafka.clone(),
        hospitals: args.hospitals,
        rate: args.rate,
        // A new seed each run: event ids do not repeat those of earlier demos.
        seed: super::simulate::now_ms() as u64 / 1000,
        count: None,
        poison_rate: 0.002,
    };
    let simulator = tokio::spawn(super::simulate::run(sim_args, shutdown.clone()));
    let ledger = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { consumer.run(&mut Ledger { codec: Codec::embedded() }, shutdown.wait()).await })
    };
    if let Some(secs) = args.duration_secs {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            s.trigger();
        });
    }
    let federation = if args.fl_rounds > 0 {
        Some(tokio::spawn(guardian_federated::service::demo_session(
            args.kafka.clone(),
            args.s3.clone(),
            args.fl_rounds,
            shutdown.clone(),
        )))
    } else {
        None
    };
    let mut report = tokio::time::interval(Duration::from_secs(5));
    report.tick().await;
    while !shutdown.is_triggered() {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = report.tick() => {}
        }
        let rows = sqlx::query(
            "SELECT hospital_id, encounters, soap_complete FROM demo_encounter_ledger ORDER BY hospital_id",
        )
        .fetch_all(&pool)
        .await?;
        let summary: Vec<String> = rows
            .iter()
            .map(|r| {
                let (n, c): (i64, i64) = (r.get(1), r.get(2));
                format!("{} {} ({:.1}% complete)", r.get::<String, _>(0), n, 100.0 * c as f64 / n.max(1) as f64)
            })
            .collect();
        println!("ledger: {}", summary.join(" | "));
        let budgets = sqlx::query(
            "SELECT scope_key, epsilon_spent, level FROM privacy_budgets ORDER BY scope_key = 'global', scope_key",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        let budgets: Vec<String> = budgets
            .iter()
            .map(|r| {
                let key: String = r.get(0);
                format!("{} ε {:.3} {}", key.trim_start_matches("hospital/"), r.get::<f64, _>(1), r.get::<String, _>(2))
            })
            .collect();
        if !budgets.is_empty() {
            println!("privacy: {}", budgets.join(" | "));
        }
        let kpis = sqlx::query(
            "SELECT hospital_id, sum(encounters)::bigint, sum(soap_completed)::float8 / nullif(sum(soap_expected), 0),
                    max(generation_p95)
             FROM kpi_rollups WHERE window_size = 'DAY' GROUP BY hospital_id ORDER BY hospital_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        let kpis: Vec<String> = kpis
            .iter()
            .map(|r| {
                format!(
                    "{} {} enc, {:.1}% SOAP, p95 {:.0} ms",
                    r.get::<String, _>(0),
                    r.get::<i64, _>(1),
                    100.0 * r.get::<Option<f64>, _>(2).unwrap_or(0.0),
                    r.get::<Option<f64>, _>(3).unwrap_or(0.0)
                )
            })
            .collect();
        if !kpis.is_empty() {
            println!("kpi:     {} (day windows; burn rates on /metrics)", kpis.join(" | "));
        }
    }
    if let Some(f) = federation {
        f.await??;
    }
    let sent = simulator.await??;
    let stats = ledger.await??;
    accountant.await??;
    kpi.await??;
    slo.await??;
    println!(
        "demo: sent {} encounters ({} undecodable), {} SLO events, {} budget spends; ledger applied {}, dead-lettered {}",
        sent.encounters, sent.poison, sent.slo, sent.spends, stats.applied, stats.dead_lettered
    );
    Ok(ExitCode::SUCCESS)
}
