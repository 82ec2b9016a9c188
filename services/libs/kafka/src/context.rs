//! One client context for every producer, consumer and admin client: librdkafka logs go
//! to `tracing`, statistics to metrics, errors to both, and rebalances are recorded so
//! consumers can act on them (seek from external offsets, drain) in their own loop.

use std::sync::Mutex;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;

use crate::metrics as m;

/// A change of assignment seen by a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceNote {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

#[derive(Debug)]
pub struct GuardianContext {
    name: String,
    rebalances: Mutex<Vec<RebalanceNote>>,
}

impl GuardianContext {
    pub fn new(name: impl Into<String>) -> Self {
        GuardianContext { name: name.into(), rebalances: Mutex::new(Vec::new()) }
    }

    /// Rebalances since the last call, oldest first.
    pub fn take_rebalances(&self) -> Vec<RebalanceNote> {
        std::mem::take(&mut *self.rebalances.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note(&self, note: RebalanceNote) {
        self.rebalances.lock().unwrap_or_else(|e| e.into_inner()).push(note);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for GuardianContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let client = self.name.as_str();
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", client, fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", client, fac, "{log_message}"),
        }
    }

    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(m::CONSUMER_LAG, m::TOPIC => topic.clone(), m::PARTITION => id.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!(m::CLIENT_ERRORS, m::CLIENT => self.name.clone()).increment(1);
        tracing::error!(client = %self.name, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GuardianContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::counter!(m::REBALANCES, m::KIND => "revoke").increment(1);
            tracing::info!(client = %self.name, partitions = tpl.count(), "partitions revoked");
            self.note(RebalanceNote::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!(m::REBALANCES, m::KIND => "assign").increment(1);
                tracing::info!(client = %self.name, partitions = tpl.count(), "partitions assigned");
                self.note(RebalanceNote::Assigned(partitions(tpl)));
            }
            Rebalance::Error(e) => tracing::error!(client = %self.name, error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // No offsets stored since the last commit is not a failure.
            if e.rdkafka_error_code() != Some(rdkafka::error::RDKafkaErrorCode::NoOffset) {
                tracing::warn!(client = %self.name, error = %e, "offset commit failed");
            }
        }
    }
}

/// Delivery reports of transactional producers: failures are counted and logged; the
/// transaction's commit reports them to the caller.
impl rdkafka::producer::ProducerContext for GuardianContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((error, msg)) = result {
            use rdkafka::Message as _;
            metrics::counter!(m::PRODUCE_ERRORS, m::TOPIC => msg.topic().to_string()).increment(1);
            tracing::warn!(client = %self.name, topic = msg.topic(), %error, "delivery failed");
        }
    }
}
