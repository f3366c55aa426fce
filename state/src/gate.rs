//! Group commit (private): writers share flushes, and the change feed publishes only what is durable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crd::Kind;
use tokio::sync::{broadcast, watch};

use crate::engine::{self, Engine};
use crate::error::{Error, Result};
use crate::watch::Change;

/// Durability bookkeeping shared by the store and its flush task.
///
/// Every write applied to the engine registers a *ticket* (in apply order, under the store's
/// writer lock) and then waits until a flush that started after the apply has succeeded. At
/// most one flush runs at a time; writes that arrive during a flush are covered together by
/// the next one (group commit).
///
/// The flush task holds only a weak reference to the engine between flushes, so dropping the
/// last [`Store`](crate::Store) closes the engine (and releases the directory lock) promptly.
#[derive(Debug)]
pub(crate) struct Gate {
    engine: Weak<dyn Engine>,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    feed: broadcast::Sender<Change>,
    revision: watch::Sender<u64>,
    kinds: BTreeMap<Kind, watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct State {
    /// The last ticket handed out.
    applied: u64,
    /// The last ticket a finished flush attempt covered.
    attempted: u64,
    /// Whether a flush task is running.
    flushing: bool,
    /// Changes waiting for their flush, in ticket order.
    pending: VecDeque<(u64, Option<Change>)>,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// The last ticket covered by a failed flush.
    failed: u64,
    /// That flush's error.
    error: String,
}

impl Gate {
    /// A gate for `engine` whose store is at `revision`.
    pub(crate) fn new(engine: &Arc<dyn Engine>, revision: u64, feed_capacity: usize) -> Self {
        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        Gate {
            engine: Arc::downgrade(engine),
            state: Mutex::new(State::default()),
            progress: watch::Sender::new(Progress::default()),
            feed,
            revision: watch::Sender::new(revision),
            kinds: Kind::ALL
                .into_iter()
                .map(|k| (k, watch::Sender::new(revision)))
                .collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a write that was just applied; call under the store's writer lock so tickets
    /// follow apply order. Starts a flush task if none runs.
    pub(crate) fn register(self: &Arc<Self>, change: Option<Change>) -> u64 {
        let mut st = self.lock();
        st.applied += 1;
        let ticket = st.applied;
        st.pending.push_back((ticket, change));
        if !st.flushing {
            st.flushing = true;
            drop(st);
            self.spawn_flusher();
        }
        ticket
    }

    /// A ticket covering everything applied so far, for callers that wrote nothing but read
    /// state that must be durable before they answer. Starts a new flush when something
    /// applied is not durable yet (also after a failed flush, so it is retried).
    pub(crate) fn sync(self: &Arc<Self>) -> u64 {
        let applied = self.lock().applied;
        if self.progress.borrow().durable >= applied {
            return 0;
        }
        self.register(None)
    }

    /// Waits until `ticket` is durable.
    ///
    /// # Errors
    /// [`Error::FlushFailed`] when the flush covering the ticket failed.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<()> {
        if ticket == 0 {
            return Ok(());
        }
        let mut rx = self.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.durable >= ticket || p.failed >= ticket)
            .await
            .map_err(|_| Error::EngineFailed(engine::Error::Closed))?
            .clone();
        if progress.durable >= ticket {
            Ok(())
        } else {
            Err(Error::FlushFailed {
                message: progress.error,
            })
        }
    }

    /// A new subscription to the feed.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }

    /// The last durable store revision.
    pub(crate) fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// A receiver of the last durable revision touching `kind` (store-wide when unknown).
    pub(crate) fn kind_revision(&self, kind: Kind) -> watch::Receiver<u64> {
        self.kinds.get(&kind).unwrap_or(&self.revision).subscribe()
    }

