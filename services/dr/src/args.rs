//! The command-line arguments of the DR and replay tools (the `guardian` binary mounts
//! them as subcommands).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use guardian_kafka::KafkaArgs;

#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Records not yet mirrored per topic, and the age of the newest consumer-group checkpoint
    Status(DrArgs),
    /// Move the services to the DR region: pre-flight checks, offset translation, the switch
    Failover(DrFailoverArgs),
    /// Move them back to region A once it is up and mirrored from B (`stack.sh mirror b-to-a`)
    Failback(DrFailbackArgs),
}

#[derive(Debug, Args)]
pub struct DrArgs {
    /// The primary region (A)
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The DR region's bootstrap servers (B)
    #[arg(long, env = "GUARDIAN_KAFKA_DR_BOOTSTRAP")]
    pub dr_bootstrap_servers: String,
    /// MirrorMaker 2's alias of the primary cluster (its checkpoints topic is <alias>.checkpoints.internal)
    #[arg(long, default_value = "A")]
    pub source_alias: String,
}

#[derive(Debug, Args)]
pub struct DrFailoverArgs {
    #[command(flatten)]
    pub dr: DrArgs,
    /// Most seconds of replication lag the failover accepts (the newest heartbeat's age)
    #[arg(long, default_value_t = 5.0)]
    pub rpo_secs: f64,
    #[command(flatten)]
    pub switch: SwitchArgs,
}

/// What a failover and a failback share: whose offsets move, where they are kept, the env.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Only these consumer groups (default: every group with checkpoints)
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// PostgreSQL of services that keep their offsets there (their rows are translated too)
    #[arg(long, env = "GUARDIAN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Rewrite this env file so that services start against the destination region
    #[arg(long)]
    pub write_env: Option<PathBuf>,
    /// Go on even when a pre-flight check fails (lag, a region still written to)
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for a group with members left over from before the outage (their
    /// sessions expire) before setting its offsets in the destination
    #[arg(long, default_value_t = 90.0)]
    pub group_wait_secs: f64,
}

#[derive(Debug, Args)]
pub struct DrFailbackArgs {
    /// The region the services run in now (B; after `dr failover --write-env` the env's
    /// GUARDIAN_KAFKA_BOOTSTRAP)
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The region to return to (A; after `dr failover --write-env` the env's GUARDIAN_KAFKA_DR_BOOTSTRAP)
    #[arg(long, env = "GUARDIAN_KAFKA_DR_BOOTSTRAP")]
    pub primary_bootstrap_servers: String,
    /// MirrorMaker 2's alias of the region the services leave (its checkpoints topic in A is <alias>.checkpoints.internal)
    #[arg(long, default_value = "B")]
    pub source_alias: String,
    /// MirrorMaker 2's alias of region A (the offset syncs in B are mm2-offset-syncs.<alias>.internal)
    #[arg(long, default_value = "A")]
    pub target_alias: String,
    /// Seconds region B's topics must stay unchanged (its producers stopped)
    #[arg(long, default_value_t = 5.0)]
    pub quiet_secs: f64,
    /// Seconds to wait for region A to hold every record of region B (MirrorMaker 2 writes
    /// its offset syncs at its offset flush, every 60 s unless configured lower)
    #[arg(long, default_value_t = 150.0)]
    pub catch_up_secs: f64,
    #[command(flatten)]
    pub switch: SwitchArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// Partitions to replay (repeatable; default: all)
    #[arg(long = "partition")]
    pub partitions: Vec<i32>,
    /// First offset (in every selected partition)
    #[arg(long, conflicts_with = "from_time")]
    pub from_offset: Option<i64>,
    /// First record at or after this time (YYYY-MM-DD UTC or epoch milliseconds)
    #[arg(long, value_parser = guardian_runtime::time::parse_instant)]
    pub from_time: Option<i64>,
    /// Offset to stop before (default: the end of each partition when the replay starts)
    #[arg(long, conflicts_with = "to_time")]
    pub to_offset: Option<i64>,
    /// Stop before the first record at or after this time
    #[arg(long, value_parser = guardian_runtime::time::parse_instant)]
    pub to_time: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Copy a range of a topic's records into a topic (the same or another), keys, values
    /// and headers kept, each marked with a `guardian.replay.source` header
    Range {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Topic to read (full name)
        #[arg(long)]
        from_topic: String,
        /// Topic to write (full name; must exist)
        #[arg(long)]
        to_topic: String,
        #[command(flatten)]
        range: RangeArgs,
        /// Print what would be replayed and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a consumer group's committed offsets of a topic to a point in time
    ResetGroup {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Consumer group
        #[arg(long)]
        group: String,
        /// Topic (full name)
        #[arg(long)]
        topic: String,
        /// First record at or after this time (YYYY-MM-DD UTC or epoch milliseconds)
        #[arg(long, value_parser = guardian_runtime::time::parse_instant)]
        to_time: i64,
        /// Reset even though the group has live members (they will overwrite it)
        #[arg(long)]
        force: bool,
        /// Print the new offsets and change nothing
        #[arg(long)]
        dry_run: bool,
    },
}
