//! Glue shared by the subcommands: settings, the catalogue, the topic check every
//! service runs before it starts.

use anyhow::{Context, Result, bail};
use guardian_kafka::KafkaSettings;
use guardian_kafka::admin::Admin;
use guardian_schemas::Registry;
use guardian_topics::{Catalogue, TopicId, plan};

use crate::cli::KafkaArgs;

pub fn settings(args: &KafkaArgs, client: &str) -> KafkaSettings {
    let mut s = KafkaSettings::new(&args.bootstrap_servers, client);
    if let Some(protocol) = &args.kafka_security_protocol {
        s.overrides.insert("security.protocol".into(), protocol.clone());
        if protocol.starts_with("sasl") {
            s.overrides.insert("sasl.mechanism".into(), args.kafka_sasl_mechanism.clone());
        }
    }
    if let Some(user) = &args.kafka_username {
        s.overrides.insert("sasl.username".into(), user.clone());
    }
    if let Some(password) = &args.kafka_password {
        s.overrides.insert("sasl.password".into(), password.clone());
    }
    if let Some(ca) = &args.kafka_ca {
        s.overrides.insert("ssl.ca.location".into(), ca.display().to_string());
    }
    s.overrides.extend(args.kafka_config.iter().cloned());
    s
}

pub fn catalogue(topics_dir: Option<&std::path::Path>, prefix: &str) -> Result<Catalogue> {
    let registry = Registry::embedded();
    let catalogue = match topics_dir {
        Some(dir) => Catalogue::load_dir(dir, registry)?,
        None => Catalogue::embedded(registry)?,
    };
    catalogue.require_all_roles()?;
    Ok(catalogue.with_prefix(prefix)?)
}

pub fn kafka_catalogue(args: &KafkaArgs) -> Result<Catalogue> {
    catalogue(args.topics_dir.as_deref(), &args.topic_prefix)
}

/// Refuses to start when a topic the command needs is missing or differs from the
/// catalogue (the rule: topics are declared, not improvised).
pub async fn require_topics(admin: &Admin, catalogue: &Catalogue, needed: &[TopicId]) -> Result<()> {
    let names: Vec<String> = needed.iter().map(|id| catalogue.topic(*id)).collect::<Result<_, _>>()?;
    let view = admin.observe(&names).await?;
    let full = plan(catalogue, &view.topics, view.brokers);
    let mut problems = Vec::new();
    for change in &full.changes {
        let name = match change {
            guardian_topics::Change::Create { name, .. }
            | guardian_topics::Change::AddPartitions { name, .. }
            | guardian_topics::Change::SetConfig { name, .. } => name,
        };
        if names.contains(name) {
            problems.push(change.to_string());
        }
    }
    problems.extend(full.drift.iter().map(|d| d.to_string()));
    if !problems.is_empty() {
        bail!("topics differ from the catalogue (run `guardian topics apply`): {}", problems.join("; "));
    }
    Ok(())
}

/// The hospitals' signing keys from a registry file, when one is given.
pub fn signers(path: Option<&std::path::Path>) -> Result<Option<guardian_kafka::signing::Signers>> {
    let Some(path) = path else { return Ok(None) };
    let signers = guardian_kafka::signing::Signers::load(path).map_err(anyhow::Error::msg)?;
    if signers.is_empty() {
        anyhow::bail!("{}: no hospital keys: every record would be dead-lettered", path.display());
    }
    tracing::info!(hospitals = signers.len(), registry = %path.display(), "records must be signed by their hospital");
    Ok(Some(signers))
}

pub async fn admin(args: &KafkaArgs) -> Result<Admin> {
    Admin::connect(&settings(args, "guardian-admin")).await.context("kafka")
}

/// A service's process plumbing: signal handlers, then `/metrics`, `/healthz` and
/// `/readyz` (plus `extra` routes) on `listen`. Returns the shutdown, the readiness flag
/// the service sets when it is ready, and the bound address.
pub async fn serve_ops(
    listen: std::net::SocketAddr,
    extra: Option<axum::Router>,
) -> Result<(guardian_runtime::Shutdown, guardian_runtime::http::Readiness, std::net::SocketAddr)> {
    use guardian_runtime::http::{Readiness, install_metrics, ops_router, serve};
    let shutdown = guardian_runtime::Shutdown::on_signals();
    let readiness = Readiness::default();
    let mut router = ops_router(install_metrics(), readiness.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let bound = serve(listen, router, shutdown.clone()).await.with_context(|| format!("cannot listen on {listen}"))?;
    Ok((shutdown, readiness, bound))
}

/// A plain HTTP/1.1 GET on loopback (probes, benchmarks): the status and the body, or
/// `None` when the server cannot be reached or answers nothing readable within 2 s.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, std::time::Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}
