//! The exactly-once outbox publisher against real Kafka and PostgreSQL: rows a crashed
//! publisher committed to Kafka but did not delete are let go, not sent again; a
//! transaction it left open is aborted (read-committed readers never see it); every row
//! reaches the topic exactly once, in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use guardian_pg::outbox::{OUTBOX_ID_HEADER, Outbox};
use guardian_runtime::Shutdown;
use guardian_testkit::{Stack, eventually, unique};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};

type Publisher = ThreadedProducer<guardian_kafka::GuardianContext>;

/// A transactional producer under the outbox publisher's id, as a crashed publisher had it.
fn publisher(settings: &guardian_kafka::KafkaSettings, transactional_id: &str) -> Publisher {
    let p: Publisher = settings
        .transactional_producer(transactional_id)
        .create_with_context(guardian_kafka::GuardianContext::new("it-outbox-crashed"))
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

/// Sends outbox row `id` ("row {id}", with its id header) as the publisher does.
fn send_row(p: &Publisher, topic: &str, id: i64, key: &str) {
    let id_text = id.to_string();
    let headers = OwnedHeaders::new().insert(Header { key: OUTBOX_ID_HEADER, value: Some(id_text.as_str()) });
    let payload = format!("row {id}");
    p.send(BaseRecord::to(topic).key(key).payload(&payload).headers(headers)).unwrap();
}

#[tokio::test]
async fn rows_reach_the_topic_exactly_once_across_a_crash() {
    let stack = Stack::get();
    let topic = unique("it-outbox");
    create_topics(&stack, &[&topic], 3).await;
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_outbox").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    let outbox = Outbox { table: "it_outbox", routes: vec![("row", topic.clone())] };
    guardian_pg::apply_ddl(&pool, &outbox.ddl()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let keys: Vec<String> = (1..=30).map(|i| format!("k{}", i % 7)).collect();
    let payloads: Vec<Vec<u8>> = (1..=30).map(|i| format!("row {i}").into_bytes()).collect();
    outbox.push_many(&mut conn, "row", &keys, &payloads, &[]).await.unwrap();
    drop(conn);

    // A publisher that "crashed": rows 1..=10 committed to Kafka, not deleted; rows
    // 11..=15 sent in a transaction it never committed.
    let transactional_id = format!("{topic}-publisher");
    let settings = settings(&stack);
    let crashed = publisher(&settings, &transactional_id);
    let send = |p: &Publisher, id: i64| send_row(p, &topic, id, &format!("k{}", id % 7));
    crashed.begin_transaction().unwrap();
    (1..=10).for_each(|id| send(&crashed, id));
    crashed.commit_transaction(Duration::from_secs(30)).unwrap();
    crashed.begin_transaction().unwrap();
    (11..=15).for_each(|id| send(&crashed, id));
    crashed.flush(Duration::from_secs(10)).unwrap();
    std::mem::forget(crashed); // no abort, no close: as if the process died

    let shutdown = Shutdown::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let publisher =
        tokio::spawn(outbox.clone().run_exactly_once(pool.clone(), settings, transactional_id, wake, shutdown.wait()));
    eventually("the outbox drained", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM it_outbox").fetch_one(&pool).await.ok()?;
        (n == 0).then_some(())
    })
    .await;
    shutdown.trigger();
    publisher.await.unwrap();

    let read = read_all(&stack, &topic, "read_committed").await;
    let mut ids: Vec<i64> = read.iter().map(|m| header(m, OUTBOX_ID_HEADER).unwrap().parse().unwrap()).collect();
    // In order within each partition, each row once.
    for p in 0..3 {
        let mine: Vec<i64> = read
            .iter()
            .filter(|m| m.partition() == p)
            .map(|m| header(m, OUTBOX_ID_HEADER).unwrap().parse().unwrap())
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "partition {p}: {mine:?}");
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=30).collect::<Vec<i64>>(), "every row exactly once");
    for m in &read {
        let id: i64 = header(m, OUTBOX_ID_HEADER).unwrap().parse().unwrap();
        assert_eq!(m.payload(), Some(format!("row {id}").as_bytes()));
    }
}

/// Two service instances write the outbox; ids do not follow commit order. A publisher
/// sent rows 1–10 and 20–22 (rows 11–19 belonged to another instance's transaction, not
/// yet committed) and crashed before deleting them. Recovery must let go of exactly what
/// the topic holds: rows 11–19 are still sent, nothing twice.
#[tokio::test]
async fn rows_committed_out_of_id_order_are_not_lost_at_recovery() {
    let stack = Stack::get();
    let topic = unique("it-outbox-order");
    create_topics(&stack, &[&topic], 2).await;
    let url =
        guardian_pg::with_new_schema(&stack.database_url, &unique("it_outbox_order").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    let outbox = Outbox { table: "it_outbox", routes: vec![("row", topic.clone())] };
    guardian_pg::apply_ddl(&pool, &outbox.ddl()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let keys: Vec<String> = (1..=30).map(|i| format!("k{i}")).collect();
    let payloads: Vec<Vec<u8>> = (1..=30).map(|i| format!("row {i}").into_bytes()).collect();
    outbox.push_many(&mut conn, "row", &keys, &payloads, &[]).await.unwrap();
    drop(conn);

    let transactional_id = format!("{topic}-publisher");
    let settings = settings(&stack);
    let crashed = publisher(&settings, &transactional_id);
    let send = |p: &Publisher, id: i64| send_row(p, &topic, id, &format!("k{id}"));
    crashed.begin_transaction().unwrap();
    (1..=10).chain(20..=22).for_each(|id| send(&crashed, id));
    crashed.commit_transaction(Duration::from_secs(30)).unwrap();
    std::mem::forget(crashed);

    let shutdown = Shutdown::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let publisher =
        tokio::spawn(outbox.clone().run_exactly_once(pool.clone(), settings, transactional_id, wake, shutdown.wait()));
    eventually("the outbox drained", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM it_outbox").fetch_one(&pool).await.ok()?;
        (n == 0).then_some(())
    })
    .await;
    shutdown.trigger();
    publisher.await.unwrap();
    let mut ids: Vec<i64> = read_all(&stack, &topic, "read_committed")
        .await
        .iter()
        .map(|m| header(m, OUTBOX_ID_HEADER).unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=30).collect::<Vec<i64>>(), "every row exactly once, 11–19 included");
}
