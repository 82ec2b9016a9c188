//! The consumer loop that applies batches to PostgreSQL with their offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use guardian_kafka::consumer::{BatchPolicy, next_batch, subscribe};
use guardian_kafka::context::{GuardianContext, RebalanceNote};
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::retry::RetryPolicy;
use guardian_kafka::{KafkaClientError, KafkaSettings, ProcessError, trace};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};

use crate::offsets;

/// A PostgreSQL effect, in two steps: `prepare` decodes and validates one record with no
/// I/O (Poison goes to the dead-letter topic); `apply` writes a batch of prepared items
/// inside the transaction that also advances the offsets.
pub trait PgEffect {
    type Item;
    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Self::Item, ProcessError>;
    fn apply(&mut self, tx: &mut PgConnection, items: &[Self::Item]) -> impl Future<Output = Result<(), sqlx::Error>>;
    /// Called after each batch's transaction committed (to wake an outbox publisher).
    fn committed(&mut self) {}
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgRunStats {
    pub applied: u64,
    pub skipped_already_applied: u64,
    pub dead_lettered: u64,
    pub transactions: u64,
    pub retries: u64,
}

pub struct PgOffsetConsumer {
    consumer: Arc<StreamConsumer<GuardianContext>>,
    pool: PgPool,
    group: String,
    dlq: DeadLetterSink,
    batch: BatchPolicy,
    retry: RetryPolicy,
}

impl std::fmt::Debug for PgOffsetConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOffsetConsumer").field("group", &self.group).finish_non_exhaustive()
    }
}

/// Whether a database error may pass if the batch is tried again.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exceptions; 40001 serialization; 40P01 deadlock; 57P0x shutdown.
            c.starts_with("08") || c == "40001" || c == "40P01" || c.starts_with("57P0")
        }),
        _ => false,
    }
}

impl PgOffsetConsumer {
    /// Creates the offsets table if needed and subscribes.
    pub async fn new(
        settings: &KafkaSettings,
        pool: PgPool,
        group: &str,
        topics: &[&str],
        dlq: DeadLetterSink,
        batch: BatchPolicy,
    ) -> Result<Self, KafkaClientError> {
        offsets::migrate(&pool).await.map_err(|e| KafkaClientError::Handler(format!("creating kafka_offsets: {e}")))?;
        let consumer =
            subscribe(settings.manual_commit_consumer(group), format!("{}-pg-consumer", settings.client_id), topics)?;
        Ok(PgOffsetConsumer {
            consumer: Arc::new(consumer),
            pool,
            group: group.to_string(),
            dlq,
            batch,
            retry: RetryPolicy { max_elapsed: None, ..RetryPolicy::default() },
        })
    }

