//! Regional failover on the local two-region stack (`stack.sh up --dr`): spends flow into
//! region A and the privacy accountant applies them; region A's broker is killed;
//! `guardian dr failover` checks region B, translates the accountant's offsets through
//! MirrorMaker 2's checkpoints (in PostgreSQL, where the accountant keeps them) and the
//! accountant resumes in region B. Afterwards the ledger holds exactly the events region B
//! has, each once, and its budgets equal an uninterrupted run over region B's topic; the
//! KPI rollups, fed by encounters flowing beside the spends and failed over the same way,
//! equal an uninterrupted run's window for window; a federated session run in region A
//! before the kill replays from region B's topics to the same model versions, bit for
//! bit. The test prints the measured RPO and RTO.
//!
//! It kills region A's broker, so it is `#[ignore]`d in the parallel suite and run on its
//! own by `tests/run.sh` after it; it starts region A again when it ends.

mod common;

use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::records::{BudgetSpend, Encounter, EncounterType, Mechanism};
use guardian_testkit::{Stack, unique};
use sqlx::Row;

fn guardian(stack: &Stack, prefix: &str, bootstrap: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardian"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .env("GUARDIAN_KAFKA_BOOTSTRAP", bootstrap)
        .env("GUARDIAN_KAFKA_DR_BOOTSTRAP", stack.kafka_dr_bootstrap.as_deref().unwrap_or_default())
        .env("GUARDIAN_TOPIC_PREFIX", prefix)
        .env("GUARDIAN_S3_ENDPOINT", &stack.s3_endpoint)
        .env("GUARDIAN_S3_ACCESS_KEY", &stack.s3_access_key)
        .env("GUARDIAN_S3_SECRET_KEY", &stack.s3_secret_key)
        .env("GUARDIAN_MODEL_BUCKET", "guardian-it-models")
        .env_remove("GUARDIAN_FL_FAULT")
        .env_remove("GUARDIAN_TOPICS_DIR");
    c
}

