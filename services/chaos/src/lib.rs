//! Chaos experiments as declarative files: the traffic, the faults and when they fire
//! (seeded), and the report of a run. The runner that starts services, injects the faults
//! and measures the steady-state hypotheses is `guardian chaos run`; nothing here does I/O
//! beyond reading the experiment file.

pub mod experiment;
pub mod report;

pub use experiment::{Experiment, FaultKind, FaultSpec, Planned, Workload};
pub use report::{Fault, Hypothesis, Report};
