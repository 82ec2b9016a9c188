//! The dashboard's one error type.

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Kafka(#[from] guardian_kafka::KafkaClientError),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Connect(#[from] guardian_pg::PgConnectError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}
