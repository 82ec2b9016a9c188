//! `guardian doctor`: a production readiness check of a live deployment, from the
//! outside, grouped like a readiness review (infrastructure, security, compliance,
//! observability, resilience, privacy). Each check passes, warns, fails or is skipped
//! (nothing configured to check); the result is a table or JSON lines, and the exit code:
//! 0 ready, 1 warnings under `--strict`, 2 not ready.
//!
//! Checked: Kafka reachable over the configured protocol, every catalogue topic as
//! declared (partitions, replication, configs) and topic auto-creation off; PostgreSQL
//! reachable, row-level security on every tenant table and the tenant and aggregate roles;
//! the S3 buckets; each named service's `/readyz` and `/metrics`; Prometheus's guardian
//! rules and targets; MirrorMaker 2's heartbeats in the DR region; the privacy budgets.
//! The principals' ACLs against those `guardian topics acls` derives (read over Kafka's
//! wire protocol, `guardian_kafka::wire`); no listener without authentication beside the
//! SASL ones; the archive's object lock; each topic's schema registry subject (its value
//! schema registered, its compatibility level as the topic file declares).

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use guardian_kafka::KafkaArgs;
use guardian_objects::S3Args;
use guardian_topics::{ServiceId, plan};

/// `guardian doctor`'s settings.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL (the services' database); without it the database checks are skipped
    #[arg(long, env = "GUARDIAN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// The archive's bucket (checked with the model bucket)
    #[arg(long, env = "GUARDIAN_ARCHIVE_BUCKET", default_value = "guardian-archive")]
    pub archive_bucket: String,
    /// A service's ops endpoint (`http://host:port`), whose /readyz and /metrics are
    /// checked (repeatable)
    #[arg(long = "service", value_name = "URL")]
    pub services: Vec<String>,
    /// Prometheus (`http://host:port`): the guardian rules loaded, the targets up
    #[arg(long, env = "GUARDIAN_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// The DR region's Kafka, where MirrorMaker 2 writes its heartbeats
    #[arg(long, env = "GUARDIAN_KAFKA_DR_BOOTSTRAP")]
    pub dr_bootstrap_servers: Option<String>,
    /// Oldest MirrorMaker 2 heartbeat that passes, in seconds (the replication RPO)
    #[arg(long, default_value_t = 60.0)]
    pub max_heartbeat_age_secs: f64,
    /// Every hospital of the federation, comma-separated: their principals' ACLs are
    /// checked too, and a grant to any other hospital principal (one revoked) warns
    /// (without, the services' only)
    #[arg(long, env = "GUARDIAN_HOSPITALS", value_delimiter = ',')]
    pub hospitals: Vec<String>,
    /// Exit 1 on warnings (exit 2 on failures either way)
    #[arg(long)]
    pub strict: bool,
    /// One JSON object per check instead of the table
    #[arg(long)]
    pub json: bool,
}

/// The privacy budgets as (scope, ε spent, level), or the database's error.
pub type BudgetLevels = Pin<Box<dyn Future<Output = Result<Vec<(String, f64, String)>, sqlx::Error>> + Send>>;

/// What the review reads through the services' own read APIs, handed in by the binary (an
/// ops tool does not depend on service crates).
pub struct ServiceReads {
    /// The tables each service scopes to a hospital (row-level security).
    pub tenant_tables: Vec<&'static str>,
    /// The accountant's budgets, read from its database.
    pub budget_levels: Box<dyn Fn(sqlx::PgPool) -> BudgetLevels + Send + Sync>,
}

impl fmt::Debug for ServiceReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceReads").field("tenant_tables", &self.tenant_tables).finish_non_exhaustive()
    }
}

/// The review's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Infrastructure,
    Security,
    Compliance,
    Observability,
    Resilience,
    Privacy,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Infrastructure => "infrastructure",
            Group::Security => "security",
            Group::Compliance => "compliance",
            Group::Observability => "observability",
            Group::Resilience => "resilience",
            Group::Privacy => "privacy",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Nothing was configured to check.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        })
    }
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub group: Group,
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

fn check(group: Group, name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check { group, name, status, detail: detail.into() }
}

