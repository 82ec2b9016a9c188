//! Effects survive SIGKILL: nothing lost, nothing doubled.
//!
//! (a) Kafka -> PostgreSQL with offsets in the effect's transaction: the probe is killed
//!     inside an open transaction, then at random points; the table ends with each
//!     record exactly once.
//! (b) Kafka -> Kafka with transactions: the probe is killed with outputs of the open
//!     transaction already on the broker; a read_committed reader sees each output
//!     exactly once (a read_uncommitted reader proves the aborted outputs were there).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use guardian_schemas::Codec;
use guardian_schemas::records::BudgetSpend;
use guardian_testkit::{Stack, eventually, unique, wait_for_file};
use rand::Rng;
use rdkafka::message::Message;
use sqlx::Row;

const RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_effects_are_exactly_once_across_sigkill() {
    let stack = Stack::get();
    let (input, dlq) = (unique("it-pg-in"), unique("it-pg-dlq"));
    create_topics(&stack, &[&input, &dlq], 3).await;
    // Every 500th slot is undecodable: 6 poison records among them.
    let ids = produce_spends(&stack, &input, RECORDS, Some(500)).await;
    let table = unique("it_effects").replace('-', "_");
    let group = unique("it-pg-group");
    let probe_args = |pause: Option<(&str, &str)>| {
        let mut a: Vec<String> =
            ["--group", &group, "--input", &input, "--dlq", &dlq].iter().map(|s| s.to_string()).collect();
        if let Some((at, marker)) = pause {
            a.extend(["--pause-at".into(), at.into(), "--marker".into(), marker.into()]);
        }
        a.extend([
            "pg-sink".into(),
            "--database-url".into(),
            stack.database_url.clone(),
            "--table".into(),
            table.clone(),
        ]);
        a
    };
    let pool = guardian_pg::connect(&stack.database_url, 2).await.unwrap();
    let count = |pool: sqlx::PgPool, table: String| async move {
        sqlx::query(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .map(|r| r.get::<i64, _>(0))
            .unwrap_or(0)
    };

    // 1. Killed between the effect and the commit.
    let marker = marker("pg-pause");
    let m = marker.to_string_lossy().into_owned();
    let mut child = probe(&stack, &probe_args(Some(("700", &m))).iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_file(&marker, Duration::from_secs(60)).await;
    let before_kill = count(pool.clone(), table.clone()).await;
    sigkill(&mut child);
    assert!(before_kill < 700, "the paused transaction's rows must not be visible ({before_kill})");
    assert_eq!(count(pool.clone(), table.clone()).await, before_kill, "the killed transaction left rows behind");

    // 2. Killed at random points while consuming.
    let mut rng = rand::rng();
    for _ in 0..3 {
        let mut child = probe(&stack, &probe_args(None).iter().map(String::as_str).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        sigkill(&mut child);
    }

    // 3. A last run to the end, stopped cleanly.
    let child = probe(&stack, &probe_args(None).iter().map(String::as_str).collect::<Vec<_>>());
    let expected = ids.len() as i64;
    eventually("every record applied", Duration::from_secs(90), || {
        let (pool, table) = (pool.clone(), table.clone());
        async move { (count(pool, table).await >= expected).then_some(()) }
    })
    .await;
    let (status, out) = sigterm(child);
    assert!(status.success(), "probe exit on SIGTERM: {status}, {out}");

    let rows = sqlx::query(&format!("SELECT event_id FROM {table}")).fetch_all(&pool).await.unwrap();
    let applied: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let distinct: BTreeSet<&String> = applied.iter().collect();
    assert_eq!(
        applied.len(),
        ids.len(),
        "each record applied exactly once (rows {}, distinct {})",
        applied.len(),
        distinct.len()
    );
    assert_eq!(distinct, ids.iter().collect::<BTreeSet<_>>());
    let stored: i64 = sqlx::query("SELECT sum(next_offset)::bigint FROM kafka_offsets WHERE group_id = $1")
        .bind(&group)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<Option<i64>, _>(0)
        .unwrap();
    assert_eq!(stored, RECORDS as i64, "stored offsets cover every record, poison included");

    // Poison records were dead-lettered (at least once), each with its origin.
    let dead = read_all(&stack, &dlq, "read_committed").await;
    let origins: BTreeSet<(String, String)> = dead
        .iter()
        .map(|m| {
            (
                header(m, "dlq.source.partition").unwrap().to_string(),
                header(m, "dlq.source.offset").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(origins.len(), RECORDS / 500, "one dead letter per poison record");
    assert!(dead.iter().all(|m| header(m, "dlq.source.topic") == Some(input.as_str())));
    sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_outputs_are_exactly_once_across_sigkill() {
    let stack = Stack::get();
    let (input, output, dlq) = (unique("it-tx-in"), unique("it-tx-out"), unique("it-tx-dlq"));
    create_topics(&stack, &[&input, &output, &dlq], 3).await;
    let ids = produce_spends(&stack, &input, RECORDS, None).await;
    let group = unique("it-tx-group");
    let txn_id = unique("it-tx-id");
    let args = |pause: Option<&str>| {
        let mut a: Vec<String> =
            ["--group", &group, "--input", &input, "--dlq", &dlq].iter().map(|s| s.to_string()).collect();
        if let Some(marker) = pause {
            a.extend(["--pause-at".into(), "300".into(), "--marker".into(), marker.into()]);
        }
        a.extend(["txn-copy".into(), "--output".into(), output.clone(), "--transactional-id".into(), txn_id.clone()]);
        a
    };

    let marker = marker("tx-pause");
    let m = marker.to_string_lossy().into_owned();
    let mut child = probe(&stack, &args(Some(&m)).iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_file(&marker, Duration::from_secs(60)).await;
    // Let librdkafka ship the open transaction's outputs to the broker, then kill.
    let uncommitted = eventually("open-transaction outputs on the broker", Duration::from_secs(20), || {
        let (stack, output) = (stack.clone(), output.clone());
        async move {
            let n = read_all(&stack, &output, "read_uncommitted").await.len();
            (n > 0).then_some(n)
        }
    })
    .await;
    sigkill(&mut child);
    assert!(read_all(&stack, &output, "read_committed").await.len() < uncommitted + 1);

    let child = probe(&stack, &args(None).iter().map(String::as_str).collect::<Vec<_>>());
    eventually("every output committed", Duration::from_secs(90), || {
        let (stack, output) = (stack.clone(), output.clone());
        async move { (read_all(&stack, &output, "read_committed").await.len() >= RECORDS).then_some(()) }
    })
    .await;
    let (status, out) = sigterm(child);
    assert!(status.success(), "probe exit on SIGTERM: {status}, {out}");

    let codec = Codec::embedded();
    let committed = read_all(&stack, &output, "read_committed").await;
    let seen: Vec<BudgetSpend> = committed.iter().map(|m| codec.decode(m.payload().unwrap()).unwrap()).collect();
    let distinct: BTreeSet<&str> = seen.iter().map(|s| s.event_id.as_str()).collect();
    assert_eq!(seen.len(), RECORDS, "read_committed sees each output exactly once");
    assert_eq!(distinct, ids.iter().map(String::as_str).collect::<BTreeSet<_>>());
    assert!(seen.iter().all(|s| s.round >= 1000), "outputs are the transform's");
    let all = read_all(&stack, &output, "read_uncommitted").await;
    assert!(all.len() > RECORDS, "the killed transaction's outputs were on the broker ({} records in all)", all.len());
}
