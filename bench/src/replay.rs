//! `guardian-bench replay`: how fast `guardian replay range` moves a topic range, next to
//! the raw consume rate of the same range (a bare rust-rdkafka loop) on the same broker
//! in the same run. The replay reads, copies headers, adds its source header, writes with
//! the idempotent producer and waits for every acknowledgement. With S3 credentials it also
//! archives the range to S3 and restores it into a fresh topic, each timed on its own.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use guardian_kafka::Producer;
use guardian_schemas::Codec;

use crate::kafka::{consume_raw, fresh_topic, record};
use guardian_dr::RangeArgs;
use guardian_dr::replay;

use crate::BenchReplayArgs;

pub async fn run(args: BenchReplayArgs) -> Result<ExitCode> {
    let store = match (&args.s3.s3_access_key, &args.s3.s3_secret_key) {
        (Some(_), Some(_)) => {
            let mut s3 = args.s3.clone();
            s3.model_bucket = args.bucket.clone();
            let store = s3.models()?;
            store.ensure_bucket().await?;
            Some(store)
        }
        _ => {
            eprintln!("bench: no S3 credentials: the archive and restore rows are skipped");
            None
        }
    };
    let args = args.load;
    if args.records == 0 || args.repeat == 0 {
        bail!("--records and --repeat must be at least 1");
    }
    let settings = args.kafka.settings(&crate::client("replay"));
    let admin = args.kafka.admin(&crate::client("admin")).await?;
    let source = fresh_topic(&admin, "replay-source").await?;
    let records: Vec<_> = (0..args.records).map(|i| record(i, args.record_size)).collect();
    let bytes: u64 = records.iter().map(|r| Codec::embedded().encode(r).map(|b| b.len() as u64).unwrap_or(0)).sum();
    eprintln!("bench: writing {} records to {source}", args.records);
    Producer::new(&settings)?.send_batch(&source, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    let mut created = vec![source.clone()];
    let (mut raw, mut replayed, mut archived, mut restored) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.repeat {
        let target = fresh_topic(&admin, "replay-target").await?;
        created.push(target.clone());
        let consume = consume_raw(&settings, &source, args.records).await?;
        let started = Instant::now();
        let consumer = replay::consumer(&settings, &format!("bench-replay-{round}-{}", std::process::id()))?;
        let range =
            RangeArgs { partitions: vec![], from_offset: None, from_time: None, to_offset: None, to_time: None };
        let spans = replay::spans(&consumer, &source, &range)?;
        let total: i64 = spans.iter().map(replay::Span::records).sum();
        let written = replay::copy(consumer, &settings, &source, &target, &spans, total).await?;
        let copy = started.elapsed();
        if written != args.records as i64 {
            bail!("replay wrote {written} of {} records", args.records);
        }
        eprintln!(
            "bench: round {round}: raw consume {:.2} s, replay {:.2} s",
            consume.as_secs_f64(),
            copy.as_secs_f64()
        );
        raw.push(consume);
        replayed.push(copy);
        if let Some(store) = &store {
            let settings_a = guardian_archiver::archive::ArchiveSettings {
                prefix: format!("bench-{}-{round}", std::process::id()),
                segment_records: 50_000,
            };
            let started = Instant::now();
            let report = guardian_archiver::archive::archive_topic(&settings, store, &source, &settings_a).await?;
            let archive = started.elapsed();
            if report.records != args.records {
                bail!("archived {} of {} records", report.records, args.records);
            }
            let target = fresh_topic(&admin, "restore-target").await?;
            created.push(target.clone());
            let manifest = guardian_archiver::restore::manifest(store, &settings_a.prefix, &source).await?;
            let range = guardian_archiver::restore::RestoreRange::default();
            let plan = guardian_archiver::restore::plan(&manifest, &range);
            let producer = Producer::new(&settings)?;
            let started = Instant::now();
            let report =
                guardian_archiver::restore::restore(&producer, store, &plan, &target, &range, |_, _| {}).await?;
            let restore = started.elapsed();
            if report.records != args.records {
                bail!("restored {} of {} records", report.records, args.records);
            }
            eprintln!(
                "bench: round {round}: archive {:.2} s ({} segments, {:.1} MB in S3), restore {:.2} s",
                archive.as_secs_f64(),
                manifest.segments.len(),
                report.bytes as f64 / 1e6,
                restore.as_secs_f64()
            );
            archived.push(archive);
            restored.push(restore);
        }
    }
    if let Err(e) = admin.delete(&created).await {
        eprintln!("bench: could not delete the bench topics: {e}");
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0].as_secs_f64(), v[v.len() / 2].as_secs_f64())
    };
    let (raw_best, raw_median) = stats(&mut raw);
    let (rep_best, rep_median) = stats(&mut replayed);
    let mut rows = vec![
        ("raw consume (rust-rdkafka loop)", raw_best, raw_median),
        ("guardian replay range", rep_best, rep_median),
    ];
    if !archived.is_empty() {
        let (a_best, a_median) = stats(&mut archived);
        let (r_best, r_median) = stats(&mut restored);
        rows.push(("guardian archive (topic → S3 segments)", a_best, a_median));
        rows.push(("guardian restore (S3 segments → topic)", r_best, r_median));
    }
    let n = args.records as f64;
    println!();
    println!(
        "{} records of {} bytes ({:.1} MB), {} runs",
        args.records,
        bytes / args.records,
        bytes as f64 / 1e6,
        args.repeat
    );
    println!();
    println!("| measurement | best records/s | best MB/s | median records/s | median vs raw consume |");
    println!("|---|---:|---:|---:|---:|");
    for (name, best, median) in rows {
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0}% |",
            n / best,
            bytes as f64 / 1e6 / best,
            n / median,
            100.0 * raw_median / median
        );
    }
    Ok(ExitCode::SUCCESS)
}
