//! Chaos experiments on the real local stack.
//!
//! * [`experiment`]: the declarative files (traffic, faults and when they fire, seeded);
//! * [`report`]: a run's hypotheses, faults and measurements, as Markdown and JSON;
//! * [`runner`]: `guardian chaos run`: starts the supervised services ([`supervisor`])
//!   from typed configs, sends seeded traffic, injects the faults (processes, broker,
//!   database, S3, the network through [`proxy`]) and judges the steady-state hypotheses;
//! * [`subject`]: what the runner needs from the services, implemented by the binary
//!   with the services' own config types and read APIs (this crate depends on no
//!   service crate).
//!
//! How it fails: an experiment whose hypotheses are violated is reported and makes the
//! run exit 1; a runner that cannot set an experiment up (topics, schema, keys) stops
//! with an error.

pub mod args;
pub mod experiment;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod subject;
pub mod supervisor;

pub use args::ChaosRunArgs;
pub use experiment::{Experiment, FaultKind, FaultSpec, Planned, Workload};
pub use report::{Fault, Hypothesis, Report};
pub use subject::{Counted, Launch, Role, Segment, Subject, Wiring};
