//! `guardian-bench replay`: how fast `guardian replay range` moves a topic range, next to
//! the raw consume rate of the same range (a bare rust-rdkafka loop) on the same broker
//! in the same run. The replay reads, copies headers, adds its source header, writes with
//! the idempotent producer and waits for every acknowledgement. With S3 credentials it also
//! archives the range to S3 and restores it into a fresh topic, each timed on its own.
//!
//! Copying is consuming plus producing; the table also times the bare producing of the
//! same records (rust-rdkafka with the library's settings, producer ready: no start-up)
//! and the cores the whole machine kept busy (broker included) during each row, and the
//! CPU a record costs in each, which together show what bounds a copy on this machine.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use guardian_kafka::Producer;
use guardian_schemas::Codec;

use crate::kafka::{consume_raw, fresh_topic, produce_raw, record};
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
    let encoded: Vec<Vec<u8>> = records.iter().map(|r| Codec::embedded().encode(r)).collect::<Result<_, _>>()?;
    let warm = fresh_topic(&admin, "replay-warm").await?;
    let mut created = vec![source.clone(), warm.clone()];
    let (mut raw, mut replayed, mut archived, mut restored) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut produced = Vec::new();
    // Cores busy per row, in the rows' order: raw consume, raw produce, replay, archive, restore.
    let mut cores: [Vec<f64>; 5] = Default::default();
    for round in 1..=args.repeat {
        let target = fresh_topic(&admin, "replay-target").await?;
        created.push(target.clone());
        let busy = crate::cpu::Busy::start();
        let consume = consume_raw(&settings, &source, args.records).await?;
        cores[0].push(busy.cores_over(consume));
        let produce_target = fresh_topic(&admin, "produce-target").await?;
        created.push(produce_target.clone());
        let busy = crate::cpu::Busy::start();
        let produce = produce_raw(&settings, &produce_target, &records, &encoded, Some(&warm))?;
        cores[1].push(busy.cores_over(produce));
        produced.push(produce);
        let busy = crate::cpu::Busy::start();
        let started = Instant::now();
        let consumer = replay::consumer(&settings, &format!("bench-replay-{round}-{}", std::process::id()))?;
        let range =
            RangeArgs { partitions: vec![], from_offset: None, from_time: None, to_offset: None, to_time: None };
        let spans = replay::spans(&consumer, &source, &range)?;
        let total: i64 = spans.iter().map(replay::Span::records).sum();
        let transactional_id =
            guardian_topics::ServiceId::Ops.transactional_id(&format!("bench-replay-{round}-{}", std::process::id()));
        let producer = replay::producer(&settings, &transactional_id).await?;
        let written = replay::copy(&consumer, &producer, &source, &target, &spans, total).await?;
        // Timed to the commit of the last record; the clients close after (as in the raw rows).
        let copy = started.elapsed();
        cores[2].push(busy.cores_over(copy));
        drop((consumer, producer));
        if written != args.records as i64 {
            bail!("replay wrote {written} of {} records", args.records);
        }
        eprintln!(
            "bench: round {round}: raw consume {:.2} s, raw produce {:.2} s, replay {:.2} s",
            consume.as_secs_f64(),
            produce.as_secs_f64(),
            copy.as_secs_f64()
        );
        raw.push(consume);
        replayed.push(copy);
        if let Some(store) = &store {
            let settings_a = guardian_archiver::archive::ArchiveSettings {
                prefix: format!("bench-{}-{round}", std::process::id()),
                segment_records: 50_000,
            };
            let busy = crate::cpu::Busy::start();
            let started = Instant::now();
            let report = guardian_archiver::archive::archive_topic(&settings, store, &source, &settings_a).await?;
            let archive = started.elapsed();
            cores[3].push(busy.cores_over(archive));
            if report.records != args.records {
                bail!("archived {} of {} records", report.records, args.records);
            }
            let target = fresh_topic(&admin, "restore-target").await?;
            created.push(target.clone());
            let manifest = guardian_archiver::restore::manifest(store, &settings_a.prefix, &source).await?;
            let range = guardian_archiver::restore::RestoreRange::default();
            let plan = guardian_archiver::restore::plan(&manifest, &range);
            let producer = Producer::new(&settings)?;
            let busy = crate::cpu::Busy::start();
            let started = Instant::now();
            let report =
                guardian_archiver::restore::restore(&producer, store, &plan, &target, &range, |_, _| {}).await?;
            let restore = started.elapsed();
            cores[4].push(busy.cores_over(restore));
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
    let median_cores = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let [c_consume, c_produce, c_replay, c_archive, c_restore] = &mut cores;
    let (raw_best, raw_median) = stats(&mut raw);
    let (prod_best, prod_median) = stats(&mut produced);
    let (rep_best, rep_median) = stats(&mut replayed);
    let mut rows = vec![
        ("raw consume (rust-rdkafka loop)", raw_best, raw_median, median_cores(c_consume)),
        (
            "raw produce (rust-rdkafka ThreadedProducer, producer ready, same settings)",
            prod_best,
            prod_median,
            median_cores(c_produce),
        ),
        ("guardian replay range", rep_best, rep_median, median_cores(c_replay)),
    ];
    if !archived.is_empty() {
        let (a_best, a_median) = stats(&mut archived);
        let (r_best, r_median) = stats(&mut restored);
        rows.push(("guardian archive (topic → S3 segments)", a_best, a_median, median_cores(c_archive)));
        rows.push(("guardian restore (S3 segments → topic)", r_best, r_median, median_cores(c_restore)));
    }
    let n = args.records as f64;
    // CPU a record costs the whole machine (broker included) in each row.
    let per_record = |cores: f64, median: f64| 1e6 * cores * median / n;
    println!();
    println!(
        "{} records of {} bytes ({:.1} MB), {} runs",
        args.records,
        bytes / args.records,
        bytes as f64 / 1e6,
        args.repeat
    );
    println!();
    println!(
        "| measurement | best records/s | best MB/s | median records/s | median vs raw consume | median vs raw produce | cores busy (machine, median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, best, median, cores) in &rows {
        let (best, median) = (*best, *median);
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0}% | {:.0}% | {cores:.2} |",
            n / best,
            bytes as f64 / 1e6 / best,
            n / median,
            100.0 * raw_median / median,
            100.0 * prod_median / median
        );
    }
    println!();
    println!(
        "CPU per record (whole machine, medians): raw consume {:.2} µs + raw produce {:.2} µs = {:.2} µs; replay {:.2} µs",
        per_record(rows[0].3, raw_median),
        per_record(rows[1].3, prod_median),
        per_record(rows[0].3, raw_median) + per_record(rows[1].3, prod_median),
        per_record(rows[2].3, rep_median),
    );
    Ok(ExitCode::SUCCESS)
}
