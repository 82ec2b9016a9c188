//! The Avro specification's Parsing Canonical Form and its CRC-64-AVRO fingerprint, the
//! identity that single-object encoding writes in every record header.
//!
//! Why not `apache_avro::Schema::fingerprint`: the Rust crate (0.21) keeps `logicalType`
//! in its canonical form, against the specification's [STRIP] rule, so its fingerprint
//! of any schema with a logical type differs from the one Java, Python (fastavro) and
//! every other conforming library compute, and their readers could not find our writer
//! schema. This module follows the specification: [PRIMITIVES], [FULLNAMES], [STRIP]
//! (only type, name, fields, symbols, items, values, size), [ORDER] (name, type, fields,
//! symbols, items, values, size), [STRINGS] and [INTEGERS] (as serde_json writes them),
//! [WHITESPACE] (none). A named type already written is referred to by its full name.
//!
//! The checksum itself is apache-avro's `Rabin` digest (CRC-64-AVRO).

use std::collections::BTreeSet;

use apache_avro::rabin::Rabin;
use digest::Digest;
use serde_json::{Map, Value};

use crate::SchemaError;

const PRIMITIVES: &[&str] = &["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn canonical_form(text: &str) -> Result<String, SchemaError> {
    let json: Value = serde_json::from_str(text).map_err(|e| SchemaError::Avro(format!("schema is not JSON: {e}")))?;
    let mut out = String::new();
    write(&json, None, &mut BTreeSet::new(), &mut out)?;
    Ok(out)
}

/// CRC-64-AVRO of the canonical form, as the u64 whose little-endian bytes the
/// single-object header carries.
pub fn fingerprint_of(canonical: &str) -> u64 {
    let digest = Rabin::digest(canonical.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

fn fullname(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn bad(what: impl Into<String>) -> SchemaError {
    SchemaError::Avro(what.into())
}

/// `obj[key]`, or an error naming what lacks it.
fn attr<'a>(obj: &'a Map<String, Value>, key: &str, owner: &str) -> Result<&'a Value, SchemaError> {
    obj.get(key).ok_or_else(|| bad(format!("{owner} has no \"{key}\"")))
}

fn write(
    schema: &Value,
    namespace: Option<&str>,
    defined: &mut BTreeSet<String>,
    out: &mut String,
) -> Result<(), SchemaError> {
    match schema {
        Value::String(name) if PRIMITIVES.contains(&name.as_str()) => out.push_str(&quoted(name)),
        Value::String(name) => out.push_str(&quoted(&fullname(name, namespace))),
        Value::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(branch, namespace, defined, out)?;
            }
            out.push(']');
        }
        Value::Object(obj) => match attr(obj, "type", "a schema object")? {
            Value::String(k) if PRIMITIVES.contains(&k.as_str()) => out.push_str(&quoted(k)),
            Value::String(k) if matches!(k.as_str(), "record" | "error" | "enum" | "fixed") => {
                write_named(k, obj, namespace, defined, out)?
            }
            Value::String(k) if k == "array" || k == "map" => {
                let key = if k == "array" { "items" } else { "values" };
                out.push_str(&format!("{{\"type\":\"{k}\",\"{key}\":"));
                write(attr(obj, key, k)?, namespace, defined, out)?;
                out.push('}');
            }
            // A reference to a named type written as {"type": "Name"}.
            Value::String(name) => out.push_str(&quoted(&fullname(name, namespace))),
            // {"type": {...}} or {"type": [...]}: the attributes around it are stripped.
            nested => write(nested, namespace, defined, out)?,
        },
        other => return Err(bad(format!("not a schema: {other}"))),
    }
    Ok(())
}

