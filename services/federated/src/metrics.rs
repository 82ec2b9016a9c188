//! The aggregator's metrics, declared once (Prometheus names, base units; bounded labels:
//! the session, an outcome).

/// Rounds ended, by `outcome` (`finished` or `failed`).
pub const ROUNDS: &str = "guardian_fl_rounds_total";
/// The newest model version a session published.
pub const MODEL_VERSION: &str = "guardian_fl_model_version";
/// The held-out accuracy of the newest model version (when the model is evaluated).
pub const ACCURACY: &str = "guardian_fl_model_accuracy";
/// Hospitals whose input the last finished round summed.
pub const SURVIVORS: &str = "guardian_fl_round_survivors";
/// Hospitals put out of rounds for their records.
pub const EVICTIONS: &str = "guardian_fl_evictions_total";
pub const SESSION: &str = "session";
pub const OUTCOME: &str = "outcome";

/// Records a finished round: its model version, how many hospitals it summed and put
/// out, the new model's held-out accuracy (when evaluated).
pub fn round_finished(session: &str, version: i64, survivors: usize, evicted: usize, accuracy: Option<f64>) {
    let session = session.to_string();
    metrics::counter!(ROUNDS, SESSION => session.clone(), OUTCOME => "finished").increment(1);
    metrics::gauge!(MODEL_VERSION, SESSION => session.clone()).set(version as f64);
    metrics::gauge!(SURVIVORS, SESSION => session.clone()).set(survivors as f64);
    metrics::counter!(EVICTIONS, SESSION => session.clone()).increment(evicted as u64);
    if let Some(a) = accuracy {
        metrics::gauge!(ACCURACY, SESSION => session).set(a);
    }
}

/// Records a failed round.
pub fn round_failed(session: &str) {
    metrics::counter!(ROUNDS, SESSION => session.to_string(), OUTCOME => "failed").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_s_end_is_on_the_aggregator_s_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            round_finished("s1", 3, 2, 1, Some(0.9));
            round_failed("s1");
        });
        let text = handle.render();
        for line in [
            "guardian_fl_rounds_total{session=\"s1\",outcome=\"finished\"} 1",
            "guardian_fl_rounds_total{session=\"s1\",outcome=\"failed\"} 1",
            "guardian_fl_model_version{session=\"s1\"} 3",
            "guardian_fl_model_accuracy{session=\"s1\"} 0.9",
            "guardian_fl_round_survivors{session=\"s1\"} 2",
            "guardian_fl_evictions_total{session=\"s1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
