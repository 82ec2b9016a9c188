//! Helpers for tests against the real local stack (`tests/stack/stack.sh up`).
//!
//! Endpoints come from the `GUARDIAN_*` environment variables, or from the stack's env
//! file (`$GUARDIAN_STACK_DIR/env`, default `<repo>/.stack/env`). A test that needs the
//! stack and cannot find it fails with a message saying how to start it: it never passes
//! by skipping.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng;

/// Endpoints of the local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka_bootstrap: String,
    pub database_url: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// The DR region's Kafka (`stack.sh up --dr`), when it runs.
    pub kafka_dr_bootstrap: Option<String>,
    pub python: String,
    pub repo: PathBuf,
    /// The stack's Prometheus and Alertmanager (`http://127.0.0.1:PORT`), and the folder
    /// Prometheus discovers targets in.
    pub prometheus_url: String,
    pub alertmanager_url: String,
    pub prometheus_sd_dir: PathBuf,
    /// Where Alertmanager posts its notifications (`127.0.0.1:PORT`; a test listens).
    pub alert_webhook: String,
    /// The trace collector: OTLP/HTTP in, Jaeger's query API out (`http://127.0.0.1:PORT`).
    pub otlp_endpoint: String,
    pub jaeger_url: String,
    /// The schema registry's Confluent-compatible API (`http://127.0.0.1:PORT/apis/ccompat/v7`).
    pub schema_registry_url: String,
}

/// The checkout the test runs in: found from the working directory (cargo runs tests in
/// their package's folder), not from a path compiled in, since the build cache may be
/// shared by checkouts in other places.
fn repo_root() -> PathBuf {
    let is_root = |d: &std::path::Path| d.join("tests/stack/stack.sh").is_file();
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_root(d)).map(PathBuf::from))
        .or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..").canonicalize().ok())
        .expect("the repository root (a folder with tests/stack/stack.sh above the working directory)")
}

fn env_file_values(path: &PathBuf) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else { return BTreeMap::new() };
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl Stack {
    /// The running stack, or a panic that says how to start it.
    pub fn get() -> Stack {
        let repo = repo_root();
        let stack_dir = std::env::var("GUARDIAN_STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| repo.join(".stack"));
        let file = env_file_values(&stack_dir.join("env"));
        let var = |k: &str| std::env::var(k).ok().or_else(|| file.get(k).cloned());
        let need = |k: &str| {
            var(k).unwrap_or_else(|| {
                panic!(
                    "{k} is not set and {} has no value for it: start the stack with `tests/stack/stack.sh up`",
                    stack_dir.join("env").display()
                )
            })
        };
        Stack {
            kafka_bootstrap: need("GUARDIAN_KAFKA_BOOTSTRAP"),
            database_url: need("GUARDIAN_DATABASE_URL"),
            s3_endpoint: need("GUARDIAN_S3_ENDPOINT"),
            s3_access_key: need("GUARDIAN_S3_ACCESS_KEY"),
            s3_secret_key: need("GUARDIAN_S3_SECRET_KEY"),
            kafka_dr_bootstrap: var("GUARDIAN_KAFKA_DR_BOOTSTRAP"),
            python: var("GUARDIAN_PYTHON").unwrap_or_else(|| "python3".into()),
            repo,
            prometheus_url: need("GUARDIAN_PROMETHEUS_URL"),
            alertmanager_url: need("GUARDIAN_ALERTMANAGER_URL"),
            prometheus_sd_dir: PathBuf::from(need("GUARDIAN_PROMETHEUS_SD_DIR")),
            alert_webhook: need("GUARDIAN_ALERT_WEBHOOK"),
            otlp_endpoint: need("GUARDIAN_OTLP_ENDPOINT"),
            jaeger_url: need("GUARDIAN_JAEGER_URL"),
            schema_registry_url: need("GUARDIAN_SCHEMA_REGISTRY_URL"),
        }
    }
}

/// Percent-encodes a query parameter's value (RFC 3986 unreserved characters stay).
pub fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET of `path` (with its query) on an `http://host:port` base URL, as HTTP/1.0 (so
/// the body comes unchunked): the status and the body, or `None` if nothing answers.
pub fn http_get_url(base: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A name no other test run uses: `<base>-<12 random hex>`.
pub fn unique(base: &str) -> String {
    format!("{base}-{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// Polls `check` until it returns `Some` or `deadline` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a file exists (a probe's marker), or panics.
pub async fn wait_for_file(path: &std::path::Path, deadline: Duration) {
    let p = path.to_path_buf();
    eventually(&format!("{}", path.display()), deadline, || {
        let exists = p.exists();
        async move { exists.then_some(()) }
    })
    .await
}
