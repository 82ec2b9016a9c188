//! Exactly-once consume-transform-produce with Kafka transactions.
//!
//! Each batch is one transaction: the outputs of every record (and the dead letters of
//! bad ones) plus the consumed offsets (`send_offsets_to_transaction` with the group's
//! metadata, so a zombie from an older generation is fenced). A crash anywhere before
//! the commit aborts it (the next instance with the same `transactional.id` aborts it at
//! `init_transactions`), and the batch is consumed again; `read_committed` readers see
//! each output exactly once.
//!
//! Transforms are synchronous and should be pure: the same input gives the same output,
//! which is what makes a replay reproduce results. On an abortable error the transaction
//! is aborted and the consumer rewinds to the batch's first offsets; fatal errors
//! (fenced by a newer instance) stop the pipeline.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::{BatchPolicy, next_batch};
use crate::context::GuardianContext;
use crate::error::{KafkaClientError, ProcessError};
use crate::metrics as m;
use crate::{KafkaSettings, dlq, trace};

pub use crate::outbound::Outbound;

/// Turns one consumed record into the records to produce.
pub trait Transform {
    fn transform(&mut self, msg: &OwnedMessage) -> Result<Vec<Outbound>, ProcessError>;
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub transactions: u64,
    pub aborted: u64,
}

use crate::config::TXN_TIMEOUT;

pub struct TransactionalPipeline {
    consumer: Arc<StreamConsumer<GuardianContext>>,
    producer: Arc<ThreadedProducer<GuardianContext>>,
    group: String,
    dead_letter_topic: String,
    batch: BatchPolicy,
    codec: guardian_schemas::Codec,
}

impl std::fmt::Debug for TransactionalPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalPipeline").field("group", &self.group).finish_non_exhaustive()
    }
}

impl TransactionalPipeline {
    /// `transactional_id` must be stable across restarts of the same instance, so a new
    /// incarnation fences the old one and aborts its open transaction at once.
    pub async fn new(
        settings: &KafkaSettings,
        group: &str,
        transactional_id: &str,
        inputs: &[&str],
        dead_letter_topic: &str,
        batch: BatchPolicy,
    ) -> Result<Self, KafkaClientError> {
        let consumer = crate::consumer::subscribe(
            settings.manual_commit_consumer(group),
            format!("{}-txn-consumer", settings.client_id),
            inputs,
        )?;
        let context = GuardianContext::new(format!("{}-txn-producer", settings.client_id));
        let producer = settings.init_transactional_producer(transactional_id, context).await?;
        Ok(TransactionalPipeline {
            consumer: Arc::new(consumer),
            producer,
            group: group.to_string(),
            dead_letter_topic: dead_letter_topic.to_string(),
            batch,
            codec: guardian_schemas::Codec::embedded(),
        })
    }

    /// Runs until `shutdown` resolves (the batch in hand is committed first) or a fatal
    /// error.
    pub async fn run<T: Transform>(
        &self,
        transform: &mut T,
        shutdown: impl Future<Output = ()>,
    ) -> Result<PipelineStats, KafkaClientError> {
        let mut shutdown = pin!(shutdown);
        let mut stats = PipelineStats::default();
        loop {
            let Some(batch) = next_batch(&self.consumer, self.batch, shutdown.as_mut()).await else {
                return Ok(stats);
            };
            self.process_batch(transform, &batch, &mut stats).await?;
        }
    }

