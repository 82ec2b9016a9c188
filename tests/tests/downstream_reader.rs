//! A downstream reader that is not ours (Python: confluent-kafka + fastavro) decodes a
//! topic written by the library, with nothing but the files in `schemas/`.

mod common;

use std::process::Command;

use common::*;
use guardian_kafka::Producer;
use guardian_schemas::records::{Encounter, EncounterType};
use guardian_testkit::{Stack, unique};

fn encounter(i: usize) -> Encounter {
    Encounter {
        event_id: format!("enc-{i:04}"),
        hospital_id: format!("h{:03}", i % 3 + 1),
        encounter_ref: format!("{:016x}", i * 7919),
        clinician_ref: format!("{:016x}", i * 104_729),
        occurred_at: 1_764_000_000_000 + i as i64 * 1000,
        encounter_type: [EncounterType::Outpatient, EncounterType::Emergency, EncounterType::Telehealth][i % 3],
        soap_sections_expected: 4,
        soap_sections_completed: (i % 5) as i32,
        generation_ms: 800 + i as i64,
        physician_rating: i.is_multiple_of(2).then_some((i % 5) as i32 + 1),
        model_version: i.is_multiple_of(4).then_some(i as i64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_reader_decodes_a_topic_with_only_the_schema_files() {
    let stack = Stack::get();
    let topic = unique("it-downstream");
    create_topics(&stack, &[&topic], 3).await;
    let producer = Producer::new(&settings(&stack)).unwrap();
    let sent: Vec<Encounter> = (0..60).map(encounter).collect();
    for e in &sent {
        producer.send(&topic, &e.hospital_id, e).await.unwrap();
    }

    let out = Command::new(&stack.python)
        .arg(stack.repo.join("tests/downstream/read_topic.py"))
        .args(["--bootstrap", &stack.kafka_bootstrap, "--topic", &topic, "--schemas"])
        .arg(stack.repo.join("schemas"))
        .output()
        .expect("run the python reader (tests/stack/stack.sh install creates its venv)");
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), sent.len(), "the reader saw every record");
    for e in &sent {
        let got = lines
            .iter()
            .find(|l| l["value"]["event_id"] == e.event_id.as_str())
            .unwrap_or_else(|| panic!("{} not decoded", e.event_id));
        assert_eq!(got["_schema"], "com.phoenixguardian.events.Encounter");
        let v = &got["value"];
        // Field by field, as the Avro library (not ours) decoded them.
        let expected = serde_json::json!({
            "event_id": e.event_id,
            "hospital_id": e.hospital_id,
            "encounter_ref": e.encounter_ref,
            "clinician_ref": e.clinician_ref,
            "occurred_at": e.occurred_at,
            "encounter_type": match e.encounter_type {
                EncounterType::Outpatient => "OUTPATIENT",
                EncounterType::Emergency => "EMERGENCY",
                EncounterType::Telehealth => "TELEHEALTH",
                _ => unreachable!(),
            },
            "soap_sections_expected": e.soap_sections_expected,
            "soap_sections_completed": e.soap_sections_completed,
            "generation_ms": e.generation_ms,
            "physician_rating": e.physician_rating,
            "model_version": e.model_version,
        });
        assert_eq!(v, &expected, "{}", e.event_id);
    }
}

#[test]
fn every_schema_has_the_fingerprint_an_independent_library_computes() {
    let stack = Stack::get();
    let out = Command::new(&stack.python)
        .arg(stack.repo.join("tests/downstream/read_topic.py"))
        .args(["--fingerprints", "--schemas"])
        .arg(stack.repo.join("schemas"))
        .output()
        .expect("run the python reader");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: std::collections::BTreeMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').map(|(n, f)| (n.to_string(), f.to_string())).unwrap())
        .collect();
    let registry = guardian_schemas::Registry::embedded();
    assert_eq!(theirs.len(), registry.names().count(), "{theirs:?}");
    for entry in registry.entries() {
        let ours: String = entry.fingerprint.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(theirs.get(&entry.name), Some(&ours), "{}: fastavro and guardian-schemas disagree", entry.name);
    }
}
