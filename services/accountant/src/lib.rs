//! The privacy accountant service.
//!
//! Consumes budget-spend events and keeps, in PostgreSQL, a ledger of every spend (once
//! per event id), the RDP of each hospital's budget and of the federation's, and the
//! alerts; publishes each scope's budget status to a compacted topic, every alert to
//! the alerts topic and its decision on each spend (accepted or refused, once per event
//! id) to the decisions topic, which the aggregator waits for before it sums an update. The budget rules are in [`budget`]: a spend that would exceed a
//! budget is recorded and alerted, and counted in none (the aggregator must not use its
//! update).
//!
//! Guarantees: the ledger, the budgets and the alerts are exactly once (Kafka offsets in
//! the same SQL transaction, see `guardian-pg`; duplicates and replays of an event id
//! change nothing); statuses and alerts reach Kafka exactly once through an outbox, with
//! stable keys ([`publish`]). Undecodable or invalid spends go to the dead-letter topic.

pub mod audit;
pub mod budget;
pub mod config;
pub mod metrics;
pub mod publish;
pub mod store;

use std::sync::Arc;

use guardian_kafka::consumer::BatchPolicy;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{KafkaClientError, KafkaSettings, Producer};
use guardian_pg::PgOffsetConsumer;
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use sqlx::PgPool;

pub use budget::Limits;
pub use config::{AccountantArgs, AccountantConfig};
use guardian_topics::{ServiceId, TopicId};

/// Everything the service needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaSettings,
    pub group: String,
    pub spend_topic: String,
    pub dead_letter_topic: String,
    pub destinations: publish::Destinations,
    pub limits: Limits,
    /// When set, every spend must be signed by its hospital (others are dead-lettered).
    pub signers: Option<guardian_kafka::signing::Signers>,
    /// How far a spend's time may run ahead of its record's timestamp (later:
    /// dead-lettered as "future").
    pub max_skew_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountantError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Connect(#[from] guardian_pg::PgConnectError),
    #[error("invalid limits: {0}")]
    Limits(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
}

impl Limits {
    pub fn validate(&self) -> Result<(), AccountantError> {
        let ok = |e: f64| e.is_finite() && e > 0.0;
        if !ok(self.hospital_epsilon) || !ok(self.global_epsilon) {
            return Err(AccountantError::Limits("epsilon limits must be finite and > 0".into()));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(AccountantError::Limits(format!("delta must be in (0, 1), got {}", self.delta)));
        }
        Ok(())
    }
}

/// The topics the service reads and writes: it refuses to start without them.
pub const NEEDED: [TopicId; 5] =
    [TopicId::BudgetSpend, TopicId::BudgetStatus, TopicId::PrivacyAlerts, TopicId::SpendDecisions, TopicId::DeadLetter];

/// The service process: the ops endpoint on `config.listen`, the topic check, the
/// database, then [`run`] until `shutdown`.
pub async fn serve(config: AccountantConfig, shutdown: Shutdown) -> Result<(), AccountantError> {
    let signers =
        guardian_kafka::signing::Signers::load_optional(config.signers.as_deref()).map_err(AccountantError::Config)?;
    let ops = guardian_runtime::http::serve_ops(ServiceId::Accountant.name(), config.listen, None, &shutdown).await?;
    let catalogue = config.kafka.checked_catalogue(ServiceId::Accountant, &NEEDED).await?;
    let pool = guardian_pg::connect(&config.database_url, 4).await?;
    let run_config = Config {
        kafka: config.kafka.settings(&ServiceId::Accountant.client_id()),
        group: config.group,
        spend_topic: catalogue.topic(TopicId::BudgetSpend)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        destinations: publish::Destinations {
            status_topic: catalogue.topic(TopicId::BudgetStatus)?,
            alerts_topic: catalogue.topic(TopicId::PrivacyAlerts)?,
            decisions_topic: catalogue.topic(TopicId::SpendDecisions)?,
        },
        limits: config.limits,
        signers,
        max_skew_ms: config.max_skew_ms,
    };
    tracing::info!(metrics = %format!("http://{}/metrics", ops.bound), spend = %run_config.spend_topic, "privacy accountant starting");
    ops.readiness.set_ready(true);
    run(run_config, pool, shutdown).await
}

/// Runs the accountant until `shutdown`: creates its tables, publishes what a previous
/// run left in the outbox, then consumes. Returns once the batch in hand is committed
/// and the outbox is empty.
pub async fn run(config: Config, pool: PgPool, shutdown: Shutdown) -> Result<(), AccountantError> {
    config.limits.validate()?;
    store::migrate(&pool).await?;
    let producer = Producer::new(&config.kafka)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let publisher = tokio::spawn(publish::run(
        pool.clone(),
        config.kafka.clone(),
        config.group.clone(),
        config.destinations.clone(),
        wake.clone(),
        shutdown.wait(),
    ));
    let dlq = DeadLetterSink::new(producer, &config.dead_letter_topic, &config.group);
    let consumer =
        PgOffsetConsumer::new(&config.kafka, pool, &config.group, &[&config.spend_topic], dlq, BatchPolicy::default())
            .await?;
    let mut ledger = store::Ledger {
        limits: config.limits,
        codec: Codec::embedded(),
        signers: config.signers.clone(),
        max_skew_ms: config.max_skew_ms,
        committed: Some(wake),
    };
    let stats = consumer.run(&mut ledger, shutdown.wait()).await;
    // The publisher ends after one last pass once shutdown fired. A consumer that stopped
    // on an error stops the process's other tasks too: nothing runs on without a ledger.
    shutdown.trigger();
    let _ = publisher.await;
    let stats = stats?;
    tracing::info!(applied = stats.applied, dead_lettered = stats.dead_lettered, "accountant stopped");
    Ok(())
}
