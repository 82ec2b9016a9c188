//! A leader lease: the members of one consumer group subscribe to a one-partition topic,
//! and the member the group assigns that partition holds the lease. At most one member
//! is assigned it at a time; a member that stops heartbeating (killed, paused, cut off)
//! loses it once its session times out, and the group gives it to another.
//!
//! A lease alone does not stop a paused holder from acting when it wakes up: pair it with
//! a transactional producer whose id the new holder initialises (fencing the old one), as
//! the federated aggregator does.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::{KafkaClientError, KafkaSettings};

type Result<T, E = KafkaClientError> = std::result::Result<T, E>;

/// How long a holder may go without a heartbeat before the group gives its lease to
/// another member (the brokers' default minimum session timeout).
pub const LEASE_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// A held lease; dropping it leaves the group, and another member takes it at once.
/// While held, a task keeps polling the group (a member that stops polling for
/// `max.poll.interval.ms` is put out of it) and logs when the lease is lost.
#[derive(Debug)]
pub struct Lease {
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Joins `group` on `topic` (which must have one partition) and waits until this
    /// member holds the lease. `waiting` is called once if another member holds it.
    pub async fn acquire(settings: &KafkaSettings, group: &str, topic: &str, waiting: impl FnOnce()) -> Result<Lease> {
        let mut config = settings.manual_commit_consumer(group);
        config
            .set("session.timeout.ms", LEASE_SESSION_TIMEOUT.as_millis().to_string())
            .set("heartbeat.interval.ms", "500")
            .set("auto.offset.reset", "latest")
            // Sticky: a member that joins later (a new standby) never takes the partition
            // from the member holding it.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.partition.eof", "false");
        let consumer: StreamConsumer =
            config.create().map_err(|e| KafkaClientError::kafka("creating a consumer", e))?;
        let partitions = crate::reader::topic_watermarks(settings, group, &[topic]).await?.len();
        if partitions != 1 {
            return Err(KafkaClientError::Topic {
                topic: topic.into(),
                error: format!("a lease needs a topic of one partition, it has {partitions}"),
            });
        }
        consumer.subscribe(&[topic]).map_err(|e| KafkaClientError::kafka("subscribing", e))?;
        let assigned = |c: &StreamConsumer| c.assignment().map(|a| a.count() > 0).unwrap_or(false);
        let mut waiting = Some(waiting);
        let started = std::time::Instant::now();
        while !assigned(&consumer) {
            // Polling serves the group's rebalance events; the records are not needed.
            let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
            if !assigned(&consumer)
                && started.elapsed() > Duration::from_secs(5)
                && let Some(w) = waiting.take()
            {
                w();
            }
        }
        let task = tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
                if !assigned(&consumer) {
                    tracing::warn!("the lease is lost: another member of the group holds it");
                    return;
                }
            }
        });
        Ok(Lease { task })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}
