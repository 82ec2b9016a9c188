//! Turning typed records into bytes and back.
//!
//! [`WireFormat::SingleObject`] is the Avro specification's single-object encoding. A
//! Confluent-registry framing (magic 0, 4-byte schema id) would be a second variant; the
//! callers only ever see [`Codec::encode`] and [`Codec::decode`].

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, from_value, to_avro_datum};

use crate::registry::{Registry, SchemaEntry};
use crate::{Record, SchemaError};

/// Single-object encoding marker, from the Avro specification.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus the 8-byte fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;

/// The most apache-avro may allocate for one length read from bytes (a string, a byte
/// array, an array's or a map's count, a container block). No datum is longer than a Kafka
/// record (1 MiB by default) and no archive block much longer; without this bound a
/// 40-byte record declaring an array of 500 million elements made apache-avro reserve
/// 28 GB and abort the process (found by the `avro` fuzz target). The count × element size
/// of an array is still allowed up to this many elements, so the bound is kept small.
pub const MAX_AVRO_ALLOCATION: usize = 4 << 20;

/// Applies [`MAX_AVRO_ALLOCATION`] to apache-avro, process-wide. It must run before the
/// first datum is read (the limit is fixed at first use): [`Codec::new`] and the archive
/// reader call it.
pub fn limit_allocations() {
    let limit = apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
    debug_assert_eq!(limit, MAX_AVRO_ALLOCATION, "apache-avro read data before its limit was set");
}

/// How records are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Avro single-object encoding: no registry needed, schema found by fingerprint.
    #[default]
    SingleObject,
}

/// Encodes and decodes records against a [`Registry`].
#[derive(Debug, Clone)]
pub struct Codec {
    registry: Registry,
    format: WireFormat,
}

impl Codec {
    pub fn new(registry: Registry, format: WireFormat) -> Self {
        limit_allocations();
        Codec { registry, format }
    }

