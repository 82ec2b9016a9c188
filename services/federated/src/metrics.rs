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

/// Records a round's end.
pub fn round_ended(session: &str, outcome: &crate::coordinator::RoundOutcome) {
    use crate::coordinator::RoundOutcome;
    let session = session.to_string();
    match outcome {
        RoundOutcome::Finished { version, survivors, evicted, accuracy, .. } => {
            metrics::counter!(ROUNDS, SESSION => session.clone(), OUTCOME => "finished").increment(1);
            metrics::gauge!(MODEL_VERSION, SESSION => session.clone()).set(*version as f64);
            metrics::gauge!(SURVIVORS, SESSION => session.clone()).set(survivors.len() as f64);
            metrics::counter!(EVICTIONS, SESSION => session.clone()).increment(evicted.len() as u64);
            if let Some(a) = accuracy {
                metrics::gauge!(ACCURACY, SESSION => session).set(*a);
            }
        }
        RoundOutcome::Failed { .. } => {
            metrics::counter!(ROUNDS, SESSION => session, OUTCOME => "failed").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::RoundOutcome;

    #[test]
    fn a_round_s_end_is_on_the_aggregator_s_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            round_ended(
                "s1",
                &RoundOutcome::Finished {
                    version: 3,
                    survivors: vec!["h001".into(), "h002".into()],
                    dropped: vec![],
                    evicted: vec!["h003: signed two inputs".into()],
                    accuracy: Some(0.9),
                    sha256: String::new(),
                },
            );
            round_ended("s1", &RoundOutcome::Failed { reason: "too few".into(), named: vec![] });
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
