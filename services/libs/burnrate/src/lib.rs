//! Burn-rate state of the service level objectives: per-minute good / total counts per
//! objective, error ratios and burn rates over the windows of the multi-window alerts, and
//! the error budget left over a period. The SLO monitor publishes it as metrics; the
//! dashboard shows it. Both rebuild it from `slo.events` ([`follow`]): no state of its own.
//!
//! Time comes from the events (`observed_at`) and the caller (`now`), so a status is a
//! function of the events read and the instant asked about.

use std::collections::BTreeMap;
use std::time::Duration;

use guardian_kafka::reader::{Start, Tail};
use guardian_kafka::{KafkaClientError, KafkaSettings};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{SloEvent, SloKind};

pub const MINUTE_MS: i64 = 60_000;

/// The objectives (from the pilot's service levels): the share of good observations.
pub fn objective(kind: SloKind) -> Option<(&'static str, f64)> {
    match kind {
        SloKind::Availability => Some(("availability", 0.995)),
        SloKind::SoapGenerationLatency => Some(("soap_generation_p95_5s", 0.95)),
        SloKind::InferenceLatency => Some(("inference_p99_2s", 0.99)),
        SloKind::CdsEvaluationLatency => Some(("cds_evaluation_p995_500ms", 0.995)),
        SloKind::Other => None,
    }
}

pub const WINDOWS: [(&str, i64); 7] = [
    ("5m", 5 * MINUTE_MS),
    ("30m", 30 * MINUTE_MS),
    ("1h", 60 * MINUTE_MS),
    ("2h", 120 * MINUTE_MS),
    ("6h", 360 * MINUTE_MS),
    ("1d", 1_440 * MINUTE_MS),
    ("3d", 4_320 * MINUTE_MS),
];

/// Per-minute (good, total) counts of one objective.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    minutes: BTreeMap<i64, (u64, u64)>,
}

impl Counts {
    pub fn add(&mut self, at_ms: i64, good: bool) {
        let c = self.minutes.entry(at_ms.div_euclid(MINUTE_MS)).or_default();
        c.0 += u64::from(good);
        c.1 += 1;
    }

    /// (good, total) of the minutes that overlap (now − window, now].
    pub fn window(&self, now_ms: i64, window_ms: i64) -> (u64, u64) {
        let from = (now_ms - window_ms).div_euclid(MINUTE_MS) + 1;
        let to = now_ms.div_euclid(MINUTE_MS);
        self.minutes.range(from..=to).fold((0, 0), |(g, t), (_, (a, b))| (g + a, t + b))
    }

    pub fn forget_before(&mut self, at_ms: i64) {
        self.minutes = self.minutes.split_off(&at_ms.div_euclid(MINUTE_MS));
    }
}

/// Error ratio and burn rate of a window (None without observations).
pub fn burn(good: u64, total: u64, objective: f64) -> Option<(f64, f64)> {
    (total > 0).then(|| {
        let ratio = (total - good) as f64 / total as f64;
        (ratio, ratio / (1.0 - objective))
    })
}

/// The burn-rate alerts of `prometheus/rules.yaml` as (name, long window, short window,
/// threshold): an alert fires when both windows burn faster than the threshold (the
/// rules' `for:` durations are Prometheus's; the dashboard shows the condition itself).
pub const BURN_ALERTS: [(&str, &str, &str, f64); 3] =
    [("fast burn", "1h", "5m", 14.4), ("slow burn", "6h", "30m", 6.0), ("budget burn", "1d", "2h", 3.0)];

/// One objective's state at a moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SloStatus {
    pub slo: &'static str,
    pub objective: f64,
    /// Observations over the budget period.
    pub events: u64,
    /// Share of the period's error budget left (negative when overspent); None without data.
    pub budget_remaining: Option<f64>,
    /// Burn rate per window name (windows without observations are left out).
    pub burn_rates: BTreeMap<&'static str, f64>,
    /// The alert conditions that hold now (`BURN_ALERTS` names, and "budget exhausted").
    pub alerts: Vec<&'static str>,
}

/// Per-minute good / total counts of every objective.
#[derive(Debug, Default, Clone)]
pub struct Monitor {
    counts: BTreeMap<&'static str, (f64, Counts)>,
}

impl Monitor {
    /// Counts an event (events of no objective are ignored).
    pub fn observe(&mut self, e: &SloEvent) {
        if let Some((name, objective)) = objective(e.slo) {
            self.counts.entry(name).or_insert_with(|| (objective, Counts::default())).1.add(e.observed_at, e.good);
        }
    }

    pub fn forget_before(&mut self, at_ms: i64) {
        for (_, c) in self.counts.values_mut() {
            c.forget_before(at_ms);
        }
    }

