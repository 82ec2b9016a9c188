//! The idempotent producer. Sends are acknowledged by every in-sync replica; librdkafka
//! retries inside the idempotence guarantees, and what it cannot deliver in
//! `message.timeout.ms` comes back as an error the caller sees.
//!
//! Delivery reports arrive on librdkafka's polling thread. A record sent on its own
//! ([`Producer::send`]) is answered through a oneshot channel; the records of a batch
//! ([`Producer::send_batch`]) only count down a shared tally, and the caller is woken
//! once, when the last one is in: no wake-up per record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guardian_schemas::{Codec, Record};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use tokio::sync::{Notify, oneshot};

use crate::context::GuardianContext;
use crate::error::KafkaClientError;
use crate::metrics as m;
use crate::{KafkaSettings, trace};

/// How long a send may wait for room in librdkafka's queue before failing.
/// A batch keeps at most this many records in librdkafka's queue: filling the queue up
/// (100,000 records by default) and polling for room is slower than a steady window.
const BATCH_HIGH_WATER: u64 = 20_000;
/// ...and, once there, waits for acknowledgements down to this many.
const BATCH_LOW_WATER: u64 = 18_000;

/// Cheap to clone; clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ThreadedProducer<DeliveryContext>>,
    codec: Codec,
    produced: Arc<m::PerTopic<metrics::Counter>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Where a delivery report goes. Shared: every record of a batch carries a clone of the
/// batch's one target (a reference count, not an allocation per record, which profiles of
/// bulk producing showed, freed on the polling thread).
#[derive(Debug)]
pub enum DeliveryTarget {
    /// Taken by the one report of a record sent on its own.
    One(Mutex<Option<oneshot::Sender<Result<Delivered, KafkaError>>>>),
    Batch(BatchTally),
}

/// The outcome of a batch's records, filled in by the delivery reports.
#[derive(Debug, Default)]
pub struct BatchTally {
    /// Records queued and not yet reported.
    outstanding: AtomicU64,
    delivered: AtomicU64,
    /// Set with `first_error`: checked per record without taking the lock.
    failed: AtomicBool,
    first_error: Mutex<Option<KafkaError>>,
    /// Woken when `outstanding` falls to 0 or to `BATCH_LOW_WATER`.
    all_in: Notify,
}

impl BatchTally {
    fn report(&self, outcome: Result<(), KafkaError>) {
        match outcome {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                self.failed.store(true, Ordering::Release);
            }
        }
        let left = self.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 || left == BATCH_LOW_WATER {
            self.all_in.notify_one();
        }
    }

    /// Waits until at most `level` records (0 or `BATCH_LOW_WATER`) are outstanding.
    async fn wait_down_to(&self, level: u64) {
        loop {
            let notified = self.all_in.notified();
            if self.outstanding.load(Ordering::Acquire) <= level {
                return;
            }
            notified.await;
        }
    }

    async fn wait_all_in(&self) {
        self.wait_down_to(0).await
    }
}

/// The shared client context (logs, statistics, errors) plus delivery reports.
#[derive(Debug)]
pub struct DeliveryContext {
    base: GuardianContext,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message)
    }

    fn stats(&self, statistics: Statistics) {
        self.base.stats(statistics)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<DeliveryTarget>;

    fn delivery(&self, result: &DeliveryResult<'_>, target: Arc<DeliveryTarget>) {
        let outcome = match result {
            Ok(msg) => Ok(Delivered { partition: msg.partition(), offset: msg.offset() }),
            Err((error, _)) => Err(error.clone()),
        };
        match &*target {
            // The receiver may be gone (its future dropped): nobody to tell.
            DeliveryTarget::One(tx) => {
                if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    drop(tx.send(outcome));
                }
            }
            DeliveryTarget::Batch(tally) => tally.report(outcome.map(|_| ())),
        }
    }
}

