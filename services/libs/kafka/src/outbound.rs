//! A record on its way out, and the one way a record enters librdkafka's local queue.
//!
//! librdkafka refuses a record while its queue is full (`QueueFull`); every producer of
//! this library (the idempotent [`crate::Producer`], the transactional pipeline and the
//! PostgreSQL outbox) goes through [`enqueue`], which waits for room and gives up after
//! [`QUEUE_FULL_DEADLINE`] with the error, so a producer whose broker is gone for good
//! reports it instead of spinning forever.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::types::RDKafkaErrorCode;

/// How long a record may wait for room in the local queue.
pub const QUEUE_FULL_DEADLINE: Duration = Duration::from_secs(30);

/// One record to produce (inside a transaction, or as a dead letter).
#[derive(Debug)]
pub struct Outbound {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// Hands `record` to `send` (a producer's `send`), waiting while librdkafka's queue is
/// full, for at most [`QUEUE_FULL_DEADLINE`]; any other refusal is returned at once.
pub async fn enqueue<R>(record: R, send: impl FnMut(R) -> Result<(), (KafkaError, R)>) -> Result<(), KafkaError> {
    enqueue_within(record, QUEUE_FULL_DEADLINE, send).await
}

/// [`enqueue`] with a deadline of the caller's.
pub async fn enqueue_within<R>(
    mut record: R,
    deadline: Duration,
    mut send: impl FnMut(R) -> Result<(), (KafkaError, R)>,
) -> Result<(), KafkaError> {
    // The clock is read only once the queue is full: a read per record showed in profiles
    // of bulk producing.
    let mut give_up = None;
    loop {
        match send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if Instant::now() < *give_up.get_or_insert_with(|| Instant::now() + deadline) =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    }

    #[tokio::test]
    async fn waits_while_the_queue_is_full_then_sends() {
        let mut tries = 0;
        let r = enqueue(7u32, |r| {
            tries += 1;
            if tries < 4 { Err((full(), r)) } else { Ok(()) }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(tries, 4);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_and_at_once_on_other_errors() {
        let r = enqueue_within(1u32, Duration::from_millis(20), |r| Err((full(), r))).await;
        assert!(matches!(r, Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))));
        let mut tries = 0;
        let r = enqueue(1u32, |r| {
            tries += 1;
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), r))
        })
        .await;
        assert!(r.is_err() && tries == 1);
    }
}
