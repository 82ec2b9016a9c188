//! Shared helpers of the integration tests: topics, producing, reading a topic whole,
//! running and killing the probe.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use guardian_kafka::admin::Admin;
use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::records::{BudgetSpend, Encounter, EncounterType, Mechanism};
use guardian_testkit::Stack;
use guardian_topics::{Change, Plan};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn settings(stack: &Stack) -> KafkaSettings {
    KafkaSettings::new(&stack.kafka_bootstrap, "it")
}

/// Creates fresh topics with `partitions` each.
pub async fn create_topics(stack: &Stack, names: &[&str], partitions: i32) {
    let admin = Admin::connect(&settings(stack)).await.expect("kafka reachable");
    let plan = Plan {
        changes: names
            .iter()
            .map(|n| Change::Create { name: n.to_string(), partitions, replication_factor: 1, config: BTreeMap::new() })
            .collect(),
        ..Plan::default()
    };
    admin.apply(&plan).await.expect("create topics");
}

pub fn spend(i: usize) -> BudgetSpend {
    spend_of(i % 5 + 1, i, format!("spend-{i:05}"))
}

/// A spend of hospital `h{hospital}` for `round`: q = 0.01, σ = 1.1, 100 steps (14 such
/// rounds fit under ε = 2).
pub fn spend_of(hospital: usize, round: usize, event_id: String) -> BudgetSpend {
    BudgetSpend {
        event_id,
        hospital_id: format!("h{hospital:03}"),
        session_id: "it".into(),
        round: round as i64,
        mechanism: Mechanism::SampledGaussian,
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 100,
        delta: 1e-5,
        occurred_at: 1_764_000_000_000 + round as i64,
    }
}

/// Produces `n` spends; every `poison_every`-th slot (if any) carries undecodable bytes
/// instead. Returns the ids of the good ones.
pub async fn produce_spends(stack: &Stack, topic: &str, n: usize, poison_every: Option<usize>) -> Vec<String> {
    let producer = Producer::new(&settings(stack)).unwrap();
    let mut ids = Vec::new();
    let mut sends = Vec::new();
    for i in 0..n {
        let p = producer.clone();
        let topic = topic.to_string();
        if poison_every.is_some_and(|k| i % k == k - 1) {
            sends.push(tokio::spawn(async move {
                p.send_bytes(&topic, Some(b"h001"), b"\x00garbage", None).await.map(|_| ())
            }));
            continue;
        }
        let s = spend(i);
        ids.push(s.event_id.clone());
        sends.push(tokio::spawn(async move { p.send(&topic, &s.hospital_id, &s).await.map(|_| ()) }));
    }
    for s in sends {
        s.await.unwrap().expect("produce");
    }
    ids
}

/// Reads every record of `topic` up to its current end, with the given isolation level.
pub async fn read_all(stack: &Stack, topic: &str, isolation: &str) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", guardian_testkit::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        // read_committed readers stop at the last stable offset; the high watermark of a
        // partition that ends in an aborted transaction's marker is never "reached", so
        // stop on position instead.
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        ends.insert(p, (low, high));
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let position = consumer.position().ok();
        let done = ends.iter().all(|(p, (low, high))| {
            high <= low
                || position
                    .as_ref()
                    .and_then(|pos| pos.find_partition(topic, *p))
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
        });
        if done {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "reading {topic} did not reach its end");
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => {}
        }
    }
}

pub fn header<'a>(msg: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    msg.headers()?.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// The probe binary, built by cargo for these tests.
pub fn probe(stack: &Stack, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pipeline-probe"))
        .args(["--bootstrap", &stack.kafka_bootstrap])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the probe")
}

pub fn sigkill(child: &mut Child) {
    child.kill().expect("SIGKILL the probe");
    child.wait().unwrap();
}

/// SIGTERM, then the exit status and what it printed.
pub fn sigterm(mut child: Child) -> (std::process::ExitStatus, String) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status, out)
}

pub fn marker(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(guardian_testkit::unique(name))
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// An encounter of the downstream tests (three hospitals, every optional field both ways).
pub fn encounter(i: usize) -> Encounter {
    Encounter {
        event_id: format!("enc-{i:04}"),
        hospital_id: format!("h{:03}", i % 3 + 1),
        encounter_ref: format!("{:016x}", i * 7919),
        clinician_ref: format!("{:016x}", i * 104_729),
        occurred_at: 1_764_000_000_000 + i as i64 * 1000,
        encounter_type: [EncounterType::Outpatient, EncounterType::Emergency, EncounterType::Telehealth][i % 3],
        soap_sections_expected: 4,
        soap_sections_completed: (i % 5) as i32,
        generation_ms: 800 + i as i64,
        physician_rating: i.is_multiple_of(2).then_some((i % 5) as i32 + 1),
        model_version: i.is_multiple_of(4).then_some(i as i64),
    }
}

/// An encounter as a downstream Avro library decodes it (enums as symbols, timestamps as
/// epoch milliseconds), field by field.
pub fn encounter_json(e: &Encounter) -> serde_json::Value {
    serde_json::json!({
            "event_id": e.event_id,
            "hospital_id": e.hospital_id,
            "encounter_ref": e.encounter_ref,
            "clinician_ref": e.clinician_ref,
            "occurred_at": e.occurred_at,
            "encounter_type": match e.encounter_type {
                EncounterType::Outpatient => "OUTPATIENT",
                EncounterType::Emergency => "EMERGENCY",
                EncounterType::Telehealth => "TELEHEALTH",
                _ => unreachable!(),
            },
            "soap_sections_expected": e.soap_sections_expected,
            "soap_sections_completed": e.soap_sections_completed,
            "generation_ms": e.generation_ms,
            "physician_rating": e.physician_rating,
            "model_version": e.model_version,
    })
}

/// Runs `tests/downstream/read_topic.py` on `topic` with `how` (`--schemas DIR` or
/// `--registry URL`) and checks it decoded each of `sent`, field by field.
pub fn assert_python_reader_decodes(stack: &Stack, topic: &str, how: &[&str], sent: &[Encounter]) {
    let out = Command::new(&stack.python)
        .arg(stack.repo.join("tests/downstream/read_topic.py"))
        .args(["--bootstrap", &stack.kafka_bootstrap, "--topic", topic])
        .args(how)
        .output()
        .expect("run the python reader (tests/stack/stack.sh install creates its venv)");
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), sent.len(), "the reader saw every record");
    for e in sent {
        let got = lines
            .iter()
            .find(|l| l["value"]["event_id"] == e.event_id.as_str())
            .unwrap_or_else(|| panic!("{} not decoded", e.event_id));
        assert_eq!(got["_schema"], "com.phoenixguardian.events.Encounter");
        assert_eq!(&got["value"], &encounter_json(e), "{}", e.event_id);
    }
}
