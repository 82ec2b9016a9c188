//! The schema registry as code, against the stack's Apicurio Registry (Confluent-compatible
//! API): `guardian topics apply` registers every topic's value schema under
//! `<topic>-value` at `BACKWARD_TRANSITIVE`, the second run changes nothing, `topics
//! verify` and `guardian doctor` pass; a subject whose level was changed by hand is named
//! by both; a registry holding an incompatible earlier version makes `topics apply` (and
//! its dry run) fail with the registry's reason, and a producer told to write Confluent
//! framing refuses to start without its subject registered.

mod common;

use common::*;

use guardian_registry::Client;
use guardian_testkit::{Stack, unique};
use guardian_topics::TopicId;

fn schema_of(id: TopicId) -> (String, String) {
    let catalogue = guardian_kafka::connect::catalogue(None, "").unwrap();
    let entry = guardian_schemas::Registry::embedded().get(&catalogue.get(id).unwrap().value_schema).unwrap();
    (entry.name.clone(), entry.text.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_apply_registers_each_value_schema_and_refuses_an_incompatible_one() {
    let stack = Stack::get();
    let url = stack.schema_registry_url.clone();
    let registry = Client::new(&url).unwrap();
    let prefix = format!("{}.", unique("sr"));
    let topics = |args: &[&str]| {
        let mut c = guardian_on(&stack, &prefix, &["topics"]);
        c.args(args).args(["--schema-registry-url", &url]);
        c.output().unwrap()
    };

    let out = topics(&["apply"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("schemas: 14 subjects at {url}, 14 registered")), "{stdout}");
    let encounters = topic_name(&prefix, TopicId::Encounters);
    let subject = format!("{encounters}-value");
    let (name, text) = schema_of(TopicId::Encounters);
    assert!(stdout.contains(&format!("subject {subject}: registered {name} as id ")), "{stdout}");
    // What the registry holds: the schema of schemas/, at the declared level.
    let registered = registry.lookup(&subject, &text).await.unwrap().expect("registered");
    assert_eq!(registered.version, 1);
    let by_id = registry.schema_by_id(registered.id).await.unwrap().expect("by id");
    let same: serde_json::Value = serde_json::from_str(&by_id).unwrap();
    assert_eq!(same, serde_json::from_str::<serde_json::Value>(&text).unwrap());
    assert_eq!(registry.compatibility(&subject).await.unwrap().as_deref(), Some("BACKWARD_TRANSITIVE"));

    // Again: nothing new; verify passes.
    let out = topics(&["apply"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && stdout.contains("14 subjects at") && stdout.contains(", 0 registered"), "{stdout}");
    assert!(
        stdout.contains(&format!("subject {subject}: {name} already registered (id {}, version 1)", registered.id))
    );
    let out = topics(&["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("topics and their schema subjects match"));

    // A level changed by hand: verify and the doctor name the subject; apply restores it.
    registry.set_compatibility(&subject, "NONE").await.unwrap();
    let out = topics(&["verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("subject {subject}: compatibility NONE, declared BACKWARD_TRANSITIVE")),
        "{stderr}"
    );
    let mut doctor = guardian_on(&stack, &prefix, &["doctor", "--json", "--schema-registry-url", &url]);
    for v in ["GUARDIAN_DATABASE_URL", "GUARDIAN_S3_ENDPOINT", "GUARDIAN_PROMETHEUS_URL", "GUARDIAN_KAFKA_DR_BOOTSTRAP"]
    {
        doctor.env_remove(v);
    }
    let out = doctor.output().unwrap();
    let review = String::from_utf8_lossy(&out.stdout).to_string();
    let line = review.lines().find(|l| l.contains("schema-registry.subjects")).unwrap_or_else(|| panic!("{review}"));
    assert!(line.contains("\"fail\"") && line.contains(&format!("subject {subject}: compatibility NONE")), "{line}");
    assert_eq!(out.status.code(), Some(2));
    let out = topics(&["apply"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("compatibility NONE → BACKWARD_TRANSITIVE"));
    let out = doctor.output().unwrap();
    let review = String::from_utf8_lossy(&out.stdout).to_string();
    let line = review.lines().find(|l| l.contains("schema-registry.subjects")).unwrap();
    assert!(line.contains("\"ok\""), "{line}");

    // Another prefix whose encounters subject holds an earlier version the current schema
    // cannot read (a field without a default was added since): refused, before and at apply.
    let other = format!("{}.", unique("sr"));
    let incompatible_subject = format!("{}-value", topic_name(&other, TopicId::Encounters));
    let earlier = serde_json::json!({
        "type": "record", "name": "Encounter", "namespace": "com.phoenixguardian.events",
        "fields": [{"name": "encounter_id", "type": "string"}]
    })
    .to_string();
    registry.register(&incompatible_subject, &name, &earlier).await.unwrap();
    for dry_run in [true, false] {
        let mut c = guardian_on(&stack, &other, &["topics", "apply", "--schema-registry-url", &url]);
        if dry_run {
            c.arg("--dry-run");
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "dry run {dry_run}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(
            stderr.contains(&format!("{incompatible_subject}: the schema of {name} is incompatible")),
            "dry run {dry_run}: {stderr}"
        );
        if !dry_run {
            // The registry's own reason, and the earlier version is still the only one.
            assert!(stderr.contains("BACKWARD_TRANSITIVE") && stderr.contains("Incompatible"), "{stderr}");
            assert!(registry.lookup(&incompatible_subject, &text).await.unwrap().is_none());
        }
    }

    // A producer never registers on its own: Confluent framing without the subject (or
    // without a registry) refuses to start, naming what is missing.
    let publish = |registry_url: Option<&str>| {
        let mut c = guardian_on(&stack, &other, &["agent", "encounters", "--generate", "--count", "1"]);
        c.args(["--wire-format", "confluent"]).env_remove("GUARDIAN_SCHEMA_REGISTRY_URL");
        if let Some(u) = registry_url {
            c.args(["--schema-registry-url", u]);
        }
        c.output().unwrap()
    };
    let out = publish(Some(&url));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && stderr.contains(&format!("not registered at {url}: {incompatible_subject}")),
        "{stderr}"
    );
    let out = publish(None);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("needs a schema registry"), "{stderr}");
}
