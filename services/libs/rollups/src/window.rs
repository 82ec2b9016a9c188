//! Tumbling windows, the per-window KPI accumulator and its mergeable latency sketch.
//! Pure: the store applies these inside its transactions.

use guardian_schemas::records::{Encounter, KpiRollup, WindowSize};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

pub const SIZES: [WindowSize; 3] = [WindowSize::Minute, WindowSize::Hour, WindowSize::Day];

pub fn millis(size: WindowSize) -> i64 {
    match size {
        WindowSize::Minute => 60_000,
        WindowSize::Hour => 3_600_000,
        WindowSize::Day => 86_400_000,
    }
}

pub fn name(size: WindowSize) -> &'static str {
    match size {
        WindowSize::Minute => "MINUTE",
        WindowSize::Hour => "HOUR",
        WindowSize::Day => "DAY",
    }
}

pub fn parse(name: &str) -> Option<WindowSize> {
    SIZES.into_iter().find(|s| self::name(*s) == name)
}

/// Start of the window of `size` holding `at` (UTC, milliseconds).
/// The start of the window of `size` holding `at_ms`. Total: an instant within one window
/// of `i64::MIN` (only an absurd record carries one) saturates instead of overflowing.
pub fn start(at_ms: i64, size: WindowSize) -> i64 {
    at_ms.div_euclid(millis(size)).saturating_mul(millis(size))
}

/// Generation times are recorded from 1 ms to 1 hour at 3 significant digits (0.1 %);
/// longer ones are counted at the top.
const SKETCH_MAX_MS: u64 = 3_600_000;

pub fn new_sketch() -> Histogram<u64> {
    Histogram::new_with_bounds(1, SKETCH_MAX_MS, 3).expect("valid sketch bounds")
}

pub fn encode_sketch(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out).expect("serializing a histogram into memory");
    out
}

pub fn decode_sketch(bytes: &[u8]) -> Option<Histogram<u64>> {
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// One window's KPIs for one hospital.
#[derive(Debug, Clone)]
pub struct Acc {
    pub encounters: i64,
    pub soap_expected: i64,
    pub soap_completed: i64,
    pub ratings: i64,
    pub rating_sum: i64,
    pub slo_good: i64,
    pub slo_total: i64,
    pub late_corrections: i64,
    pub generation: Histogram<u64>,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            encounters: 0,
            soap_expected: 0,
            soap_completed: 0,
            ratings: 0,
            rating_sum: 0,
            slo_good: 0,
            slo_total: 0,
            late_corrections: 0,
            generation: new_sketch(),
        }
    }
}

impl Acc {
    pub fn add_encounter(&mut self, e: &Encounter) {
        self.encounters += 1;
        self.soap_expected += i64::from(e.soap_sections_expected);
        self.soap_completed += i64::from(e.soap_sections_completed);
        if let Some(r) = e.physician_rating {
            self.ratings += 1;
            self.rating_sum += i64::from(r);
        }
        self.generation.saturating_record((e.generation_ms.max(1) as u64).min(SKETCH_MAX_MS));
    }

    pub fn add_slo(&mut self, good: bool) {
        self.slo_total += 1;
        self.slo_good += i64::from(good);
    }

    pub fn merge(&mut self, o: &Acc) {
        self.encounters += o.encounters;
        self.soap_expected += o.soap_expected;
        self.soap_completed += o.soap_completed;
        self.ratings += o.ratings;
        self.rating_sum += o.rating_sum;
        self.slo_good += o.slo_good;
        self.slo_total += o.slo_total;
        self.late_corrections += o.late_corrections;
        self.generation.add(&o.generation).expect("sketches share their bounds");
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        (!self.generation.is_empty()).then(|| self.generation.value_at_quantile(q) as f64)
    }

    pub fn record(&self, hospital: &str, size: WindowSize, start: i64) -> KpiRollup {
        KpiRollup {
            hospital_id: hospital.to_string(),
            window: size,
            window_start: start,
            encounters: self.encounters,
            soap_sections_expected: self.soap_expected,
            soap_sections_completed: self.soap_completed,
            generation_ms_p50: self.quantile(0.50),
            generation_ms_p95: self.quantile(0.95),
            generation_ms_p99: self.quantile(0.99),
            ratings: self.ratings,
            rating_sum: self.rating_sum,
            slo_good: self.slo_good,
            slo_total: self.slo_total,
            late_corrections: self.late_corrections,
        }
    }
}

/// Whether a record at `at_ms` arrives after its window of `size` closed: the window
/// closes when the hospital's newest event time passes its end plus `lateness_ms`. Late
/// records are still merged (the correction path), and counted.
pub fn is_late(at_ms: i64, size: WindowSize, newest_ms: Option<i64>, lateness_ms: i64) -> bool {
    // Saturating: a window near the ends of time closes at the end of time, never wraps.
    let closes = start(at_ms, size).saturating_add(millis(size)).saturating_add(lateness_ms);
    newest_ms.is_some_and(|n| n > closes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_lateness() {
        assert_eq!(start(61_000, WindowSize::Minute), 60_000);
        assert_eq!(start(-1, WindowSize::Minute), -60_000);
        assert_eq!(start(3_599_999, WindowSize::Hour), 0);
        // Window [60 s, 120 s) closes when the newest event passes 120 s + 30 s.
        assert!(!is_late(61_000, WindowSize::Minute, Some(150_000), 30_000));
        assert!(is_late(61_000, WindowSize::Minute, Some(150_001), 30_000));
        assert!(!is_late(61_000, WindowSize::Minute, None, 0));
        assert_eq!(parse("HOUR"), Some(WindowSize::Hour));
    }

    /// Event times come from records: the most absurd ones neither panic nor wrap.
    #[test]
    fn absurd_times_saturate_instead_of_overflowing() {
        for size in SIZES {
            for at in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let s = start(at, size);
                assert!(s <= at || s == i64::MIN, "{at} {s}");
                for newest in [None, Some(i64::MIN), Some(0), Some(i64::MAX)] {
                    let _ = is_late(at, size, newest, i64::MAX);
                    let _ = is_late(at, size, newest, 300_000);
                }
            }
            // A far-future record is never late; nothing is late behind one at the end of time.
            assert!(!is_late(i64::MAX, size, Some(i64::MAX), 0));
            assert!(is_late(0, size, Some(i64::MAX), 300_000));
        }
    }

    #[test]
    fn sketches_merge_and_round_trip() {
        let mut a = Acc::default();
        let mut b = Acc::default();
        for v in 1..=1000 {
            a.generation.record(v).unwrap();
            b.generation.record(v + 1000).unwrap();
        }
        let back = decode_sketch(&encode_sketch(&a.generation)).unwrap();
        assert_eq!(back, a.generation);
        a.merge(&b);
        let p50 = a.generation.value_at_quantile(0.5) as f64;
        assert!((p50 - 1000.0).abs() / 1000.0 < 0.002, "p50 {p50}");
    }
}
