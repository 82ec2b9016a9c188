//! The idempotent producer. Sends are acknowledged by every in-sync replica; librdkafka
//! retries inside the idempotence guarantees, and what it cannot deliver in
//! `message.timeout.ms` comes back as an error the caller sees.

use std::time::Duration;

use guardian_schemas::{Codec, Record};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::context::GuardianContext;
use crate::error::KafkaClientError;
use crate::metrics as m;
use crate::{KafkaSettings, trace};

/// How long a send may wait for room in librdkafka's queue before failing.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Cheap to clone; clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<GuardianContext>,
    codec: Codec,
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

impl Producer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaClientError> {
        let inner = settings
            .producer()
            .create_with_context(GuardianContext::new(format!("{}-producer", settings.client_id)))
            .map_err(|e| KafkaClientError::Config(e.to_string()))?;
        Ok(Producer { inner, codec: Codec::embedded() })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Encodes `record` with its schema and sends it, with the current trace context.
    pub async fn send<R: Record>(&self, topic: &str, key: &str, record: &R) -> Result<Delivered, KafkaClientError> {
        let payload = self.codec.encode(record)?;
        self.send_bytes(topic, Some(key.as_bytes()), &payload, OwnedHeaders::new()).await
    }

    /// Sends raw bytes (already encoded, or deliberately not: tests of dead letters).
    pub async fn send_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivered, KafkaClientError> {
        let headers = trace::inject_current(headers);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.inner.send(record, Timeout::After(QUEUE_TIMEOUT)).await {
            Ok(delivery) => {
                metrics::counter!(m::RECORDS_PRODUCED, m::TOPIC => topic.to_string()).increment(1);
                Ok(Delivered { partition: delivery.partition, offset: delivery.offset })
            }
            Err((error, _)) => {
                metrics::counter!(m::PRODUCE_ERRORS, m::TOPIC => topic.to_string()).increment(1);
                Err(KafkaClientError::kafka("produce", error))
            }
        }
    }

    /// Waits until everything queued is delivered (or `timeout` passes).
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaClientError> {
        let inner = self.inner.clone();
        crate::blocking(move || inner.flush(timeout)).await?.map_err(|e| KafkaClientError::kafka("flush", e))
    }
}
