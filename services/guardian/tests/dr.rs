//! Regional failover on the local two-region stack (`stack.sh up --dr`): spends flow into
//! region A and the privacy accountant applies them; region A's broker is killed;
//! `guardian dr failover` checks region B, translates the accountant's offsets through
//! MirrorMaker 2's checkpoints (in PostgreSQL, where the accountant keeps them) and the
//! accountant resumes in region B. Afterwards the ledger holds exactly the events region B
//! has, each once, and its budgets equal an uninterrupted run over region B's topic. The
//! test prints the measured RPO and RTO.
//!
//! It kills region A's broker, so it is `#[ignore]`d in the parallel suite and run on its
//! own by `tests/run.sh` after it; it starts region A again when it ends.

mod common;

use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::records::{BudgetSpend, Mechanism};
use guardian_testkit::{Stack, unique};
use sqlx::Row;

fn guardian(stack: &Stack, prefix: &str, bootstrap: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardian"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .env("GUARDIAN_KAFKA_BOOTSTRAP", bootstrap)
        .env("GUARDIAN_KAFKA_DR_BOOTSTRAP", stack.kafka_dr_bootstrap.as_deref().unwrap_or_default())
        .env("GUARDIAN_TOPIC_PREFIX", prefix)
        .env_remove("GUARDIAN_TOPICS_DIR");
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().expect("run guardian");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{c:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn accountant(stack: &Stack, prefix: &str, bootstrap: &str, url: &str, group: &str) -> Child {
    let listen = format!("127.0.0.1:{}", free_port());
    guardian(stack, prefix, bootstrap, &["accountant", "--database-url", url, "--listen", &listen, "--group", group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the accountant")
}

fn spend(i: usize) -> BudgetSpend {
    BudgetSpend {
        event_id: format!("dr-{i:05}"),
        hospital_id: format!("h{:03}", i % 5 + 1),
        session_id: "dr".into(),
        round: i as i64,
        mechanism: Mechanism::SampledGaussian,
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 10,
        delta: 1e-5,
        occurred_at: 1_764_000_000_000 + i as i64,
    }
}

/// Starts region A again however the test ends.
struct RestartRegionA(std::path::PathBuf);

impl Drop for RestartRegionA {
    fn drop(&mut self) {
        let status = Command::new("bash").arg(self.0.join("tests/stack/stack.sh")).args(["up", "--dr"]).status();
        eprintln!("dr: region A restarted: {status:?}");
    }
}

async fn ledger_ids(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query("SELECT event_id FROM privacy_ledger ORDER BY event_id")
        .fetch_all(pool)
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

async fn budgets(pool: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT scope_key, epsilon_spent::text, events FROM privacy_budgets ORDER BY scope_key")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills region A's broker: run alone (tests/run.sh does, after the suite)"]
async fn failover_to_region_b_loses_nothing_mirrored_and_counts_nothing_twice() {
    let stack = Stack::get();
    let b =
        stack.kafka_dr_bootstrap.clone().expect("the DR region: start the stack with `tests/stack/stack.sh up --dr`");
    let a = stack.kafka_bootstrap.clone();
    let prefix = format!("{}.", unique("dr"));
    let spend_topic = format!("{prefix}privacy.spend");
    run_ok(guardian(&stack, &prefix, &a, &["topics", "apply"]));
    // MirrorMaker 2 picks the new topics up within its refresh interval.
    wait_for("the topics in region B", Duration::from_secs(60), async || {
        let out = guardian(&stack, &prefix, &a, &["dr", "status"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).contains("13 of 13 topics mirrored").then_some(())
    })
    .await;

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("dr_acc").replace('-', "_")).await.unwrap();
    let group = unique("dr-accountant");
    let mut acc_a = accountant(&stack, &prefix, &a, &url, &group);

    // Spends flow into region A; after a while its broker dies.
    let producer = Producer::new(&KafkaSettings::new(&a, "dr-producer")).unwrap();
    let mut acked_in_a = Vec::new();
    let mut acked_at: Vec<Instant> = Vec::new();
    let mut first_unacked = None;
    let kill_after = 120;
    let pool = guardian_pg::connect(&url, 2).await.unwrap();
    let kill_at;
    let mut i = 0;
    loop {
        if i == kill_after {
            // Let the accountant apply some of it in A first.
            wait_for("spends applied in region A", Duration::from_secs(60), async || {
                (ledger_ids(&pool).await.len() >= 50).then_some(())
            })
            .await;
            let pid = std::fs::read_to_string(
                std::env::var("GUARDIAN_STACK_DIR")
                    .map(std::path::PathBuf::from)
                    .unwrap_or(stack.repo.join(".stack"))
                    .join("kafka-a/pid"),
            )
            .unwrap();
            Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
            kill_at = Instant::now();
            break;
        }
        let s = spend(i);
        match tokio::time::timeout(Duration::from_secs(5), producer.send(&spend_topic, &s.hospital_id, &s)).await {
            Ok(Ok(_)) => {
                acked_in_a.push(s.event_id.clone());
                acked_at.push(Instant::now());
            }
            _ => {
                first_unacked.get_or_insert(i);
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _restart = RestartRegionA(stack.repo.clone());
    let applied_in_a = ledger_ids(&pool).await.len();
    let _ = acc_a.kill();
    let _ = acc_a.wait();

    let failover = run_ok(guardian(
        &stack,
        &prefix,
        &a,
        &["dr", "failover", "--database-url", &url, "--groups", &group, "--rpo-secs", "5"],
    ));
    println!("{failover}");
    assert!(
        failover.contains("ok   primary-fenced")
            && failover.contains(&format!("ok   translate-offsets: group {group}")),
        "{failover}"
    );

    // What region B holds: the RPO is what A acknowledged and B never got.
    let in_b: Vec<String> = {
        let codec = guardian_schemas::Codec::embedded();
        guardian_federated::reader::read_range(&KafkaSettings::new(&b, "dr-check"), "dr-check", &[&spend_topic], None)
            .await
            .unwrap()
            .iter()
            .filter_map(|m| codec.decode::<BudgetSpend>(&m.payload).ok().map(|s| s.event_id))
            .collect()
    };
    let lost: Vec<usize> = (0..acked_in_a.len()).filter(|&k| !in_b.contains(&acked_in_a[k])).collect();
    // In seconds: from the first acknowledged record region B never got to the kill.
    let rpo_secs = lost.first().map_or(0.0, |&k| kill_at.duration_since(acked_at[k]).as_secs_f64());

    // The accountant and the producers resume in region B.
    let mut acc_b = accountant(&stack, &prefix, &b, &url, &group);
    let producer_b = Producer::new(&KafkaSettings::new(&b, "dr-producer-b")).unwrap();
    for j in 0..30 {
        let s = spend(10_000 + j);
        producer_b.send(&spend_topic, &s.hospital_id, &s).await.unwrap();
    }
    wait_for("the first spend produced in region B in the ledger", Duration::from_secs(90), async || {
        ledger_ids(&pool).await.contains(&spend(10_000).event_id).then_some(())
    })
    .await;
    let rto = kill_at.elapsed();
    let expected: usize = in_b.len() + 30;
    wait_for("every spend of region B in the ledger", Duration::from_secs(90), async || {
        (ledger_ids(&pool).await.len() >= expected).then_some(())
    })
    .await;
    let _ = Command::new("kill").args(["-TERM", &acc_b.id().to_string()]).status();
    let _ = acc_b.wait();

    let mut want: Vec<String> = in_b.clone();
    want.extend((0..30).map(|j| spend(10_000 + j).event_id));
    want.sort();
    want.dedup();
    let got = ledger_ids(&pool).await;
    assert_eq!(got, want, "the ledger holds exactly region B's events, each once");

    // An uninterrupted run over region B's topic gives the same budgets.
    let url2 = guardian_pg::with_new_schema(&stack.database_url, &unique("dr_ref").replace('-', "_")).await.unwrap();
    let pool2 = guardian_pg::connect(&url2, 2).await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut reference = guardian(
        &stack,
        &prefix,
        &b,
        &["accountant", "--database-url", &url2, "--listen", &listen, "--group", "dr-reference"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for("the reference run", Duration::from_secs(90), async || {
        (ledger_ids(&pool2).await.len() >= want.len()).then_some(())
    })
    .await;
    let _ = Command::new("kill").args(["-TERM", &reference.id().to_string()]).status();
    let _ = reference.wait();
    assert_eq!(budgets(&pool).await, budgets(&pool2).await, "budgets after the failover equal an uninterrupted run");

    println!(
        "dr: RPO {} records / {rpo_secs:.2} s ({} acknowledged by region A, {} mirrored, first unacknowledged send #{:?}); \
         RTO {:.1} s (broker kill to the first spend of region B committed in the ledger); {} applied in A before the kill",
        lost.len(),
        acked_in_a.len(),
        in_b.len(),
        first_unacked,
        rto.as_secs_f64(),
        applied_in_a
    );
    assert!(rto < Duration::from_secs(60), "RTO {rto:?} above the 60 s target");
    assert!(rpo_secs <= 5.0, "RPO {rpo_secs:.2} s above the 5 s target");
}