    fn spawn_flusher(self: &Arc<Self>) {
        let gate = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(gate.flush_loop());
            }
            // Outside Tokio (sync callers driving the future with another executor).
            Err(_) => {
                std::thread::spawn(move || futures::executor::block_on(gate.flush_loop()));
            }
        }
    }

    async fn flush_loop(self: Arc<Self>) {
        loop {
            let target = {
                let mut st = self.lock();
                if st.applied <= st.attempted {
                    st.flushing = false;
                    return;
                }
                st.applied
            };
            let flush = self.engine.upgrade().map(|engine| engine.flush());
            let result = match flush {
                Some(flush) => flush.await,
                None => Err(engine::Error::Closed),
            };
            let mut st = self.lock();
            st.attempted = target;
            match result {
                Ok(()) => {
                    while st.pending.front().is_some_and(|(t, _)| *t <= target) {
                        if let Some((_, Some(change))) = st.pending.pop_front() {
                            self.publish(change);
                        }
                    }
                    drop(st);
                    self.progress.send_modify(|p| p.durable = target);
                }
                Err(e) => {
                    drop(st);
                    let error = e.to_string();
                    tracing::error!(%error, "store flush failed");
                    self.progress.send_modify(|p| {
                        p.failed = target;
                        p.error = error;
                    });
                }
            }
        }
    }

    /// Raises the last durable revision to `revision` without an event (a follower store:
    /// the writer it follows used revisions it has no event for).
    pub(crate) fn advance(&self, revision: u64) {
        self.revision.send_if_modified(|r| {
            let raise = revision > *r;
            if raise {
                *r = revision;
            }
            raise
        });
    }

    /// Publishes one durable change (in revision order).
    pub(crate) fn publish(&self, change: Change) {
        let rv = change.resource_version;
        if let Some(kind) = self.kinds.get(&change.kind) {
            kind.send_replace(rv);
        }
        self.revision.send_replace(rv);
        // No subscribers is fine: the feed is best-effort fan-out of durable facts.
        let _ = self.feed.send(change);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::{Entries, KeyRange, Keyspace, Op, Order};
    use crate::watch::ChangeType;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// An engine whose flush counts calls, can be made to fail, and takes a little time.
    #[derive(Debug, Default)]
    struct CountingEngine {
        flushes: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
    }

    impl Engine for CountingEngine {
        fn location(&self) -> String {
            "counting".into()
        }
        fn get(&self, _: Keyspace, _: &[u8]) -> Result<Option<Vec<u8>>, engine::Error> {
            Ok(None)
        }
        fn scan(
            &self,
            _: Keyspace,
            _: &KeyRange,
            _: Order,
            _: usize,
        ) -> Result<Entries, engine::Error> {
            Ok(Vec::new())
        }
        fn apply_all(&self, _: Vec<(Keyspace, Vec<Op>)>) -> Result<(), engine::Error> {
            Ok(())
        }
        fn flush(&self) -> BoxFuture<'static, Result<(), engine::Error>> {
            let flushes = Arc::clone(&self.flushes);
            let fail = self.fail.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                flushes.fetch_add(1, Ordering::SeqCst);
                if fail {
                    Err(engine::Error::Closed)
                } else {
                    Ok(())
                }
            }
            .boxed()
        }
        fn size_on_disk(&self) -> Result<u64, engine::Error> {
            Ok(0)
        }
    }

    fn change(rv: u64) -> Change {
        Change {
            kind: Kind::Run,
            name: format!("r{rv}"),
            resource_version: rv,
            generation: 1,
            change: ChangeType::Created,
        }
    }

    #[tokio::test]
    async fn concurrent_writers_should_share_flushes_and_publish_in_order() {
        let counting = CountingEngine::default();
        let flushes = Arc::clone(&counting.flushes);
        let engine: Arc<dyn Engine> = Arc::new(counting);
        let gate = Arc::new(Gate::new(&engine, 0, 1024));
        let mut feed = gate.subscribe();
        let tickets: Vec<u64> = (1..=100)
            .map(|rv| gate.register(Some(change(rv))))
            .collect();
        futures::future::try_join_all(tickets.iter().map(|t| gate.wait(*t)))
            .await
            .unwrap();
        assert!(
            flushes.load(Ordering::SeqCst) < 100,
            "group commit shares flushes"
        );
        for rv in 1..=100 {
            assert_eq!(feed.try_recv().unwrap().resource_version, rv);
        }
        assert_eq!(gate.revision(), 100);
        assert_eq!(*gate.kind_revision(Kind::Run).borrow(), 100);
        assert_eq!(*gate.kind_revision(Kind::WarmApp).borrow(), 0);
    }

    #[tokio::test]
    async fn a_failed_flush_should_fail_its_writers_and_publish_nothing() {
        let counting = CountingEngine::default();
        counting.fail.store(true, Ordering::SeqCst);
        let fail = Arc::clone(&counting.fail);
        let engine: Arc<dyn Engine> = Arc::new(counting);
        let gate = Arc::new(Gate::new(&engine, 0, 16));
        let mut feed = gate.subscribe();
        let t = gate.register(Some(change(1)));
        assert!(matches!(gate.wait(t).await, Err(Error::FlushFailed { .. })));
        assert!(feed.try_recv().is_err());
        fail.store(false, Ordering::SeqCst);
        let t2 = gate.register(Some(change(2)));
        gate.wait(t2).await.unwrap();
        // The earlier write became durable with the later flush and is published first.
        assert_eq!(feed.try_recv().unwrap().resource_version, 1);
        assert_eq!(feed.try_recv().unwrap().resource_version, 2);
    }

    #[tokio::test]
    async fn a_dropped_engine_should_fail_waiters_instead_of_hanging() {
        let engine: Arc<dyn Engine> = Arc::new(CountingEngine::default());
        let gate = Arc::new(Gate::new(&engine, 0, 16));
        drop(engine);
        let t = gate.register(None);
        assert!(gate.wait(t).await.is_err());
    }
}
