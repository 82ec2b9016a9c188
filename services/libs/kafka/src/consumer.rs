//! The at-least-once consumer: the handler's effect first, then the offset.
//!
//! Offsets are *stored* (`store_offset_from_message`) only once the handler returned Ok,
//! or the record's dead letter was acknowledged; librdkafka commits stored offsets in the
//! background and once more, synchronously, at shutdown. A crash at any point replays
//! from the last committed offset: effects must be idempotent (or use `guardian-pg`,
//! which keeps offsets in the effect's own transaction).
//!
//! Transient handler errors retry the same record with capped backoff, without limit: a
//! consumer never skips a record. Poison records are dead-lettered. Fatal errors stop the
//! loop and reach the caller; offsets stored before it are committed.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::Instrument;

use crate::context::GuardianContext;
use crate::dlq::DeadLetterSink;
use crate::error::{KafkaClientError, ProcessError};
use crate::metrics as m;
use crate::retry::RetryPolicy;
use crate::{KafkaSettings, trace};

/// Handles one record. Return [`ProcessError::Poison`] for records that are bad in
/// themselves, [`ProcessError::Transient`] for failures worth retrying.
pub trait RecordHandler {
    fn handle(&mut self, msg: &BorrowedMessage<'_>) -> impl Future<Output = Result<(), ProcessError>>;
}

/// Counts of one run, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeStats {
    pub handled: u64,
    pub dead_lettered: u64,
    pub retries: u64,
}

/// Creates a subscribed stream consumer with the shared context.
pub fn subscribe(
    config: rdkafka::ClientConfig,
    name: String,
    topics: &[&str],
) -> Result<StreamConsumer<GuardianContext>, KafkaClientError> {
    let consumer: StreamConsumer<GuardianContext> =
        config.create_with_context(GuardianContext::new(name)).map_err(|e| KafkaClientError::Config(e.to_string()))?;
    consumer.subscribe(topics).map_err(|e| KafkaClientError::kafka("subscribe", e))?;
    Ok(consumer)
}

/// How records are grouped into one transaction or one effect.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_records: usize,
    /// How long to wait for more records once the first is in hand.
    pub max_wait: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy { max_records: 1000, max_wait: Duration::from_millis(100) }
    }
}

/// Waits for a first record, then gathers more until the batch is full or `max_wait`
/// has passed. `None` when `shutdown` resolved first (no record taken).
pub async fn next_batch(
    consumer: &StreamConsumer<GuardianContext>,
    policy: BatchPolicy,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Vec<rdkafka::message::OwnedMessage>> {
    let mut batch = loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => return None,
            msg = consumer.recv() => msg,
        };
        match first {
            Ok(msg) => break vec![msg.detach()],
            Err(e) => tracing::warn!(error = %e, "consume error"),
        }
    };
    let deadline = tokio::time::Instant::now() + policy.max_wait;
    while batch.len() < policy.max_records {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(msg)) => batch.push(msg.detach()),
            Ok(Err(e)) => tracing::warn!(error = %e, "consume error"),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Commits what was stored, ignoring "nothing to commit".
pub async fn commit_stored(consumer: Arc<StreamConsumer<GuardianContext>>) -> Result<(), KafkaClientError> {
    match crate::blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await? {
        Ok(()) => Ok(()),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(KafkaClientError::kafka("commit", e)),
    }
}

pub struct AtLeastOnceConsumer {
    consumer: Arc<StreamConsumer<GuardianContext>>,
    dlq: DeadLetterSink,
    retry: RetryPolicy,
}

impl std::fmt::Debug for AtLeastOnceConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtLeastOnceConsumer").field("dlq", &self.dlq.topic()).finish_non_exhaustive()
    }
}

impl AtLeastOnceConsumer {
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topics: &[&str],
        dlq: DeadLetterSink,
    ) -> Result<Self, KafkaClientError> {
        let consumer =
            subscribe(settings.at_least_once_consumer(group), format!("{}-consumer", settings.client_id), topics)?;
        let retry = RetryPolicy { max_elapsed: None, ..RetryPolicy::default() };
        Ok(AtLeastOnceConsumer { consumer: Arc::new(consumer), dlq, retry })
    }

    pub fn consumer(&self) -> &StreamConsumer<GuardianContext> {
        &self.consumer
    }

    /// Consumes until `shutdown` resolves or the handler fails fatally, then commits the
    /// stored offsets. Intake stops at once on shutdown; the record in hand is finished.
    pub async fn run<H: RecordHandler>(
        &self,
        handler: &mut H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumeStats, KafkaClientError> {
        let mut shutdown = pin!(shutdown);
        let mut stats = ConsumeStats::default();
        let result = loop {
            let msg = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                msg = self.consumer.recv() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            };
            if let Err(e) = self.process(handler, &msg, &mut stats).await {
                break Err(e);
            }
        };
        commit_stored(self.consumer.clone()).await?;
        result.map(|()| stats)
    }

    /// Handles one record to completion, then stores its offset.
    async fn process<H: RecordHandler>(
        &self,
        handler: &mut H,
        msg: &BorrowedMessage<'_>,
        stats: &mut ConsumeStats,
    ) -> Result<(), KafkaClientError> {
        let span = trace::record_span(msg.topic(), msg.partition(), msg.offset(), trace::extract(msg.headers()));
        let mut delays = self.retry.delays();
        let started = std::time::Instant::now();
        let outcome = loop {
            match handler.handle(msg).instrument(span.clone()).await {
                Err(ProcessError::Transient(error)) => {
                    stats.retries += 1;
                    metrics::counter!(m::RETRIES, m::OPERATION => "handle").increment(1);
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(parent: &span, %error, delay_ms = delay.as_millis() as u64, "transient failure, retrying record");
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        metrics::histogram!(m::HANDLER_SECONDS, m::TOPIC => msg.topic().to_string())
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => stats.handled += 1,
            Err(ProcessError::Poison { kind, error }) => {
                crate::retry::retry("dead-letter", &self.retry, KafkaClientError::is_retryable, || {
                    self.dlq.send(msg, kind, &error)
                })
                .await?;
                stats.dead_lettered += 1;
            }
            Err(ProcessError::Fatal(error)) => return Err(KafkaClientError::Handler(error)),
            Err(ProcessError::Transient(_)) => unreachable!("transient errors are retried above"),
        }
        self.consumer.store_offset_from_message(msg).map_err(|e| KafkaClientError::kafka("store offset", e))?;
        metrics::counter!(m::RECORDS_CONSUMED, m::TOPIC => msg.topic().to_string()).increment(1);
        Ok(())
    }
}
