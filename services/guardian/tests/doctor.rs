//! `guardian doctor` against the real stack: a deployment set up as the README says
//! (topics applied, `db migrate`, buckets, a running service, Prometheus, MirrorMaker 2)
//! passes; then each fault fails exactly its own check, with a message that names it:
//! row-level security disabled on a tenant table, the S3 server unreachable, a service
//! not ready, MirrorMaker 2 stopped, a topic with the wrong partition count, and on the
//! secure cluster a missing ACL.

mod common;

use common::*;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use guardian_objects::S3Args;
use guardian_testkit::{Stack, unique};

/// An ops endpoint of a service that runs but is not ready: metrics on /metrics, 503 on
/// /readyz (as a service answers while it cannot reach what it needs).
fn unready_service() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let answer: &[u8] = if buf[..n].starts_with(b"GET /metrics") {
                b"HTTP/1.0 200 OK\r\n\r\nguardian_kafka_consumer_lag_records{topic=\"t\",partition=\"0\"} 0\n"
            } else {
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot ready"
            };
            let _ = s.write_all(answer);
        }
    });
    addr
}

/// One review: the exit code and each check as (name, status, detail).
type Review = (i32, Vec<(String, String, String)>);

/// Runs `guardian doctor --json`: its exit code and checks.
fn reviewed(mut c: std::process::Command) -> Review {
    let out = c.output().unwrap();
    let checks = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{e}: {l}\n{}", String::from_utf8_lossy(&out.stderr)));
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("check"), s("status"), s("detail"))
        })
        .collect();
    (out.status.code().unwrap(), checks)
}

fn failed(review: &Review) -> Vec<&str> {
    review.1.iter().filter(|c| c.1 == "fail").map(|c| c.0.as_str()).collect()
}

