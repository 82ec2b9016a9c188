//! Helpers of the fuzz targets.

use guardian_schemas::Codec;
use guardian_schemas::codec::{SINGLE_OBJECT_HEADER_LEN, SINGLE_OBJECT_MAGIC};

/// The codec every service uses.
pub fn codec() -> &'static Codec {
    static CODEC: std::sync::OnceLock<Codec> = std::sync::OnceLock::new();
    CODEC.get_or_init(Codec::embedded)
}

/// The input as a record of one of the registered schemas: the first byte picks the
/// schema, the rest is the datum behind that schema's single-object header. Random bytes
/// would almost never pass the header check; this way every input reaches the datum
/// decoder of some schema.
pub fn framed(data: &[u8]) -> Option<Vec<u8>> {
    let (&pick, datum) = data.split_first()?;
    let entries: Vec<_> = codec().registry().entries().collect();
    Some(behind_header(entries[usize::from(pick) % entries.len()], datum))
}

/// The input framed as a record of the schema `name`.
pub fn framed_as(name: &str, datum: &[u8]) -> Vec<u8> {
    behind_header(codec().registry().get(name).expect("a registered schema"), datum)
}

fn behind_header(entry: &guardian_schemas::registry::SchemaEntry, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SINGLE_OBJECT_HEADER_LEN + datum.len());
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&entry.fingerprint.to_le_bytes());
    out.extend_from_slice(datum);
    out
}
