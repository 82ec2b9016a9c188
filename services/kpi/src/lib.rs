//! The KPI rollup service: encounters and SLO events in, per-hospital minute / hour / day
//! windows out, exactly once in PostgreSQL (offsets in the same transaction, event ids
//! deduplicated) and, through an outbox published in Kafka transactions, exactly once on
//! the compacted rollup topic.

pub mod config;
pub mod dedup;
pub mod metrics;
pub mod store;

pub use guardian_rollups::{readiness, window};

use std::sync::Arc;

use guardian_kafka::consumer::BatchPolicy;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{KafkaClientError, KafkaSettings, Producer};
use guardian_pg::{PgConnectError, PgOffsetConsumer};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_topics::{ServiceId, TopicId};
use sqlx::PgPool;

pub use config::{KpiArgs, KpiConfig};

#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaSettings,
    pub group: String,
    pub encounters_topic: String,
    pub slo_topic: String,
    pub rollups_topic: String,
    pub dead_letter_topic: String,
    /// How late (event time behind the hospital's newest) a record may be and still count
    /// as on time for its window; later ones take the correction path.
    pub lateness_ms: i64,
    /// How far an event time may run ahead of its record's timestamp (later: dead-lettered
    /// as "future").
    pub max_skew_ms: i64,
    /// When set, every encounter and availability event must be signed by the hospital it
    /// names (others are dead-lettered as "forged").
    pub signers: Option<guardian_kafka::signing::Signers>,
    /// Event digests kept in memory for deduplication (16 bytes each plus the set's
    /// overhead); days used least recently are read again from PostgreSQL when needed.
    pub dedup_cache_events: usize,
    /// Days of event digests kept behind each hospital's newest event (0: all); records
    /// older than that are dead-lettered, as they could not be told from replays.
    pub dedup_horizon_days: u32,
}

/// The default of [`Config::max_skew_ms`].
pub use guardian_kafka::event_time::DEFAULT_MAX_SKEW_MS;

/// The default of [`Config::dedup_horizon_days`].
pub const DEFAULT_DEDUP_HORIZON_DAYS: u32 = 90;

/// The default of [`Config::dedup_cache_events`]: about 100 MB.
pub const DEFAULT_DEDUP_CACHE_EVENTS: usize = 2_000_000;

/// Batches of up to 20,000 records or 100 ms: one transaction each.
pub const BATCH: BatchPolicy = BatchPolicy { max_records: 20_000, max_wait: std::time::Duration::from_millis(100) };

#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Connect(#[from] PgConnectError),
}

/// The KPI tables a hospital's tenant role reads (its own rows only, by row-level
/// security).
pub const TENANT_TABLES: [&str; 2] = guardian_rollups::tables::TENANT_TABLES;

/// Every table and view of the KPI service (the outbox, named by its topic, is created by
/// [`run`]): rollups, deduplication, the hospital registry and the aggregate view.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    guardian_pg::apply_ddl(pool, store::DDL).await?;
    guardian_pg::apply_ddl(pool, dedup::DDL).await?;
    guardian_pg::apply_ddl(pool, readiness::REGISTRY_DDL).await?;
    guardian_pg::apply_ddl(pool, store::AGGREGATE_VIEW_DDL).await
}

/// The topics the service reads and writes: it refuses to start without them.
pub const NEEDED: [TopicId; 4] = [TopicId::Encounters, TopicId::SloEvents, TopicId::KpiRollups, TopicId::DeadLetter];

/// The service process: the ops endpoint on `config.listen`, the topic check, the
/// database, then [`run`] until `shutdown`.
pub async fn serve(config: KpiConfig, shutdown: Shutdown) -> Result<guardian_pg::PgRunStats, KpiError> {
    let ops = guardian_runtime::http::serve_ops(ServiceId::Kpi.name(), config.listen, None, &shutdown).await?;
    let catalogue = config.kafka.checked_catalogue(ServiceId::Kpi, &NEEDED).await?;
    let signers =
        guardian_kafka::signing::Signers::load_optional(config.signers.as_deref()).map_err(KpiError::Config)?;
    let pool = guardian_pg::connect(&config.database_url, 4).await?;
    let run_config = Config {
        kafka: config.kafka.settings(&ServiceId::Kpi.client_id()),
        group: config.group,
        encounters_topic: catalogue.topic(TopicId::Encounters)?,
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        rollups_topic: catalogue.topic(TopicId::KpiRollups)?,
        dead_letter_topic: catalogue.topic(TopicId::DeadLetter)?,
        lateness_ms: config.lateness_ms,
        max_skew_ms: config.max_skew_ms,
        signers,
        dedup_cache_events: config.dedup_cache_events,
        dedup_horizon_days: config.dedup_horizon_days,
    };
    tracing::info!(metrics = %format!("http://{}/metrics", ops.bound), encounters = %run_config.encounters_topic, "kpi rollup starting");
    ops.readiness.set_ready(true);
    run(run_config, pool, shutdown).await
}

/// Runs until `shutdown`; returns the consumer's counts.
pub async fn run(config: Config, pool: PgPool, shutdown: Shutdown) -> Result<guardian_pg::PgRunStats, KpiError> {
    store::migrate(&pool, &config.rollups_topic).await?;
    let producer = Producer::new(&config.kafka)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let outbox = store::outbox(&config.rollups_topic);
    // Rollups reach the compacted topic exactly once: Kafka transactions under an id of
    // the group's (a principal's transactional ids start with its name).
    let publisher = tokio::spawn(outbox.clone().run_exactly_once(
        pool.clone(),
        config.kafka.clone(),
        format!("{}-outbox-{}", config.group, config.rollups_topic),
        wake.clone(),
        shutdown.wait(),
    ));
    let dlq = DeadLetterSink::new(producer, &config.dead_letter_topic, &config.group);
    let newest = store::watermarks(&pool).await?;
    let consumer = PgOffsetConsumer::new(
        &config.kafka,
        pool,
        &config.group,
        &[&config.encounters_topic, &config.slo_topic],
        dlq,
        BATCH,
    )
    .await?;
    let mut effect = store::Rollups {
        codec: Codec::embedded(),
        encounters_topic: config.encounters_topic.clone(),
        lateness_ms: config.lateness_ms,
        max_skew_ms: config.max_skew_ms,
        signers: config.signers.clone(),
        outbox,
        committed: Some(wake),
        seen: store::Seen::new(config.dedup_cache_events),
        horizon_days: (config.dedup_horizon_days > 0).then_some(i64::from(config.dedup_horizon_days)),
        newest,
        pending_newest: Default::default(),
    };
    let stats = consumer.run(&mut effect, shutdown.wait()).await;
    shutdown.trigger();
    let _ = publisher.await;
    let stats = stats?;
    tracing::info!(applied = stats.applied, dead_lettered = stats.dead_lettered, "kpi rollup stopped");
    Ok(stats)
}
