//! Services that start together on a fresh schema migrate it together: sixteen concurrent
//! migrations of every service's tables all succeed and leave one copy of each table.
//! (Without the migration lock, PostgreSQL's `CREATE TABLE IF NOT EXISTS` races on the
//! table's row type: a chaos run caught the accountant failing on
//! `pg_type_typname_nsp_index` while the KPI rollup created `kafka_offsets`.)

use guardian_testkit::{Stack, unique};

#[tokio::test]
async fn concurrent_migrations_of_a_fresh_schema_all_succeed() {
    let stack = Stack::get();
    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("it_mig").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 16).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => guardian_pg::offsets::migrate(&pool).await,
                    1 => guardian_accountant::store::migrate(&pool).await,
                    _ => guardian_kpi::store::migrate(&pool, "kpi.rollups").await,
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("a concurrent migration failed");
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()
           AND table_name IN ('kafka_offsets', 'privacy_ledger', 'kpi_rollups', 'kpi_seen_days', 'kpi_outbox')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 5);
}
