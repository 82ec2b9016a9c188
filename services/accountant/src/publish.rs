//! The outbox publisher: budget statuses, alerts and spend decisions committed by the ledger are sent to
//! Kafka after the fact, in the order they were written, then deleted, exactly once
//! (`Outbox::run_exactly_once`: Kafka transactions, each record carrying its row id; a
//! publisher that starts lets go of the rows its predecessor committed to the topics).
//! Statuses go to a compacted topic keyed by scope (the latest wins), and alerts carry ids
//! derived from their triggering event, so readers that do not read committed are safe too.

use std::sync::Arc;

use guardian_kafka::KafkaSettings;
use guardian_pg::outbox::Outbox;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::store::{OUTBOX_ALERT, OUTBOX_DECISION, OUTBOX_STATUS};

/// Where the outbox goes.
#[derive(Debug, Clone)]
pub struct Destinations {
    pub status_topic: String,
    pub alerts_topic: String,
    pub decisions_topic: String,
}

pub use guardian_pg::outbox::OutboxError as PublishError;

fn outbox(to: &Destinations) -> Outbox {
    Outbox {
        table: "privacy_outbox",
        // Statuses first: rows of any other kind (none are written) would go there.
        routes: vec![
            (OUTBOX_STATUS, to.status_topic.clone()),
            (OUTBOX_ALERT, to.alerts_topic.clone()),
            (OUTBOX_DECISION, to.decisions_topic.clone()),
        ],
    }
}

/// Publishes whenever woken (after a ledger commit) and every second, until `shutdown`;
/// then once more, so nothing committed is left behind. Errors are logged and retried.
/// `group` names the transactional id (a principal's ids start with its name).
pub async fn run(
    pool: PgPool,
    settings: KafkaSettings,
    group: String,
    to: Destinations,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let transactional_id = format!("{group}-outbox-{}", to.status_topic);
    outbox(&to).run_exactly_once(pool, settings, transactional_id, wake, shutdown).await
}