/// `GET path` on `base` (`http://host:port` or `host:port`) as HTTP/1.0: the status and
/// the body, or why nothing usable came back within 5 s.
fn http_get(base: &str, path: &str) -> Result<(u16, String), String> {
    let host = base.strip_prefix("http://").unwrap_or(base).trim_end_matches('/');
    if host.starts_with("https://") {
        return Err("https is not supported: give the ops endpoint's http address".into());
    }
    let addr =
        host.to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.next().ok_or(format!("{host}: no address"))?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("{host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{host}: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("{host}: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("{host}: not an HTTP answer"))?;
    Ok((status, out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string()))
}

fn json_of(base: &str, path: &str) -> Result<serde_json::Value, String> {
    match http_get(base, path)? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{path}: {e}")),
        (status, body) => Err(format!("{path}: HTTP {status}: {}", body.chars().take(200).collect::<String>())),
    }
}

async fn kafka_checks(args: &DoctorArgs, out: &mut Vec<Check>) {
    use Group::*;
    let protocol = args.kafka.kafka_security_protocol.as_deref().unwrap_or("plaintext");
    out.push(if protocol.starts_with("sasl") {
        check(Security, "kafka.authentication", Status::Pass, format!("clients authenticate ({protocol})"))
    } else {
        check(Security, "kafka.authentication", Status::Warn, format!("{protocol}: clients are not authenticated"))
    });
    let admin = match args.kafka.admin(&ServiceId::Ops.client_for("doctor")).await {
        Ok(a) => a,
        Err(e) => {
            out.push(check(Infrastructure, "kafka.reachable", Status::Fail, e.to_string()));
            return;
        }
    };
    let catalogue = match args.kafka.catalogue() {
        Ok(c) => c,
        Err(e) => {
            out.push(check(Infrastructure, "kafka.topics", Status::Fail, format!("the topic catalogue: {e}")));
            return;
        }
    };
    let names: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    match admin.observe(&names).await {
        Err(e) => out.push(check(Infrastructure, "kafka.reachable", Status::Fail, e.to_string())),
        Ok(view) => {
            out.push(check(
                Infrastructure,
                "kafka.reachable",
                Status::Pass,
                format!("{} broker(s) at {}", view.brokers, args.kafka.bootstrap_servers),
            ));
            let p = plan(&catalogue, &view.topics, view.brokers);
            let mut differences: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
            differences.extend(p.drift.iter().map(ToString::to_string));
            out.push(if differences.is_empty() {
                check(Infrastructure, "kafka.topics", Status::Pass, format!("all {} topics as declared", names.len()))
            } else {
                check(Infrastructure, "kafka.topics", Status::Fail, differences.join("; "))
            });
        }
    }
    match admin.broker_configs().await {
        Ok(configs) => {
            out.push(auto_create(&configs));
            out.push(listeners(&configs));
        }
        Err(e) => {
            out.push(check(
                Infrastructure,
                "kafka.auto-create",
                Status::Warn,
                format!("broker configs unreadable: {e}"),
            ));
            out.push(check(Security, "kafka.listeners", Status::Warn, format!("broker configs unreadable: {e}")));
        }
    }
    out.push(acl_check(args, &catalogue).await);
}

async fn registry_check(args: &DoctorArgs) -> Check {
    use Group::Compliance;
    let catalogue = match args.kafka.catalogue() {
        Ok(c) => c,
        Err(e) => {
            return check(Compliance, "schema-registry.subjects", Status::Fail, format!("the topic catalogue: {e}"));
        }
    };
    let client = match args.kafka.registry_client() {
        Ok(Some(c)) => c,
        Ok(None) => return check(Compliance, "schema-registry.subjects", Status::Skip, "no --schema-registry-url"),
        Err(e) => return check(Compliance, "schema-registry.subjects", Status::Fail, e.to_string()),
    };
    let subjects = match guardian_registry::subjects(&catalogue, guardian_schemas::Registry::embedded()) {
        Ok(s) => s,
        Err(e) => return check(Compliance, "schema-registry.subjects", Status::Fail, e.to_string()),
    };
    match guardian_registry::differences(&client, &subjects).await {
        Err(e) => check(Compliance, "schema-registry.subjects", Status::Fail, e.to_string()),
        Ok(d) if d.is_empty() => check(
            Compliance,
            "schema-registry.subjects",
            Status::Pass,
            format!(
                "all {} subjects hold their schema at their compatibility level ({})",
                subjects.len(),
                client.url()
            ),
        ),
        Ok(d) => {
            let more =
                if d.len() > 5 { format!("; and {} more (guardian topics apply)", d.len() - 5) } else { String::new() };
            let detail = format!("{}{more}", d.into_iter().take(5).collect::<Vec<_>>().join("; "));
            check(Compliance, "schema-registry.subjects", Status::Fail, detail)
        }
    }
}

