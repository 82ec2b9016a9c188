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