    async fn process_batch<T: Transform>(
        &self,
        transform: &mut T,
        batch: &[OwnedMessage],
        stats: &mut PipelineStats,
    ) -> Result<(), KafkaClientError> {
        self.producer.begin_transaction().map_err(|e| KafkaClientError::kafka("begin transaction", e))?;
        let mut produced = 0u64;
        let mut dead = 0u64;
        let mut first_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for msg in batch {
            let tp = (msg.topic().to_string(), msg.partition());
            first_offsets.entry(tp.clone()).or_insert(msg.offset());
            next_offsets.insert(tp, msg.offset() + 1);
            let span =
                trace::record_span(msg.topic(), msg.partition(), msg.offset(), trace::extract_owned(msg.headers()));
            let result = span.in_scope(|| {
                transform.transform(msg).map(|mut outputs| {
                    // Outputs carry the trace of the record they came from.
                    for out in &mut outputs {
                        out.headers = trace::inject_current(std::mem::replace(&mut out.headers, OwnedHeaders::new()));
                    }
                    outputs
                })
            });
            let outputs = match result {
                Ok(outputs) => outputs,
                Err(ProcessError::Poison { kind, error }) => {
                    tracing::warn!(kind, %error, "dead-lettering record");
                    dead += 1;
                    let mut out = dlq::build(msg, &self.group, kind, &error, &self.codec)?;
                    out.topic = self.dead_letter_topic.clone();
                    vec![out]
                }
                Err(e @ (ProcessError::Transient(_) | ProcessError::Fatal(_))) => {
                    self.abort_and_rewind(&first_offsets).await?;
                    stats.aborted += 1;
                    return match e {
                        ProcessError::Transient(error) => {
                            tracing::warn!(%error, "transient transform failure: batch aborted, will be consumed again");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            Ok(())
                        }
                        other => Err(KafkaClientError::Handler(other.to_string())),
                    };
                }
            };
            for out in outputs {
                self.enqueue(out).await?;
                produced += 1;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &next_offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| KafkaClientError::kafka("offsets", e))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| KafkaClientError::Internal("consumer has no group metadata".into()))?;
        let producer = self.producer.clone();
        let committed = crate::blocking(move || {
            producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)
        })
        .await?;
        match committed {
            Ok(()) => {
                stats.records_in += batch.len() as u64;
                stats.records_out += produced;
                stats.dead_lettered += dead;
                stats.transactions += 1;
                metrics::counter!(m::TRANSACTIONS, m::OUTCOME => "committed").increment(1);
                if dead > 0 {
                    metrics::counter!(m::DEAD_LETTERS, m::TOPIC => batch[0].topic().to_string(), m::KIND => "transform").increment(dead);
                }
                Ok(())
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() && !e.is_fatal() => {
                tracing::warn!(error = %e, "transaction must abort: rewinding the batch");
                self.abort_and_rewind(&first_offsets).await?;
                stats.aborted += 1;
                Ok(())
            }
            Err(e) => Err(KafkaClientError::kafka("commit transaction", e)),
        }
    }

    // librdkafka hands a refused record back inside the error, whatever its size.
    #[allow(clippy::result_large_err)]
    async fn enqueue(&self, out: Outbound) -> Result<(), KafkaClientError> {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&out.topic).payload(out.payload.as_slice()).headers(out.headers);
        if let Some(key) = out.key.as_deref() {
            record = record.key(key);
        }
        crate::outbound::enqueue(record, |r| self.producer.send(r))
            .await
            .map_err(|e| KafkaClientError::kafka("produce", e))?;
        metrics::counter!(m::RECORDS_PRODUCED, m::TOPIC => out.topic.clone()).increment(1);
        Ok(())
    }

    async fn abort_and_rewind(&self, first_offsets: &BTreeMap<(String, i32), i64>) -> Result<(), KafkaClientError> {
        let producer = self.producer.clone();
        crate::blocking(move || producer.abort_transaction(TXN_TIMEOUT))
            .await?
            .map_err(|e| KafkaClientError::kafka("abort transaction", e))?;
        metrics::counter!(m::TRANSACTIONS, m::OUTCOME => "aborted").increment(1);
        for ((topic, partition), offset) in first_offsets {
            if let Err(e) = self.consumer.seek(topic, *partition, Offset::Offset(*offset), Duration::from_secs(10)) {
                // Revoked meanwhile: the new owner starts from the committed offset.
                tracing::info!(topic, partition, error = %e, "could not rewind partition");
            }
        }
        Ok(())
    }
}
