//! Archiving topics to S3.

use std::collections::BTreeMap;

use crate::error::{ArchiveError, Result};
use guardian_kafka::KafkaSettings;
use guardian_kafka::reader::{Incoming, RangeReader, topic_watermarks};
use guardian_objects::{ObjectStore, sha256_hex};
use guardian_schemas::records::{ArchivedHeader, ArchivedRecord};
use tracing::{info, warn};

use crate::segment::{self, Manifest, SegmentInfo};

/// How segments are cut.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// Key prefix in the bucket.
    pub prefix: String,
    /// Records per segment at most (a pass also closes the last, shorter one).
    pub segment_records: usize,
}

/// What one pass over a topic did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    pub topic: String,
    pub segments_written: usize,
    pub records: u64,
    pub bytes: u64,
    /// Ranges that left the topic (retention) before they were archived: (partition, from, to).
    pub lost_before_archive: Vec<(i32, i64, i64)>,
}

/// The topic's manifest as stored, with every listed segment that it misses added (a
/// pass killed between a segment and its manifest update heals here).
async fn reconciled_manifest(store: &ObjectStore, prefix: &str, topic: &str) -> Result<Manifest> {
    let key = segment::manifest_key(prefix, topic);
    let mut manifest = match store.get(&key).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ArchiveError::format(format!("{key} is not a manifest"))(e.to_string()))?,
        Err(_) => Manifest { topic: topic.to_string(), segments: Vec::new() },
    };
    let listed = store.list(&segment::topic_prefix(prefix, topic)).await?;
    let mut changed = false;
    for k in listed {
        let Some((partition, first, last)) = segment::parse_segment_key(&k) else { continue };
        if manifest.segments.iter().any(|s| s.key == k) {
            continue;
        }
        let bytes = store.get(&k).await?;
        let records =
            segment::decode(&bytes).map_err(|e| ArchiveError::format(format!("segment {k}"))(e.to_string()))?;
        warn!(key = %k, "segment missing from the manifest (an interrupted pass): adding it");
        manifest.record(SegmentInfo {
            key: k,
            partition,
            first_offset: first,
            last_offset: last,
            records: records.len() as u64,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
        changed = true;
    }
    if changed {
        store.put(&key, manifest_json(&manifest)).await?;
    }
    Ok(manifest)
}

fn archived(m: Incoming) -> ArchivedRecord {
    ArchivedRecord {
        topic: m.topic,
        partition: m.partition,
        offset: m.offset,
        timestamp: m.timestamp,
        key: m.key,
        value: m.has_value.then_some(m.payload),
        headers: m.headers.into_iter().map(|(key, value)| ArchivedHeader { key, value }).collect(),
    }
}

async fn write_segment(
    store: &ObjectStore,
    settings: &ArchiveSettings,
    manifest: &mut Manifest,
    records: &mut Vec<ArchivedRecord>,
    report: &mut ArchiveReport,
) -> Result<()> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(()) };
    let (topic, partition, first, last) = (first.topic.clone(), first.partition, first.offset, last.offset);
    let key = segment::segment_key(&settings.prefix, &topic, partition, first, last);
    let bytes = segment::encode(&key, records)?;
    let info = SegmentInfo {
        key: key.clone(),
        partition,
        first_offset: first,
        last_offset: last,
        records: records.len() as u64,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    };
    store.put(&key, bytes).await?;
    manifest.record(info.clone());
    store.put(&segment::manifest_key(&settings.prefix, &topic), manifest_json(manifest)).await?;
    report.segments_written += 1;
    report.records += info.records;
    report.bytes += info.bytes;
    info!(key = %key, records = info.records, bytes = info.bytes, "segment archived");
    records.clear();
    Ok(())
}

/// Archives everything of `topic` written so far that is not archived yet.
pub async fn archive_topic(
    kafka: &KafkaSettings,
    store: &ObjectStore,
    topic: &str,
    settings: &ArchiveSettings,
) -> Result<ArchiveReport> {
    let mut manifest = reconciled_manifest(store, &settings.prefix, topic).await?;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for s in &manifest.segments {
        let n = next.entry(s.partition).or_insert(0);
        *n = (*n).max(s.last_offset + 1);
    }
    let mut report = ArchiveReport { topic: topic.to_string(), ..Default::default() };
    let mut ranges = BTreeMap::new();
    for ((t, partition), (lo, hi)) in topic_watermarks(kafka, "archiver", &[topic]).await? {
        let from = next.get(&partition).copied().unwrap_or(lo);
        if from < lo {
            warn!(topic, partition, from, lo, "records left the topic before they were archived");
            report.lost_before_archive.push((partition, from, lo));
        }
        ranges.insert((t, partition), (from.max(lo), hi));
    }
    let mut buffers: BTreeMap<i32, Vec<ArchivedRecord>> = BTreeMap::new();
    let mut reader = RangeReader::open(kafka, "archiver", &ranges)?;
    while let Some(m) = reader.next().await? {
        let buffer = buffers.entry(m.partition).or_default();
        buffer.push(archived(m));
        if buffer.len() >= settings.segment_records {
            write_segment(store, settings, &mut manifest, buffer, &mut report).await?;
        }
    }
    for buffer in buffers.values_mut() {
        write_segment(store, settings, &mut manifest, buffer, &mut report).await?;
    }
    Ok(report)
}

fn manifest_json(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(manifest).expect("a manifest serializes")
}
