//! `guardian chaos run`: the chaos runner (`guardian-chaos`) with the services it
//! exercises. [`Services`] starts each supervised process from the same typed config the
//! CLI builds (written as a TOML file), and reads results through the services' exports.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use guardian_chaos::{ChaosRunArgs, Counted, Launch, Role, Segment, Subject, Wiring};
use guardian_federated::config::{FlAgentArgs, FlStartArgs};
use guardian_kafka::KafkaArgs;
use guardian_objects::{ObjectStore, S3Args};

pub async fn run(args: ChaosRunArgs) -> Result<ExitCode> {
    guardian_chaos::runner::run(args, &Services).await
}

/// The services of this binary, as the chaos runner sees them.
#[derive(Debug)]
pub struct Services;

fn launch(subcommand: &[&str], config: &impl serde::Serialize) -> Result<Launch> {
    Ok(Launch {
        subcommand: subcommand.iter().map(|s| s.to_string()).collect(),
        config: guardian_runtime::config::to_text(config)?,
    })
}

impl Subject for Services {
    fn launch(&self, role: &Role, w: &Wiring, listen: Option<SocketAddr>) -> Result<Launch> {
        let listen = |default: &str| -> Result<SocketAddr> { Ok(listen.map_or_else(|| default.parse(), Ok)?) };
        match role {
            Role::Kpi => launch(
                &["kpi"],
                &guardian_kpi::KpiArgs {
                    kafka: w.kafka.clone(),
                    database_url: Some(w.database_url.clone()),
                    group: w.kpi_group.clone(),
                    listen: listen(guardian_kpi::config::DEFAULT_LISTEN)?,
                    ..Default::default()
                },
            ),
            Role::Accountant => launch(
                &["accountant"],
                &guardian_accountant::AccountantArgs {
                    kafka: w.kafka.clone(),
                    database_url: Some(w.database_url.clone()),
                    group: w.accountant_group.clone(),
                    listen: listen(guardian_accountant::config::DEFAULT_LISTEN)?,
                    ..Default::default()
                },
            ),
            Role::Archiver => launch(
                &["archive"],
                &guardian_archiver::ArchiveArgs {
                    kafka: w.kafka.clone(),
                    s3: w.s3.clone(),
                    topics: w.archive_topics.clone(),
                    bucket: w.archive_bucket.clone(),
                    prefix: w.archive_prefix.clone(),
                    segment_records: 500,
                    interval_secs: 2,
                    listen: listen(guardian_archiver::config::DEFAULT_LISTEN)?,
                    ..Default::default()
                },
            ),
            Role::Agent { hospital, shard } => launch(
                &["fl", "agent"],
                &FlAgentArgs {
                    kafka: w.kafka.clone(),
                    s3: w.s3.clone(),
                    hospital: Some(hospital.clone()),
                    identity: Some(w.keys.join(format!("{hospital}.key"))),
                    registry: Some(w.registry.clone()),
                    demo_shard: Some(*shard),
                    listen: listen(guardian_federated::config::DEFAULT_AGENT_LISTEN)?,
                    ..Default::default()
                },
            ),
            Role::Aggregator => launch(
                &["fl", "start"],
                &FlStartArgs {
                    kafka: w.kafka.clone(),
                    s3: w.s3.clone(),
                    identity: Some(w.keys.join("aggregator.key")),
                    registry: Some(w.registry.clone()),
                    session: Some(w.session.clone()),
                    rounds: w.rounds,
                    epsilon: 2.0,
                    chunk_len: 8,
                    stage_timeout_secs: w.stage_timeout_secs,
                    ..Default::default()
                },
            ),
        }
    }

    fn keygen(&self, dir: &Path, hospitals: &[String]) -> Result<()> {
        Ok(guardian_federated::registry::keygen(dir, hospitals)?)
    }

    async fn replay(&self, kafka: &KafkaArgs, s3: &S3Args, registry: &Path, session: &str) -> Result<(bool, String)> {
        let topics = guardian_federated::FlTopics::from_catalogue(&kafka.catalogue()?)?;
        let registry = guardian_federated::registry::Registry::load(registry)?;
        let settings = kafka.settings(&guardian_topics::ServiceId::Ops.client_for("chaos-replay"));
        let codec = guardian_schemas::Codec::embedded();
        let checks =
            guardian_federated::replay::replay_session(&settings, &topics, &s3.models()?, &registry, &codec, session)
                .await?;
        let same = checks.iter().filter(|c| c.matches()).count();
        let detail = format!("{same} of {} published model versions bit-identical to their replay", checks.len());
        Ok((same == checks.len(), detail))
    }

