//! A downstream reader as an analytics team writes one, with a schema registry and no
//! schema files: Python confluent-kafka's `SchemaRegistryClient` (writer schema by id) + fastavro
//! decode a topic the library wrote in Confluent framing with the stack's registry's ids.
//! (A test binary of its own: it switches its process to Confluent framing.)

mod common;

use common::*;
use guardian_kafka::Producer;
use guardian_schemas::Record;
use guardian_schemas::codec::{SchemaIds, use_schema_registry};
use guardian_schemas::records::Encounter;
use guardian_testkit::{Stack, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_own_deserializer_reads_a_topic_in_confluent_framing() {
    let stack = Stack::get();
    let topic = unique("it-confluent");
    create_topics(&stack, &[&topic], 3).await;
    // The subject as `guardian topics apply` makes it, for this test's own topic.
    let registry = guardian_registry::Client::new(&stack.schema_registry_url).unwrap();
    let entry = guardian_schemas::Registry::embedded().get(Encounter::SCHEMA).unwrap();
    let subject = guardian_registry::Subject::for_topic(&topic, entry, "BACKWARD_TRANSITIVE");
    guardian_registry::sync(&registry, std::slice::from_ref(&subject), false).await.unwrap();
    let (ids, missing) = guardian_registry::resolve(&registry, std::slice::from_ref(&subject)).await.unwrap();
    assert!(missing.is_empty());
    let id = ids.id_of(entry.fingerprint).unwrap();
    use_schema_registry(ids, true).unwrap();
    assert!(use_schema_registry(SchemaIds::default(), true).is_err(), "one registry per process");

    let producer = Producer::new(&settings(&stack)).unwrap();
    assert!(producer.codec().writes_confluent());
    let sent: Vec<Encounter> = (0..60).map(encounter).collect();
    for e in &sent {
        producer.send(&topic, &e.hospital_id, e).await.unwrap();
    }
    // On the wire: magic 0, then the registry's id.
    let raw = read_all(&stack, &topic, "read_committed").await;
    assert_eq!(raw.len(), sent.len());
    for m in &raw {
        let v = rdkafka::Message::payload(m).unwrap();
        assert_eq!((v[0], u32::from_be_bytes(v[1..5].try_into().unwrap())), (0, id));
    }

    assert_python_reader_decodes(&stack, &topic, &["--registry", &stack.schema_registry_url], &sent);
}
