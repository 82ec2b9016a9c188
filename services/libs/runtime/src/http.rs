//! The operations endpoint of every service: `/metrics` (Prometheus text format),
//! `/healthz` (the process runs) and `/readyz` (it has what it needs to do its work).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Shutdown;

/// Set by the service once it is ready (topics verified, connections made).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Installs the global Prometheus recorder (once per process; later calls reuse it), and
/// a thread that folds histogram samples into their buckets every 5 seconds, so memory
/// stays bounded between scrapes (the recorder keeps raw samples until upkeep runs).
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started: histograms grow until scraped");
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    readiness: Readiness,
}

/// The router, so services can add their own routes (the dashboard does).
pub fn ops_router(metrics: PrometheusHandle, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.readiness.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(AppState { metrics, readiness })
}

/// Binds `addr` and serves `router` until shutdown. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(addr: SocketAddr, router: Router, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown.wait()).await {
            tracing::error!(error = %e, "ops endpoint failed");
        }
    });
    Ok(bound)
}
