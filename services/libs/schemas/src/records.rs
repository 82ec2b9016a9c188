//! Typed records, one per schema in `schemas/`. Field names and types follow the schema
//! files exactly; the round-trip tests keep them in step.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A record with a registered schema.
pub trait Record: Serialize + DeserializeOwned {
    /// Full name of the schema, as registered.
    const SCHEMA: &'static str;
}

macro_rules! record {
    ($ty:ident, $name:literal) => {
        impl Record for $ty {
            const SCHEMA: &'static str = $name;
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EncounterType {
    Outpatient,
    Inpatient,
    Emergency,
    Telehealth,
    Other,
}

/// One clinical encounter (pseudonymous: no PHI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encounter {
    pub event_id: String,
    pub hospital_id: String,
    pub encounter_ref: String,
    pub clinician_ref: String,
    /// Event time, milliseconds since the Unix epoch.
    pub occurred_at: i64,
    pub encounter_type: EncounterType,
    pub soap_sections_expected: i32,
    pub soap_sections_completed: i32,
    pub generation_ms: i64,
    /// 1..=5 when rated.
    pub physician_rating: Option<i32>,
    pub model_version: Option<i64>,
}
record!(Encounter, "com.phoenixguardian.events.Encounter");

/// A chunk of a masked, quantized model update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientUpdateChunk {
    pub session_id: String,
    pub round: i64,
    pub hospital_id: String,
    pub model_version: i64,
    pub dimension: i64,
    pub chunk_index: i32,
    pub chunk_count: i32,
    pub first_parameter: i64,
    pub ring_bits: i32,
    #[serde(with = "serde_bytes_compat")]
    pub values: Vec<u8>,
    #[serde(with = "serde_bytes_compat::option")]
    pub signature: Option<Vec<u8>>,
    /// Sibling digests from this chunk's leaf to the root its signature covers.
    #[serde(default, with = "serde_bytes_compat::list")]
    pub proof: Vec<Vec<u8>>,
}
record!(GradientUpdateChunk, "com.phoenixguardian.fl.GradientUpdateChunk");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mechanism {
    SampledGaussian,
}

/// Privacy budget spent by one hospital in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSpend {
    pub event_id: String,
    pub hospital_id: String,
    pub session_id: String,
    pub round: i64,
    pub mechanism: Mechanism,
    pub sampling_rate: f64,
    pub noise_multiplier: f64,
    pub steps: i64,
    pub delta: f64,
    pub occurred_at: i64,
}
record!(BudgetSpend, "com.phoenixguardian.privacy.BudgetSpend");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SloKind {
    Availability,
    SoapGenerationLatency,
    InferenceLatency,
    CdsEvaluationLatency,
    Other,
}

/// One good-or-bad observation against an SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloEvent {
    pub event_id: String,
    pub service: String,
    pub hospital_id: Option<String>,
    pub slo: SloKind,
    pub good: bool,
    pub latency_ms: Option<f64>,
    pub observed_at: i64,
}
record!(SloEvent, "com.phoenixguardian.ops.SloEvent");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WindowSize {
    Minute,
    Hour,
    Day,
}

/// KPIs of one hospital over one tumbling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiRollup {
    pub hospital_id: String,
    pub window: WindowSize,
    pub window_start: i64,
    pub encounters: i64,
    pub soap_sections_expected: i64,
    pub soap_sections_completed: i64,
    pub generation_ms_p50: Option<f64>,
    pub generation_ms_p95: Option<f64>,
    pub generation_ms_p99: Option<f64>,
    pub ratings: i64,
    pub rating_sum: i64,
    pub slo_good: i64,
    pub slo_total: i64,
    pub late_corrections: i64,
}
record!(KpiRollup, "com.phoenixguardian.kpi.KpiRollup");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BudgetScope {
    Hospital,
    Global,
}

/// Alert levels, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BudgetLevel {
    Normal,
    Warning,
    High,
    Critical,
    Exhausted,
}

