//! A shared observation of every stack, so a full resync costs one list call per kind however many stacks it reconciles.
//!
//! Reconciling N stacks one by one with [`observe`](super::observe) costs 7 list calls per
//! stack: a resync of 10,000 warm apps would be 70,000 calls. [`ObservationCache`] instead
//! lists every stack at once ([`observe_all`], 7 calls) and serves each reconcile its stack
//! from that snapshot — as long as the snapshot is fresh enough for the caller.
//!
//! # Freshness
//! A caller says how fresh its view must be: `fresh_since`, the [`Ticket`] of the latest
//! request for its reconcile (a change, an event, a resync, a requeue — see
//! [`runtime::fresh_since`](crate::runtime::fresh_since)). A view is usable when the listing
//! that produced it *started* after `fresh_since` and after hearth's own last write to that
//! stack ([`ObservationCache::wrote`]). Tickets, not instants: in virtual time a write and a
//! listing happen at the same instant, but never with the same ticket. So every key triggered by one resync shares
//! one listing, an event or a requeue forces a new one, and a stack hearth just changed is
//! re-read on its own (7 calls for that stack only, never for the others).
//!
//! A relist takes its stacks from the same snapshot ([`ObservationCache::snapshot`], listed
//! after the relist's ticket), so the reconciles it triggers read the relist's own listing:
//! a resync lists each kind once.
//!
//! The decision is [`plan_read`] (pure); this type only holds the snapshot and lists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::observe::{observe, observe_grouped, Depth, Observed};
use super::Result;
use crate::runtime::Ticket;
use crate::swarm::{LabelFilter, Swarm};

/// How a read of one stack is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// From the snapshot as it is.
    Snapshot,
    /// List every stack again (the snapshot started before `fresh_since`).
    RefreshAll,
    /// List this stack alone (the snapshot is fresh enough, but hearth wrote to the stack
    /// after its listing started).
    StackOnly,
}

/// Decides how to serve a read (pure).
///
/// `snapshot_at`: when the listing of every stack started (`None`: never); `stack_at`: when
/// the stack's own newest listing started; `written_at`: when hearth last finished writing to
/// the stack; `fresh_since`: the request the caller serves. Usable: started after both.
pub fn plan_read(
    snapshot_at: Option<Ticket>,
    stack_at: Option<Ticket>,
    written_at: Option<Ticket>,
    fresh_since: Ticket,
) -> Read {
    let Some(snapshot_at) = snapshot_at else {
        return Read::RefreshAll;
    };
    let seen_at = stack_at.map_or(snapshot_at, |s| s.max(snapshot_at));
    let needed = written_at.map_or(fresh_since, |w| w.max(fresh_since));
    if seen_at > needed {
        Read::Snapshot
    } else if snapshot_at > fresh_since {
        Read::StackOnly
    } else {
        Read::RefreshAll
    }
}

/// Every stack of one listing by namespace (unordered: reads look stacks up by namespace).
pub type Stacks = HashMap<String, Arc<Observed>>;

#[derive(Debug, Default)]
struct Inner {
    /// When the listing of every stack started.
    snapshot_at: Option<Ticket>,
    /// Every stack of that listing (absent: empty then), shared with the reconciles it
    /// serves (a read clones a pointer, not the stack).
    stacks: Arc<Stacks>,
    /// Stacks re-read alone since, with when that listing started.
    reread: HashMap<String, (Ticket, Arc<Observed>)>,
    /// When hearth last finished writing to each stack.
    written: HashMap<String, Ticket>,
}

/// Counters of an [`ObservationCache`] (for benchmarks and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served.
    pub reads: u64,
    /// Listings of every stack.
    pub refreshes: u64,
    /// Listings of one stack.
    pub stack_reads: u64,
}

/// One snapshot of every stack (with tasks and containers), shared by the reconciles of a
/// resync; see the module docs.
#[derive(Debug, Default)]
pub struct ObservationCache {
    inner: Mutex<Inner>,
    /// Held while every stack is listed, so concurrent callers wait for one listing.
    refresh: tokio::sync::Mutex<()>,
    reads: AtomicU64,
    refreshes: AtomicU64,
    stack_reads: AtomicU64,
}

