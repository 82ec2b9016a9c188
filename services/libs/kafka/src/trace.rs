//! W3C trace context (`traceparent`, `tracestate`) in Kafka record headers.
//!
//! Producers inject the current span's context; consumers extract it and make it the
//! parent of the span that processes the record, so one trace follows an event across
//! services. Uses the globally installed propagator (the runtime crate installs the W3C
//! one); with none installed, nothing is written and extraction yields an empty context.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector(Vec<(String, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct HeaderExtractor<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// Adds the current span's trace context to `headers`.
pub fn inject_current(headers: OwnedHeaders) -> OwnedHeaders {
    inject(&tracing::Span::current().context(), headers)
}

/// The header pairs that carry the current span's trace context (none outside a trace).
/// Computed once, they can be added to many records sent from the same span.
pub fn current_pairs() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut injector = HeaderInjector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut injector));
    injector.0
}

/// The current span's W3C `traceparent` (none outside a trace): what a row stored for
/// publishing later keeps of the trace it was written in.
pub fn current_traceparent() -> Option<String> {
    current_pairs().into_iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v)
}

/// The trace context a stored `traceparent` names (empty if it names none).
pub fn from_traceparent(traceparent: &str) -> Context {
    let carrier: std::collections::HashMap<String, String> =
        [("traceparent".to_string(), traceparent.to_string())].into();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// The trace context carried by the headers of a record read as pairs (as
/// [`crate::reader::Incoming`] keeps them).
pub fn extract_pairs(headers: &[(String, Option<Vec<u8>>)]) -> Context {
    let carrier: std::collections::HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), String::from_utf8(v.clone()?).ok()?)))
        .collect();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// Makes `span` a child of `parent` (a context extracted from a record's headers).
pub fn continue_from(span: &tracing::Span, parent: Context) {
    let _ = span.set_parent(parent);
}

/// Makes `span` a child of the span a stored `traceparent` names.
pub fn continue_stored(span: &tracing::Span, traceparent: &str) {
    let _ = span.set_parent(from_traceparent(traceparent));
}

/// Adds `span`'s trace context to `headers`.
pub fn inject_span(span: &tracing::Span, headers: OwnedHeaders) -> OwnedHeaders {
    inject(&span.context(), headers)
}

/// `headers` plus `pairs`; no header block at all when both are empty (librdkafka
/// allocates one per record otherwise).
pub fn with_pairs(headers: Option<OwnedHeaders>, pairs: &[(String, String)]) -> Option<OwnedHeaders> {
    if pairs.is_empty() {
        return headers;
    }
    let mut headers = headers.unwrap_or_default();
    for (key, value) in pairs {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    Some(headers)
}

/// Adds `cx` to `headers`.
pub fn inject(cx: &Context, mut headers: OwnedHeaders) -> OwnedHeaders {
    let mut injector = HeaderInjector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut injector));
    for (key, value) in &injector.0 {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    headers
}

/// The trace context carried by a record's headers (empty when there is none).
pub fn extract(headers: Option<&BorrowedHeaders>) -> Context {
    match headers {
        Some(h) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h))),
        None => Context::new(),
    }
}

/// The same, for detached records.
pub fn extract_owned(headers: Option<&OwnedHeaders>) -> Context {
    match headers {
        Some(h) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h))),
        None => Context::new(),
    }
}

/// Whether a record's extracted context continues a producer's trace.
pub fn has_parent(cx: &Context) -> bool {
    cx.span().span_context().is_valid()
}

/// A span for processing one record, child of the producer's trace when there is one.
pub fn record_span(topic: &str, partition: i32, offset: i64, parent: Context) -> tracing::Span {
    let span = tracing::info_span!("kafka.process", messaging.destination = topic, partition, offset);
    let _ = span.set_parent(parent);
    span
}
