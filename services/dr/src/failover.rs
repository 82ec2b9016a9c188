//! `guardian dr`: multi-region disaster recovery over MirrorMaker 2.
//!
//! MirrorMaker 2 mirrors every guardian topic from region A to region B under the same
//! names and writes, for every consumer group, checkpoints that map a committed offset in
//! A to the offset of the same record in B (`<alias>.checkpoints.internal` on B).
//! `dr failover` checks that B is healthy and the mirror recent enough, translates every
//! group's offsets through the checkpoints (in B's Kafka, and in PostgreSQL for services
//! that keep their offsets with their effects), audits each step to `ops.dr-audit` on B
//! and points the environment at B. Effects are idempotent on event ids, so records
//! processed in A and again in B after a translated (never later) offset count once.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use guardian_kafka::reader::{read_range, topic_watermarks};
use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::records::DrAudit;
use guardian_topics::{ServiceId, TopicId};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::mm2::{Checkpoint, parse_checkpoint, parse_offset_sync};
use crate::{DrArgs, DrCommand, DrError, DrFailbackArgs, DrFailoverArgs, SwitchArgs};

type Result<T, E = DrError> = std::result::Result<T, E>;

macro_rules! refuse {
    ($($arg:tt)*) => { return Err(DrError::Refused(format!($($arg)*))) };
}

fn dr_settings(args: &DrArgs, client: &str) -> KafkaSettings {
    let mut s = args.kafka.settings(client);
    s.bootstrap_servers = args.dr_bootstrap_servers.clone();
    s
}

/// The newest checkpoint of every (group, topic, partition) in B.
pub async fn checkpoints(b: &KafkaSettings, alias: &str) -> Result<BTreeMap<(String, String, i32), Checkpoint>> {
    let topic = format!("{alias}.checkpoints.internal");
    let mut out = BTreeMap::new();
    for m in read_range(b, "dr-checkpoints", &[&topic], None).await? {
        let Some(key) = &m.key else { continue };
        if let Some(c) = parse_checkpoint(key, &m.payload, m.timestamp.unwrap_or(0)) {
            out.insert((c.group.clone(), c.topic.clone(), c.partition), c);
        }
    }
    Ok(out)
}

/// Whether region A answers a metadata request within a few seconds.
fn primary_answers(args: &DrArgs) -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka.bootstrap_servers)
        .set("group.id", ServiceId::Ops.group_for("dr-probe"))
        .set("socket.connection.setup.timeout.ms", "2000")
        .create();
    consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(3)).is_ok())
}

/// (records, oldest..end) per topic: record counts, not offsets (they differ between regions).
async fn counts(settings: &KafkaSettings, topics: &[String]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in topics {
        if let Ok(marks) = topic_watermarks(settings, "dr-status", &[t]).await {
            out.insert(t.clone(), marks.values().map(|(lo, hi)| hi - lo).sum());
        }
    }
    out
}

/// The client id of one DR step (under the ops principal).
fn client(step: &str) -> String {
    ServiceId::Ops.client_for(&format!("dr-{step}"))
}

/// Runs one DR command; `Ok` when it did what was asked.
pub async fn run(cmd: DrCommand) -> Result<ExitCode> {
    match cmd {
        DrCommand::Status(args) => status(args).await,
        DrCommand::Failover(args) => failover(args).await,
        DrCommand::Failback(args) => failback(args).await,
    }
}