    async fn archived(&self, store: &ObjectStore, prefix: &str, topic: &str) -> Result<Vec<Segment>> {
        let manifest = guardian_archiver::restore::manifest(store, prefix, topic).await?;
        Ok(manifest
            .segments
            .iter()
            .map(|s| Segment {
                partition: s.partition,
                first_offset: s.first_offset,
                last_offset: s.last_offset,
                records: s.records,
            })
            .collect())
    }

    async fn counted(&self, pool: &sqlx::PgPool) -> Result<Counted> {
        Ok(Counted {
            seen: guardian_kpi::dedup::seen_per_hospital(pool).await?,
            in_windows: guardian_rollups::tables::encounters_per_hospital(pool).await?,
            ledger: guardian_accountant::store::ledger_event_ids(pool).await.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use guardian_chaos::Subject;

    use super::*;

    fn wiring() -> Wiring {
        let kafka = KafkaArgs {
            bootstrap_servers: "127.0.0.1:19092".into(),
            topic_prefix: "chaos-x-1.".into(),
            kafka_config: vec![("session.timeout.ms".into(), "10000".into())],
            ..Default::default()
        };
        Wiring {
            kafka,
            s3: S3Args { s3_access_key: Some("k".into()), s3_secret_key: Some("s".into()), ..Default::default() },
            database_url: "postgres://g@127.0.0.1/g?options=-csearch_path%3Dchaos_x".into(),
            kpi_group: "svc-kpi-chaos-1".into(),
            accountant_group: "svc-accountant-chaos-1".into(),
            archive_topics: vec!["chaos-x-1.guardian.encounters".into()],
            archive_bucket: "guardian-archive".into(),
            archive_prefix: "chaos-1".into(),
            keys: "/tmp/keys".into(),
            registry: "/tmp/keys/registry.toml".into(),
            session: "chaos-1".into(),
            rounds: 3,
            stage_timeout_secs: 5,
        }
    }

    /// Every supervised role starts from a config that the service itself reads back
    /// into the settings the runner meant (the file is the contract, not an argv).
    #[test]
    fn every_supervised_service_starts_from_its_typed_config() {
        let w = wiring();
        let listen: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let roles = [
            Role::Kpi,
            Role::Accountant,
            Role::Archiver,
            Role::Agent { hospital: "h002".into(), shard: 1 },
            Role::Aggregator,
        ];
        for role in &roles {
            let l = Services.launch(role, &w, (*role != Role::Aggregator).then_some(listen)).unwrap();
            let dir = std::env::temp_dir().join(format!("chaos-launch-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{}.toml", role.name()));
            guardian_runtime::config::write_text(&file, &l.config).unwrap();
            match role {
                Role::Kpi => {
                    assert_eq!(l.subcommand, ["kpi"]);
                    let args = guardian_kpi::KpiArgs { config: Some(file), ..Default::default() };
                    let c = args.validate().unwrap();
                    assert_eq!((c.group.as_str(), c.listen, &c.kafka), ("svc-kpi-chaos-1", listen, &w.kafka));
                    assert_eq!(c.database_url, w.database_url);
                }
                Role::Accountant => {
                    assert_eq!(l.subcommand, ["accountant"]);
                    let args = guardian_accountant::AccountantArgs { config: Some(file), ..Default::default() };
                    let c = args.validate().unwrap();
                    assert_eq!((c.group.as_str(), c.listen, &c.kafka), ("svc-accountant-chaos-1", listen, &w.kafka));
                }
                Role::Archiver => {
                    assert_eq!(l.subcommand, ["archive"]);
                    let args = guardian_archiver::ArchiveArgs { config: Some(file), ..Default::default() };
                    let c = args.validate().unwrap();
                    assert_eq!(
                        (c.topics, c.prefix.as_str(), c.segment_records),
                        (w.archive_topics.clone(), "chaos-1", 500)
                    );
                    assert_eq!(c.s3, w.s3);
                }
                Role::Agent { .. } => {
                    assert_eq!(l.subcommand, ["fl", "agent"]);
                    let c = FlAgentArgs { config: Some(file), ..Default::default() }.resolve().unwrap();
                    assert_eq!((c.hospital.as_deref(), c.demo_shard, c.listen), (Some("h002"), Some(1), listen));
                    assert_eq!(c.identity.unwrap(), w.keys.join("h002.key"));
                }
                Role::Aggregator => {
                    assert_eq!(l.subcommand, ["fl", "start"]);
                    let c = FlStartArgs { config: Some(file), ..Default::default() }.resolve().unwrap();
                    assert_eq!((c.session.as_deref(), c.rounds, c.chunk_len), (Some("chaos-1"), 3, 8));
                    assert_eq!(c.kafka, w.kafka);
                }
            }
        }
    }
}