/// The accountant's decision on one spend event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendDecision {
    pub event_id: String,
    pub hospital_id: String,
    pub session_id: String,
    pub round: i64,
    pub accepted: bool,
    pub reason: Option<String>,
    pub hospital_epsilon: f64,
    pub global_epsilon: f64,
    pub delta: f64,
    pub decided_at: i64,
}
record!(SpendDecision, "com.phoenixguardian.privacy.SpendDecision");

/// Budget of one scope after the last accounted spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub scope: BudgetScope,
    pub hospital_id: Option<String>,
    pub epsilon_spent: f64,
    pub epsilon_limit: f64,
    pub delta: f64,
    pub level: BudgetLevel,
    pub events: i64,
    pub last_event_id: Option<String>,
    pub rounds_left: Option<i64>,
}
record!(BudgetStatus, "com.phoenixguardian.privacy.BudgetStatus");

/// A budget level change, or a refused over-budget spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyAlert {
    pub alert_id: String,
    pub scope: BudgetScope,
    pub hospital_id: Option<String>,
    pub previous_level: BudgetLevel,
    pub level: BudgetLevel,
    pub epsilon_spent: f64,
    pub epsilon_limit: f64,
    pub over_budget: bool,
    pub trigger_event_id: String,
}
record!(PrivacyAlert, "com.phoenixguardian.privacy.PrivacyAlert");

/// An aggregated model version; the weights are in S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub session_id: String,
    pub version: i64,
    pub round: i64,
    pub parent_version: Option<i64>,
    pub object_uri: String,
    pub sha256: String,
    pub parameters: i64,
    pub participants: Vec<String>,
    pub accuracy: Option<f64>,
}
record!(ModelVersion, "com.phoenixguardian.fl.ModelVersion");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoundControlKind {
    Open,
    KeysClosed,
    SharesClosed,
    Unmask,
    Finished,
    Failed,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DpUnit {
    Patient,
    Hospital,
}

/// Everything the parties of a federated round agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSettings {
    pub model_version: i64,
    pub model_uri: Option<String>,
    pub model_sha256: Option<String>,
    pub participants: Vec<String>,
    pub threshold: i32,
    pub neighbours: i32,
    pub dimension: i64,
    pub chunk_len: i32,
    pub clipping_range: f32,
    pub quantization_levels: i32,
    pub dp_unit: DpUnit,
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    pub delta: f64,
    #[serde(with = "serde_bytes_compat")]
    pub graph_seed: Vec<u8>,
    #[serde(with = "serde_bytes_compat")]
    pub aggregator_key: Vec<u8>,
    pub stage_timeout_ms: i64,
    pub local_steps: i32,
    pub learning_rate: f32,
}

/// A party put out of a round, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eviction {
    pub party: i32,
    pub hospital_id: String,
    pub reason: String,
}

/// A round's control message from the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundControl {
    pub session_id: String,
    pub round: i64,
    pub kind: RoundControlKind,
    pub issued_at: i64,
    pub settings: Option<RoundSettings>,
    pub first: Vec<i32>,
    pub second: Vec<i32>,
    #[serde(with = "serde_bytes_compat::option")]
    pub signature: Option<Vec<u8>>,
    pub reason: Option<String>,
    pub evicted: Vec<Eviction>,
}
record!(RoundControl, "com.phoenixguardian.fl.RoundControl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoundMessageKind {
    KeyAdvert,
    EncryptedShare,
}

/// A party's key advertisement or an encrypted share for one neighbour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMessage {
    pub session_id: String,
    pub round: i64,
    pub hospital_id: String,
    pub party: i32,
    pub kind: RoundMessageKind,
    #[serde(with = "serde_bytes_compat::option")]
    pub enc_pk: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub mask_pk: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub signature: Option<Vec<u8>>,
    pub to_party: Option<i32>,
    #[serde(with = "serde_bytes_compat::option")]
    pub ciphertext: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub seed_commitment: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub commitments: Option<Vec<u8>>,
}
record!(RoundMessage, "com.phoenixguardian.fl.RoundMessage");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareOf {
    pub owner: i32,
    #[serde(with = "serde_bytes_compat")]
    pub share: Vec<u8>,
}

