//! Retrying swarm calls with exponential backoff (backon) until a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;

/// First pause between attempts.
const MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The backoff every retry and poll of this module uses: 50 ms doubling to 2 s, with jitter,
/// unbounded in count (the deadline bounds it).
pub(crate) fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Pauses of a poll loop: the same schedule as [`backoff`], bounded by `max`.
pub(crate) fn poll_delays(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY.min(max))
        .with_max_delay(max)
        .with_factor(1.5)
        .without_max_times()
        .build()
}

/// Runs `op` until it succeeds, fails with an error `retryable` rejects, or the next pause would
/// end after `deadline` (then the last error is returned). `retried` is set when at least one
/// attempt failed and was retried, so a caller can tell "already exists" after a timed-out
/// create (the first attempt took effect) from a real name collision.
pub(crate) async fn until<T, E, F, Fut>(
    deadline: Instant,
    retryable: fn(&E) -> bool,
    retried: &AtomicBool,
    op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    op.retry(backoff())
        .sleep(tokio::time::sleep)
        .when(retryable)
        .notify(|_, _| retried.store(true, Ordering::Relaxed))
        .adjust(move |_, pause| pause.filter(|p| Instant::now() + *p <= deadline))
        .await
}

/// [`until`] for swarm calls, retrying what [`crate::swarm::Error::is_retryable`] allows.
pub(crate) async fn swarm_until<T, F, Fut>(deadline: Instant, op: F) -> crate::swarm::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::swarm::Result<T>>,
{
    let retried = AtomicBool::new(false);
    until(deadline, crate::swarm::Error::is_retryable, &retried, op).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let retried = AtomicBool::new(false);
        let out: Result<(), u32> = until(
            start + Duration::from_secs(5),
            |_| true,
            &retried,
            || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move { Err(n) }
            },
        )
        .await;
        let last = out.unwrap_err();
        assert!(last >= 4, "only {last} retries");
        assert!(Instant::now() - start <= Duration::from_secs(5));
        assert!(retried.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let retried = AtomicBool::new(false);
        let out: Result<(), &str> = until(
            Instant::now() + Duration::from_secs(5),
            |_| false,
            &retried,
            || {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err("no") }
            },
        )
        .await;
        assert_eq!(out, Err("no"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(!retried.load(Ordering::Relaxed));
    }
}
