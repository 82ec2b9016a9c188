//! The federation's privacy budget runs out in the middle of a session, on the real local
//! stack: four hospitals (hospital unit, update files), the accountant's global limit set
//! between what 10 and 11 spends cost. Rounds 1 and 2 spend 8; in round 3 all four
//! hospitals send their updates, the accountant accepts two spends and refuses two, and
//! the aggregator sums only the accepted hospitals' updates. The session then ends, and
//! the stored budgets equal what the published models actually consumed.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use guardian_privacy::{RdpAccountant, SampledGaussian};
use guardian_testkit::{Stack, unique};
use guardian_topics::TopicId;
use sqlx::Row;

const SIGMA: f64 = 0.8;
const DELTA: f64 = 1e-5;

/// ε of `spends` hospital-unit spends (q = 1: every hospital of the registry takes part).
fn epsilon(spends: u64) -> f64 {
    let mut acc = RdpAccountant::default();
    acc.compose(&SampledGaussian { sampling_rate: 1.0, noise_multiplier: SIGMA, count: spends }).unwrap();
    acc.epsilon(DELTA).unwrap().0
}

#[test]
fn a_refused_spend_leaves_its_update_out_and_the_budgets_match_the_models() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("flb"));
    let session = unique("session");
    let hospitals = ["h001", "h002", "h003", "h004"];
    let fed = Federation::new(&stack, &prefix, &hospitals);
    let limit = (epsilon(10) + epsilon(11)) / 2.0;
    let (_accountant, url) = accountant(
        &stack,
        &prefix,
        &["--hospital-epsilon", "1e9", "--global-epsilon", &limit.to_string(), "--delta", &DELTA.to_string()],
    );

    let mut agents = Vec::new();
    for (i, h) in hospitals.iter().enumerate() {
        let update: Vec<f32> = (0..31).map(|j| 0.01 * (i + 1) as f32 - 0.0005 * j as f32).collect();
        let (mut c, listen) = fed.update_agent(&stack, h, &update, "1e9");
        agents.push((KillOnDrop(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()), listen));
    }
    wait_ready(agents.iter().map(|(_, l)| l), "the agents");
    let table = run_ok(fed.start(
        &stack,
        &session,
        &[
            "--rounds",
            "5",
            "--dp-unit",
            "hospital",
            "--noise-multiplier",
            &SIGMA.to_string(),
            "--delta",
            &DELTA.to_string(),
            "--threshold",
            "2",
            "--chunk-len",
            "8",
            "--stage-timeout-secs",
            "10",
        ],
    ));
    println!("{table}");

    // The accountant's decisions, by round.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let codec = guardian_schemas::Codec::embedded();
    let settings = guardian_kafka::KafkaSettings::new(&stack.kafka_bootstrap, "it-decisions");
    let decisions_topic = topic_name(&prefix, TopicId::SpendDecisions);
    let records =
        rt.block_on(guardian_kafka::reader::read_range(&settings, "it-decisions", &[&decisions_topic], None)).unwrap();
    let mut accepted: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut refused: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for m in records {
        let d: guardian_schemas::records::SpendDecision = codec.decode(&m.payload).unwrap();
        assert_eq!(d.session_id, session);
        let into = if d.accepted { &mut accepted } else { &mut refused };
        into.entry(d.round).or_default().push(d.hospital_id);
    }
    for list in accepted.values_mut().chain(refused.values_mut()) {
        list.sort();
    }
    assert_eq!(accepted.values().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2], "{accepted:?} {refused:?}");
    assert_eq!(refused.keys().copied().collect::<Vec<_>>(), vec![3], "{refused:?}");
    assert_eq!(refused[&3].len(), 2);

    // Each model version sums exactly the hospitals whose spend was accepted; the refused
    // ones are named in the round's record, and the session ends with the budget.
    let versions = rt
        .block_on(async {
            let kafka = guardian_kafka::KafkaArgs {
                bootstrap_servers: stack.kafka_bootstrap.clone(),
                topic_prefix: prefix.clone(),
                ..Default::default()
            };
            let t = guardian_federated::service::topics(&kafka, guardian_topics::ServiceId::Aggregator).await?;
            guardian_federated::service::model_versions(&kafka, &t).await
        })
        .unwrap();
    let versions = &versions[&session];
    assert_eq!(versions.len(), 3, "{table}");
    for v in versions {
        let mut who = v.participants.clone();
        who.sort();
        assert_eq!(who, accepted[&v.round], "round {}", v.round);
    }
    let round3 = table.lines().find(|l| l.starts_with("| 3 |")).unwrap();
    for h in &refused[&3] {
        assert!(round3.contains(&format!("{h}: its privacy spend was refused")), "{round3}");
    }
    assert!(table.lines().any(|l| l.contains("failed") && l.contains("0 hospitals may still spend")), "{table}");

    // The stored budgets are what the models consumed: per hospital, one accepted spend
    // per version it is in; for the federation, one per (version, hospital).
    let pool = rt.block_on(guardian_pg::connect(&url, 1)).unwrap();
    let rows = rt
        .block_on(sqlx::query("SELECT scope_key, events, epsilon_spent FROM privacy_budgets").fetch_all(&pool))
        .unwrap();
    let mut events: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rows {
        events.insert(r.get(0), r.get(1));
        if r.get::<String, _>(0) == "global" {
            let spent: f64 = r.get(2);
            // Charged at the noise the parties' discrete Gaussians give: σ² is rounded
            // up, so a hair under ten Gaussian steps at the nominal σ.
            assert!(spent <= epsilon(10) + 1e-12 && spent > epsilon(10) * (1.0 - 1e-6), "global ε {spent}");
        }
    }
    for h in hospitals {
        let used = versions.iter().filter(|v| v.participants.iter().any(|p| p == h)).count() as i64;
        assert_eq!(events[&format!("hospital/{h}")], used, "{h}");
    }
    assert_eq!(events["global"], 10);
    for (child, _) in agents.iter_mut() {
        let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    }
}