fn detail<'a>(review: &'a Review, check: &str) -> &'a str {
    review.1.iter().find(|c| c.0 == check).map_or("", |c| c.2.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_passes_a_healthy_deployment_and_names_each_fault() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("doctor"));
    run_ok(guardian_on(&stack, &prefix, &["topics", "apply", "--schema-registry-url", &stack.schema_registry_url]));
    let schema = unique("it_doctor").replace('-', "_");
    let url = guardian_pg::with_new_schema(&stack.database_url, &schema).await.unwrap();
    run_ok(guardian_on(&stack, &prefix, &["db", "migrate", "--database-url", &url]));
    let s3 = S3Args {
        s3_endpoint: Some(stack.s3_endpoint.clone()),
        s3_access_key: Some(stack.s3_access_key.clone()),
        s3_secret_key: Some(stack.s3_secret_key.clone()),
        ..S3Args::default()
    };
    let (models, archive) = ("guardian-it-doctor-models", "guardian-it-doctor-archive");
    for b in [models, archive] {
        s3.store(b).unwrap().ensure_bucket().await.unwrap();
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let _slo = KillOnDrop(
        guardian_on(&stack, &prefix, &["slo", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready([&listen], "the SLO monitor");
    let dr = stack.kafka_dr_bootstrap.clone().expect("the stack's DR region (stack.sh up --dr)");
    let service = format!("http://{listen}");
    let base: Vec<(&str, String)> = vec![
        ("--database-url", url.clone()),
        ("--s3-endpoint", stack.s3_endpoint.clone()),
        ("--s3-access-key", stack.s3_access_key.clone()),
        ("--s3-secret-key", stack.s3_secret_key.clone()),
        ("--model-bucket", models.into()),
        ("--archive-bucket", archive.into()),
        ("--prometheus-url", stack.prometheus_url.clone()),
        ("--dr-bootstrap-servers", dr),
        ("--max-heartbeat-age-secs", "10".into()),
        ("--schema-registry-url", stack.schema_registry_url.clone()),
    ];
    let review = |overrides: &[(&str, String)], services: &[&str]| -> Review {
        let mut c = guardian_on(&stack, &prefix, &["doctor", "--json"]);
        for (flag, value) in &base {
            let v = overrides.iter().find(|(f, _)| f == flag).map_or(value, |(_, v)| v);
            c.args([*flag, v.as_str()]);
        }
        for s in services {
            c.args(["--service", s]);
        }
        reviewed(c)
    };

    // Healthy: every check that has something to check passes.
    let healthy = review(&[], &[&service]);
    assert_eq!(healthy.0, 0, "{:#?}", healthy.1);
    for check in [
        "kafka.reachable",
        "kafka.topics",
        "kafka.auto-create",
        "postgres.reachable",
        "postgres.row-level-security",
        "postgres.roles",
        "s3.buckets",
        "services.ready",
        "services.metrics",
        "prometheus.rules",
        "mirrormaker2.heartbeats",
        "schema-registry.subjects",
    ] {
        let found = healthy.1.iter().find(|c| c.0 == check).unwrap_or_else(|| panic!("no {check}: {:#?}", healthy.1));
        assert_eq!(found.1, "ok", "{found:?}");
    }

    // What the plaintext cluster and the local S3 server cannot give: named, not failed.
    let status = |check: &str| healthy.1.iter().find(|c| c.0 == check).map_or("", |c| c.1.as_str());
    assert_eq!(status("kafka.acls"), "warn");
    assert!(detail(&healthy, "kafka.acls").contains("no authorizer"), "{:#?}", healthy.1);
    assert_eq!(status("kafka.listeners"), "skip");
    assert_eq!(status("s3.archive-object-lock"), "warn");
    assert!(detail(&healthy, "s3.archive-object-lock").contains(archive), "{:#?}", healthy.1);

    // Row-level security off on a tenant table.
    let pool = guardian_pg::connect(&url, 1).await.unwrap();
    sqlx::query("ALTER TABLE kpi_rollups DISABLE ROW LEVEL SECURITY").execute(&pool).await.unwrap();
    let r = review(&[], &[&service]);
    assert_eq!((r.0, failed(&r)), (2, vec!["postgres.row-level-security"]), "{:#?}", r.1);
    assert!(detail(&r, "postgres.row-level-security").contains("kpi_rollups has row-level security disabled"));
    sqlx::query("ALTER TABLE kpi_rollups ENABLE ROW LEVEL SECURITY").execute(&pool).await.unwrap();

    // The S3 server down (nothing listens at the endpoint).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = review(&[("--s3-endpoint", dead)], &[&service]);
    assert_eq!((r.0, failed(&r)), (2, vec!["s3.buckets"]), "{:#?}", r.1);
    assert!(detail(&r, "s3.buckets").contains(models), "{}", detail(&r, "s3.buckets"));

    // A service that is not ready.
    let unready = format!("http://{}", unready_service());
    let r = review(&[], &[&service, &unready]);
    assert_eq!((r.0, failed(&r)), (2, vec!["services.ready"]), "{:#?}", r.1);
    assert!(detail(&r, "services.ready").contains(&format!("{unready}: /readyz 503")), "{:#?}", r.1);
    assert!(!detail(&r, "services.ready").contains(&service), "the ready one is not named");

    // MirrorMaker 2 stopped: its heartbeats age past the limit. Started again after.
    let stack_sh = stack.repo.join("tests/stack/stack.sh");
    let stack_dir = std::env::var("GUARDIAN_STACK_DIR").map_or(stack.repo.join(".stack"), Into::into);
    let pid = std::fs::read_to_string(stack_dir.join("mm2/pid")).expect("MirrorMaker 2 runs (stack.sh up --dr)");
    assert!(std::process::Command::new("kill").args(["-TERM", pid.trim()]).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(15));
    let r = review(&[], &[&service]);
    let restart = std::process::Command::new("bash").arg(&stack_sh).args(["up", "--dr", "--secure"]).output().unwrap();
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    assert_eq!((r.0, failed(&r)), (2, vec!["mirrormaker2.heartbeats"]), "{:#?}", r.1);
    assert!(detail(&r, "mirrormaker2.heartbeats").contains("is MirrorMaker 2 running?"), "{:#?}", r.1);
    let started = Instant::now();
    while review(&[], &[&service]).0 != 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "MirrorMaker 2 did not come back");
        std::thread::sleep(Duration::from_secs(2));
    }

    // A topic with more partitions than declared (last: partitions never shrink).
    let topic = topic_name(&prefix, guardian_topics::TopicId::SloEvents);
    let admin =
        guardian_kafka::admin::Admin::connect(&guardian_kafka::KafkaSettings::new(&stack.kafka_bootstrap, "it-doctor"))
            .await
            .unwrap();
    let view = admin.observe(std::slice::from_ref(&topic)).await.unwrap();
    let partitions = view.topics[&topic].partitions;
    let grow = guardian_topics::Plan {
        changes: vec![guardian_topics::Change::AddPartitions {
            name: topic.clone(),
            from: partitions,
            to: partitions + 2,
        }],
        ..Default::default()
    };
    admin.apply(&grow).await.unwrap();
    let r = review(&[], &[&service]);
    assert_eq!((r.0, failed(&r)), (2, vec!["kafka.topics"]), "{:#?}", r.1);
    assert!(detail(&r, "kafka.topics").contains(&topic), "{}", detail(&r, "kafka.topics"));
}

/// The secure cluster (`stack.sh up --secure`): `guardian doctor` logs in with SCRAM as an
/// operator principal allowed to describe the cluster, reads every ACL over the wire, and
/// finds the grants `guardian topics acls` derives; the loopback PLAINTEXT operator
/// listener is named as a warning. Then one removed ACL fails `kafka.acls` alone, naming
/// the principal, the operation and the topic; a grant broader than derived warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_checks_each_principals_acls_on_the_secure_cluster() {
    let stack = Stack::get();
    let admin = stack_env("GUARDIAN_KAFKA_SECURE_ADMIN");
    let tag = unique("dacl").replace('-', "");
    let prefix = format!("{tag}.");
    let hospital = format!("h{tag}");
    let guardian = env!("CARGO_BIN_EXE_guardian");
    run(std::process::Command::new(guardian)
        .args(["topics", "apply", "--bootstrap-servers", &admin, "--topic-prefix", &prefix])
        .env("RUST_LOG", "off"));
    let derived = run(std::process::Command::new(guardian).args([
        "topics",
        "acls",
        "--topic-prefix",
        &prefix,
        "--hospitals",
        &hospital,
    ]));
    let operator = format!("doctor-{tag}");
    let grants = format!(
        "{derived}--add --allow-principal User:{operator} --operation Describe --operation DescribeConfigs --cluster\n\
         --add --allow-principal User:{operator} --operation Describe --operation DescribeConfigs \
         --resource-pattern-type prefixed --topic {prefix}\n"
    );
    let file = std::env::temp_dir().join(format!("doctor-acls-{tag}.txt"));
    std::fs::write(&file, grants).unwrap();
    let password = format!("doctor-pw-{tag}");
    kafka_admin(&["user", &admin, &operator], Some(&password));
    kafka_admin(&["acls", &admin, file.to_str().unwrap()], None);

    let review = |tls: bool| -> Review {
        let mut c = guardian_on(&stack, &prefix, &["doctor", "--json", "--hospitals", &hospital]);
        if tls {
            c.args(["--bootstrap-servers", &stack_env("GUARDIAN_KAFKA_SECURE_SASL_SSL")]).args([
                "--kafka-security-protocol",
                "sasl_ssl",
                "--kafka-ca",
                &stack_env("GUARDIAN_KAFKA_SECURE_CA"),
            ]);
        } else {
            c.args(["--bootstrap-servers", &stack_env("GUARDIAN_KAFKA_SECURE_SASL")])
                .args(["--kafka-security-protocol", "sasl_plaintext"]);
        }
        c.args(["--kafka-username", &operator, "--kafka-password", &password]);
        // Only the Kafka checks: nothing else configured, from the caller's environment either.
        for v in [
            "GUARDIAN_DATABASE_URL",
            "GUARDIAN_S3_ENDPOINT",
            "GUARDIAN_PROMETHEUS_URL",
            "GUARDIAN_KAFKA_DR_BOOTSTRAP",
            "GUARDIAN_SCHEMA_REGISTRY_URL",
            "GUARDIAN_KAFKA_SECURITY_PROTOCOL",
            "GUARDIAN_KAFKA_USERNAME",
            "GUARDIAN_KAFKA_PASSWORD",
        ] {
            c.env_remove(v);
        }
        reviewed(c)
    };
    let status = |r: &Review, check: &str| r.1.iter().find(|c| c.0 == check).map_or(String::new(), |c| c.1.clone());

    // As derived, over SCRAM in clear and over TLS.
    for tls in [false, true] {
        let r = review(tls);
        assert_eq!(r.0, 0, "tls {tls}: {:#?}", r.1);
        for check in ["kafka.authentication", "kafka.reachable", "kafka.topics", "kafka.auto-create", "kafka.acls"] {
            assert_eq!(status(&r, check), "ok", "tls {tls}, {check}: {:#?}", r.1);
        }
        assert!(detail(&r, "kafka.acls").contains("and 1 hospitals'"), "{}", detail(&r, "kafka.acls"));
        // The operators' PLAINTEXT listener: on loopback, so a warning.
        assert_eq!(status(&r, "kafka.listeners"), "warn", "{:#?}", r.1);
        assert!(detail(&r, "kafka.listeners").contains(&format!("PLAINTEXT://{admin} (PLAINTEXT)")), "{:#?}", r.1);
    }

    // One derived grant removed: the KPI service may no longer read encounters.
    let encounters = topic_name(&prefix, guardian_topics::TopicId::Encounters);
    let change = |verb: &str, line: String| {
        let f = std::env::temp_dir().join(format!("doctor-acl-{verb}-{tag}.txt"));
        std::fs::write(&f, format!("--{verb} {line}\n")).unwrap();
        kafka_admin(&["acls", &admin, f.to_str().unwrap()], None);
    };
    let kpi_read = format!("--allow-principal User:svc-kpi --operation Read --topic {encounters}");
    change("remove", kpi_read.clone());
    let r = review(false);
    assert_eq!((r.0, failed(&r)), (2, vec!["kafka.acls"]), "{:#?}", r.1);
    assert!(
        detail(&r, "kafka.acls").contains(&format!("svc-kpi Read on topic {encounters}: no ACL grants it")),
        "{}",
        detail(&r, "kafka.acls")
    );
    change("add", kpi_read);

    // A hospital allowed to read every hospital's encounters: broader than derived.
    change("add", format!("--allow-principal User:hospital-{hospital} --operation Read --topic {encounters}"));
    let r = review(false);
    assert_eq!((r.0, status(&r, "kafka.acls")), (0, "warn".to_string()), "{:#?}", r.1);
    assert!(
        detail(&r, "kafka.acls").contains(&format!("User:hospital-{hospital} allows Read on topic {encounters}")),
        "{}",
        detail(&r, "kafka.acls")
    );
}
