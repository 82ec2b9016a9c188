//! Backward compatibility between two versions of a schema: data written with the old
//! version must be readable with the new one. The schema test walks every committed
//! version of every file in `schemas/` with this check.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::SchemaError;

/// `Ok` when a reader using `new` can read everything written with `old`.
pub fn check_backward(old: &str, new: &str) -> Result<(), SchemaError> {
    let old = Schema::parse_str(old).map_err(|e| SchemaError::Avro(format!("old version: {e}")))?;
    let new = Schema::parse_str(new).map_err(|e| SchemaError::Avro(format!("new version: {e}")))?;
    SchemaCompatibility::can_read(&old, &new).map_err(|e| SchemaError::Mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;

    #[test]
    fn adding_a_field_with_a_default_is_compatible() {
        let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}]}"#;
        check_backward(V1, v2).unwrap();
    }

    #[test]
    fn adding_a_field_without_a_default_is_not() {
        let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"}]}"#;
        assert!(check_backward(V1, v2).is_err());
    }

    #[test]
    fn changing_a_type_incompatibly_is_not() {
        let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
        assert!(check_backward(V1, v2).is_err());
    }

    #[test]
    fn removing_an_enum_symbol_is_not() {
        let v1 = r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}]}"#;
        let v2 =
            r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}]}"#;
        assert!(check_backward(v1, v2).is_err());
    }
}
