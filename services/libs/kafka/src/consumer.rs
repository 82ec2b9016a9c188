//! The at-least-once consumer: the handler's effect first, then the offset.
//!
//! Records are handled in order, in batches (what has been fetched, or arrives within
//! `BATCH_LINGER` of the first); the offset
//! after the last record handled of each partition is *stored* once the batch's records
//! returned Ok or had their dead letters acknowledged. librdkafka commits stored offsets
//! in the background and once more, synchronously, at shutdown. A crash at any point replays
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

use std::collections::BTreeSet;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
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
    pub batches: u64,
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

/// The one way a batch is gathered: waits for a first record (`false` when `shutdown`
/// resolved first, nothing taken), then takes more into `batch` until it holds
/// `policy.max_records` or `policy.max_wait` passed since the first; records already
/// fetched are taken without waiting. Consume errors are logged and skipped (librdkafka
/// retries on its own).
pub async fn gather<'c, T>(
    consumer: &'c StreamConsumer<GuardianContext>,
    policy: BatchPolicy,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    batch: &mut Vec<T>,
    map: impl Fn(BorrowedMessage<'c>) -> T,
) -> bool {
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => return false,
            msg = consumer.recv() => msg,
        };
        match first {
            Ok(msg) => {
                batch.push(map(msg));
                break;
            }
            Err(e) => tracing::warn!(error = %e, "consume error"),
        }
    }
    let deadline = tokio::time::Instant::now() + policy.max_wait;
    while batch.len() < policy.max_records {
        let next = match consumer.recv().now_or_never() {
            Some(next) => next,
            None => match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Ok(msg) => batch.push(map(msg)),
            Err(e) => tracing::warn!(error = %e, "consume error"),
        }
    }
    true
}

/// [`gather`] into owned records (for batches that outlive the poll, or cross threads).
/// `None` when `shutdown` resolved first.
pub async fn next_batch(
    consumer: &StreamConsumer<GuardianContext>,
    policy: BatchPolicy,
    shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Vec<rdkafka::message::OwnedMessage>> {
    let mut batch = Vec::new();
    gather(consumer, policy, shutdown, &mut batch, |m| m.detach()).await.then_some(batch)
}

/// Commits what was stored, ignoring "nothing to commit".
pub async fn commit_stored(consumer: Arc<StreamConsumer<GuardianContext>>) -> Result<(), KafkaClientError> {
    match crate::blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await? {
        Ok(()) => Ok(()),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(KafkaClientError::kafka("commit", e)),
    }
}

/// Most records handled between two offset stores.
const MAX_BATCH: usize = 512;
/// How long a batch waits for more records once its first is in hand. Batches amortise
/// the span, the offset store and the metrics; without a little patience a consumer
/// that keeps up with its fetcher handles batches of one or two records and runs at a
/// third of its speed. This is also the most a lone record waits.
const BATCH_LINGER: Duration = Duration::from_millis(2);

pub struct AtLeastOnceConsumer {
    consumer: Arc<StreamConsumer<GuardianContext>>,
    dlq: DeadLetterSink,
    retry: RetryPolicy,
    consumed: m::PerTopic<metrics::Counter>,
    batch_seconds: m::PerTopic<metrics::Histogram>,
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
        Ok(AtLeastOnceConsumer {
            consumer: Arc::new(consumer),
            dlq,
            retry,
            consumed: Default::default(),
            batch_seconds: Default::default(),
        })
    }

    pub fn consumer(&self) -> &StreamConsumer<GuardianContext> {
        &self.consumer
    }

    /// Consumes until `shutdown` resolves or the handler fails fatally, then commits the
    /// stored offsets. Intake stops at once on shutdown; the records in hand are finished.
    pub async fn run<H: RecordHandler>(
        &self,
        handler: &mut H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumeStats, KafkaClientError> {
        let mut shutdown = pin!(shutdown);
        let mut stats = ConsumeStats::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let policy = BatchPolicy { max_records: MAX_BATCH, max_wait: BATCH_LINGER };
        let result = loop {
            if !gather(&self.consumer, policy, shutdown.as_mut(), &mut batch, |m| m).await {
                break Ok(());
            }
            stats.batches += 1;
            let outcome = self.process_batch(handler, &batch, &mut stats).await;
            batch.clear();
            if let Err(e) = outcome {
                break Err(e);
            }
        };
        commit_stored(self.consumer.clone()).await?;
        result.map(|()| stats)
    }

    /// Handles the records in order, then stores the offset after the last one handled
    /// of each partition (also when a fatal error stops the batch part-way).
    async fn process_batch<H: RecordHandler>(
        &self,
        handler: &mut H,
        batch: &[BorrowedMessage<'_>],
        stats: &mut ConsumeStats,
    ) -> Result<(), KafkaClientError> {
        let started = std::time::Instant::now();
        let mut done: Vec<(&str, i32, i64)> = Vec::new();
        // Untraced records run in the batch's span (entered once per poll, not once per
        // record); a record that carries a trace context gets a span of its own, child
        // of the producer's.
        let outcome = async {
            for msg in batch {
                let parent = trace::extract(msg.headers());
                if trace::has_parent(&parent) {
                    let span = trace::record_span(msg.topic(), msg.partition(), msg.offset(), parent);
                    self.process(handler, msg, stats).instrument(span).await?;
                } else {
                    self.process(handler, msg, stats).await?;
                }
                match done.iter_mut().find(|(t, p, _)| *p == msg.partition() && *t == msg.topic()) {
                    Some(entry) => entry.2 = msg.offset() + 1,
                    None => done.push((msg.topic(), msg.partition(), msg.offset() + 1)),
                }
            }
            Ok(())
        }
        .instrument(tracing::info_span!("kafka.consume", records = batch.len()))
        .await;
        let mut tpl = TopicPartitionList::with_capacity(done.len());
        for (topic, partition, next) in &done {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| KafkaClientError::kafka("store offset", e))?;
        }
        if tpl.count() > 0 {
            self.consumer.store_offsets(&tpl).map_err(|e| KafkaClientError::kafka("store offset", e))?;
        }
        // One sample per batch and topic: a histogram sample per record costs more than
        // decoding the record.
        let elapsed = started.elapsed().as_secs_f64();
        for topic in done.iter().map(|(t, _, _)| *t).collect::<BTreeSet<_>>() {
            let n = batch.iter().filter(|m| m.topic() == topic).count() as u64;
            self.consumed.get(topic, |t| metrics::counter!(m::RECORDS_CONSUMED, m::TOPIC => t)).increment(n);
            self.batch_seconds.get(topic, |t| metrics::histogram!(m::BATCH_SECONDS, m::TOPIC => t)).record(elapsed);
        }
        outcome
    }

    /// Handles one record to completion: retried while transient, dead-lettered when
    /// poison. Its offset is stored by the caller.
    async fn process<H: RecordHandler>(
        &self,
        handler: &mut H,
        msg: &BorrowedMessage<'_>,
        stats: &mut ConsumeStats,
    ) -> Result<(), KafkaClientError> {
        // Built on the first transient failure only: the common path pays nothing.
        let mut delays = None;
        let outcome = loop {
            match handler.handle(msg).await {
                Err(ProcessError::Transient(error)) => {
                    stats.retries += 1;
                    metrics::counter!(m::RETRIES, m::OPERATION => "handle").increment(1);
                    let delay =
                        delays.get_or_insert_with(|| self.retry.delays()).next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "transient failure, retrying record");
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
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
        Ok(())
    }
}
