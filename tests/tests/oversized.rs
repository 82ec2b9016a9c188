//! Records at the broker's size limit, on the real stack: a hospital writes a record as
//! large as the broker takes (incompressible bytes) into the encounters topic and into the
//! spend topic. The KPI rollup and the accountant each dead-letter it as a stub (its size,
//! digest and first bytes: the whole record wrapped would be over the limit) and go on to
//! the honest records behind it; the SLO monitor (which keeps no dead letters) leaves it out
//! and counts the events behind it. A record above the limit is refused by the broker at
//! once.

mod common;

use std::time::Duration;

use common::*;
use guardian_accountant::publish::Destinations;
use guardian_kafka::dlq::{H_ORIGINAL_SHA256, H_ORIGINAL_SIZE, H_TRUNCATED, STUB_PREFIX_BYTES};
use guardian_kafka::{KafkaSettings, Producer};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::DeadLetter;
use guardian_schemas::synth::Synth;
use guardian_testkit::{Stack, eventually, unique};
use rand::{Rng, SeedableRng};
use rdkafka::message::{Message, OwnedMessage};
use sqlx::Row;

/// The broker's `message.max.bytes` (the default: the stack does not change it) less
/// room for the record batch's own header and the record's framing.
const AT_LIMIT: usize = 1_048_588 - 200;

fn noise(len: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(len as u64);
    (0..len).map(|_| rng.random()).collect()
}

/// A producer that leaves the size check to the broker.
fn big_producer(stack: &Stack) -> Producer {
    let mut s = KafkaSettings::new(&stack.kafka_bootstrap, "it-big");
    s.overrides.insert("message.max.bytes".into(), "4000000".into());
    Producer::new(&s).unwrap()
}

/// Sends the record at the limit (its delivery awaited alone, so no batch carries anything
/// else), checks the broker refuses one above the limit.
async fn send_oversized(stack: &Stack, topic: &str, key: &str) -> Vec<u8> {
    let producer = big_producer(stack);
    let above = producer.send_bytes(topic, Some(key.as_bytes()), &noise(AT_LIMIT + 64 * 1024), None).await;
    assert!(above.is_err(), "a record above the broker's limit was taken");
    let at = noise(AT_LIMIT);
    producer.send_bytes(topic, Some(key.as_bytes()), &at, None).await.expect("the broker takes a record at its limit");
    at
}

