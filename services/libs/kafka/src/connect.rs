//! How a process reaches Kafka: the connection flags every command shares (also a
//! section of every service's config file), turned into [`KafkaSettings`], the topic
//! catalogue and the start-up topic check.
//!
//! The check is the rule "topics are declared, not improvised": a service refuses to
//! start when a topic it needs is missing or differs from the catalogue.

use std::path::PathBuf;

use guardian_schemas::Registry;
use guardian_topics::{Catalogue, Change, ServiceId, TopicId, plan};
use serde::{Deserialize, Serialize};

use crate::admin::Admin;
use crate::{KafkaClientError, KafkaSettings};

/// Where Kafka is and which topics to use.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers
    #[arg(long, env = "GUARDIAN_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap_servers: String,
    /// Prefix of every topic name (isolates tests and tenants; empty in production)
    #[arg(long, env = "GUARDIAN_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Read the topic catalogue from this folder instead of the one built in
    #[arg(long, env = "GUARDIAN_TOPICS_DIR")]
    pub topics_dir: Option<PathBuf>,
    /// Extra librdkafka setting KEY=VALUE (repeatable; tuning, or security not covered below)
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// How to reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl (default: plaintext)
    #[arg(long, env = "GUARDIAN_KAFKA_SECURITY_PROTOCOL", value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"])]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism with sasl_* protocols
    #[arg(long, env = "GUARDIAN_KAFKA_SASL_MECHANISM", default_value = "SCRAM-SHA-512")]
    pub kafka_sasl_mechanism: String,
    /// This service's or hospital's Kafka principal (SASL user name)
    #[arg(long, env = "GUARDIAN_KAFKA_USERNAME")]
    pub kafka_username: Option<String>,
    /// Its SASL password (prefer the environment variable to the flag)
    #[arg(long, env = "GUARDIAN_KAFKA_PASSWORD", hide_env_values = true)]
    pub kafka_password: Option<String>,
    /// CA certificate (PEM) that signed the brokers' TLS certificates
    #[arg(long, env = "GUARDIAN_KAFKA_CA")]
    pub kafka_ca: Option<PathBuf>,
    /// A Confluent-compatible schema registry (Confluent, Apicurio's /apis/ccompat/v7,
    /// Karapace; user:password@ in the URL is basic authentication): records framed with
    /// its ids are read, and written with --wire-format confluent
    #[arg(long, env = "GUARDIAN_SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,
    /// How records are framed: single-object (Avro's, no registry needed) or confluent
    /// (magic 0 + the registry's schema id, what Confluent-compatible readers take; needs
    /// --schema-registry-url and the subjects registered by `guardian topics apply`).
    /// Either is read
    #[arg(long, env = "GUARDIAN_WIRE_FORMAT", default_value = "single-object", value_parser = ["single-object", "confluent"])]
    pub wire_format: String,
}

impl Default for KafkaArgs {
    fn default() -> Self {
        KafkaArgs {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            topics_dir: None,
            kafka_config: Vec::new(),
            kafka_security_protocol: None,
            kafka_sasl_mechanism: "SCRAM-SHA-512".into(),
            kafka_username: None,
            kafka_password: None,
            kafka_ca: None,
            schema_registry_url: None,
            wire_format: "single-object".into(),
        }
    }
}

