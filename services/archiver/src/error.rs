//! The archiver's one error type.

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Kafka(#[from] guardian_kafka::KafkaClientError),
    #[error(transparent)]
    Objects(#[from] guardian_objects::ObjectError),
    #[error(transparent)]
    Schema(#[from] guardian_schemas::SchemaError),
    #[error("{what}: {error}")]
    Format { what: String, error: String },
    #[error("{0}")]
    Refused(String),
}

impl ArchiveError {
    /// A file or record that does not read as what it should be.
    pub fn format(what: impl Into<String>) -> impl FnOnce(String) -> Self {
        let what = what.into();
        move |error| ArchiveError::Format { what, error }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
