//! Reading topics by position (no consumer group): the aggregator and the agents follow
//! their round topics from the moment they start, the replay reads them from the
//! beginning to the end, the archiver and DR tools read fixed offset ranges.
//!
//! Nothing is committed: a reader's position lives in its caller. Metadata and offset
//! look-ups are blocking librdkafka calls and run off the async workers; errors are
//! [`KafkaClientError`]s (a missing topic is [`KafkaClientError::Topic`]).

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaClientError, KafkaSettings, blocking};

type Result<T, E = KafkaClientError> = std::result::Result<T, E>;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// One record as read.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// False for a record without a value (a tombstone); `payload` is then empty.
    pub has_value: bool,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a [`Tail`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At each partition's current end: only what is written from now on.
    End,
    /// At each partition's first retained record.
    Beginning,
}

/// Positions of a set of topics: (topic, partition) → offset.
pub type Positions = BTreeMap<(String, i32), i64>;

pub struct Tail {
    consumer: StreamConsumer,
    /// Never assigned: offset queries on the fetching consumer wait behind its long-poll
    /// fetches (up to fetch.wait.max.ms each).
    meta: Arc<StreamConsumer>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tail")
    }
}

/// The partitions of `topics`, from the cluster's metadata.
fn partitions_blocking(consumer: &StreamConsumer, topics: &[&str]) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for &topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| KafkaClientError::kafka("metadata request", e))?;
        let missing = || KafkaClientError::Topic { topic: topic.to_string(), error: "not found".into() };
        let t = md.topics().first().ok_or_else(missing)?;
        if let Some(e) = t.error() {
            return Err(KafkaClientError::Topic {
                topic: topic.to_string(),
                error: format!("does not exist or cannot be read ({e:?})"),
            });
        }
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    Ok(tpl)
}

/// One offsets-for-times request for every partition of `tpl`. `at` is a timestamp
/// (`Offset::Offset(ms)`), or `Beginning` / `End` for the watermarks. A partition with no
/// record at or after the timestamp answers `Offset::End`.
fn look_up_blocking(
    consumer: &StreamConsumer,
    tpl: &TopicPartitionList,
    at: Offset,
) -> Result<BTreeMap<(String, i32), Offset>> {
    let mut q = tpl.clone();
    q.set_all_offsets(at).map_err(|e| KafkaClientError::kafka("offset query", e))?;
    let found =
        consumer.offsets_for_times(q, METADATA_TIMEOUT).map_err(|e| KafkaClientError::kafka("offset look-up", e))?;
    Ok(found.elements().iter().map(|e| ((e.topic().to_string(), e.partition()), e.offset())).collect())
}

/// Low and high watermarks of every partition of `topics`, in two batched requests
/// (per-partition watermark queries cost a round trip each). Blocking: see
/// [`watermarks`] for the async form.
fn watermarks_blocking(consumer: &StreamConsumer, topics: &[&str]) -> Result<BTreeMap<(String, i32), (i64, i64)>> {
    let tpl = partitions_blocking(consumer, topics)?;
    let query = |at: Offset| -> Result<BTreeMap<(String, i32), i64>> {
        look_up_blocking(consumer, &tpl, at)?
            .into_iter()
            .map(|(tp, offset)| match offset {
                Offset::Offset(o) => Ok((tp, o)),
                other => Err(KafkaClientError::Topic {
                    topic: tp.0.clone(),
                    error: format!("partition {}: no offset ({other:?})", tp.1),
                }),
            })
            .collect()
    };
    // offsets_for_times takes OFFSET_BEGINNING (-2) and OFFSET_END (-1) as timestamps.
    let low = query(Offset::Beginning)?;
    let high = query(Offset::End)?;
    Ok(low
        .into_iter()
        .map(|(tp, lo)| {
            let hi = high.get(&tp).copied().unwrap_or(lo);
            (tp, (lo, hi))
        })
        .collect())
}

/// For each partition of `topics`, the first offset whose record timestamp is at or after
/// `timestamp_ms`, or the partition's end when none is. Records after that offset may
/// carry earlier timestamps (producers set them): this is where to start reading, not a
/// filter.
pub async fn positions_at_time(
    settings: &KafkaSettings,
    name: &str,
    topics: &[&str],
    timestamp_ms: i64,
) -> Result<Positions> {
    let consumer = Tail::consumer(settings, name)?;
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    blocking(move || {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let marks = watermarks_blocking(&consumer, &names)?;
        let tpl = partitions_blocking(&consumer, &names)?;
        let found = look_up_blocking(&consumer, &tpl, Offset::Offset(timestamp_ms.max(0)))?;
        Ok(marks
            .into_iter()
            .map(|(tp, (lo, hi))| {
                let at = match found.get(&tp) {
                    Some(Offset::Offset(o)) => (*o).clamp(lo, hi),
                    _ => hi,
                };
                (tp, at)
            })
            .collect())
    })
    .await?
}

/// [`watermarks_blocking`] off the async workers.
pub async fn watermarks(consumer: Arc<StreamConsumer>, topics: &[&str]) -> Result<BTreeMap<(String, i32), (i64, i64)>> {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    blocking(move || {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        watermarks_blocking(&consumer, &names)
    })
    .await?
}

impl Tail {
    fn consumer(settings: &KafkaSettings, name: &str) -> Result<StreamConsumer> {
        // A group id is required by librdkafka; nothing is ever committed under it.
        let mut config = settings.manual_commit_consumer(&format!("guardian-{name}-reader"));
        config.set("enable.partition.eof", "false");
        config.create().map_err(|e| KafkaClientError::kafka("creating a consumer", e))
    }