type BrokerConfigs = [(i32, std::collections::BTreeMap<String, String>)];

fn auto_create(configs: &BrokerConfigs) -> Check {
    let on: Vec<String> = configs
        .iter()
        .filter(|(_, c)| c.get("auto.create.topics.enable").map(String::as_str) != Some("false"))
        .map(|(b, _)| b.to_string())
        .collect();
    if on.is_empty() {
        check(Group::Infrastructure, "kafka.auto-create", Status::Pass, "topic auto-creation is off on every broker")
    } else {
        let detail =
            format!("topic auto-creation is on (brokers {}): a typo in a topic name creates a topic", on.join(", "));
        check(Group::Infrastructure, "kafka.auto-create", Status::Fail, detail)
    }
}

/// A broker's listeners that authenticate no one, as `NAME://host:port (PROTOCOL)`, each
/// with whether it is bound to loopback only. SSL counts as authenticated when it
/// requires client certificates.
fn open_listeners(config: &std::collections::BTreeMap<String, String>) -> (Vec<(String, bool)>, usize) {
    let map: std::collections::BTreeMap<String, String> = config
        .get("listener.security.protocol.map")
        .map(|m| {
            m.split(',')
                .filter_map(|pair| pair.split_once(':'))
                .map(|(l, p)| (l.trim().to_uppercase(), p.trim().to_uppercase()))
                .collect()
        })
        .unwrap_or_default();
    let mut open = Vec::new();
    let mut authenticated = 0;
    for listener in config.get("listeners").map_or("", String::as_str).split(',').map(str::trim) {
        let Some((name, address)) = listener.split_once("://") else { continue };
        let name = name.to_uppercase();
        let protocol = map.get(&name).cloned().unwrap_or_else(|| name.clone());
        let client_auth = config
            .get(&format!("listener.name.{}.ssl.client.auth", name.to_lowercase()))
            .or_else(|| config.get("ssl.client.auth"))
            .map(String::as_str);
        let authenticates = protocol.starts_with("SASL_") || (protocol == "SSL" && client_auth == Some("required"));
        if authenticates {
            authenticated += 1;
            continue;
        }
        let host = address.rsplit_once(':').map_or("", |(h, _)| h).trim_matches(['[', ']']);
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        open.push((format!("{name}://{address} ({protocol})"), loopback));
    }
    (open, authenticated)
}

fn listeners(configs: &BrokerConfigs) -> Check {
    use Group::Security;
    let mut exposed = Vec::new();
    let mut local = Vec::new();
    let mut authenticated = 0;
    for (broker, config) in configs {
        let (open, n) = open_listeners(config);
        authenticated += n;
        let anonymous_super =
            config.get("super.users").is_some_and(|s| s.split(';').any(|u| u.trim() == "User:ANONYMOUS"));
        for (listener, loopback) in open {
            let who = if anonymous_super { ", whose ANONYMOUS principal is a super user" } else { "" };
            let line = format!("broker {broker}: {listener}{who}");
            if loopback { local.push(line) } else { exposed.push(line) }
        }
    }
    if authenticated == 0 {
        return check(
            Security,
            "kafka.listeners",
            Status::Skip,
            "no listener authenticates clients (see kafka.authentication)",
        );
    }
    if !exposed.is_empty() {
        let detail = format!("listeners without authentication beside the authenticated ones: {}", exposed.join("; "));
        return check(Security, "kafka.listeners", Status::Fail, detail);
    }
    if !local.is_empty() {
        let detail =
            format!("loopback-only listeners without authentication (anyone on the host): {}", local.join("; "));
        return check(Security, "kafka.listeners", Status::Warn, detail);
    }
    check(Security, "kafka.listeners", Status::Pass, format!("all {authenticated} client listener(s) authenticate"))
}