fn check_stub(stack_dlq: &[OwnedMessage], source: &str, original: &[u8], key: &str) {
    let codec = Codec::embedded();
    let stubs: Vec<&OwnedMessage> =
        stack_dlq.iter().filter(|m| header(m, "dlq.source.topic") == Some(source)).collect();
    assert_eq!(stubs.len(), 1, "one dead letter for {source}");
    let m = stubs[0];
    assert_eq!(header(m, H_TRUNCATED), Some("true"));
    assert_eq!(header(m, H_ORIGINAL_SIZE), Some((original.len() + key.len()).to_string().as_str()));
    assert_eq!(header(m, H_ORIGINAL_SHA256).map(str::len), Some(64));
    let letter: DeadLetter = codec.decode(m.payload().unwrap()).unwrap();
    assert_eq!(letter.payload.as_deref(), Some(&original[..STUB_PREFIX_BYTES]));
    assert_eq!(letter.key.as_deref(), Some(key.as_bytes()));
    assert!(m.payload().unwrap().len() < 4 * STUB_PREFIX_BYTES + 2048, "the stub is small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_at_the_size_limit_is_dead_lettered_as_a_stub_and_the_kpi_rollup_goes_on() {
    let stack = Stack::get();
    let (enc, slo, rollups, dlq) =
        (unique("it-big-enc"), unique("it-big-slo"), unique("it-big-roll"), unique("it-big-dlq"));
    create_topics(&stack, &[&enc, &slo, &rollups, &dlq], 1).await;
    let original = send_oversized(&stack, &enc, "h001").await;
    let producer = Producer::new(&settings(&stack)).unwrap();
    let mut synth = Synth::new(5, 1);
    for _ in 0..3 {
        let (e, _, _) = synth.next(guardian_runtime::now_ms());
        producer.send(&enc, &e.hospital_id, &e).await.unwrap();
    }
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_big").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    let config = guardian_kpi::Config {
        kafka: settings(&stack),
        group: unique("it-big-kpi"),
        encounters_topic: enc.clone(),
        slo_topic: slo,
        rollups_topic: rollups,
        dead_letter_topic: dlq.clone(),
        lateness_ms: 300_000,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
        signers: None,
        dedup_cache_events: 10_000,
        dedup_horizon_days: guardian_kpi::DEFAULT_DEDUP_HORIZON_DAYS,
    };
    let shutdown = Shutdown::new();
    let task = tokio::spawn(guardian_kpi::run(config, pool.clone(), shutdown.clone()));
    eventually("the three honest encounters counted", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let n: Option<i64> =
                sqlx::query("SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
                    .fetch_one(&pool)
                    .await
                    .ok()?
                    .get(0);
            (n? >= 3).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    let stats = task.await.unwrap().expect("the rollup stops cleanly");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    check_stub(&read_all(&stack, &dlq, "read_committed").await, &enc, &original, "h001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_at_the_size_limit_is_dead_lettered_as_a_stub_and_the_accountant_goes_on() {
    let stack = Stack::get();
    let (spends, status, alerts, dlq) =
        (unique("it-big-spend"), unique("it-big-status"), unique("it-big-alerts"), unique("it-big-adlq"));
    let decisions = unique("it-big-decisions");
    create_topics(&stack, &[&spends, &status, &alerts, &dlq, &decisions], 1).await;
    let original = send_oversized(&stack, &spends, "h002").await;
    let producer = Producer::new(&settings(&stack)).unwrap();
    for i in 0..2 {
        let s = spend(i);
        producer.send(&spends, &s.hospital_id, &s).await.unwrap();
    }
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_bigacc").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    let config = guardian_accountant::Config {
        kafka: settings(&stack),
        group: unique("it-big-acc"),
        spend_topic: spends.clone(),
        dead_letter_topic: dlq.clone(),
        destinations: Destinations { status_topic: status, alerts_topic: alerts, decisions_topic: decisions },
        limits: guardian_accountant::Limits::default(),
        signers: None,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    let shutdown = Shutdown::new();
    let task = tokio::spawn(guardian_accountant::run(config, pool.clone(), shutdown.clone()));
    eventually("both honest spends in the ledger", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query("SELECT count(*) FROM privacy_ledger").fetch_one(&pool).await.ok()?.get(0);
            (n >= 2).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap().expect("the accountant stops cleanly");
    check_stub(&read_all(&stack, &dlq, "read_committed").await, &spends, &original, "h002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_at_the_size_limit_is_left_out_and_the_slo_monitor_goes_on() {
    let stack = Stack::get();
    let slo = unique("it-big-sloev");
    create_topics(&stack, &[&slo], 1).await;
    send_oversized(&stack, &slo, "h001").await;
    let producer = Producer::new(&settings(&stack)).unwrap();
    let now = guardian_runtime::now_ms();
    for i in 0..5 {
        let e = guardian_schemas::records::SloEvent {
            event_id: format!("after-{i}"),
            service: "inference".into(),
            hospital_id: None,
            slo: guardian_schemas::records::SloKind::InferenceLatency,
            good: true,
            latency_ms: Some(100.0),
            observed_at: now - 1_000,
        };
        producer.send(&slo, "inference", &e).await.unwrap();
    }
    let monitor = std::sync::Arc::new(std::sync::Mutex::new(guardian_burnrate::Monitor::default()));
    let source = guardian_burnrate::Source {
        kafka: settings(&stack),
        slo_topic: slo,
        period_ms: 86_400_000,
        publish_every: Duration::from_secs(1),
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    let shutdown = Shutdown::new();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = {
        let (monitor, shutdown, ready) = (monitor.clone(), shutdown.clone(), ready.clone());
        tokio::spawn(async move {
            guardian_burnrate::follow(
                &source,
                &monitor,
                shutdown,
                || ready.store(true, std::sync::atomic::Ordering::Release),
                |_| {},
            )
            .await
        })
    };
    eventually("the monitor caught up", Duration::from_secs(60), || {
        let ready = ready.clone();
        async move { ready.load(std::sync::atomic::Ordering::Acquire).then_some(()) }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap().expect("the monitor stops cleanly");
    let status = monitor.lock().unwrap().status(guardian_runtime::now_ms(), 86_400_000);
    let events: Vec<(&str, u64)> = status.iter().map(|s| (s.slo, s.events)).collect();
    assert_eq!(events, [("inference_p99_2s", 5)], "the five events behind the big record, nothing else");
}
