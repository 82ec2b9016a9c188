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
    wait_ready([&listen], &format!("the accountant (log: {})", log.display()));
    (child, url)
}

/// A federation for a test: the topics applied under `prefix`, keys for the hospitals and
/// the aggregator (with their registry) in a temporary folder, removed on drop.
pub struct Federation {
    pub prefix: String,
    pub keys: std::path::PathBuf,
    pub registry: std::path::PathBuf,
}

impl Federation {
    pub fn new(stack: &guardian_testkit::Stack, prefix: &str, hospitals: &[&str]) -> Self {
        let keys = std::env::temp_dir().join(guardian_testkit::unique("fl-keys"));
        let fed = Federation { prefix: prefix.to_string(), registry: keys.join("registry.toml"), keys };
        run_ok(fed.guardian(stack, &["topics", "apply"]));
        let dir = fed.keys.to_str().expect("a UTF-8 temp path").to_string();
        run_ok(fed.guardian(stack, &["fl", "keygen", "--dir", &dir, "--hospitals", &hospitals.join(",")]));
        fed
    }

    /// `guardian` under the prefix with the stack's S3 settings and the models' bucket, and
    /// none of the caller's fault-injection variables.
    pub fn guardian(&self, stack: &guardian_testkit::Stack, args: &[&str]) -> std::process::Command {
        let mut c = guardian_on(stack, &self.prefix, args);
        c.env("GUARDIAN_S3_ENDPOINT", &stack.s3_endpoint)
            .env("GUARDIAN_S3_ACCESS_KEY", &stack.s3_access_key)
            .env("GUARDIAN_S3_SECRET_KEY", &stack.s3_secret_key)
            .env("GUARDIAN_MODEL_BUCKET", "guardian-it-models")
            .env_remove("GUARDIAN_FL_FAULT")
            .env_remove("GUARDIAN_ALLOW_MISBEHAVE");
        c
    }

    fn path(&self, file: &str) -> String {
        self.keys.join(file).to_str().expect("a UTF-8 temp path").to_string()
    }

    /// `fl agent` for `hospital` with its key, on a free port, plus `extra` flags; returns
    /// the command and the address its probes listen on.
    pub fn agent(
        &self,
        stack: &guardian_testkit::Stack,
        hospital: &str,
        extra: &[&str],
    ) -> (std::process::Command, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let (key, registry) = (self.path(&format!("{hospital}.key")), self.path("registry.toml"));
        let mut c = self.guardian(
            stack,
            &["fl", "agent", "--hospital", hospital, "--identity", &key, "--registry", &registry, "--listen", &listen],
        );
        c.args(extra);
        (c, listen)
    }

    /// `fl agent` for `hospital` sending `update` (written to an `.npy` file in the keys
    /// folder) in hospital-unit rounds, under its own ε limit `epsilon_limit`.
    pub fn update_agent(
        &self,
        stack: &guardian_testkit::Stack,
        hospital: &str,
        update: &[f32],
        epsilon_limit: &str,
    ) -> (std::process::Command, String) {
        let file = self.path(&format!("{hospital}-update.npy"));
        std::fs::write(&file, guardian_fl::npy::write(update)).expect("write the update file");
        self.agent(stack, hospital, &["--update", &file, "--epsilon-limit", epsilon_limit])
    }

    /// `fl start` of `session` with the aggregator's key, plus `extra` flags.
    pub fn start(&self, stack: &guardian_testkit::Stack, session: &str, extra: &[&str]) -> std::process::Command {
        let (key, registry) = (self.path("aggregator.key"), self.path("registry.toml"));
        let mut c =
            self.guardian(stack, &["fl", "start", "--identity", &key, "--registry", &registry, "--session", session]);
        c.args(extra);
        c
    }

    /// A file in the keys folder (removed with it).
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.keys.join(name)
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

/// Waits until every address's `/readyz` answers 200 (a minute at most).
pub fn wait_ready<'a>(addresses: impl IntoIterator<Item = &'a String> + Clone, what: &str) {
    let started = Instant::now();
    while !addresses.clone().into_iter().all(|a| ready(a)) {
        assert!(started.elapsed() < Duration::from_secs(60), "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of the session table `fl start` prints, as cells: round, outcome, version,
/// survivors, dropped, accuracy, misbehaved.
pub fn session_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| round"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// A variable of the stack's env file (the process environment first).
pub fn stack_env(name: &str) -> String {
    let file = guardian_testkit::Stack::get().repo.join(".stack/env");
    std::env::var(name).ok().unwrap_or_else(|| {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")).map(|v| v.trim_matches('\'').to_string()))
            .unwrap_or_else(|| panic!("{name} is not set: start the stack with `tests/stack/stack.sh up --secure`"))
    })
}

/// Runs `cmd`; fails the test with its output unless it succeeds; returns its stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tests/stack/kafka-admin.sh` (Kafka's own ACL and SCRAM tools), `stdin` on its input.
pub fn kafka_admin(args: &[&str], stdin: Option<&str>) {
    let script = guardian_testkit::Stack::get().repo.join("tests/stack/kafka-admin.sh");
    let mut child = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .env("GUARDIAN_KAFKA_LIBS", stack_env("GUARDIAN_KAFKA_LIBS"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(format!("{text}\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kafka-admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
