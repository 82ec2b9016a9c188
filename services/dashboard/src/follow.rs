//! The dashboard's views of other services' topics, followed from the beginning (each
//! view is idempotent, so starting again after an error re-reads and converges): the
//! federated sessions (`fl.models`, `fl.rounds`), the privacy budgets (`privacy.status`,
//! compacted), and the SLO state (`slo.events`, from the start of the budget period).
//! While the broker is away the page keeps showing what was read so far.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use guardian_burnrate::Monitor;
use guardian_kafka::KafkaSettings;
use guardian_kafka::reader::{Start, Tail};
use guardian_runtime::Shutdown;
use guardian_schemas::Codec;
use guardian_schemas::records::{BudgetStatus, ModelVersion, RoundControl};

use crate::view::{BudgetsView, FlView};

const RETRY: Duration = Duration::from_secs(5);

/// Follows `topics` from the beginning into `apply` until `shutdown`, starting again
/// after an error.
async fn follow(
    settings: &KafkaSettings,
    name: &str,
    topics: &[&str],
    shutdown: &Shutdown,
    mut apply: impl FnMut(&str, &[u8]),
) {
    while !shutdown.is_triggered() {
        let tail = match Tail::open(settings, name, topics, Start::Beginning).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, topics = ?topics, "following topics failed; trying again in 5 s");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while !shutdown.is_triggered() {
            match tail.next(Duration::from_millis(500)).await {
                Ok(Some(m)) if m.has_value => apply(&m.topic, &m.payload),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, topics = ?topics, "reading topics failed; starting again in 5 s");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

/// Federated sessions from the model and round-control topics.
pub async fn federated(
    settings: KafkaSettings,
    models: String,
    rounds: String,
    view: Arc<Mutex<FlView>>,
    shutdown: Shutdown,
) {
    let codec = Codec::embedded();
    follow(&settings, "dashboard-fl", &[&models, &rounds], &shutdown, |topic, payload| {
        let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
        if topic == models {
            if let Ok(m) = codec.decode::<ModelVersion>(payload) {
                v.model(&m);
            }
        } else if let Ok(c) = codec.decode::<RoundControl>(payload) {
            v.control(&c);
        }
    })
    .await
}

/// The privacy budgets from the accountant's status topic.
pub async fn budgets(settings: KafkaSettings, status: String, view: Arc<Mutex<BudgetsView>>, shutdown: Shutdown) {
    let codec = Codec::embedded();
    follow(&settings, "dashboard-budgets", &[&status], &shutdown, |_, payload| {
        if let Ok(s) = codec.decode::<BudgetStatus>(payload) {
            view.lock().unwrap_or_else(|p| p.into_inner()).status(&s);
        }
    })
    .await
}

/// The SLO state, read again from the start of the period after an error.
pub async fn slo(source: guardian_burnrate::Source, monitor: Arc<Mutex<Monitor>>, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        *monitor.lock().unwrap_or_else(|p| p.into_inner()) = Monitor::default();
        if let Err(e) = guardian_burnrate::follow(&source, &monitor, shutdown.clone(), || {}, |_| {}).await {
            tracing::warn!(error = %e, "following the SLO topic failed; trying again in 5 s");
            tokio::time::sleep(RETRY).await;
        }
    }
}