/// A federated session of three hospitals and three rounds in the region at `bootstrap`;
/// returns the session id and the key registry.
fn federated_session(stack: &Stack, prefix: &str, bootstrap: &str, keys: &std::path::Path) -> (String, String) {
    let session = unique("dr-session");
    let hospitals = ["h001", "h002", "h003"];
    run_ok(guardian(
        stack,
        prefix,
        bootstrap,
        &["fl", "keygen", "--dir", keys.to_str().unwrap(), "--hospitals", &hospitals.join(",")],
    ));
    let registry = keys.join("registry.toml").to_str().unwrap().to_string();
    let mut agents: Vec<(Child, String)> = Vec::new();
    for (i, h) in hospitals.iter().enumerate() {
        let listen = format!("127.0.0.1:{}", free_port());
        let key = keys.join(format!("{h}.key"));
        let args = ["fl", "agent", "--hospital", h, "--identity", key.to_str().unwrap(), "--registry", &registry];
        let child = guardian(stack, prefix, bootstrap, &args)
            .args(["--demo-shard", &i.to_string(), "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start an agent");
        agents.push((child, listen));
    }
    let started = Instant::now();
    while !agents.iter().all(|(_, l)| ready(l)) {
        assert!(started.elapsed() < Duration::from_secs(60), "agents did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let aggregator_key = keys.join("aggregator.key");
    let table = run_ok(guardian(
        stack,
        prefix,
        bootstrap,
        &[
            "fl",
            "start",
            "--identity",
            aggregator_key.to_str().unwrap(),
            "--registry",
            &registry,
            "--session",
            &session,
            "--rounds",
            "3",
            "--stage-timeout-secs",
            "10",
            // No accountant runs yet at this point of the test: the session is the
            // replay's input here, not a budget check.
            "--spend-decisions",
            "off",
        ],
    ));
    for (child, _) in agents.iter_mut() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    assert_eq!(table.matches("| finished |").count(), 3, "three rounds in region A: {table}");
    (session, registry)
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

fn rollup_service(stack: &Stack, prefix: &str, bootstrap: &str, url: &str, group: &str) -> Child {
    let listen = format!("127.0.0.1:{}", free_port());
    guardian(stack, prefix, bootstrap, &["kpi", "--database-url", url, "--listen", &listen, "--group", group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the KPI rollup service")
}

fn encounter(i: usize) -> Encounter {
    Encounter {
        event_id: format!("dr-enc-{i:05}"),
        hospital_id: format!("h{:03}", i % 5 + 1),
        encounter_ref: format!("ref-{i}"),
        clinician_ref: format!("c{}", i % 7),
        occurred_at: 1_764_000_000_000 + (i as i64) * 1_000,
        encounter_type: EncounterType::Outpatient,
        soap_sections_expected: 4,
        soap_sections_completed: 3 + (i % 2) as i32,
        generation_ms: 800 + (i as i64 * 37) % 4_000,
        physician_rating: (!i.is_multiple_of(3)).then_some(3 + (i % 3) as i32),
        model_version: Some(1),
    }
}

async fn encounters_counted(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
        .fetch_one(pool)
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Every stored window (the update time left out).
async fn rollups(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query(
        "SELECT concat_ws('|', hospital_id, window_size, window_start_ms, encounters, soap_expected, soap_completed,
                ratings, rating_sum, slo_good, slo_total, late_corrections, encode(generation_sketch, 'hex'),
                generation_p50, generation_p95, generation_p99)
           FROM kpi_rollups ORDER BY hospital_id, window_size, window_start_ms",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
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

/// Runs the accountant and the rollups from scratch over `region`'s topics (a fresh
/// schema) until they hold `spends` and `encounters`, and compares with `pool`.
async fn same_as_uninterrupted(
    stack: &Stack,
    prefix: &str,
    region: &str,
    pool: &sqlx::PgPool,
    spends: usize,
    encounters: i64,
    after_what: &str,
) {
    let url2 = guardian_pg::with_new_schema(&stack.database_url, &unique("dr_ref").replace('-', "_")).await.unwrap();
    let pool2 = guardian_pg::connect(&url2, 2).await.unwrap();
    let mut reference = accountant(stack, prefix, region, &url2, &unique("dr-reference"));
    let mut kpi_reference = rollup_service(stack, prefix, region, &url2, &unique("dr-kpi-reference"));
    wait_for("the reference run", Duration::from_secs(90), async || {
        (ledger_ids(&pool2).await.len() >= spends && encounters_counted(&pool2).await >= encounters).then_some(())
    })
    .await;
    for service in [&mut reference, &mut kpi_reference] {
        let _ = Command::new("kill").args(["-TERM", &service.id().to_string()]).status();
        let _ = service.wait();
    }
    assert_eq!(ledger_ids(pool).await, ledger_ids(&pool2).await, "ledger after {after_what}");
    // To the bit, the global budget too: its RDP is recomputed from step counts in one
    // order, however the partitions' spends interleaved.
    assert_eq!(budgets(pool).await, budgets(&pool2).await, "budgets after {after_what} equal an uninterrupted run");
    let (after, uninterrupted) = (rollups(pool).await, rollups(&pool2).await);
    assert!(!after.is_empty());
    assert_eq!(after, uninterrupted, "KPI rollups after {after_what} equal an uninterrupted run");
}

/// Starts region A again however the test ends.
struct RestartRegionA(std::path::PathBuf);

impl Drop for RestartRegionA {
    fn drop(&mut self) {
        let stack_sh = self.0.join("tests/stack/stack.sh");
        let status = Command::new("bash").arg(&stack_sh).args(["up", "--dr"]).status();
        eprintln!("dr: region A restarted: {status:?}");
        let status = Command::new("bash").arg(&stack_sh).args(["mirror", "a-to-b"]).status();
        eprintln!("dr: mirroring region A to region B again: {status:?}");
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
        let n = guardian_topics::TopicId::ALL.len();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{n} of {n} topics mirrored")).then_some(())
    })
    .await;

    // A federated session in region A: its rounds, spends and model versions are mirrored.
    let keys = std::env::temp_dir().join(unique("dr-keys"));
    let (session, registry) = federated_session(&stack, &prefix, &a, &keys);

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("dr_acc").replace('-', "_")).await.unwrap();
    let group = unique("dr-accountant");
    let kpi_group = unique("dr-kpi");
    let encounter_topic = format!("{prefix}guardian.encounters");
    let mut acc_a = accountant(&stack, &prefix, &a, &url, &group);
    let mut kpi_a = rollup_service(&stack, &prefix, &a, &url, &kpi_group);

    // Spends flow into region A; after a while its broker dies.
    let producer = Producer::new(&KafkaSettings::new(&a, "dr-producer")).unwrap();
    let mut acked_in_a = Vec::new();
    let mut first_unacked = None;
    let kill_after = 120;
    let pool = guardian_pg::connect(&url, 2).await.unwrap();
    let count_in = async |region: &str, topic: &str| {
        guardian_kafka::reader::read_range(&KafkaSettings::new(region, "dr-check"), "dr-check", &[topic], None)
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    };
    let count_in_b = async |topic: &str| count_in(&b, topic).await;
    let mut acked_encounters = 0usize;
    let behind;
    let counted_in;
    let caught_up;
    let kill_at;
    let mut i = 0;
    loop {
        if i == kill_after {
            // Let the accountant apply some of it in A first.
            wait_for("spends applied in region A", Duration::from_secs(60), async || {
                (ledger_ids(&pool).await.len() >= 50).then_some(())
            })
            .await;
            wait_for("encounters rolled up in region A", Duration::from_secs(60), async || {
                (encounters_counted(&pool).await >= 50).then_some(())
            })
            .await;
            // The replication lag at this moment is the RPO a kill now would cost: the
            // records region A acknowledged that region B does not hold yet, and how long
            // until it does. The kill comes once B caught up (the comparisons below need
            // the same input on both sides); the lag is what is measured.
            let stopped = Instant::now();
            let in_a = (count_in(&a, &spend_topic).await, count_in(&a, &encounter_topic).await);
            behind = (
                in_a.0.saturating_sub(count_in_b(&spend_topic).await),
                in_a.1.saturating_sub(count_in_b(&encounter_topic).await),
            );
            counted_in = stopped.elapsed();
            assert!(in_a.1 >= acked_encounters && in_a.0 >= acked_in_a.len());
            wait_for("region B caught up with region A", Duration::from_secs(30), async || {
                (count_in_b(&spend_topic).await >= in_a.0 && count_in_b(&encounter_topic).await >= in_a.1).then_some(())
            })
            .await;
            caught_up = stopped.elapsed();
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
        let e = encounter(i);
        // Encounters flow beside the spends (their RPO is measured on the spends).
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(5), producer.send(&encounter_topic, &e.hospital_id, &e)).await
        {
            acked_encounters += 1;
        }
        match tokio::time::timeout(Duration::from_secs(5), producer.send(&spend_topic, &s.hospital_id, &s)).await {
            Ok(Ok(_)) => {
                acked_in_a.push(s.event_id.clone());
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
    let rolled_up_in_a = encounters_counted(&pool).await;
    for service in [&mut acc_a, &mut kpi_a] {
        let _ = service.kill();
        let _ = service.wait();
    }

    let failover = run_ok(guardian(
        &stack,
        &prefix,
        &a,
        &["dr", "failover", "--database-url", &url, "--groups", &format!("{group},{kpi_group}"), "--rpo-secs", "5"],
    ));
    println!("{failover}");
    assert!(
        failover.contains("ok   primary-fenced")
            && failover.contains(&format!("ok   translate-offsets: group {group}"))
            && failover.contains(&format!("ok   translate-offsets: group {kpi_group}")),
        "{failover}"
    );

    // The federated session's models, recomputed from region B's topics, are the ones
    // region A published (every version bit for bit).
    let replay =
        run_ok(guardian(&stack, &prefix, &b, &["fl", "replay", "--session", &session, "--registry", &registry]));
    assert!(replay.contains("all 3 model versions"), "{replay}");
    assert_eq!(replay.matches("| yes |").count(), 3, "{replay}");
    let _ = std::fs::remove_dir_all(&keys);

    // What region B holds: what A acknowledged and B does not hold is lost.
    let in_b: Vec<String> = {
        let codec = guardian_schemas::Codec::embedded();
        guardian_kafka::reader::read_range(&KafkaSettings::new(&b, "dr-check"), "dr-check", &[&spend_topic], None)
            .await
            .unwrap()
            .iter()
            .filter_map(|m| codec.decode::<BudgetSpend>(&m.payload).ok().map(|s| s.event_id))
            .collect()
    };
    let lost: Vec<usize> = (0..acked_in_a.len()).filter(|&k| !in_b.contains(&acked_in_a[k])).collect();
    assert!(lost.is_empty(), "acknowledged by region A, caught up, and still not in region B: {lost:?}");

    let encounters_in_b =
        guardian_kafka::reader::read_range(&KafkaSettings::new(&b, "dr-check"), "dr-check", &[&encounter_topic], None)
            .await
            .unwrap()
            .len() as i64;

    // The accountant, the rollups and the producers resume in region B.
    let mut acc_b = accountant(&stack, &prefix, &b, &url, &group);
    let mut kpi_b = rollup_service(&stack, &prefix, &b, &url, &kpi_group);
    let producer_b = Producer::new(&KafkaSettings::new(&b, "dr-producer-b")).unwrap();
    for j in 0..30 {
        let s = spend(10_000 + j);
        producer_b.send(&spend_topic, &s.hospital_id, &s).await.unwrap();
        let e = encounter(10_000 + j);
        producer_b.send(&encounter_topic, &e.hospital_id, &e).await.unwrap();
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
    wait_for("every encounter of region B rolled up", Duration::from_secs(90), async || {
        (encounters_counted(&pool).await >= encounters_in_b + 30).then_some(())
    })
    .await;
    for service in [&mut acc_b, &mut kpi_b] {
        let _ = Command::new("kill").args(["-TERM", &service.id().to_string()]).status();
        let _ = service.wait();
    }

    let mut want: Vec<String> = in_b.clone();
    want.extend((0..30).map(|j| spend(10_000 + j).event_id));
    want.sort();
    want.dedup();
    let got = ledger_ids(&pool).await;
    assert_eq!(got, want, "the ledger holds exactly region B's events, each once");

    // An uninterrupted run over region B's topics gives the same budgets and rollups.
    same_as_uninterrupted(&stack, &prefix, &b, &pool, want.len(), encounters_in_b + 30, "the failover").await;

    println!(
        "dr: RPO (replication lag when the traffic stopped) {} spends and {} encounters not yet in region B, counted within {:.2} s \
         of the last acknowledgement; region B held all of them {:.2} s after it; \
         at the kill 0 of {} acknowledged spends missing ({} mirrored, first unacknowledged send #{:?}); \
         RTO {:.1} s (broker kill to the first spend of region B committed in the ledger); {} applied in A before the kill; \
         {} encounters rolled up in A before the kill, {} in region B's topic after it, rollups equal to an uninterrupted run",
        behind.0,
        behind.1,
        counted_in.as_secs_f64(),
        caught_up.as_secs_f64(),
        acked_in_a.len(),
        in_b.len(),
        first_unacked,
        rto.as_secs_f64(),
        applied_in_a,
        rolled_up_in_a,
        encounters_in_b + 30
    );
    assert!(rto < Duration::from_secs(60), "RTO {rto:?} above the 60 s target");
    assert!(caught_up <= Duration::from_secs(5), "RPO {caught_up:?} above the 5 s target");

    // Failback: region A comes back, MirrorMaker 2 mirrors B to A, `dr failback` moves the
    // services home, and they go on in A with nothing lost or counted twice.
    let stack_sh = stack.repo.join("tests/stack/stack.sh");
    assert!(Command::new("bash").arg(&stack_sh).args(["up", "--dr"]).status().unwrap().success());
    // Only this test's topics: the stack's region B holds those of earlier runs too.
    let these = format!("{}\\..*", prefix.trim_end_matches('.'));
    assert!(Command::new("bash").arg(&stack_sh).args(["mirror", "b-to-a", &these]).status().unwrap().success());
    let failback = run_ok(guardian(
        &stack,
        &prefix,
        &b,
        &[
            "dr",
            "failback",
            "--primary-bootstrap-servers",
            &a,
            "--database-url",
            &url,
            "--groups",
            &format!("{group},{kpi_group}"),
            "--quiet-secs",
            "3",
        ],
    ));
    println!("{failback}");
    for step in ["ok   primary-healthy", "ok   writers-stopped", "ok   mirror-caught-up"] {
        assert!(failback.contains(step), "{step}: {failback}");
    }
    for g in [&group, &kpi_group] {
        assert!(failback.contains(&format!("ok   translate-offsets: group {g}: ")), "{g}: {failback}");
    }
    let mut acc_home = accountant(&stack, &prefix, &a, &url, &group);
    let mut kpi_home = rollup_service(&stack, &prefix, &a, &url, &kpi_group);
    let producer_home = Producer::new(&KafkaSettings::new(&a, "dr-producer-home")).unwrap();
    for j in 0..20 {
        let s = spend(20_000 + j);
        producer_home.send(&spend_topic, &s.hospital_id, &s).await.unwrap();
        let e = encounter(20_000 + j);
        producer_home.send(&encounter_topic, &e.hospital_id, &e).await.unwrap();
    }
    want.extend((0..20).map(|j| spend(20_000 + j).event_id));
    want.sort();
    wait_for("the spends and encounters of region A, home again", Duration::from_secs(90), async || {
        let ids = ledger_ids(&pool).await;
        (want.iter().all(|w| ids.contains(w)) && encounters_counted(&pool).await >= encounters_in_b + 50).then_some(())
    })
    .await;
    for service in [&mut acc_home, &mut kpi_home] {
        let _ = Command::new("kill").args(["-TERM", &service.id().to_string()]).status();
        let _ = service.wait();
    }
    assert_eq!(ledger_ids(&pool).await, want, "after the failback the ledger holds every event once");
    assert_eq!(encounters_counted(&pool).await, encounters_in_b + 50, "every encounter rolled up once");
    // Region A's topics now hold its own records, B's (mirrored back, the part that came
    // from A among them) and the new ones: a run from scratch over them gives the same.
    same_as_uninterrupted(&stack, &prefix, &a, &pool, want.len(), encounters_in_b + 50, "the failback").await;
    println!(
        "dr: failback to region A: {} spends and {} encounters, each counted once",
        want.len(),
        encounters_in_b + 50
    );
}

/// A failover whose database step fails exits non-zero and leaves the env file as it
/// was: the services stay pointed at region A, the audit trail records the failed step
/// and no switch. Two failures: PostgreSQL does not answer at all, and PostgreSQL
/// answers but the translation's statement fails (a schema without the offsets table, as
/// when the database is lost between connecting and updating). (Region B only needs to
/// answer: nothing is killed, so this runs in the parallel suite.)
#[tokio::test]
async fn a_failover_whose_database_fails_does_not_switch_the_env() {
    use guardian_schemas::records::DrAudit;

    let stack = Stack::get();
    let b = stack.kafka_dr_bootstrap.clone().expect("the stack runs with --dr");
    let unreachable = format!("postgres://guardian:secret@127.0.0.1:{}/guardian", free_port());
    let empty = guardian_pg::with_new_schema(&stack.database_url, &unique("drdb").replace('-', "_")).await.unwrap();
    for (url, says) in [(unreachable, "cannot connect to postgres"), (empty, "kafka_offsets")] {
        let prefix = format!("{}.", unique("drdb"));
        // The catalogue's topics in region B (as MirrorMaker 2 would have mirrored them).
        run_ok(guardian(&stack, &prefix, &b, &["topics", "apply"]));
        let env_file = std::env::temp_dir().join(format!("{}.env", unique("dr-env")));
        let before = "export GUARDIAN_KAFKA_BOOTSTRAP='region-a:9092'\nexport OTHER=1\n";
        std::fs::write(&env_file, before).unwrap();
        let out = guardian(
            &stack,
            &prefix,
            &stack.kafka_bootstrap,
            &[
                "dr",
                "failover",
                "--force",
                "--groups",
                "svc-accountant-drdb",
                "--database-url",
                &url,
                "--write-env",
                env_file.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "the failover succeeded: {stdout}{stderr}");
        assert!(stderr.contains(says) && !stderr.contains("secret"), "{stderr}");
        assert!(stdout.contains("FAIL translate-offsets"), "{stdout}");
        assert_eq!(std::fs::read_to_string(&env_file).unwrap(), before, "the env file was switched");

        // The audit trail in region B: the failed translation, and no switch.
        let settings = KafkaSettings::new(&b, "dr-test");
        let audit = format!("{prefix}ops.dr-audit");
        let records = guardian_kafka::reader::read_range(&settings, "dr-test", &[&audit], None).await.unwrap();
        let codec = guardian_schemas::Codec::embedded();
        let steps: Vec<DrAudit> = records.iter().map(|m| codec.decode::<DrAudit>(&m.payload).unwrap()).collect();
        assert!(steps.iter().any(|s| s.step == "translate-offsets" && !s.ok), "{steps:?}");
        assert!(!steps.iter().any(|s| s.step == "switch"), "{steps:?}");
    }
}
