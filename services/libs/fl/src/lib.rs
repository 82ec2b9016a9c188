//! Federated learning without I/O: the demo data set and its non-IID split across
//! hospitals, a logistic-regression model, the agent's differential-privacy step (clip and
//! noise) and update files (`.npy`).

pub mod data;
pub mod demo;
pub mod dp;
pub mod model;
pub mod npy;
