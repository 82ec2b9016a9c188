//! Retry of transient failures with capped, jittered exponential backoff.
//!
//! Each delay is the current interval with ±50 % jitter; the interval starts at
//! `initial` and doubles up to `max_interval`; the policy gives up once `max_elapsed`
//! would pass. Callers say what is retryable; everything else fails at once.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::metrics as m;

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    /// Give up after this long; `None` retries until the operation succeeds or fails
    /// permanently (consumers, which must not skip a record).
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            max_elapsed: Some(Duration::from_secs(120)),
        }
    }
}

impl RetryPolicy {
    /// The delays this policy would wait, in order (jittered, capped).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        let start = std::time::Instant::now();
        let (max_interval, max_elapsed) = (self.max_interval, self.max_elapsed);
        let mut interval = self.initial.min(max_interval);
        std::iter::from_fn(move || {
            let delay = interval.mul_f64(rand::rng().random_range(0.5..=1.5));
            if max_elapsed.is_some_and(|max| start.elapsed() + delay > max) {
                return None;
            }
            interval = interval.saturating_mul(2).min(max_interval);
            Some(delay)
        })
    }
}

/// Runs `op` until it succeeds, fails with an error `is_retryable` rejects, or the policy
/// gives up (the last error is returned).
pub async fn retry<T, E, F, Fut>(
    operation: &'static str,
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delays = policy.delays();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_retryable(&e) => match delays.next() {
                Some(delay) => {
                    metrics::counter!(m::RETRIES, m::OPERATION => operation).increment(1);
                    tracing::warn!(operation, error = %e, delay_ms = delay.as_millis() as u64, "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(4),
            max_elapsed: Some(Duration::from_millis(500)),
        }
    }

    #[test]
    fn delays_are_capped_and_jittered() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            max_elapsed: None,
        };
        let d: Vec<_> = p.delays().take(20).collect();
        assert_eq!(d.len(), 20);
        assert!(d.iter().all(|d| *d <= Duration::from_millis(1500)), "{d:?}");
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(150), "{d:?}");
        assert!(d[1] >= Duration::from_millis(100) && d[1] <= Duration::from_millis(300), "doubles: {d:?}");
        assert!(d[10..].iter().all(|d| *d >= Duration::from_millis(500)), "capped, not shrinking: {d:?}");
        let distinct: std::collections::BTreeSet<_> = d[10..].iter().collect();
        assert!(distinct.len() > 1, "jittered: {d:?}");
        let bounded = RetryPolicy { max_elapsed: Some(Duration::ZERO), ..p };
        assert_eq!(bounded.delays().next(), None, "nothing left of a zero budget");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, String> = retry(
            "t",
            &fast(),
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 { Err("busy".to_string()) } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), String> = retry(
            "t",
            &fast(),
            |_| false,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("bad".to_string())
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_policy_gives_up_with_the_last_error() {
        let r: Result<(), String> = retry("t", &fast(), |_| true, || async { Err("still busy".to_string()) }).await;
        assert_eq!(r, Err("still busy".to_string()));
    }
}
