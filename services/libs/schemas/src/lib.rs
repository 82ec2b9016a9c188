//! Avro schemas of every Phoenix Guardian topic, the typed records that match them, and
//! the wire encoding.
//!
//! Guarantees:
//! - The schemas are the files in the repository's `schemas/` folder, embedded at build
//!   time: the binary and the folder cannot disagree.
//! - Records on the wire use Avro single-object encoding (`C3 01`, the 8-byte little-endian
//!   CRC-64-AVRO fingerprint of the writer schema's parsing canonical form, computed to
//!   the specification in [`canonical`], then the
//!   binary datum), so any Avro library can read a topic given only the schema files.
//!   The encoding sits behind [`codec::WireFormat`] so a registry-based format can be
//!   added without touching callers.
//! - Decoding resolves the writer schema (found by fingerprint) against the reader's, so
//!   records written with an older registered version still decode.
//!
//! Failure: every decode problem is a [`SchemaError`]; consumers route those records to
//! the dead-letter topic. Nothing here does I/O.

pub mod canonical;
pub mod codec;
pub mod compat;
pub mod encounter_file;
pub mod records;
pub mod registry;
pub mod synth;
pub mod validate;

pub use codec::{Codec, WireFormat};
pub use records::Record;
pub use registry::{Registry, SchemaEntry};

use thiserror::Error;

/// Everything that can go wrong turning bytes into records or back.
#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("record is empty")]
    Empty,
    #[error("not avro single-object encoding: header {found:02x?}, expected [c3, 01]")]
    BadHeader { found: Vec<u8> },
    #[error("record is truncated: {len} bytes, the header alone takes 10")]
    Truncated { len: usize },
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    #[error("record has schema {found}, expected {expected}")]
    WrongSchema { expected: String, found: String },
    #[error("no schema named {0}")]
    UnknownSchema(String),
    #[error("invalid avro: {0}")]
    Avro(String),
    #[error("record does not match its schema: {0}")]
    Mismatch(String),
    #[error("schema file {file}: {error}")]
    File { file: String, error: String },
}

impl From<apache_avro::Error> for SchemaError {
    fn from(e: apache_avro::Error) -> Self {
        SchemaError::Avro(e.to_string())
    }
}