/// A record, enum or fixed: written whole the first time, by full name afterwards.
fn write_named(
    kind: &str,
    obj: &Map<String, Value>,
    namespace: Option<&str>,
    defined: &mut BTreeSet<String>,
    out: &mut String,
) -> Result<(), SchemaError> {
    let name = attr(obj, "name", &format!("a {kind}"))?
        .as_str()
        .ok_or_else(|| bad(format!("a {kind} name is not a string")))?;
    let full = fullname(name, obj.get("namespace").and_then(Value::as_str).or(namespace));
    if !defined.insert(full.clone()) {
        out.push_str(&quoted(&full));
        return Ok(());
    }
    let kind = if kind == "error" { "record" } else { kind };
    out.push_str(&format!("{{\"name\":{},\"type\":{}", quoted(&full), quoted(kind)));
    let owner = format!("{kind} {full}");
    match kind {
        "enum" => {
            let symbols = attr(obj, "symbols", &owner)?.as_array().ok_or_else(|| bad(format!("{owner}: symbols")))?;
            let symbols: Vec<String> = symbols.iter().map(Value::to_string).collect();
            out.push_str(&format!(",\"symbols\":[{}]", symbols.join(",")));
        }
        "fixed" => {
            let size = attr(obj, "size", &owner)?.as_u64().ok_or_else(|| bad(format!("{owner}: size")))?;
            out.push_str(&format!(",\"size\":{size}"));
        }
        _ => {
            // Names inside the record take its namespace.
            let inner_ns = full.rsplit_once('.').map(|(ns, _)| ns);
            let fields = attr(obj, "fields", &owner)?.as_array().ok_or_else(|| bad(format!("{owner}: fields")))?;
            out.push_str(",\"fields\":[");
            for (i, field) in fields.iter().enumerate() {
                let field = field.as_object().ok_or_else(|| bad(format!("{owner}: a field is not an object")))?;
                let fname = attr(field, "name", &format!("a field of {owner}"))?;
                let fname = fname.as_str().ok_or_else(|| bad(format!("{owner}: a field name is not a string")))?;
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{{\"name\":{},\"type\":", quoted(fname)));
                write(attr(field, "type", &format!("field {full}.{fname}"))?, inner_ns, defined, out)?;
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_reference_fingerprint_of_int() {
        // The Avro specification's example: CRC-64-AVRO of "int" is 0x7275d51a3f395c8f.
        assert_eq!(fingerprint_of(&canonical_form(r#""int""#).unwrap()), 0x7275_d51a_3f39_5c8f);
        assert_eq!(canonical_form(r#"{"type": "int"}"#).unwrap(), r#""int""#);
    }

    #[test]
    fn logical_types_doc_and_defaults_are_stripped() {
        let text = r#"{"type":"record","name":"R","namespace":"a.b","doc":"d","fields":[
            {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"x"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}},
            {"name":"e2","type":"E","default":"B"},
            {"name":"o","type":["null",{"type":"array","items":"string"}],"default":null},
            {"name":"m","type":{"type":"map","values":{"type":"fixed","name":"F","namespace":"c","size":4}}}]}"#;
        assert_eq!(
            canonical_form(text).unwrap(),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"t","type":"long"},{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["A","B"]}},{"name":"e2","type":"a.b.E"},{"name":"o","type":["null",{"type":"array","items":"string"}]},{"name":"m","type":{"type":"map","values":{"name":"c.F","type":"fixed","size":4}}}]}"#
        );
    }

    #[test]
    fn the_encounter_schema_matches_an_independent_implementation() {
        // Parsing canonical form and fingerprint of schemas/encounter.avsc as fastavro
        // 1.13.1 (Python) prints them: to_parsing_canonical_form, then
        // fingerprint(.., "CRC-64-AVRO"), which shows the header's 8 bytes in hex.
        let text = include_str!("../../../../schemas/encounter.avsc");
        let pcf = canonical_form(text).unwrap();
        assert_eq!(
            pcf,
            r#"{"name":"com.phoenixguardian.events.Encounter","type":"record","fields":[{"name":"event_id","type":"string"},{"name":"hospital_id","type":"string"},{"name":"encounter_ref","type":"string"},{"name":"clinician_ref","type":"string"},{"name":"occurred_at","type":"long"},{"name":"encounter_type","type":{"name":"com.phoenixguardian.events.EncounterType","type":"enum","symbols":["OUTPATIENT","INPATIENT","EMERGENCY","TELEHEALTH","OTHER"]}},{"name":"soap_sections_expected","type":"int"},{"name":"soap_sections_completed","type":"int"},{"name":"generation_ms","type":"long"},{"name":"physician_rating","type":["null","int"]},{"name":"model_version","type":["null","long"]}]}"#
        );
        assert_eq!(fingerprint_of(&pcf).to_le_bytes(), [0x55, 0x79, 0x4b, 0x5a, 0x86, 0x8b, 0xe1, 0x64]);
    }

    #[test]
    fn malformed_schemas_are_errors() {
        assert!(canonical_form("{").is_err());
        assert!(canonical_form(r#"{"type":"record","fields":[]}"#).is_err());
        assert!(canonical_form(r#"{"type":"enum","name":"E"}"#).is_err());
        assert!(canonical_form("42").is_err());
    }
}
