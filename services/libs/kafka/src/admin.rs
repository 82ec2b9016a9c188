//! Topic administration: observe what the cluster has, apply a [`guardian_topics::Plan`].
//!
//! `connect` checks that the cluster answers before anything else, so a missing broker is
//! one clear error instead of a hang. Creating, growing and re-configuring topics are the
//! only changes made; drift that needs a person (shrinking, replication) is reported by
//! the plan and never acted on.

use std::collections::BTreeMap;
use std::time::Duration;

use guardian_topics::{Change, ObservedTopic, Plan};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::metadata::Metadata;

use crate::KafkaSettings;
use crate::error::KafkaClientError;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Admin {
    client: std::sync::Arc<AdminClient<DefaultClientContext>>,
    bootstrap: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("bootstrap", &self.bootstrap).finish()
    }
}

/// What the cluster has, for planning.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub brokers: i32,
    pub topics: BTreeMap<String, ObservedTopic>,
}

impl Admin {
    /// Creates the client and waits (up to 10 s) for the cluster to answer.
    pub async fn connect(settings: &KafkaSettings) -> Result<Admin, KafkaClientError> {
        let mut config = settings.admin();
        // Fail fast and quietly when nothing listens: the error below says it once.
        config.set("log_level", "0");
        let client: AdminClient<DefaultClientContext> =
            config.create().map_err(|e| KafkaClientError::Config(e.to_string()))?;
        let admin = Admin { client: std::sync::Arc::new(client), bootstrap: settings.bootstrap_servers.clone() };
        admin.metadata().await?;
        Ok(admin)
    }

    async fn metadata(&self) -> Result<Metadata, KafkaClientError> {
        let client = self.client.clone();
        crate::blocking(move || client.inner().fetch_metadata(None, TIMEOUT)).await?.map_err(|e| {
            KafkaClientError::Unreachable {
                bootstrap: self.bootstrap.clone(),
                seconds: TIMEOUT.as_secs(),
                error: e.to_string(),
            }
        })
    }

    /// Partitions, replication and the declared configs of the named topics that exist.
    pub async fn observe(&self, names: &[String]) -> Result<ClusterView, KafkaClientError> {
        let metadata = self.metadata().await?;
        let mut topics = BTreeMap::new();
        for t in metadata.topics() {
            if !names.iter().any(|n| n == t.name()) {
                continue;
            }
            if let Some(e) = t.error() {
                return Err(KafkaClientError::Topic { topic: t.name().to_string(), error: format!("{e:?}") });
            }
            let replication = t.partitions().iter().map(|p| p.replicas().len() as i32).max().unwrap_or(0);
            topics.insert(
                t.name().to_string(),
                ObservedTopic {
                    partitions: t.partitions().len() as i32,
                    replication_factor: replication,
                    config: BTreeMap::new(),
                },
            );
        }
        if !topics.is_empty() {
            let specifiers: Vec<String> = topics.keys().cloned().collect();
            let resources: Vec<ResourceSpecifier<'_>> =
                specifiers.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
            let results = self
                .client
                .describe_configs(&resources, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
                .await
                .map_err(|e| KafkaClientError::kafka("describe configs", e))?;
            for (name, result) in specifiers.iter().zip(results) {
                let resource = result.map_err(|e| KafkaClientError::Topic {
                    topic: name.clone(),
                    error: format!("describe configs: {e:?}"),
                })?;
                let observed = topics.get_mut(name).expect("described topics were observed");
                for entry in resource.entries {
                    if let Some(value) = entry.value {
                        observed.config.insert(entry.name, value);
                    }
                }
            }
        }
        Ok(ClusterView { brokers: metadata.brokers().len() as i32, topics })
    }

    /// Every broker's configuration (the entries that have a value), by broker id.
    pub async fn broker_configs(&self) -> Result<Vec<(i32, BTreeMap<String, String>)>, KafkaClientError> {
        let metadata = self.metadata().await?;
        let ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
        let resources: Vec<ResourceSpecifier<'_>> = ids.iter().map(|&id| ResourceSpecifier::Broker(id)).collect();
        let results = self
            .client
            .describe_configs(&resources, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .map_err(|e| KafkaClientError::kafka("describe broker configs", e))?;
        let mut out = Vec::new();
        for (id, result) in ids.iter().zip(results) {
            let resource = result.map_err(|e| KafkaClientError::Config(format!("broker {id} configs: {e:?}")))?;
            out.push((*id, resource.entries.into_iter().filter_map(|e| Some((e.name, e.value?))).collect()));
        }
        Ok(out)
    }

    /// Applies the plan's changes, in order; the first failure stops with its topic named.
    /// Returns once every created or grown topic is visible in the cluster's metadata, so
    /// a service started right after sees what was applied.
    pub async fn apply(&self, plan: &Plan) -> Result<(), KafkaClientError> {
        self.apply_changes(plan).await?;
        let expected: BTreeMap<String, i32> = plan
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { name, partitions, .. } => Some((name.clone(), *partitions)),
                Change::AddPartitions { name, to, .. } => Some((name.clone(), *to)),
                Change::SetConfig { .. } => None,
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let metadata = self.metadata().await?;
            let pending: Vec<&String> = expected
                .iter()
                .filter(|(name, parts)| {
                    !metadata.topics().iter().any(|t| {
                        t.name() == name.as_str()
                            && t.error().is_none()
                            && t.partitions().len() as i32 >= **parts
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .map(|(name, _)| name)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(KafkaClientError::Topic {
                    topic: pending.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    error: "not visible in the cluster metadata 30s after the change".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn apply_changes(&self, plan: &Plan) -> Result<(), KafkaClientError> {
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
        for change in &plan.changes {
            match change {
                Change::Create { name, partitions, replication_factor, config } => {
                    let mut topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication_factor));
                    for (k, v) in config {
                        topic = topic.set(k, v);
                    }
                    let results = self
                        .client
                        .create_topics([&topic], &options)
                        .await
                        .map_err(|e| KafkaClientError::kafka("create topic", e))?;
                    for r in results {
                        r.map_err(|(topic, code)| KafkaClientError::Topic {
                            topic,
                            error: format!("create failed: {code}"),
                        })?;
                    }
                }
                Change::AddPartitions { name, to, .. } => {
                    let parts = NewPartitions::new(name, *to as usize);
                    let results = self
                        .client
                        .create_partitions([&parts], &options)
                        .await
                        .map_err(|e| KafkaClientError::kafka("create partitions", e))?;
                    for r in results {
                        r.map_err(|(topic, code)| KafkaClientError::Topic {
                            topic,
                            error: format!("adding partitions failed: {code}"),
                        })?;
                    }
                }
                Change::SetConfig { name, config, .. } => {
                    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
                    for (k, v) in config {
                        alter = alter.set(k, v);
                    }
                    let results = self
                        .client
                        .alter_configs([&alter], &options)
                        .await
                        .map_err(|e| KafkaClientError::kafka("alter configs", e))?;
                    for r in results {
                        r.map_err(|(_, code)| KafkaClientError::Topic {
                            topic: name.clone(),
                            error: format!("config change failed: {code}"),
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes topics (tests and `topics delete`); missing ones are not an error.
    pub async fn delete(&self, names: &[String]) -> Result<(), KafkaClientError> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = self
            .client
            .delete_topics(&refs, &options)
            .await
            .map_err(|e| KafkaClientError::kafka("delete topics", e))?;
        for r in results {
            if let Err((topic, code)) = r
                && code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
            {
                return Err(KafkaClientError::Topic { topic, error: format!("delete failed: {code}") });
            }
        }
        Ok(())
    }
}
