//! Tenant isolation on a real broker with SASL/SCRAM, TLS and the standard authorizer
//! (`tests/stack/stack.sh up --secure`): each hospital is its own principal with the
//! least-privilege ACLs `guardian topics acls` derives from the catalogue. h001 may
//! publish its encounters and read round control; it is refused h002's encounters and
//! updates and any write to the aggregator's topic; a wrong password is refused.

use std::process::Command;
use std::time::{Duration, Instant};

use guardian_testkit::{Stack, unique};

mod common;
use common::{kafka_admin, run, stack_env as env};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A client config for `user` on the SASL listener (or the TLS one with the CA).
fn client(user: &str, password: &str, tls: bool) -> ClientConfig {
    let mut c = ClientConfig::new();
    if tls {
        c.set("bootstrap.servers", env("GUARDIAN_KAFKA_SECURE_SASL_SSL"))
            .set("security.protocol", "sasl_ssl")
            .set("ssl.ca.location", env("GUARDIAN_KAFKA_SECURE_CA"));
    } else {
        c.set("bootstrap.servers", env("GUARDIAN_KAFKA_SECURE_SASL")).set("security.protocol", "sasl_plaintext");
    }
    c.set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", password)
        // Consumer groups are allowed under the principal's own name only.
        .set("group.id", format!("{user}-test"))
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "10000");
    c
}

