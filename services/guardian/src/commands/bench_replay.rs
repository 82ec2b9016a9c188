//! `guardian bench replay`: how fast `guardian replay range` moves a topic range, next to
//! the raw consume rate of the same range (a bare rust-rdkafka loop) on the same broker
//! in the same run. The replay reads, copies headers, adds its source header, writes with
//! the idempotent producer and waits for every acknowledgement.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use guardian_kafka::Producer;
use guardian_schemas::Codec;

use super::bench::{consume_raw, fresh_topic, record};
use super::replay;
use crate::cli::{BenchReplayArgs, RangeArgs};
use crate::common;

pub async fn run(args: BenchReplayArgs) -> Result<ExitCode> {
    let args = args.load;
    if args.records == 0 || args.repeat == 0 {
        bail!("--records and --repeat must be at least 1");
    }
    let settings = common::settings(&args.kafka, "guardian-bench-replay");
    let admin = common::admin(&args.kafka).await?;
    let source = fresh_topic(&admin, "replay-source").await?;
    let records: Vec<_> = (0..args.records).map(|i| record(i, args.record_size)).collect();
    let bytes: u64 = records.iter().map(|r| Codec::embedded().encode(r).map(|b| b.len() as u64).unwrap_or(0)).sum();
    eprintln!("bench: writing {} records to {source}", args.records);
    Producer::new(&settings)?.send_batch(&source, records.iter().map(|r| (r.hospital_id.as_str(), r))).await?;
    let mut created = vec![source.clone()];
    let (mut raw, mut replayed) = (Vec::new(), Vec::new());
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
    for (name, best, median) in
        [("raw consume (rust-rdkafka loop)", raw_best, raw_median), ("guardian replay range", rep_best, rep_median)]
    {
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