/// A survivor's unmask shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnmaskShares {
    pub session_id: String,
    pub round: i64,
    pub hospital_id: String,
    pub party: i32,
    pub self_mask_shares: Vec<ShareOf>,
    pub key_shares: Vec<ShareOf>,
    pub complaints: Vec<i32>,
    #[serde(with = "serde_bytes_compat::option")]
    pub signature: Option<Vec<u8>>,
}
record!(UnmaskShares, "com.phoenixguardian.fl.UnmaskShares");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedHeader {
    pub key: String,
    #[serde(with = "serde_bytes_compat::option")]
    pub value: Option<Vec<u8>>,
}

/// One Kafka record in an S3 archive segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    #[serde(with = "serde_bytes_compat::option")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub value: Option<Vec<u8>>,
    pub headers: Vec<ArchivedHeader>,
}
record!(ArchivedRecord, "com.phoenixguardian.ops.ArchivedRecord");

/// One step of a disaster-recovery operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrAudit {
    pub operation_id: String,
    pub operation: String,
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub occurred_at: i64,
}
record!(DrAudit, "com.phoenixguardian.ops.DrAudit");

/// A record that failed to decode or validate, with its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub consumer_group: String,
    pub error_kind: String,
    pub error: String,
    #[serde(with = "serde_bytes_compat::option")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "serde_bytes_compat::option")]
    pub payload: Option<Vec<u8>>,
}
record!(DeadLetter, "com.phoenixguardian.ops.DeadLetter");

