//! `guardian replay range | reset-group`: the ops tools for replays after a failover or
//! for chaos tests.
//!
//! `range` reads a range of a topic (by offset or time, per partition or all) with
//! `read_committed` and writes each record, key, value and headers kept, to a topic
//! through the idempotent producer, adding `guardian.replay.source` =
//! `topic/partition/offset` so consumers and audits can tell replayed records. Records
//! keep their partition when the key decides it (same key, same partitioner). The range
//! ends are fixed when the replay starts, so a replay into its own source topic ends.
//! Progress (records, rate, ETA) goes to stderr every second.
//!
//! `reset-group` moves a consumer group's committed offsets of a topic to the first record
//! at or after a time; it refuses while the group has live members (they would overwrite
//! the reset at their next commit) unless forced.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use guardian_kafka::{KafkaSettings, Producer};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use guardian_topics::ServiceId;

use crate::{DrError, RangeArgs, ReplayCommand};

type Result<T, E = DrError> = std::result::Result<T, E>;

macro_rules! refuse {
    ($($arg:tt)*) => { return Err(DrError::Refused(format!($($arg)*))) };
}

/// The header that marks a replayed record: `topic/partition/offset` of the original.
pub const REPLAY_SOURCE_HEADER: &str = "guardian.replay.source";

const TIMEOUT: Duration = Duration::from_secs(10);

/// [start, end) of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    partition: i32,
    start: i64,
    end: i64,
}

impl Span {
    pub fn records(&self) -> i64 {
        (self.end - self.start).max(0)
    }
}

pub fn consumer(settings: &KafkaSettings, group: &str) -> Result<BaseConsumer> {
    settings.manual_commit_consumer(group).create().map_err(|e| DrError::kafka("creating the consumer", e))
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| DrError::kafka("reading metadata", e))?;
    let Some(t) = md.topics().first() else { refuse!("topic {topic} not found") };
    if t.error().is_some() || t.partitions().is_empty() {
        refuse!("topic {topic} does not exist");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// The offset of the first record at or after `time_ms` in each partition (the end of the
/// partition when there is none).
fn offsets_at(consumer: &BaseConsumer, topic: &str, partitions: &[i32], time_ms: i64) -> Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(time_ms))
            .map_err(|e| DrError::kafka("listing offsets", e))?;
    }
    let found =
        consumer.offsets_for_times(tpl, TIMEOUT).map_err(|e| DrError::kafka("looking offsets up by time", e))?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => {
                consumer
                    .fetch_watermarks(topic, e.partition(), TIMEOUT)
                    .map_err(|e| DrError::kafka("reading watermarks", e))?
                    .1
            }
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

pub fn spans(consumer: &BaseConsumer, topic: &str, range: &RangeArgs) -> Result<Vec<Span>> {
    let all = partitions_of(consumer, topic)?;
    let selected = if range.partitions.is_empty() { all.clone() } else { range.partitions.clone() };
    if let Some(p) = selected.iter().find(|p| !all.contains(p)) {
        refuse!("topic {topic} has no partition {p} (it has {})", all.len());
    }
    let from_time = range.from_time.map(|t| offsets_at(consumer, topic, &selected, t)).transpose()?;
    let to_time = range.to_time.map(|t| offsets_at(consumer, topic, &selected, t)).transpose()?;
    let mut out = Vec::new();
    for p in selected {
        let (low, high) =
            consumer.fetch_watermarks(topic, p, TIMEOUT).map_err(|e| DrError::kafka("reading watermarks", e))?;
        let start = from_time.as_ref().map(|m| m[&p]).or(range.from_offset).unwrap_or(low).clamp(low, high);
        let end = to_time.as_ref().map(|m| m[&p]).or(range.to_offset).unwrap_or(high).clamp(low, high);
        out.push(Span { partition: p, start, end: end.max(start) });
    }
    Ok(out)
}

