//! (c) An undecodable record lands in the dead-letter topic with its origin in headers
//!     and in the Avro value, and the consumer goes on with the records after it.
//! (d) A trace id set by a producer is the trace id of the span that processes the
//!     record on the consumer side (W3C `traceparent` in the record headers).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use guardian_kafka::dlq::DeadLetterSink;
use guardian_kafka::{AtLeastOnceConsumer, ProcessError, Producer, RecordHandler};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{BudgetSpend, DeadLetter};
use guardian_testkit::{Stack, eventually, unique};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rdkafka::message::{BorrowedMessage, Message};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Decodes budget spends; remembers each one with the trace id of the span it ran in.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, TraceId)>>>,
}

impl RecordHandler for Recorder {
    async fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), ProcessError> {
        let spend: BudgetSpend = Codec::embedded().decode(msg.payload().unwrap_or_default())?;
        let trace_id = tracing::Span::current().context().span().span_context().trace_id();
        self.seen.lock().unwrap().push((spend.event_id, trace_id));
        Ok(())
    }
}

fn start_consumer(
    stack: &Stack,
    input: &str,
    dlq: &str,
    recorder: &Recorder,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<()> {
    let s = settings(stack);
    let group = unique("it-alo-group");
    let sink = DeadLetterSink::new(Producer::new(&s).unwrap(), dlq, &group);
    let consumer = AtLeastOnceConsumer::new(&s, &group, &[input], sink).unwrap();
    let mut handler = recorder.clone();
    let stop = shutdown.wait();
    tokio::spawn(async move {
        consumer.run(&mut handler, stop).await.expect("consumer stops cleanly");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_dead_lettered_and_the_consumer_goes_on() {
    let stack = Stack::get();
    let (input, dlq) = (unique("it-dlq-in"), unique("it-dlq-out"));
    create_topics(&stack, &[&input, &dlq], 2).await;
    // 200 slots, every 20th one garbage: 10 poison records spread through the stream.
    let ids = produce_spends(&stack, &input, 200, Some(20)).await;
    assert_eq!(ids.len(), 190);

    let recorder = Recorder::default();
    let shutdown = Shutdown::new();
    let task = start_consumer(&stack, &input, &dlq, &recorder, &shutdown);
    eventually("every good record handled", Duration::from_secs(60), || {
        let n = recorder.seen.lock().unwrap().len();
        async move { (n >= 190).then_some(()) }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();

    let handled: BTreeSet<String> = recorder.seen.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(handled, ids.iter().cloned().collect::<BTreeSet<_>>(), "records after each poison record were handled");

    let dead = read_all(&stack, &dlq, "read_committed").await;
    assert_eq!(dead.len(), 10, "one dead letter per poison record");
    let source = read_all(&stack, &input, "read_committed").await;
    let codec = Codec::embedded();
    for d in &dead {
        assert_eq!(header(d, "dlq.source.topic"), Some(input.as_str()));
        assert_eq!(header(d, "dlq.error.kind"), Some("decode"));
        assert!(
            header(d, "dlq.error").is_some_and(|e| e.contains("avro")),
            "error header names the problem: {:?}",
            header(d, "dlq.error")
        );
        let partition: i32 = header(d, "dlq.source.partition").unwrap().parse().unwrap();
        let offset: i64 = header(d, "dlq.source.offset").unwrap().parse().unwrap();
        // The headers point at the very record that failed, and the value keeps it whole.
        let original =
            source.iter().find(|m| m.partition() == partition && m.offset() == offset).expect("source record exists");
        assert_eq!(original.payload(), Some(&b"\x00garbage"[..]));
        let letter: DeadLetter = codec.decode(d.payload().unwrap()).unwrap();
        assert_eq!((letter.source_partition, letter.source_offset), (partition, offset));
        assert_eq!(letter.payload.as_deref(), Some(&b"\x00garbage"[..]));
        assert_eq!(letter.key.as_deref(), Some(&b"h001"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_trace_id_reaches_the_consumer_span() {
    let _telemetry = guardian_runtime::telemetry::init("it-trace", Default::default());
    let stack = Stack::get();
    let (input, dlq) = (unique("it-trace-in"), unique("it-trace-dlq"));
    create_topics(&stack, &[&input, &dlq], 1).await;

    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let remote = SpanContext::new(
        trace_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let producer = Producer::new(&settings(&stack)).unwrap();
    let traced = spend(1);
    {
        let span = tracing::info_span!("it.produce");
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let _entered = span.enter();
        producer.send(&input, &traced.hospital_id, &traced).await.unwrap();
    }
    // A record produced outside any trace gets a trace of its own, not the one above.
    let untraced = spend(2);
    producer.send(&input, &untraced.hospital_id, &untraced).await.unwrap();

    let on_wire = read_all(&stack, &input, "read_committed").await;
    let traceparent = header(&on_wire[0], "traceparent").expect("traceparent header on the record");
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");

    let recorder = Recorder::default();
    let shutdown = Shutdown::new();
    let task = start_consumer(&stack, &input, &dlq, &recorder, &shutdown);
    eventually("both records handled", Duration::from_secs(60), || {
        let n = recorder.seen.lock().unwrap().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    shutdown.trigger();
    task.await.unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    let of = |id: &str| seen.iter().find(|(e, _)| e == id).map(|(_, t)| *t).unwrap();
    assert_eq!(of(&traced.event_id), trace_id, "the consumer span continues the producer's trace");
    assert_ne!(of(&untraced.event_id), trace_id);
    assert_ne!(of(&untraced.event_id), TraceId::INVALID, "every processed record runs in a real span");
}
