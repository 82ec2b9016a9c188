//! The Kafka client every Phoenix Guardian service uses.
//!
//! What it guarantees:
//! - Producers are idempotent (`enable.idempotence`, `acks=all`): a retried send never
//!   duplicates or reorders within a partition.
//! - [`consumer::AtLeastOnceConsumer`] stores an offset only after the handler's effect
//!   (or the record's dead letter) is durable, so a crash replays, never skips.
//! - [`txn::TransactionalPipeline`] consumes, transforms and produces inside one Kafka
//!   transaction with the consumed offsets (`send_offsets_to_transaction`); readers with
//!   `read_committed` see each output exactly once, whatever crashes.
//! - Keeping offsets in PostgreSQL with the effect lives in the `guardian-pg` crate, on
//!   top of [`consumer`]'s building blocks.
//! - A record that cannot be decoded or validated goes to the dead-letter topic with
//!   headers naming its source topic, partition, offset and the error ([`dlq`]); the
//!   consumer goes on.
//! - Transient failures are retried with capped, jittered backoff ([`retry`]); anything
//!   else stops the consumer with an error the caller sees.
//! - W3C trace context travels in record headers ([`trace`]).
//! - Safety-critical client settings are applied after user overrides ([`config`]).
//!
//! What it does not do: create topics implicitly (see [`admin`]), or hide a lost broker
//! forever: clients report errors through metrics and logs and librdkafka reconnects.

pub mod admin;
pub mod config;
pub mod connect;
pub mod consumer;
pub mod context;
pub mod dlq;
pub mod error;
pub mod event_time;
pub mod lease;
pub mod metrics;
pub mod outbound;
pub mod producer;
pub mod reader;
pub mod retry;
pub mod signing;
pub mod trace;
pub mod txn;
pub mod wire;

pub use config::KafkaSettings;
pub use connect::KafkaArgs;
pub use consumer::{AtLeastOnceConsumer, BatchPolicy, RecordHandler};
pub use context::GuardianContext;
pub use error::{KafkaClientError, ProcessError};
pub use outbound::Outbound;
pub use producer::{Batch, Producer};
pub use txn::{TransactionalPipeline, Transform};

/// Runs a blocking librdkafka call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, KafkaClientError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| KafkaClientError::Internal(format!("blocking task failed: {e}")))
}
