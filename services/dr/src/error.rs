//! The one error type of the DR and replay tools.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DrError {
    #[error(transparent)]
    Kafka(#[from] guardian_kafka::KafkaClientError),
    #[error("kafka {operation}: {error}")]
    Rdkafka { operation: &'static str, error: rdkafka::error::KafkaError },
    #[error("postgresql: {0}")]
    Database(#[from] guardian_pg::PgConnectError),
    #[error("postgresql {operation}: {error}")]
    Sql { operation: &'static str, error: sqlx::Error },
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A pre-flight check failed, or the request cannot be done as asked.
    #[error("{0}")]
    Refused(String),
}

impl DrError {
    pub fn kafka(operation: &'static str, error: rdkafka::error::KafkaError) -> Self {
        DrError::Rdkafka { operation, error }
    }

    pub fn sql(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |error| DrError::Sql { operation, error }
    }
}
