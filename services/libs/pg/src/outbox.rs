//! The transactional outbox: records a service commits together with its effects, sent
//! to Kafka after the commit, in the order they were written, then deleted.
//!
//! The publisher ([`Outbox::run_exactly_once`]) sends each round of rows as one Kafka
//! transaction, every record carrying its row id (header `guardian-outbox-id`). One
//! instance publishes at a time (a PostgreSQL advisory lock); when it starts, its
//! transactional id fences any earlier incarnation and aborts its open transaction, and
//! the rows already committed to the topics are deleted instead of sent again: exactly
//! the ids found at the topics' ends (read committed), never "every id up to the highest
//! found". Rows are sent in id order, but with several writers (service instances) ids do
//! not follow commit order: a row with a lower id may commit after a higher one was sent,
//! and must still be sent. Only the last transaction's rows can be in the topic and still
//! in the table (each transaction's rows are deleted before the next begins), so the last
//! [`RECOVERY_WINDOW`] offsets of each partition hold them all. `read_committed` readers
//! see each row exactly once.

use std::sync::Arc;
use std::time::Duration;

use guardian_kafka::{GuardianContext, KafkaClientError, KafkaSettings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Kafka(#[from] KafkaClientError),
}

/// An outbox table and where each kind of its rows goes.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Table name (a trusted identifier chosen by the service, never user input).
    pub table: &'static str,
    /// (kind, topic) pairs; rows of other kinds go to the first topic.
    pub routes: Vec<(&'static str, String)>,
}

impl Outbox {
    /// The table; `traceparent` (the W3C trace context a row was written in, if any) was
    /// added later, hence its own statement.
    pub fn ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id      bigserial PRIMARY KEY,
                kind    text  NOT NULL,
                key     text  NOT NULL,
                payload bytea NOT NULL
            );
            ALTER TABLE {t} ADD COLUMN IF NOT EXISTS traceparent text",
            t = self.table
        )
    }

    /// Adds a row inside the caller's transaction.
    pub async fn push(&self, tx: &mut PgConnection, kind: &str, key: &str, payload: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("INSERT INTO {} (kind, key, payload) VALUES ($1, $2, $3)", self.table))
            .bind(kind)
            .bind(key)
            .bind(payload)
            .execute(tx)
            .await
            .map(|_| ())
    }

    /// Adds rows of one kind inside the caller's transaction, in one statement, in order,
    /// each with the `traceparent` its record is to continue (one per key, or none at all).
    pub async fn push_many(
        &self,
        tx: &mut PgConnection,
        kind: &str,
        keys: &[String],
        payloads: &[Vec<u8>],
        traceparents: &[Option<String>],
    ) -> Result<(), sqlx::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let untraced;
        let traceparents = if traceparents.is_empty() {
            untraced = vec![None; keys.len()];
            &untraced
        } else {
            traceparents
        };
        sqlx::query(&format!(
            "INSERT INTO {} (kind, key, payload, traceparent)
             SELECT $1, k, p, t FROM unnest($2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY AS x(k, p, t, n)
             ORDER BY n",
            self.table
        ))
        .bind(kind)
        .bind(keys)
        .bind(payloads)
        .bind(traceparents)
        .execute(tx)
        .await
        .map(|_| ())
    }

    fn topic(&self, kind: &str) -> &str {
        self.routes.iter().find(|(k, _)| *k == kind).or(self.routes.first()).map_or("", |(_, t)| t.as_str())
    }
}

/// The header that carries an outbox row's id on the exactly-once path.
pub const OUTBOX_ID_HEADER: &str = "guardian-outbox-id";

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, OutboxError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| OutboxError::Kafka(KafkaClientError::Handler(e.to_string())))
}

