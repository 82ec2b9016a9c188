//! Ops tools for regions and replays.
//!
//! * [`failover`]: `guardian dr status | failover | failback`: moving the services between
//!   two regions mirrored by MirrorMaker 2, with pre-flight checks, consumer-group offsets
//!   translated through MirrorMaker 2's checkpoints (in Kafka, and in PostgreSQL through
//!   [`guardian_pg::offsets::translate`]), an audit trail on `ops.dr-audit`, and the env
//!   file switched last.
//! * [`mm2`]: parsing MirrorMaker 2's checkpoint and offset-sync records.
//! * [`replay`]: copying a range of a topic into a topic, and moving a consumer group's
//!   committed offsets to a point in time.
//!
//! How it fails: every step that cannot be done is a [`DrError`] and the command exits
//! non-zero; the env file is switched only after every offset moved, so a failed
//! failover leaves the services pointed where they were.

pub mod args;
pub mod error;
pub mod failover;
pub mod mm2;
pub mod replay;

pub use args::{DrArgs, DrCommand, DrFailbackArgs, DrFailoverArgs, RangeArgs, ReplayCommand, SwitchArgs};
pub use error::DrError;