    /// Follows `topics` from `start`.
    pub async fn open(settings: &KafkaSettings, name: &str, topics: &[&str], start: Start) -> Result<Self> {
        let meta = Arc::new(Self::consumer(settings, name)?);
        let marks = watermarks(meta.clone(), topics).await?;
        let positions: Positions =
            marks.into_iter().map(|(tp, (lo, hi))| (tp, if start == Start::End { hi } else { lo })).collect();
        Self::assign(Self::consumer(settings, name)?, meta, &positions)
    }

    /// Follows the given partitions from the given offsets.
    pub fn open_at(settings: &KafkaSettings, name: &str, positions: &Positions) -> Result<Self> {
        Self::assign(Self::consumer(settings, name)?, Arc::new(Self::consumer(settings, name)?), positions)
    }

    fn assign(consumer: StreamConsumer, meta: Arc<StreamConsumer>, positions: &Positions) -> Result<Self> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| KafkaClientError::kafka("assigning a partition", e))?;
        }
        consumer.assign(&tpl).map_err(|e| KafkaClientError::kafka("assigning partitions", e))?;
        Ok(Tail { consumer, meta })
    }

    /// Current end offsets of `topics` (what has been written so far).
    pub async fn ends(&self, topics: &[&str]) -> Result<Positions> {
        Ok(watermarks(self.meta.clone(), topics).await?.into_iter().map(|(tp, (_, hi))| (tp, hi)).collect())
    }

    /// The next record, or None after `wait` without one.
    pub async fn next(&self, wait: Duration) -> Result<Option<Incoming>> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(KafkaClientError::kafka("reading", e)),
            Ok(Ok(m)) => {
                use rdkafka::message::Headers;
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default();
                Ok(Some(Incoming {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    has_value: m.payload().is_some(),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                }))
            }
        }
    }
}

/// Reads fixed ranges ((topic, partition) → [start, end)) in offset order per partition.
pub struct RangeReader {
    tail: Option<Tail>,
    ends: Positions,
    done: std::collections::BTreeSet<(String, i32)>,
    open: usize,
    idle_since: std::time::Instant,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader").field("open", &(self.open - self.done.len())).finish()
    }
}

impl RangeReader {
    pub fn open(settings: &KafkaSettings, name: &str, ranges: &BTreeMap<(String, i32), (i64, i64)>) -> Result<Self> {
        let positions: Positions =
            ranges.iter().filter(|(_, (a, b))| a < b).map(|(tp, (a, _))| (tp.clone(), *a)).collect();
        let tail = if positions.is_empty() { None } else { Some(Tail::open_at(settings, name, &positions)?) };
        Ok(RangeReader {
            tail,
            ends: ranges.iter().map(|(tp, (_, b))| (tp.clone(), *b)).collect(),
            done: std::collections::BTreeSet::new(),
            open: positions.len(),
            idle_since: std::time::Instant::now(),
        })
    }

    /// The next record of the ranges, or None once every range is read.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        let Some(tail) = &self.tail else { return Ok(None) };
        while self.done.len() < self.open {
            match tail.next(Duration::from_millis(300)).await? {
                Some(m) => {
                    self.idle_since = std::time::Instant::now();
                    let key = (m.topic.clone(), m.partition);
                    let Some(&end) = self.ends.get(&key) else { continue };
                    if m.offset + 1 >= end {
                        self.done.insert(key);
                    }
                    if m.offset < end {
                        return Ok(Some(m));
                    }
                }
                None => {
                    // A partition may end in transaction markers, which are never
                    // delivered: ask for the consumer's positions.
                    let assigned =
                        tail.consumer.position().map_err(|e| KafkaClientError::kafka("reading positions", e))?;
                    for e in assigned.elements() {
                        let key = (e.topic().to_string(), e.partition());
                        if let (Offset::Offset(p), Some(end)) = (e.offset(), self.ends.get(&key))
                            && p >= *end
                        {
                            self.done.insert(key);
                        }
                    }
                    if self.idle_since.elapsed() > Duration::from_secs(30) {
                        return Err(KafkaClientError::Internal(format!(
                            "timed out reading {} partitions to their end",
                            self.open - self.done.len()
                        )));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Low and high watermarks of `topics` through a short-lived client.
pub async fn topic_watermarks(
    settings: &KafkaSettings,
    name: &str,
    topics: &[&str],
) -> Result<BTreeMap<(String, i32), (i64, i64)>> {
    watermarks(Arc::new(Tail::consumer(settings, name)?), topics).await
}

/// The newest record timestamp of `topic` (its partitions' last records), `None` when it
/// has no records.
pub async fn newest_timestamp(settings: &KafkaSettings, name: &str, topic: &str) -> Result<Option<i64>> {
    let marks = topic_watermarks(settings, name, &[topic]).await?;
    let from: Positions = marks.iter().map(|(tp, (lo, hi))| (tp.clone(), (hi - 1).max(*lo))).collect();
    let last = read_range(settings, name, &[topic], Some(&from)).await?;
    Ok(last.iter().filter_map(|m| m.timestamp).max())
}

/// Every record of `topics` from `from` (or the beginning) up to their end at the time of
/// the call, partition by partition in offset order.
pub async fn read_range(
    settings: &KafkaSettings,
    name: &str,
    topics: &[&str],
    from: Option<&Positions>,
) -> Result<Vec<Incoming>> {
    let ranges: BTreeMap<(String, i32), (i64, i64)> = topic_watermarks(settings, name, topics)
        .await?
        .into_iter()
        .map(|(tp, (lo, hi))| (tp.clone(), (from.and_then(|f| f.get(&tp).copied()).unwrap_or(lo).max(lo), hi)))
        .collect();
    let mut reader = RangeReader::open(settings, name, &ranges)?;
    let mut out = Vec::new();
    while let Some(m) = reader.next().await? {
        out.push(m);
    }
    Ok(out)
}
