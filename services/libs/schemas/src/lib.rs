//! Avro schemas of every Phoenix Guardian topic, the typed records that match them, and
//! the wire encoding.
//!
//! Guarantees:
//! - The schemas are the files in the repository's `schemas/` folder, embedded at build
//!   time: the binary and the folder cannot disagree.
//! - Records on the wire use Confluent's framing (`00`, the schema registry's 4-byte id,
//!   the binary datum) when the process uses a schema registry
//!   ([`codec::use_schema_registry`]), so every Confluent-compatible reader takes them;
//!   otherwise Avro single-object encoding (`C3 01`, the 8-byte little-endian CRC-64-AVRO
//!   fingerprint of the writer schema's parsing canonical form, computed to the
//!   specification in [`canonical`], then the datum), which any Avro library reads given
//!   only the schema files. Either framing decodes, whatever the process writes.
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
    #[error(
        "neither avro single-object encoding nor Confluent framing: header {found:02x?}, expected [c3, 01] or [00]"
    )]
    BadHeader { found: Vec<u8> },
    #[error("record is truncated: {len} bytes, the header alone takes {header}")]
    Truncated { len: usize, header: usize },
    #[error(
        "Confluent-framed avro record with schema registry id {0}, not one of this process's schemas (no registry configured, or a newer schema)"
    )]
    UnknownSchemaId(u32),
    #[error("schema {0} has no schema registry id here: run `guardian topics apply` with the registry")]
    NotRegistered(String),
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
