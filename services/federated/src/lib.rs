//! Federated rounds over Kafka.
//!
//! * [`coordinator`]: the aggregator. It opens rounds on `fl.rounds`, runs the secure
//!   aggregation server over `fl.keys`, `fl.updates` and `fl.unmask`, closes each stage at
//!   a deadline or when everyone has answered (publishing the signed lists), and publishes
//!   each model version to S3 and `fl.models`.
//! * [`agent`]: a hospital. It checks its privacy budget, trains (or takes an update file),
//!   clips and noises, takes part in secure aggregation and records its spend.
//! * [`replay`]: recomputes every model of a session from the topics and compares it with
//!   the published one.

pub mod agent;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod history;
pub mod metrics;
pub mod noise;
pub mod registry;
pub mod replay;
pub mod sampling;
pub mod service;
pub mod trainer;
pub mod wire;

pub use error::FlError;

/// The Kafka topics a federated session uses, with the catalogue's prefix applied.
#[derive(Debug, Clone)]
pub struct FlTopics {
    pub rounds: String,
    pub keys: String,
    pub updates: String,
    pub unmask: String,
    pub models: String,
    pub spend: String,
    pub status: String,
    pub decisions: String,
    pub dead_letter: String,
}

impl FlTopics {
    pub fn from_catalogue(c: &guardian_topics::Catalogue) -> Result<Self, guardian_topics::CatalogueError> {
        use guardian_topics::TopicId as T;
        Ok(FlTopics {
            rounds: c.topic(T::RoundControl)?,
            keys: c.topic(T::RoundKeys)?,
            updates: c.topic(T::GradientUpdates)?,
            unmask: c.topic(T::UnmaskShares)?,
            models: c.topic(T::ModelVersions)?,
            spend: c.topic(T::BudgetSpend)?,
            status: c.topic(T::BudgetStatus)?,
            decisions: c.topic(T::SpendDecisions)?,
            dead_letter: c.topic(T::DeadLetter)?,
        })
    }

    pub const NEEDED: [guardian_topics::TopicId; 9] = [
        guardian_topics::TopicId::RoundControl,
        guardian_topics::TopicId::RoundKeys,
        guardian_topics::TopicId::GradientUpdates,
        guardian_topics::TopicId::UnmaskShares,
        guardian_topics::TopicId::ModelVersions,
        guardian_topics::TopicId::BudgetSpend,
        guardian_topics::TopicId::BudgetStatus,
        guardian_topics::TopicId::SpendDecisions,
        guardian_topics::TopicId::DeadLetter,
    ];
}

/// Server learning rate of FedAvg: the global model moves by the mean update.
pub const SERVER_LEARNING_RATE: f64 = 1.0;

/// The next global model from the previous one and a round's ring sum: dequantize, average
/// over the survivors, apply. Pure, so the replay computes the same bits; one weight at a
/// time, so a model of d parameters needs no vector beyond the 4·d bytes of the result.
pub fn next_model(
    previous: &[f32],
    sum: &[u32],
    survivors: usize,
    cfg: &guardian_secagg::RoundConfig,
) -> crate::error::Result<Vec<f32>> {
    crate::error::ensure!(sum.len() == previous.len(), "sum of {} values for a model of {}", sum.len(), previous.len());
    crate::error::ensure!(survivors > 0, "no survivors");
    let decode = cfg.quantizer()?.sum_decoder(survivors as u64);
    Ok(previous
        .iter()
        .zip(sum)
        .map(|(&w, &s)| guardian_fl::model::step(w, decode(s) / survivors as f64, SERVER_LEARNING_RATE))
        .collect())
}

/// A model's weights as stored in S3: a float32 `.npy` file.
pub fn model_bytes(weights: &[f32]) -> Vec<u8> {
    guardian_fl::npy::write(weights)
}
