//! Traces in a real collector (the stack's Jaeger v2, over OTLP/HTTP), queried back
//! through Jaeger's API: one encounter's trace runs from the agent that published it
//! through the KPI rollup to the rollup record its outbox published; one federated round
//! is one trace, the aggregator's round span with each hospital's round span under it.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use guardian_testkit::{Stack, http_get_url, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::Value;

/// `guardian` under `prefix`, exporting its spans to the stack's collector (flushed every
/// 500 ms instead of every 5 s).
fn traced(stack: &Stack, prefix: &str, args: &[&str]) -> std::process::Command {
    let mut c = guardian_on(stack, prefix, args);
    c.env("OTEL_EXPORTER_OTLP_ENDPOINT", &stack.otlp_endpoint).env("OTEL_BSP_SCHEDULE_DELAY", "500");
    c
}

/// A span of a trace as Jaeger returns it.
#[derive(Debug, Clone)]
struct Span {
    id: String,
    operation: String,
    service: String,
    parent: Option<String>,
}

/// The spans of trace `trace_id` (empty until the collector has it).
fn trace_spans(stack: &Stack, trace_id: &str) -> Vec<Span> {
    let Some((200, body)) = http_get_url(&stack.jaeger_url, &format!("/api/traces/{trace_id}")) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    let Some(trace) = v["data"].as_array().and_then(|d| d.first()) else { return Vec::new() };
    let services: BTreeMap<String, String> = trace["processes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| (k.clone(), p["serviceName"].as_str().unwrap().to_string()))
        .collect();
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Span {
            id: s["spanID"].as_str().unwrap().to_string(),
            operation: s["operationName"].as_str().unwrap().to_string(),
            service: services[s["processID"].as_str().unwrap()].clone(),
            parent: s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF" && r["traceID"] == trace_id)
                .map(|r| r["spanID"].as_str().unwrap().to_string()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encounter_is_traced_from_the_agent_through_the_rollup_to_its_outbox_record() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("traces"));
    run_ok(guardian_on(&stack, &prefix, &["topics", "apply"]));
    let schema = unique("it_traces").replace('-', "_");
    let url = guardian_pg::with_new_schema(&stack.database_url, &schema).await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let group = guardian_topics::ServiceId::Kpi.group_for(&schema);
    let _kpi = KillOnDrop(
        traced(&stack, &prefix, &["kpi", "--database-url", &url, "--listen", &listen, "--group", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready([&listen], "the rollup service");

    // One encounter, published in one traced batch.
    run_ok(traced(&stack, &prefix, &["agent", "encounters", "--generate", "--hospitals", "1", "--count", "1"]));

    // The rollup record its window's change published, and the trace its headers carry.
    let rollups = topic_name(&prefix, guardian_topics::TopicId::KpiRollups);
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique("it-traces-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(&[&rollups]).unwrap();
    let traceparent = wait_for("a rollup record", Duration::from_secs(60), async || {
        let m = c.poll(Duration::from_millis(500))?.ok()?;
        let h = m.headers()?;
        h.iter().find(|h| h.key == "traceparent").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    })
    .await;
    // W3C: version-traceid-spanid-flags.
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace_id, record_parent) = (parts[1].to_string(), parts[2].to_string());

    let spans = wait_for("the trace in the collector, from both processes", Duration::from_secs(60), async || {
        let spans = trace_spans(&stack, &trace_id);
        let has = |op: &str| spans.iter().any(|s| s.operation == op);
        (has("agent.publish") && has("kafka.process") && has("outbox.publish")).then_some(spans)
    })
    .await;
    let one = |op: &str| {
        let found: Vec<&Span> = spans.iter().filter(|s| s.operation == op).collect();
        assert_eq!(found.len(), 1, "one {op} span: {spans:#?}");
        found[0].clone()
    };
    let publish = one("agent.publish");
    let process = one("kafka.process");
    // One outbox row, so one publishing span, per window the encounter changed.
    let outboxes: Vec<&Span> = spans.iter().filter(|s| s.operation == "outbox.publish").collect();
    assert_eq!(publish.service, "guardian-agent-encounters");
    assert_eq!(publish.parent, None, "the agent's batch starts the trace");
    assert_eq!(process.service, "guardian-kpi");
    assert_eq!(process.parent.as_deref(), Some(publish.id.as_str()), "the rollup continues the agent's span");
    for outbox in &outboxes {
        assert_eq!(outbox.service, "guardian-kpi");
        assert_eq!(outbox.parent.as_deref(), Some(process.id.as_str()), "the outbox continues the record's span");
    }
    assert!(outboxes.iter().any(|o| o.id == record_parent), "the rollup record carries an outbox span: {spans:#?}");
}

/// The traces of `service` whose spans carry every tag of `tags` (Jaeger's search).
fn find_traces(stack: &Stack, service: &str, tags: &serde_json::Value) -> Vec<String> {
    let path = format!(
        "/api/traces?service={service}&limit=20&lookback=1h&tags={}",
        guardian_testkit::url_encode(&tags.to_string())
    );
    let Some((200, body)) = http_get_url(&stack.jaeger_url, &path) else { return Vec::new() };
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"].as_array().into_iter().flatten().map(|t| t["traceID"].as_str().unwrap().to_string()).collect()
}

/// The value of a span's tag in trace `trace_id`, by span id.
fn span_tags(stack: &Stack, trace_id: &str, key: &str) -> BTreeMap<String, String> {
    let Some((200, body)) = http_get_url(&stack.jaeger_url, &format!("/api/traces/{trace_id}")) else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"][0]["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let tag = s["tags"].as_array()?.iter().find(|t| t["key"] == key)?;
            Some((s["spanID"].as_str()?.to_string(), tag["value"].as_str()?.to_string()))
        })
        .collect()
}

#[test]
fn a_federated_round_is_one_trace_across_the_aggregator_and_the_agents() {
    let stack = Stack::get();
    let prefix = format!("{}.", unique("fltrace"));
    let session = unique("session");
    let hospitals = ["h001", "h002", "h003"];
    let fed = Federation::new(&stack, &prefix, &hospitals);
    let _accountant = accountant(&stack, &prefix, &["--hospital-epsilon", "1000", "--global-epsilon", "10000"]);
    let mut agents = Vec::new();
    let mut probes = Vec::new();
    for (i, h) in hospitals.iter().enumerate() {
        let shard = i.to_string();
        let (mut c, listen) =
            fed.agent(&stack, h, &["--demo-hospitals", "3", "--demo-shard", &shard, "--epsilon-limit", "1000"]);
        c.env("OTEL_EXPORTER_OTLP_ENDPOINT", &stack.otlp_endpoint).env("OTEL_BSP_SCHEDULE_DELAY", "500");
        agents.push(KillOnDrop(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()));
        probes.push(listen);
    }
    wait_ready(probes.iter(), "the agents");
    let mut start = fed.start(&stack, &session, &["--rounds", "1"]);
    start.env("OTEL_EXPORTER_OTLP_ENDPOINT", &stack.otlp_endpoint).env("OTEL_BSP_SCHEDULE_DELAY", "500");
    let table = run_ok(start);
    assert_eq!(session_rows(&table).len(), 1, "{table}");
    assert_eq!(session_rows(&table)[0][1], "finished", "{table}");

    // The aggregator's round span, found by its session, starts the trace; each hospital's
    // round span is its child (through the OPEN record's headers).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let trace = loop {
        let found = find_traces(&stack, "guardian-fl-start", &serde_json::json!({ "session": session }));
        if let Some(trace) = found.first()
            && trace_spans(&stack, trace).iter().filter(|s| s.operation == "fl.agent.round").count() == hospitals.len()
        {
            break trace.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the round's trace with every hospital's span: {found:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let spans = trace_spans(&stack, &trace);
    let rounds: Vec<&Span> = spans.iter().filter(|s| s.operation == "fl.round").collect();
    assert_eq!(rounds.len(), 1, "{spans:#?}");
    let round = rounds[0];
    assert_eq!(round.service, "guardian-fl-start");
    assert_eq!(round.parent, None, "the round starts the trace");
    let joined = span_tags(&stack, &trace, "hospital");
    let mut seen = Vec::new();
    for s in spans.iter().filter(|s| s.operation == "fl.agent.round") {
        assert_eq!(s.service, "guardian-fl-agent");
        assert_eq!(s.parent.as_deref(), Some(round.id.as_str()), "an agent's round continues the aggregator's");
        seen.push(joined[&s.id].clone());
    }
    seen.sort();
    assert_eq!(seen, hospitals, "one span per hospital");
}