/// Avro `bytes` fields: serialize as a byte string, not as an array of ints.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> serde::de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    /// Avro `array` of `bytes`.
    pub mod list {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for b in v {
                seq.serialize_element(&super::option::Wrap(b))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            Ok(Vec::<super::option::Unwrap>::deserialize(d)?.into_iter().map(|u| u.0).collect())
        }
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&Wrap(b)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Unwrap>::deserialize(d)?.map(|u| u.0))
        }

        pub(super) struct Wrap<'a>(pub(super) &'a [u8]);
        impl serde::Serialize for Wrap<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        pub(super) struct Unwrap(pub(super) Vec<u8>);
        impl<'de> Deserialize<'de> for Unwrap {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Unwrap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;

    #[test]
    fn every_derived_record_round_trips() {
        let codec = Codec::embedded();
        let chunk = GradientUpdateChunk {
            session_id: "s".into(),
            round: 1,
            hospital_id: "h001".into(),
            model_version: 0,
            dimension: 3,
            chunk_index: 0,
            chunk_count: 1,
            first_parameter: 0,
            ring_bits: 32,
            values: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            signature: Some(vec![4; 64]),
            proof: vec![vec![5; 32], vec![6; 32]],
        };
        assert_eq!(codec.decode::<GradientUpdateChunk>(&codec.encode(&chunk).unwrap()).unwrap(), chunk);
        let control = RoundControl {
            session_id: "s".into(),
            round: 2,
            kind: RoundControlKind::Open,
            issued_at: 9,
            settings: Some(RoundSettings {
                model_version: 1,
                model_uri: Some("s3://b/k".into()),
                model_sha256: None,
                participants: vec!["h001".into(), "h002".into()],
                threshold: 2,
                neighbours: 1,
                dimension: 31,
                chunk_len: 8,
                clipping_range: 2.0,
                quantization_levels: 1 << 20,
                dp_unit: DpUnit::Patient,
                clip_norm: 1.0,
                noise_multiplier: 0.8,
                sampling_rate: 1.0,
                delta: 1e-5,
                graph_seed: vec![7; 32],
                aggregator_key: vec![1; 32],
                stage_timeout_ms: 30_000,
                local_steps: 2,
                learning_rate: 0.1,
            }),
            first: vec![0, 1],
            second: vec![],
            signature: Some(vec![3; 64]),
            reason: None,
            evicted: vec![Eviction { party: 1, hospital_id: "h002".into(), reason: "two chunks".into() }],
        };
        assert_eq!(codec.decode::<RoundControl>(&codec.encode(&control).unwrap()).unwrap(), control);
        let message = RoundMessage {
            session_id: "s".into(),
            round: 2,
            hospital_id: "h001".into(),
            party: 0,
            kind: RoundMessageKind::EncryptedShare,
            enc_pk: None,
            mask_pk: None,
            signature: None,
            to_party: Some(1),
            ciphertext: Some(vec![9; 120]),
            seed_commitment: None,
            commitments: Some(vec![5; 64]),
        };
        assert_eq!(codec.decode::<RoundMessage>(&codec.encode(&message).unwrap()).unwrap(), message);
        let unmask = UnmaskShares {
            session_id: "s".into(),
            round: 2,
            hospital_id: "h002".into(),
            party: 1,
            self_mask_shares: vec![ShareOf { owner: 1, share: vec![1; 52] }],
            key_shares: vec![ShareOf { owner: 0, share: vec![2; 52] }],
            complaints: vec![3],
            signature: Some(vec![6; 64]),
        };
        assert_eq!(codec.decode::<UnmaskShares>(&codec.encode(&unmask).unwrap()).unwrap(), unmask);
        let slo = SloEvent {
            event_id: "x".into(),
            service: "guardian-agent".into(),
            hospital_id: None,
            slo: SloKind::InferenceLatency,
            good: false,
            latency_ms: Some(2100.5),
            observed_at: 5,
        };
        assert_eq!(codec.decode::<SloEvent>(&codec.encode(&slo).unwrap()).unwrap(), slo);
        let rollup = KpiRollup {
            hospital_id: "h001".into(),
            window: WindowSize::Hour,
            window_start: 3_600_000,
            encounters: 10,
            soap_sections_expected: 40,
            soap_sections_completed: 39,
            generation_ms_p50: Some(1000.0),
            generation_ms_p95: None,
            generation_ms_p99: Some(4000.0),
            ratings: 3,
            rating_sum: 13,
            slo_good: 99,
            slo_total: 100,
            late_corrections: 0,
        };
        assert_eq!(codec.decode::<KpiRollup>(&codec.encode(&rollup).unwrap()).unwrap(), rollup);
        let status = BudgetStatus {
            scope: BudgetScope::Global,
            hospital_id: None,
            epsilon_spent: 1.5,
            epsilon_limit: 10.0,
            delta: 1e-5,
            level: BudgetLevel::Normal,
            events: 4,
            last_event_id: Some("e".into()),
            rounds_left: Some(12),
        };
        assert_eq!(codec.decode::<BudgetStatus>(&codec.encode(&status).unwrap()).unwrap(), status);
        let alert = PrivacyAlert {
            alert_id: "a".into(),
            scope: BudgetScope::Hospital,
            hospital_id: Some("h002".into()),
            previous_level: BudgetLevel::Warning,
            level: BudgetLevel::High,
            epsilon_spent: 1.6,
            epsilon_limit: 2.0,
            over_budget: false,
            trigger_event_id: "e".into(),
        };
        assert_eq!(codec.decode::<PrivacyAlert>(&codec.encode(&alert).unwrap()).unwrap(), alert);
        let model = ModelVersion {
            session_id: "s".into(),
            version: 2,
            round: 2,
            parent_version: Some(1),
            object_uri: "s3://models/sha256/ab".into(),
            sha256: "ab".into(),
            parameters: 31,
            participants: vec!["h001".into(), "h002".into()],
            accuracy: Some(0.93),
        };
        assert_eq!(codec.decode::<ModelVersion>(&codec.encode(&model).unwrap()).unwrap(), model);
        let dead = DeadLetter {
            source_topic: "t".into(),
            source_partition: 2,
            source_offset: 99,
            consumer_group: "g".into(),
            error_kind: "decode".into(),
            error: "bad header".into(),
            key: None,
            payload: Some(vec![0, 255, 7]),
        };
        assert_eq!(codec.decode::<DeadLetter>(&codec.encode(&dead).unwrap()).unwrap(), dead);
    }
}
