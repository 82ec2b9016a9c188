//! The set of known schemas, looked up by full name or by fingerprint.
//!
//! [`Registry::embedded`] holds the files of `schemas/` as they were at build time;
//! [`Registry::from_dir`] reads a folder at run time (tools, compatibility checks).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use apache_avro::Schema;

use crate::SchemaError;

/// The schema files of the repository, embedded at build time.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("encounter.avsc", include_str!("../../../../schemas/encounter.avsc")),
    ("gradient_update_chunk.avsc", include_str!("../../../../schemas/gradient_update_chunk.avsc")),
    ("budget_spend.avsc", include_str!("../../../../schemas/budget_spend.avsc")),
    ("slo_event.avsc", include_str!("../../../../schemas/slo_event.avsc")),
    ("kpi_rollup.avsc", include_str!("../../../../schemas/kpi_rollup.avsc")),
    ("budget_status.avsc", include_str!("../../../../schemas/budget_status.avsc")),
    ("spend_decision.avsc", include_str!("../../../../schemas/spend_decision.avsc")),
    ("privacy_alert.avsc", include_str!("../../../../schemas/privacy_alert.avsc")),
    ("model_version.avsc", include_str!("../../../../schemas/model_version.avsc")),
    ("dead_letter.avsc", include_str!("../../../../schemas/dead_letter.avsc")),
    ("round_control.avsc", include_str!("../../../../schemas/round_control.avsc")),
    ("round_message.avsc", include_str!("../../../../schemas/round_message.avsc")),
    ("unmask_shares.avsc", include_str!("../../../../schemas/unmask_shares.avsc")),
    ("archived_record.avsc", include_str!("../../../../schemas/archived_record.avsc")),
    ("dr_audit.avsc", include_str!("../../../../schemas/dr_audit.avsc")),
];

/// One parsed schema with its identity.
#[derive(Debug)]
pub struct SchemaEntry {
    /// Full name, e.g. `com.phoenixguardian.events.Encounter`.
    pub name: String,
    /// File the schema came from.
    pub file: String,
    pub schema: Schema,
    /// The same schema compiled for serde_avro_fast, which encodes and decodes typed
    /// records without an intermediate value (the hot path).
    pub fast: serde_avro_fast::Schema,
    /// CRC-64-AVRO fingerprint of the specification's parsing canonical form
    /// ([`crate::canonical`]); its little-endian bytes are the single-object header's.
    pub fingerprint: u64,
    /// The file's text (what a schema registry is given: docs and all).
    pub text: String,
}

/// Known schemas by name and by fingerprint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    by_name: Arc<BTreeMap<String, Arc<SchemaEntry>>>,
    by_fingerprint: Arc<BTreeMap<u64, Arc<SchemaEntry>>>,
}

impl Registry {
    /// The schemas embedded at build time. Parsed once per process.
    pub fn embedded() -> &'static Registry {
        static EMBEDDED_REGISTRY: OnceLock<Registry> = OnceLock::new();
        EMBEDDED_REGISTRY.get_or_init(|| {
            Registry::from_sources(EMBEDDED.iter().map(|(f, s)| (f.to_string(), s.to_string())))
                .expect("the embedded schemas/ files parse (checked by the schemas tests)")
        })
    }

    /// Every `*.avsc` file of a folder.
    pub fn from_dir(dir: &Path) -> Result<Registry, SchemaError> {
        let read = std::fs::read_dir(dir)
            .map_err(|e| SchemaError::File { file: dir.display().to_string(), error: e.to_string() })?;
        let mut sources = Vec::new();
        for entry in read {
            let path =
                entry.map_err(|e| SchemaError::File { file: dir.display().to_string(), error: e.to_string() })?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("avsc") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SchemaError::File { file: path.display().to_string(), error: e.to_string() })?;
            sources.push((path.display().to_string(), text));
        }
        Registry::from_sources(sources)
    }

    /// Parses (file, text) pairs. Each file must be self-contained.
    pub fn from_sources(sources: impl IntoIterator<Item = (String, String)>) -> Result<Registry, SchemaError> {
        let mut by_name = BTreeMap::new();
        let mut by_fingerprint = BTreeMap::new();
        for (file, text) in sources {
            let entry = Arc::new(parse_entry(&file, &text)?);
            if let Some(previous) = by_name.insert(entry.name.clone(), entry.clone()) {
                return Err(SchemaError::File {
                    file,
                    error: format!("schema {} is also defined in {}", entry.name, previous.file),
                });
            }
            by_fingerprint.insert(entry.fingerprint, entry);
        }
        Ok(Registry { by_name: Arc::new(by_name), by_fingerprint: Arc::new(by_fingerprint) })
    }

    /// Adds an earlier version of a registered schema: records written with it decode
    /// (resolved against the current version), nothing is written with it.
    pub fn with_previous_version(mut self, file: &str, text: &str) -> Result<Registry, SchemaError> {
        let entry = Arc::new(parse_entry(file, text)?);
        if !self.by_name.contains_key(&entry.name) {
            return Err(SchemaError::UnknownSchema(entry.name.clone()));
        }
        Arc::make_mut(&mut self.by_fingerprint).insert(entry.fingerprint, entry);
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Result<&Arc<SchemaEntry>, SchemaError> {
        self.by_name.get(name).ok_or_else(|| SchemaError::UnknownSchema(name.to_string()))
    }

    pub fn by_fingerprint(&self, fingerprint: u64) -> Result<&Arc<SchemaEntry>, SchemaError> {
        self.by_fingerprint.get(&fingerprint).ok_or(SchemaError::UnknownFingerprint(fingerprint))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<SchemaEntry>> {
        self.by_name.values()
    }
}

/// Parses one self-contained schema file.
pub fn parse_entry(file: &str, text: &str) -> Result<SchemaEntry, SchemaError> {
    let schema =
        Schema::parse_str(text).map_err(|e| SchemaError::File { file: file.to_string(), error: e.to_string() })?;
    let name = match &schema {
        Schema::Record(r) => r.name.fullname(None),
        _ => {
            return Err(SchemaError::File {
                file: file.to_string(),
                error: "top-level schema must be a record".to_string(),
            });
        }
    };
    let canonical = crate::canonical::canonical_form(text)
        .map_err(|e| SchemaError::File { file: file.to_string(), error: e.to_string() })?;
    let fingerprint = crate::canonical::fingerprint_of(&canonical);
    let fast = text.parse().map_err(|e| SchemaError::File { file: file.to_string(), error: format!("{e}") })?;
    Ok(SchemaEntry { name, file: file.to_string(), schema, fast, fingerprint, text: text.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_parse_with_distinct_names_and_fingerprints() {
        let registry = Registry::embedded();
        assert_eq!(registry.names().count(), EMBEDDED.len());
        let fps: std::collections::BTreeSet<_> = registry.entries().map(|e| e.fingerprint).collect();
        assert_eq!(fps.len(), EMBEDDED.len());
    }

    #[test]
    fn non_record_top_level_is_refused() {
        let err = parse_entry("x.avsc", r#""string""#).unwrap_err();
        assert!(err.to_string().contains("must be a record"), "{err}");
    }
}
