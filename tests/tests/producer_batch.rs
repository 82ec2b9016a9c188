//! `Producer::batch`, what replay and restore stream through: every record lands once, in
//! the partition asked for, in order, tombstones and headers as given; a record that
//! cannot be queued fails the batch only after the ones before it are in.

mod common;

use std::collections::BTreeMap;

use common::*;
use guardian_kafka::Producer;
use guardian_testkit::{Stack, unique};
use rdkafka::message::{Header, Message, OwnedHeaders};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_every_record_once_in_order_and_stops_at_the_first_it_cannot_queue() {
    let stack = Stack::get();
    let topic = unique("it-batch");
    create_topics(&stack, &[&topic], 3).await;
    let producer = Producer::new(&settings(&stack)).unwrap();

    // More records than the batch keeps outstanding (20,000), so it waits for room.
    let n = 45_000;
    let mut batch = producer.batch(&topic);
    for i in 0..n {
        let seq = i.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: "seq", value: Some(seq.as_bytes()) });
        let payload = (i % 10 != 0).then(|| format!("value {i}").into_bytes());
        batch
            .push(Some(i % 3), Some(format!("k{}", i % 7).as_bytes()), payload.as_deref(), Some(headers))
            .await
            .unwrap();
    }
    assert_eq!(batch.finish().await.unwrap(), n as u64);

    let read = read_all(&stack, &topic, "read_committed").await;
    assert_eq!(read.len(), n as usize);
    let mut last: BTreeMap<i32, i32> = BTreeMap::new();
    for m in &read {
        let i: i32 = header(m, "seq").unwrap().parse().unwrap();
        assert_eq!(m.partition(), i % 3, "record {i}");
        assert_eq!(m.key(), Some(format!("k{}", i % 7).as_bytes()));
        match m.payload() {
            None => assert_eq!(i % 10, 0, "record {i} lost its value"),
            Some(v) => assert_eq!(v, format!("value {i}").as_bytes()),
        }
        let before = last.insert(m.partition(), i);
        assert!(before.is_none_or(|b| b < i), "record {i} after {before:?} in partition {}", m.partition());
    }

    // A record over the client's size limit is refused when queued: the push fails, and
    // the records pushed before it are delivered.
    let topic = unique("it-batch-refused");
    create_topics(&stack, &[&topic], 1).await;
    let mut batch = producer.batch(&topic);
    for i in 0..100 {
        batch.push(None, Some(b"k"), Some(format!("small {i}").as_bytes()), None).await.unwrap();
    }
    let huge = vec![7u8; 2 << 20];
    let refused = batch.push(None, Some(b"k"), Some(&huge), None).await;
    assert!(refused.is_err(), "a 2 MiB record was queued");
    assert_eq!(batch.delivered(), 100);
    assert_eq!(read_all(&stack, &topic, "read_committed").await.len(), 100);
}

/// A transactional producer (what replays write through): records of a committed
/// transaction are seen once by `read_committed` readers, those of an aborted one never,
/// whatever a `read_uncommitted` reader saw; a second producer under the same id fences
/// the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_batches_are_seen_when_committed_and_never_when_aborted() {
    let stack = Stack::get();
    let topic = unique("it-batch-txn");
    create_topics(&stack, &[&topic], 3).await;
    let id = unique("it-batch-txn-id");
    let producer = Producer::transactional(&settings(&stack), &id).await.unwrap();

    let push_all = async |producer: &Producer, from: i32, to: i32| {
        let mut batch = producer.batch(&topic);
        for i in from..to {
            batch.push(None, Some(format!("k{i}").as_bytes()), Some(format!("v{i}").as_bytes()), None).await.unwrap();
        }
        batch.finish().await.unwrap()
    };
    producer.begin().unwrap();
    assert_eq!(push_all(&producer, 0, 1000).await, 1000);
    producer.commit().await.unwrap();
    producer.begin().unwrap();
    assert_eq!(push_all(&producer, 1000, 1500).await, 500, "delivered, not yet committed");
    producer.abort().await.unwrap();
    producer.begin().unwrap();
    assert_eq!(push_all(&producer, 1500, 2000).await, 500);
    producer.commit().await.unwrap();

    let committed: Vec<String> = read_all(&stack, &topic, "read_committed")
        .await
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    let mut expected: Vec<String> = (0..1000).chain(1500..2000).map(|i| format!("v{i}")).collect();
    let mut got = committed.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "exactly the committed transactions' records");
    assert_eq!(read_all(&stack, &topic, "read_uncommitted").await.len(), 2000, "the aborted ones are in the log");

    // A newer producer under the same id fences the older: its next commit fails.
    let newer = Producer::transactional(&settings(&stack), &id).await.unwrap();
    producer.begin().unwrap();
    let mut batch = producer.batch(&topic);
    let _ = batch.push(None, Some(b"k"), Some(b"zombie"), None).await;
    let _ = batch.finish().await;
    assert!(producer.commit().await.is_err(), "a fenced producer committed");
    newer.begin().unwrap();
    assert_eq!(push_all(&newer, 2000, 2010).await, 10);
    newer.commit().await.unwrap();
    let after = read_all(&stack, &topic, "read_committed").await;
    assert_eq!(after.len(), 1510, "the committed 1,500 and the newer producer's 10");
    assert!(after.iter().all(|m| m.payload() != Some(b"zombie".as_slice())));
}
