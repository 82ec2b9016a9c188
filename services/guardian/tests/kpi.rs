//! KPI rollups on the real stack: seeded synthetic encounters of 10 hospitals (with late
//! records and three bad lines) published from a file while the rollup service is
//! SIGKILLed mid-stream and restarted; the rollups in PostgreSQL equal a straightforward
//! recomputation from the same file; replaying the encounter topic changes nothing; the
//! compacted rollup topic ends with the same windows. A topic holding both framings
//! (Confluent's and single-object) rolls up exactly the same way.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use guardian_kafka::KafkaSettings;
use guardian_schemas::Codec;
use guardian_schemas::records::{
    Encounter, KpiRollup, ModelVersion, RoundControl, RoundControlKind, SloEvent, SloKind,
};
use guardian_testkit::{Stack, unique};
use hdrhistogram::Histogram;
use sqlx::Row;

const LATENESS_MS: i64 = 60_000;

use common::{KillOnDrop as Service, guardian_on as guardian};

fn rollup_service(stack: &Stack, prefix: &str, url: &str) -> Service {
    let listen = format!("127.0.0.1:{}", free_port());
    Service(
        guardian(stack, prefix, &["kpi", "--database-url", url, "--listen", &listen, "--lateness-secs", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the rollup service"),
    )
}

type Row6 = (i64, i64, i64, i64, i64, i64, Option<f64>, Option<f64>, Option<f64>);

/// What a window should hold, computed straight from the file in its order.
fn recompute(encounters: &[Encounter]) -> BTreeMap<(String, String, i64), Row6> {
    struct W {
        n: i64,
        exp: i64,
        done: i64,
        ratings: i64,
        rating_sum: i64,
        late: i64,
        h: Histogram<u64>,
    }
    let sizes = [("MINUTE", 60_000i64), ("HOUR", 3_600_000), ("DAY", 86_400_000)];
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    let mut out: BTreeMap<(String, String, i64), W> = BTreeMap::new();
    for e in encounters {
        let before = newest.get(&e.hospital_id).copied();
        for (name, ms) in sizes {
            let start = e.occurred_at.div_euclid(ms) * ms;
            let w = out.entry((e.hospital_id.clone(), name.to_string(), start)).or_insert_with(|| W {
                n: 0,
                exp: 0,
                done: 0,
                ratings: 0,
                rating_sum: 0,
                late: 0,
                h: Histogram::new_with_bounds(1, 3_600_000, 3).unwrap(),
            });
            w.n += 1;
            w.exp += i64::from(e.soap_sections_expected);
            w.done += i64::from(e.soap_sections_completed);
            if let Some(r) = e.physician_rating {
                w.ratings += 1;
                w.rating_sum += i64::from(r);
            }
            w.h.record(e.generation_ms.max(1) as u64).unwrap();
            if before.is_some_and(|b| b > start + ms + LATENESS_MS) {
                w.late += 1;
            }
        }
        let n = newest.entry(e.hospital_id.clone()).or_insert(e.occurred_at);
        *n = (*n).max(e.occurred_at);
    }
    out.into_iter()
        .map(|(k, w)| {
            let q = |q: f64| Some(w.h.value_at_quantile(q) as f64);
            (k, (w.n, w.exp, w.done, w.ratings, w.rating_sum, w.late, q(0.5), q(0.95), q(0.99)))
        })
        .collect()
}

async fn stored(pool: &sqlx::PgPool) -> BTreeMap<(String, String, i64), Row6> {
    sqlx::query(
        "SELECT hospital_id, window_size, window_start_ms, encounters, soap_expected, soap_completed, ratings,
                rating_sum, late_corrections, generation_p50, generation_p95, generation_p99 FROM kpi_rollups",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
    .iter()
    .map(|r| {
        (
            (r.get(0), r.get(1), r.get(2)),
            (r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8), r.get(9), r.get(10), r.get(11)),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_a_recomputation_across_a_kill_and_a_replay() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("kpi"));
    let out = guardian(&stack, &prefix, &["topics", "apply"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = std::env::temp_dir().join(unique("kpi"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("encounters.ndjson");
    let generated = guardian(
        &stack,
        &prefix,
        &[
            "agent",
            "encounters",
            "--generate",
            "--hospitals",
            "10",
            "--count",
            "3000",
            "--seed",
            "11",
            "--start-ms",
            "1764000000000",
            "--step-ms",
            "100",
            "--late-every",
            "50",
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    // Three bad lines among the good ones: not JSON, more SOAP sections done than expected,
    // a rating of 9.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut bad_done = serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap();
    bad_done["event_id"] = "bad-1".into();
    bad_done["soap_sections_completed"] = 9.into();
    let mut bad_rating = serde_json::from_str::<serde_json::Value>(&lines[1]).unwrap();
    bad_rating["event_id"] = "bad-2".into();
    bad_rating["physician_rating"] = 9.into();
    lines.insert(100, "{not json".into());
    lines.insert(1000, bad_done.to_string());
    lines.insert(2000, bad_rating.to_string());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let good: Vec<Encounter> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("kpi").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 2).await.unwrap();

    let mut service = rollup_service(&stack, &prefix, &url);
    let publish =
        guardian(&stack, &prefix, &["agent", "encounters", "--file", file.to_str().unwrap(), "--rate", "1500"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    // Kill the rollup service with SIGKILL while the encounters stream in, then restart it.
    wait_for("rollups being written", Duration::from_secs(60), async || {
        let n: i64 =
            sqlx::query("SELECT coalesce(sum(encounters), 0)::bigint FROM kpi_rollups WHERE window_size = 'DAY'")
                .fetch_one(&pool)
                .await
                .ok()?
                .get(0);
        (n > 300).then_some(())
    })
    .await;
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    let mut service = rollup_service(&stack, &prefix, &url);
    let published = publish.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&published.stdout);
    let errors = String::from_utf8_lossy(&published.stderr);
    assert_eq!(published.status.code(), Some(2), "bad lines make exit code 2: {report} {errors}");
    assert!(report.contains("published 3000 encounters") && report.contains("skipped 3 bad lines"), "{report}");
    for line in [101, 1001, 2001] {
        assert!(errors.contains(&format!("encounters.ndjson:{line}: skipped")), "line {line} not reported: {errors}");
    }

    let expected = recompute(&good);
    assert!(expected.values().any(|w| w.5 > 0), "the file has late records");
    let got = wait_for("every encounter rolled up", Duration::from_secs(90), async || {
        let got = stored(&pool).await;
        (got == expected).then_some(got)
    })
    .await;
    assert_eq!(got.len(), expected.len());

    // Replaying the whole encounter topic into itself changes nothing.
    let topic = format!("{prefix}guardian.encounters");
    let replay =
        guardian(&stack, &prefix, &["replay", "range", "--from-topic", &topic, "--to-topic", &topic]).output().unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    wait_for("the replayed records consumed", Duration::from_secs(90), async || {
        // The service runs with its default consumer group: its principal's.
        let n: i64 = sqlx::query("SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets WHERE group_id = $1")
            .bind(guardian_topics::ServiceId::Kpi.group())
            .fetch_one(&pool)
            .await
            .ok()?
            .get(0);
        (n >= 6000).then_some(())
    })
    .await;
    assert_eq!(stored(&pool).await, expected, "a replay changes no rollup");

    // The compacted topic ends with the database's windows.
    wait_for("the outbox drained", Duration::from_secs(30), async || {
        let n: i64 = sqlx::query("SELECT count(*) FROM kpi_outbox").fetch_one(&pool).await.ok()?.get(0);
        (n == 0).then_some(())
    })
    .await;
    let codec = Codec::embedded();
    let mut last: BTreeMap<String, KpiRollup> = BTreeMap::new();
    let mut outbox_ids = std::collections::BTreeSet::new();
    for m in guardian_kafka::reader::read_range(
        &KafkaSettings::new(&stack.kafka_bootstrap, "it-kpi"),
        "it-kpi",
        &[&format!("{prefix}kpi.rollups")],
        None,
    )
    .await
    .unwrap()
    {
        let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
        last.insert(key, codec.decode(&m.payload).unwrap());
        // Exactly once: each outbox row is in the topic once, across the SIGKILLs.
        let id = m.headers.iter().find(|(k, _)| k == guardian_pg::outbox::OUTBOX_ID_HEADER);
        let id = id.and_then(|(_, v)| String::from_utf8(v.clone()?).ok()).expect("every rollup carries its outbox id");
        assert!(outbox_ids.insert(id.clone()), "outbox row {id} is in the rollup topic twice");
    }
    assert_eq!(last.len(), expected.len(), "one key per window");
    for ((h, w, s), row) in &expected {
        let r = &last[&format!("{h}/{w}/{s}")];
        assert_eq!((r.encounters, r.late_corrections, r.generation_ms_p95), (row.0, row.5, row.7), "{h}/{w}/{s}");
    }
    // The registry and the readiness checks read the same windows.
    let registry = dir.join("hospitals.toml");
    let mut text = String::new();
    for h in 1..=10 {
        let phase = ["pre-deployment", "deployment", "cutover", "steady-state"][h % 4];
        text.push_str(&format!(
            "[[hospital]]\nid = \"h{h:03}\"\nregion = \"r{}\"\nehr_vendor = \"v{}\"\ntier = \"t1\"\nphase = \"{phase}\"\n\n",
            h % 3,
            h % 2
        ));
    }
    std::fs::write(&registry, text).unwrap();
    let loaded =
        guardian(&stack, &prefix, &["pilot", "registry", "--database-url", &url, "--file", registry.to_str().unwrap()])
            .output()
            .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    let ready = guardian(
        &stack,
        &prefix,
        &["pilot", "readiness", "--database-url", &url, "--from", "2025-11-24", "--to", "2025-11-26", "--json"],
    )
    .output()
    .unwrap();
    // No availability SLO events in the file: uptime has no data, so no hospital is ready.
    assert_eq!(ready.status.code(), Some(5), "{}", String::from_utf8_lossy(&ready.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&ready.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 10);
    for r in &rows {
        let h = r["hospital_id"].as_str().unwrap();
        let (done, expected): (i64, i64) = good.iter().filter(|e| e.hospital_id == h).fold((0, 0), |(d, x), e| {
            (d + i64::from(e.soap_sections_completed), x + i64::from(e.soap_sections_expected))
        });
        let completeness = r["completeness"].as_f64().unwrap();
        assert!((completeness - done as f64 / expected as f64).abs() < 1e-12, "{h}: {completeness}");
        assert!(r["phase"].is_string(), "{r}");
        assert!(r["failing"].as_array().unwrap().iter().any(|f| f == "uptime: no data"), "{r}");
    }
    // For the operations panels: platform SLO events (no hospital: uptime stays without
    // data) and a federated session of two versions, one failed round.
    let producer = guardian_kafka::Producer::new(&KafkaSettings::new(&stack.kafka_bootstrap, "it-kpi-ops")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let slo_events: Vec<SloEvent> = (0..200)
        .map(|i| SloEvent {
            event_id: format!("slo-{i}"),
            service: "inference".into(),
            hospital_id: None,
            slo: SloKind::InferenceLatency,
            good: i % 10 != 0,
            latency_ms: Some(900.0),
            observed_at: now - 30_000 + i,
        })
        .collect();
    producer.send_batch(&format!("{prefix}slo.events"), slo_events.iter().map(|e| ("inference", e))).await.unwrap();
    for (version, accuracy) in [(1i64, 0.81), (2, 0.94)] {
        let model = ModelVersion {
            session_id: "it-session".into(),
            version,
            round: version,
            parent_version: (version > 1).then_some(version - 1),
            object_uri: format!("s3://models/it/{version}.npy"),
            sha256: format!("{version:064x}"),
            parameters: 31,
            participants: vec!["h001".into(), "h002".into(), "h003".into()],
            accuracy: Some(accuracy),
        };
        producer.send(&format!("{prefix}fl.models"), &format!("it-session/{version}"), &model).await.unwrap();
    }
    for (round, kind) in
        [(1, RoundControlKind::Finished), (2, RoundControlKind::Finished), (3, RoundControlKind::Failed)]
    {
        let control = RoundControl {
            session_id: "it-session".into(),
            round,
            kind,
            issued_at: now,
            settings: None,
            first: vec![],
            second: vec![],
            signature: None,
            reason: None,
            evicted: vec![],
        };
        producer.send(&format!("{prefix}fl.rounds"), "it-session", &control).await.unwrap();
    }
    // The dashboard: aggregates by phase from the rollups, groups under k = 3 suppressed;
    // an operator token for the per-hospital panels.
    let listen = format!("127.0.0.1:{}", free_port());
    let operator = guardian_dashboard::tokens::new_token();
    let tokens = dir.join("dashboard-tokens.toml");
    std::fs::write(&tokens, format!("[operators]\n\"{}\" = \"it\"\n", guardian_dashboard::tokens::digest(&operator)))
        .unwrap();
    let _dashboard = Service(
        guardian(
            &stack,
            &prefix,
            &[
                "dashboard",
                "--database-url",
                &url,
                "--listen",
                &listen,
                "--days",
                "1000",
                "--tokens",
                tokens.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let get = |path: &str| http_get(&listen, path).filter(|(status, _)| *status == 200).map(|(_, body)| body);
    let get_operator = |path: &str| {
        http_get_as(&listen, path, Some(&operator)).filter(|(status, _)| *status == 200).map(|(_, body)| body)
    };
    let body = wait_for("the dashboard", Duration::from_secs(30), async || get("/api/aggregates?by=phase")).await;
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let phase_of = |h: usize| ["pre-deployment", "deployment", "cutover", "steady-state"][h % 4];
    for g in api["groups"].as_array().unwrap() {
        let key = g["key"].as_str().unwrap();
        let members: Vec<String> = (1..=10).filter(|h| phase_of(*h) == key).map(|h| format!("h{h:03}")).collect();
        assert_eq!(g["hospitals"].as_u64(), Some(members.len() as u64), "{key}");
        if members.len() < 3 {
            assert_eq!(
                (g["shown"].as_bool(), g["encounters"].is_null(), g["completeness"].is_null()),
                (Some(false), true, true),
                "{g}"
            );
        } else {
            let mine: Vec<&Encounter> = good.iter().filter(|e| members.contains(&e.hospital_id)).collect();
            assert_eq!(g["encounters"].as_i64(), Some(mine.len() as i64), "{key}");
            let done: i64 = mine.iter().map(|e| i64::from(e.soap_sections_completed)).sum();
            let exp: i64 = mine.iter().map(|e| i64::from(e.soap_sections_expected)).sum();
            assert!((g["completeness"].as_f64().unwrap() - done as f64 / exp as f64).abs() < 1e-12, "{g}");
        }
    }
    let page = get("/?by=phase").unwrap();
    assert!(
        page.contains("data-group=\"deployment\"") && !page.contains("data-group=\"steady-state\""),
        "suppressed groups draw no bar"
    );
    assert!(page.contains("suppressed (fewer than 3 hospitals)"));
    // A real browser renders the page: headless Chromium's DOM has a bar per shown group,
    // carrying the group's completeness, and a screenshot is kept beside the stack.
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", &format!("http://{listen}/?by=phase")])
        .output()
        .expect("chromium (Debian package; tests/stack/stack.sh install puts it there)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    for g in api["groups"].as_array().unwrap().iter().filter(|g| g["shown"].as_bool() == Some(true)) {
        let value = g["completeness"].as_f64().unwrap() * 100.0;
        let bar = format!("data-group=\"{}\" data-value=\"", g["key"].as_str().unwrap());
        let drawn: f64 = dom
            .split_once(&bar)
            .and_then(|(_, rest)| rest.split('"').next()?.parse().ok())
            .unwrap_or_else(|| panic!("the rendered page has no bar {bar}:\n{dom}"));
        assert!((drawn - value).abs() < 1e-9, "bar of {bar} shows {drawn}, the API says {value}");
    }
    // No empty panel: every chart the browser rendered has bars; and no value text runs
    // past its canvas (13 px text, at most 8.5 px a character).
    let figures: Vec<&str> = dom.split("<figure>").skip(1).map(|f| f.split("</figure>").next().unwrap()).collect();
    assert!(figures.len() >= 2, "the trend and the groups' charts:\n{dom}");
    for f in &figures {
        assert!(f.contains("class=\"bar\""), "an empty panel:\n{f}");
        let width: f64 = f.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        for text in f.split("<text class=\"value\" x=\"").skip(1) {
            let x: f64 = text.split('"').next().unwrap().parse().unwrap();
            let shown = text.split('>').nth(1).unwrap().split('<').next().unwrap();
            assert!(x + 8.5 * shown.chars().count() as f64 <= width, "{shown:?} at {x} runs past {width}:\n{f}");
        }
    }
    let shot = std::env::var("GUARDIAN_STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| stack.repo.join(".stack"))
        .join("dashboard.png");
    let status = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,800"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{listen}/?by=phase"))
        .output()
        .unwrap();
    assert!(
        status.status.success() && std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    println!("dashboard screenshot (the public page): {}", shot.display());
    // The public page shows no per-hospital figure: no comparison, no budgets, no id.
    assert!(!dom.contains("data-hospital") && !dom.contains("Privacy budgets"), "{dom}");
    assert!((1..=10).all(|h| !dom.contains(&format!("h{h:03}"))), "a hospital id on the public page:\n{dom}");
    assert_eq!(http_get(&listen, "/api/overview").map(|r| r.0), Some(401));
    // The operator's page, as served (headless Chromium sends no credentials; the page
    // is rendered on the server, no script).
    let dom = get_operator("/operator?by=phase").expect("the operator page");
    // The overview: a comparison row per hospital with its encounters from the file, and
    // the daily trend whose days sum to every encounter (all ten hospitals report).
    let overview: serde_json::Value = serde_json::from_str(&get_operator("/api/overview").unwrap()).unwrap();
    let rows = overview["hospitals"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "{overview}");
    for r in rows {
        let h = r["hospital_id"].as_str().unwrap();
        let n = good.iter().filter(|e| e.hospital_id == h).count() as i64;
        assert_eq!(r["encounters"].as_i64(), Some(n), "{r}");
        let drawn = format!("<tr data-hospital=\"{h}\"><td>{h}</td>");
        assert!(dom.contains(&drawn), "the rendered page has no comparison row for {h}");
    }
    let trend_total: i64 =
        overview["trend"].as_array().unwrap().iter().map(|d| d["encounters"].as_i64().unwrap()).sum();
    assert_eq!(trend_total, good.len() as i64);
    assert!(dom.contains("id=\"trend\"") && dom.contains("<h2>Privacy budgets</h2>"));
    // Operations: the session's rounds and accuracy per version, the SLO's burn (one bad
    // event in ten against a 99 % objective: 10× over every window holding them).
    let ops = wait_for("the operations panels", Duration::from_secs(30), async || {
        let v: serde_json::Value = serde_json::from_str(&get_operator("/api/operations")?).ok()?;
        let ready = v["fl_sessions"].as_array()?.first()?["versions"].as_array()?.len() == 2
            && v["fl_sessions"][0]["rounds_failed"] == 1
            && v["slo"].as_array()?.first()?["events"] == 200;
        ready.then_some(v)
    })
    .await;
    let session = &ops["fl_sessions"][0];
    assert_eq!((session["session_id"].as_str(), session["rounds_finished"].as_u64()), (Some("it-session"), Some(2)));
    assert_eq!(session["versions"][1]["accuracy"].as_f64(), Some(0.94));
    let slo = &ops["slo"][0];
    assert_eq!(slo["slo"], "inference_p99_2s");
    assert!((slo["burn_rates"]["1h"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{slo}");
    assert!(slo["alerts"].as_array().unwrap().iter().any(|a| a == "slow burn"), "{slo}");
    let dom = get_operator("/operator").expect("the operator page");
    assert!(dom.contains("data-group=\"v2 (round 2)\" data-value=\"94\""), "no accuracy bar of v2:\n{dom}");
    assert!(dom.contains("2 rounds finished, 1 failed; 2 model versions"));
    assert!(
        dom.contains("<tr data-slo=\"inference_p99_2s\"><td>inference_p99_2s</td><td>99.00 %</td><td>200</td>"),
        "{dom}"
    );
    let csv = get("/api/aggregates.csv?by=region").unwrap();
    assert!(csv.starts_with("group,hospitals,shown,encounters"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "three regions: {csv}");
    let _ = Command::new("kill").args(["-TERM", &service.0.id().to_string()]).status();
    assert!(service.0.wait().unwrap().success(), "the rollup service stops cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One topic in both framings: the first half of a seeded file published in Confluent
/// framing (`--wire-format confluent`, the stack's registry), the rest in single-object
/// encoding, the rollup service started after both with the registry: the rollups equal a
/// recomputation from the file, as they do for a topic in one framing (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_in_both_framings_rolls_up_as_a_topic_in_one() {
    let stack = Stack::get();
    let registry = stack.schema_registry_url.clone();
    let prefix = format!("{}.", unique("kpimix"));
    let with_registry = |args: &[&str]| {
        let mut c = guardian(&stack, &prefix, args);
        c.args(["--schema-registry-url", &registry]);
        c
    };
    run_ok(with_registry(&["topics", "apply"]));
    let dir = std::env::temp_dir().join(unique("kpimix"));
    std::fs::create_dir_all(&dir).unwrap();
    let all = dir.join("encounters.ndjson");
    run_ok(guardian(
        &stack,
        &prefix,
        &["agent", "encounters", "--generate", "--hospitals", "4", "--count", "600", "--seed", "5"]
            .into_iter()
            .chain(["--start-ms", "1764000000000", "--step-ms", "500", "--out", all.to_str().unwrap()])
            .collect::<Vec<_>>(),
    ));
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = (dir.join("first.ndjson"), dir.join("second.ndjson"));
    std::fs::write(&first, lines[..300].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[300..].join("\n") + "\n").unwrap();
    let mut confluent = with_registry(&["agent", "encounters", "--file", first.to_str().unwrap()]);
    confluent.args(["--wire-format", "confluent"]);
    run_ok(confluent);
    run_ok(guardian(&stack, &prefix, &["agent", "encounters", "--file", second.to_str().unwrap()]));

    // Both framings are on the topic.
    let topic = topic_name(&prefix, guardian_topics::TopicId::Encounters);
    let settings = KafkaSettings::new(&stack.kafka_bootstrap, "it-kpimix");
    let records = guardian_kafka::reader::read_range(&settings, "it-kpimix", &[&topic], None).await.unwrap();
    let framing = |magic: u8| records.iter().filter(|r| r.payload.first() == Some(&magic)).count();
    assert_eq!((framing(0), framing(0xC3)), (300, 300), "{} records", records.len());

    let url = guardian_pg::with_new_schema(&stack.database_url, &unique("kpimix").replace('-', "_")).await.unwrap();
    let pool = guardian_pg::connect(&url, 2).await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _service = Service(
        with_registry(&["kpi", "--database-url", &url, "--listen", &listen, "--lateness-secs", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let good: Vec<Encounter> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected = recompute(&good);
    wait_for("every encounter of both framings rolled up", Duration::from_secs(90), async || {
        (stored(&pool).await == expected).then_some(())
    })
    .await;
}
