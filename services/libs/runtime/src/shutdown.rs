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
    pub fn on_signals() -> Self {
        let s = Shutdown::new();
        let trigger = s.clone();
        let signals = Signals::install();
        tokio::spawn(async move {
            signals.wait().await;
            tracing::info!("shutdown requested: stopping intake, draining, committing");
            trigger.trigger();
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

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
