//! The nightly schedule, decided purely: a cron expression in a time zone plus a deterministic jitter → the next window, or a missed one to catch up.
//!
//! A *window* is a nominal cron time (unix ms). The job for a window runs at the window plus
//! its jitter (`splitmix64(window ^ seed) % jitter`, so every instance spreads its load the
//! same way every time it computes it, across restarts). The store keeps the last completed
//! window; from it and "now", [`next_action`] says whether to run now (a window passed while
//! hearth was down: only the latest one runs, once) or to wait.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Schedule errors. Not retryable: the configuration must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The cron expression did not parse.
    #[error("nightly schedule {expr:?} rejected: {reason}")]
    CronRejected {
        /// The expression.
        expr: String,
        /// Why (the parser's words).
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("nightly time zone {0:?} is not an IANA time zone name (e.g. Europe/Berlin, UTC)")]
    TimeZoneUnknown(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
    jitter: Duration,
    seed: u64,
}

/// What the nightly loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run the job for `window` now.
    Run {
        /// The window (nominal cron time, unix ms) the run completes.
        window: u64,
        /// The window's time had passed before now without a run (hearth was down or busy):
        /// this is the one catch-up run, however many windows were missed.
        missed: bool,
    },
    /// Wait until `at_ms`, then run the job for `window`.
    Wait {
        /// The window.
        window: u64,
        /// When its run is due: the window plus its jitter.
        at_ms: u64,
    },
    /// The expression matches no future time.
    Never,
}

fn utc(ms: u64) -> Option<DateTime<Utc>> {
    let ms = i64::try_from(ms).ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

fn ms_of<T: TimeZone>(t: &DateTime<T>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

/// A deterministic 64-bit mix (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Schedule {
    /// Parses `expr` (five fields, e.g. `0 3 * * *`) in time zone `tz` (IANA name) with up to
    /// `jitter` of spread; `seed` (e.g. derived from the instance id) picks each window's
    /// jitter deterministically.
    ///
    /// # Errors
    /// [`Error::CronRejected`], [`Error::TimeZoneUnknown`].
    pub fn parse(expr: &str, tz: &str, jitter: Duration, seed: u64) -> Result<Schedule, Error> {
        let cron: Cron =
            expr.parse()
                .map_err(|e: croner::errors::CronError| Error::CronRejected {
                    expr: expr.to_string(),
                    reason: e.to_string(),
                })?;
        let tz: Tz = tz
            .parse()
            .map_err(|_| Error::TimeZoneUnknown(tz.to_string()))?;
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
            tz,
            jitter,
            seed,
        })
    }

    /// The cron expression.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first window strictly after `after_ms`.
    pub fn next_window(&self, after_ms: u64) -> Option<u64> {
        let start = utc(after_ms)?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        ms_of(&next)
    }

    /// The latest window at or before `at_ms`.
    pub fn previous_window(&self, at_ms: u64) -> Option<u64> {
        let start = utc(at_ms)?.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&start, true).ok()?;
        ms_of(&prev)
    }

    /// The jitter of `window` (ms), in `[0, jitter)`.
    pub fn jitter_of(&self, window: u64) -> u64 {
        let span = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if span == 0 {
            return 0;
        }
        mix(window ^ self.seed) % span
    }
}

