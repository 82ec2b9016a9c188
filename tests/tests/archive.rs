//! A topic archived to S3, deleted, restored from the archive: every record comes back
//! into its partition at its offset with its key, value and headers, a third-party Avro
//! reader (fastavro) reads the segments, archiving again writes nothing new, and the
//! privacy accountant computes the same budgets from the restored topic as from the
//! original.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use guardian_accountant::publish::Destinations;
use guardian_accountant::{Config, Limits};
use guardian_archiver::archive::{ArchiveSettings, archive_topic};
use guardian_archiver::restore::{self, RESTORE_SOURCE_HEADER, RestoreRange};
use guardian_kafka::Producer;
use guardian_kafka::admin::Admin;
use guardian_objects::{ObjectStore, S3Settings};
use guardian_runtime::Shutdown;
use guardian_testkit::{Stack, eventually, unique};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use sqlx::Row;

type Seen = BTreeMap<(i32, i64), (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>)>;

fn seen(messages: &[OwnedMessage]) -> Seen {
    messages
        .iter()
        .map(|m| {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .filter(|h| h.key != RESTORE_SOURCE_HEADER)
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            ((m.partition(), m.offset()), (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), headers))
        })
        .collect()
}

/// Budgets the accountant computes from `spends`, in a database schema of its own.
async fn budgets(stack: &Stack, spends: &str, expected_events: i64) -> Vec<(String, String, i64, String)> {
    let (status, alerts, dlq) = (unique("it-ar-status"), unique("it-ar-alerts"), unique("it-ar-dlq"));
    let decisions = unique("it-ar-decisions");
    create_topics(stack, &[&status, &alerts, &dlq, &decisions], 1).await;
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_ar").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    let config = Config {
        kafka: settings(stack),
        group: unique("it-ar-acc"),
        spend_topic: spends.to_string(),
        dead_letter_topic: dlq,
        destinations: Destinations { status_topic: status, alerts_topic: alerts, decisions_topic: decisions },
        limits: Limits::default(),
        signers: None,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    let shutdown = Shutdown::new();
    let task = tokio::spawn(guardian_accountant::run(config, pool.clone(), shutdown.clone()));
    eventually("every spend in the ledger", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query("SELECT count(*) FROM privacy_ledger").fetch_one(&pool).await.ok()?.get(0);
            (n >= expected_events).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    sqlx::query("SELECT scope_key, epsilon_spent::text, events, level FROM privacy_budgets ORDER BY scope_key")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_delete_restore_gives_the_same_topic_and_the_same_budgets() {
    let stack = Stack::get();
    let topic = unique("it-archive-spend");
    create_topics(&stack, &[&topic], 3).await;
    let producer = Producer::new(&settings(&stack)).unwrap();
    let mut events = 0;
    for h in 1..=5 {
        for r in 0..12 {
            let s = spend_of(h, r, format!("ar-h{h}-r{r}"));
            producer.send(&topic, &s.hospital_id, &s).await.unwrap();
            events += 1;
        }
    }
    // A record with its own headers, a tombstone and a record that is not a spend: the
    // archive keeps bytes, not meanings.
    let headers = OwnedHeaders::new().insert(Header { key: "origin", value: Some(b"site-7".as_slice()) });
    producer.send_bytes(&topic, Some(b"h001"), b"not avro", Some(headers)).await.unwrap();
    producer.send_bytes_to(&topic, Some(1), Some(b"h002"), None, None).await.unwrap();
    let original = read_all(&stack, &topic, "read_committed").await;
    assert_eq!(original.len(), events + 2);
    let before = budgets(&stack, &topic, events as i64).await;

    let store = ObjectStore::new(&S3Settings {
        endpoint: Some(stack.s3_endpoint.clone()),
        region: "us-east-1".into(),
        access_key: stack.s3_access_key.clone(),
        secret_key: stack.s3_secret_key.clone(),
        bucket: "guardian-it-archive".into(),
    });
    store.ensure_bucket().await.unwrap();
    let archive = ArchiveSettings { prefix: unique("it"), segment_records: 7 };
    let kafka = settings(&stack);
    let first = archive_topic(&kafka, &store, &topic, &archive).await.unwrap();
    assert_eq!(first.records as usize, original.len());
    assert!(first.segments_written >= 9, "segments of at most 7 records: {first:?}");
    let again = archive_topic(&kafka, &store, &topic, &archive).await.unwrap();
    assert_eq!((again.segments_written, again.records), (0, 0), "a second pass archives nothing new");
    let manifest = restore::manifest(&store, &archive.prefix, &topic).await.unwrap();
    assert_eq!(manifest.records() as usize, original.len());

    // A reader that is not ours decodes a segment.
    let seg = &manifest.segments[0];
    let file = std::env::temp_dir().join(format!("{}.avro", unique("segment")));
    std::fs::write(&file, store.get(&seg.key).await.unwrap()).unwrap();
    let out = std::process::Command::new(&stack.python)
        .args([
            "-c",
            "import sys, fastavro; rs = list(fastavro.reader(open(sys.argv[1], 'rb'))); \
             print(len(rs), rs[0]['partition'], rs[0]['offset'], rs[-1]['offset'])",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} {} {} {}", seg.records, seg.partition, seg.first_offset, seg.last_offset)
    );
    let _ = std::fs::remove_file(&file);

    // Delete the topic, create it empty, restore it from the archive.
    let admin = Admin::connect(&kafka).await.unwrap();
    admin.delete(std::slice::from_ref(&topic)).await.unwrap();
    eventually("the topic is gone", Duration::from_secs(30), || {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        async move { guardian_kafka::reader::topic_watermarks(&kafka, "it", &[&topic]).await.is_err().then_some(()) }
    })
    .await;
    create_topics(&stack, &[&topic], 3).await;
    let plan = restore::plan(&manifest, &RestoreRange::default());
    let report = restore::restore(&producer, &store, &plan, &topic, &RestoreRange::default(), |_, _| {}).await.unwrap();
    assert_eq!(report.records as usize, original.len());
    let restored = read_all(&stack, &topic, "read_committed").await;
    assert_eq!(seen(&restored), seen(&original), "every record back at its partition and offset, bytes intact");
    for m in &restored {
        assert_eq!(
            header(m, RESTORE_SOURCE_HEADER),
            Some(format!("{topic}/{}/{}", m.partition(), m.offset()).as_str())
        );
    }
    let after = budgets(&stack, &topic, events as i64).await;
    assert_eq!(after, before, "the accountant computes the same budgets from the restored topic");
}
