//! A hospital that lies about time, on the real stack: h002 publishes a far-future
//! availability event and a far-future encounter, both naming h001 (signed with its own
//! key, or not at all), and a far-future encounter of its own; h001 publishes one of its
//! own from a clock a month ahead. With `guardian kpi --signers`, none of them moves a
//! watermark: they are dead-lettered (kind `forged` or `future`), and every one of h001's
//! honest encounters published afterwards is counted.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{KillOnDrop as Service, dead_letters, free_port, guardian_on, run_ok as ok, topic_name, wait_for};
use guardian_kafka::signing::EventSigner;
use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::Codec;
use guardian_schemas::records::{DeadLetter, SloEvent, SloKind};
use guardian_schemas::synth::Synth;
use guardian_testkit::{Stack, unique};
use guardian_topics::TopicId;

const MONTH_MS: i64 = 30 * 86_400_000;

#[tokio::test]
async fn future_dated_and_forged_records_never_switch_off_another_hospital() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-time"));
    let guardian = |args: &[&str]| {
        let mut c = guardian_on(&stack, &prefix, args);
        c.env_remove("GUARDIAN_AGENT_IDENTITY").env_remove("GUARDIAN_SIGNERS");
        c
    };
    let keys = std::env::temp_dir().join(unique("time-keys"));
    ok(guardian(&["fl", "keygen", "--dir", keys.to_str().unwrap(), "--hospitals", "h001,h002"]));
    ok(guardian(&["topics", "apply"]));
    let key = |h: &str| guardian_federated::registry::load_identity(&keys.join(format!("{h}.key"))).unwrap();
    let topic = |id: TopicId| topic_name(&prefix, id);
    let (encounters, slo, dlq) = (topic(TopicId::Encounters), topic(TopicId::SloEvents), topic(TopicId::DeadLetter));

    // The lies, published before the honest records.
    let producer = Producer::new(&KafkaSettings::new(&stack.kafka_bootstrap, "it-time")).unwrap();
    let codec = Codec::embedded();
    let now = guardian_runtime::now_ms();
    let mut synth = Synth::new(7, 2);
    let (h001_encounter, _, _) = synth.next(now + MONTH_MS);
    let (h002_encounter, _, _) = synth.next(now + MONTH_MS);
    assert_eq!((h001_encounter.hospital_id.as_str(), h002_encounter.hospital_id.as_str()), ("h001", "h002"));
    let h002_enc = EventSigner::new("h002", TopicId::Encounters.role(), key("h002"));
    let h002_slo = EventSigner::new("h002", TopicId::SloEvents.role(), key("h002"));
    let h001_enc = EventSigner::new("h001", TopicId::Encounters.role(), key("h001"));
    let availability = |id: &str| SloEvent {
        event_id: id.into(),
        service: "guardian-agent".into(),
        hospital_id: Some("h001".into()),
        slo: SloKind::Availability,
        good: true,
        latency_ms: None,
        observed_at: now + MONTH_MS,
    };
    let send = async |topic: &str, key: &str, payload: Vec<u8>, signer: Option<&EventSigner>| {
        let headers = signer.map(|s| s.headers(key.as_bytes(), &payload));
        producer.send_bytes(topic, Some(key.as_bytes()), &payload, headers).await.unwrap();
    };
    // 1. h002 names h001 in a future-dated availability event, signed with its own key.
    let slo_forged = codec.encode(&availability("lie-slo-signed")).unwrap();
    send(&slo, "guardian-agent", slo_forged, Some(&h002_slo)).await;
    // 2. The same, unsigned.
    send(&slo, "guardian-agent", codec.encode(&availability("lie-slo-unsigned")).unwrap(), None).await;
    // 3. h002 names h001 in a future-dated encounter, signed with its own key.
    let mut forged = h002_encounter.clone();
    forged.hospital_id = "h001".into();
    forged.event_id = "lie-encounter".into();
    send(&encounters, "h001", codec.encode(&forged).unwrap(), Some(&h002_enc)).await;
    // 4. h002's own encounter, a month ahead, genuinely signed: its signature holds, its time does not.
    send(&encounters, "h002", codec.encode(&h002_encounter).unwrap(), Some(&h002_enc)).await;
    // 5. h001's own clock a month ahead: refused too (it would expire h001's own records).
    send(&encounters, "h001", codec.encode(&h001_encounter).unwrap(), Some(&h001_enc)).await;

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("time").replace('-', "_")).await.unwrap();
    let registry = keys.join("registry.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    let _kpi = Service(
        guardian(&["kpi", "--database-url", &url, "--listen", &listen, "--signers", registry.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let letters: Vec<DeadLetter> = dead_letters(&stack, &dlq, 5).await;

    // Then h001's honest encounters, signed, at the present time.
    let k1 = keys.join("h001.key").display().to_string();
    ok(guardian(&[
        "agent",
        "encounters",
        "--generate",
        "--hospitals",
        "1",
        "--count",
        "20",
        "--seed",
        "11",
        "--late-every",
        "0",
        "--identity",
        &k1,
        "--sign-as",
        "h001",
    ]));

    let mut kinds: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            let what = String::from_utf8_lossy(l.key.as_deref().unwrap_or_default()).to_string();
            (l.error_kind.clone(), format!("{}:{what}", l.source_topic.rsplit('.').next().unwrap()))
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("forged".to_string(), "encounters:h001".to_string()),
            ("forged".into(), "events:guardian-agent".into()),
            ("forged".into(), "events:guardian-agent".into()),
            ("future".into(), "encounters:h001".into()),
            ("future".into(), "encounters:h002".into()),
        ],
        "{letters:#?}"
    );
    assert!(letters.iter().any(|l| l.error.contains("signed by \"h002\" but the record is hospital \"h001\"'s")));
    assert!(
        letters
            .iter()
            .filter(|l| l.error_kind == "future")
            .all(|l| l.error.contains("ahead of the record's timestamp"))
    );

    // Every honest encounter counts; nothing of the lies does; no watermark moved ahead.
    let pool = guardian_pg::connect(&url, 1).await.unwrap();
    let counted: i64 = wait_for("h001's rollups", Duration::from_secs(60), async || {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY' AND hospital_id = 'h001'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        n.filter(|n| *n >= 20)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: i64 = sqlx::query_scalar("SELECT sum(encounters)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((counted, all), (20, 20));
    let newest: i64 = sqlx::query_scalar("SELECT max(newest_ms) FROM kpi_watermarks").fetch_one(&pool).await.unwrap();
    assert!(newest <= guardian_runtime::now_ms(), "a watermark moved into the future: {newest}");
    let uptime: i64 = sqlx::query_scalar("SELECT coalesce(sum(slo_total), 0)::bigint FROM kpi_rollups")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(uptime, 0, "no availability event of h001's was genuine");
}
