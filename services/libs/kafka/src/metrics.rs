//! Metric names and label keys of the Kafka layer, declared once.
//! Labels are bounded: topic and partition yes, keys and offsets never.

pub const RECORDS_PRODUCED: &str = "guardian_kafka_records_produced_total";
pub const PRODUCE_ERRORS: &str = "guardian_kafka_produce_errors_total";
pub const RECORDS_CONSUMED: &str = "guardian_kafka_records_consumed_total";
pub const DEAD_LETTERS: &str = "guardian_kafka_dead_letters_total";
pub const RETRIES: &str = "guardian_kafka_retries_total";
pub const TRANSACTIONS: &str = "guardian_kafka_transactions_total";
/// Time to handle one batch of consumed records (per topic); with RECORDS_CONSUMED it
/// gives the mean time per record.
pub const BATCH_SECONDS: &str = "guardian_kafka_batch_seconds";
pub const CONSUMER_LAG: &str = "guardian_kafka_consumer_lag_records";
pub const CLIENT_ERRORS: &str = "guardian_kafka_client_errors_total";
pub const REBALANCES: &str = "guardian_kafka_rebalances_total";

pub const TOPIC: &str = "topic";
pub const PARTITION: &str = "partition";
pub const KIND: &str = "kind";
pub const OUTCOME: &str = "outcome";
pub const OPERATION: &str = "operation";
pub const CLIENT: &str = "client";

/// Metric handles per topic, looked up once. Recording through a handle is an atomic
/// update; going through the macros costs a label allocation and a registry lookup per
/// record, which shows at hundreds of thousands of records a second.
#[derive(Debug)]
pub(crate) struct PerTopic<T> {
    handles: std::sync::Mutex<std::collections::HashMap<String, T>>,
}

impl<T> Default for PerTopic<T> {
    fn default() -> Self {
        PerTopic { handles: Default::default() }
    }
}

impl<T: Clone> PerTopic<T> {
    pub(crate) fn get(&self, topic: &str, make: impl FnOnce(String) -> T) -> T {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = handles.get(topic) {
            return h.clone();
        }
        let h = make(topic.to_string());
        handles.insert(topic.to_string(), h.clone());
        h
    }
}
