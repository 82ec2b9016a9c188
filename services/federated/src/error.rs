//! The federated crate's one error type.
//!
//! Most failures here are a record, a setting or a file that is not what it must be
//! ([`FlError::Invalid`]); the rest come from the libraries underneath. [`Context`] adds
//! what was being done, as one line ("reading the registry r.toml: No such file"), and
//! [`bail!`]/[`ensure!`] refuse with a message.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum FlError {
    /// A record, setting or file that is not as it must be.
    #[error("{0}")]
    Invalid(String),
    /// What was being done, and why it failed (the cause's whole chain, on one line).
    #[error("{context}: {cause}")]
    Context { context: String, cause: Box<dyn std::error::Error + Send + Sync + 'static> },
    #[error(transparent)]
    Kafka(#[from] guardian_kafka::KafkaClientError),
    #[error(transparent)]
    Objects(#[from] guardian_objects::ObjectError),
    #[error(transparent)]
    SecAgg(#[from] guardian_secagg::SecAggError),
    #[error(transparent)]
    Schema(#[from] guardian_schemas::SchemaError),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Privacy(#[from] guardian_privacy::PrivacyError),
    #[error(transparent)]
    Quantize(#[from] guardian_secagg::quantize::QuantizeError),
    #[error("model file: {0}")]
    Npy(#[from] guardian_fl::npy::NpyError),
    #[error("training data: {0}")]
    Data(#[from] guardian_fl::data::DataError),
    #[error("signature key: {0}")]
    Key(#[from] ed25519_dalek::SignatureError),
}

pub type Result<T, E = FlError> = std::result::Result<T, E>;

/// Says what was being done when a result failed or an option was empty.
pub trait Context<T> {
    fn context(self, context: impl Display) -> Result<T>;
    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| FlError::Context { context: context.to_string(), cause: Box::new(e) })
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| FlError::Context { context: context().to_string(), cause: Box::new(e) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| FlError::Invalid(context.to_string()))
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| FlError::Invalid(context().to_string()))
    }
}

/// Returns an [`FlError::Invalid`] with the formatted message.
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::FlError::Invalid(format!($($arg)*))) };
}

/// [`bail!`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !$cond { $crate::error::bail!($($arg)*) } };
}

pub(crate) use {bail, ensure};
