//! The declarative topic catalogue.
//!
//! Every topic the system uses is one TOML file in the repository's `topics/` folder:
//! name, owner, partitions, replication, key encoding, value schema and topic configs.
//! [`Catalogue::load_dir`] parses and validates them before any I/O (unknown keys,
//! unknown schemas, invalid names and configs are errors that name the file).
//! [`plan::plan`] compares the catalogue with what a cluster reports and lists the
//! changes; the Kafka crate applies them. [`ServiceId`] is the one source of principals,
//! consumer groups, client ids and transactional ids. Nothing here does network I/O.

pub mod access;
pub mod catalogue;
pub mod plan;
pub mod service;

pub use catalogue::{Catalogue, CatalogueError, KeyEncoding, TopicId, TopicSpec};
pub use plan::{Change, Drift, ObservedTopic, Plan, plan};
pub use service::{ServiceId, hospital_client, hospital_principal};
