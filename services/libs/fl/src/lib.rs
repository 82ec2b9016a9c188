//! Federated learning without I/O: the demo data set and its non-IID split across
//! hospitals, a logistic-regression model with DP-SGD, and update files (`.npy`,
//! safetensors). The hospital-unit noise is integer noise added after quantization
//! (`guardian-federated`'s `noise`).

pub mod data;
pub mod demo;
pub mod model;
pub mod npy;
pub mod safetensors;