async fn acl_check(args: &DoctorArgs, catalogue: &guardian_topics::Catalogue) -> Check {
    use Group::Security;
    use guardian_kafka::wire::AclsError;
    use guardian_topics::access;
    let settings = args.kafka.settings(&ServiceId::Ops.client_for("doctor"));
    let acls = match guardian_kafka::wire::describe_acls(&settings).await {
        Ok(acls) => acls,
        Err(e @ (AclsError::NoAuthorizer | AclsError::NotAllowed(_))) => {
            return check(Security, "kafka.acls", Status::Warn, e.to_string());
        }
        Err(e) => return check(Security, "kafka.acls", Status::Warn, format!("ACLs unreadable: {e}")),
    };
    let topics: Vec<String> = catalogue.specs().map(|s| catalogue.name_of(s)).collect();
    let expected = access::bindings(catalogue.specs().map(|s| (catalogue.name_of(s), &s.access)), &args.hospitals);
    let review = access::review_acls(&expected, &topics, &acls, !args.hospitals.is_empty());
    let whose = if args.hospitals.is_empty() {
        "services' (no --hospitals)".to_string()
    } else {
        format!("services' and {} hospitals'", args.hospitals.len())
    };
    let listed = |items: Vec<String>| {
        let more = if items.len() > 5 { format!("; and {} more", items.len() - 5) } else { String::new() };
        format!("{}{more}", items.into_iter().take(5).collect::<Vec<_>>().join("; "))
    };
    if !review.missing.is_empty() {
        let n = review.missing.len();
        let items = review.missing.into_iter().map(|(b, why)| format!("{b}: {why}")).collect();
        let detail =
            format!("{n} of {} derived grant(s) missing (guardian topics acls): {}", expected.len(), listed(items));
        return check(Security, "kafka.acls", Status::Fail, detail);
    }
    if !review.extra.is_empty() {
        let n = review.extra.len();
        let detail = format!(
            "{n} ACL(s) grant more than derived: {}",
            listed(review.extra.iter().map(ToString::to_string).collect())
        );
        return check(Security, "kafka.acls", Status::Warn, detail);
    }
    check(
        Security,
        "kafka.acls",
        Status::Pass,
        format!("the {whose} {} derived grant(s) hold, none broader", expected.len()),
    )
}

async fn postgres_checks(args: &DoctorArgs, reads: &ServiceReads, out: &mut Vec<Check>) {
    let tenant_tables = reads.tenant_tables.as_slice();
    use Group::*;
    let Some(url) = &args.database_url else {
        out.push(check(Infrastructure, "postgres.reachable", Status::Skip, "no --database-url"));
        return;
    };
    let pool = match guardian_pg::connect(url, 1).await {
        Ok(p) => p,
        Err(e) => {
            out.push(check(Infrastructure, "postgres.reachable", Status::Fail, e.to_string()));
            return;
        }
    };
    out.push(check(Infrastructure, "postgres.reachable", Status::Pass, guardian_pg::connect::redact(url)));
    let rows: Result<Vec<(String, bool)>, _> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity FROM pg_class c
         WHERE c.relname = ANY($1) AND c.relkind = 'r' AND pg_table_is_visible(c.oid)",
    )
    .bind(tenant_tables)
    .fetch_all(&pool)
    .await;
    out.push(match rows {
        Err(e) => check(Compliance, "postgres.row-level-security", Status::Fail, e.to_string()),
        Ok(rows) => {
            let mut problems = Vec::new();
            for t in tenant_tables {
                match rows.iter().find(|r| r.0 == *t) {
                    None => problems.push(format!("{t} is missing (run guardian db migrate)")),
                    Some((_, false)) => problems.push(format!("{t} has row-level security disabled")),
                    Some(_) => {}
                }
            }
            if problems.is_empty() {
                check(
                    Compliance,
                    "postgres.row-level-security",
                    Status::Pass,
                    format!("enforced on {}", tenant_tables.join(", ")),
                )
            } else {
                check(Compliance, "postgres.row-level-security", Status::Fail, problems.join("; "))
            }
        }
    });
    let roles: Result<Vec<String>, _> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)")
            .bind([guardian_pg::tenancy::TENANT_GROUP, guardian_pg::tenancy::AGGREGATE_GROUP])
            .fetch_all(&pool)
            .await;
    out.push(match roles {
        Err(e) => check(Compliance, "postgres.roles", Status::Fail, e.to_string()),
        Ok(found) => {
            let missing: Vec<&str> = [guardian_pg::tenancy::TENANT_GROUP, guardian_pg::tenancy::AGGREGATE_GROUP]
                .into_iter()
                .filter(|r| !found.iter().any(|f| f == r))
                .collect();
            if missing.is_empty() {
                check(Compliance, "postgres.roles", Status::Pass, "the tenant and aggregate roles exist")
            } else {
                check(Compliance, "postgres.roles", Status::Fail, format!("missing role(s): {}", missing.join(", ")))
            }
        }
    });
    out.push(match (reads.budget_levels)(pool.clone()).await {
        Err(e) => check(Privacy, "privacy.budgets", Status::Fail, e.to_string()),
        Ok(levels) if levels.is_empty() => check(Privacy, "privacy.budgets", Status::Skip, "no budgets recorded"),
        Ok(levels) => {
            let high: Vec<String> = levels
                .iter()
                .filter(|(_, _, level)| matches!(level.as_str(), "HIGH" | "CRITICAL" | "EXHAUSTED"))
                .map(|(scope, eps, level)| format!("{scope} {level} (ε {eps:.2})"))
                .collect();
            if high.is_empty() {
                check(
                    Privacy,
                    "privacy.budgets",
                    Status::Pass,
                    format!("{} budget(s) below their warning levels", levels.len()),
                )
            } else {
                let more = if high.len() > 5 { format!("; and {} more", high.len() - 5) } else { String::new() };
                let shown = high.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
                let detail = format!("{} of {} budget(s) high or spent: {shown}{more}", high.len(), levels.len());
                check(Privacy, "privacy.budgets", Status::Warn, detail)
            }
        }
    });
}

