//! The KPI rollup's event deduplication against real PostgreSQL: two service instances
//! (as after a rebalance) never both count an event, a batch that rolls back leaves the
//! memory as it was, and an instance whose memory was let go reads the days back.

use guardian_kpi::dedup::{Seen, digest};
use guardian_testkit::{Stack, unique};
use sqlx::{PgPool, Row};

async fn pool() -> PgPool {
    let stack = Stack::get();
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_dedup").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 4).await.unwrap();
    guardian_kpi::store::migrate(&pool, "kpi.rollups").await.unwrap();
    pool
}

const DAY: i64 = 1_764_028_800_000;

/// Admits `ids` for hospital h001 on DAY in one committed transaction; returns the fresh ones.
async fn admit(pool: &PgPool, seen: &mut Seen, ids: &[&str]) -> Vec<String> {
    let digests: Vec<(&str, i64, u128)> = ids.iter().map(|id| ("h001", DAY, digest(id))).collect();
    let mut tx = pool.begin().await.unwrap();
    let fresh = seen.admit(&mut tx, &digests).await.unwrap();
    tx.commit().await.unwrap();
    seen.committed();
    ids.iter().zip(fresh).filter(|(_, f)| *f).map(|(id, _)| id.to_string()).collect()
}

#[tokio::test]
async fn two_instances_never_count_an_event_twice() {
    let pool = pool().await;
    let mut a = Seen::new(1_000);
    let mut b = Seen::new(1_000);
    assert_eq!(admit(&pool, &mut a, &["e1", "e2", "e2", "e3"]).await, ["e1", "e2", "e3"]);
    // B has never seen this day: it reads A's block.
    assert_eq!(admit(&pool, &mut b, &["e3", "e4"]).await, ["e4"]);
    // A's memory is one version behind: it reads B's block before deciding.
    assert_eq!(admit(&pool, &mut a, &["e4", "e5", "e1"]).await, ["e5"]);
    assert_eq!(admit(&pool, &mut b, &["e5", "e6"]).await, ["e6"]);
    let row = sqlx::query("SELECT version, events FROM kpi_seen_days WHERE hospital_id = 'h001'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((row.get::<i64, _>(0), row.get::<i64, _>(1)), (4, 6));
    let blocks: i64 =
        sqlx::query_scalar("SELECT sum(length(digests))::bigint FROM kpi_seen_blocks").fetch_one(&pool).await.unwrap();
    assert_eq!(blocks, 6 * 16);
}

#[tokio::test]
async fn a_rolled_back_batch_is_forgotten() {
    let pool = pool().await;
    let mut a = Seen::new(1_000);
    assert_eq!(admit(&pool, &mut a, &["e1"]).await, ["e1"]);
    let mut tx = pool.begin().await.unwrap();
    let fresh = a.admit(&mut tx, &[("h001", DAY, digest("e2"))]).await.unwrap();
    assert_eq!(fresh, [true]);
    tx.rollback().await.unwrap();
    // Not committed: e2 is still new, for this instance and for another.
    assert_eq!(admit(&pool, &mut Seen::new(1_000), &["e2"]).await, ["e2"]);
    assert_eq!(admit(&pool, &mut a, &["e2", "e1"]).await, Vec::<String>::new());
}

#[tokio::test]
async fn days_let_go_are_read_back() {
    let pool = pool().await;
    // Room for 4 digests: each batch's day is let go once the next one is admitted.
    let mut a = Seen::new(4);
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(admit(&pool, &mut a, &refs).await.len(), 10);
    assert!(a.held() <= 4, "held {}", a.held());
    assert_eq!(admit(&pool, &mut a, &["e0", "e9", "e10"]).await, ["e10"]);
}

fn encounter(id: &str, at_ms: i64) -> guardian_schemas::records::Encounter {
    guardian_schemas::records::Encounter {
        event_id: id.into(),
        hospital_id: "h001".into(),
        encounter_ref: String::new(),
        clinician_ref: "c1".into(),
        occurred_at: at_ms,
        encounter_type: guardian_schemas::records::EncounterType::Outpatient,
        soap_sections_expected: 4,
        soap_sections_completed: 4,
        generation_ms: 1_000,
        physician_rating: None,
        model_version: None,
    }
}

/// Applies `items` in one committed transaction.
async fn apply(pool: &PgPool, rollups: &mut guardian_kpi::store::Rollups, items: &[guardian_kpi::store::Item]) {
    use guardian_pg::PgEffect;
    let mut tx = pool.begin().await.unwrap();
    rollups.apply(&mut tx, items).await.unwrap();
    tx.commit().await.unwrap();
    rollups.committed();
}

#[tokio::test]
async fn records_past_the_horizon_are_dead_lettered_and_their_days_pruned() {
    use guardian_kafka::ProcessError;
    use guardian_kpi::store::{Item, Rollups};
    use guardian_pg::PgEffect;
    let pool = pool().await;
    let codec = guardian_schemas::Codec::embedded();
    let mut rollups = Rollups {
        codec: codec.clone(),
        encounters_topic: "enc".into(),
        lateness_ms: 0,
        max_skew_ms: guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS,
        signers: None,
        outbox: guardian_kpi::store::outbox("kpi.rollups"),
        committed: None,
        seen: Seen::new(1_000),
        horizon_days: Some(10),
        newest: Default::default(),
        pending_newest: Default::default(),
    };
    const D: i64 = 86_400_000;
    let old = encounter("old", DAY - 20 * D);
    apply(&pool, &mut rollups, &[Item::Encounter(old.clone(), None), Item::Encounter(encounter("now", DAY), None)])
        .await;
    let days: Vec<i64> =
        sqlx::query_scalar("SELECT day_start_ms FROM kpi_seen_days ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(days, [DAY], "the day 20 days back is pruned with the batch that made it old");
    // The old event again (a replay): past the horizon, so dead-lettered, not counted twice.
    let msg = |e: &guardian_schemas::records::Encounter| {
        rdkafka::message::OwnedMessage::new(
            Some(codec.encode(e).unwrap()),
            Some(b"h001".to_vec()),
            "enc".into(),
            rdkafka::Timestamp::CreateTime(DAY),
            0,
            7,
            None,
        )
    };
    match rollups.prepare(&msg(&old)) {
        Err(ProcessError::Poison { kind, error }) => {
            assert_eq!(kind, "expired");
            assert!(error.contains("deduplication horizon"), "{error}");
        }
        other => panic!("an event 20 days behind a 10-day horizon was {other:?}"),
    }
    assert!(rollups.prepare(&msg(&encounter("recent", DAY - 9 * D))).is_ok(), "9 days back is inside the horizon");
    // An event time past the record's timestamp plus the skew moves nothing: refused.
    let ahead = encounter("ahead", DAY + guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS + 1);
    match rollups.prepare(&msg(&ahead)) {
        Err(ProcessError::Poison { kind, .. }) => assert_eq!(kind, "future"),
        other => panic!("an event dated past the skew was {other:?}"),
    }
    assert!(rollups.prepare(&msg(&encounter("skewed", DAY + guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS))).is_ok());
    // An instance whose memory is behind (another moved h001 on) leaves the old record out
    // in the transaction, where the newest time is read under its lock.
    let mut behind = Rollups { newest: Default::default(), seen: Seen::new(1_000), ..rollups };
    assert!(behind.prepare(&msg(&old)).is_ok());
    apply(&pool, &mut behind, &[Item::Encounter(old, None)]).await;
    let day_encounters: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY' AND window_start_ms = $1",
    )
    .bind(DAY - 20 * D)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(day_encounters, 1, "the old day counts its event once");
}
