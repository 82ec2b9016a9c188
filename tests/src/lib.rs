//! Integration tests of the Kafka library against the real local stack live in `tests/`;
//! `src/bin/pipeline_probe.rs` is the process they kill.
