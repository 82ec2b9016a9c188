//! The privacy accountant on the real stack: spends of five hospitals, with duplicates,
//! a poison record and a replay of the whole topic. The ledger, every budget and the
//! alerts equal a recomputation from the distinct events; each level change of a budget
//! makes exactly one alert; the status topic ends with the database's budgets.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use guardian_accountant::budget::{self, Budget, Limits, scope_key};
use guardian_accountant::publish::Destinations;
use guardian_accountant::{Config, store};
use guardian_kafka::Producer;
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{BudgetSpend, BudgetStatus, PrivacyAlert};
use guardian_testkit::{Stack, eventually, unique};
use rdkafka::message::Message;
use sqlx::Row;

fn spend(hospital: usize, i: usize) -> BudgetSpend {
    spend_of(hospital, i, format!("s-h{hospital:03}-r{i:03}"))
}

async fn run_until_applied(config: Config, pool: &sqlx::PgPool, events: i64) {
    let shutdown = Shutdown::new();
    let task = tokio::spawn(guardian_accountant::run(config, pool.clone(), shutdown.clone()));
    eventually("every spend in the ledger", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query("SELECT count(*) FROM privacy_ledger").fetch_one(&pool).await.ok()?.get(0);
            (n >= events).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap().expect("the accountant stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_budgets_and_alerts_equal_a_recomputation_across_duplicates_and_replays() {
    let stack = Stack::get();
    let (spends, status, alerts, dlq) =
        (unique("it-spend"), unique("it-status"), unique("it-alerts"), unique("it-acc-dlq"));
    let decisions = unique("it-decisions");
    create_topics(&stack, &[&spends, &status, &alerts, &dlq, &decisions], 3).await;
    // Each test gets a database schema of its own, so the accountant's tables are fresh.
    let schema = unique("it_acc").replace('-', "_");
    let admin_pool = guardian_pg::connect(&stack.database_url, 1).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin_pool).await.unwrap();
    let url = format!("{}?options=-c%20search_path%3D{schema}", stack.database_url);
    let pool = guardian_pg::connect(&url, 4).await.unwrap();

    // h001..h004: 10 rounds each (stay under budget); h005: 20 rounds (6 over budget).
    let mut sent: Vec<BudgetSpend> = Vec::new();
    for h in 1..=5 {
        for i in 0..(if h == 5 { 20 } else { 10 }) {
            sent.push(spend(h, i));
        }
    }
    let producer = Producer::new(&settings(&stack)).unwrap();
    for s in &sent {
        producer.send(&spends, &s.hospital_id, s).await.unwrap();
    }
    // Duplicates of already-sent events, and one record that is not a spend at all.
    for s in sent.iter().step_by(7) {
        producer.send(&spends, &s.hospital_id, s).await.unwrap();
    }
    producer.send_bytes(&spends, Some(b"h001"), b"not avro", None).await.unwrap();

    let limits = Limits::default();
    let config = |group: &str| Config {
        kafka: settings(&stack),
        group: group.to_string(),
        spend_topic: spends.clone(),
        dead_letter_topic: dlq.clone(),
        destinations: Destinations {
            status_topic: status.clone(),
            alerts_topic: alerts.clone(),
            decisions_topic: decisions.clone(),
        },
        limits,
        signers: None,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
    };
    run_until_applied(config(&unique("it-acc")), &pool, sent.len() as i64).await;

    // The recomputation: the pure rules over the distinct events, in each hospital's
    // order (a hospital's events share a partition; the global budget never refuses here).
    let (mut hospitals, mut global) = (BTreeMap::<String, Budget>::new(), Budget::new(None));
    let mut expected_alerts: BTreeSet<String> = BTreeSet::new();
    let mut expected_accepted = 0;
    let mut expected_decisions: BTreeMap<String, bool> = BTreeMap::new();
    for s in &sent {
        let h = hospitals.entry(s.hospital_id.clone()).or_insert_with(|| Budget::new(Some(s.hospital_id.clone())));
        let step = budget::validate(s).unwrap();
        let out = budget::account(h, &mut global, s, &step, &limits).unwrap();
        expected_accepted += i64::from(out.accepted);
        expected_decisions.insert(s.event_id.clone(), out.accepted);
        expected_alerts.extend(out.alerts.into_iter().map(|a| a.alert_id));
    }
    assert_eq!(expected_accepted, 4 * 10 + 14, "the scenario: h005 has 6 refused rounds");

    let check = |pool: sqlx::PgPool| {
        let (hospitals, global, expected_alerts) = (hospitals.clone(), global.clone(), expected_alerts.clone());
        async move {
            let ledger: i64 = sqlx::query("SELECT count(*) FROM privacy_ledger").fetch_one(&pool).await.unwrap().get(0);
            assert_eq!(ledger, 60, "one ledger row per distinct event");
            let accepted: i64 = sqlx::query("SELECT count(*) FROM privacy_ledger WHERE accepted")
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(accepted, 54);
            let rows = sqlx::query("SELECT scope_key, epsilon_spent, level, events FROM privacy_budgets")
                .fetch_all(&pool)
                .await
                .unwrap();
            assert_eq!(rows.len(), 6, "five hospitals and the federation");
            for r in rows {
                let key: String = r.get(0);
                let b = if key == scope_key(None) { &global } else { &hospitals[key.trim_start_matches("hospital/")] };
                assert_eq!(r.get::<f64, _>(1), b.epsilon_spent, "{key}: epsilon");
                assert_eq!(r.get::<String, _>(2), store::level_name(b.level), "{key}: level");
                assert_eq!(r.get::<i64, _>(3), b.events, "{key}: events");
            }
            let got: BTreeSet<String> = sqlx::query("SELECT alert_id FROM privacy_alerts")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(got, expected_alerts, "alerts equal the recomputation's");
        }
    };
    check(pool.clone()).await;
    // h005 went through every level once, then was refused six times.
    let h5: Vec<(String, String, bool)> = sqlx::query(
        "SELECT previous_level, level, over_budget FROM privacy_alerts WHERE scope_key = 'hospital/h005' ORDER BY trigger_event_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let changes: Vec<(&str, &str)> = h5.iter().filter(|a| !a.2).map(|a| (a.0.as_str(), a.1.as_str())).collect();
    let mut levels: Vec<&str> = changes.iter().map(|c| c.1).collect();
    levels.dedup();
    assert_eq!(levels.len(), changes.len(), "never the same level twice: {changes:?}");
    assert_eq!(changes.last().map(|c| c.1), Some("EXHAUSTED"), "{changes:?}");
    assert_eq!(h5.iter().filter(|a| a.2).count(), 6, "one over-budget alert per refused round");

    // Replay the whole topic through a new consumer group, to its end: nothing changes.
    let total_records = (sent.len() + sent.len().div_ceil(7) + 1) as i64;
    let replay = unique("it-acc-replay");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(guardian_accountant::run(config(&replay), pool.clone(), shutdown.clone()));
    eventually("the replay consumed the whole topic", Duration::from_secs(90), || {
        let (pool, replay) = (pool.clone(), replay.clone());
        async move {
            let n: Option<i64> = sqlx::query("SELECT sum(next_offset)::bigint FROM kafka_offsets WHERE group_id = $1")
                .bind(&replay)
                .fetch_one(&pool)
                .await
                .ok()?
                .get(0);
            (n? >= total_records).then_some(())
        }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap().expect("the replay stops cleanly");
    check(pool.clone()).await;

    // Kafka: each alert exactly once; the latest status per scope equals the database.
    let codec = Codec::embedded();
    let on_topic: Vec<PrivacyAlert> = read_all(&stack, &alerts, "read_committed")
        .await
        .iter()
        .map(|m| codec.decode(m.payload().unwrap()).unwrap())
        .collect();
    let ids: Vec<&str> = on_topic.iter().map(|a| a.alert_id.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "no alert twice on the topic");
    assert_eq!(distinct, expected_alerts.iter().map(String::as_str).collect());
    let mut latest: BTreeMap<String, BudgetStatus> = BTreeMap::new();
    for m in read_all(&stack, &status, "read_committed").await {
        latest
            .insert(String::from_utf8(m.key().unwrap().to_vec()).unwrap(), codec.decode(m.payload().unwrap()).unwrap());
    }
    assert_eq!(latest.len(), 6);
    assert_eq!(latest["global"].epsilon_spent, global.epsilon_spent);
    for (h, b) in &hospitals {
        let s = &latest[&scope_key(Some(h))];
        assert_eq!((s.epsilon_spent, s.level, s.events), (b.epsilon_spent, b.level, b.events), "{h}");
    }
    assert_eq!(latest["hospital/h005"].rounds_left, Some(0));
    // One decision per distinct event, exactly once, equal to the recomputation's; a
    // refused one says why.
    let on_topic: Vec<guardian_schemas::records::SpendDecision> = read_all(&stack, &decisions, "read_committed")
        .await
        .iter()
        .map(|m| codec.decode(m.payload().unwrap()).unwrap())
        .collect();
    assert_eq!(on_topic.len(), expected_decisions.len(), "one decision per distinct spend");
    let got: BTreeMap<String, bool> = on_topic.iter().map(|d| (d.event_id.clone(), d.accepted)).collect();
    assert_eq!(got, expected_decisions);
    assert!(on_topic.iter().filter(|d| !d.accepted).all(|d| d.reason.as_deref().is_some_and(|r| r.contains("limit"))));

    // The poison record was dead-lettered (once by each run that reached it).
    let dead = read_all(&stack, &dlq, "read_committed").await;
    assert!(!dead.is_empty() && dead.iter().all(|m| header(m, "dlq.source.topic") == Some(spends.as_str())));
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin_pool).await.unwrap();
}