fn kafka(what: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> OutboxError {
    move |e| OutboxError::Kafka(KafkaClientError::kafka(what, e))
}

impl Outbox {
    /// Exactly-once publishing (see the module's docs) until `shutdown`, woken after
    /// commits and every second; errors are logged and the publisher starts again.
    pub async fn run_exactly_once(
        self,
        pool: PgPool,
        settings: KafkaSettings,
        transactional_id: String,
        wake: Arc<Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.lead(&pool, &settings, &transactional_id, &wake, shutdown.as_mut()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, table = self.table, "exactly-once outbox publisher failed, starting again")
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Waits for the publisher's lock, recovers, then publishes until an error or
    /// `shutdown` (Ok, after a last round: nothing committed is left behind).
    async fn lead(
        &self,
        pool: &PgPool,
        settings: &KafkaSettings,
        transactional_id: &str,
        wake: &Notify,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), OutboxError> {
        // A connection of its own, closed (releasing the lock) however this ends.
        let mut lock = pool.acquire().await?.detach();
        loop {
            // One lock per schema and table.
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended(current_schema() || '.' || $1, 0))")
                    .bind(self.table)
                    .fetch_one(&mut lock)
                    .await?;
            if got {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let producer: Arc<ThreadedProducer<GuardianContext>> = Arc::new(
            settings
                .transactional_producer(transactional_id)
                .create_with_context(GuardianContext::new(format!("{}-outbox", settings.client_id)))
                .map_err(kafka("creating the outbox producer"))?,
        );
        let p = producer.clone();
        blocking(move || p.init_transactions(TXN_TIMEOUT)).await?.map_err(kafka("init transactions"))?;
        let committed = self.committed_ids(settings).await?;
        if !committed.is_empty() {
            let gone = sqlx::query(&format!("DELETE FROM {} WHERE id = ANY($1)", self.table))
                .bind(&committed)
                .execute(pool)
                .await?;
            tracing::info!(
                table = self.table,
                found = committed.len(),
                rows = gone.rows_affected(),
                "outbox rows already in Kafka let go"
            );
        }
        loop {
            self.publish_transactions(pool, &producer).await?;
            tokio::select! {
                _ = &mut shutdown => return self.publish_transactions(pool, &producer).await,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Sends pending rows, up to [`ROWS_PER_TRANSACTION`] per Kafka transaction, deleting
    /// them after each commit.
    // librdkafka hands a refused record back inside the error, whatever its size.
    #[allow(clippy::result_large_err)]
    async fn publish_transactions(
        &self,
        pool: &PgPool,
        producer: &Arc<ThreadedProducer<GuardianContext>>,
    ) -> Result<(), OutboxError> {
        loop {
            let rows = sqlx::query(&format!(
                "SELECT id, kind, key, payload, traceparent FROM {} ORDER BY id LIMIT {ROWS_PER_TRANSACTION}",
                self.table
            ))
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            producer.begin_transaction().map_err(kafka("begin transaction"))?;
            for r in &rows {
                let id: i64 = r.get(0);
                let key: &str = r.get(2);
                let payload: &[u8] = r.get(3);
                let id_text = id.to_string();
                let mut headers =
                    OwnedHeaders::new().insert(Header { key: OUTBOX_ID_HEADER, value: Some(id_text.as_str()) });
                // A row written in a trace is published in a span of that trace, which the
                // record's headers carry on.
                if let Some(traceparent) = r.get::<Option<&str>, _>(4) {
                    let span = tracing::info_span!(
                        "outbox.publish",
                        messaging.destination = self.topic(r.get(1)),
                        outbox.id = id
                    );
                    guardian_kafka::trace::continue_stored(&span, traceparent);
                    headers = guardian_kafka::trace::inject_span(&span, headers);
                }
                let record = BaseRecord::to(self.topic(r.get::<&str, _>(1)))
                    .key(key.as_bytes())
                    .payload(payload)
                    .headers(headers);
                guardian_kafka::outbound::enqueue(record, |r| producer.send(r)).await.map_err(kafka("produce"))?;
            }
            let p = producer.clone();
            if let Err(e) = blocking(move || p.commit_transaction(TXN_TIMEOUT)).await? {
                let p = producer.clone();
                let _ = blocking(move || p.abort_transaction(TXN_TIMEOUT)).await;
                return Err(kafka("commit transaction")(e));
            }
            sqlx::query(&format!("DELETE FROM {} WHERE id = ANY($1)", self.table)).bind(&ids).execute(pool).await?;
        }
    }

    /// The row ids in the last [`RECOVERY_WINDOW`] offsets of every partition of the
    /// outbox's topics (read committed).
    async fn committed_ids(&self, settings: &KafkaSettings) -> Result<Vec<i64>, OutboxError> {
        let mut config = settings.manual_commit_consumer(&format!("{}-outbox-recovery", settings.client_id));
        config.set("enable.partition.eof", "true");
        let consumer: StreamConsumer = config.create().map_err(kafka("creating the recovery reader"))?;
        let mut topics: Vec<&str> = self.routes.iter().map(|(_, t)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let mut ids = Vec::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(kafka("reading the topic's partitions"))?;
            let partitions: Vec<i32> =
                metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
            for partition in partitions {
                let (lo, hi) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map_err(kafka("reading watermarks"))?;
                let from = (hi - RECOVERY_WINDOW).max(lo);
                if from < hi {
                    ids.extend(read_ids(&consumer, topic, partition, from).await?);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// Offsets read back from each partition's end at recovery: the last transaction's rows
/// (at most [`ROWS_PER_TRANSACTION`]), the aborted transaction a fenced publisher may have
/// left behind them (as many) and the transaction markers, with room to spare.
pub const RECOVERY_WINDOW: i64 = 4 * ROWS_PER_TRANSACTION as i64;

/// Rows a publisher sends in one Kafka transaction.
pub const ROWS_PER_TRANSACTION: usize = 500;

/// The outbox ids in `topic`/`partition` from `from` to the end (read committed).
async fn read_ids(consumer: &StreamConsumer, topic: &str, partition: i32, from: i64) -> Result<Vec<i64>, OutboxError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(kafka("assigning"))?;
    consumer.assign(&tpl).map_err(kafka("assigning"))?;
    let mut ids = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.map_err(|_| {
            OutboxError::Kafka(KafkaClientError::Handler(format!("reading the end of {topic}/{partition} timed out")))
        })?;
        match msg {
            Ok(m) => {
                let id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == OUTBOX_ID_HEADER)
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
                });
                ids.extend(id);
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => return Ok(ids),
            Err(e) => return Err(kafka("reading the topic's end")(e)),
        }
    }
}