/// Runs one replay command.
pub async fn run(cmd: ReplayCommand) -> Result<ExitCode> {
    let client = ServiceId::Ops.client_for("replay");
    match cmd {
        ReplayCommand::Range { kafka, from_topic, to_topic, range, dry_run } => {
            let settings = kafka.settings(&client);
            kafka.admin(&client).await?; // one clear error when the cluster is away
            let group = ServiceId::Ops.group_for(&format!("replay-{}", std::process::id()));
            let consumer = consumer(&settings, &group)?;
            partitions_of(&consumer, &to_topic)?;
            let spans = spans(&consumer, &from_topic, &range)?;
            let total: i64 = spans.iter().map(Span::records).sum();
            for s in &spans {
                println!("{from_topic}[{}]: offsets {}..{} ({} records)", s.partition, s.start, s.end, s.records());
            }
            if dry_run {
                println!("replay: {total} record(s) would be written to {to_topic} (dry run, nothing written)");
                return Ok(ExitCode::SUCCESS);
            }
            let transactional_id = ServiceId::Ops.transactional_id(&format!("replay-{}", std::process::id()));
            let producer = producer(&settings, &transactional_id).await?;
            let written = copy(&consumer, &producer, &from_topic, &to_topic, &spans, total).await?;
            println!("replay: {written} record(s) written to {to_topic}");
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::ResetGroup { kafka, group, topic, to_time, force, dry_run } => {
            let settings = kafka.settings(&client);
            kafka.admin(&client).await?;
            let consumer = consumer(&settings, &group)?;
            let groups = consumer
                .fetch_group_list(Some(&group), TIMEOUT)
                .map_err(|e| DrError::kafka("describing the group", e))?;
            let members = groups.groups().first().map(|g| g.members().len()).unwrap_or(0);
            if members > 0 && !force {
                refuse!(
                    "group {group} has {members} live member(s): stop them first (they would overwrite the reset), \
                     or pass --force"
                );
            }
            let partitions = partitions_of(&consumer, &topic)?;
            let offsets = offsets_at(&consumer, &topic, &partitions, to_time)?;
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &offsets {
                println!("{group} {topic}[{p}] -> offset {o}");
                tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                    .map_err(|e| DrError::kafka("listing offsets", e))?;
            }
            if dry_run {
                println!("reset: dry run, nothing committed");
                return Ok(ExitCode::SUCCESS);
            }
            consumer.commit(&tpl, CommitMode::Sync).map_err(|e| DrError::kafka("committing the new offsets", e))?;
            println!("reset: {} partition(s) of {topic} moved for group {group}", offsets.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Records of one replay transaction at most: `read_committed` readers see a replay in
/// steps of this size (or of [`COMMIT_EVERY`]), and a failed replay loses at most this
/// much (aborted, never half-visible).
const COMMIT_RECORDS: u64 = 1_000_000;
/// Time of one replay transaction at most.
const COMMIT_EVERY: Duration = Duration::from_secs(5);

/// The producer of a replay: transactional, under an id of the ops principal's (one per
/// replay). Transactional for two reasons: a replay that fails part-way leaves whole
/// transactions behind, never a torn one, and a transactional producer gets its producer
/// id at once, where an idempotent one waits 500 ms first (longer than a replay of
/// 300,000 records takes to copy them here).
pub async fn producer(settings: &KafkaSettings, transactional_id: &str) -> Result<Producer> {
    Ok(Producer::transactional(settings, transactional_id).await?)
}

/// Reads the spans and writes them to `to_topic` through `producer` (from [`producer`]);
/// returns how many records were written (all committed). On an error the open
/// transaction is aborted: the records before it stay written, none after.
pub async fn copy(
    consumer: &BaseConsumer,
    producer: &Producer,
    from_topic: &str,
    to_topic: &str,
    spans: &[Span],
    total: i64,
) -> Result<i64> {
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.records() > 0) {
        tpl.add_partition_offset(from_topic, s.partition, Offset::Offset(s.start))
            .map_err(|e| DrError::kafka("listing offsets", e))?;
        ends.insert(s.partition, s.end);
    }
    consumer.assign(&tpl).map_err(|e| DrError::kafka("assigning partitions", e))?;
    let started = Instant::now();
    let mut written = 0i64;
    match copy_in_transactions(consumer, producer, from_topic, to_topic, ends, total, started, &mut written).await {
        Ok(()) => {
            report(written, total, started);
            Ok(written)
        }
        Err(e) => {
            if let Err(abort) = producer.abort().await {
                eprintln!("replay: aborting the open transaction failed too: {abort}");
            }
            eprintln!("replay: {written} record(s) committed to {to_topic} before the error");
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_in_transactions(
    consumer: &BaseConsumer,
    producer: &Producer,
    from_topic: &str,
    to_topic: &str,
    mut ends: BTreeMap<i32, i64>,
    total: i64,
    started: Instant,
    written: &mut i64,
) -> Result<()> {
    let mut last_report = Instant::now();
    producer.begin()?;
    let mut batch = producer.batch(to_topic);
    let mut in_transaction = 0u64;
    let mut transaction_started = Instant::now();
    let mut source = String::new();
    while !ends.is_empty() {
        let msg = match consumer.poll(Duration::from_millis(200)) {
            Some(Err(e)) => return Err(DrError::kafka("reading", e)),
            Some(Ok(m)) => m,
            None => {
                // Nothing new: a partition whose position passed its end is done (a
                // transaction marker at the end is never delivered as a record).
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements_for_topic(from_topic) {
                        if let (Offset::Offset(pos), Some(end)) = (e.offset(), ends.get(&e.partition()))
                            && pos >= *end
                        {
                            ends.remove(&e.partition());
                        }
                    }
                }
                continue;
            }
        };
        let Some(&end) = ends.get(&msg.partition()) else { continue };
        if msg.offset() >= end {
            continue;
        }
        if msg.offset() + 1 >= end {
            ends.remove(&msg.partition());
        }
        source.clear();
        let _ = write!(source, "{from_topic}/{}/{}", msg.partition(), msg.offset());
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        headers = headers.insert(Header { key: REPLAY_SOURCE_HEADER, value: Some(source.as_bytes()) });
        batch.push(None, msg.key(), Some(msg.payload().unwrap_or_default()), Some(headers)).await?;
        in_transaction += 1;
        // Clocks are read once per 1,024 records: a read per record showed in profiles.
        if in_transaction.is_multiple_of(1024) {
            if in_transaction >= COMMIT_RECORDS || transaction_started.elapsed() >= COMMIT_EVERY {
                let delivered = batch.finish().await? as i64;
                producer.commit().await?;
                *written += delivered;
                producer.begin()?;
                batch = producer.batch(to_topic);
                in_transaction = 0;
                transaction_started = Instant::now();
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                report(*written + (batch.delivered() + batch.outstanding()) as i64, total, started);
                last_report = Instant::now();
            }
        }
    }
    let last = batch.finish().await? as i64;
    producer.commit().await?;
    *written += last;
    Ok(())
}

fn report(done: i64, total: i64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 { (total - done).max(0) as f64 / rate } else { f64::NAN };
    eprintln!("replay: {done}/{total} records, {rate:.0} records/s, ETA {eta:.0} s");
}
