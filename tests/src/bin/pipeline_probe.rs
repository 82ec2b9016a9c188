//! A process built from the library's exactly-once building blocks, for tests that kill
//! it. Two modes:
//!
//! - `pg-sink`: budget-spend records into a PostgreSQL table, offsets in the same
//!   transaction (`guardian-pg`). With `--pause-at N`, once N records are written inside
//!   an open transaction it creates `--marker` and waits forever, so a test can SIGKILL it
//!   between the effect and the commit.
//! - `txn-copy`: budget-spend records copied (round + 1000) to another topic inside Kafka
//!   transactions. With `--pause-at N` it stops inside the transform of the N-th record,
//!   with the earlier outputs of the batch already sent in the open transaction.
//!
//! Runs until SIGTERM; prints its counters as one JSON line on a clean exit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use guardian_kafka::consumer::BatchPolicy;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{KafkaSettings, Outbound, ProcessError, Producer, TransactionalPipeline, Transform};
use guardian_pg::{PgEffect, PgOffsetConsumer};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::BudgetSpend;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use sqlx::PgConnection;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    dlq: String,
    #[arg(long)]
    pause_at: Option<u64>,
    #[arg(long)]
    marker: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    PgSink {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        table: String,
    },
    TxnCopy {
        #[arg(long)]
        output: String,
        #[arg(long)]
        transactional_id: String,
    },
}

struct Pause {
    at: Option<u64>,
    marker: Option<PathBuf>,
    seen: u64,
}

impl Pause {
    /// Counts records; true once the pause point is reached (marker written).
    fn reached(&mut self, records: u64) -> bool {
        let before = self.seen;
        self.seen += records;
        match self.at {
            Some(at) if before < at && self.seen >= at => {
                if let Some(marker) = &self.marker {
                    std::fs::write(marker, b"paused").expect("write marker");
                }
                true
            }
            _ => false,
        }
    }
}

struct Sink {
    codec: Codec,
    table: String,
    pause: Pause,
}

impl PgEffect for Sink {
    type Item = (BudgetSpend, String, i32, i64);

    fn prepare(&mut self, msg: &OwnedMessage) -> Result<Self::Item, ProcessError> {
        let spend: BudgetSpend = self.codec.decode(msg.payload().unwrap_or_default())?;
        Ok((spend, msg.topic().to_string(), msg.partition(), msg.offset()))
    }

    async fn apply(&mut self, tx: &mut PgConnection, items: &[Self::Item]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = items.iter().map(|i| i.0.event_id.as_str()).collect();
        let topics: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
        let parts: Vec<i32> = items.iter().map(|i| i.2).collect();
        let offsets: Vec<i64> = items.iter().map(|i| i.3).collect();
        // No unique constraint on purpose: a duplicate effect must be visible to the test.
        sqlx::query(&format!(
            "INSERT INTO {} (event_id, topic, partition, kafka_offset) SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])",
            self.table
        ))
        .bind(&ids)
        .bind(&topics)
        .bind(&parts)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        if self.pause.reached(items.len() as u64) {
            eprintln!("probe: paused inside an open transaction");
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

struct Copy {
    codec: Codec,
    output: String,
    pause: Pause,
}

impl Transform for Copy {
    fn transform(&mut self, msg: &OwnedMessage) -> Result<Vec<Outbound>, ProcessError> {
        let mut spend: BudgetSpend = self.codec.decode(msg.payload().unwrap_or_default())?;
        if self.pause.reached(1) {
            eprintln!("probe: paused inside an open transaction");
            std::thread::sleep(Duration::from_secs(3600));
        }
        spend.round += 1000;
        Ok(vec![Outbound {
            topic: self.output.clone(),
            key: Some(spend.event_id.clone().into_bytes()),
            payload: self.codec.encode(&spend).map_err(|e| ProcessError::Fatal(e.to_string()))?,
            headers: OwnedHeaders::new(),
        }])
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry = guardian_runtime::telemetry::init("pipeline-probe", Default::default());
    let shutdown = Shutdown::on_signals();
    let mut settings = KafkaSettings::new(&args.bootstrap, "pipeline-probe");
    // The tests SIGKILL this process: a dead member holds its partitions until its session
    // times out, so keep that short (the broker's minimum) to keep the tests quick.
    settings.overrides.insert("session.timeout.ms".into(), "6000".into());
    settings.overrides.insert("heartbeat.interval.ms".into(), "1000".into());
    let pause = Pause { at: args.pause_at, marker: args.marker.clone(), seen: 0 };
    let batch = BatchPolicy { max_records: 500, max_wait: Duration::from_millis(50) };
    match args.mode {
        Mode::PgSink { database_url, table } => {
            let pool = guardian_pg::connect(&database_url, 2).await?;
            sqlx::raw_sql(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (event_id text NOT NULL, topic text NOT NULL, partition int NOT NULL, kafka_offset bigint NOT NULL)"
            ))
            .execute(&pool)
            .await?;
            let dlq = DeadLetterSink::new(Producer::new(&settings)?, &args.dlq, &args.group);
            let consumer = PgOffsetConsumer::new(&settings, pool, &args.group, &[&args.input], dlq, batch).await?;
            let stats = consumer.run(&mut Sink { codec: Codec::embedded(), table, pause }, shutdown.wait()).await?;
            println!(
                "{{\"applied\":{},\"skipped\":{},\"dead_lettered\":{}}}",
                stats.applied, stats.skipped_already_applied, stats.dead_lettered
            );
        }
        Mode::TxnCopy { output, transactional_id } => {
            let pipeline =
                TransactionalPipeline::new(&settings, &args.group, &transactional_id, &[&args.input], &args.dlq, batch)
                    .await?;
            let stats = pipeline.run(&mut Copy { codec: Codec::embedded(), output, pause }, shutdown.wait()).await?;
            println!(
                "{{\"in\":{},\"out\":{},\"dead_lettered\":{},\"aborted\":{}}}",
                stats.records_in, stats.records_out, stats.dead_lettered, stats.aborted
            );
        }
    }
    Ok(())
}
