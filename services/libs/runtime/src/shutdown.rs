//! Graceful shutdown: one [`Shutdown`] per process, cloned into every task. Triggered by
//! SIGTERM or SIGINT (or by tests); tasks stop intake, drain, commit and return.

use std::future::Future;

use tokio::sync::watch;

/// A shutdown signal that many tasks can wait on.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown { tx: std::sync::Arc::new(tx), rx }
    }

    /// A shutdown that also fires on SIGTERM or SIGINT. The handlers are installed before
    /// this returns, so a signal that arrives right after start-up is not lost (nor does
    /// it kill the process uncleanly). Must be called inside the runtime.
    ///
    /// Draining has a deadline: `GUARDIAN_DRAIN_SECS` (default 30) after the first signal
    /// the process exits with status 124 whatever is still running, and a second signal
    /// ends it at once. Nothing uncommitted is lost either way (offsets and effects commit
    /// together); an orchestrator's grace period should exceed the deadline.
    pub fn on_signals() -> Self {
        let s = Shutdown::new();
        let trigger = s.clone();
        let signals = Signals::install();
        let deadline = drain_deadline(std::env::var("GUARDIAN_DRAIN_SECS").ok().as_deref());
        tokio::spawn(async move {
            let signals = signals.wait().await;
            tracing::info!(
                deadline_secs = deadline.as_secs(),
                "shutdown requested: stopping intake, draining, committing"
            );
            trigger.trigger();
            tokio::select! {
                _ = tokio::time::sleep(deadline) => {
                    tracing::error!(deadline_secs = deadline.as_secs(), "drain deadline passed: exiting before the drain finished");
                }
                _ = signals.wait() => tracing::warn!("second signal: exiting before the drain finished"),
            }
            std::process::exit(124);
        });
        s
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is triggered.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

/// SIGTERM and SIGINT listeners, registered on creation.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT; Ctrl-C only");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves at the next signal and hands the listeners back for the one after.
    async fn wait(mut self) -> Self {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return self;
        }
        let _ = tokio::signal::ctrl_c().await;
        self
    }
}

/// The drain deadline from `GUARDIAN_DRAIN_SECS` (whole seconds, at least 1; default 30).
fn drain_deadline(value: Option<&str>) -> std::time::Duration {
    let secs = match value.map(str::trim) {
        None | Some("") => 30,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n.max(1),
            Err(_) => {
                tracing::warn!(value = v, "GUARDIAN_DRAIN_SECS is not a whole number of seconds; using 30");
                30
            }
        },
    };
    std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_deadline_reads_whole_seconds_with_a_default() {
        use std::time::Duration;
        assert_eq!(drain_deadline(None), Duration::from_secs(30));
        assert_eq!(drain_deadline(Some("45")), Duration::from_secs(45));
        assert_eq!(drain_deadline(Some("0")), Duration::from_secs(1));
        assert_eq!(drain_deadline(Some("soon")), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let s = Shutdown::new();
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(s.clone().wait())).collect();
        assert!(!s.is_triggered());
        s.trigger();
        for w in waiters {
            w.await.unwrap();
        }
        assert!(s.is_triggered());
        // Waiting after the trigger returns at once.
        s.wait().await;
    }
}
