//! The runner: pulls due keys from the scheduler and reconciles them, never one key twice at once.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crd::Resource;
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use state::Store;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::backoff::Backoff;
use super::scheduler::Scheduler;
use super::triggers::{self, Survey, Trigger};
use super::{Action, Config, Error, Next, ObjectRef, Reconciler, Shutdown, Ticket};
use crate::errors::chain;
use crate::swarm::Swarm;

/// Counters shared with [`Handle`]s.
#[derive(Debug, Default)]
struct Stats {
    queue_depth: AtomicUsize,
    active: AtomicUsize,
    started: AtomicU64,
    failed: AtomicU64,
    first_pass: AtomicBool,
    /// The longest backoff delay scheduled so far, in nanoseconds.
    longest_backoff_ns: AtomicU64,
}

/// A cheap, cloneable view of a running controller: its gauges and a way to trigger keys.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Trigger>,
    stats: Arc<Stats>,
    resync: Arc<Notify>,
}

impl Handle {
    /// Requests a reconcile of `key` now (deduplicated with every other request).
    /// Returns `false` when the controller has stopped.
    pub fn trigger(&self, key: ObjectRef) -> bool {
        self.tx.send(Trigger::now(key)).is_ok()
    }

    /// Starts the periodic resync's next pass now (a relist of every key); the period then
    /// starts over. Does nothing once the controller has stopped.
    pub fn resync_now(&self) {
        self.resync.notify_one();
    }

    /// Keys waiting: pending in the scheduler, or due while their previous reconcile runs.
    pub fn queue_depth(&self) -> usize {
        self.stats.queue_depth.load(Ordering::Relaxed)
    }

    /// Reconciles running now.
    pub fn active_workers(&self) -> usize {
        self.stats.active.load(Ordering::Relaxed)
    }

    /// Reconciles started since the controller started.
    pub fn reconciles_started(&self) -> u64 {
        self.stats.started.load(Ordering::Relaxed)
    }

    /// The longest backoff delay (jitter included) any key was given since the controller
    /// started: never more than `backoff_max × (1 + backoff_jitter)`.
    pub fn longest_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.stats.longest_backoff_ns.load(Ordering::Relaxed))
    }

    /// Reconciles that failed (error or panic) since the controller started.
    pub fn reconciles_failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Whether the first pass is over: the startup relist was queued and every key due then
    /// has been reconciled once (successfully or not). Latches; `/readyz` reports it.
    pub fn first_pass_done(&self) -> bool {
        self.stats.first_pass.load(Ordering::Relaxed)
    }
}

/// How [`Controller::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Graceful: every in-flight reconcile finished.
    Drained,
    /// Forced: in-flight reconciles were aborted.
    Aborted,
}

/// What one reconcile call ended with.
enum Outcome<E> {
    Reconciled(Action),
    Failed(E),
    Broken(Error),
}

/// Wires triggers, scheduler and runner for reconciler `R`.
///
/// ```ignore
/// let controller = Controller::<WarmAppReconciler>::new(store, ctx, config).with_swarm(swarm);
/// let handle = controller.handle();
/// tokio::spawn(runtime::signals::on_os_signals(shutdown.clone()));
/// controller.run(shutdown).await;
/// ```
pub struct Controller<R: Reconciler> {
    store: Store,
    swarm: Option<Arc<dyn Swarm>>,
    ctx: Arc<R::Context>,
    config: Config,
    tx: mpsc::UnboundedSender<Trigger>,
    rx: mpsc::UnboundedReceiver<Trigger>,
    stats: Arc<Stats>,
    resync: Arc<Notify>,
    reconciler: PhantomData<fn() -> R>,
}

