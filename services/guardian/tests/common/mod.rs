//! Helpers shared by the `guardian` binary's integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on `addr`: the status code and the body, or None when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with a bearer token.
pub fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Whether the service's `/readyz` answers 200.
pub fn ready(addr: &str) -> bool {
    http_get(addr, "/readyz").is_some_and(|(status, _)| status == 200)
}

/// Polls `f` until it returns `Some` or `deadline` passes (then panics naming `what`).
pub async fn wait_for<T>(what: &str, deadline: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `guardian` binary on the stack's broker under a topic prefix, logging warnings
/// only, with nothing from the caller's environment that would change the topics.
pub fn guardian_on(stack: &guardian_testkit::Stack, prefix: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_guardian"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .env("GUARDIAN_KAFKA_BOOTSTRAP", &stack.kafka_bootstrap)
        .env("GUARDIAN_TOPIC_PREFIX", prefix)
        .env_remove("GUARDIAN_TOPICS_DIR");
    c
}

/// Runs `c`; fails the test with its output unless it succeeds; returns its stdout.
pub fn run_ok(mut c: std::process::Command) -> String {
    let out = c.output().expect("run guardian");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{:?} failed: {}\n{stdout}", c, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A child process, killed if the test ends (or panics) without stopping it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The full name of a topic of the shipped catalogue under `prefix`.
pub fn topic_name(prefix: &str, id: guardian_topics::TopicId) -> String {
    guardian_topics::Catalogue::embedded(guardian_schemas::registry::Registry::embedded())
        .and_then(|c| c.with_prefix(prefix))
        .and_then(|c| c.topic(id))
        .expect("the shipped catalogue has every role")
}

/// Waits until the dead-letter topic `dlq` holds at least `n` letters; returns them all.
pub async fn dead_letters(
    stack: &guardian_testkit::Stack,
    dlq: &str,
    n: usize,
) -> Vec<guardian_schemas::records::DeadLetter> {
    let codec = guardian_schemas::Codec::embedded();
    let settings = guardian_kafka::KafkaSettings::new(&stack.kafka_bootstrap, "it-dead-letters");
    wait_for(&format!("{n} dead letters"), Duration::from_secs(60), async || {
        let records = guardian_kafka::reader::read_range(&settings, "it-dead-letters", &[dlq], None).await.ok()?;
        let letters: Vec<_> = records.iter().map(|m| codec.decode(&m.payload).unwrap()).collect();
        (letters.len() >= n).then_some(letters)
    })
    .await
}

/// A privacy accountant (`guardian accountant`) on the stack under `prefix`, in a database
/// schema of its own, ready; `limits` are its limit flags. Returns it and that schema's URL.
pub fn accountant(stack: &guardian_testkit::Stack, prefix: &str, limits: &[&str]) -> (KillOnDrop, String) {
    let schema = guardian_testkit::unique("it_acc").replace('-', "_");
    let url = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(guardian_pg::with_new_schema(&stack.database_url, &schema))
        .expect("a schema for the accountant");
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("{schema}.log"));
    // A consumer group of its own: a shared one would wait out the members of earlier
    // tests' accountants before it gets the partitions.
    let group = guardian_topics::ServiceId::Accountant.group_for(&schema);
    let child = guardian_on(stack, prefix, &["accountant", "--database-url", &url, "--listen", &listen])
        .args(["--group", &group])
        .args(limits)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the accountant's log file"))
        .spawn()
        .expect("start the accountant");
    let child = KillOnDrop(child);
    let started = Instant::now();
    while !ready(&listen) {
        assert!(started.elapsed() < Duration::from_secs(60), "the accountant did not become ready: {}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, url)
}
