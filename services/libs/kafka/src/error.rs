//! Errors of the Kafka layer, classified so callers know what to retry.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KafkaClientError {
    #[error("kafka at {bootstrap} did not answer within {seconds}s: {error}")]
    Unreachable { bootstrap: String, seconds: u64, error: String },
    #[error("invalid kafka client setting: {0}")]
    Config(String),
    #[error("kafka {operation} failed: {error}")]
    Kafka { operation: &'static str, error: KafkaError },
    #[error("topic {topic}: {error}")]
    Topic { topic: String, error: String },
    #[error("record encoding: {0}")]
    Encode(#[from] guardian_schemas::SchemaError),
    #[error("handler failed: {0}")]
    Handler(String),
    #[error("{0}")]
    Internal(String),
}

impl KafkaClientError {
    pub fn kafka(operation: &'static str, error: KafkaError) -> Self {
        KafkaClientError::Kafka { operation, error }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaClientError::Unreachable { .. } => true,
            KafkaClientError::Kafka { error, .. } => is_retryable_kafka(error),
            _ => false,
        }
    }

    /// Whether the client can no longer be used (fenced producer, fatal idempotence error).
    pub fn is_fatal(&self) -> bool {
        match self {
            KafkaClientError::Kafka { error: KafkaError::Transaction(e), .. } => e.is_fatal(),
            KafkaClientError::Kafka { error, .. } => matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::Fatal | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                )
            ),
            _ => false,
        }
    }
}

/// Transient conditions librdkafka reports.
pub fn is_retryable_kafka(error: &KafkaError) -> bool {
    if let KafkaError::Transaction(e) = error {
        return e.is_retriable();
    }
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::NotEnoughReplicas
                | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::ConcurrentTransactions
        )
    )
}

/// What a handler or transform says about one record.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The record itself is bad (undecodable, invalid, unsigned): dead-letter it and go on.
    #[error("{kind}: {error}")]
    Poison { kind: &'static str, error: String },
    /// A dependency failed in a way that may pass: retry the same record.
    #[error("transient: {0}")]
    Transient(String),
    /// Stop consuming; the error reaches the caller.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ProcessError {
    pub fn poison(kind: &'static str, error: impl std::fmt::Display) -> Self {
        ProcessError::Poison { kind, error: error.to_string() }
    }

    /// A record that failed to decode.
    pub fn decode(error: impl std::fmt::Display) -> Self {
        ProcessError::poison("decode", error)
    }
}

impl From<guardian_schemas::SchemaError> for ProcessError {
    fn from(e: guardian_schemas::SchemaError) -> Self {
        ProcessError::decode(e)
    }
}