/// `KEY=VALUE` of `--kafka-config`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl KafkaArgs {
    /// Client settings for `client` (a [`guardian_topics::ServiceId`]'s client id).
    pub fn settings(&self, client: &str) -> KafkaSettings {
        let mut s = KafkaSettings::new(&self.bootstrap_servers, client);
        if let Some(protocol) = &self.kafka_security_protocol {
            s.overrides.insert("security.protocol".into(), protocol.clone());
            if protocol.starts_with("sasl") {
                s.overrides.insert("sasl.mechanism".into(), self.kafka_sasl_mechanism.clone());
            }
        }
        if let Some(user) = &self.kafka_username {
            s.overrides.insert("sasl.username".into(), user.clone());
        }
        if let Some(password) = &self.kafka_password {
            s.overrides.insert("sasl.password".into(), password.clone());
        }
        if let Some(ca) = &self.kafka_ca {
            s.overrides.insert("ssl.ca.location".into(), ca.display().to_string());
        }
        s.overrides.extend(self.kafka_config.iter().cloned());
        s
    }

    /// The topic catalogue (built in, or `topics_dir`) with the prefix applied.
    pub fn catalogue(&self) -> Result<Catalogue, guardian_topics::CatalogueError> {
        catalogue(self.topics_dir.as_deref(), &self.topic_prefix)
    }

    /// An admin client.
    pub async fn admin(&self, client: &str) -> Result<Admin, KafkaClientError> {
        Admin::connect(&self.settings(client)).await
    }

    /// The schema registry's client, when one is configured.
    pub fn registry_client(&self) -> Result<Option<guardian_registry::Client>, KafkaClientError> {
        self.schema_registry_url
            .as_deref()
            .map(guardian_registry::Client::new)
            .transpose()
            .map_err(|e| KafkaClientError::Config(e.to_string()))
    }

    /// Takes the registry's ids of `catalogue`'s schemas for this process's codecs: every
    /// one must be registered when the process writes Confluent framing; a reader takes
    /// those that are (the rest cannot have been written in Confluent framing).
    pub async fn use_wire_format(&self, catalogue: &Catalogue) -> Result<(), KafkaClientError> {
        let write = self.wire_format == "confluent";
        // Several services of one process (the demo) look the ids up once.
        if guardian_schemas::codec::process_schema_ids().is_some() {
            if guardian_schemas::Codec::embedded().writes_confluent() != write {
                return Err(KafkaClientError::Config("the process already uses another wire format".into()));
            }
            return Ok(());
        }
        let Some(client) = self.registry_client()? else {
            if write {
                return Err(KafkaClientError::Config(
                    "--wire-format confluent needs a schema registry (--schema-registry-url)".into(),
                ));
            }
            return Ok(());
        };
        let config = |e: String| KafkaClientError::Config(e);
        let subjects =
            guardian_registry::subjects(catalogue, Registry::embedded()).map_err(|e| config(e.to_string()))?;
        let (ids, missing) = match guardian_registry::resolve(&client, &subjects).await {
            Ok(found) => found,
            Err(e) if write => return Err(config(e.to_string())),
            // A reader goes on without: it reads single-object records, and names the id
            // of each Confluent one it cannot place.
            Err(e) => {
                tracing::warn!(error = %e, "schema registry unreachable: Confluent-framed records will not decode");
                return Ok(());
            }
        };
        if write && !missing.is_empty() {
            return Err(config(format!(
                "--wire-format confluent: not registered at {}: {} (run `guardian topics apply` with the registry)",
                client.url(),
                missing.join(", ")
            )));
        }
        if !missing.is_empty() {
            tracing::debug!(
                missing = missing.len(),
                "subjects without their schema: records of those are read in single-object encoding only"
            );
        }
        guardian_schemas::codec::use_schema_registry(ids, write).map_err(|e| config(e.to_string()))
    }

    /// The start-up check every service makes: the catalogue, once every topic in
    /// `needed` exists on the cluster as declared.
    pub async fn checked_catalogue(
        &self,
        service: ServiceId,
        needed: &[TopicId],
    ) -> Result<Catalogue, KafkaClientError> {
        let catalogue = self.catalogue().map_err(|e| KafkaClientError::Config(e.to_string()))?;
        let admin = self.admin(&service.client_for("admin")).await?;
        require_topics(&admin, &catalogue, needed).await?;
        self.use_wire_format(&catalogue).await?;
        Ok(catalogue)
    }
}

/// The catalogue from `topics_dir` (or the built-in one), checked for every role, with
/// `prefix` applied.
pub fn catalogue(
    topics_dir: Option<&std::path::Path>,
    prefix: &str,
) -> Result<Catalogue, guardian_topics::CatalogueError> {
    let registry = Registry::embedded();
    let catalogue = match topics_dir {
        Some(dir) => Catalogue::load_dir(dir, registry)?,
        None => Catalogue::embedded(registry)?,
    };
    catalogue.require_all_roles()?;
    catalogue.with_prefix(prefix)
}

/// Refuses to start when a topic the command needs is missing or differs from the
/// catalogue.
pub async fn require_topics(admin: &Admin, catalogue: &Catalogue, needed: &[TopicId]) -> Result<(), KafkaClientError> {
    let names: Vec<String> = needed
        .iter()
        .map(|id| catalogue.topic(*id))
        .collect::<Result<_, _>>()
        .map_err(|e| KafkaClientError::Config(e.to_string()))?;
    let view = admin.observe(&names).await?;
    let full = plan(catalogue, &view.topics, view.brokers);
    let mut problems = Vec::new();
    for change in &full.changes {
        let name = match change {
            Change::Create { name, .. } | Change::AddPartitions { name, .. } | Change::SetConfig { name, .. } => name,
        };
        if names.contains(name) {
            problems.push(change.to_string());
        }
    }
    problems.extend(full.drift.iter().map(|d| d.to_string()));
    if !problems.is_empty() {
        return Err(KafkaClientError::Topic {
            topic: names.join(", "),
            error: format!("topics differ from the catalogue (run `guardian topics apply`): {}", problems.join("; ")),
        });
    }
    Ok(())
}
