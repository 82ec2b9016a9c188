//! `guardian-bench kpi`: encounters per second and CPU-seconds per million encounters
//! through the KPI rollup (decode → window → exactly-once commit in PostgreSQL, outbox to
//! the compacted topic), next to, in the same run and on the same input: the raw consume
//! rate of the topic, the Kafka Streams peer (`tests/peers/kpi-streams`: the same windows
//! in the DSL under exactly_once_v2, to a compacted topic of its own) and a straightforward
//! Python consumer doing the rollup in memory (`tests/kpi/bench_python_rollup.py`).
//!
//! The service and the peer each run as a process of their own, so that `/proc/<pid>/stat`
//! gives each one's CPU time; each is timed on its output topic, from its first rollup to
//! the moment its windows of every size hold every record. Both topics are then compared
//! window for window, field for field (counts, sums and the three percentiles).

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use guardian_kafka::reader::{Start, Tail};
use guardian_kafka::{KafkaSettings, Producer};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{KpiRollup, WindowSize};

use crate::kafka::{consume_raw_timed, fresh_topic, fresh_topic_with, record};
use crate::{BenchKpiArgs, BenchKpiServiceArgs, KillOnDrop, cpu};

pub async fn run(args: BenchKpiArgs) -> Result<ExitCode> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let settings = args.kafka.settings(&crate::client("kpi"));
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let topics = RollupTopics::fresh(&admin, "kpi").await?;
    let peer_output = fresh_topic_with(&admin, "kpi-streams-rollups", compacted()).await?;
    let encounters = topics.encounters.clone();
    let records: Vec<_> = (0..args.records).map(|i| record(i, 300)).collect();
    eprintln!("bench: writing {} encounters to {encounters}", args.records);
    Producer::new(&settings)?.send_batch(&encounters, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    drop(records);
    let n = args.records as f64;

    let (raw_all, raw) = consume_raw_timed(&settings, &encounters, args.records).await?;
    eprintln!(
        "bench: raw consume {:.2} s in all, {:.2} s from the first record",
        raw_all.as_secs_f64(),
        raw.as_secs_f64()
    );

    // Ours: the service in a process of its own (this binary's hidden `kpi-service`), so
    // its CPU time is its own.
    let schema = format!("bench_kpi_{:x}", rand::random::<u32>());
    let url = guardian_pg::with_new_schema(&args.database_url, &schema).await?;
    let pool = guardian_pg::connect(&url, 2).await?;
    let mut service = Command::new(std::env::current_exe()?);
    service
        .args(["kpi-service", "--bootstrap-servers", &args.kafka.bootstrap_servers, "--database-url", &url])
        .args(["--encounters", &topics.encounters, "--slo", &topics.slo, "--rollups", &topics.rollups])
        .args(["--dead-letter", &topics.dlq, "--group", "bench-kpi"]);
    for (k, v) in &args.kafka.kafka_config {
        service.arg("--kafka-config").arg(format!("{k}={v}"));
    }
    let ours = measure(&settings, "guardian kpi", service, &topics.rollups, args.records).await?;

    // The peer: Kafka Streams on the same input, its output on a compacted topic of its own.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let peer = match args.kafka_streams_classpath.as_deref().filter(|p| !p.is_empty()) {
        Some(classpath) => {
            let app = format!("bench-kpi-streams-{:x}", rand::random::<u32>());
            let state = std::env::temp_dir().join(&app);
            let mut java = Command::new(&args.java);
            java.args(["-cp", classpath, "org.phoenixguardian.peers.KpiStreams", &args.kafka.bootstrap_servers])
                .args([&encounters, &peer_output, &app])
                .args([&format!("{dir}/schemas/encounter.avsc"), &format!("{dir}/schemas/kpi_rollup.avsc")])
                .arg(&state)
                .arg(args.kafka_streams_threads.to_string());
            let result = measure(&settings, "Kafka Streams peer", java, &peer_output, args.records).await;
            let _ = std::fs::remove_dir_all(&state);
            let internal: Vec<String> =
                ["minute", "hour", "day"].iter().map(|s| format!("{app}-kpi-{s}-changelog")).collect();
            let _ = admin.delete(&internal).await;
            Some(result?)
        }
        None => {
            eprintln!(
                "bench: no GUARDIAN_KAFKA_STREAMS_CLASSPATH (tests/stack/stack.sh bench-tools builds the peer): its row is skipped"
            );
            None
        }
    };
    if let Some(peer) = &peer {
        same_windows(&ours.windows, &peer.windows)?;
        eprintln!("bench: both produced the same {} windows, field for field", ours.windows.len());
    }

    let python = match args.python.as_deref().filter(|p| !p.is_empty()) {
        Some(py) => {
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
    let _ = admin.delete(&[peer_output]).await;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await;

    println!();
    println!(
        "{} encounters of 300 bytes, 6 partitions, 10 hospitals, {} windows; one run each. Rates from the first \
         rollup on the output topic to the last; CPU from /proc: the process's own and the whole machine's \
         (broker and PostgreSQL included), while steady (first to last rollup) and over the whole run (start to last)",
        args.records,
        ours.windows.len()
    );
    println!();
    println!(
        "| measurement | records/s | vs raw consume | CPU-s per M records, process: steady / whole run | machine: steady / whole run | target |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let raw_rate = (n - 1.0) / raw.as_secs_f64().max(1e-6);
    println!("| raw consume (rust-rdkafka loop) | {raw_rate:.0} | 100% | | | |");
    let row = |name: &str, r: &Run| {
        println!(
            "| {name} | {:.0} | {:.0}% | {:.1} / {:.1} | {:.1} / {:.1} | |",
            r.rate,
            100.0 * r.rate / raw_rate,
            r.cpu_steady.0,
            r.cpu_whole.0,
            r.cpu_steady.1,
            r.cpu_whole.1
        )
    };
    row(
        "guardian kpi: decode → dedup → windows → PostgreSQL commit with offsets → outbox → compacted topic (exactly once)",
        &ours,
    );
    if let Some(peer) = &peer {
        row(
            &format!(
                "Kafka Streams 4.4.0 peer: 3 windowed aggregations, RocksDB stores, caches on, exactly_once_v2, {} stream thread(s)",
                args.kafka_streams_threads
            ),
            peer,
        );
        println!(
            "| ours vs Kafka Streams | {:.2}× | | {:.2}× / {:.2}× | {:.2}× / {:.2}× | ≥ 1.5× records/s; ≤ 0.5× process CPU |",
            ours.rate / peer.rate,
            ours.cpu_steady.0 / peer.cpu_steady.0,
            ours.cpu_whole.0 / peer.cpu_whole.0,
            ours.cpu_steady.1 / peer.cpu_steady.1,
            ours.cpu_whole.1 / peer.cpu_whole.1
        );
    }
    if let Some(py) = python {
        println!(
            "| Python (confluent-kafka + fastavro), same rollup in memory, nothing persisted | {:.0} | {:.0}% | | | (ours {:.1}×) |",
            n / py,
            100.0 * (n / py) / raw_rate,
            ours.rate / (n / py)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One rollup process measured on its output topic.
struct Run {
    /// Records per second from its first rollup on the topic to its last.
    rate: f64,
    /// CPU-seconds per million records (the process's, the machine's) while steady.
    cpu_steady: (f64, f64),
    /// The same over the whole run, start-up included.
    cpu_whole: (f64, f64),
    /// The newest rollup of every window.
    windows: BTreeMap<String, KpiRollup>,
}

/// Starts `command` and follows `output` until its windows of every size count `records`
/// encounters; stops the process (SIGTERM) once they do.
async fn measure(
    settings: &KafkaSettings,
    name: &str,
    mut command: Command,
    output: &str,
    records: u64,
) -> Result<Run> {
    let codec = Codec::embedded();
    let tail = Tail::open(settings, "bench-kpi", &[output], Start::Beginning).await?;
    // Its log goes to a file (a pipe nobody reads would block it once full).
    let log_path = std::env::temp_dir().join(format!("bench-kpi-{:x}.log", rand::random::<u32>()));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut child =
        KillOnDrop(command.stdout(Stdio::null()).stderr(log).spawn().with_context(|| format!("starting the {name}"))?);
    let pid = child.0.id();
    let at_start = cpu::Sample::of(pid).context("reading /proc")?;
    let mut windows: BTreeMap<String, KpiRollup> = BTreeMap::new();
    // Encounters counted in each window size's rollups (MINUTE, HOUR, DAY): done when every
    // size holds every record.
    let mut totals = [0i64; 3];
    let size = |w: WindowSize| match w {
        WindowSize::Minute => 0,
        WindowSize::Hour => 1,
        WindowSize::Day => 2,
    };
    let mut first: Option<(Instant, i64, cpu::Sample)> = None;
    while totals.iter().any(|t| *t < records as i64) {
        if let Some(status) = child.0.try_wait()? {
            let err = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = err.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            bail!(
                "the {name} exited ({status}) with {:?} of {records} records rolled up (minute, hour, day); the end of its log ({}):\n{}",
                totals,
                log_path.display(),
                last.join("\n")
            );
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the {name} did not finish in 15 minutes ({totals:?} of {records} records rolled up)");
        }
        let Some(m) = tail.next(Duration::from_millis(200)).await? else { continue };
        if !m.has_value {
            continue;
        }
        let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
        let r: KpiRollup = codec.decode(&m.payload).with_context(|| format!("a rollup of the {name} on {output}"))?;
        totals[size(r.window)] += r.encounters;
        if let Some(old) = windows.insert(key, r) {
            totals[size(old.window)] -= old.encounters;
        }
        if first.is_none() && totals[2] > 0 {
            first = Some((Instant::now(), totals[2], cpu::Sample::of(pid).context("reading /proc")?));
        }
    }
    let finished = Instant::now();
    let at_end = cpu::Sample::of(pid).context("reading /proc")?;
    let (first_at, first_done, at_first) = first.expect("the loop ends after a DAY rollup");
    eprintln!(
        "bench: {name}: {:.2} s in all; first rollup ({first_done} records) after {:.2} s",
        (finished - started).as_secs_f64(),
        (first_at - started).as_secs_f64()
    );
    if first_done as u64 * 2 > records {
        bail!("the {name}'s first rollup held {first_done} of {records} records: raise --records for a steady rate");
    }
    let steady = (records as i64 - first_done) as f64;
    let run = Run {
        rate: steady / (finished - first_at).as_secs_f64().max(1e-6),
        cpu_steady: at_first.per_million(&at_end, steady),
        cpu_whole: at_start.per_million(&at_end, records as f64),
        windows,
    };
    terminate(child, name).await;
    let _ = std::fs::remove_file(&log_path);
    Ok(run)
}

/// SIGTERM, then up to 30 s for a clean exit (the services commit their last work), then
/// SIGKILL.
async fn terminate(mut child: KillOnDrop, name: &str) {
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    for _ in 0..300 {
        if let Ok(Some(_)) = child.0.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("bench: the {name} did not stop within 30 s of SIGTERM: killed");
}

/// Both sides' windows agree key for key and field for field.
fn same_windows(ours: &BTreeMap<String, KpiRollup>, peer: &BTreeMap<String, KpiRollup>) -> Result<()> {
    for (key, mine) in ours {
        match peer.get(key) {
            None => bail!("window {key}: ours has it, the Kafka Streams peer does not"),
            Some(theirs) if theirs != mine => {
                bail!("window {key} differs:\n  ours: {mine:?}\n  peer: {theirs:?}")
            }
            Some(_) => {}
        }
    }
    if let Some(key) = peer.keys().find(|k| !ours.contains_key(*k)) {
        bail!("window {key}: the Kafka Streams peer has it, ours does not");
    }
    Ok(())
}

/// The configuration of a compacted topic (what a rollup topic is).
fn compacted() -> BTreeMap<String, String> {
    BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
}

/// `guardian-bench kpi-service`: the KPI rollup service on the benchmark's topics, until
/// SIGTERM.
pub async fn service(args: BenchKpiServiceArgs) -> Result<ExitCode> {
    let settings = args.kafka.settings(&crate::client("kpi"));
    let pool = guardian_pg::connect(&args.database_url, 4).await?;
    let topics =
        RollupTopics { encounters: args.encounters, slo: args.slo, rollups: args.rollups, dlq: args.dead_letter };
    let config = topics.config(&settings, &args.group);
    guardian_kpi::run(config, pool, Shutdown::on_signals()).await?;
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
            rollups: fresh_topic_with(admin, &format!("{base}-rollups"), compacted()).await?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn window(hospital: &str, encounters: i64, p99: Option<f64>) -> (String, KpiRollup) {
        let r = KpiRollup {
            hospital_id: hospital.into(),
            window: WindowSize::Minute,
            window_start: 60_000,
            encounters,
            soap_sections_expected: 4 * encounters,
            soap_sections_completed: 4 * encounters,
            generation_ms_p50: p99,
            generation_ms_p95: p99,
            generation_ms_p99: p99,
            ratings: encounters,
            rating_sum: 5 * encounters,
            slo_good: 0,
            slo_total: 0,
            late_corrections: 0,
        };
        (format!("{hospital}/MINUTE/60000"), r)
    }

    #[test]
    fn windows_must_agree_key_for_key_and_field_for_field() {
        let ours = BTreeMap::from([window("h001", 10, Some(1200.0)), window("h002", 3, Some(900.0))]);
        assert!(same_windows(&ours, &ours.clone()).is_ok());

        let mut other = ours.clone();
        other.insert(window("h002", 3, Some(901.0)).0, window("h002", 3, Some(901.0)).1);
        let err = same_windows(&ours, &other).unwrap_err().to_string();
        assert!(err.contains("h002/MINUTE/60000 differs"), "{err}");

        let mut fewer = ours.clone();
        fewer.remove("h001/MINUTE/60000");
        assert!(same_windows(&ours, &fewer).unwrap_err().to_string().contains("the Kafka Streams peer does not"));
        assert!(same_windows(&fewer, &ours).unwrap_err().to_string().contains("ours does not"));
    }
}