async fn status(args: DrArgs) -> Result<ExitCode> {
    let catalogue = args.kafka.catalogue()?;
    let topics: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    let b = dr_settings(&args, &client("status"));
    let a_up = primary_answers(&args);
    let in_a = if a_up { counts(&args.kafka.settings(&client("status")), &topics).await } else { BTreeMap::new() };
    let in_b = counts(&b, &topics).await;
    println!("region A ({}): {}", args.kafka.bootstrap_servers, if a_up { "answers" } else { "DOES NOT ANSWER" });
    println!("region B ({}): {} of {} topics mirrored", args.dr_bootstrap_servers, in_b.len(), topics.len());
    println!("| topic | records in A | records in B | not yet mirrored |");
    println!("|---|---:|---:|---:|");
    for t in &topics {
        let (a, b) = (in_a.get(t), in_b.get(t));
        let lag = match (a, b) {
            (Some(a), Some(b)) => (a - b).max(0).to_string(),
            (Some(a), None) => format!("{a} (topic missing in B)"),
            _ => "?".into(),
        };
        let show = |v: Option<&i64>| v.map_or("-".into(), i64::to_string);
        println!("| {t} | {} | {} | {lag} |", show(a), show(b));
    }
    let cps = checkpoints(&b, &args.source_alias).await.unwrap_or_default();
    let newest = cps.values().map(|c| c.timestamp_ms).max();
    let mut groups: Vec<&str> = cps.values().map(|c| c.group.as_str()).collect();
    groups.dedup();
    match newest {
        Some(ts) => println!(
            "checkpoints: {} groups, newest {:.1} s old (written when a group's offsets move)",
            groups.len(),
            (guardian_runtime::now_ms() - ts) as f64 / 1000.0
        ),
        None => println!("checkpoints: none yet"),
    }
    let beats = read_range(&b, "dr-heartbeats", &["heartbeats"], None).await.unwrap_or_default();
    match beats.iter().filter_map(|m| m.timestamp).max() {
        Some(ts) => {
            println!("mirrormaker 2: last heartbeat {:.1} s ago", (guardian_runtime::now_ms() - ts) as f64 / 1000.0)
        }
        None => println!("mirrormaker 2: no heartbeats in region B"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit trail of one operation, written to the region the services move to.
struct Trail {
    producer: Producer,
    topic: String,
    operation: &'static str,
    operation_id: String,
}

impl Trail {
    fn new(target: &KafkaSettings, topic: String, operation: &'static str) -> Result<Self> {
        let operation_id = format!("{operation}-{}", guardian_runtime::now_ms());
        Ok(Trail { producer: Producer::new(target)?, topic, operation, operation_id })
    }

    async fn step(&self, step: &str, ok: bool, detail: String) -> Result<()> {
        println!("{} {step}: {detail}", if ok { "ok  " } else { "FAIL" });
        let record = DrAudit {
            operation_id: self.operation_id.clone(),
            operation: self.operation.into(),
            step: step.into(),
            ok,
            detail,
            occurred_at: guardian_runtime::now_ms(),
        };
        self.producer.send(&self.topic, &self.operation_id, &record).await?;
        Ok(())
    }
}

/// Where the services go, and how to find their offsets there.
struct Destination<'a> {
    settings: &'a KafkaSettings,
    /// MirrorMaker 2's alias of the region they leave (its checkpoints topic in `settings`).
    source_alias: &'a str,
    /// The region they leave, which becomes the DR region in the env file.
    leaving: &'a str,
}

async fn failover(args: DrFailoverArgs) -> Result<ExitCode> {
    let catalogue = args.dr.kafka.catalogue()?;
    let b = dr_settings(&args.dr, &client("failover"));
    let audit_topic = catalogue.topic(TopicId::DrAudit)?;
    let topics: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();

    // 1. The DR region answers and holds the topics (the audit topic among them).
    let in_b = counts(&b, &topics).await;
    if !in_b.contains_key(&audit_topic) {
        refuse!(
            "the DR region has no {audit_topic}: MirrorMaker 2 is not mirroring the catalogue (or the region is down)"
        );
    }
    let trail = Trail::new(&b, audit_topic, "failover")?;
    let missing: Vec<&String> = topics.iter().filter(|t| !in_b.contains_key(*t)).collect();
    trail
        .step(
            "dr-region-healthy",
            missing.is_empty(),
            format!(
                "{} of {} topics present in {}",
                topics.len() - missing.len(),
                topics.len(),
                args.dr.dr_bootstrap_servers
            ),
        )
        .await?;
    if !missing.is_empty() && !args.switch.force {
        refuse!("topics missing in the DR region: {missing:?}");
    }

    // 2. Region A should be gone (or its producers stopped): two writers would diverge.
    let a_up = primary_answers(&args.dr);
    trail
        .step(
            "primary-fenced",
            !a_up,
            if a_up {
                "region A still answers: stop its producers before failing over".into()
            } else {
                "region A does not answer".into()
            },
        )
        .await?;
    if a_up && !args.switch.force {
        refuse!("region A still answers; stop it (or its producers) first, or pass --force for a planned failover");
    }

    // 3. The mirror was running within the RPO: MirrorMaker 2 writes a heartbeat into B
    // every second while it works. (With region A gone, what A held at the end cannot be
    // asked; `dr status` reports per-topic lag while both answer.)
    let beats = read_range(&b, "dr-heartbeats", &["heartbeats"], None).await.unwrap_or_default();
    let newest_beat = beats.iter().filter_map(|m| m.timestamp).max();
    let age = newest_beat.map(|ts| (guardian_runtime::now_ms() - ts) as f64 / 1000.0);
    let within = age.is_some_and(|a| a <= args.rpo_secs);
    trail
        .step(
            "replication-lag",
            within,
            match age {
                Some(a) => format!("MirrorMaker 2 last wrote to the DR region {a:.1} s ago (RPO {} s)", args.rpo_secs),
                None => "no MirrorMaker 2 heartbeats in the DR region".into(),
            },
        )
        .await?;
    if !within && !args.switch.force {
        refuse!(
            "the mirror stopped more than the RPO of {} s ago (or never ran): refusing without --force",
            args.rpo_secs
        );
    }
    let to =
        Destination { settings: &b, source_alias: &args.dr.source_alias, leaving: &args.dr.kafka.bootstrap_servers };
    translate_and_switch(&trail, &to, &topics, &args.switch).await?;
    println!("failover {} done: services may start against {}", trail.operation_id, args.dr.dr_bootstrap_servers);
    Ok(ExitCode::SUCCESS)
}

/// Back to region A once it is up again and MirrorMaker 2 mirrors B to A
/// (`stack.sh mirror b-to-a`): the same translation, after checks that no one writes to B
/// any more and that A holds everything B has.
async fn failback(args: DrFailbackArgs) -> Result<ExitCode> {
    let catalogue = args.kafka.catalogue()?;
    let active = args.kafka.settings(&client("failback"));
    let mut target = active.clone();
    target.bootstrap_servers = args.primary_bootstrap_servers.clone();
    let audit_topic = catalogue.topic(TopicId::DrAudit)?;
    let topics: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();

    // 1. Region A answers and holds the topics.
    let in_a = counts(&target, &topics).await;
    if !in_a.contains_key(&audit_topic) {
        refuse!("region A ({}) has no {audit_topic}: is it up, with its topics?", args.primary_bootstrap_servers);
    }
    let trail = Trail::new(&target, audit_topic, "failback")?;
    let missing: Vec<&String> = topics.iter().filter(|t| !in_a.contains_key(*t)).collect();
    trail
        .step(
            "primary-healthy",
            missing.is_empty(),
            format!(
                "{} of {} topics present in {}",
                topics.len() - missing.len(),
                topics.len(),
                target.bootstrap_servers
            ),
        )
        .await?;
    if !missing.is_empty() && !args.switch.force {
        refuse!("topics missing in region A: {missing:?}");
    }

    // 2. No one writes to region B any more: its topics' ends stay put.
    let before = counts(&active, &topics).await;
    tokio::time::sleep(Duration::from_secs_f64(args.quiet_secs)).await;
    let after = counts(&active, &topics).await;
    let moved: Vec<&String> = topics.iter().filter(|t| before.get(*t) != after.get(*t)).collect();
    trail
        .step(
            "writers-stopped",
            moved.is_empty(),
            if moved.is_empty() {
                format!("no topic of region B grew in {} s", args.quiet_secs)
            } else {
                format!("still written in region B: {moved:?}")
            },
        )
        .await?;
    if !moved.is_empty() && !args.switch.force {
        refuse!("region B is still written to ({moved:?}): stop its producers first");
    }

    // 3. Region A holds every record of region B: MirrorMaker 2's offset syncs (in B) have
    // reached the last record of every partition.
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(args.catch_up_secs);
    let mut progress = MirrorProgress::new(&active, &args.target_alias, &topics).await?;
    let behind = loop {
        let behind = progress.behind().await?;
        if behind.is_empty() || std::time::Instant::now() > deadline {
            break behind;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    trail
        .step(
            "mirror-caught-up",
            behind.is_empty(),
            if behind.is_empty() {
                "MirrorMaker 2 has copied every record of region B to region A".into()
            } else {
                format!("not yet in region A (partition: records): {behind:?}")
            },
        )
        .await?;
    if !behind.is_empty() && !args.switch.force {
        refuse!(
            "region A is {} records behind region B after {} s (is `stack.sh mirror b-to-a` running?)",
            behind.values().sum::<i64>(),
            args.catch_up_secs
        );
    }
    let to =
        Destination { settings: &target, source_alias: &args.source_alias, leaving: &args.kafka.bootstrap_servers };
    translate_and_switch(&trail, &to, &topics, &args.switch).await?;
    println!("failback {} done: services may start against {}", trail.operation_id, target.bootstrap_servers);
    Ok(ExitCode::SUCCESS)
}

/// How far MirrorMaker 2 has copied a quiet region: the last record of each partition
/// (read once: nobody writes there any more) against the newest offset sync of
/// `mm2-offset-syncs.<target_alias>.internal` (written in the source region; one per
/// record with `offset.lag.max = 0`), read on from where the previous look stopped.
struct MirrorProgress<'a> {
    active: &'a KafkaSettings,
    syncs_topic: String,
    last: BTreeMap<(String, i32), i64>,
    synced: BTreeMap<(String, i32), i64>,
    read_to: guardian_kafka::reader::Positions,
}

impl<'a> MirrorProgress<'a> {
    async fn new(active: &'a KafkaSettings, target_alias: &str, topics: &[String]) -> Result<Self> {
        let mut last = BTreeMap::new();
        for t in topics {
            for (partition, offset) in last_records(active, t).await? {
                last.insert((t.clone(), partition), offset);
            }
        }
        Ok(MirrorProgress {
            active,
            syncs_topic: format!("mm2-offset-syncs.{target_alias}.internal"),
            last,
            synced: BTreeMap::new(),
            read_to: Default::default(),
        })
    }

    /// Records not copied yet, per "topic/partition".
    async fn behind(&mut self) -> Result<BTreeMap<String, i64>> {
        for m in read_range(self.active, "dr-offset-syncs", &[&self.syncs_topic], Some(&self.read_to)).await? {
            self.read_to.insert((m.topic.clone(), m.partition), m.offset + 1);
            let Some(key) = &m.key else { continue };
            if let Some((topic, partition, upstream)) = parse_offset_sync(key, &m.payload) {
                let e = self.synced.entry((topic, partition)).or_insert(upstream);
                *e = (*e).max(upstream);
            }
        }
        Ok(self
            .last
            .iter()
            .filter_map(|(tp, last)| {
                let copied = self.synced.get(tp).copied().unwrap_or(-1);
                (copied < *last).then(|| (format!("{}/{}", tp.0, tp.1), last - copied))
            })
            .collect())
    }
}

/// The offset of the last record (control markers aside) of each non-empty partition.
async fn last_records(settings: &KafkaSettings, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let marks = topic_watermarks(settings, "dr-last", &[topic]).await?;
    let mut out = BTreeMap::new();
    for ((_, partition), (lo, hi)) in marks.into_iter().filter(|(_, (lo, hi))| hi > lo) {
        let mut back = 16;
        loop {
            let from = (hi - back).max(lo);
            let mut range = BTreeMap::new();
            range.insert((topic.to_string(), partition), (from, hi));
            // Committed records: what the services read (MirrorMaker 2 copies aborted
            // ones too, so its syncs can only be further on).
            let mut reader = guardian_kafka::reader::RangeReader::open(settings, "dr-last", &range)?;
            let mut last = None;
            while let Some(m) = reader.next().await? {
                last = Some(m.offset);
            }
            if let Some(offset) = last {
                out.insert(partition, offset);
                break;
            }
            if from == lo {
                break;
            }
            back *= 4;
        }
    }
    Ok(out)
}

/// A pool on the services' database, checked to answer.
async fn database(url: &str) -> Result<sqlx::PgPool> {
    Ok(guardian_pg::connect(url, 1).await?)
}

/// Steps 4 and 5 of a failover or a failback: every group's offsets translated through the
/// checkpoints in the destination (in its Kafka, and in PostgreSQL where kept), then the
/// environment pointed at it.
async fn translate_and_switch(trail: &Trail, to: &Destination<'_>, topics: &[String], args: &SwitchArgs) -> Result<()> {
    let cps = checkpoints(to.settings, to.source_alias).await?;
    let cps: Vec<Checkpoint> = cps
        .into_values()
        .filter(|c| (args.groups.is_empty() || args.groups.contains(&c.group)) && topics.contains(&c.topic))
        .collect();
    let mut by_group: BTreeMap<&str, Vec<&Checkpoint>> = BTreeMap::new();
    for c in &cps {
        by_group.entry(c.group.as_str()).or_default().push(c);
    }
    // A named group without checkpoints (MirrorMaker 2 had not picked it up yet) starts over
    // from the beginning of the destination: slower, still exact, as effects are idempotent.
    for group in args.groups.iter().filter(|g| !by_group.contains_key(g.as_str())) {
        let mut detail = format!(
            "group {group}: no checkpoint in the destination region; it restarts from the beginning of every topic there"
        );
        if let Some(url) = &args.database_url {
            let rows = match database(url).await {
                Ok(pool) => guardian_pg::offsets::reset(&pool, group).await.map_err(DrError::sql("resetting offsets")),
                Err(e) => Err(e),
            };
            match rows {
                Ok(rows) => detail.push_str(&format!(" (PostgreSQL: {rows} partition offsets reset)")),
                Err(e) => {
                    trail.step("translate-offsets", false, format!("{detail}; PostgreSQL: {e}")).await?;
                    return Err(e);
                }
            }
        }
        trail.step("translate-offsets", true, detail).await?;
    }
    for (group, list) in &by_group {
        let mut tpl = TopicPartitionList::new();
        for c in list {
            tpl.add_partition_offset(&c.topic, c.partition, Offset::Offset(c.downstream))
                .map_err(|e| DrError::kafka("listing offsets", e))?;
        }
        let consumer: BaseConsumer =
            to.settings.manual_commit_consumer(group).create().map_err(|e| DrError::kafka("creating a consumer", e))?;
        // A group whose members died with the region still has them on record until their
        // sessions expire; its offsets can be set only once it is empty.
        let waiting_since = std::time::Instant::now();
        let kafka = loop {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => break Ok(()),
                Err(e)
                    if e.rdkafka_error_code().is_some_and(|c| {
                        matches!(
                            c,
                            RDKafkaErrorCode::UnknownMemberId
                                | RDKafkaErrorCode::RebalanceInProgress
                                | RDKafkaErrorCode::IllegalGeneration
                        )
                    }) && waiting_since.elapsed().as_secs_f64() < args.group_wait_secs =>
                {
                    if waiting_since.elapsed() < Duration::from_secs(2) {
                        println!(
                            "     group {group} still has members on record in the destination (from before the outage?): \
                             waiting up to {} s for their sessions to expire",
                            args.group_wait_secs
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => break Err(format!("{e}")),
            }
        };
        let mut pg = String::new();
        let mut pg_failed = None;
        if let Some(url) = &args.database_url {
            let translated: BTreeMap<(String, i32), i64> =
                list.iter().map(|c| ((c.topic.clone(), c.partition), c.downstream)).collect();
            let moved = match database(url).await {
                Ok(pool) => guardian_pg::offsets::translate(&pool, group, &translated)
                    .await
                    .map_err(DrError::sql("translating offsets")),
                Err(e) => Err(e),
            };
            match moved {
                // Partitions the group kept in PostgreSQL without a checkpoint start over
                // in the destination (effects are idempotent on event ids).
                Ok((rows, reset)) => {
                    pg = format!(", PostgreSQL: {rows} partition offsets translated, {reset} restarted from 0")
                }
                Err(e) => {
                    pg = format!(", PostgreSQL: {e}");
                    pg_failed = Some(e);
                }
            }
        }
        let detail = format!(
            "group {group}: {} partitions → {}{}",
            list.len(),
            list.iter()
                .map(|c| format!("{}/{}@{}→{}", c.topic, c.partition, c.upstream, c.downstream))
                .collect::<Vec<_>>()
                .join(" "),
            pg
        );
        trail
            .step(
                "translate-offsets",
                kafka.is_ok() && pg_failed.is_none(),
                match &kafka {
                    Ok(()) => detail,
                    Err(e) => format!("{detail}; Kafka commit failed: {e} (is the group running there?)"),
                },
            )
            .await?;
        // The env file is not switched: the services stay where they were, and the
        // failover can be run again once the database answers.
        if let Some(e) = pg_failed {
            return Err(e);
        }
    }

    // 5. Point the environment at the destination.
    let destination = &to.settings.bootstrap_servers;
    if let Some(path) = &args.write_env {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                !l.starts_with("export GUARDIAN_KAFKA_BOOTSTRAP=")
                    && !l.starts_with("export GUARDIAN_KAFKA_DR_BOOTSTRAP=")
            })
            .map(str::to_string)
            .collect();
        lines.push(format!("export GUARDIAN_KAFKA_BOOTSTRAP='{destination}'"));
        lines.push(format!("export GUARDIAN_KAFKA_DR_BOOTSTRAP='{}'", to.leaving));
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|error| DrError::Io { path: path.display().to_string(), error })?;
        trail.step("switch", true, format!("{} now points the services at {destination}", path.display())).await?;
    } else {
        trail.step("switch", true, format!("start the services with GUARDIAN_KAFKA_BOOTSTRAP={destination}")).await?;
    }
    trail.producer.flush(Duration::from_secs(10)).await?;
    Ok(())
}