impl ObservationCache {
    /// An empty cache (the first read lists every stack).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update replaces whole entries, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn plan(&self, namespace: &str, fresh_since: Ticket) -> (Read, Option<Arc<Observed>>) {
        let inner = self.lock();
        let reread = inner.reread.get(namespace);
        let read = plan_read(
            inner.snapshot_at,
            reread.map(|(at, _)| *at),
            inner.written.get(namespace).copied(),
            fresh_since,
        );
        let view = (read == Read::Snapshot).then(|| match reread {
            Some((at, o)) if Some(*at) >= inner.snapshot_at => Arc::clone(o),
            _ => inner.stacks.get(namespace).cloned().unwrap_or_default(),
        });
        (read, view)
    }

    /// Stack `namespace` (with tasks and containers) as seen by a listing that started after
    /// `fresh_since` and after hearth's last write to it.
    ///
    /// # Errors
    /// [`super::Error::ObserveFailed`] from the listing (nothing is cached then).
    pub async fn observe(
        &self,
        swarm: &dyn Swarm,
        namespace: &str,
        fresh_since: Ticket,
    ) -> Result<Arc<Observed>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let (Read::Snapshot, Some(view)) = self.plan(namespace, fresh_since) {
            return Ok(view);
        }
        let (read, view) = {
            // One listing at a time: whoever waited here finds the new snapshot fresh.
            let _flight = self.refresh.lock().await;
            match self.plan(namespace, fresh_since) {
                (Read::RefreshAll, _) => {
                    self.list_all(swarm).await?;
                    self.plan(namespace, fresh_since)
                }
                other => other,
            }
        };
        match (read, view) {
            (Read::Snapshot, Some(view)) => Ok(view),
            _ => {
                let started = Ticket::next();
                let observed = Arc::new(observe(swarm, namespace, Depth::WithTasks).await?);
                self.stack_reads.fetch_add(1, Ordering::Relaxed);
                let mut inner = self.lock();
                let newer = inner
                    .reread
                    .get(namespace)
                    .is_some_and(|(at, _)| *at > started);
                if !newer {
                    inner
                        .reread
                        .insert(namespace.to_string(), (started, Arc::clone(&observed)));
                }
                Ok(observed)
            }
        }
    }

    /// Lists every stack (the caller holds `refresh`) and makes it the snapshot.
    async fn list_all(&self, swarm: &dyn Swarm) -> Result<Arc<Stacks>> {
        let started = Ticket::next();
        let stacks = observe_grouped(swarm, &LabelFilter::all(), Depth::WithTasks).await?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let stacks: Arc<Stacks> = Arc::new(
            stacks
                .into_iter()
                .map(|(ns, o)| (ns, Arc::new(o)))
                .collect(),
        );
        let mut inner = self.lock();
        inner.snapshot_at = Some(started);
        let old = std::mem::replace(&mut inner.stacks, Arc::clone(&stacks));
        inner.reread.retain(|_, (at, _)| *at > started);
        drop(inner);
        retire(old);
        Ok(stacks)
    }

    /// Every stack, from a listing that started after `fresh_since` (the snapshot, listed
    /// again unless it is that fresh). A relist takes its stacks from here, so the reconciles
    /// it triggers share the relist's own listing (one listing per kind per resync).
    ///
    /// # Errors
    /// [`super::Error::ObserveFailed`] from the listing (the snapshot is kept then).
    pub async fn snapshot(&self, swarm: &dyn Swarm, fresh_since: Ticket) -> Result<Arc<Stacks>> {
        let fresh = |inner: &Inner| {
            inner
                .snapshot_at
                .is_some_and(|at| at > fresh_since)
                .then(|| Arc::clone(&inner.stacks))
        };
        if let Some(stacks) = fresh(&self.lock()) {
            return Ok(stacks);
        }
        let _flight = self.refresh.lock().await;
        if let Some(stacks) = fresh(&self.lock()) {
            return Ok(stacks);
        }
        self.list_all(swarm).await
    }

    /// Records that hearth finished writing to stack `namespace` now (call it after an apply or
    /// teardown, also a failed one): no view listed before this moment is served for it again.
    pub fn wrote(&self, namespace: &str) {
        let now = Ticket::next();
        self.lock().written.insert(namespace.to_string(), now);
    }

    /// Forgets everything: the next read lists every stack.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.snapshot_at = None;
        inner.stacks = Arc::default();
        inner.reread.clear();
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            reads: self.reads.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            stack_reads: self.stack_reads.load(Ordering::Relaxed),
        }
    }
}

