//! The scheduler: one pending request per key, released at its time; the earliest request wins.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use tokio::time::Instant;

/// Pending requests, at most one per key.
///
/// # Guarantees
/// - Scheduling a key that is already pending keeps the earlier of the two times (kube-runtime's
///   "earliest wins"), so a burst of triggers for one key becomes one request.
/// - [`Scheduler::pop_due`] releases keys in time order (ties in scheduling order).
///
/// # Caveats
/// Pure data: it never sleeps. The runner sleeps until [`Scheduler::next_due`].
#[derive(Debug)]
pub struct Scheduler<K> {
    /// The due time and request number of each pending key.
    pending: HashMap<K, (Instant, u64)>,
    /// Min-heap of (due, request number); numbers missing from `keys` are stale (lazy
    /// deletion keeps `schedule` O(log n)).
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The key of each live request number.
    keys: HashMap<u64, K>,
    seq: u64,
}

impl<K: Clone + Eq + Hash> Default for Scheduler<K> {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl<K: Clone + Eq + Hash> Scheduler<K> {
    /// An empty scheduler.
    pub fn new() -> Self {
        Scheduler {
            pending: HashMap::new(),
            heap: BinaryHeap::new(),
            keys: HashMap::new(),
            seq: 0,
        }
    }

    /// Requests `key` at `at`; if it is already pending at an earlier time, nothing changes.
    /// Returns whether the request changed the key's due time.
    pub fn schedule(&mut self, key: K, at: Instant) -> bool {
        if let Some((current, old)) = self.pending.get(&key) {
            if *current <= at {
                return false;
            }
            self.keys.remove(old);
        }
        self.seq += 1;
        self.pending.insert(key.clone(), (at, self.seq));
        self.keys.insert(self.seq, key);
        self.heap.push(Reverse((at, self.seq)));
        true
    }

    /// The earliest due time, if any key is pending.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest key due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.drop_stale();
        let due = matches!(self.heap.peek(), Some(Reverse((at, _))) if *at <= now);
        if !due {
            return None;
        }
        let Reverse((_, seq)) = self.heap.pop()?;
        let key = self.keys.remove(&seq)?;
        self.pending.remove(&key);
        Some(key)
    }

    /// Whether `key` is pending.
    pub fn contains(&self, key: &K) -> bool {
        self.pending.contains_key(key)
    }

    /// How many keys are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no key is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq))) = self.heap.peek() {
            if self.keys.contains_key(seq) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn scheduler_should_keep_one_request_per_key_and_the_earliest_wins() {
        let now = Instant::now();
        let mut s = Scheduler::new();
        assert!(s.schedule("a", now + Duration::from_secs(10)));
        assert!(s.schedule("a", now + Duration::from_secs(5)));
        assert!(!s.schedule("a", now + Duration::from_secs(7)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(5)));
        assert_eq!(s.pop_due(now + Duration::from_secs(4)), None);
        assert_eq!(s.pop_due(now + Duration::from_secs(5)), Some("a"));
        assert!(s.is_empty());
        // The stale heap entries (at 7 and 10) must not resurrect the key.
        assert_eq!(s.pop_due(now + Duration::from_secs(60)), None);
        assert_eq!(s.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn scheduler_should_release_keys_in_time_order() {
        let now = Instant::now();
        let mut s = Scheduler::new();
        s.schedule("late", now + Duration::from_secs(3));
        s.schedule("early", now + Duration::from_secs(1));
        s.schedule("tie-1", now + Duration::from_secs(2));
        s.schedule("tie-2", now + Duration::from_secs(2));
        let later = now + Duration::from_secs(9);
        let order: Vec<_> = std::iter::from_fn(|| s.pop_due(later)).collect();
        assert_eq!(order, vec!["early", "tie-1", "tie-2", "late"]);
    }
}
