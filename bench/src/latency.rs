//! `guardian-bench latency`: end-to-end latency from produce to dashboard-visible at a
//! steady encounter rate. Encounters (event time = now) go to a fresh topic at `--rate`;
//! the KPI rollup service runs as in production (exactly-once commits to PostgreSQL); the
//! real dashboard runs as its own process; a poller reads `/api/overview` back to back.
//! A hospital's records live in one partition and are applied in order, so its k-th
//! record is visible once the dashboard shows k encounters for it: its latency is that
//! poll's time minus the moment the record was handed to the producer (the poll interval
//! is included, so figures are upper bounds).

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;

use crate::kafka::record;
use crate::kpi::RollupTopics;
use crate::{BenchLatencyArgs, KillOnDrop};

const HOSPITALS: u64 = 10;
/// The p99 to stay under, at every rate up to 100,000 encounters/s.
const P99_TARGET: Duration = Duration::from_millis(500);
/// Records are handed to the producer every tick.
const TICK: Duration = Duration::from_millis(5);

/// Per hospital: the send instant of each of its records, in order.
type Sent = Arc<Mutex<BTreeMap<String, Vec<Instant>>>>;

pub async fn run(args: BenchLatencyArgs) -> Result<ExitCode> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let settings = args.kafka.settings(&crate::client("latency"));
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let topics = RollupTopics::fresh(&admin, "latency").await?;
    let encounters = topics.encounters.clone();
    let schema = format!("bench_latency_{:x}", rand::random::<u32>());
    let url = guardian_pg::with_new_schema(&args.database_url, &schema).await?;
    let pool = guardian_pg::connect(&url, 4).await?;
    guardian_pg::offsets::migrate(&pool).await?;
    guardian_kpi::migrate(&pool).await?;
    guardian_pg::tenancy::apply(&pool, &guardian_kpi::TENANT_TABLES, &[guardian_kpi::store::AGGREGATE_VIEW]).await?;

    let shutdown = Shutdown::new();
    let config = topics.config(&settings, "bench-latency");
    let service = tokio::spawn(guardian_kpi::run(config, pool.clone(), shutdown.clone()));

    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let exe = crate::guardian_binary()?;
    // The overview is an operator's: a token of the benchmark's own.
    let token = guardian_dashboard::tokens::new_token();
    let tokens = std::env::temp_dir().join(format!("bench-latency-tokens-{}.toml", std::process::id()));
    std::fs::write(&tokens, format!("[operators]\n\"{}\" = \"bench\"\n", guardian_dashboard::tokens::digest(&token)))?;
    let dashboard = KillOnDrop(
        Command::new(exe)
            .args(["dashboard", "--database-url", &url, "--listen", &listen, "--tokens"])
            .arg(&tokens)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the dashboard")?,
    );

    let producer = Producer::new(&settings)?;
    let sent: Sent = Arc::default();
    let mut next = 0u64;
    // Warm-up: one record per hospital, visible before timing starts (group join, first
    // queries, the dashboard's start).
    send_tick(&producer, &encounters, &sent, &mut next, HOSPITALS).await?;
    let started = Instant::now();
    loop {
        if let Some(counts) = poll(&listen, &token)
            && counts.len() as u64 == HOSPITALS
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the warm-up records did not show on the dashboard within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warm = next;
    eprintln!(
        "bench: warm-up visible after {:.2} s; sending {} encounters/s for {} s",
        started.elapsed().as_secs_f64(),
        args.rate,
        args.seconds
    );

    // The poller: a thread reading the dashboard back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let polls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let poller = {
        let (stop, latencies, sent, listen, polls) =
            (stop.clone(), latencies.clone(), sent.clone(), listen.clone(), polls.clone());
        std::thread::spawn(move || {
            let mut shown: BTreeMap<String, usize> = BTreeMap::new();
            while !stop.load(Ordering::Acquire) {
                let Some(counts) = poll(&listen, &token) else { continue };
                let at = Instant::now();
                polls.fetch_add(1, Ordering::Relaxed);
                let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
                let mut out = latencies.lock().unwrap_or_else(|p| p.into_inner());
                for (hospital, count) in counts {
                    let before = shown.insert(hospital.clone(), count).unwrap_or(1);
                    if let Some(times) = sent.get(&hospital) {
                        // Index 0 is the warm-up record.
                        for t in times.iter().take(count).skip(before.max(1)) {
                            out.push(at.saturating_duration_since(*t));
                        }
                    }
                }
            }
        })
    };

    let per_tick = (args.rate as f64 * TICK.as_secs_f64()).round().max(1.0) as u64;
    let ticks = args.seconds * 1000 / TICK.as_millis() as u64;
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sending = Instant::now();
    for _ in 0..ticks {
        interval.tick().await;
        acks.push(send_tick(&producer, &encounters, &sent, &mut next, per_tick));
        while let Some(Some(r)) = futures::FutureExt::now_or_never(acks.next()) {
            r?;
        }
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    drop(acks);
    let send_secs = sending.elapsed().as_secs_f64();
    let total = next - warm;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (latencies.lock().unwrap_or_else(|p| p.into_inner()).len() as u64) < total {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    let _ = poller.join();
    shutdown.trigger();
    service.await?.context("the rollup service")?;
    drop(dashboard);
    topics.delete(&admin).await;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await;

    let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    if (l.len() as u64) < total {
        bail!("only {} of {total} encounters became visible on the dashboard within 60 s of the last send", l.len());
    }
    l.sort_unstable();
    let q = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let p99 = q(0.99);
    println!();
    println!(
        "{total} encounters at {:.0}/s for {send_secs:.1} s ({HOSPITALS} hospitals); {} dashboard polls ({:.0} ms apart on average)",
        total as f64 / send_secs,
        polls.load(Ordering::Relaxed),
        send_secs * 1000.0 / polls.load(Ordering::Relaxed).max(1) as f64,
    );
    println!();
    println!("| produce → dashboard-visible | p50 | p95 | p99 | max | target p99 | met |");
    println!("|---|---:|---:|---:|---:|---:|:---:|");
    println!(
        "| guardian kpi + dashboard | {} | {} | {} | {} | < {} ms | {} |",
        ms(q(0.50)),
        ms(q(0.95)),
        ms(p99),
        ms(l[l.len() - 1]),
        P99_TARGET.as_millis(),
        if p99 < P99_TARGET { "yes" } else { "no" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Hands `n` records to the producer now (in order: they are queued before this returns
/// its future) and returns the wait for their acknowledgements.
fn send_tick<'a>(
    producer: &'a Producer,
    topic: &'a str,
    sent: &Sent,
    next: &mut u64,
    n: u64,
) -> impl std::future::Future<Output = Result<u64, guardian_kafka::KafkaClientError>> + 'a {
    let now_ms = guardian_runtime::now_ms();
    let records: Vec<_> = (*next..*next + n)
        .map(|i| {
            let mut e = record(i, 300);
            e.hospital_id = format!("h{:03}", i % HOSPITALS + 1);
            e.occurred_at = now_ms;
            e
        })
        .collect();
    *next += n;
    let at = Instant::now();
    {
        let mut sent = sent.lock().unwrap_or_else(|p| p.into_inner());
        for e in &records {
            sent.entry(e.hospital_id.clone()).or_default().push(at);
        }
    }
    let mut fut =
        Box::pin(async move { producer.send_batch(topic, records.iter().map(|r| (r.hospital_id.as_str(), r))).await });
    // One poll queues every record (librdkafka's queue has room for far more than a
    // tick), so ticks reach the broker in order.
    let first = futures::FutureExt::now_or_never(&mut fut);
    async move {
        match first {
            Some(r) => r,
            None => fut.await,
        }
    }
}

/// Encounters per hospital shown on the dashboard's overview.
fn poll(listen: &str, token: &str) -> Option<BTreeMap<String, usize>> {
    let (status, body) = guardian_runtime::http::get_blocking_as(listen, "/api/overview", Some(token))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["hospitals"]
        .as_array()?
        .iter()
        .map(|h| Some((h["hospital_id"].as_str()?.to_string(), h["encounters"].as_u64()? as usize)))
        .collect()
}
