//! Client settings. User overrides come first; the keys that decide delivery guarantees
//! are applied last so no override can weaken them (a warning names any that tried).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Where and how to reach Kafka, shared by every client of a service.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Prefix of client ids, e.g. the service name.
    pub client_id: String,
    /// Extra librdkafka keys (security, tuning). Safety keys here are ignored.
    pub overrides: BTreeMap<String, String>,
}

/// Keys whose value the library decides, per client kind.
/// How long a transaction call (init, offsets, commit, abort) may take.
pub(crate) const TXN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const SAFETY_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
];

fn is_consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("queued.")
        || key.starts_with("group.")
        || matches!(
            key,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "auto.offset.reset"
                | "auto.commit.interval.ms"
                | "partition.assignment.strategy"
                | "max.partition.fetch.bytes"
        )
}

fn is_producer_only(key: &str) -> bool {
    key.starts_with("batch.")
        || key.starts_with("queue.buffering.")
        || matches!(
            key,
            "linger.ms"
                | "message.timeout.ms"
                | "delivery.timeout.ms"
                | "transaction.timeout.ms"
                | "compression.type"
                | "compression.codec"
                | "partitioner"
        )
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: client_id.into(),
            overrides: BTreeMap::new(),
        }
    }

    /// The same settings with consumers that prefetch at most `bytes` (librdkafka's local
    /// queue and each fetch response; 64 MB and 50 MB by default), for a process whose
    /// memory matters more than its read-ahead. Overrides the user set win.
    pub fn with_fetch_buffer(&self, bytes: usize) -> KafkaSettings {
        let mut s = self.clone();
        let kbytes = (bytes / 1024).max(1024);
        s.overrides.entry("queued.max.messages.kbytes".into()).or_insert_with(|| kbytes.to_string());
        s.overrides.entry("fetch.max.bytes".into()).or_insert_with(|| (kbytes * 1024).to_string());
        s
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", format!("{}-{role}", self.client_id));
        // Statistics feed the lag and queue metrics.
        c.set("statistics.interval.ms", "10000");
        for (k, v) in &self.overrides {
            if SAFETY_KEYS.contains(&k.as_str()) {
                tracing::warn!(key = %k, "ignoring override of a safety-critical kafka setting");
                continue;
            }
            // One set of overrides serves every client of a service: a consumer key on a
            // producer (or the reverse) only makes librdkafka warn.
            if (role != "consumer" && is_consumer_only(k)) || (role != "producer" && is_producer_only(k)) {
                continue;
            }
            c.set(k, v);
        }
        c
    }

    /// An idempotent producer: no duplicates or reordering on retry, acknowledged by every
    /// in-sync replica.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.base("producer");
        if !self.overrides.contains_key("linger.ms") {
            // A few milliseconds of batching buys an order of magnitude of throughput.
            c.set("linger.ms", "5");
        }
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        c
    }

    /// A transactional producer for consume-transform-produce.
    pub fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.producer();
        if !self.overrides.contains_key("transaction.timeout.ms") {
            // An abandoned transaction blocks read_committed readers until it times out.
            c.set("transaction.timeout.ms", "30000");
        }
        c.set("transactional.id", transactional_id);
        c
    }

    /// A transactional producer under `transactional_id` with `context`, its transactions
    /// initialised off the async workers (an earlier holder of the id is fenced and its
    /// open transaction aborted).
    pub(crate) async fn init_transactional_producer<C: rdkafka::producer::ProducerContext + 'static>(
        &self,
        transactional_id: &str,
        context: C,
    ) -> Result<std::sync::Arc<rdkafka::producer::ThreadedProducer<C>>, crate::KafkaClientError> {
        use rdkafka::producer::Producer as _;
        let producer: rdkafka::producer::ThreadedProducer<C> = self
            .transactional_producer(transactional_id)
            .create_with_context(context)
            .map_err(|e| crate::KafkaClientError::Config(e.to_string()))?;
        let producer = std::sync::Arc::new(producer);
        let p = producer.clone();
        crate::blocking(move || p.init_transactions(TXN_TIMEOUT))
            .await?
            .map_err(|e| crate::KafkaClientError::kafka("init transactions", e))?;
        Ok(producer)
    }

    /// A consumer that commits only offsets the application stored after the effect.
    pub fn at_least_once_consumer(&self, group_id: &str) -> ClientConfig {
        let mut c = self.consumer_base(group_id);
        // Periodic commits of *stored* offsets; offsets are stored only after the effect.
        c.set("enable.auto.commit", "true");
        c.set("enable.auto.offset.store", "false");
        c
    }

    /// A consumer whose offsets are committed by someone else (a Kafka transaction or a
    /// PostgreSQL transaction), never automatically.
    pub fn manual_commit_consumer(&self, group_id: &str) -> ClientConfig {
        let mut c = self.consumer_base(group_id);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c
    }

    fn consumer_base(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base("consumer");
        c.set("group.id", group_id);
        if !self.overrides.contains_key("auto.offset.reset") {
            // Topics are replayable: a new group reads from the start.
            c.set("auto.offset.reset", "earliest");
        }
        if !self.overrides.contains_key("fetch.queue.backoff.ms") {
            // librdkafka pauses a partition's fetching for this long whenever its local
            // queue is over the prefetch threshold; the 1 s default turns a consumer that
            // falls a little behind into one that stalls for a second at a time.
            c.set("fetch.queue.backoff.ms", "10");
        }
        // Never see records of aborted transactions.
        c.set("isolation.level", "read_committed");
        c
    }

    /// An admin client.
    pub fn admin(&self) -> ClientConfig {
        self.base("admin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_keys_win_over_overrides() {
        let mut s = KafkaSettings::new("127.0.0.1:9092", "svc");
        s.overrides.insert("enable.idempotence".into(), "false".into());
        s.overrides.insert("acks".into(), "1".into());
        s.overrides.insert("enable.auto.offset.store".into(), "true".into());
        s.overrides.insert("isolation.level".into(), "read_uncommitted".into());
        s.overrides.insert("linger.ms".into(), "50".into());
        let p = s.producer();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("linger.ms"), Some("50"));
        let c = s.at_least_once_consumer("g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        s.overrides.insert("session.timeout.ms".into(), "6000".into());
        assert_eq!(s.producer().get("session.timeout.ms"), None, "consumer keys stay off producers");
        assert_eq!(s.at_least_once_consumer("g").get("session.timeout.ms"), Some("6000"));
        assert_eq!(s.at_least_once_consumer("g").get("linger.ms"), None, "producer keys stay off consumers");
        let m = s.manual_commit_consumer("g");
        assert_eq!(m.get("enable.auto.commit"), Some("false"));
        let t = s.transactional_producer("tx-1");
        assert_eq!(t.get("transactional.id"), Some("tx-1"));
        assert_eq!(t.get("enable.idempotence"), Some("true"));
    }
}