    pub fn status(&self, now_ms: i64, period_ms: i64) -> Vec<SloStatus> {
        self.counts
            .iter()
            .map(|(slo, (objective, c))| {
                let burn_rates: BTreeMap<&'static str, f64> = WINDOWS
                    .iter()
                    .filter_map(|(name, ms)| {
                        let (g, t) = c.window(now_ms, *ms);
                        burn(g, t, *objective).map(|(_, rate)| (*name, rate))
                    })
                    .collect();
                let (g, t) = c.window(now_ms, period_ms);
                let budget_remaining = (t > 0).then(|| 1.0 - (t - g) as f64 / ((1.0 - objective) * t as f64));
                let mut alerts: Vec<&'static str> = BURN_ALERTS
                    .iter()
                    .filter(|(_, long, short, threshold)| {
                        [long, short].iter().all(|w| burn_rates.get(**w).is_some_and(|r| r > threshold))
                    })
                    .map(|(name, ..)| *name)
                    .collect();
                if budget_remaining.is_some_and(|r| r <= 0.0) {
                    alerts.push("budget exhausted");
                }
                SloStatus { slo, objective: *objective, events: t, budget_remaining, burn_rates, alerts }
            })
            .collect()
    }
}

/// Where the SLO events are and how long a period the state covers.
#[derive(Debug, Clone)]
pub struct Source {
    pub kafka: KafkaSettings,
    pub slo_topic: String,
    /// Error budget period (the horizon read from the topic as well).
    pub period_ms: i64,
    /// How often old minutes are let go and `tick` is called.
    pub publish_every: Duration,
    /// How far an event time may run ahead of its record's timestamp; later events are
    /// left out ([`guardian_kafka::event_time`]).
    pub max_skew_ms: i64,
}

/// Reads the SLO topic into `monitor` until `shutdown`: from the start of the period,
/// then as events arrive. `ready` is called once the topic was read up to its end at
/// start; every `publish_every`, old minutes are let go and `tick` is called.
pub async fn follow(
    config: &Source,
    monitor: &std::sync::Mutex<Monitor>,
    shutdown: Shutdown,
    ready: impl Fn(),
    mut tick: impl FnMut(&Monitor),
) -> Result<(), KafkaClientError> {
    let codec = Codec::embedded();
    let tail = Tail::open(&config.kafka, "slo-monitor", &[&config.slo_topic], Start::Beginning).await?;
    // Partitions with records at start: the monitor is ready once each is read to there.
    let mut ends: guardian_kafka::reader::Positions =
        guardian_kafka::reader::topic_watermarks(&config.kafka, "slo-monitor", &[&config.slo_topic])
            .await?
            .into_iter()
            .filter(|(_, (lo, hi))| lo < hi)
            .map(|(tp, (_, hi))| (tp, hi))
            .collect();
    let mut caught_up = false;
    let mut last_publish = std::time::Instant::now();
    let mut skipped = 0u64;
    let mut refused = 0u64;
    let lock = || monitor.lock().unwrap_or_else(|p| p.into_inner());
    while !shutdown.is_triggered() {
        if let Some(m) = tail.next(Duration::from_millis(200)).await? {
            if let Some(end) = ends.get(&(m.topic.clone(), m.partition))
                && m.offset + 1 >= *end
            {
                ends.remove(&(m.topic.clone(), m.partition));
            }
            match codec.decode::<SloEvent>(&m.payload) {
                Ok(e) => match guardian_schemas::validate::slo(&e)
                    .map_err(|why| guardian_kafka::ProcessError::poison("validation", why))
                    .and_then(|()| guardian_kafka::event_time::check(e.observed_at, m.timestamp, config.max_skew_ms))
                {
                    Ok(()) => lock().observe(&e),
                    Err(why) => {
                        refused += 1;
                        tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, %why, "slo event left out");
                    }
                },
                Err(_) => skipped += 1,
            }
        }
        if !caught_up && ends.is_empty() {
            caught_up = true;
            tracing::info!(
                skipped_undecodable = skipped,
                skipped_invalid_or_future = refused,
                "slo monitor caught up with the topic"
            );
            ready();
        }
        if last_publish.elapsed() >= config.publish_every {
            let mut m = lock();
            m.forget_before(guardian_runtime::now_ms() - config.period_ms);
            tick(&m);
            last_publish = std::time::Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_whole_minutes_and_burn_rates_scale_by_the_budget() {
        let mut c = Counts::default();
        let now = 100 * MINUTE_MS + 30_000;
        for m in 0..100 {
            for i in 0..10 {
                c.add(m * MINUTE_MS + 1_000, i != 0 || m < 90);
            }
        }
        // The last 5 minutes (96..=100): minutes 96..99 have data, one bad in ten each.
        assert_eq!(c.window(now, 5 * MINUTE_MS), (36, 40));
        let (ratio, rate) = burn(36, 40, 0.95).unwrap();
        assert!((ratio - 0.1).abs() < 1e-12 && (rate - 2.0).abs() < 1e-9);
        assert_eq!(c.window(now, 1_000 * MINUTE_MS), (990, 1000));
        c.forget_before(50 * MINUTE_MS);
        assert_eq!(c.window(now, 1_000 * MINUTE_MS).1, 500);
        assert_eq!(burn(0, 0, 0.9), None);
    }
}
