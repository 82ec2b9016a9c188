//! Dead letters: a record that cannot be decoded or validated is kept whole on the
//! dead-letter topic, with where it came from and why it failed, and the consumer goes on.
//!
//! The facts travel twice: in headers (so `kcat` and any client can filter without Avro)
//! and in the value, a `DeadLetter` Avro record holding the original key and payload.
//! Sending is at least once: a crash between the dead letter and the offset store sends
//! it again on restart, never loses it.
//!
//! A record too large to wrap (its key and value past [`MAX_WHOLE_BYTES`]: the dead
//! letter around a record at the broker's size limit would be over the limit itself, and
//! the consumer could never get past it) is kept as a stub: its size, its SHA-256 and its
//! first [`STUB_PREFIX_BYTES`] bytes, in headers (`dlq.original.size`,
//! `dlq.original.sha256`, `dlq.truncated`) and in the value (key and payload cut to the
//! prefix, the error text saying so).

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

pub const H_ORIGINAL_SIZE: &str = "dlq.original.size";
pub const H_ORIGINAL_SHA256: &str = "dlq.original.sha256";
pub const H_TRUNCATED: &str = "dlq.truncated";

/// Longest error text kept; librdkafka and Avro errors are short, a payload echo is not.
const MAX_ERROR_LEN: usize = 2000;
/// Largest record (key and value) a dead letter keeps whole: half of the producer's
/// default maximum message size, whatever headers and the wrapping add.
pub const MAX_WHOLE_BYTES: usize = 512 * 1024;
/// How much of the key and of the value a stub keeps.
pub const STUB_PREFIX_BYTES: usize = 1024;

/// Hex SHA-256 of the key (length-prefixed) and the value of a record.
fn digest(key: &[u8], payload: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(payload);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the dead-letter record for `msg`.
pub fn build(
    msg: &impl Message,
    group: &str,
    kind: &str,
    error: &str,
    codec: &Codec,
) -> Result<Outbound, KafkaClientError> {
    let mut error: String = error.chars().take(MAX_ERROR_LEN).collect();
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let (key, payload) = (msg.key(), msg.payload());
    let size = key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
    let stub = (size > MAX_WHOLE_BYTES).then(|| digest(key.unwrap_or_default(), payload.unwrap_or_default()));
    let cut = |b: &[u8]| b[..b.len().min(STUB_PREFIX_BYTES)].to_vec();
    let (key, payload) = match &stub {
        None => (key.map(<[u8]>::to_vec), payload.map(<[u8]>::to_vec)),
        Some(sha) => {
            error.push_str(&format!(
                " [a record of {size} bytes (sha256 {sha}), too large to keep whole: its first {STUB_PREFIX_BYTES} \
                 bytes of key and value are kept]"
            ));
            (key.map(cut), payload.map(cut))
        }
    };
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: H_SOURCE_TOPIC, value: Some(msg.topic().as_bytes()) })
        .insert(Header { key: H_SOURCE_PARTITION, value: Some(partition.as_bytes()) })
        .insert(Header { key: H_SOURCE_OFFSET, value: Some(offset.as_bytes()) })
        .insert(Header { key: H_ERROR_KIND, value: Some(kind.as_bytes()) })
        .insert(Header { key: H_ERROR, value: Some(error.as_bytes()) })
        .insert(Header { key: H_GROUP, value: Some(group.as_bytes()) });
    if let Some(sha) = &stub {
        let size = size.to_string();
        headers = headers
            .insert(Header { key: H_ORIGINAL_SIZE, value: Some(size.as_bytes()) })
            .insert(Header { key: H_ORIGINAL_SHA256, value: Some(sha.as_bytes()) })
            .insert(Header { key: H_TRUNCATED, value: Some(b"true") });
    }
    let record = DeadLetter {
        source_topic: msg.topic().to_string(),
        source_partition: msg.partition(),
        source_offset: msg.offset(),
        consumer_group: group.to_string(),
        error_kind: kind.to_string(),
        error,
        key,
        payload,
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

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Headers, OwnedMessage};

    use super::*;

    fn record(key: &[u8], payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(Some(payload.to_vec()), Some(key.to_vec()), "t".into(), Timestamp::NotAvailable, 2, 9, None)
    }

    fn header<'a>(out: &'a Outbound, name: &str) -> Option<&'a [u8]> {
        out.headers.iter().find(|h| h.key == name).and_then(|h| h.value)
    }

    #[test]
    fn records_up_to_the_limit_are_kept_whole_and_larger_ones_as_a_stub() {
        let codec = Codec::embedded();
        let whole = record(b"h001", &vec![7u8; MAX_WHOLE_BYTES - 4]);
        let out = build(&whole, "g", "decode", "bad", &codec).unwrap();
        let letter: DeadLetter = codec.decode(&out.payload).unwrap();
        assert_eq!(letter.payload.as_deref(), whole.payload());
        assert_eq!(header(&out, H_TRUNCATED), None);

        let big: Vec<u8> = (0..4 * MAX_WHOLE_BYTES).map(|i| (i % 251) as u8).collect();
        let huge = record(b"h001", &big);
        let out = build(&huge, "g", "decode", "bad", &codec).unwrap();
        assert!(out.payload.len() < 8 * STUB_PREFIX_BYTES, "the stub is small: {} bytes", out.payload.len());
        let letter: DeadLetter = codec.decode(&out.payload).unwrap();
        assert_eq!(letter.payload.as_deref(), Some(&big[..STUB_PREFIX_BYTES]));
        assert_eq!(letter.key.as_deref(), Some(&b"h001"[..]));
        assert_eq!((letter.source_partition, letter.source_offset), (2, 9));
        assert!(letter.error.starts_with("bad [a record of 2097156 bytes"), "{}", letter.error);
        assert_eq!(header(&out, H_TRUNCATED), Some(&b"true"[..]));
        assert_eq!(header(&out, H_ORIGINAL_SIZE), Some(&b"2097156"[..]));
        let sha = String::from_utf8(header(&out, H_ORIGINAL_SHA256).unwrap().to_vec()).unwrap();
        assert_eq!(sha, digest(b"h001", &big));
        assert!(letter.error.contains(&sha));
        assert_ne!(digest(b"h001", &big), digest(b"h00", &[&b"1"[..], &big].concat()), "key and value are told apart");
    }
}
