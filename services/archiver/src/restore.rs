//! Restoring an archive range into a topic.

use std::time::Instant;

use crate::error::{ArchiveError, Result};
use guardian_kafka::Producer;
use guardian_objects::{ObjectStore, sha256_hex};
use rdkafka::message::{Header, OwnedHeaders};

use crate::segment::{self, Manifest, SegmentInfo};

/// Header naming the archived origin of a restored record: `topic/partition/offset`.
pub const RESTORE_SOURCE_HEADER: &str = "guardian.restore.source";

/// Which part of the archive to restore (offsets inclusive).
#[derive(Debug, Clone, Default)]
pub struct RestoreRange {
    pub partition: Option<i32>,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
}

impl RestoreRange {
    fn wants(&self, partition: i32, offset: i64) -> bool {
        self.partition.is_none_or(|p| p == partition)
            && self.from_offset.is_none_or(|f| offset >= f)
            && self.to_offset.is_none_or(|t| offset <= t)
    }

    fn overlaps(&self, s: &SegmentInfo) -> bool {
        self.partition.is_none_or(|p| p == s.partition)
            && self.from_offset.is_none_or(|f| s.last_offset >= f)
            && self.to_offset.is_none_or(|t| s.first_offset <= t)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
}

pub async fn manifest(store: &ObjectStore, prefix: &str, topic: &str) -> Result<Manifest> {
    let key = segment::manifest_key(prefix, topic);
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| ArchiveError::Refused(format!("no archive of {topic}: {} is missing ({e})", store.uri(&key))))?;
    serde_json::from_slice(&bytes).map_err(|e| ArchiveError::format(format!("{key} is not a manifest"))(e.to_string()))
}

/// The segments a restore of `range` reads.
pub fn plan<'m>(manifest: &'m Manifest, range: &RestoreRange) -> Vec<&'m SegmentInfo> {
    manifest.segments.iter().filter(|s| range.overlaps(s)).collect()
}

/// Writes the archived records of `range` into `to_topic`, each into the partition it was
/// archived from, keys, values and headers as they were, plus a header naming the origin.
/// `progress` is called after each segment with (records so far, elapsed seconds).
pub async fn restore(
    producer: &Producer,
    store: &ObjectStore,
    segments: &[&SegmentInfo],
    to_topic: &str,
    range: &RestoreRange,
    mut progress: impl FnMut(u64, f64),
) -> Result<RestoreReport> {
    let started = Instant::now();
    let mut report = RestoreReport::default();
    let mut batch = producer.batch(to_topic);
    for s in segments {
        let bytes = store.get(&s.key).await?;
        let actual = sha256_hex(&bytes);
        if actual != s.sha256 {
            return Err(ArchiveError::Refused(format!(
                "segment {} has SHA-256 {actual}, the manifest says {}: refusing to restore it",
                s.key, s.sha256
            )));
        }
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        for r in
            segment::decode(&bytes).map_err(|e| ArchiveError::format(format!("segment {}", s.key))(e.to_string()))?
        {
            if !range.wants(r.partition, r.offset) {
                continue;
            }
            let source = format!("{}/{}/{}", r.topic, r.partition, r.offset);
            let mut headers = OwnedHeaders::new();
            for h in &r.headers {
                headers = headers.insert(Header { key: &h.key, value: h.value.as_deref() });
            }
            headers = headers.insert(Header { key: RESTORE_SOURCE_HEADER, value: Some(source.as_bytes()) });
            batch.push(Some(r.partition), r.key.as_deref(), r.value.as_deref(), Some(headers)).await?;
        }
        progress(batch.delivered() + batch.outstanding(), started.elapsed().as_secs_f64());
    }
    report.records = batch.finish().await?;
    Ok(report)
}
