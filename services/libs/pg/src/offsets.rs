//! The offsets table and the guard that keeps effects exactly once.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool, Row};

/// One row per (group, topic, partition): the next offset to apply.
pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS kafka_offsets (
    group_id    text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
)";

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    crate::apply_ddl(pool, DDL).await
}

/// The stored next offset of a partition (`None`: never applied anything).
pub async fn stored(pool: &PgPool, group: &str, topic: &str, partition: i32) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT next_offset FROM kafka_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3")
        .bind(group)
        .bind(topic)
        .bind(partition)
        .fetch_optional(pool)
        .await
        .map(|row| row.map(|r| r.get::<i64, _>(0)))
}

/// Inside a transaction: locks the offsets rows of `partitions` (creating missing ones)
/// and returns their next offsets. Concurrent holders of the same partitions wait here.
pub async fn lock(
    tx: &mut PgConnection,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, sqlx::Error> {
    let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let parts: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
    sqlx::query(
        "INSERT INTO kafka_offsets (group_id, topic, partition, next_offset)
         SELECT $1, t, p, 0 FROM unnest($2::text[], $3::int[]) AS x(t, p)
         ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "SELECT o.topic, o.partition, o.next_offset FROM kafka_offsets o
         JOIN unnest($2::text[], $3::int[]) AS x(t, p) ON o.topic = x.t AND o.partition = x.p
         WHERE o.group_id = $1
         ORDER BY o.topic, o.partition
         FOR UPDATE OF o",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|r| ((r.get::<String, _>(0), r.get::<i32, _>(1)), r.get::<i64, _>(2))).collect())
}

/// Inside the same transaction: records the next offsets.
pub async fn advance(
    tx: &mut PgConnection,
    group: &str,
    next: &BTreeMap<(String, i32), i64>,
) -> Result<(), sqlx::Error> {
    let topics: Vec<&str> = next.keys().map(|(t, _)| t.as_str()).collect();
    let parts: Vec<i32> = next.keys().map(|(_, p)| *p).collect();
    let offsets: Vec<i64> = next.values().copied().collect();
    sqlx::query(
        "UPDATE kafka_offsets o SET next_offset = x.n, updated_at = now()
         FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, n)
         WHERE o.group_id = $1 AND o.topic = x.t AND o.partition = x.p AND o.next_offset < x.n",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .bind(&offsets)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Moves a group's stored offsets to where the same records are in another region (DR
/// failover and failback): `translated` maps (topic, partition) to the destination's
/// offset; every other partition the group kept starts over from 0 (effects are
/// idempotent on event ids, so starting earlier is exact, only slower). One transaction:
/// either every row moves or none does. Returns (rows translated, rows restarted).
pub async fn translate(
    pool: &PgPool,
    group: &str,
    translated: &BTreeMap<(String, i32), i64>,
) -> Result<(u64, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let topics: Vec<&str> = translated.keys().map(|(t, _)| t.as_str()).collect();
    let parts: Vec<i32> = translated.keys().map(|(_, p)| *p).collect();
    let offsets: Vec<i64> = translated.values().copied().collect();
    let moved = sqlx::query(
        "UPDATE kafka_offsets o SET next_offset = x.n, updated_at = now()
         FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, n)
         WHERE o.group_id = $1 AND o.topic = x.t AND o.partition = x.p",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .bind(&offsets)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let restarted = sqlx::query(
        "UPDATE kafka_offsets o SET next_offset = 0, updated_at = now()
         WHERE o.group_id = $1
           AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::int[]) AS x(t, p)
                           WHERE o.topic = x.t AND o.partition = x.p)",
    )
    .bind(group)
    .bind(&topics)
    .bind(&parts)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((moved, restarted))
}

/// Every stored offset of a group back to 0 (it restarts from the beginning of every
/// topic). Returns the rows reset.
pub async fn reset(pool: &PgPool, group: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE kafka_offsets SET next_offset = 0, updated_at = now() WHERE group_id = $1")
        .bind(group)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}

/// Records behind per (topic, partition) for a group: from the stored next offset (the
/// partition's low watermark where none is stored, or where retention passed it) to the
/// high watermark, for each partition of `watermarks` ((topic, partition) → (low, high)).
pub async fn lag(
    pool: &PgPool,
    group: &str,
    watermarks: &BTreeMap<(String, i32), (i64, i64)>,
) -> Result<BTreeMap<(String, i32), i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT topic, partition, next_offset FROM kafka_offsets WHERE group_id = $1")
        .bind(group)
        .fetch_all(pool)
        .await?;
    let stored: BTreeMap<(String, i32), i64> =
        rows.into_iter().map(|r| ((r.get::<String, _>(0), r.get::<i32, _>(1)), r.get::<i64, _>(2))).collect();
    Ok(watermarks
        .iter()
        .map(|(tp, (lo, hi))| (tp.clone(), (hi - stored.get(tp).copied().unwrap_or(*lo).max(*lo)).max(0)))
        .collect())
}