impl Producer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaClientError> {
        let context = DeliveryContext { base: GuardianContext::new(format!("{}-producer", settings.client_id)) };
        let inner =
            settings.producer().create_with_context(context).map_err(|e| KafkaClientError::Config(e.to_string()))?;
        Ok(Producer { inner: Arc::new(inner), codec: Codec::embedded(), produced: Default::default() })
    }

    /// A transactional producer under `transactional_id`, its transactions initialised
    /// (an open transaction of an earlier holder of the id is aborted, and that holder
    /// fenced). It holds its producer id within a round trip: `init_transactions` asks for
    /// one at once, where a plain idempotent producer first waits out librdkafka's 500 ms
    /// timer. Records sent between [`Producer::begin`] and [`Producer::commit`] are seen
    /// by `read_committed` readers only once committed.
    pub async fn transactional(settings: &KafkaSettings, transactional_id: &str) -> Result<Self, KafkaClientError> {
        let context = DeliveryContext { base: GuardianContext::new(format!("{}-producer", settings.client_id)) };
        let inner = settings.init_transactional_producer(transactional_id, context).await?;
        Ok(Producer { inner, codec: Codec::embedded(), produced: Default::default() })
    }

    /// Begins a transaction (a [`Producer::transactional`] producer only).
    pub fn begin(&self) -> Result<(), KafkaClientError> {
        self.inner.begin_transaction().map_err(|e| KafkaClientError::kafka("begin transaction", e))
    }

    /// Commits the open transaction: every record sent in it is delivered first.
    pub async fn commit(&self) -> Result<(), KafkaClientError> {
        let p = self.inner.clone();
        crate::blocking(move || p.commit_transaction(crate::config::TXN_TIMEOUT))
            .await?
            .map_err(|e| KafkaClientError::kafka("commit transaction", e))
    }

    /// Aborts the open transaction: no `read_committed` reader sees its records.
    pub async fn abort(&self) -> Result<(), KafkaClientError> {
        let p = self.inner.clone();
        crate::blocking(move || p.abort_transaction(crate::config::TXN_TIMEOUT))
            .await?
            .map_err(|e| KafkaClientError::kafka("abort transaction", e))
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Encodes `record` with its schema and sends it, with the current trace context.
    pub async fn send<R: Record>(&self, topic: &str, key: &str, record: &R) -> Result<Delivered, KafkaClientError> {
        let payload = self.codec.encode(record)?;
        self.send_bytes(topic, Some(key.as_bytes()), &payload, None).await
    }

    /// [`Producer::send`], signed by a hospital agent (see [`crate::signing`]).
    pub async fn send_signed<R: Record>(
        &self,
        topic: &str,
        key: &str,
        record: &R,
        signer: &crate::signing::EventSigner,
    ) -> Result<Delivered, KafkaClientError> {
        let payload = self.codec.encode(record)?;
        let headers = signer.headers(key.as_bytes(), &payload);
        self.send_bytes(topic, Some(key.as_bytes()), &payload, Some(headers)).await
    }

    /// Sends raw bytes (already encoded, or deliberately not: tests of dead letters).
    pub async fn send_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<Delivered, KafkaClientError> {
        self.send_bytes_to(topic, None, key, Some(payload), headers).await
    }

    /// [`Producer::send_bytes`] into a chosen partition (None: by key), with an optional
    /// value (None: a tombstone). Restores put each record back into the partition it was
    /// archived from.
    pub async fn send_bytes_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<Delivered, KafkaClientError> {
        let (tx, rx) = oneshot::channel();
        let headers = trace::with_pairs(headers, &trace::current_pairs());
        let target = Arc::new(DeliveryTarget::One(Mutex::new(Some(tx))));
        self.enqueue(topic, partition, key, payload, headers, target).await?;
        let outcome = rx.await.unwrap_or(Err(KafkaError::Canceled));
        self.acknowledged(topic, outcome, 1)
    }

    /// Encodes and sends many records to one topic, each with its key, then waits for
    /// every acknowledgement. Much faster than awaiting [`Producer::send`] record by
    /// record: records are queued back to back, librdkafka batches them, and the caller
    /// is woken once. Returns how many were delivered, or the first failure (records
    /// before a failed one in the same partition are delivered: the producer is
    /// idempotent, order is kept per partition; the caller decides what to send again).
    pub async fn send_batch<'r, R: Record + 'r>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (&'r str, &'r R)>,
    ) -> Result<u64, KafkaClientError> {
        self.send_batch_signed(topic, records, None).await
    }

    /// [`Producer::send_batch`], each record signed by `signer` when given (see
    /// [`crate::signing`]).
    pub async fn send_batch_signed<'r, R: Record + 'r>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (&'r str, &'r R)>,
        signer: Option<&crate::signing::EventSigner>,
    ) -> Result<u64, KafkaClientError> {
        let mut batch = self.batch(topic);
        for (key, record) in records {
            let payload = self.codec.encode(record)?;
            let headers = signer.map(|s| s.headers(key.as_bytes(), &payload));
            batch.push(None, Some(key.as_bytes()), Some(&payload), headers).await?;
        }
        batch.finish().await
    }

    /// A batch of raw records to `topic`, queued one after another and acknowledged
    /// together: what [`Producer::send_batch`] does, for callers that stream records
    /// (replay, restore). At most 20,000 are outstanding at a time.
    pub fn batch<'p>(&'p self, topic: &'p str) -> Batch<'p> {
        Batch {
            producer: self,
            topic,
            target: Arc::new(DeliveryTarget::Batch(BatchTally::default())),
            trace_pairs: trace::current_pairs(),
        }
    }

    /// Hands one record to librdkafka, waiting for room in its queue (up to
    /// [`crate::outbound::QUEUE_FULL_DEADLINE`]) when it is full.
    // librdkafka hands a refused record back inside the error, whatever its size.
    #[allow(clippy::result_large_err)]
    async fn enqueue(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        target: Arc<DeliveryTarget>,
    ) -> Result<(), KafkaClientError> {
        let mut record: BaseRecord<'_, [u8], [u8], Arc<DeliveryTarget>> = BaseRecord::with_opaque_to(topic, target);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        match crate::outbound::enqueue(record, |r| self.inner.send(r)).await {
            Ok(()) => Ok(()),
            Err(error) => self.acknowledged(topic, Err(error), 0),
        }
    }

    /// Counts a delivery outcome in the metrics and turns it into the library's error.
    fn acknowledged<T>(
        &self,
        topic: &str,
        outcome: Result<T, KafkaError>,
        records: u64,
    ) -> Result<T, KafkaClientError> {
        if records > 0 {
            self.produced.get(topic, |t| metrics::counter!(m::RECORDS_PRODUCED, m::TOPIC => t)).increment(records);
        }
        outcome.map_err(|error| {
            metrics::counter!(m::PRODUCE_ERRORS, m::TOPIC => topic.to_string()).increment(1);
            KafkaClientError::kafka("produce", error)
        })
    }

    /// Waits until everything queued is delivered (or `timeout` passes).
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaClientError> {
        let inner = self.inner.clone();
        crate::blocking(move || inner.flush(timeout)).await?.map_err(|e| KafkaClientError::kafka("flush", e))
    }
}