async fn s3_checks(args: &DoctorArgs, out: &mut Vec<Check>) {
    if args.s3.s3_endpoint.is_none() {
        out.push(check(Group::Infrastructure, "s3.buckets", Status::Skip, "no --s3-endpoint"));
        return;
    }
    let mut problems = Vec::new();
    for bucket in [&args.s3.model_bucket, &args.archive_bucket] {
        let listed = match args.s3.store(bucket) {
            Ok(store) => tokio::time::timeout(Duration::from_secs(10), store.list("guardian-doctor-probe/"))
                .await
                .map_err(|_| "no answer in 10 s".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = listed {
            problems.push(format!("{bucket}: {e}"));
        }
    }
    let reachable = problems.is_empty();
    out.push(if reachable {
        check(
            Group::Infrastructure,
            "s3.buckets",
            Status::Pass,
            format!("{} and {} readable", args.s3.model_bucket, args.archive_bucket),
        )
    } else {
        check(Group::Infrastructure, "s3.buckets", Status::Fail, problems.join("; "))
    });
    if !reachable {
        return;
    }
    let lock = match args.s3.store(&args.archive_bucket) {
        Ok(store) => tokio::time::timeout(Duration::from_secs(10), store.object_lock())
            .await
            .map_err(|_| "no answer in 10 s".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    let bucket = &args.archive_bucket;
    out.push(match lock {
        Ok(Some(retention)) => {
            check(Group::Compliance, "s3.archive-object-lock", Status::Pass, format!("{bucket}: {retention}"))
        }
        Ok(None) => check(
            Group::Compliance,
            "s3.archive-object-lock",
            Status::Warn,
            format!("{bucket} has no object lock: archived records can be deleted or overwritten"),
        ),
        Err(e) => check(
            Group::Compliance,
            "s3.archive-object-lock",
            Status::Warn,
            format!("{bucket}: object lock not readable ({e})"),
        ),
    });
}

fn service_checks(args: &DoctorArgs, out: &mut Vec<Check>) {
    use Group::Observability;
    if args.services.is_empty() {
        out.push(check(Observability, "services.ready", Status::Skip, "no --service"));
        return;
    }
    let mut unready = Vec::new();
    let mut silent = Vec::new();
    let mut samples = 0;
    for s in &args.services {
        match http_get(s, "/readyz") {
            Ok((200, _)) => {}
            Ok((status, body)) => unready.push(format!("{s}: /readyz {status} {}", body.trim())),
            Err(e) => unready.push(format!("{s}: {e}")),
        }
        // A service that has recorded nothing yet answers an empty page: still exporting.
        match http_get(s, "/metrics") {
            Ok((200, body)) => samples += body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count(),
            Ok((status, _)) => silent.push(format!("{s}: /metrics {status}")),
            Err(e) => silent.push(format!("{s}: {e}")),
        }
    }
    let n = args.services.len();
    out.push(if unready.is_empty() {
        check(Observability, "services.ready", Status::Pass, format!("{n} service(s) ready"))
    } else {
        check(Observability, "services.ready", Status::Fail, unready.join("; "))
    });
    out.push(if silent.is_empty() {
        check(
            Observability,
            "services.metrics",
            Status::Pass,
            format!("{n} service(s) export metrics ({samples} samples)"),
        )
    } else {
        check(Observability, "services.metrics", Status::Fail, silent.join("; "))
    });
}

fn prometheus_checks(args: &DoctorArgs, out: &mut Vec<Check>) {
    use Group::Observability;
    let Some(url) = &args.prometheus_url else {
        out.push(check(Observability, "prometheus.rules", Status::Skip, "no --prometheus-url"));
        return;
    };
    out.push(match json_of(url, "/api/v1/rules") {
        Err(e) => check(Observability, "prometheus.rules", Status::Fail, e),
        Ok(v) => {
            let alerts: Vec<&str> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .filter_map(|r| r["name"].as_str())
                .filter(|n| n.starts_with("Guardian"))
                .collect();
            if alerts.is_empty() {
                check(Observability, "prometheus.rules", Status::Fail, "no Guardian alerting rules loaded")
            } else {
                check(
                    Observability,
                    "prometheus.rules",
                    Status::Pass,
                    format!("{} Guardian alert rule(s) loaded", alerts.len()),
                )
            }
        }
    });
    out.push(match json_of(url, "/api/v1/targets?state=active") {
        Err(e) => check(Observability, "prometheus.targets", Status::Fail, e),
        Ok(v) => {
            let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            let down: Vec<String> = targets
                .iter()
                .filter(|t| t["health"] != "up")
                .map(|t| {
                    format!(
                        "{} ({})",
                        t["labels"]["instance"].as_str().unwrap_or("?"),
                        t["lastError"].as_str().unwrap_or("not scraped yet")
                    )
                })
                .collect();
            if targets.is_empty() {
                check(Observability, "prometheus.targets", Status::Warn, "no targets discovered")
            } else if down.is_empty() {
                check(Observability, "prometheus.targets", Status::Pass, format!("{} target(s) up", targets.len()))
            } else {
                check(
                    Observability,
                    "prometheus.targets",
                    Status::Warn,
                    format!("{} of {} target(s) down: {}", down.len(), targets.len(), down.join("; ")),
                )
            }
        }
    });
}

async fn mirror_checks(args: &DoctorArgs, out: &mut Vec<Check>) {
    use Group::Resilience;
    let Some(dr) = &args.dr_bootstrap_servers else {
        out.push(check(Resilience, "mirrormaker2.heartbeats", Status::Skip, "no --dr-bootstrap-servers"));
        return;
    };
    let settings = guardian_kafka::KafkaArgs { bootstrap_servers: dr.clone(), ..args.kafka.clone() }
        .settings(&ServiceId::Ops.client_for("doctor-dr"));
    let newest = guardian_kafka::reader::newest_timestamp(&settings, "doctor-heartbeats", "heartbeats").await;
    out.push(match newest {
        Err(e) => check(Resilience, "mirrormaker2.heartbeats", Status::Fail, format!("DR region {dr}: {e}")),
        Ok(None) => {
            check(Resilience, "mirrormaker2.heartbeats", Status::Fail, format!("no MirrorMaker 2 heartbeats in {dr}"))
        }
        Ok(Some(ts)) => {
            let age = (guardian_runtime::now_ms() - ts) as f64 / 1000.0;
            if age <= args.max_heartbeat_age_secs {
                check(Resilience, "mirrormaker2.heartbeats", Status::Pass, format!("last heartbeat {age:.1} s ago"))
            } else {
                check(
                    Resilience,
                    "mirrormaker2.heartbeats",
                    Status::Fail,
                    format!(
                        "last heartbeat {age:.0} s ago, over the {:.0} s allowed: is MirrorMaker 2 running?",
                        args.max_heartbeat_age_secs
                    ),
                )
            }
        }
    });
}

/// Every check, in review order.
pub async fn checks(args: &DoctorArgs, reads: &ServiceReads) -> Vec<Check> {
    let mut out = Vec::new();
    kafka_checks(args, &mut out).await;
    out.push(registry_check(args).await);
    postgres_checks(args, reads, &mut out).await;
    s3_checks(args, &mut out).await;
    service_checks(args, &mut out);
    prometheus_checks(args, &mut out);
    mirror_checks(args, &mut out).await;
    out.sort_by_key(|c| c.group);
    out
}

/// The exit code of a review: 2 on any failure, 1 on a warning under `strict`, else 0.
pub fn verdict(checks: &[Check], strict: bool) -> u8 {
    if checks.iter().any(|c| c.status == Status::Fail) {
        2
    } else if strict && checks.iter().any(|c| c.status == Status::Warn) {
        1
    } else {
        0
    }
}

/// Runs the review and prints it.
pub async fn run(args: DoctorArgs, reads: ServiceReads) -> ExitCode {
    let checks = checks(&args, &reads).await;
    let code = verdict(&checks, args.strict);
    if args.json {
        for c in &checks {
            let v = serde_json::json!({
                "group": c.group.to_string(), "check": c.name, "status": c.status.to_string().to_lowercase(), "detail": c.detail,
            });
            println!("{v}");
        }
    } else {
        println!("| group | check | status | detail |\n|---|---|---|---|");
        for c in &checks {
            println!("| {} | {} | {} | {} |", c.group, c.name, c.status, c.detail.replace('|', "/"));
        }
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        println!(
            "\ndoctor: {} ({} ok, {} warning(s), {} failure(s), {} skipped)",
            ["ready", "ready, with warnings (--strict)", "NOT READY"][code as usize],
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        );
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(pairs: &[(&str, &str)]) -> (i32, std::collections::BTreeMap<String, String>) {
        (1, pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn listeners_without_authentication_fail_unless_on_loopback() {
        let map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL:SASL_SSL,MTLS:SSL";
        let c = listeners(&[broker(&[("listeners", "SASL://0.0.0.0:9094"), ("listener.security.protocol.map", map)])]);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        let c = listeners(&[broker(&[
            ("listeners", "SASL://0.0.0.0:9094,PLAINTEXT://127.0.0.1:9092"),
            ("listener.security.protocol.map", map),
            ("super.users", "User:admin;User:ANONYMOUS"),
        ])]);
        assert_eq!(c.status, Status::Warn, "{}", c.detail);
        assert!(c.detail.contains("PLAINTEXT://127.0.0.1:9092 (PLAINTEXT), whose ANONYMOUS principal is a super user"));
        let c = listeners(&[broker(&[
            ("listeners", "SASL://:9094,PLAINTEXT://:9092,MTLS://10.0.0.1:9093"),
            ("listener.security.protocol.map", map),
        ])]);
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(
            c.detail.contains("PLAINTEXT://:9092") && c.detail.contains("MTLS://10.0.0.1:9093 (SSL)"),
            "{}",
            c.detail
        );
        // Client certificates required: SSL authenticates.
        let c = listeners(&[broker(&[
            ("listeners", "SASL://:9094,MTLS://10.0.0.1:9093"),
            ("listener.security.protocol.map", map),
            ("ssl.client.auth", "required"),
        ])]);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        // No SASL at all: nothing to compare (kafka.authentication warns).
        let c = listeners(&[broker(&[("listeners", "PLAINTEXT://:9092")])]);
        assert_eq!(c.status, Status::Skip);
    }

    #[test]
    fn failures_and_strict_warnings_decide_the_exit_code() {
        let c = |status| check(Group::Infrastructure, "x", status, "");
        assert_eq!(verdict(&[c(Status::Pass), c(Status::Skip)], true), 0);
        assert_eq!(verdict(&[c(Status::Pass), c(Status::Warn)], false), 0);
        assert_eq!(verdict(&[c(Status::Pass), c(Status::Warn)], true), 1);
        assert_eq!(verdict(&[c(Status::Warn), c(Status::Fail)], false), 2);
    }
}
