//! Dead letters: a record that cannot be decoded or validated is kept whole on the
//! dead-letter topic, with where it came from and why it failed, and the consumer goes on.
//!
//! The facts travel twice: in headers (so `kcat` and any client can filter without Avro)
//! and in the value, a `DeadLetter` Avro record holding the original key and payload.
//! Sending is at least once: a crash between the dead letter and the offset store sends
//! it again on restart, never loses it.

use guardian_schemas::Codec;
use guardian_schemas::records::DeadLetter;
use rdkafka::message::{Header, Message, OwnedHeaders};

use crate::error::KafkaClientError;
use crate::metrics as m;
use crate::outbound::Outbound;
use crate::producer::Producer;

pub const H_SOURCE_TOPIC: &str = "dlq.source.topic";
pub const H_SOURCE_PARTITION: &str = "dlq.source.partition";
pub const H_SOURCE_OFFSET: &str = "dlq.source.offset";
pub const H_ERROR: &str = "dlq.error";
pub const H_ERROR_KIND: &str = "dlq.error.kind";
pub const H_GROUP: &str = "dlq.consumer.group";

/// Longest error text kept; librdkafka and Avro errors are short, a payload echo is not.
const MAX_ERROR_LEN: usize = 2000;

/// Builds the dead-letter record for `msg`.
pub fn build(
    msg: &impl Message,
    group: &str,
    kind: &str,
    error: &str,
    codec: &Codec,
) -> Result<Outbound, KafkaClientError> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: H_SOURCE_TOPIC, value: Some(msg.topic().as_bytes()) })
        .insert(Header { key: H_SOURCE_PARTITION, value: Some(partition.as_bytes()) })
        .insert(Header { key: H_SOURCE_OFFSET, value: Some(offset.as_bytes()) })
        .insert(Header { key: H_ERROR_KIND, value: Some(kind.as_bytes()) })
        .insert(Header { key: H_ERROR, value: Some(error.as_bytes()) })
        .insert(Header { key: H_GROUP, value: Some(group.as_bytes()) });
    let record = DeadLetter {
        source_topic: msg.topic().to_string(),
        source_partition: msg.partition(),
        source_offset: msg.offset(),
        consumer_group: group.to_string(),
        error_kind: kind.to_string(),
        error,
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec),
    };
    Ok(Outbound {
        topic: String::new(),
        key: Some(format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()).into_bytes()),
        payload: codec.encode(&record)?,
        headers,
    })
}

/// Sends dead letters outside transactions (at-least-once consumers).
#[derive(Debug, Clone)]
pub struct DeadLetterSink {
    producer: Producer,
    topic: String,
    group: String,
}

impl DeadLetterSink {
    pub fn new(producer: Producer, topic: impl Into<String>, group: impl Into<String>) -> Self {
        DeadLetterSink { producer, topic: topic.into(), group: group.into() }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends the dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, msg: &impl Message, kind: &str, error: &str) -> Result<(), KafkaClientError> {
        let out = build(msg, &self.group, kind, error, self.producer.codec())?;
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            kind,
            error,
            "dead-lettering record"
        );
        self.producer.send_bytes(&self.topic, out.key.as_deref(), &out.payload, Some(out.headers)).await?;
        metrics::counter!(m::DEAD_LETTERS, m::TOPIC => msg.topic().to_string(), m::KIND => kind.to_string())
            .increment(1);
        Ok(())
    }
}
