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

/// A service process's ops endpoint, started: where it listens and the readiness flag
/// the service sets once it has what it needs. Hold it while the service runs: dropping
/// the last copy takes the endpoint out of Prometheus's file discovery
/// ([`crate::scrape`]).
#[derive(Debug, Clone)]
pub struct Ops {
    pub readiness: Readiness,
    pub bound: SocketAddr,
    pub registration: Option<Arc<crate::scrape::Registration>>,
}

/// The plumbing every service starts with: `/metrics`, `/healthz` and `/readyz` (plus
/// `extra` routes) on `listen` until `shutdown`, announced as `service` to a local
/// Prometheus when [`crate::scrape::SD_DIR_ENV`] names its discovery folder.
pub async fn serve_ops(
    service: &str,
    listen: SocketAddr,
    extra: Option<Router>,
    shutdown: &Shutdown,
) -> Result<Ops, crate::Error> {
    let readiness = Readiness::default();
    let mut router = ops_router(install_metrics(), readiness.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let bound =
        serve(listen, router, shutdown.clone()).await.map_err(|error| crate::Error::Listen { addr: listen, error })?;
    let registration = crate::scrape::register_from_env(service, bound).map(Arc::new);
    if let Some(r) = registration.clone() {
        let stopping = shutdown.wait();
        tokio::spawn(async move {
            stopping.await;
            r.remove();
        });
    }
    Ok(Ops { readiness, bound, registration })
}

/// A plain HTTP/1.1 GET on loopback (probes, benchmarks, supervisors): the status and the
/// body, or `None` when the server cannot be reached or answers nothing readable within
/// 2 s.
pub fn get_blocking(addr: &str, path: &str) -> Option<(u16, String)> {
    get_blocking_as(addr, path, None)
}

/// [`get_blocking`] with a bearer token.
pub fn get_blocking_as(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, std::time::Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}
