//! Metric names and label keys of the Kafka layer, declared once.
//! Labels are bounded: topic and partition yes, keys and offsets never.

pub const RECORDS_PRODUCED: &str = "guardian_kafka_records_produced_total";
pub const PRODUCE_ERRORS: &str = "guardian_kafka_produce_errors_total";
pub const RECORDS_CONSUMED: &str = "guardian_kafka_records_consumed_total";
pub const DEAD_LETTERS: &str = "guardian_kafka_dead_letters_total";
pub const RETRIES: &str = "guardian_kafka_retries_total";
pub const TRANSACTIONS: &str = "guardian_kafka_transactions_total";
pub const HANDLER_SECONDS: &str = "guardian_kafka_handler_seconds";
pub const CONSUMER_LAG: &str = "guardian_kafka_consumer_lag_records";
pub const CLIENT_ERRORS: &str = "guardian_kafka_client_errors_total";
pub const REBALANCES: &str = "guardian_kafka_rebalances_total";

pub const TOPIC: &str = "topic";
pub const PARTITION: &str = "partition";
pub const KIND: &str = "kind";
pub const OUTCOME: &str = "outcome";
pub const OPERATION: &str = "operation";
pub const CLIENT: &str = "client";
