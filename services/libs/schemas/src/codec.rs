//! Turning typed records into bytes and back.
//!
//! [`WireFormat::SingleObject`] is the Avro specification's single-object encoding (no
//! registry: the writer schema is found by fingerprint). [`WireFormat::Confluent`] is
//! Confluent's framing (magic byte 0, the schema's registry id in 4 big-endian bytes, the
//! datum), what Confluent's deserializers, Kafka Connect, Flink and Spark read with a
//! schema registry. Decoding takes either framing whatever the codec writes (the first
//! byte tells them apart), so topics written before a switch still replay. The callers
//! only ever see [`Codec::encode`] and [`Codec::decode`].
//!
//! A process takes the registry's ids once, at start, with [`use_schema_registry`]: every
//! codec made by [`Codec::embedded`], before or after, then reads Confluent framing and,
//! when the process is told to, writes it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, from_value, to_avro_datum};

use crate::registry::{Registry, SchemaEntry};
use crate::{Record, SchemaError};

/// Single-object encoding marker, from the Avro specification.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus the 8-byte fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
/// Confluent's framing: this byte, then the 4-byte schema id.
pub const CONFLUENT_MAGIC: u8 = 0;
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// The schema registry's ids of the schemas this process knows (by fingerprint), and back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaIds {
    by_fingerprint: BTreeMap<u64, u32>,
    by_id: BTreeMap<u32, u64>,
}

impl SchemaIds {
    pub fn insert(&mut self, fingerprint: u64, id: u32) {
        self.by_fingerprint.insert(fingerprint, id);
        self.by_id.insert(id, fingerprint);
    }

    pub fn id_of(&self, fingerprint: u64) -> Option<u32> {
        self.by_fingerprint.get(&fingerprint).copied()
    }

    pub fn fingerprint_of(&self, id: u32) -> Option<u64> {
        self.by_id.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The process's registry ids, and whether it writes Confluent framing with them.
static PROCESS_IDS: OnceLock<(Arc<SchemaIds>, bool)> = OnceLock::new();

/// Gives every [`Codec::embedded`] of this process the registry's `ids`: they read
/// Confluent framing with them, and with `write` also write it. Once per process: a
/// second call with other ids or another `write` is refused.
pub fn use_schema_registry(ids: SchemaIds, write: bool) -> Result<(), SchemaError> {
    let set = PROCESS_IDS.get_or_init(|| (Arc::new(ids.clone()), write));
    if *set.0 != ids || set.1 != write {
        return Err(SchemaError::Mismatch("the process already uses other schema registry settings".into()));
    }
    Ok(())
}

/// The ids [`use_schema_registry`] set, if it ran.
pub fn process_schema_ids() -> Option<&'static SchemaIds> {
    PROCESS_IDS.get().map(|(ids, _)| ids.as_ref())
}

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Avro single-object encoding: no registry needed, schema found by fingerprint.
    #[default]
    SingleObject,
    /// Confluent's framing with these registry ids.
    Confluent(Arc<SchemaIds>),
    /// The process's: Confluent once [`use_schema_registry`] ran with `write`,
    /// single-object otherwise.
    Process,
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

    /// The codec every service uses: embedded schemas, the process's wire format.
    pub fn embedded() -> Self {
        Codec::new(Registry::embedded().clone(), WireFormat::Process)
    }

    /// The registry ids this codec writes with, if it writes Confluent framing.
    fn ids(&self) -> Option<&SchemaIds> {
        match &self.format {
            WireFormat::SingleObject => None,
            WireFormat::Confluent(ids) => Some(ids),
            WireFormat::Process => PROCESS_IDS.get().filter(|(_, write)| *write).map(|(ids, _)| ids.as_ref()),
        }
    }

