//! The privacy accountant killed with SIGKILL while spends flow: afterwards the ledger
//! holds each spend exactly once, every budget equals the composition of its accepted
//! spends, and no alert is missing or doubled in the database.

mod common;

use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guardian_privacy::{RdpAccountant, SampledGaussian};
use guardian_testkit::{Stack, unique};
use rand::Rng;
use sqlx::Row;

fn guardian(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardian"));
    c.args(args).env("RUST_LOG", "warn").env_remove("GUARDIAN_TOPIC_PREFIX").env_remove("GUARDIAN_TOPICS_DIR");
    c
}

/// Starts the accountant; returns it with the address of its ops endpoint.
fn start_accountant(stack: &Stack, prefix: &str, url: &str) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = guardian(&[
        "accountant",
        "--bootstrap-servers",
        &stack.kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--database-url",
        url,
        "--listen",
        &listen,
        // A killed member holds its partitions until its session expires: keep it short.
        "--kafka-config",
        "session.timeout.ms=6000",
        "--kafka-config",
        "heartbeat.interval.ms=1000",
    ])
    .stdout(Stdio::null())
    .spawn()
    .expect("start the accountant");
    (child, listen)
}

#[test]
fn the_accountant_survives_sigkill_without_losing_or_doubling_a_spend() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("it-kill"));
    let apply =
        guardian(&["topics", "apply", "--bootstrap-servers", &stack.kafka_bootstrap, "--topic-prefix", &prefix])
            .output()
            .unwrap();
    assert!(apply.status.success(), "{}", String::from_utf8_lossy(&apply.stderr));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = unique("it_kill").replace('-', "_");
    let url = format!("{}?options=-c%20search_path%3D{schema}", stack.database_url);
    let pool = rt.block_on(async {
        let admin = guardian_pg::connect(&stack.database_url, 1).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
        guardian_pg::connect(&url, 2).await.unwrap()
    });
    let count = |sql: &str| -> i64 { rt.block_on(sqlx::query(sql).fetch_one(&pool)).map(|r| r.get(0)).unwrap_or(0) };

    // Killed at random points while the agents publish their spends.
    let agents = guardian(&[
        "agent",
        "simulate",
        "--bootstrap-servers",
        &stack.kafka_bootstrap,
        "--topic-prefix",
        &prefix,
        "--hospitals",
        "5",
        "--count",
        "5000",
        "--rate",
        "2000",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut rng = rand::rng();
    for _ in 0..4 {
        let (mut child, _) = start_accountant(&stack, &prefix, &url);
        std::thread::sleep(Duration::from_millis(rng.random_range(700..2000)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let out = agents.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let spends: i64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" budget spends").or_else(|| part.trim().strip_suffix(" budget spends")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("simulate summary: {summary}"));
    assert_eq!(spends, 100, "5 hospitals x 1000 encounters / 50 per round");

    // A last run to the end, stopped cleanly once it is up.
    let (mut child, ops) = start_accountant(&stack, &prefix, &url);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready(&ops) {
        assert!(Instant::now() < deadline, "the accountant never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    while count("SELECT count(*) FROM privacy_ledger") < spends {
        assert!(Instant::now() < deadline, "ledger stuck at {}", count("SELECT count(*) FROM privacy_ledger"));
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success(), "exit 0 on SIGTERM");

    assert_eq!(count("SELECT count(DISTINCT event_id) FROM privacy_ledger"), spends);
    assert_eq!(count("SELECT count(*) FROM privacy_outbox"), 0, "everything committed was published");
    // Every budget is the composition of its accepted spends, each counted once.
    let rows = rt
        .block_on(
            sqlx::query(
                "SELECT b.scope_key, b.epsilon_spent, b.events,
                    (SELECT count(*) FROM privacy_ledger l WHERE l.accepted
                       AND (b.hospital_id IS NULL OR l.hospital_id = b.hospital_id))
             FROM privacy_budgets b",
            )
            .fetch_all(&pool),
        )
        .unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        let (key, eps, events, accepted): (String, f64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(events, accepted, "{key}: events counted once");
        let mut acc = RdpAccountant::default();
        acc.compose(&SampledGaussian { sampling_rate: 0.01, noise_multiplier: 1.1, count: 100 * accepted as u64 })
            .unwrap();
        let expected = acc.epsilon(1e-5).unwrap().0;
        assert!((eps - expected).abs() <= 1e-9 * expected, "{key}: ε {eps} vs {expected}");
    }
    // One alert per level change: no scope ever re-enters a level.
    let repeats = count(
        "SELECT count(*) FROM (SELECT scope_key, level FROM privacy_alerts WHERE NOT over_budget
                                GROUP BY scope_key, level HAVING count(*) > 1) x",
    );
    assert_eq!(repeats, 0);
    rt.block_on(async {
        let admin = guardian_pg::connect(&stack.database_url, 1).await.unwrap();
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
    });
}
