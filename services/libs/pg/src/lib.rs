//! PostgreSQL effects with the Kafka offsets in the same transaction.
//!
//! Guarantees (exactly-once effects from Kafka into PostgreSQL):
//! - Each batch runs in one SQL transaction: the effect of every record and the next
//!   offset of every partition it touched commit together, or not at all. A crash
//!   (SIGKILL included) before `COMMIT` leaves neither; after it, both.
//! - The offsets row of each partition is locked (`FOR UPDATE`) and records below the
//!   stored offset are skipped inside the transaction, so a replayed topic, a duplicate
//!   delivery or a zombie consumer still holding a revoked partition cannot apply a
//!   record twice.
//! - On assignment the consumer seeks each partition to its stored offset; Kafka's own
//!   committed offset is only a mirror, written after the SQL commit, for lag dashboards
//!   and MirrorMaker 2 checkpoint translation.
//! - Records that fail to decode or validate (`prepare` returns Poison) are dead-lettered,
//!   acknowledged before the SQL commit: at least once, never lost.
//!
//! Database errors that may pass (lost connection, serialization failure, deadlock,
//! restart) retry the same batch with backoff; others stop the consumer with the error.

pub mod connect;
pub mod offsets;
pub mod outbox;
pub mod sink;
pub mod tenancy;

pub use connect::{PgConnectError, connect, with_new_schema};
pub use sink::{PgEffect, PgOffsetConsumer, PgRunStats};

/// Runs schema statements (`CREATE ... IF NOT EXISTS` and the like) under a
/// transaction-scoped advisory lock. PostgreSQL's `IF NOT EXISTS` is not safe against a
/// concurrent twin (two services starting at once on a fresh schema can both try to
/// create the table's row type, and one fails on `pg_type_typname_nsp_index`); the lock
/// makes migrations of every service take turns.
pub async fn apply_ddl(pool: &sqlx::PgPool, ddl: &str) -> Result<(), sqlx::Error> {
    /// One lock for every guardian migration ("guardian" in ASCII).
    const MIGRATION_LOCK: i64 = 0x6775_6172_6469_616e;
    let mut tx = pool.begin().await?;
    let conn: &mut sqlx::PgConnection = &mut tx;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
    // One statement at a time (the DDL of this workspace has no `;` inside a statement).
    for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    tx.commit().await
}
