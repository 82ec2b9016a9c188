//! PostgreSQL effects with the Kafka offsets in the same transaction.
//!
//! Guarantees (exactly-once effects from Kafka into PostgreSQL):
//! - Each batch runs in one SQL transaction: the effect of every record and the next
//!   offset of every partition it touched commit together, or not at all. A crash
//!   (SIGKILL included) before `COMMIT` leaves neither; after it, both.
//! - The offsets row of each partition is locked (`FOR UPDATE`) and records below the
//!   stored offset are skipped inside the transaction, so a replayed topic, a duplicate
//!   delivery or a zombie consumer still holding a revoked partition cannot apply a
//!   record twice.
//! - On assignment the consumer seeks each partition to its stored offset; Kafka's own
//!   committed offset is only a mirror, written after the SQL commit, for lag dashboards
//!   and MirrorMaker 2 checkpoint translation.
//! - Records that fail to decode or validate (`prepare` returns Poison) are dead-lettered,
//!   acknowledged before the SQL commit: at least once, never lost.
//!
//! Database errors that may pass (lost connection, serialization failure, deadlock,
//! restart) retry the same batch with backoff; others stop the consumer with the error.

pub mod connect;
pub mod offsets;
pub mod outbox;
pub mod sink;
pub mod tenancy;

pub use connect::{PgConnectError, connect, with_new_schema};
pub use sink::{PgEffect, PgOffsetConsumer, PgRunStats};
