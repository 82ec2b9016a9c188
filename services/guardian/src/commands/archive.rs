//! `guardian archive` and `guardian restore`: topics to S3 segments and back.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use guardian_archiver::archive::{ArchiveSettings, archive_topic};
use guardian_archiver::restore::{self, RestoreRange};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;

use crate::cli::{ArchiveArgs, RestoreArgs};
use crate::common;

pub async fn archive(args: ArchiveArgs) -> Result<ExitCode> {
    if args.segment_records == 0 {
        bail!("--segment-records must be at least 1");
    }
    let topics: Vec<String> = if args.topics.is_empty() {
        let catalogue = common::kafka_catalogue(&args.kafka)?;
        catalogue.specs().map(|s| catalogue.name_of(s)).collect()
    } else {
        args.topics.clone()
    };
    // A long-running archiver is a service: probes and metrics like the others.
    let (shutdown, readiness) = if args.once {
        (Shutdown::on_signals(), None)
    } else {
        let (shutdown, readiness, bound) = common::serve_ops(args.listen, None).await?;
        eprintln!("archiver: /metrics, /healthz and /readyz on http://{bound}");
        (shutdown, Some(readiness))
    };
    let store = args.s3.store(&args.bucket)?;
    store.ensure_bucket().await?;
    let kafka = common::settings(&args.kafka, "guardian-archiver");
    let settings = ArchiveSettings { prefix: args.prefix.clone(), segment_records: args.segment_records };
    if let Some(readiness) = &readiness {
        readiness.set_ready(true);
    }
    loop {
        let mut pass_failed = false;
        for topic in &topics {
            let r = match archive_topic(&kafka, &store, topic, &settings)
                .await
                .with_context(|| format!("archiving {topic}"))
            {
                Ok(r) => r,
                Err(e) if args.once => return Err(e),
                // A service rides out an S3 or broker outage: not ready, and the next pass
                // starts from what the bucket holds (segments are idempotent).
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "archive pass failed; retrying at the next interval");
                    metrics::counter!("guardian_archive_pass_failures_total").increment(1);
                    pass_failed = true;
                    continue;
                }
            };
            if r.segments_written > 0 || args.once {
                println!(
                    "{topic}: {} segment(s), {} records, {} bytes → s3://{}/{}/{topic}/",
                    r.segments_written, r.records, r.bytes, args.bucket, args.prefix
                );
            }
            for (p, from, to) in &r.lost_before_archive {
                eprintln!("warning: {topic}/{p}: offsets {from}..{to} left the topic before they were archived");
            }
        }
        if let Some(readiness) = &readiness {
            readiness.set_ready(!pass_failed);
        }
        if args.once || shutdown.is_triggered() {
            break;
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let store = args.s3.store(&args.bucket)?;
    let manifest = restore::manifest(&store, &args.prefix, &args.topic).await?;
    let range = RestoreRange { partition: args.partition, from_offset: args.from_offset, to_offset: args.to_offset };
    let segments = restore::plan(&manifest, &range);
    let to_topic = args.to_topic.clone().unwrap_or_else(|| args.topic.clone());
    let records: u64 = segments.iter().map(|s| s.records).sum();
    if args.dry_run || segments.is_empty() {
        println!("restore {} → {to_topic}: {} segment(s), at most {records} records", args.topic, segments.len());
        for s in &segments {
            println!(
                "  partition {} offsets {}..={} ({} records) {}",
                s.partition, s.first_offset, s.last_offset, s.records, s.key
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Every archived partition must exist in the target topic.
    let kafka = common::settings(&args.kafka, "guardian-restore");
    let marks = guardian_kafka::reader::topic_watermarks(&kafka, "restore", &[&to_topic])
        .await
        .with_context(|| format!("target topic {to_topic}"))?;
    if let Some(s) = segments.iter().find(|s| !marks.contains_key(&(to_topic.clone(), s.partition))) {
        bail!("{to_topic} has no partition {} (create it with at least {} partitions)", s.partition, s.partition + 1);
    }
    let producer = Producer::new(&kafka)?;
    let report = restore::restore(&producer, &store, &segments, &to_topic, &range, |done, secs| {
        let rate = done as f64 / secs.max(1e-3);
        let eta = (records.saturating_sub(done)) as f64 / rate.max(1.0);
        eprintln!("restore: {done}/{records} records, {rate:.0}/s, eta {eta:.0} s");
    })
    .await?;
    producer.flush(Duration::from_secs(30)).await?;
    println!(
        "restored {} records from {} segment(s) ({} bytes) of {} into {to_topic}",
        report.records, report.segments, report.bytes, args.topic
    );
    Ok(ExitCode::SUCCESS)
}
