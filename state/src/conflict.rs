//! Read-modify-write under optimistic concurrency: the one bounded retry for store conflicts.
//!
//! Every write names the resource version it read; a writer that lost the race gets
//! [`Error::ResourceVersionMismatched`](crate::Error) and must read again. Callers wrap their
//! read-modify-write in [`retry_conflicts`] instead of looping on their own, so no loop in
//! hearth retries a conflict forever.

use std::future::Future;

/// How many attempts one read-modify-write of a single object gets before its last conflict
/// is returned. Each conflict means another writer finished in between; a hundred in a row on
/// one object is a livelock, not contention. (A slot pool, which every waiting CI job writes,
/// passes its own, larger bound.)
pub const CONFLICT_ATTEMPTS: u32 = 100;

/// Runs `attempt` (read, modify, write) again while it fails with an error `is_conflict`
/// accepts, at most `max_attempts` times in all, yielding to the runtime in between so the
/// winning writer can finish.
///
/// # Errors
/// The first error that is not a conflict, or the last conflict after `max_attempts` attempts.
pub async fn retry_conflicts<T, E, F, Fut>(
    max_attempts: u32,
    is_conflict: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) && attempts < max_attempts => {
                attempts += 1;
                tokio::task::yield_now().await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    enum E {
        Conflict,
        Other,
    }

    #[tokio::test]
    async fn a_conflict_is_retried_until_the_write_lands() {
        let calls = Cell::new(0);
        let out = retry_conflicts(
            CONFLICT_ATTEMPTS,
            |e| *e == E::Conflict,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err(E::Conflict)
                } else {
                    Ok(calls.get())
                }
            },
        )
        .await;
        assert_eq!(out, Ok(3));
    }

    #[tokio::test]
    async fn other_errors_are_returned_at_once() {
        let calls = Cell::new(0);
        let out: Result<(), E> = retry_conflicts(
            CONFLICT_ATTEMPTS,
            |e| *e == E::Conflict,
            || async {
                calls.set(calls.get() + 1);
                Err(E::Other)
            },
        )
        .await;
        assert_eq!((out, calls.get()), (Err(E::Other), 1));
    }

    #[tokio::test]
    async fn a_conflict_that_never_clears_is_returned_after_the_last_attempt() {
        let calls = Cell::new(0);
        let out: Result<(), E> = retry_conflicts(
            CONFLICT_ATTEMPTS,
            |e| *e == E::Conflict,
            || async {
                calls.set(calls.get() + 1);
                Err(E::Conflict)
            },
        )
        .await;
        assert_eq!((out, calls.get()), (Err(E::Conflict), CONFLICT_ATTEMPTS));
    }
}
