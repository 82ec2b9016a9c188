//! The outbox publisher: budget statuses and alerts committed by the ledger are sent to
//! Kafka after the fact, in the order they were written, then deleted.
//!
//! At least once: a crash between the broker's acknowledgement and the delete sends the
//! rows again. That is harmless by construction: statuses go to a compacted topic keyed
//! by scope (the latest wins), and alerts carry ids derived from their triggering event.
//! Rows are taken with `FOR UPDATE SKIP LOCKED`, so two instances never send the same row
//! at the same time.

use std::sync::Arc;
use std::time::Duration;

use guardian_kafka::{KafkaClientError, Producer};
use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use crate::store::OUTBOX_ALERT;

/// Where the outbox goes.
#[derive(Debug, Clone)]
pub struct Destinations {
    pub status_topic: String,
    pub alerts_topic: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("outbox: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Kafka(#[from] KafkaClientError),
}

/// Sends everything pending; returns how many records were sent.
pub async fn publish_pending(pool: &PgPool, producer: &Producer, to: &Destinations) -> Result<u64, PublishError> {
    let mut sent = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, kind, key, payload FROM privacy_outbox ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(sent);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        // Queued in id order; the idempotent producer keeps that order per partition.
        let sends = rows.iter().map(|r| {
            let topic = match r.get::<&str, _>(1) {
                OUTBOX_ALERT => &to.alerts_topic,
                _ => &to.status_topic, // OUTBOX_STATUS, the only other kind written
            };
            let key: String = r.get(2);
            let payload: Vec<u8> = r.get(3);
            async move { producer.send_bytes(topic, Some(key.as_bytes()), &payload, None).await }
        });
        futures::future::try_join_all(sends).await?;
        sqlx::query("DELETE FROM privacy_outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        tx.commit().await?;
        sent += ids.len() as u64;
    }
}

/// Publishes whenever woken (after a ledger commit) and every second, until `shutdown`;
/// then once more, so nothing committed is left behind. Errors are logged and retried.
pub async fn run(
    pool: PgPool,
    producer: Producer,
    to: Destinations,
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
        match publish_pending(&pool, &producer, &to).await {
            Ok(n) if n > 0 => tracing::debug!(records = n, "outbox published"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "outbox publish failed, will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if stop {
            return;
        }
    }
}
