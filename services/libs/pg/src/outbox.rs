//! The transactional outbox: records a service commits together with its effects, sent
//! to Kafka after the commit, in the order they were written, then deleted.
//!
//! At least once: a crash between the broker's acknowledgement and the delete sends the
//! rows again. Callers make that harmless: compacted topics keyed by what the value
//! describes (the latest wins), or records carrying ids derived from their cause. Rows are
//! taken with `FOR UPDATE SKIP LOCKED`, so two instances never send the same row at once.

use std::sync::Arc;
use std::time::Duration;

use guardian_kafka::{KafkaClientError, Producer};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Kafka(#[from] KafkaClientError),
}

/// An outbox table and where each kind of its rows goes.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Table name (a trusted identifier chosen by the service, never user input).
    pub table: &'static str,
    /// (kind, topic) pairs; rows of other kinds go to the first topic.
    pub routes: Vec<(&'static str, String)>,
}

impl Outbox {
    pub fn ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                id      bigserial PRIMARY KEY,
                kind    text  NOT NULL,
                key     text  NOT NULL,
                payload bytea NOT NULL
            )",
            self.table
        )
    }

    /// Adds a row inside the caller's transaction.
    pub async fn push(&self, tx: &mut PgConnection, kind: &str, key: &str, payload: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("INSERT INTO {} (kind, key, payload) VALUES ($1, $2, $3)", self.table))
            .bind(kind)
            .bind(key)
            .bind(payload)
            .execute(tx)
            .await
            .map(|_| ())
    }

    /// Adds rows of one kind inside the caller's transaction, in one statement, in order.
    pub async fn push_many(
        &self,
        tx: &mut PgConnection,
        kind: &str,
        keys: &[String],
        payloads: &[Vec<u8>],
    ) -> Result<(), sqlx::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {} (kind, key, payload)
             SELECT $1, k, p FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS x(k, p, n) ORDER BY n",
            self.table
        ))
        .bind(kind)
        .bind(keys)
        .bind(payloads)
        .execute(tx)
        .await
        .map(|_| ())
    }

    fn topic(&self, kind: &str) -> &str {
        self.routes.iter().find(|(k, _)| *k == kind).or(self.routes.first()).map_or("", |(_, t)| t.as_str())
    }

    /// Sends everything pending; returns how many records were sent.
    pub async fn publish_pending(&self, pool: &PgPool, producer: &Producer) -> Result<u64, OutboxError> {
        let mut sent = 0;
        loop {
            let mut tx = pool.begin().await?;
            let rows = sqlx::query(&format!(
                "SELECT id, kind, key, payload FROM {} ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED",
                self.table
            ))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(sent);
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            // Queued in id order; the idempotent producer keeps that order per partition.
            let sends = rows.iter().map(|r| {
                let topic = self.topic(r.get::<&str, _>(1));
                let key: String = r.get(2);
                let payload: Vec<u8> = r.get(3);
                async move { producer.send_bytes(topic, Some(key.as_bytes()), &payload, None).await }
            });
            futures::future::try_join_all(sends).await?;
            sqlx::query(&format!("DELETE FROM {} WHERE id = ANY($1)", self.table)).bind(&ids).execute(&mut *tx).await?;
            tx.commit().await?;
            sent += ids.len() as u64;
        }
    }

    /// Publishes whenever woken (after a commit) and every second, until `shutdown`; then
    /// once more, so nothing committed is left behind. Errors are logged and retried.
    pub async fn run(
        self,
        pool: PgPool,
        producer: Producer,
        wake: Arc<Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stop = tokio::select! {
                _ = &mut shutdown => true,
                _ = wake.notified() => false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            };
            match self.publish_pending(&pool, &producer).await {
                Ok(n) if n > 0 => tracing::debug!(records = n, table = self.table, "outbox published"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, table = self.table, "outbox publish failed, will retry");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if stop {
                return;
            }
        }
    }
}