    /// Whether this codec writes Confluent framing.
    pub fn writes_confluent(&self) -> bool {
        self.ids().is_some()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Encodes a typed record with its registered schema, straight through serde (no
    /// intermediate Avro value): the producers' hot path.
    pub fn encode<R: Record>(&self, record: &R) -> Result<Vec<u8>, SchemaError> {
        let entry = self.registry.get(R::SCHEMA)?;
        // Room for most records: a growing buffer costs a copy per doubling.
        let out = self.header(entry, 512)?;
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&entry.fast);
        serde_avro_fast::to_datum(record, out, &mut config)
            .map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))
    }

    /// Encodes a generic Avro value with the named schema.
    pub fn encode_value(&self, entry: &SchemaEntry, value: Value) -> Result<Vec<u8>, SchemaError> {
        let value = value.resolve(&entry.schema).map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))?;
        let datum =
            to_avro_datum(&entry.schema, value).map_err(|e| SchemaError::Mismatch(format!("{}: {e}", entry.name)))?;
        let mut out = self.header(entry, datum.len())?;
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// A buffer holding the wire format's header for `entry`, with room for the datum.
    fn header(&self, entry: &SchemaEntry, datum_len: usize) -> Result<Vec<u8>, SchemaError> {
        match self.ids() {
            None => {
                let mut out = Vec::with_capacity(SINGLE_OBJECT_HEADER_LEN + datum_len);
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&entry.fingerprint.to_le_bytes());
                Ok(out)
            }
            Some(ids) => {
                let id = ids.id_of(entry.fingerprint).ok_or_else(|| SchemaError::NotRegistered(entry.name.clone()))?;
                let mut out = Vec::with_capacity(CONFLUENT_HEADER_LEN + datum_len);
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
                Ok(out)
            }
        }
    }

    /// Finds the writer schema of an encoded record and returns it with the datum bytes.
    /// Either framing, whatever this codec writes: Confluent's needs its id among the
    /// codec's (or the process's) registry ids.
    pub fn writer_of<'a>(&self, bytes: &'a [u8]) -> Result<(&SchemaEntry, &'a [u8]), SchemaError> {
        match bytes.first() {
            None => Err(SchemaError::Empty),
            Some(&CONFLUENT_MAGIC) => {
                if bytes.len() < CONFLUENT_HEADER_LEN {
                    return Err(SchemaError::Truncated { len: bytes.len(), header: CONFLUENT_HEADER_LEN });
                }
                let id = u32::from_be_bytes(bytes[1..CONFLUENT_HEADER_LEN].try_into().expect("4 bytes"));
                let ids = match &self.format {
                    WireFormat::Confluent(ids) => Some(ids.as_ref()),
                    _ => process_schema_ids(),
                };
                let fingerprint = ids.and_then(|ids| ids.fingerprint_of(id)).ok_or(SchemaError::UnknownSchemaId(id))?;
                Ok((self.registry.by_fingerprint(fingerprint)?, &bytes[CONFLUENT_HEADER_LEN..]))
            }
            Some(_) => {
                if bytes.len() < SINGLE_OBJECT_HEADER_LEN {
                    if bytes.len() >= 2 && bytes[..2] == SINGLE_OBJECT_MAGIC {
                        return Err(SchemaError::Truncated { len: bytes.len(), header: SINGLE_OBJECT_HEADER_LEN });
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

    /// Registry ids for every embedded schema: 100, 101, ...
    fn ids() -> Arc<SchemaIds> {
        let mut ids = SchemaIds::default();
        for (i, e) in Registry::embedded().entries().enumerate() {
            ids.insert(e.fingerprint, 100 + i as u32);
        }
        Arc::new(ids)
    }

    #[test]
    fn confluent_framing_carries_the_registry_id_and_both_framings_decode() {
        let ids = ids();
        let confluent = Codec::new(Registry::embedded().clone(), WireFormat::Confluent(ids.clone()));
        let single = Codec::new(Registry::embedded().clone(), WireFormat::SingleObject);
        let bytes = confluent.encode(&spend()).unwrap();
        let fingerprint = confluent.registry().get(BudgetSpend::SCHEMA).unwrap().fingerprint;
        assert_eq!(bytes[0], CONFLUENT_MAGIC);
        assert_eq!(bytes[1..5], ids.id_of(fingerprint).unwrap().to_be_bytes());
        // The same datum after either header.
        let old = single.encode(&spend()).unwrap();
        assert_eq!(bytes[CONFLUENT_HEADER_LEN..], old[SINGLE_OBJECT_HEADER_LEN..]);
        assert_eq!(confluent.decode::<BudgetSpend>(&bytes).unwrap(), spend());
        assert_eq!(confluent.decode::<BudgetSpend>(&old).unwrap(), spend());
        // encode_value frames the same way.
        let entry = confluent.registry().get(BudgetSpend::SCHEMA).unwrap();
        assert_eq!(confluent.encode_value(entry, apache_avro::to_value(spend()).unwrap()).unwrap(), bytes);
        // Without the ids, a Confluent record names the id it cannot place.
        let id = ids.id_of(fingerprint).unwrap();
        assert!(matches!(single.decode::<BudgetSpend>(&bytes), Err(SchemaError::UnknownSchemaId(i)) if i == id));
    }

    #[test]
    fn confluent_garbage_and_unregistered_schemas_are_clear_errors() {
        let confluent = Codec::new(Registry::embedded().clone(), WireFormat::Confluent(ids()));
        assert!(matches!(
            confluent.decode::<BudgetSpend>(&[0, 0, 1]),
            Err(SchemaError::Truncated { len: 3, header: CONFLUENT_HEADER_LEN })
        ));
        assert!(matches!(confluent.decode::<BudgetSpend>(&[0, 0, 0, 0, 7, 1]), Err(SchemaError::UnknownSchemaId(7))));
        // An id of another schema: the record's schema is named.
        let other = confluent.encode(&encounter()).unwrap();
        assert!(matches!(confluent.decode::<BudgetSpend>(&other), Err(SchemaError::WrongSchema { .. })));
        // A schema with no id here cannot be written in Confluent framing.
        let none = Codec::new(Registry::embedded().clone(), WireFormat::Confluent(Arc::new(SchemaIds::default())));
        let e = none.encode(&spend()).unwrap_err();
        assert!(e.to_string().contains("com.phoenixguardian.privacy.BudgetSpend"), "{e}");
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

        #[test]
        fn either_framing_decodes_to_the_same_record(
            gen_ms in 0i64..10_000_000,
            rating in proptest::option::of(1i32..=5),
            confluent_first in any::<bool>(),
        ) {
            let confluent = Codec::new(Registry::embedded().clone(), WireFormat::Confluent(ids()));
            let single = Codec::new(Registry::embedded().clone(), WireFormat::SingleObject);
            let mut e = encounter();
            e.generation_ms = gen_ms;
            e.physician_rating = rating;
            let (a, b) = if confluent_first { (&confluent, &single) } else { (&single, &confluent) };
            let (x, y) = (a.encode(&e).unwrap(), b.encode(&e).unwrap());
            prop_assert_ne!(x[0], y[0]);
            prop_assert_eq!(confluent.decode::<Encounter>(&x).unwrap(), e.clone());
            prop_assert_eq!(confluent.decode::<Encounter>(&y).unwrap(), e);
        }

        #[test]
        fn arbitrary_bytes_after_a_confluent_header_never_panic(rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let confluent = Codec::new(Registry::embedded().clone(), WireFormat::Confluent(ids()));
            let mut bytes = vec![0, 0, 0, 0, 100];
            bytes.extend(rest);
            let _ = confluent.decode::<Encounter>(&bytes);
        }
    }
}
