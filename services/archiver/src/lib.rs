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

pub mod archive;
pub mod restore;
pub mod segment;

pub use segment::{Manifest, SegmentInfo};