    /// Runs until `shutdown` resolves (the batch in hand is finished first) or a
    /// permanent error.
    pub async fn run<E: PgEffect>(
        &self,
        effect: &mut E,
        shutdown: impl Future<Output = ()>,
    ) -> Result<PgRunStats, KafkaClientError> {
        let mut shutdown = pin!(shutdown);
        let mut stats = PgRunStats::default();
        // Partitions assigned since their stored offset was last checked.
        let mut unchecked: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut gather = self.gather();
        loop {
            let gathered = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    gather.abort();
                    return Ok(stats);
                }
                b = &mut gather => b.map_err(|e| KafkaClientError::Handler(format!("gathering a batch: {e}")))?,
            };
            let mut batch = gathered;
            for note in self.consumer.context().take_rebalances() {
                match note {
                    RebalanceNote::Assigned(parts) => unchecked.extend(parts),
                    RebalanceNote::Revoked(parts) => parts.iter().for_each(|p| {
                        unchecked.remove(p);
                    }),
                }
            }
            self.seek_to_stored(&mut batch, &mut unchecked).await?;
            // The next batch is gathered on another thread while this one is applied. It
            // is taken only after any seek above, and its partitions' stored offsets are
            // read only after this batch committed, so the overlap changes nothing in what
            // is applied.
            gather = self.gather();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self.apply_with_retries(effect, &batch, &mut stats).await {
                gather.abort();
                return Err(e);
            }
        }
    }

    /// Gathers the next batch in a task of its own.
    fn gather(&self) -> tokio::task::JoinHandle<Vec<OwnedMessage>> {
        let consumer = self.consumer.clone();
        let policy = self.batch;
        tokio::spawn(async move {
            let never = pin!(std::future::pending::<()>());
            next_batch(&consumer, policy, never).await.unwrap_or_default()
        })
    }

    /// Applies a batch, trying again while the database is unavailable.
    async fn apply_with_retries<E: PgEffect>(
        &self,
        effect: &mut E,
        batch: &[OwnedMessage],
        stats: &mut PgRunStats,
    ) -> Result<(), KafkaClientError> {
        let mut delays = self.retry.delays();
        loop {
            match self.apply_batch(effect, batch, stats).await {
                Ok(()) => return Ok(()),
                Err(BatchError::Db(e)) if is_transient(&e) => {
                    stats.retries += 1;
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "database unavailable, retrying batch");
                    tokio::time::sleep(delay).await;
                }
                Err(BatchError::Db(e)) => return Err(KafkaClientError::Handler(format!("database: {e}"))),
                Err(BatchError::Kafka(e)) => return Err(e),
                Err(BatchError::Fatal(e)) => return Err(KafkaClientError::Handler(e)),
            }
        }
    }

    /// For partitions newly assigned: when the batch does not start at the stored offset,
    /// drop the partition's records and seek there (PostgreSQL is the source of truth).
    async fn seek_to_stored(
        &self,
        batch: &mut Vec<OwnedMessage>,
        unchecked: &mut BTreeSet<(String, i32)>,
    ) -> Result<(), KafkaClientError> {
        let mut reposition: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
        for msg in batch.iter() {
            let tp = (msg.topic().to_string(), msg.partition());
            if !seen.insert(tp.clone()) || !unchecked.remove(&tp) {
                continue;
            }
            let stored = offsets::stored(&self.pool, &self.group, &tp.0, tp.1)
                .await
                .map_err(|e| KafkaClientError::Handler(format!("reading stored offsets: {e}")))?;
            if let Some(stored) = stored
                && stored != msg.offset()
            {
                reposition.insert(tp, stored);
            }
        }
        if reposition.is_empty() {
            return Ok(());
        }
        batch.retain(|m| !reposition.contains_key(&(m.topic().to_string(), m.partition())));
        for ((topic, partition), offset) in reposition {
            tracing::info!(topic, partition, offset, "seeking to the offset stored with the effects");
            self.consumer
                .seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(10))
                .map_err(|e| KafkaClientError::kafka("seek", e))?;
        }
        Ok(())
    }

    async fn apply_batch<E: PgEffect>(
        &self,
        effect: &mut E,
        batch: &[OwnedMessage],
        stats: &mut PgRunStats,
    ) -> Result<(), BatchError> {
        let partitions: Vec<(String, i32)> =
            batch.iter().map(|m| (m.topic().to_string(), m.partition())).collect::<BTreeSet<_>>().into_iter().collect();
        let mut tx = self.pool.begin().await?;
        let stored = offsets::lock(&mut tx, &self.group, &partitions).await?;
        let mut items = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut skipped = 0u64;
        // Untraced records are prepared in the batch's span; a record that carries a
        // trace context gets a span of its own, child of the producer's (a span per record
        // cost more than decoding it).
        let batch_span = tracing::info_span!("kafka.consume", records = batch.len());
        let _in_batch = batch_span.enter();
        for msg in batch {
            let tp = (msg.topic().to_string(), msg.partition());
            if msg.offset() < stored.get(&tp).copied().unwrap_or(0) {
                skipped += 1;
                continue;
            }
            next.insert(tp, msg.offset() + 1);
            let parent = trace::extract_owned(msg.headers());
            let prepared = if trace::has_parent(&parent) {
                trace::record_span(msg.topic(), msg.partition(), msg.offset(), parent).in_scope(|| effect.prepare(msg))
            } else {
                effect.prepare(msg)
            };
            match prepared {
                Ok(item) => items.push(item),
                Err(ProcessError::Poison { kind, error }) => poison.push((msg, kind, error)),
                Err(ProcessError::Transient(e)) | Err(ProcessError::Fatal(e)) => {
                    return Err(BatchError::Fatal(format!("prepare must not fail transiently: {e}")));
                }
            }
        }
        drop(_in_batch);
        if !items.is_empty() {
            effect.apply(&mut tx, &items).await?;
        }
        // All of the batch's dead letters in flight at once (a poison storm must not crawl
        // at one broker round trip per record), every one acknowledged before the commit.
        futures::future::try_join_all(poison.iter().map(|(msg, kind, error)| {
            guardian_kafka::retry::retry("dead-letter", &self.retry, KafkaClientError::is_retryable, move || {
                self.dlq.send(*msg, kind, error)
            })
        }))
        .await
        .map_err(BatchError::Kafka)?;
        if !next.is_empty() {
            offsets::advance(&mut tx, &self.group, &next).await?;
        }
        tx.commit().await?;
        effect.committed();
        stats.applied += items.len() as u64;
        stats.dead_lettered += poison.len() as u64;
        stats.skipped_already_applied += skipped;
        stats.transactions += 1;
        metrics::counter!(guardian_kafka::metrics::RECORDS_CONSUMED, guardian_kafka::metrics::TOPIC => batch[0].topic().to_string())
            .increment(batch.len() as u64);
        self.mirror_to_kafka(&next);
        Ok(())
    }

    /// Best effort: Kafka's committed offsets follow PostgreSQL's for lag and DR tooling.
    fn mirror_to_kafka(&self, next: &BTreeMap<(String, i32), i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
                return;
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(error = %e, "mirroring offsets to kafka failed");
        }
    }
}

enum BatchError {
    Db(sqlx::Error),
    Kafka(KafkaClientError),
    Fatal(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e)
    }
}
