//! Two KPI rollup instances in one group on the real stack, SIGKILLed at seeded random
//! times while 4,000 encounters arrive: the instances' outbox rows commit out of id order
//! (each takes ids from one sequence), and each restarted publisher recovers. Every window
//! row reaches the compacted topic exactly once (no outbox id twice, read committed), the
//! topic's newest record of every window equals the window in PostgreSQL, and every
//! encounter is counted once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, guardian_on, run_ok as ok, wait_for};
use guardian_kafka::KafkaSettings;
use guardian_schemas::Codec;
use guardian_schemas::records::KpiRollup;
use guardian_testkit::{Stack, unique};
use guardian_topics::TopicId;
use rand::{Rng, SeedableRng};

const ENCOUNTERS: i64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_killed_at_random_send_every_window_row_exactly_once() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-kpi2"));
    let guardian = |args: &[&str]| {
        let mut c = guardian_on(&stack, &prefix, args);
        c.env_remove("GUARDIAN_SIGNERS");
        c
    };
    ok(guardian(&["topics", "apply"]));
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("kpi2").replace('-', "_")).await.unwrap();
    let group = unique("it-kpi2-group");
    let start = || -> Child {
        let listen = format!("127.0.0.1:{}", free_port());
        guardian(&["kpi", "--database-url", &url, "--listen", &listen, "--group", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut instances = [start(), start()];
    let mut publisher = guardian(&[
        "agent",
        "encounters",
        "--generate",
        "--hospitals",
        "10",
        "--count",
        &ENCOUNTERS.to_string(),
        "--rate",
        "400",
        "--seed",
        "9",
        "--late-every",
        "0",
    ])
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    // SIGKILL one of the two every 1–3 s (seeded), restarting it at once.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut kills = 0;
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..3_000))).await;
        let i = rng.random_range(0..2);
        let _ = instances[i].kill();
        let _ = instances[i].wait();
        instances[i] = start();
        kills += 1;
    }
    assert!(publisher.wait().unwrap().success(), "the publisher finished");
    assert!(kills >= 4, "{kills} kills");

    // Both run on until every encounter is counted and the outbox is empty.
    let pool = guardian_pg::connect(&url, 2).await.unwrap();
    wait_for("every encounter counted, the outbox drained", Duration::from_secs(120), async || {
        let counted: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_outbox").fetch_one(&pool).await.ok()?;
        (counted == ENCOUNTERS && pending == 0).then_some(())
    })
    .await;
    for mut i in instances {
        let _ = i.kill();
        let _ = i.wait();
    }
    let counted: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, ENCOUNTERS, "every encounter once");

    // The topic, read committed: no outbox id twice; the newest record of each window is
    // the window's row.
    let topic = common::topic_name(&prefix, TopicId::KpiRollups);
    let records = guardian_kafka::reader::read_range(
        &KafkaSettings::new(&stack.kafka_bootstrap, "it-kpi2"),
        "it-kpi2",
        &[&topic],
        None,
    )
    .await
    .unwrap();
    let codec = Codec::embedded();
    let mut ids = BTreeSet::new();
    let mut newest: BTreeMap<String, (i64, KpiRollup)> = BTreeMap::new();
    for m in &records {
        let id: i64 = m
            .headers
            .iter()
            .find(|(k, _)| k == guardian_pg::outbox::OUTBOX_ID_HEADER)
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok()?.parse().ok())
            .expect("every rollup record carries its outbox id");
        assert!(ids.insert(id), "outbox row {id} is in the topic twice");
        let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
        let r: KpiRollup = codec.decode(&m.payload).unwrap();
        let e = newest.entry(key).or_insert((id, r.clone()));
        if id >= e.0 {
            *e = (id, r);
        }
    }
    let rows: Vec<(String, String, i64, i64)> =
        sqlx::query_as("SELECT hospital_id, window_size, window_start_ms, encounters FROM kpi_rollups")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(newest.len(), rows.len(), "every window is in the topic");
    for (h, size, start, encounters) in rows {
        let key = format!("{h}/{size}/{start}");
        let (_, r) = newest.get(&key).unwrap_or_else(|| panic!("window {key} never reached the topic"));
        assert_eq!(r.encounters, encounters, "{key}: the topic's newest record is not the row");
    }
    println!("{kills} kills; {} rollup records, {} windows, each row once", records.len(), newest.len());
}