async fn produce(config: &ClientConfig, topic: &str) -> Result<(), KafkaError> {
    let producer: FutureProducer = config.create().expect("producer");
    producer
        // Partition 0: where consume_first looks.
        .send(FutureRecord::to(topic).partition(0).key("k").payload("v"), Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Errors librdkafka reports through the client context rather than through `poll`
/// (authentication failures, for one).
#[derive(Default)]
struct Errors(std::sync::Mutex<Vec<KafkaError>>);

impl rdkafka::ClientContext for Errors {
    fn error(&self, error: KafkaError, _reason: &str) {
        self.0.lock().unwrap().push(error);
    }
}
impl rdkafka::consumer::ConsumerContext for Errors {}

/// The first record of partition 0 of `topic`, or the first error the consumer reports.
fn consume_first(config: &ClientConfig, topic: &str) -> Result<Vec<u8>, KafkaError> {
    let consumer: BaseConsumer<Errors> =
        config.clone().set("enable.auto.commit", "false").create_with_context(Errors::default()).expect("consumer");
    let mut tpl = TopicPartitionList::new();
    // An explicit offset: the first request is a Fetch (no ListOffsets to resolve).
    tpl.add_partition_offset(topic, 0, Offset::Offset(0)).unwrap();
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Ok(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        if let Some(e) = consumer.context().0.lock().unwrap().first() {
            return Err(e.clone());
        }
    }
    panic!("neither a record nor an error from {topic} within 20 s");
}

fn is_code(r: &Result<impl std::fmt::Debug, KafkaError>, code: RDKafkaErrorCode) -> bool {
    matches!(r, Err(e) if e.rdkafka_error_code() == Some(code))
}

#[tokio::test]
async fn a_hospital_principal_reaches_only_what_its_role_needs() {
    let admin = env("GUARDIAN_KAFKA_SECURE_ADMIN");
    let tag = unique("t").replace('-', "");
    let prefix = format!("sec-{tag}.");
    let (h1, h2) = (format!("h001{tag}"), format!("h002{tag}"));
    let (p1, p2) = (format!("hospital-{h1}"), format!("hospital-{h2}"));
    let (pw1, pw2) = (format!("pw1-{tag}"), format!("pw2-{tag}"));
    let guardian = env!("CARGO_BIN_EXE_guardian");

    // Topics (as the operator), principals and their ACLs, as an operator would do it.
    run(Command::new(guardian)
        .args(["topics", "apply", "--bootstrap-servers", &admin, "--topic-prefix", &prefix])
        .env("RUST_LOG", "off"));
    kafka_admin(&["user", &admin, &p1], Some(&pw1));
    kafka_admin(&["user", &admin, &p2], Some(&pw2));
    let acls = run(Command::new(guardian).args([
        "topics",
        "acls",
        "--topic-prefix",
        &prefix,
        "--hospitals",
        &format!("{h1},{h2}"),
    ]));
    let mine: String = acls.lines().filter(|l| l.contains(&p1) || l.contains(&p2)).map(|l| format!("{l}\n")).collect();
    assert!(mine.lines().count() >= 6, "{acls}");
    let file = std::env::temp_dir().join(format!("acls-{tag}.txt"));
    std::fs::write(&file, &mine).unwrap();
    kafka_admin(&["acls", &admin, file.to_str().unwrap()], None);

    let t = |name: &str| format!("{prefix}{name}");
    let (encounters, updates, rounds) = (t("guardian.encounters"), t("fl.updates"), t("fl.rounds"));
    // The aggregator (here the operator) opens a round.
    let operator = {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &admin).set("group.id", "operator").set("message.timeout.ms", "10000");
        c
    };
    produce(&operator, &rounds).await.expect("the operator writes round control");

    let h1_plain = client(&p1, &pw1, false);
    let h1_tls = client(&p1, &pw1, true);
    let h2_plain = client(&p2, &pw2, false);

    // Allowed: each hospital publishes its own encounters and updates (h001 over TLS);
    // h001 reads round control.
    produce(&h2_plain, &encounters).await.expect("h002 publishes an encounter");
    produce(&h2_plain, &updates).await.expect("h002 publishes an update");
    produce(&h1_tls, &encounters).await.expect("h001 publishes an encounter over SASL_SSL");
    assert_eq!(consume_first(&h1_plain, &rounds).expect("h001 reads round control"), b"v");

    // Refused: h002's encounters and updates are not readable by h001 (nor by h002).
    let r = consume_first(&h1_plain, &encounters);
    assert!(is_code(&r, RDKafkaErrorCode::TopicAuthorizationFailed), "h001 reading encounters: {r:?}");
    let r = consume_first(&h1_tls, &updates);
    assert!(is_code(&r, RDKafkaErrorCode::TopicAuthorizationFailed), "h001 reading updates: {r:?}");
    let r = consume_first(&h2_plain, &encounters);
    assert!(is_code(&r, RDKafkaErrorCode::TopicAuthorizationFailed), "h002 reading encounters: {r:?}");
    // Refused: writing the aggregator's round control or the accountant's status.
    let r = produce(&h1_plain, &rounds).await;
    assert!(is_code(&r, RDKafkaErrorCode::TopicAuthorizationFailed), "h001 writing round control: {r:?}");
    let r = produce(&h1_plain, &t("privacy.status")).await;
    assert!(is_code(&r, RDKafkaErrorCode::TopicAuthorizationFailed), "h001 writing budget status: {r:?}");
    // Refused: a wrong password (authentication, before any authorization).
    let r = produce(&client(&p1, "not-the-password", false), &encounters).await;
    assert!(r.is_err(), "a wrong password was accepted");

    // The operator still sees h002's encounter: the refusals were authorization, not loss.
    assert_eq!(consume_first(&operator, &encounters).expect("the operator reads encounters"), b"v");
}

/// `guardian kpi` and `guardian accountant` started with no `--group` on the secure
/// cluster, each as its own principal with exactly the ACLs `guardian topics acls`
/// derives: both start (their default groups and transactional ids are under their
/// principals), and each applies a record of its topic.
#[tokio::test]
async fn services_run_with_their_default_groups_as_their_own_principals() {
    use guardian_schemas::records::{BudgetSpend, Encounter, EncounterType, Mechanism};

    let stack = Stack::get();
    let admin = env("GUARDIAN_KAFKA_SECURE_ADMIN");
    let sasl = env("GUARDIAN_KAFKA_SECURE_SASL");
    let tag = unique("d").replace('-', "");
    let prefix = format!("svc-{tag}.");
    let guardian = env!("CARGO_BIN_EXE_guardian");
    run(Command::new(guardian)
        .args(["topics", "apply", "--bootstrap-servers", &admin, "--topic-prefix", &prefix])
        .env("RUST_LOG", "off"));
    let acls = run(Command::new(guardian).args(["topics", "acls", "--topic-prefix", &prefix, "--hospitals", "h001"]));
    let ours: String = acls
        .lines()
        .filter(|l| l.contains("User:svc-kpi ") || l.contains("User:svc-accountant "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(ours.lines().count() >= 4, "{acls}");
    let file = std::env::temp_dir().join(format!("svc-acls-{tag}.txt"));
    std::fs::write(&file, &ours).unwrap();
    let password = format!("svc-pw-{tag}");
    for user in ["svc-kpi", "svc-accountant"] {
        kafka_admin(&["user", &admin, user], Some(&password));
    }
    kafka_admin(&["acls", &admin, file.to_str().unwrap()], None);

    let schema = format!("svc_{tag}");
    let url = guardian_pg::with_new_schema(&stack.database_url, &schema).await.unwrap();
    let mut services = Vec::new();
    let mut listens = Vec::new();
    for (cmd, user) in [("kpi", "svc-kpi"), ("accountant", "svc-accountant")] {
        let listen = format!("127.0.0.1:{}", common::free_port());
        let log = std::fs::File::create(std::env::temp_dir().join(format!("svc-{cmd}-{tag}.log"))).unwrap();
        let child = Command::new(guardian)
            .args([cmd, "--bootstrap-servers", &sasl, "--topic-prefix", &prefix, "--database-url", &url])
            .args(["--kafka-security-protocol", "sasl_plaintext", "--kafka-username", user, "--listen", &listen])
            .env("GUARDIAN_KAFKA_PASSWORD", &password)
            .env("RUST_LOG", "warn")
            .env_remove("GUARDIAN_SIGNERS")
            .stderr(log)
            .spawn()
            .unwrap();
        services.push(common::KillOnDrop(child));
        listens.push(listen);
    }
    for listen in &listens {
        common::wait_for("the service to be ready", Duration::from_secs(60), async || {
            common::ready(listen).then_some(())
        })
        .await;
    }

    // One encounter and one spend, written by the operator.
    let settings = guardian_kafka::KafkaSettings::new(&admin, "operator");
    let producer = guardian_kafka::Producer::new(&settings).unwrap();
    let now = guardian_runtime::now_ms();
    let encounter = Encounter {
        event_id: format!("e-{tag}"),
        hospital_id: "h001".into(),
        encounter_ref: "0".into(),
        clinician_ref: "0".into(),
        occurred_at: now,
        encounter_type: EncounterType::Outpatient,
        soap_sections_expected: 4,
        soap_sections_completed: 4,
        generation_ms: 1000,
        physician_rating: None,
        model_version: None,
    };
    producer.send(&format!("{prefix}guardian.encounters"), "h001", &encounter).await.unwrap();
    let spend = BudgetSpend {
        event_id: format!("s-{tag}"),
        hospital_id: "h001".into(),
        session_id: "s".into(),
        round: 1,
        mechanism: Mechanism::SampledGaussian,
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 10,
        delta: 1e-5,
        occurred_at: now,
    };
    producer.send(&format!("{prefix}privacy.spend"), "h001", &spend).await.unwrap();

    let pool = guardian_pg::connect(&url, 1).await.unwrap();
    common::wait_for("the encounter in the rollups", Duration::from_secs(60), async || {
        let counted = guardian_rollups::tables::encounters_per_hospital(&pool).await.ok()?;
        (counted.get("h001") == Some(&1)).then_some(())
    })
    .await;
    common::wait_for("the spend in the ledger", Duration::from_secs(60), async || {
        let ids = guardian_accountant::store::ledger_event_ids(&pool).await.ok()?;
        (ids == [format!("s-{tag}")]).then_some(())
    })
    .await;
    for s in &mut services {
        assert!(s.0.try_wait().unwrap().is_none(), "a service exited");
    }
}
