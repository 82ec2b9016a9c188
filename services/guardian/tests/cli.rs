//! The `guardian` binary as an operator meets it: bad input gives one clear error line
//! and a non-zero exit; `topics apply` / `topics verify` against the real local broker.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guardian_testkit::{Stack, unique};

fn guardian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(args)
        // Only what the test passes: no endpoint leaks in from the caller's environment.
        .env_remove("GUARDIAN_KAFKA_BOOTSTRAP")
        .env_remove("GUARDIAN_DATABASE_URL")
        .env_remove("GUARDIAN_TOPICS_DIR")
        .env_remove("GUARDIAN_TOPIC_PREFIX")
        .env("RUST_LOG", "off")
        .output()
        .expect("run guardian")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless the command failed with exactly one line on stderr, starting `error: `
/// and containing every one of `needles`.
fn assert_one_clear_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, got success; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line should mention {n:?}: {err}");
    }
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A copy of `topics/` in a fresh temporary folder.
fn topics_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("guardian-topics"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("topics")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn an_unknown_subcommand_is_refused() {
    let out = guardian(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.lines().next().unwrap().starts_with("error: unrecognized subcommand 'frobnicate'"), "{err}");
}

#[test]
fn help_names_the_subcommands() {
    let out = guardian(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in ["topics", "agent", "tail", "db", "demo", "dashboard", "chaos", "dr"] {
        assert!(help.contains(sub), "--help lists {sub}: {help}");
    }
    // The benchmarks are a binary of their own (guardian-bench), not in the production one.
    let out = guardian(&["bench"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_malformed_topic_file_is_named_with_its_problem() {
    let dir = topics_copy();
    std::fs::write(dir.join("encounters.toml"), "name = \"guardian.encounters\"\npartitions = \"six\"\n").unwrap();
    let out = guardian(&["topics", "list", "--topics-dir", dir.to_str().unwrap()]);
    assert_one_clear_error(&out, &["encounters.toml", "partitions"]);

    std::fs::write(dir.join("encounters.toml"), "this is [not toml").unwrap();
    let out = guardian(&["topics", "list", "--topics-dir", dir.to_str().unwrap()]);
    assert_one_clear_error(&out, &["encounters.toml"]);

    std::fs::remove_file(dir.join("encounters.toml")).unwrap();
    let out = guardian(&["topics", "list", "--topics-dir", dir.to_str().unwrap()]);
    assert_one_clear_error(&out, &["Encounters"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_config_file_is_one_clear_error_naming_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(unique("guardian-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kpi.toml");
    std::fs::write(&file, "# the service's settings\nlateness = 3\n").unwrap();
    for cmd in ["kpi", "accountant", "slo", "archive", "dashboard"] {
        let out = guardian(&[cmd, "--config", file.to_str().unwrap()]);
        assert_one_clear_error(&out, &["kpi.toml", "line 2", "lateness"]);
    }
    let out = guardian(&["fl", "agent", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_one_clear_error(&out, &["missing.toml"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_topic_folder_is_named() {
    let out = guardian(&["topics", "list", "--topics-dir", "/nonexistent/topics"]);
    assert_one_clear_error(&out, &["/nonexistent/topics"]);
}

#[test]
fn a_missing_broker_is_one_clear_error() {
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let out = guardian(&["topics", "verify", "--bootstrap-servers", &bootstrap]);
    assert_one_clear_error(&out, &[&bootstrap, "did not answer"]);
}

#[test]
fn a_wrong_database_url_is_one_clear_error_without_the_password() {
    let url = format!("postgres://guardian:s3cret@127.0.0.1:{}/guardian", closed_port());
    let out = guardian(&["db", "migrate", "--database-url", &url]);
    assert_one_clear_error(&out, &["cannot connect to postgres", "127.0.0.1"]);
    assert!(!stderr(&out).contains("s3cret"), "the password leaked: {}", stderr(&out));

    let out = guardian(&["db", "migrate", "--database-url", "mysql://nope"]);
    assert_one_clear_error(&out, &["invalid database url"]);
}

#[test]
fn secrets_are_read_from_files_named_by_file_variables() {
    let dir = std::env::temp_dir().join(unique("guardian-secret"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = closed_port();
    let file = dir.join("database-url");
    std::fs::write(&file, format!("postgres://guardian:fr0m-file@127.0.0.1:{port}/guardian\n")).unwrap();
    let run = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(["db", "migrate"])
            .env_remove("GUARDIAN_DATABASE_URL")
            .env("GUARDIAN_DATABASE_URL_FILE", file)
            .env("RUST_LOG", "off")
            .output()
            .expect("run guardian")
    };
    // The URL came from the file (its port is in the error), the password stays hidden,
    // and --help does not print the secret as a default.
    let out = run(&file);
    assert_one_clear_error(&out, &["cannot connect to postgres", &format!("127.0.0.1:{port}")]);
    assert!(!stderr(&out).contains("fr0m-file"), "{}", stderr(&out));
    let help = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["db", "migrate", "--help"])
        .env_remove("GUARDIAN_DATABASE_URL")
        .env("GUARDIAN_DATABASE_URL_FILE", &file)
        .output()
        .unwrap();
    assert!(help.status.success() && !stdout(&help).contains("fr0m-file"), "{}", stdout(&help));
    // A file that cannot be read is one clear error naming the variable.
    let out = run(&dir.join("missing"));
    assert_one_clear_error(&out, &["GUARDIAN_DATABASE_URL_FILE", "missing"]);
}

#[test]
fn a_bad_kafka_setting_is_refused() {
    let out = guardian(&["topics", "verify", "--bootstrap-servers", "127.0.0.1:1", "--kafka-config", "novalue"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected KEY=VALUE"), "{}", stderr(&out));
}

#[test]
fn topics_apply_is_idempotent_and_verify_reports_drift() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-cli"));
    let dir = topics_copy();
    let kafka = |sub: &str, extra: &[&str]| {
        let mut args = vec!["topics", sub, "--bootstrap-servers", &stack.kafka_bootstrap, "--topic-prefix", &prefix];
        args.extend(["--topics-dir", dir.to_str().unwrap()]);
        args.extend(extra);
        guardian(&args)
    };

    // Nothing exists yet: verify fails and says what is missing.
    let out = kafka("verify", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("{prefix}guardian.encounters")), "{}", stderr(&out));

    // A dry run changes nothing.
    let out = kafka("apply", &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("dry run"), "{}", stdout(&out));
    assert!(!kafka("verify", &[]).status.success(), "dry run must not create topics");

    let out = kafka("apply", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("create"), "apply prints the diff: {}", stdout(&out));
    let out = kafka("verify", &[]);
    assert!(out.status.success(), "after apply: {}", stderr(&out));
    let out = kafka("apply", &[]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("nothing to change"), "apply twice changes nothing: {}", stdout(&out));

    // The catalogue grows a topic: verify names the difference, apply fixes it.
    let file = dir.join("encounters.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace("partitions = 6", "partitions = 8");
    std::fs::write(&file, text).unwrap();
    let out = kafka("verify", &[]);
    assert_one_clear_error(&out, &[&format!("{prefix}guardian.encounters"), "8"]);
    let out = kafka("apply", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(kafka("verify", &[]).status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_service_refuses_to_start_when_its_topics_are_missing() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-missing"));
    let out = guardian(&[
        "agent",
        "simulate",
        "--bootstrap-servers",
        &stack.kafka_bootstrap,
        "--topic-prefix",
        &prefix,
        "--count",
        "1",
    ]);
    assert_one_clear_error(
        &out,
        &["topics differ from the catalogue", &format!("{prefix}guardian.encounters"), "guardian topics apply"],
    );
}

#[test]
fn privacy_epsilon_and_rounds_left_agree_on_the_budget_edge() {
    // q = 0.01, σ = 1.1, δ = 1e-5: 1,404 rounds fit under ε = 2, the 1,405th does not.
    let eps = |steps: &str| {
        let out = guardian(&[
            "privacy",
            "epsilon",
            "--sampling-rate",
            "0.01",
            "--noise-multiplier",
            "1.1",
            "--steps",
            steps,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["epsilon"].as_f64().unwrap()
    };
    assert!(eps("1404") <= 2.0);
    assert!(eps("1405") > 2.0);
    let rounds_left = |extra: &[&str]| {
        let mut args = vec![
            "privacy",
            "rounds-left",
            "--sampling-rate",
            "0.01",
            "--noise-multiplier",
            "1.1",
            "--budget",
            "2",
            "--json",
        ];
        args.extend(extra);
        let v: serde_json::Value = serde_json::from_str(&stdout(&guardian(&args))).unwrap();
        v["rounds_left"].clone()
    };
    assert_eq!(rounds_left(&[]), 1404);
    // Spent rounds count against the same budget.
    assert_eq!(rounds_left(&["--spent", "0.01,1.1,1000"]), 404);
}

#[test]
fn privacy_commands_refuse_bad_parameters_in_one_line() {
    let out = guardian(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "5",
        "--sampling-rate",
        "0.1",
    ]);
    assert_one_clear_error(&out, &["each group needs"]);
    let out = guardian(&["privacy", "epsilon", "--sampling-rate", "2", "--noise-multiplier", "1", "--steps", "1"]);
    assert_one_clear_error(&out, &["sampling rate must be in [0, 1]"]);
    let out = guardian(&["privacy", "noise", "--sampling-rate", "0.01", "--steps", "10", "--epsilon=-1"]);
    assert_one_clear_error(&out, &["epsilon must be >= 0"]);
}

#[test]
fn privacy_audit_writes_every_format_and_gates_on_the_level() {
    let stack = Stack::get();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = unique("it_audit").replace('-', "_");
    let url = format!("{}?options=-c%20search_path%3D{schema}", stack.database_url);
    rt.block_on(async {
        let admin = guardian_pg::connect(&stack.database_url, 1).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
        let pool = guardian_pg::connect(&url, 1).await.unwrap();
        guardian_accountant::store::migrate(&pool).await.unwrap();
        // A hospital at CRITICAL with two spends (one refused), and the federation.
        sqlx::raw_sql(
            "INSERT INTO privacy_budgets VALUES
               ('hospital/h001', 'h001', '{0.1}', 1.85, 'CRITICAL', 2, 'e2', 1),
               ('global', NULL, '{0.1}', 1.85, 'NORMAL', 2, 'e2', 40);
             INSERT INTO privacy_ledger (event_id, hospital_id, session_id, round, sampling_rate, noise_multiplier,
                 steps, delta, occurred_at_ms, accepted, hospital_epsilon, source_topic, source_partition, source_offset)
             VALUES ('e1', 'h001', 's', 1, 0.01, 1.1, 700, 1e-5, 1764028800000, true, 1.31, 't', 0, 0),
                    ('e2', 'h001', 's', 2, 0.01, 1.1, 700, 1e-5, 1764115200000, false, 1.31, 't', 0, 1);
             INSERT INTO privacy_alerts (alert_id, scope_key, previous_level, level, over_budget, epsilon_spent,
                 epsilon_limit, trigger_event_id)
             VALUES ('hospital/h001:Critical:e1', 'hospital/h001', 'HIGH', 'CRITICAL', false, 1.85, 2.0, 'e1');",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    let out_dir = std::env::temp_dir().join(unique("audit"));
    let dir = out_dir.to_str().unwrap();
    let audit = |extra: &[&str]| {
        let mut args = vec!["privacy", "audit", "--database-url", &url, "--output", dir];
        args.extend(extra);
        guardian(&args)
    };
    let out = audit(&["--format", "json", "--format", "md", "--format", "csv", "--format", "html"]);
    assert_eq!(out.status.code(), Some(4), "CRITICAL fails the default --fail-on: {}", stderr(&out));
    for f in ["audit.json", "audit.md", "audit.html", "budgets.csv", "spends.csv", "alerts.csv"] {
        assert!(out_dir.join(f).exists(), "{f} written");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("audit.json")).unwrap()).unwrap();
    assert_eq!(doc["spends"].as_array().unwrap().len(), 2);
    assert_eq!(doc["spends"][1]["accepted"], false);
    assert_eq!(doc["budgets"][0]["level"], "CRITICAL");
    assert_eq!(std::fs::read_to_string(out_dir.join("spends.csv")).unwrap().lines().count(), 3);
    // Only the first day: one spend.
    let out = audit(&["--from", "2025-11-25", "--to", "2025-11-26", "--fail-on", "exhausted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("audit.json")).unwrap()).unwrap();
    assert_eq!(doc["spends"].as_array().unwrap().len(), 1);
    assert_eq!(doc["spends"][0]["event_id"], "e1");
    std::fs::remove_dir_all(&out_dir).unwrap();
    rt.block_on(async {
        let admin = guardian_pg::connect(&stack.database_url, 1).await.unwrap();
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
    });
}

/// Records per partition of a topic (high − low watermark, summed).
/// Records in `topic` as a `read_committed` reader sees them (offsets would also count the
/// markers of transactions: replays are written in transactions).
fn topic_records(bootstrap: &str, topic: &str) -> i64 {
    let settings = guardian_kafka::KafkaSettings::new(bootstrap, "it-cli-count");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(guardian_kafka::reader::read_range(&settings, "it-cli-count", &[topic], None)).unwrap().len()
        as i64
}

#[test]
fn replay_copies_a_range_with_its_origin_and_reset_group_respects_live_members() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let stack = Stack::get();
    let b = stack.kafka_bootstrap.as_str();
    let (src, dst) = (format!("{}.", unique("it-replay-src")), format!("{}.", unique("it-replay-dst")));
    for prefix in [&src, &dst] {
        assert!(guardian(&["topics", "apply", "--bootstrap-servers", b, "--topic-prefix", prefix]).status.success());
    }
    let sim = guardian(&[
        "agent",
        "simulate",
        "--bootstrap-servers",
        b,
        "--topic-prefix",
        &src,
        "--hospitals",
        "3",
        "--count",
        "300",
        "--rate",
        "100000",
    ]);
    assert!(sim.status.success(), "{}", stderr(&sim));
    let (from, to) = (format!("{src}guardian.encounters"), format!("{dst}guardian.encounters"));
    assert_eq!(topic_records(b, &from), 300);

    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "range", "--bootstrap-servers", b, "--from-topic", &from, "--to-topic", &to];
        args.extend(extra);
        guardian(&args)
    };
    let out = replay(&["--from-offset", "10", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: i64 =
        stdout(&out).lines().filter_map(|l| l.split('(').nth(1)?.split(' ').next()?.parse::<i64>().ok()).sum();
    assert!(expected > 0 && expected < 300, "{}", stdout(&out));
    assert_eq!(topic_records(b, &to), 0, "a dry run writes nothing");

    let out = replay(&["--from-offset", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(topic_records(b, &to), expected, "exactly the planned range");
    // Every copy names its origin, and keeps the original's bytes.
    let reader_group = unique("it-replay-reader");
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", &reader_group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&to]).unwrap();
    let msg = loop {
        if let Some(Ok(m)) = c.poll(std::time::Duration::from_secs(1)) {
            break m.detach();
        }
    };
    let source = msg
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "guardian.replay.source").and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("replay header");
    assert!(source.starts_with(&format!("{from}/")), "{source}");
    assert!(source.rsplit('/').next().unwrap().parse::<i64>().unwrap() >= 10);
    assert_eq!(&msg.payload().unwrap()[..2], &[0xC3, 0x01], "the original Avro record");

    // reset-group: refused while the reader above is a live member of its group...
    let reset = |group: &str, extra: &[&str]| {
        let mut args =
            vec!["replay", "reset-group", "--bootstrap-servers", b, "--group", group, "--topic", &to, "--to-time", "0"];
        args.extend(extra);
        guardian(&args)
    };
    let out = reset(&reader_group, &[]);
    assert_one_clear_error(&out, &["live member", "--force"]);
    drop(c);
    // ...and done for a group without members.
    let idle = unique("it-replay-idle");
    let out = reset(&idle, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("moved"), "{}", stdout(&out));
    let idle_reader: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", b).set("group.id", &idle).create().unwrap();
    let committed = idle_reader.committed_offsets(
        {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..6 {
                tpl.add_partition(&to, p);
            }
            tpl
        },
        std::time::Duration::from_secs(10),
    );
    for e in committed.unwrap().elements() {
        let (low, _) = idle_reader.fetch_watermarks(&to, e.partition(), std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(e.offset(), rdkafka::Offset::Offset(low), "time 0 is the first record of [{}]", e.partition());
    }
}

#[test]
fn federated_commands_refuse_bad_settings_and_never_overwrite_keys() {
    let s3 = ["--s3-access-key", "k", "--s3-secret-key", "s"];
    let config = |extra: &[&str]| {
        let mut args = vec!["fl", "config"];
        args.extend_from_slice(extra);
        guardian(&args)
    };
    let ok = config(&["--hospitals", "h1,h2,h3,h4,h5"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let plan: serde_json::Value = serde_json::from_str(stdout(&ok).trim()).unwrap();
    assert_eq!((plan["threshold"].as_u64(), plan["neighbours"].as_u64()), (Some(3), Some(4)));
    assert!(plan["noise_multiplier"].as_f64().unwrap() > 1.0, "{plan}");
    assert_one_clear_error(&config(&["--hospitals", "h1"]), &["at least 2 hospitals"]);
    assert_one_clear_error(&config(&["--hospitals", "h1,h2,h3", "--threshold", "5"]), &["threshold 5"]);
    assert_one_clear_error(&config(&["--hospitals", "h1,h2", "--epsilon=-1"]), &["--epsilon"]);
    assert_one_clear_error(
        &config(&["--hospitals", "h1,h2", "--initial-model", "/nonexistent/model.npy"]),
        &["/nonexistent/model.npy"],
    );

    let dir = std::env::temp_dir().join(unique("keys"));
    let keygen = || guardian(&["fl", "keygen", "--dir", dir.to_str().unwrap(), "--hospitals", "h001,h002"]);
    assert!(keygen().status.success());
    let first = std::fs::read_to_string(dir.join("h001.key")).unwrap();
    assert_one_clear_error(&keygen(), &["aggregator.key", "must not exist"]);
    assert_eq!(std::fs::read_to_string(dir.join("h001.key")).unwrap(), first, "a key was overwritten");
    let registry = dir.join("registry.toml");
    // An agent with another hospital's key, and one with nothing to train on.
    let agent = |hospital: &str, key: &str, extra: &[&str]| {
        let mut args = vec!["fl", "agent", "--hospital", hospital, "--registry", registry.to_str().unwrap()];
        let key = dir.join(key);
        args.extend_from_slice(&["--identity", key.to_str().unwrap()]);
        args.extend_from_slice(&s3);
        args.extend_from_slice(extra);
        guardian(&args)
    };
    assert_one_clear_error(&agent("h001", "h002.key", &["--demo-shard", "0"]), &["not the key registered for h001"]);
    assert_one_clear_error(&agent("h001", "h001.key", &[]), &["--demo-shard, --data, --update or --train-cmd"]);
    assert_one_clear_error(&agent("h009", "h001.key", &["--demo-shard", "0"]), &["h009 is not in the registry"]);
    let _ = std::fs::remove_dir_all(&dir);
}
