//! Topic archives in S3.
//!
//! A segment is an Avro object container file (deflate) of [`ArchivedRecord`]s: one
//! partition's records from a first to a last offset, the exact bytes that were on the
//! topic. Its key is `{prefix}/{topic}/{partition:05}/{first:020}-{last:020}.avro`, its
//! sync marker is derived from that key, so archiving the same range again writes the same
//! key with the same bytes (Kafka to S3, idempotent). Where to go on is read from the
//! bucket itself: each partition resumes after its highest archived offset, so a killed
//! archiver neither loses nor overlaps a range. `{prefix}/{topic}/manifest.json` lists the
//! segments with their record counts and SHA-256s; a restore checks each segment against it.
//!
//! [`serve`] is the archiver process: a pass over every topic each interval, riding out
//! S3 and broker outages (not ready until a pass succeeds again); [`restore_range`] writes
//! an archived range back into a topic.
//!
//! [`ArchivedRecord`]: guardian_schemas::records::ArchivedRecord

pub mod archive;
pub mod config;
pub mod error;
pub mod metrics;
pub mod restore;
pub mod segment;

use std::time::Duration;

pub use config::{ArchiveArgs, RestoreArgs};
pub use error::ArchiveError;
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use guardian_topics::ServiceId;
pub use segment::{Manifest, SegmentInfo};

/// Archives the topics until `shutdown` (or once, with `args.once`), printing what each
/// pass wrote.
pub async fn serve(args: ArchiveArgs, shutdown: Shutdown) -> Result<(), ArchiveError> {
    let topics: Vec<String> = if args.topics.is_empty() {
        let catalogue = args.kafka.catalogue()?;
        catalogue.specs().map(|s| catalogue.name_of(s)).collect()
    } else {
        args.topics.clone()
    };
    // A long-running archiver is a service: probes and metrics like the others.
    let ops = if args.once {
        None
    } else {
        let ops = guardian_runtime::http::serve_ops(ServiceId::Archiver.name(), args.listen, None, &shutdown).await?;
        eprintln!("archiver: /metrics, /healthz and /readyz on http://{}", ops.bound);
        Some(ops)
    };
    let readiness = ops.as_ref().map(|o| o.readiness.clone());
    let store = args.s3.store(&args.bucket)?;
    store.ensure_bucket().await?;
    let kafka = args.kafka.settings(&ServiceId::Archiver.client_id());
    let settings = archive::ArchiveSettings { prefix: args.prefix.clone(), segment_records: args.segment_records };
    if let Some(readiness) = &readiness {
        readiness.set_ready(true);
    }
    loop {
        let mut pass_failed = false;
        for topic in &topics {
            let r = match archive::archive_topic(&kafka, &store, topic, &settings).await {
                Ok(r) => r,
                Err(e) if args.once => return Err(e),
                // A service rides out an S3 or broker outage: not ready, and the next pass
                // starts from what the bucket holds (segments are idempotent).
                Err(e) => {
                    tracing::warn!(error = %e, topic = %topic, "archive pass failed; retrying at the next interval");
                    ::metrics::counter!(crate::metrics::PASS_FAILURES).increment(1);
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
    Ok(())
}

/// Writes an archived range back into a topic (or prints it, with `dry_run`), with
/// progress on stderr.
pub async fn restore_range(args: RestoreArgs) -> Result<(), ArchiveError> {
    let store = args.s3.store(&args.bucket)?;
    let manifest = restore::manifest(&store, &args.prefix, &args.topic).await?;
    let range =
        restore::RestoreRange { partition: args.partition, from_offset: args.from_offset, to_offset: args.to_offset };
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
        return Ok(());
    }
    // Every archived partition must exist in the target topic.
    let kafka = args.kafka.settings(&ServiceId::Ops.client_for("restore"));
    let marks = guardian_kafka::reader::topic_watermarks(&kafka, "restore", &[&to_topic]).await?;
    if let Some(s) = segments.iter().find(|s| !marks.contains_key(&(to_topic.clone(), s.partition))) {
        return Err(ArchiveError::Refused(format!(
            "{to_topic} has no partition {} (create it with at least {} partitions)",
            s.partition,
            s.partition + 1
        )));
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
    Ok(())
}
