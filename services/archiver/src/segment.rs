//! Segment files and keys, and the manifest.

use crate::error::{ArchiveError, Result};
use apache_avro::{Codec, DeflateSettings, Reader, Writer};
use guardian_schemas::records::ArchivedRecord;
use guardian_schemas::{Record, Registry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One archived range of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub key: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Every segment of a topic's archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub topic: String,
    pub segments: Vec<SegmentInfo>,
}

impl Manifest {
    /// Adds or replaces (same key) a segment, keeping (partition, first offset) order.
    pub fn record(&mut self, s: SegmentInfo) {
        self.segments.retain(|x| x.key != s.key);
        self.segments.push(s);
        self.segments.sort_by_key(|x| (x.partition, x.first_offset));
    }

    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
}

pub fn topic_prefix(prefix: &str, topic: &str) -> String {
    format!("{}/{topic}/", prefix.trim_end_matches('/'))
}

pub fn manifest_key(prefix: &str, topic: &str) -> String {
    format!("{}manifest.json", topic_prefix(prefix, topic))
}

pub fn segment_key(prefix: &str, topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{}{partition:05}/{first:020}-{last:020}.avro", topic_prefix(prefix, topic))
}

/// (partition, first, last) of a segment key, None for other keys.
pub fn parse_segment_key(key: &str) -> Option<(i32, i64, i64)> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?.strip_suffix(".avro")?;
    let partition = parts.next()?.parse().ok()?;
    let (first, last) = file.split_once('-')?;
    Some((partition, first.parse().ok()?, last.parse().ok()?))
}

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The segment file of `records` (one partition, increasing offsets). The same records
/// under the same key give the same bytes: the sync marker comes from the key and the
/// header's metadata is written in a fixed order (apache-avro's own header iterates a
/// hash map).
pub fn encode(key: &str, records: &[ArchivedRecord]) -> Result<Vec<u8>> {
    let entry = Registry::embedded().get(ArchivedRecord::SCHEMA)?;
    let digest = Sha256::digest(key.as_bytes());
    let mut marker = [0u8; 16];
    marker.copy_from_slice(&digest[..16]);
    let mut header = b"Obj\x01".to_vec();
    put_long(&mut header, 2);
    put_bytes(&mut header, b"avro.codec");
    put_bytes(&mut header, b"deflate");
    put_bytes(&mut header, b"avro.schema");
    put_bytes(&mut header, serde_json::to_string(&entry.schema).expect("a schema serializes").as_bytes());
    put_long(&mut header, 0);
    header.extend_from_slice(&marker);
    let mut writer = Writer::builder()
        .schema(&entry.schema)
        .writer(header)
        .codec(Codec::Deflate(DeflateSettings::default()))
        .marker(marker)
        .has_header(true)
        .build();
    for r in records {
        writer
            .append_ser(r)
            .map_err(|e| ArchiveError::format(format!("encoding offset {} into {key}", r.offset))(e.to_string()))?;
    }
    writer.into_inner().map_err(|e| ArchiveError::format("finishing the segment file")(e.to_string()))
}

/// The records of a segment file. A segment is bytes from object storage: whatever they
/// hold is refused with an error, never a panic. apache-avro 0.21 panics on some
/// malformed container headers (an invalid name in the embedded schema: found by the
/// `archive` fuzz target), so its reader runs under `catch_unwind`.
pub fn decode(bytes: &[u8]) -> Result<Vec<ArchivedRecord>> {
    std::panic::catch_unwind(|| decode_unguarded(bytes))
        .unwrap_or_else(|_| Err(ArchiveError::format("not an Avro object container file")("malformed header".into())))
}

fn decode_unguarded(bytes: &[u8]) -> Result<Vec<ArchivedRecord>> {
    guardian_schemas::codec::limit_allocations();
    let reader =
        Reader::new(bytes).map_err(|e| ArchiveError::format("not an Avro object container file")(e.to_string()))?;
    let mut out = Vec::new();
    for value in reader {
        let value = value.map_err(|e| ArchiveError::format("reading a segment block")(e.to_string()))?;
        out.push(
            apache_avro::from_value::<ArchivedRecord>(&value)
                .map_err(|e| ArchiveError::format("not an archived record")(e.to_string()))?,
        );
    }
    if out.windows(2).any(|w| w[1].offset <= w[0].offset || w[1].partition != w[0].partition) {
        return Err(ArchiveError::Refused("segment records are not one partition in increasing offset order".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardian_schemas::records::ArchivedHeader;

    #[test]
    fn a_container_with_a_malformed_embedded_schema_is_an_error_not_a_panic() {
        // The fuzz target's find: a valid segment whose header schema names a record
        // "Archi~edHeader" made apache-avro's reader panic.
        let good = encode("k", &[record(1)]).unwrap();
        let needle = b"ArchivedHeader";
        let at = good.windows(needle.len()).position(|w| w == needle).expect("the schema names ArchivedHeader");
        let mut bad = good.clone();
        bad[at + 5] = b'~';
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = decode(&bad);
        std::panic::set_hook(hook);
        assert!(out.is_err(), "{out:?}");
        assert_eq!(decode(&good).unwrap(), [record(1)]);
    }

    fn record(offset: i64) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition: 2,
            offset,
            timestamp: Some(1_700_000_000_000 + offset),
            key: Some(format!("k{offset}").into_bytes()),
            value: (offset % 3 != 0).then(|| vec![0xc3, 0x01, offset as u8]),
            headers: vec![ArchivedHeader { key: "h".into(), value: Some(vec![1, 2]) }],
        }
    }

    #[test]
    fn segments_round_trip_and_are_byte_identical_when_rewritten() {
        let records: Vec<_> = (10..60).map(record).collect();
        let key = segment_key("archive", "t", 2, 10, 59);
        assert_eq!(key, "archive/t/00002/00000000000000000010-00000000000000000059.avro");
        assert_eq!(parse_segment_key(&key), Some((2, 10, 59)));
        let a = encode(&key, &records).unwrap();
        let b = encode(&key, &records).unwrap();
        assert_eq!(a, b, "same range, same bytes");
        assert_eq!(decode(&a).unwrap(), records);
        assert!(decode(b"not avro").is_err());
        assert_eq!(parse_segment_key("archive/t/manifest.json"), None);
    }
}
