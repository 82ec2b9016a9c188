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
            let written = copy(consumer, &settings, &from_topic, &to_topic, &spans, total).await?;
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

/// Reads the spans and writes them to `to_topic`; returns how many records were written.
pub async fn copy(
    consumer: BaseConsumer,
    settings: &KafkaSettings,
    from_topic: &str,
    to_topic: &str,
    spans: &[Span],
    total: i64,
) -> Result<i64> {
    let producer = Producer::new(settings)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.records() > 0) {
        tpl.add_partition_offset(from_topic, s.partition, Offset::Offset(s.start))
            .map_err(|e| DrError::kafka("listing offsets", e))?;
        ends.insert(s.partition, s.end);
    }
    consumer.assign(&tpl).map_err(|e| DrError::kafka("assigning partitions", e))?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut batch = producer.batch(to_topic);
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
        let source = format!("{from_topic}/{}/{}", msg.partition(), msg.offset());
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        headers = headers.insert(Header { key: REPLAY_SOURCE_HEADER, value: Some(source.as_bytes()) });
        batch.push(None, msg.key(), Some(msg.payload().unwrap_or_default()), Some(headers)).await?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            report((batch.delivered() + batch.outstanding()) as i64, total, started);
            last_report = Instant::now();
        }
    }
    let written = batch.finish().await? as i64;
    report(written, total, started);
    Ok(written)
}

fn report(done: i64, total: i64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 { (total - done).max(0) as f64 / rate } else { f64::NAN };
    eprintln!("replay: {done}/{total} records, {rate:.0} records/s, ETA {eta:.0} s");
}
