//! A downstream reader that is not ours (Python: confluent-kafka + fastavro) decodes a
//! topic written by the library, with nothing but the files in `schemas/`.

mod common;

use std::process::Command;

use common::*;
use guardian_kafka::Producer;
use guardian_schemas::records::Encounter;
use guardian_testkit::{Stack, unique};

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

    let schemas = stack.repo.join("schemas");
    assert_python_reader_decodes(&stack, &topic, &["--schemas", schemas.to_str().unwrap()], &sent);
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
