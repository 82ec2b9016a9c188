//! `guardian demo`: the whole pipeline that exists so far, on the local stack.
//!
//! Applies the topic catalogue, runs synthetic hospitals (with a trickle of undecodable
//! records, dead-lettered by the consumers) and the privacy accountant, whose
//! budgets climb through every level until the hospitals' spends are refused, the KPI
//! rollups (day windows printed) and the SLO monitor (burn rates on /metrics). Alongside, a
//! federated session: five demo hospitals train the logistic-regression model with DP-SGD
//! and secure aggregation, the models go to S3, and the session is replayed from its topics
//! at the end. Serves /metrics, /healthz and /readyz, prints progress every 5 seconds,
//! stops on Ctrl-C or after --duration-secs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use guardian_topics::{ServiceId, TopicId, plan};

use crate::cli::{DemoArgs, SimulateArgs};
use crate::common;

/// The demo's name on its ops endpoint (metrics discovery).
const DEMO: &str = "demo";

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let (shutdown, ops) = common::serve_ops(DEMO, args.listen, None).await?;
    let (readiness, bound) = (ops.readiness.clone(), ops.bound);

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
    if let Some(client) = args.kafka.registry_client()? {
        let subjects = guardian_registry::subjects(&catalogue, guardian_schemas::Registry::embedded())?;
        let outcomes = guardian_registry::sync(&client, &subjects, false).await?;
        let new = outcomes.iter().filter(|o| o.new).count();
        println!("schemas:  {} subjects at {} ({new} registered now)", outcomes.len(), client.url());
    }
    args.kafka.use_wire_format(&catalogue).await?;
    println!(
        "wire:     {}",
        if guardian_schemas::Codec::embedded().writes_confluent() {
            "Confluent framing (magic 0 + the registry's schema id): any Confluent-compatible reader"
        } else {
            "Avro single-object encoding (no registry)"
        }
    );

    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    // As a deployment's `guardian db migrate`: every service's tables, row-level security
    // on the per-hospital ones, the aggregate view (what `guardian doctor` checks).
    super::db::migrate_schema(&pool).await?;
    let accountant = guardian_accountant::Config {
        kafka: args.kafka.settings(&ServiceId::Accountant.client_for("demo")),
        group: ServiceId::Accountant.group_for("demo"),
        spend_topic: catalogue.topic(TopicId::BudgetSpend)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        destinations: guardian_accountant::publish::Destinations {
            status_topic: catalogue.topic(TopicId::BudgetStatus)?,
            alerts_topic: catalogue.topic(TopicId::PrivacyAlerts)?,
            decisions_topic: catalogue.topic(TopicId::SpendDecisions)?,
        },
        // The pilot's per-hospital limit; the federation's is raised from 10 to 100: it is
        // kept in the stack's database across runs, and every demo spends about 7 of it
        // (synthetic hospitals and the session), so later demos' rounds would be refused.
        limits: guardian_accountant::Limits { global_epsilon: 100.0, ..guardian_accountant::Limits::default() },
        signers: None,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    let accountant = tokio::spawn(guardian_accountant::run(accountant, pool.clone(), shutdown.clone()));
    let kpi = guardian_kpi::Config {
        kafka: args.kafka.settings(&ServiceId::Kpi.client_for("demo")),
        group: ServiceId::Kpi.group_for("demo"),
        encounters_topic: catalogue.topic(TopicId::Encounters)?,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        rollups_topic: catalogue.topic(TopicId::KpiRollups)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        signers: None,
        lateness_ms: 300_000,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
        dedup_cache_events: guardian_kpi::DEFAULT_DEDUP_CACHE_EVENTS,
        dedup_horizon_days: guardian_kpi::DEFAULT_DEDUP_HORIZON_DAYS,
    };
    let kpi = tokio::spawn(guardian_kpi::run(kpi, pool.clone(), shutdown.clone()));
    let slo = guardian_slo::Config {
        kafka: args.kafka.settings(&ServiceId::Slo.client_for("demo")),
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: 30 * 86_400_000,
        publish_every: Duration::from_secs(5),
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    let slo = tokio::spawn(guardian_slo::run(slo, shutdown.clone(), || {}));
    // The registry the dashboard groups by, and availability probes for the uptime KPI.
    guardian_rollups::readiness::load_registry(&pool, &guardian_rollups::readiness::demo_registry(args.hospitals))
        .await?;
    let probes = {
        let (kafka, n, s) = (args.kafka.clone(), args.hospitals, shutdown.clone());
        tokio::spawn(async move {
            super::simulate::availability(&kafka, n, Duration::from_secs(5), super::simulate::now_ms() as u64, s).await
        })
    };
    // The dashboard, with a fresh operator token for this run (Basic auth: any user name).
    let token = guardian_dashboard::tokens::new_token();
    let tokens = std::env::temp_dir().join(format!("guardian-demo-tokens-{}.toml", std::process::id()));
    std::fs::write(&tokens, format!("[operators]\n\"{}\" = \"demo\"\n", guardian_dashboard::tokens::digest(&token)))?;
    let dashboard = guardian_dashboard::DashboardConfig {
        kafka: args.kafka.clone(),
        database_url: args.database_url.clone(),
        k: 3,
        days: 30,
        listen: args.dashboard_listen,
        tokens: Some(tokens.clone()),
        slo_period_ms: 30 * 86_400_000,
    };
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    let dashboard = tokio::spawn(guardian_dashboard::serve(dashboard, shutdown.clone(), move |a| {
        let _ = url_tx.send(a);
    }));
    let dashboard_at = url_rx.await.map_err(|_| anyhow::anyhow!("the dashboard did not start (see the log above)"))?;
    readiness.set_ready(true);

    println!("dashboard: http://{dashboard_at}/  (what anyone may see: KPIs by region, EHR vendor, tier, phase)");
    println!("operator:  http://demo:{token}@{dashboard_at}/operator  (hospitals, budgets, sessions, SLOs)");
    println!("metrics:   http://{bound}/metrics  (and http://{dashboard_at}/metrics)");
    println!("health:    http://{bound}/healthz  http://{bound}/readyz");
    println!("database:  {}", guardian_pg::connect::redact(&args.database_url));
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
        // One compact line: the KPIs so far, the budgets by level.
        let levels = guardian_accountant::store::budget_levels(&pool).await.unwrap_or_default();
        let count = |l: &str| levels.iter().filter(|b| b.2 == l).count();
        let kpis = guardian_rollups::readiness::readiness(&pool, 0, i64::MAX).await.unwrap_or_default();
        let active: Vec<_> = kpis.iter().filter(|r| r.encounters > 0).collect();
        let encounters: i64 = active.iter().map(|r| r.encounters).sum();
        let mean = |f: &dyn Fn(&&guardian_rollups::readiness::Readiness) -> Option<f64>| {
            let v: Vec<f64> = active.iter().filter_map(f).collect();
            if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
        };
        println!(
            "status: {encounters} encounters rolled up for {} hospitals (SOAP {:.1}%, uptime {:.2}%); budgets: {} normal, {} warning, {} high, {} critical, {} exhausted",
            active.len(),
            100.0 * mean(&|r| r.completeness),
            100.0 * mean(&|r| r.uptime),
            count("NORMAL"),
            count("WARNING"),
            count("HIGH"),
            count("CRITICAL"),
            count("EXHAUSTED"),
        );
    }
    if let Some(f) = federation {
        f.await??;
    }
    let sent = simulator.await??;
    accountant.await??;
    let stats = kpi.await??;
    slo.await??;
    let probes = probes.await??;
    dashboard.await??;
    let _ = std::fs::remove_file(&tokens);
    println!("demo: {probes} availability probes");
    println!(
        "demo: sent {} encounters ({} undecodable), {} SLO events, {} budget spends; KPI rollups applied {}, dead-lettered {}",
        sent.encounters, sent.poison, sent.slo, sent.spends, stats.applied, stats.dead_lettered
    );
    Ok(ExitCode::SUCCESS)
}