/// Drops a replaced snapshot off the caller's path: on a blocking thread inside a tokio
/// runtime, here otherwise. Freeing every object of 10,000 stacks took ~8 % of a resync pass,
/// and the caller is the relist the pass's reconciles wait for (issue 14).
fn retire(old: Arc<Stacks>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(old))),
        Err(_) => drop(old),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stack::plan::tests::sample_stack;
    use crate::stack::{apply, ApplyOptions, Owner};
    use crate::swarm::sim::{SimConfig, SimSwarm};

    #[test]
    fn a_read_is_served_from_a_snapshot_that_started_after_the_trigger() {
        let [t0, t1, t2] = [(); 3].map(|()| Ticket::next());
        assert_eq!(plan_read(None, None, None, t0), Read::RefreshAll);
        assert_eq!(plan_read(Some(t1), None, None, t0), Read::Snapshot);
        assert_eq!(
            plan_read(Some(t1), None, None, t1),
            Read::RefreshAll,
            "not after it"
        );
        assert_eq!(plan_read(Some(t1), None, None, t2), Read::RefreshAll);
    }

    #[test]
    fn a_stack_written_after_the_snapshot_is_reread_alone() {
        let [t0, t1, t2, t3] = [(); 4].map(|()| Ticket::next());
        assert_eq!(plan_read(Some(t1), None, Some(t2), t0), Read::StackOnly);
        assert_eq!(plan_read(Some(t1), Some(t3), Some(t2), t0), Read::Snapshot);
        assert_eq!(
            plan_read(Some(t1), None, Some(t2), t3),
            Read::RefreshAll,
            "the trigger is newer than the snapshot too"
        );
        assert_eq!(plan_read(Some(t3), None, Some(t2), t0), Read::Snapshot);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_of_many_stacks_after_one_trigger_share_one_listing() {
        let swarm = SimSwarm::new(SimConfig::default());
        let owner = Owner::operator("x");
        for i in 0..20 {
            let stack = sample_stack(&format!("s{i}"), "img:1", "pw");
            apply(&swarm, &stack, &owner, &ApplyOptions::default())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cache = ObservationCache::new();
        swarm.clear_calls();
        let trigger = Ticket::next();
        for i in 0..20 {
            let seen = cache
                .observe(&swarm, &format!("s{i}"), trigger)
                .await
                .unwrap();
            assert_eq!(seen.services.len(), 2);
            assert!(crate::stack::status(&seen).ready);
        }
        assert_eq!(swarm.call_count(), 7, "one list call per kind");
        assert_eq!(cache.stats().refreshes, 1);

        // A later trigger needs a new listing; an unknown stack is empty.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = cache.observe(&swarm, "nope", Ticket::next()).await.unwrap();
        assert!(seen.is_empty());
        assert_eq!(swarm.call_count(), 14);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stack_hearth_wrote_to_is_reread_and_the_others_are_not() {
        let swarm = SimSwarm::new(SimConfig::default());
        let owner = Owner::operator("x");
        for ns in ["a", "b"] {
            apply(
                &swarm,
                &sample_stack(ns, "img:1", "pw"),
                &owner,
                &ApplyOptions::default(),
            )
            .await
            .unwrap();
        }
        let cache = ObservationCache::new();
        let trigger = Ticket::next();
        let before = cache.observe(&swarm, "a", trigger).await.unwrap();
        apply(
            &swarm,
            &sample_stack("a", "img:2", "pw"),
            &owner,
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        cache.wrote("a");
        swarm.clear_calls();
        let after = cache.observe(&swarm, "a", trigger).await.unwrap();
        assert_ne!(before.services, after.services, "the write is visible");
        assert_eq!(cache.stats().stack_reads, 1);
        let calls = swarm.call_count();
        cache.observe(&swarm, "b", trigger).await.unwrap();
        cache.observe(&swarm, "a", trigger).await.unwrap();
        assert_eq!(swarm.call_count(), calls, "both served from memory");
    }
}