    /// The codec every service uses: embedded schemas, single-object encoding.
    pub fn embedded() -> Self {
        Codec::new(Registry::embedded().clone(), WireFormat::SingleObject)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Encodes a typed record with its registered schema, straight through serde (no
    /// intermediate Avro value): the producers' hot path.
    pub fn encode<R: Record>(&self, record: &R) -> Result<Vec<u8>, SchemaError> {
        let entry = self.registry.get(R::SCHEMA)?;
        // Room for most records: a growing buffer costs a copy per doubling.
        let out = self.header(entry, 512);
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&entry.fast);
        serde_avro_fast::to_datum(record, out, &mut config)
            .map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))
    }

    /// Encodes a generic Avro value with the named schema.
    pub fn encode_value(&self, entry: &SchemaEntry, value: Value) -> Result<Vec<u8>, SchemaError> {
        let value = value.resolve(&entry.schema).map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))?;
        let datum =
            to_avro_datum(&entry.schema, value).map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))?;
        let mut out = self.header(entry, datum.len());
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// A buffer holding the wire format's header for `entry`, with room for the datum.
    fn header(&self, entry: &SchemaEntry, datum_len: usize) -> Vec<u8> {
        match self.format {
            WireFormat::SingleObject => {
                let mut out = Vec::with_capacity(SINGLE_OBJECT_HEADER_LEN + datum_len);
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&entry.fingerprint.to_le_bytes());
                out
            }
        }
    }

    /// Finds the writer schema of an encoded record and returns it with the datum bytes.
    pub fn writer_of<'a>(&self, bytes: &'a [u8]) -> Result<(&SchemaEntry, &'a [u8]), SchemaError> {
        match self.format {
            WireFormat::SingleObject => {
                if bytes.is_empty() {
                    return Err(SchemaError::Empty);
                }
                if bytes.len() < SINGLE_OBJECT_HEADER_LEN {
                    if bytes.len() >= 2 && bytes[..2] == SINGLE_OBJECT_MAGIC {
                        return Err(SchemaError::Truncated { len: bytes.len() });
                    }
                    return Err(SchemaError::BadHeader { found: bytes[..bytes.len().min(2)].to_vec() });
                }
                if bytes[..2] != SINGLE_OBJECT_MAGIC {
                    return Err(SchemaError::BadHeader { found: bytes[..2].to_vec() });
                }
                let mut fp = [0u8; 8];
                fp.copy_from_slice(&bytes[2..SINGLE_OBJECT_HEADER_LEN]);
                let entry = self.registry.by_fingerprint(u64::from_le_bytes(fp))?;
                Ok((entry, &bytes[SINGLE_OBJECT_HEADER_LEN..]))
            }
        }
    }

    /// Decodes into a generic value, as written (no reader schema).
    pub fn decode_value(&self, bytes: &[u8]) -> Result<(&SchemaEntry, Value), SchemaError> {
        let (entry, mut datum) = self.writer_of(bytes)?;
        let value = from_avro_datum(&entry.schema, &mut datum, None)?;
        if !datum.is_empty() {
            return Err(SchemaError::Avro(format!("{} trailing bytes after the datum", datum.len())));
        }
        Ok((entry, value))
    }

    /// Decodes a typed record. The writer schema must be the record's schema (decoded
    /// straight through serde: the consumers' hot path), or a registered earlier version
    /// of it, resolved to the current one by apache-avro's schema resolution.
    pub fn decode<R: Record>(&self, bytes: &[u8]) -> Result<R, SchemaError> {
        let reader = self.registry.get(R::SCHEMA)?;
        let (writer, mut datum) = self.writer_of(bytes)?;
        if writer.name != reader.name {
            return Err(SchemaError::WrongSchema { expected: reader.name.clone(), found: writer.name.clone() });
        }
        if writer.fingerprint == reader.fingerprint {
            let mut state = serde_avro_fast::de::DeserializerState::from_slice(datum, &reader.fast);
            let record = R::deserialize(state.deserializer()).map_err(|e| SchemaError::Avro(e.to_string()))?;
            let rest = std::io::BufRead::fill_buf(&mut state.into_reader()).map(|r| r.len()).unwrap_or(0);
            if rest != 0 {
                return Err(SchemaError::Avro(format!("{rest} trailing bytes after the datum")));
            }
            return Ok(record);
        }
        let value = from_avro_datum(&writer.schema, &mut datum, Some(&reader.schema))?;
        if !datum.is_empty() {
            return Err(SchemaError::Avro(format!("{} trailing bytes after the datum", datum.len())));
        }
        from_value::<R>(&value).map_err(|e| SchemaError::Mismatch(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use crate::records::*;
    use proptest::prelude::*;

    fn spend() -> BudgetSpend {
        BudgetSpend {
            event_id: "s1-r3-h001".into(),
            hospital_id: "h001".into(),
            session_id: "s1".into(),
            round: 3,
            mechanism: Mechanism::SampledGaussian,
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            steps: 100,
            delta: 1e-5,
            occurred_at: 1_764_000_000_000,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let codec = Codec::embedded();
        let bytes = codec.encode(&spend()).unwrap();
        assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
        assert_eq!(codec.decode::<BudgetSpend>(&bytes).unwrap(), spend());
    }

    #[test]
    fn header_carries_the_registered_fingerprint() {
        let codec = Codec::embedded();
        let bytes = codec.encode(&spend()).unwrap();
        let entry = codec.registry().get(BudgetSpend::SCHEMA).unwrap();
        assert_eq!(bytes[2..10], entry.fingerprint.to_le_bytes());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let codec = Codec::embedded();
        assert!(matches!(codec.decode::<BudgetSpend>(b""), Err(SchemaError::Empty)));
        assert!(matches!(codec.decode::<BudgetSpend>(b"{\"json\":1}"), Err(SchemaError::BadHeader { .. })));
        assert!(matches!(codec.decode::<BudgetSpend>(&[0xC3, 0x01, 1]), Err(SchemaError::Truncated { .. })));
        let mut unknown = vec![0xC3, 0x01];
        unknown.extend_from_slice(&[9; 8]);
        assert!(matches!(codec.decode::<BudgetSpend>(&unknown), Err(SchemaError::UnknownFingerprint(_))));
    }

    #[test]
    fn a_record_of_another_schema_is_refused() {
        let codec = Codec::embedded();
        let bytes = codec.encode(&spend()).unwrap();
        let err = codec.decode::<Encounter>(&bytes).unwrap_err();
        assert!(matches!(err, SchemaError::WrongSchema { .. }), "{err}");
    }

    #[test]
    fn a_datum_declaring_a_huge_array_is_an_error_not_an_allocation() {
        // The `avro` fuzz target's find: these bytes, behind the header of one of the
        // schemas, declare an array count that made apache-avro reserve 28 GB and abort
        // the process. Behind every schema's header they must be an error.
        const FOUND: [u8; 56] = [
            0x02, 0x08, 0x68, 0x30, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd8, 0xfd, 0xfd, 0xe8, 0x03, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x64, 0x65, 0x6d, 0x65, 0x6e, 0x74, 0x02, 0x08, 0x68, 0x30, 0x30, 0x31,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0xe8, 0x6f, 0x2d, 0x72, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        let codec = Codec::embedded();
        for entry in codec.registry().entries() {
            let mut bytes = SINGLE_OBJECT_MAGIC.to_vec();
            bytes.extend_from_slice(&entry.fingerprint.to_le_bytes());
            bytes.extend_from_slice(&FOUND[1..]);
            let _ = codec.decode_value(&bytes);
        }
        assert!(codec.decode_value(&FOUND).is_err());
    }

    #[test]
    fn truncated_datum_is_an_error_not_a_panic() {
        let codec = Codec::embedded();
        let bytes = codec.encode(&spend()).unwrap();
        for cut in SINGLE_OBJECT_HEADER_LEN..bytes.len() {
            assert!(codec.decode::<BudgetSpend>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_older_writer_schema_resolves_to_the_current_reader() {
        // The encounter schema before `model_version` was added.
        let current_text = include_str!("../../../../schemas/encounter.avsc");
        let old_text = current_text.replace(
            r#",
    {"name": "model_version", "type": ["null", "long"], "default": null, "doc": "Model version that generated the note."}"#,
            "",
        );
        assert_ne!(old_text, current_text, "the fixture must really remove a field");
        let old = crate::registry::parse_entry("encounter.v0.avsc", &old_text).unwrap();
        let mut value = apache_avro::to_value(encounter()).unwrap();
        if let Value::Record(fields) = &mut value {
            fields.retain(|(n, _)| n != "model_version");
        }
        let bytes = Codec::embedded().encode_value(&old, value).unwrap();

        // Unknown to a registry without the previous version...
        assert!(matches!(Codec::embedded().decode::<Encounter>(&bytes), Err(SchemaError::UnknownFingerprint(_))));
        // ...decoded, with the default filled in, by one that has it.
        let registry = Registry::embedded().clone().with_previous_version("encounter.v0.avsc", &old_text).unwrap();
        let decoded: Encounter = Codec::new(registry, WireFormat::SingleObject).decode(&bytes).unwrap();
        assert_eq!(decoded.model_version, None);
        assert_eq!(decoded.event_id, encounter().event_id);
    }

    fn encounter() -> Encounter {
        Encounter {
            event_id: "e1".into(),
            hospital_id: "h001".into(),
            encounter_ref: "ab12".into(),
            clinician_ref: "cd34".into(),
            occurred_at: 1_764_000_000_000,
            encounter_type: EncounterType::Outpatient,
            soap_sections_expected: 4,
            soap_sections_completed: 4,
            generation_ms: 1234,
            physician_rating: Some(5),
            model_version: Some(7),
        }
    }

    proptest! {
        #[test]
        fn encounters_round_trip(
            gen_ms in 0i64..10_000_000,
            rating in proptest::option::of(1i32..=5),
            completed in 0i32..=4,
            ts in 0i64..4_102_444_800_000,
            id in "[a-z0-9-]{1,40}",
        ) {
            let codec = Codec::embedded();
            let mut e = encounter();
            e.generation_ms = gen_ms;
            e.physician_rating = rating;
            e.soap_sections_completed = completed;
            e.occurred_at = ts;
            e.event_id = id;
            let bytes = codec.encode(&e).unwrap();
            prop_assert_eq!(codec.decode::<Encounter>(&bytes).unwrap(), e);
        }

        #[test]
        fn the_fast_path_writes_what_apache_avro_writes(
            gen_ms in any::<i64>(),
            rating in proptest::option::of(any::<i32>()),
            version in proptest::option::of(any::<i64>()),
            text in "\\PC{0,40}",
        ) {
            let codec = Codec::embedded();
            let mut e = encounter();
            e.generation_ms = gen_ms;
            e.physician_rating = rating;
            e.model_version = version;
            e.encounter_ref = text;
            let entry = codec.registry().get(Encounter::SCHEMA).unwrap();
            let by_value = codec.encode_value(entry, apache_avro::to_value(&e).unwrap()).unwrap();
            prop_assert_eq!(codec.encode(&e).unwrap(), by_value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let codec = Codec::embedded();
            let _ = codec.decode::<Encounter>(&bytes);
        }
    }
}