/// Decides what the loop does, given the last completed window (`None` on a fresh store)
/// and now.
///
/// # Guarantees
/// Pure and deterministic.
/// - Never repeats: the window returned is always after `last_completed`.
/// - Never skips: if a window after `last_completed` passed (its time plus its jitter is at
///   or before `now`) the answer is `Run` — of the *latest* passed window, so a week of
///   downtime is caught up by one run, not seven.
/// - A fresh store (no window ever completed) runs nothing at once: it waits for the next
///   window.
pub fn next_action(schedule: &Schedule, last_completed: Option<u64>, now_ms: u64) -> Next {
    let Some(last) = last_completed else {
        return match schedule.next_window(now_ms) {
            Some(window) => Next::Wait {
                window,
                at_ms: window.saturating_add(schedule.jitter_of(window)),
            },
            None => Next::Never,
        };
    };
    let Some(first_due) = schedule.next_window(last) else {
        return Next::Never;
    };
    let due_at = first_due.saturating_add(schedule.jitter_of(first_due));
    if due_at > now_ms {
        return Next::Wait {
            window: first_due,
            at_ms: due_at,
        };
    }
    // One or more windows passed: run the latest one that is due, once.
    let mut latest = schedule
        .previous_window(now_ms)
        .filter(|w| *w > last)
        .unwrap_or(first_due);
    if latest.saturating_add(schedule.jitter_of(latest)) > now_ms {
        // The latest window is still within its jitter: catch up the one before it (which
        // passed), and the latest runs on its own later.
        latest = schedule
            .previous_window(latest.saturating_sub(1))
            .filter(|w| *w > last)
            .unwrap_or(first_due);
    }
    Next::Run {
        window: latest,
        missed: now_ms > latest.saturating_add(schedule.jitter_of(latest)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    /// 2026-01-05 00:00:00 UTC (a Monday).
    const MONDAY: u64 = 1_767_571_200_000;

    fn berlin(jitter: Duration) -> Schedule {
        Schedule::parse("0 3 * * *", "Europe/Berlin", jitter, 42).unwrap()
    }

    #[test]
    fn the_next_window_follows_the_time_zone() {
        let s = berlin(Duration::ZERO);
        // 03:00 in Berlin in January is 02:00 UTC.
        assert_eq!(s.next_window(MONDAY), Some(MONDAY + 2 * HOUR));
        assert_eq!(
            s.next_window(MONDAY + 2 * HOUR),
            Some(MONDAY + DAY + 2 * HOUR)
        );
        assert_eq!(
            s.previous_window(MONDAY + 2 * HOUR),
            Some(MONDAY + 2 * HOUR)
        );
        // In July (summer time) 03:00 in Berlin is 01:00 UTC.
        let july = 1_783_036_800_000; // 2026-07-03 00:00 UTC
        assert_eq!(s.next_window(july), Some(july + HOUR));
    }

    #[test]
    fn bad_expressions_and_zones_are_rejected_with_a_clear_message() {
        let e = Schedule::parse("61 3 * * *", "UTC", Duration::ZERO, 0).unwrap_err();
        assert!(matches!(e, Error::CronRejected { .. }), "{e}");
        let e = Schedule::parse("0 3 * * *", "Mars/Olympus", Duration::ZERO, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nightly time zone \"Mars/Olympus\" is not an IANA time zone name (e.g. Europe/Berlin, UTC)"
        );
    }

    #[test]
    fn a_fresh_store_waits_for_the_next_window_with_its_jitter() {
        let s = berlin(Duration::from_secs(600));
        let w = MONDAY + 2 * HOUR;
        let j = s.jitter_of(w);
        assert!(j < 600_000);
        assert_eq!(
            next_action(&s, None, MONDAY),
            Next::Wait {
                window: w,
                at_ms: w + j
            }
        );
    }

    #[test]
    fn a_completed_window_is_not_repeated_and_the_next_one_is_awaited() {
        let s = berlin(Duration::ZERO);
        let w = MONDAY + 2 * HOUR;
        assert_eq!(
            next_action(&s, Some(w), w + HOUR),
            Next::Wait {
                window: w + DAY,
                at_ms: w + DAY
            }
        );
        assert_eq!(
            next_action(&s, Some(w - DAY), w),
            Next::Run {
                window: w,
                missed: false
            }
        );
    }

    #[test]
    fn a_week_of_downtime_is_caught_up_once_with_the_latest_window() {
        let s = berlin(Duration::ZERO);
        let w = MONDAY + 2 * HOUR;
        let now = w + 7 * DAY + 5 * HOUR;
        assert_eq!(
            next_action(&s, Some(w), now),
            Next::Run {
                window: w + 7 * DAY,
                missed: true
            }
        );
        // After that run, the next is awaited.
        assert_eq!(
            next_action(&s, Some(w + 7 * DAY), now),
            Next::Wait {
                window: w + 8 * DAY,
                at_ms: w + 8 * DAY
            }
        );
    }

    #[test]
    fn jitter_is_deterministic_per_window_and_seed() {
        let a = berlin(Duration::from_secs(600));
        let b = berlin(Duration::from_secs(600));
        let other =
            Schedule::parse("0 3 * * *", "Europe/Berlin", Duration::from_secs(600), 7).unwrap();
        let w = MONDAY + 2 * HOUR;
        assert_eq!(a.jitter_of(w), b.jitter_of(w));
        let spread: std::collections::BTreeSet<u64> =
            (0..20).map(|d| a.jitter_of(w + d * DAY)).collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert!((0..20).any(|d| a.jitter_of(w + d * DAY) != other.jitter_of(w + d * DAY)));
        assert_eq!(berlin(Duration::ZERO).jitter_of(w), 0);
    }

    proptest! {
        /// Simulates a loop that looks at arbitrary moments (restarts, late wake-ups) and
        /// runs whatever `next_action` says: it never runs a window twice, never runs one
        /// before its time, and never leaves a window passed unrun at the moment it looks
        /// without running the latest passed one.
        #[test]
        fn never_repeats_never_runs_early_and_never_skips_the_latest_passed_window(
            jitter_s in 0u64..3600,
            seed in any::<u64>(),
            steps in proptest::collection::vec(0u64..(3 * DAY), 1..30),
        ) {
            let s = Schedule::parse("0 3 * * *", "Europe/Berlin", Duration::from_secs(jitter_s), seed).unwrap();
            let mut now = MONDAY;
            let mut last: Option<u64> = Some(MONDAY - DAY);
            let mut ran: Vec<u64> = Vec::new();
            for step in steps {
                now += step;
                loop {
                    match next_action(&s, last, now) {
                        Next::Run { window, .. } => {
                            prop_assert!(window + s.jitter_of(window) <= now, "ran early");
                            prop_assert!(last.is_none_or(|l| window > l), "repeated");
                            prop_assert!(!ran.contains(&window));
                            ran.push(window);
                            last = Some(window);
                        }
                        Next::Wait { window, at_ms } => {
                            prop_assert!(at_ms > now);
                            prop_assert_eq!(at_ms, window + s.jitter_of(window));
                            break;
                        }
                        Next::Never => prop_assert!(false, "a daily schedule always has a next window"),
                    }
                }
                // Nothing that passed is left behind: the latest passed window ran.
                if let Some(prev) = s.previous_window(now) {
                    if prev + s.jitter_of(prev) <= now {
                        prop_assert!(last.is_some_and(|l| l >= prev));
                    }
                }
            }
        }
    }
}
