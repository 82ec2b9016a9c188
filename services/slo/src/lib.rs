//! The SLO monitor. It reads `slo.events` from the start of its horizon (no consumer
//! group: its windows are rebuilt from the topic at every start), keeps per-minute good /
//! total counts per objective ([`guardian_burnrate`]), and every few seconds publishes, on
//! `/metrics`:
//!
//! - `guardian_slo_error_ratio{slo, window}` and `guardian_slo_burn_rate{slo, window}`
//!   (error ratio divided by the error budget 1 − objective) over 5m, 30m, 1h, 2h, 6h, 1d
//!   and 3d, for the multi-window burn-rate alerts in `prometheus/rules.yaml`;
//! - `guardian_slo_error_budget_remaining{slo}` over the budget period, and
//!   `guardian_slo_objective{slo}`, `guardian_slo_events{slo}`.

pub mod config;
pub mod metrics;

pub use config::SloArgs;
pub use guardian_burnrate::{BURN_ALERTS, Monitor, SloStatus, Source as Config, follow};
use guardian_kafka::KafkaClientError;
use guardian_runtime::Shutdown;
use guardian_topics::{ServiceId, TopicId};

use crate::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] guardian_runtime::Error),
    #[error(transparent)]
    Catalogue(#[from] guardian_topics::CatalogueError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
}

/// The service process: the ops endpoint, the topic check, then [`run`] until `shutdown`.
pub async fn serve(args: SloArgs, shutdown: Shutdown) -> Result<(), SloError> {
    let ops = guardian_runtime::http::serve_ops(ServiceId::Slo.name(), args.listen, None, &shutdown).await?;
    let catalogue = args.kafka.checked_catalogue(ServiceId::Slo, &[TopicId::SloEvents]).await?;
    let config = Config {
        kafka: args.kafka.settings(&ServiceId::Slo.client_id()),
        slo_topic: catalogue.topic(TopicId::SloEvents)?,
        period_ms: i64::from(args.period_days.max(1)) * guardian_runtime::time::DAY_MS,
        publish_every: std::time::Duration::from_secs(args.publish_secs.max(1)),
        max_skew_ms: guardian_kafka::event_time::skew_ms(args.max_event_skew_secs).map_err(SloError::Config)?,
    };
    tracing::info!(metrics = %format!("http://{}/metrics", ops.bound), topic = %config.slo_topic, "slo monitor starting");
    Ok(run(config, shutdown, || ops.readiness.set_ready(true)).await?)
}

fn publish(status: &[SloStatus]) {
    for s in status {
        let slo = s.slo.to_string();
        ::metrics::gauge!(m::OBJECTIVE, m::SLO => slo.clone()).set(s.objective);
        for (name, rate) in &s.burn_rates {
            ::metrics::gauge!(m::ERROR_RATIO, m::SLO => slo.clone(), m::WINDOW => *name)
                .set(rate * (1.0 - s.objective));
            ::metrics::gauge!(m::BURN_RATE, m::SLO => slo.clone(), m::WINDOW => *name).set(*rate);
        }
        ::metrics::gauge!(m::EVENTS, m::SLO => slo.clone()).set(s.events as f64);
        if let Some(remaining) = s.budget_remaining {
            ::metrics::gauge!(m::ERROR_BUDGET_REMAINING, m::SLO => slo).set(remaining);
        }
    }
}

/// Runs until `shutdown`; `ready` is called once the topic was read up to its end.
pub async fn run(config: Config, shutdown: Shutdown, ready: impl Fn()) -> Result<(), KafkaClientError> {
    let monitor = std::sync::Arc::new(std::sync::Mutex::new(Monitor::default()));
    let period_ms = config.period_ms;
    follow(&config, &monitor, shutdown, ready, |m| publish(&m.status(guardian_runtime::now_ms(), period_ms))).await
}

#[cfg(test)]
mod tests {
    use guardian_burnrate::MINUTE_MS;
    use guardian_schemas::records::{SloEvent, SloKind};

    use super::*;

    #[test]
    fn the_status_alerts_like_the_shipped_rules() {
        let rules = include_str!("../prometheus/rules.yaml");
        for (_, long, short, threshold) in BURN_ALERTS {
            assert!(rules.contains(&format!("guardian_slo_burn_rate{{window=\"{long}\"}} > {threshold}")), "{long}");
            assert!(rules.contains(&format!("guardian_slo_burn_rate{{window=\"{short}\"}} > {threshold}")), "{short}");
        }
        let now = 10_000 * MINUTE_MS;
        let event = |minute: i64, good: bool| SloEvent {
            event_id: String::new(),
            service: "scribe".into(),
            hospital_id: None,
            slo: SloKind::InferenceLatency,
            observed_at: minute * MINUTE_MS,
            good,
            latency_ms: None,
        };
        let mut m = Monitor::default();
        // Three good days, then five minutes of 50 % errors (a 99 % objective): a fast
        // burn over 5m, not over 1h.
        for minute in 10_000 - 3 * 1_440..10_000 - 4 {
            for _ in 0..100 {
                m.observe(&event(minute, true));
            }
        }
        for minute in 10_000 - 4..=10_000 {
            for i in 0..100 {
                m.observe(&event(minute, i % 2 == 0));
            }
        }
        let s = &m.status(now, 30 * 1_440 * MINUTE_MS)[0];
        assert_eq!(s.slo, "inference_p99_2s");
        assert!((s.burn_rates["5m"] - 50.0).abs() < 1e-9, "{:?}", s.burn_rates);
        assert!(s.burn_rates["1h"] < 14.4);
        assert!(s.alerts.is_empty(), "{:?}", s.alerts);
        // Another hour of it: the 1h window burns too.
        for minute in 10_001..=10_060 {
            for i in 0..100 {
                m.observe(&event(minute, i % 2 == 0));
            }
        }
        let s = &m.status(10_060 * MINUTE_MS, 30 * 1_440 * MINUTE_MS)[0];
        assert!(s.alerts.contains(&"fast burn"), "{:?} {:?}", s.alerts, s.burn_rates);
        assert!(s.budget_remaining.unwrap() < 1.0);
    }
}
