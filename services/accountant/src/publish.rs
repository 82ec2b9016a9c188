//! The outbox publisher: budget statuses and alerts committed by the ledger are sent to
//! Kafka after the fact, in the order they were written, then deleted.
//!
//! At least once: a crash between the broker's acknowledgement and the delete sends the
//! rows again. That is harmless by construction: statuses go to a compacted topic keyed
//! by scope (the latest wins), and alerts carry ids derived from their triggering event.
//! Rows are taken with `FOR UPDATE SKIP LOCKED`, so two instances never send the same row
//! at the same time.

use std::sync::Arc;

use guardian_kafka::Producer;
use guardian_pg::outbox::Outbox;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::store::{OUTBOX_ALERT, OUTBOX_STATUS};

/// Where the outbox goes.
#[derive(Debug, Clone)]
pub struct Destinations {
    pub status_topic: String,
    pub alerts_topic: String,
}

pub use guardian_pg::outbox::OutboxError as PublishError;

fn outbox(to: &Destinations) -> Outbox {
    Outbox {
        table: "privacy_outbox",
        // Statuses first: rows of any other kind (none are written) would go there.
        routes: vec![(OUTBOX_STATUS, to.status_topic.clone()), (OUTBOX_ALERT, to.alerts_topic.clone())],
    }
}

/// Sends everything pending; returns how many records were sent.
pub async fn publish_pending(pool: &PgPool, producer: &Producer, to: &Destinations) -> Result<u64, PublishError> {
    outbox(to).publish_pending(pool, producer).await
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
    outbox(&to).run(pool, producer, wake, shutdown).await
}
