//! Alerting from the services' real `/metrics`: a `guardian slo` monitor announces its
//! endpoint in the stack's discovery folder, Prometheus scrapes it, evaluates the shipped
//! rules (`services/slo/prometheus/rules.yaml`, their `for` durations as shipped) and
//! sends the fast-burn page to Alertmanager, which delivers it to a webhook in the test;
//! when the errors stop, the alert resolves. A monitor that stops takes its target out of
//! discovery. Every query of the Grafana dashboard runs on the same Prometheus.

mod common;

use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guardian_kafka::{KafkaSettings, Producer};
use guardian_schemas::records::{SloEvent, SloKind};
use guardian_testkit::{Stack, http_get_url, unique, url_encode};
use serde_json::Value;

/// The series of an instant query on the stack's Prometheus.
fn query(stack: &Stack, promql: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", url_encode(promql));
    let (status, body) = http_get_url(&stack.prometheus_url, &path).expect("Prometheus answers");
    assert_eq!(status, 200, "{promql}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The alerts Alertmanager holds that match every `label="value"` filter.
fn alertmanager_alerts(stack: &Stack, filters: &[String]) -> Vec<Value> {
    let q: Vec<String> = filters.iter().map(|f| format!("filter={}", url_encode(f))).collect();
    let (status, body) = http_get_url(&stack.alertmanager_url, &format!("/api/v2/alerts?{}", q.join("&")))
        .expect("Alertmanager answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap().as_array().cloned().unwrap_or_default()
}

/// Alertmanager's notifications, as the webhook receiver the stack routes them to gets
/// them (the JSON bodies of its POSTs).
fn webhook_receiver(addr: &str) -> std::sync::mpsc::Receiver<Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
        panic!("the stack's alert webhook {addr} is taken ({e}): is another alerting test running?")
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Waits for a notification of `status` ("firing" or "resolved") about the fast-burn
/// alert of the monitor at `listen` (others, of other tests' processes, are skipped).
fn notification(webhook: &std::sync::mpsc::Receiver<Value>, status: &str, listen: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = webhook.recv_timeout(left).unwrap_or_else(|_| panic!("no {status} notification within {within:?}"));
        let ours = n["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "GuardianSloFastBurn"
                && a["labels"]["instance"] == listen
                && a["status"] == status
        });
        if ours && n["status"] == status {
            return n;
        }
    }
}

fn availability(id: String, good: bool, at: i64) -> SloEvent {
    SloEvent {
        event_id: id,
        service: "guardian-agent".into(),
        hospital_id: Some("h001".into()),
        slo: SloKind::Availability,
        good,
        latency_ms: None,
        observed_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_burn_pages_through_prometheus_and_alertmanager_then_resolves() {
    let stack = Stack::get();
    let webhook = webhook_receiver(&stack.alert_webhook);
    let prefix = format!("{}.", unique("alerting"));
    // Announced to the stack's Prometheus whatever the caller's environment says.
    let guardian = |args: &[&str]| {
        let mut c = guardian_on(&stack, &prefix, args);
        c.env("GUARDIAN_PROMETHEUS_SD_DIR", &stack.prometheus_sd_dir);
        c
    };
    assert!(guardian(&["topics", "apply"]).output().unwrap().status.success());
    let topic = format!("{prefix}slo.events");
    let producer = Producer::new(&KafkaSettings::new(&stack.kafka_bootstrap, "it-alerting")).unwrap();
    // The last ten minutes, one availability check a second, every one failed: a burn rate
    // of 200 (1 against a 0.5 % budget) over 5 minutes and over 1 hour.
    let now = guardian_runtime::now_ms();
    let down: Vec<SloEvent> =
        (0..600i64).map(|i| availability(format!("down-{i}"), false, now - 600_000 + i * 1_000)).collect();
    producer.send_batch(&topic, down.iter().map(|e| ("h001", e))).await.unwrap();

    let listen = format!("127.0.0.1:{}", free_port());
    let mut monitor = guardian(&["slo", "--listen", &listen, "--publish-secs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target = stack.prometheus_sd_dir.join(format!("slo-{}.json", monitor.id()));
    let instance = format!("instance=\"{listen}\"");
    let started = Instant::now();

    // Discovered and scraped: Prometheus has the monitor's burn rate.
    let burn = wait_for("Prometheus to scrape the monitor's burn rate", Duration::from_secs(60), async || {
        let r = query(&stack, &format!("guardian_slo_burn_rate{{{instance},slo=\"availability\",window=\"5m\"}}"));
        r.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
    })
    .await;
    assert!(target.exists(), "the monitor announced itself in {}", target.display());
    assert!((burn - 200.0).abs() < 1e-9, "burn rate over 5m: {burn}");
    let scraped = started.elapsed();

    // The shipped rule: pending at once, firing after its `for: 2m`.
    let alert = format!("ALERTS{{alertname=\"GuardianSloFastBurn\",{instance},slo=\"availability\"}}");
    let pending = wait_for("the fast-burn alert to be pending", Duration::from_secs(30), async || {
        query(&stack, &alert).into_iter().find(|s| s["metric"]["alertstate"] == "pending")
    })
    .await;
    assert_eq!(pending["metric"]["severity"], "page");
    wait_for("the fast-burn alert to fire", Duration::from_secs(180), async || {
        query(&stack, &alert).into_iter().find(|s| s["metric"]["alertstate"] == "firing")
    })
    .await;
    let firing = started.elapsed();

    // Alertmanager holds it, with the rule's labels and the scraped target's, and delivers it.
    let filters = ["alertname=\"GuardianSloFastBurn\"".to_string(), instance.clone(), "slo=\"availability\"".into()];
    let received = wait_for("Alertmanager to hold the alert", Duration::from_secs(60), async || {
        alertmanager_alerts(&stack, &filters).into_iter().next()
    })
    .await;
    assert_eq!(received["status"]["state"], "active", "{received}");
    assert_eq!(received["labels"]["severity"], "page");
    assert_eq!(received["labels"]["service"], "slo");
    let paged = notification(&webhook, "firing", &listen, Duration::from_secs(60));
    assert_eq!(paged["commonLabels"]["severity"], "page", "{paged}");
    assert!(paged["commonAnnotations"]["summary"].as_str().unwrap().contains("availability"), "{paged}");
    let delivered = started.elapsed();

    // The errors stop: 5,000 good checks now bring the 5-minute burn rate under 14.4
    // (at most 300 failures in 5,300), the alert's `and` turns false and it resolves.
    let at = guardian_runtime::now_ms();
    let up: Vec<SloEvent> = (0..5_000).map(|i| availability(format!("up-{i}"), true, at)).collect();
    producer.send_batch(&topic, up.iter().map(|e| ("h001", e))).await.unwrap();
    wait_for("the alert to leave Prometheus's active alerts", Duration::from_secs(60), async || {
        query(&stack, &alert).is_empty().then_some(())
    })
    .await;
    let resolved = notification(&webhook, "resolved", &listen, Duration::from_secs(60));
    assert_eq!(resolved["commonLabels"]["alertname"], "GuardianSloFastBurn", "{resolved}");
    eprintln!(
        "alerting: scraped after {scraped:?}, firing after {firing:?}, delivered after {delivered:?}, resolved after {:?}",
        started.elapsed()
    );

    // A monitor that stops (SIGTERM) withdraws its target.
    assert!(Command::new("kill").args(["-TERM", &monitor.id().to_string()]).status().unwrap().success());
    let exited = wait_for("the monitor to stop", Duration::from_secs(30), async || monitor.try_wait().unwrap()).await;
    assert!(exited.success(), "{exited}");
    assert!(!target.exists(), "{} is withdrawn", target.display());
}

/// Every `guardian_*` metric name a PromQL expression reads (histogram series name their
/// family).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("guardian_"))
        .map(|w| ["_bucket", "_sum", "_count"].iter().find_map(|s| w.strip_suffix(s)).unwrap_or(w).to_string())
        .collect()
}

/// The string literals of the workspace's Rust sources under `dir`.
fn sources(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_dashboard_query_runs_on_prometheus() {
    let stack = Stack::get();
    let file = stack.repo.join("helm/guardian/files/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let job = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "job")
        .and_then(|v| v["current"]["value"].as_str())
        .expect("the job variable has a default")
        .to_string();
    let mut code = String::new();
    sources(&stack.repo.join("services"), &mut code);
    let mut ids = std::collections::BTreeSet::new();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique: {}", panel["id"]);
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no queries"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            let expr = t["expr"].as_str().unwrap().replace("$job", &job);
            // Prometheus parses and type-checks it (a 400 fails `query`).
            query(&stack, &expr);
            for name in metric_names(&expr) {
                assert!(code.contains(&format!("\"{name}\"")), "{title}: {name} is not a metric any service declares");
            }
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
}