/// Records queued one after another and acknowledged together ([`Producer::batch`]).
pub struct Batch<'p> {
    producer: &'p Producer,
    topic: &'p str,
    /// Always [`DeliveryTarget::Batch`].
    target: Arc<DeliveryTarget>,
    trace_pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Batch<'_> {
    fn tally(&self) -> &BatchTally {
        match &*self.target {
            DeliveryTarget::Batch(tally) => tally,
            DeliveryTarget::One(_) => unreachable!("a batch's target is a tally"),
        }
    }

    /// Queues one record (partition None: by key; payload None: a tombstone), waiting
    /// while 20,000 are outstanding. Fails as soon as a record queued before it failed,
    /// or when it cannot be queued (after the records queued before it are reported).
    pub async fn push(
        &mut self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaClientError> {
        let tally = self.tally();
        if tally.outstanding.load(Ordering::Acquire) >= BATCH_HIGH_WATER {
            tally.wait_down_to(BATCH_LOW_WATER).await;
        }
        if tally.failed.load(Ordering::Acquire) {
            let failed = tally.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(error) = failed {
                return self.producer.acknowledged(self.topic, Err(error), 0);
            }
        }
        tally.outstanding.fetch_add(1, Ordering::AcqRel);
        let target = self.target.clone();
        let headers = trace::with_pairs(headers, &self.trace_pairs);
        if let Err(e) = self.producer.enqueue(self.topic, partition, key, payload, headers, target).await {
            // Not queued: its report will never come. The ones queued before are.
            tally.outstanding.fetch_sub(1, Ordering::AcqRel);
            tally.wait_all_in().await;
            return Err(e);
        }
        Ok(())
    }

    /// Records acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.tally().delivered.load(Ordering::Acquire)
    }

    /// Records queued and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.tally().outstanding.load(Ordering::Acquire)
    }

    /// Waits for every acknowledgement. Returns how many records were delivered, or the
    /// first failure (records before a failed one in the same partition are delivered:
    /// the producer is idempotent, order is kept per partition).
    pub async fn finish(self) -> Result<u64, KafkaClientError> {
        let tally = self.tally();
        tally.wait_all_in().await;
        let delivered = tally.delivered.load(Ordering::Acquire);
        if let Some(error) = tally.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return self.producer.acknowledged(self.topic, Err(error), delivered);
        }
        self.producer.acknowledged(self.topic, Ok(delivered), delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tally_wakes_its_waiter_once_every_report_is_in() {
        let tally = Arc::new(BatchTally::default());
        tally.outstanding.store(3, Ordering::Release);
        let waiter = tokio::spawn({
            let t = tally.clone();
            async move { t.wait_all_in().await }
        });
        tally.report(Ok(()));
        tally.report(Err(KafkaError::Canceled));
        assert!(!waiter.is_finished());
        tally.report(Ok(()));
        waiter.await.unwrap();
        assert_eq!(tally.delivered.load(Ordering::Acquire), 2);
        assert!(tally.first_error.lock().unwrap().is_some());
    }
}