impl<R: Reconciler> Controller<R> {
    /// A controller of `R::Object`s in `store`, without Docker events (add them with
    /// [`Controller::with_swarm`]).
    pub fn new(store: Store, ctx: Arc<R::Context>, config: Config) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Controller {
            store,
            swarm: None,
            ctx,
            config,
            tx,
            rx,
            stats: Arc::default(),
            resync: Arc::default(),
            reconciler: PhantomData,
        }
    }

    /// Also follows `swarm`'s events (mapped to owners) and lists its hearth-managed services
    /// at every relist, so orphans get their `cleanup`.
    pub fn with_swarm(mut self, swarm: Arc<dyn Swarm>) -> Self {
        self.swarm = Some(swarm);
        self
    }

    /// A handle for gauges and manual triggers; valid before and during [`Controller::run`].
    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            resync: Arc::clone(&self.resync),
        }
    }

    /// Runs until `shutdown`: relists once, then follows the change feed, Docker events
    /// (when a swarm is set) and the periodic resync, and reconciles due keys.
    ///
    /// # Guarantees
    /// - Never two reconciles of one key at once; a key that becomes due while it is being
    ///   reconciled is reconciled again right after.
    /// - At most `config.concurrency` reconciles at once.
    /// - A failure retries the key after its exponential backoff (unless the error policy says
    ///   otherwise); a success resets it. `Action::requeue(d)` makes the key due after `d`.
    /// - On `shutdown.graceful` no new reconcile starts and in-flight ones finish
    ///   ([`Stopped::Drained`]); on `shutdown.force` they are aborted ([`Stopped::Aborted`]).
    /// - When it returns, every task it spawned (triggers, reconciles) has ended: none holds
    ///   the store any more.
    pub async fn run(self, shutdown: Shutdown) -> Stopped {
        let Controller {
            store,
            swarm,
            ctx,
            config,
            tx,
            mut rx,
            stats,
            resync,
            ..
        } = self;
        let mut rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let concurrency = config.concurrency.max(1);

        // Where relists find the swarm's stacks (with a swarm only).
        let survey: Option<Arc<dyn Survey>> = swarm.as_ref().map(|swarm| {
            R::survey(&ctx)
                .unwrap_or_else(|| Arc::new(triggers::ListSurvey(Arc::clone(swarm))) as _)
        });
        // Triggers. Subscribe before the initial relist so no write falls between them.
        let mut sources = JoinSet::new();
        let feed = store.subscribe();
        sources.spawn(triggers::store_feed::<R::Object>(
            store.clone(),
            survey.clone(),
            feed,
            tx.clone(),
        ));
        if let (Some(swarm), Some(survey)) = (&swarm, &survey) {
            sources.spawn(triggers::docker_events::<R::Object>(
                store.clone(),
                Arc::clone(swarm),
                Arc::clone(survey),
                config.clone(),
                StdRng::seed_from_u64(rng.random()),
                tx.clone(),
            ));
        }
        sources.spawn(triggers::resync::<R::Object>(
            store.clone(),
            survey.clone(),
            config.clone(),
            StdRng::seed_from_u64(rng.random()),
            resync,
            tx.clone(),
        ));
        let initial = tx.clone();
        let (s, w) = (store.clone(), survey.clone());
        let (relisted_tx, mut relisted_rx) = tokio::sync::oneshot::channel::<()>();
        let mut startup_rng = StdRng::seed_from_u64(rng.random());
        let policy = config.reconnect_policy();
        sources.spawn(async move {
            let relisted =
                triggers::send_relist::<R::Object>(&s, w.as_deref(), &initial, "startup").await;
            let _ = relisted_tx.send(());
            // Orphans the failed swarm listing missed come when a retry lists them.
            if let (triggers::Relisted::SwarmMissing, Some(survey)) = (relisted, w.as_deref()) {
                triggers::send_swarm_owners::<R::Object>(
                    survey,
                    policy,
                    &mut startup_rng,
                    &initial,
                )
                .await;
            }
        });
        drop(tx);
        let mut relisted = false;

        let mut scheduler: Scheduler<ObjectRef> = Scheduler::new();
        let mut running: HashSet<ObjectRef> = HashSet::new();
        let mut rerun: HashSet<ObjectRef> = HashSet::new();
        // The latest trigger of each key since its last start (see `fresh_since`).
        let mut asked: HashMap<ObjectRef, Ticket> = HashMap::new();
        let mut workers: JoinSet<(ObjectRef, Outcome<R::Error>)> = JoinSet::new();
        let mut backoff = Backoff::new(config.backoff_policy());
        let mut draining = false;
        tracing::info!(kind = %R::Object::KIND, concurrency, "controller started");

        let stopped = loop {
            if !draining {
                let now = Instant::now();
                while running.len() < concurrency {
                    let Some(key) = scheduler.pop_due(now) else {
                        break;
                    };
                    if running.contains(&key) {
                        rerun.insert(key);
                        continue;
                    }
                    running.insert(key.clone());
                    stats.started.fetch_add(1, Ordering::Relaxed);
                    // Due by a trigger: its ticket; by a requeue, backoff or rerun: now.
                    let since = asked.remove(&key).unwrap_or_else(Ticket::next);
                    let span = tracing::info_span!("reconcile", object = %key);
                    workers.spawn(
                        super::FRESH_SINCE
                            .scope(since, work::<R>(store.clone(), Arc::clone(&ctx), key))
                            .instrument(span),
                    );
                }
            }
            stats
                .queue_depth
                .store(scheduler.len() + rerun.len(), Ordering::Relaxed);
            stats.active.store(running.len(), Ordering::Relaxed);
            if relisted
                && !stats.first_pass.load(Ordering::Relaxed)
                && running.is_empty()
                && rerun.is_empty()
                && rx.is_empty()
                && scheduler.next_due().is_none_or(|at| at > Instant::now())
            {
                tracing::info!(kind = %R::Object::KIND, "first pass done: every object was reconciled once");
                stats.first_pass.store(true, Ordering::Relaxed);
            }
            if draining && workers.is_empty() {
                break Stopped::Drained;
            }
            let wake = if !draining && running.len() < concurrency {
                scheduler.next_due()
            } else {
                None
            };

            tokio::select! {
                biased;
                _ = shutdown.force.cancelled() => {
                    workers.abort_all();
                    break Stopped::Aborted;
                }
                _ = &mut relisted_rx, if !relisted => {
                    // The relist's triggers are in the channel before this fires.
                    relisted = true;
                }
                _ = shutdown.graceful.cancelled(), if !draining => {
                    tracing::info!(in_flight = running.len(), "draining: no new reconciles");
                    draining = true;
                    sources.abort_all();
                }
                Some(joined) = workers.join_next() => {
                    let (key, outcome) = match joined {
                        Ok(done) => done,
                        // Panics are caught inside `work`; only aborts end up here.
                        Err(e) => {
                            tracing::error!(error = %e, "reconcile task ended abnormally");
                            continue;
                        }
                    };
                    running.remove(&key);
                    let now = Instant::now();
                    let next = match outcome {
                        Outcome::Reconciled(action) => {
                            backoff.succeeded(&key);
                            // `backoff()` only means something after a failure.
                            match action.next {
                                Next::Backoff => Next::AwaitChange,
                                next => next,
                            }
                        }
                        Outcome::Failed(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            let action = R::error_policy(&key, &e, &ctx);
                            tracing::warn!(object = %key, error = %chain(&e), "reconcile failed");
                            action.next
                        }
                        Outcome::Broken(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(object = %key, error = %e, "reconcile failed");
                            Next::Backoff
                        }
                    };
                    match next {
                        Next::Requeue(d) => {
                            scheduler.schedule(key.clone(), now + d);
                        }
                        Next::Backoff => {
                            let d = backoff.failed(key.clone(), &mut rng);
                            tracing::debug!(object = %key, delay = ?d, "retrying after backoff");
                            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                            stats.longest_backoff_ns.fetch_max(ns, Ordering::Relaxed);
                            scheduler.schedule(key.clone(), now + d);
                        }
                        Next::AwaitChange => {}
                    }
                    if rerun.remove(&key) {
                        scheduler.schedule(key, now);
                    }
                }
                Some(trigger) = rx.recv(), if !draining => {
                    // Take the whole burst before starting work, so a burst for one key
                    // becomes one reconcile.
                    let mut next = Some(trigger);
                    while let Some(trigger) = next {
                        if trigger.key.kind == R::Object::KIND {
                            ask(&mut asked, &trigger.key, trigger.ticket);
                            scheduler.schedule(trigger.key, trigger.at);
                        } else {
                            tracing::debug!(object = %trigger.key, "ignoring a trigger of another kind");
                        }
                        next = rx.try_recv().ok();
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        };
        // Aborted tasks end when the runtime next polls them: awaited here, so that when `run`
        // returns none of them holds the store (or the swarm) any more — `serve`'s `wait()`
        // promises the data directory is free then (issue 14).
        sources.shutdown().await;
        workers.shutdown().await;
        stats.active.store(0, Ordering::Relaxed);
        tracing::info!(?stopped, "controller stopped");
        stopped
    }
}

/// Records that `key` was asked for with `at`, keeping the latest request.
fn ask(asked: &mut HashMap<ObjectRef, Ticket>, key: &ObjectRef, at: Ticket) {
    asked
        .entry(key.clone())
        .and_modify(|t| *t = (*t).max(at))
        .or_insert(at);
}

/// Sleeps until `at` (forever when `None`; the select guard keeps that branch off then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One reconcile: read the object, call `reconcile` (or `cleanup` when it is gone), catch
/// panics so the key is always released.
async fn work<R: Reconciler>(
    store: Store,
    ctx: Arc<R::Context>,
    key: ObjectRef,
) -> (ObjectRef, Outcome<R::Error>) {
    let call = async {
        // Decoded once while its stored bytes are unchanged: a resync reads every object.
        match store.get_shared::<R::Object>(&key.name) {
            Ok(Some(obj)) => R::reconcile(obj, ctx).await,
            Ok(None) => R::cleanup(key.clone(), ctx).await,
            Err(source) => {
                return Outcome::Broken(Error::ObjectReadFailed {
                    key: key.clone(),
                    source,
                })
            }
        }
        .map_or_else(Outcome::Failed, Outcome::Reconciled)
    };
    let outcome = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Outcome::Broken(Error::ReconcilerPanicked {
                key: key.clone(),
                message,
            })
        }
    };
    (key, outcome)
}
