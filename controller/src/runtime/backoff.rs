//! Per-key exponential backoff with jitter, reset by a successful reconcile.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// Exponential backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The delay after the first failure.
    pub base: Duration,
    /// The largest delay (before jitter).
    pub max: Duration,
    /// Each delay is stretched by a random factor in `[1, 1 + jitter)`; with the doubling
    /// factor of 2 a jitter below 1 keeps delays strictly growing until `max`.
    pub jitter: f64,
}

impl Policy {
    /// The delay after `failures` consecutive failures (≥ 1), before jitter:
    /// `base * 2^(failures-1)`, capped at `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// [`Policy::delay`] stretched by jitter drawn from `rng`.
    pub fn jittered(&self, failures: u32, rng: &mut StdRng) -> Duration {
        stretch(self.delay(failures), self.jitter, rng)
    }
}

/// `d` stretched by a random factor in `[1, 1 + jitter)` (no stretch for `jitter <= 0`).
pub(crate) fn stretch(d: Duration, jitter: f64, rng: &mut StdRng) -> Duration {
    if jitter <= 0.0 || !jitter.is_finite() {
        return d;
    }
    d.mul_f64(1.0 + rng.random_range(0.0..jitter))
}

/// Consecutive failures per key.
#[derive(Debug)]
pub struct Backoff<K> {
    policy: Policy,
    failures: HashMap<K, u32>,
}

impl<K: Eq + Hash> Backoff<K> {
    /// No key has failed yet.
    pub fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            failures: HashMap::new(),
        }
    }

    /// Records a failure of `key`; returns the delay before its next attempt.
    pub fn failed(&mut self, key: K, rng: &mut StdRng) -> Duration {
        let n = self.failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        self.policy.jittered(*n, rng)
    }

    /// Records a success of `key`: its next failure starts again at `base`.
    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> Policy {
        Policy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.5,
        }
    }

    #[test]
    fn delays_should_double_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jittered_delays_should_stay_within_their_band_and_grow() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(policy());
        let mut last = Duration::ZERO;
        for n in 1..=5u32 {
            let d = b.failed("k", &mut rng);
            let plain = policy().delay(n);
            assert!(d >= plain && d < plain.mul_f64(1.5), "{d:?} vs {plain:?}");
            assert!(d > last);
            last = d;
        }
        assert_eq!(b.failures(&"k"), 5);
    }

    #[test]
    fn a_success_should_reset_the_backoff_of_that_key_only() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(policy());
        for _ in 0..4 {
            b.failed("a", &mut rng);
            b.failed("b", &mut rng);
        }
        b.succeeded(&"a");
        assert_eq!(b.failures(&"a"), 0);
        assert_eq!(b.failures(&"b"), 4);
        assert!(b.failed("a", &mut rng) < Duration::from_millis(1500));
    }
}
