//! Slot pools and leases over the store: atomic FIFO grants, heartbeats, release, and prompt reclaim of dead owners' slots.
//!
//! - [`decide`] (pure): grant or wait, renew, release, reclaim.
//! - [`Slots`]: those decisions applied to `SlotPool` objects in the [`Store`] with optimistic
//!   concurrency, so grants are atomic across tasks (and, through the store's single writer,
//!   across everything sharing the store).
//! - [`ReclaimWorker`]: frees slots whose owner died (same host: `/proc`, polled) or whose
//!   lease expired (owners on other hosts), promptly, and records each reclaim in history.
//! - [`exec`](mod@exec): `hearth slot exec`: run a command while holding a slot.

pub mod decide;
pub mod exec;

use std::sync::Arc;
use std::time::Duration;

use crd::names;
use crd::{Kind, Owner, Run, SlotPool};
use state::history::{NewEntry, ObjectRef};
use state::{Clock, Store, SystemClock};

use crate::liveness::Checker;
use decide::{Decision, Holder, ReclaimReason, RunHold};

pub use exec::{exec, ExecOptions, SlotClient};

/// History reason of a reclaimed lease or dropped waiter.
pub const RECLAIMED: &str = "SlotReclaimed";

/// How many attempts one read-modify-write of a pool gets ([`state::retry_conflicts`]) before
/// [`Error::ContentionPersisted`]. Larger than [`state::CONFLICT_ATTEMPTS`]: every waiting CI
/// job writes its pool, so with hundreds of waiters a writer can lose many races in a row
/// while the pool as a whole makes progress (each conflict is another writer's success).
const MAX_CONFLICT_RETRIES: u32 = 10_000;

impl Error {
    /// A lost optimistic-concurrency race: read again and retry.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::StoreFailed(e) if e.is_conflict())
    }
}

/// `result` with a conflict that outlasted every attempt reported as
/// [`Error::ContentionPersisted`].
fn contention<T>(pool: &str, result: Result<T>) -> Result<T> {
    result.map_err(|e| {
        if e.is_conflict() {
            Error::ContentionPersisted {
                pool: pool.into(),
                attempts: MAX_CONFLICT_RETRIES,
            }
        } else {
            e
        }
    })
}

/// Errors of slot operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No SlotPool of that name is recorded. Not retryable until an operator creates it.
    #[error("slot pool {pool} was not found")]
    PoolNotFound {
        /// The pool.
        pool: String,
    },
    /// No slot became free (for this waiter, in arrival order) within the pool's wait timeout.
    /// Retryable later.
    #[error("no slot of pool {pool} became free within {waited:?}")]
    WaitTimedOut {
        /// The pool.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The caller does not hold that slot (any more): it was released or reclaimed (owner
    /// dead, lease expired). Not retryable: acquire again.
    #[error("slot {slot} of pool {pool} is not held by this owner (released or reclaimed)")]
    LeaseNotHeld {
        /// The pool.
        pool: String,
        /// The slot.
        slot: u32,
    },
    /// The pool kept changing under every attempt. Retryable.
    #[error("slot pool {pool} kept changing concurrently ({attempts} attempts)")]
    ContentionPersisted {
        /// The pool.
        pool: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A slot namespace could not be named (an invalid pool name). Not retryable.
    #[error("slot namespace could not be named")]
    NamespaceInvalid(#[source] names::Error),
    /// The hearth daemon serving slot requests (for `hearth slot exec`) could not be reached:
    /// connection refused or timed out, or the connection broke. Retryable once the daemon
    /// runs.
    #[error("cannot reach hearth at {addr}: {reason}")]
    DaemonUnreachable {
        /// The daemon's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The hearth daemon answered, but failed the request (a server error, an unreadable
    /// answer). Retryable when the daemon's own failure is.
    #[error("hearth at {addr} failed the slot request: {reason}")]
    DaemonFailed {
        /// The daemon's address.
        addr: String,
        /// Its status and message.
        reason: String,
    },
    /// The store failed. Retryable when the store error is (see [`state::Error`]).
    #[error("store operation failed")]
    StoreFailed(#[from] state::Error),
}

/// Writes committed together with a slot grant (see [`Slots::try_acquire_with`]).
pub type AlsoOnGrant<'a> = dyn Fn(&Grant, &mut state::Transaction) -> Result<()> + Send + Sync + 'a;

/// `Result` of slot operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A slot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The pool.
    pub pool: String,
    /// The owning process (its death frees the slot).
    pub owner: Owner,
    /// The run the slot is for, if any.
    pub run: Option<String>,
    /// Lease TTL renewed by heartbeats; `None` = owner liveness alone decides.
    pub ttl: Option<Duration>,
}

/// A granted slot: what the holder exports to its workload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The pool.
    pub pool: String,
    /// The slot index (0-based).
    pub slot: u32,
    /// First port of the slot's block.
    pub port_base: u32,
    /// Number of ports in the block.
    pub ports: u32,
    /// The slot's namespace (`hs-<pool>-<slot>`).
    pub namespace: String,
    /// The lease owner.
    pub owner: Owner,
    /// When the lease expires unless renewed (unix ms); `None` = never.
    pub expires_at_ms: Option<u64>,
}

impl Grant {
    fn new(pool: &SlotPool, lease: &crd::slotpool::SlotLease) -> Result<Grant> {
        let (port_base, ports) = pool
            .spec
            .port_block(lease.slot)
            .unwrap_or((pool.spec.port_base, pool.spec.ports_per_slot));
        Ok(Grant {
            pool: pool.metadata.name.clone(),
            slot: lease.slot,
            port_base,
            ports,
            namespace: names::slot_namespace(&pool.metadata.name, lease.slot)
                .map_err(Error::NamespaceInvalid)?
                .into_string(),
            owner: lease.owner.clone(),
            expires_at_ms: lease.expires_at_ms,
        })
    }
}

/// The outcome of one acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Granted.
    Granted(Grant),
    /// Waiting in line; pass `ticket` to the next attempt.
    Waiting {
        /// The waiter entry's `enqueuedAtMs`.
        ticket: u64,
        /// Live waiters ahead.
        position: usize,
        /// When the wait ends (unix ms).
        deadline_ms: u64,
    },
    /// The wait deadline passed; the entry is gone.
    TimedOut,
}

/// One reclaimed lease or dropped waiter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reclaimed {
    /// The pool.
    pub pool: String,
    /// The slot, for a lease; `None` for a dropped waiter.
    pub slot: Option<u32>,
    /// The owner.
    pub owner: Owner,
    /// The run, if any.
    pub run: Option<String>,
    /// Why.
    pub reason: ReclaimReason,
}

/// Slot operations over a store.
#[derive(Debug, Clone)]
pub struct Slots {
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Option<metrics::Metrics>,
    /// When this slot service was created: waiter entries enqueued earlier belong to requests
    /// of an earlier process (see [`decide::stale_waiters`]).
    line_since_ms: u64,
    /// The withdrawals of cancelled waits ([`LeaveOnDrop`]), each a task holding the store:
    /// [`Slots::settle`] waits for them (serve's `wait()` does, so the store is released).
    leaving: tokio_util::task::TaskTracker,
}

impl Slots {
    /// Slots over `store`, with the system clock.
    pub fn new(store: Store) -> Slots {
        Slots::with_clock(store, Arc::new(SystemClock))
    }

    /// Slots over `store` with `clock` (virtual time in tests).
    pub fn with_clock(store: Store, clock: Arc<dyn Clock>) -> Slots {
        Slots {
            store,
            line_since_ms: clock.now_ms(),
            leaving: tokio_util::task::TaskTracker::new(),
            clock,
            metrics: None,
        }
    }

    /// Records how long [`Slots::acquire`] waited for each grant in `metrics`
    /// (`hearth_slot_wait_seconds`, per pool).
    pub fn with_metrics(mut self, metrics: metrics::Metrics) -> Slots {
        self.metrics = Some(metrics);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits until every cancelled wait of these slots (and their clones) has left the line:
    /// the withdrawals run in tasks of their own, each holding the store (issue 14: serve's
    /// `wait()` returned before the store was released). Withdrawals of waits cancelled later
    /// are still tracked; call this when no request can wait any more.
    pub async fn settle(&self) {
        self.leaving.close();
        self.leaving.wait().await;
    }

    /// Now, in unix milliseconds, by this instance's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn pool(&self, pool: &str) -> Result<SlotPool> {
        self.store
            .get_opt::<SlotPool>(pool)?
            .ok_or_else(|| Error::PoolNotFound { pool: pool.into() })
    }

    /// Reads the pool, lets `f` change it (returning `None` to write nothing), writes the
    /// status if the pool did not change meanwhile, and retries on conflicts.
    async fn modify<T>(
        &self,
        pool: &str,
        mut f: impl FnMut(&mut SlotPool, u64) -> Result<Option<T>>,
    ) -> Result<(SlotPool, Option<T>)> {
        let written = state::retry_conflicts(MAX_CONFLICT_RETRIES, Error::is_conflict, || {
            // Read and change now; only the write is awaited.
            let changed = self.pool(pool).and_then(|mut p| {
                let before = p.clone();
                let out = f(&mut p, self.now_ms())?;
                Ok((p != before, p, out))
            });
            async move {
                let (changed, p, out) = changed?;
                if !changed {
                    return Ok((p, out));
                }
                Ok((self.store.update_status(&p).await?, out))
            }
        })
        .await;
        contention(pool, written)
    }

    /// One acquisition attempt: grant a free slot (first come, first served) or join / keep
    /// the line. `ticket` is the one a previous `Waiting` returned.
    ///
    /// # Errors
    /// [`Error::PoolNotFound`], [`Error::ContentionPersisted`], [`Error::StoreFailed`].
    pub async fn try_acquire(&self, req: &SlotRequest, ticket: Option<u64>) -> Result<Attempt> {
        self.try_acquire_with(req, ticket, &|_, _| Ok(())).await
    }

    /// [`Slots::try_acquire`], with a grant committed in one store transaction together with
    /// the writes `also` adds for it (e.g. creating the Run that holds the slot), so neither is
    /// ever stored without the other.
    ///
    /// # Errors
    /// As [`Slots::try_acquire`]; `also`'s error, and the transaction's (e.g.
    /// [`state::Error::ObjectAlreadyExists`] for a Run created twice) as
    /// [`Error::StoreFailed`]: nothing is written then.
    pub async fn try_acquire_with(
        &self,
        req: &SlotRequest,
        ticket: Option<u64>,
        also: &AlsoOnGrant<'_>,
    ) -> Result<Attempt> {
        let holder = Holder {
            owner: req.owner.clone(),
            run: req.run.clone(),
        };
        let attempted = state::retry_conflicts(MAX_CONFLICT_RETRIES, Error::is_conflict, || {
            // Decide and build the transaction now; only the commit is awaited.
            let prepared = self.pool(&req.pool).and_then(|mut p| {
                let before = p.clone();
                let d = decide::decide_acquire(&p, &holder, ticket, req.ttl, self.now_ms());
                decide::apply_acquire(&mut p, &d, &holder, ticket);
                let mut tx = self.store.transaction();
                let attempt = match d {
                    Decision::Grant(lease) => {
                        let grant = Grant::new(&p, &lease)?;
                        also(&grant, &mut tx)?;
                        Attempt::Granted(grant)
                    }
                    Decision::Wait {
                        waiter, position, ..
                    } => Attempt::Waiting {
                        ticket: waiter.enqueued_at_ms,
                        position,
                        deadline_ms: waiter.deadline_ms,
                    },
                    Decision::TimedOut(_) => Attempt::TimedOut,
                };
                let changed = p != before;
                tx.update_status(&p);
                Ok((changed, tx, attempt))
            });
            async move {
                let (changed, tx, attempt) = prepared?;
                if changed {
                    tx.commit().await?;
                }
                Ok(attempt)
            }
        })
        .await;
        contention(&req.pool, attempted)
    }

    /// Acquires a slot, waiting in line (woken by every pool change, re-checking at least
    /// every second) up to the pool's wait timeout.
    ///
    /// If this future is dropped while waiting (a client that went away), a task leaves the
    /// line for it; a process that dies leaves its entries to the next process's first
    /// reclaim pass.
    ///
    /// # Errors
    /// [`Error::WaitTimedOut`], and as [`Slots::try_acquire`].
    pub async fn acquire(&self, req: &SlotRequest) -> Result<Grant> {
        self.acquire_with(req, &|_, _| Ok(())).await
    }

    /// [`Slots::acquire`], the grant committed together with `also`'s writes (see
    /// [`Slots::try_acquire_with`]). A failed attempt leaves the line: no waiter entry of
    /// this call stays behind.
    ///
    /// # Errors
    /// As [`Slots::acquire`] and [`Slots::try_acquire_with`].
    pub async fn acquire_with(&self, req: &SlotRequest, also: &AlsoOnGrant<'_>) -> Result<Grant> {
        let started = self.now_ms();
        let mut ticket = None;
        // Leaves the line if this future is dropped while waiting.
        let mut in_line = LeaveOnDrop {
            slots: self.clone(),
            req: req.clone(),
            ticket: None,
        };
        loop {
            let seen = self.store.revision();
            let attempt = self.try_acquire_with(req, ticket, also).await;
            in_line.ticket = None;
            let attempt = match attempt {
                Ok(a) => a,
                Err(e) => {
                    if let Some(t) = ticket {
                        if let Err(w) = self.withdraw(req, t).await {
                            tracing::warn!(pool = req.pool, error = %w, "leaving the line failed");
                        }
                    }
                    return Err(e);
                }
            };
            match attempt {
                Attempt::Granted(g) => {
                    if let Some(m) = &self.metrics {
                        let waited = self.now_ms().saturating_sub(started);
                        m.observe_slot_wait(&g.pool, Duration::from_millis(waited));
                    }
                    return Ok(g);
                }
                Attempt::TimedOut => {
                    return Err(Error::WaitTimedOut {
                        pool: req.pool.clone(),
                        waited: Duration::from_millis(self.now_ms().saturating_sub(started)),
                    })
                }
                Attempt::Waiting {
                    ticket: t,
                    deadline_ms,
                    ..
                } => {
                    ticket = Some(t);
                    in_line.ticket = Some(t);
                    let left = deadline_ms.saturating_sub(self.now_ms());
                    let pause = Duration::from_millis(left.clamp(1, 1000));
                    tokio::select! {
                        _ = self.store.changed(Kind::SlotPool, seen) => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Leaves the line (a waiter that gives up); whether an entry was removed.
    ///
    /// # Errors
    /// As [`Slots::try_acquire`].
    pub async fn withdraw(&self, req: &SlotRequest, ticket: u64) -> Result<bool> {
        let holder = Holder {
            owner: req.owner.clone(),
            run: req.run.clone(),
        };
        let (_, removed) = self
            .modify(&req.pool, |p, _| {
                Ok(Some(decide::withdraw(p, &holder, ticket)))
            })
            .await?;
        Ok(removed.unwrap_or(false))
    }

    /// Renews the lease of `slot` held by `owner` for `ttl` from now.
    ///
    /// # Errors
    /// [`Error::LeaseNotHeld`] when it was released or reclaimed; as [`Slots::try_acquire`].
    pub async fn heartbeat(
        &self,
        pool: &str,
        slot: u32,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Grant> {
        let (p, lease) = self
            .modify(pool, |p, now| {
                decide::renew(p, slot, owner, ttl, now)
                    .map(Some)
                    .ok_or_else(|| Error::LeaseNotHeld {
                        pool: pool.into(),
                        slot,
                    })
            })
            .await?;
        let lease = lease.ok_or_else(|| Error::LeaseNotHeld {
            pool: pool.into(),
            slot,
        })?;
        Grant::new(&p, &lease)
    }

    /// Releases the lease of `slot` held by `owner`.
    ///
    /// # Errors
    /// [`Error::LeaseNotHeld`] when it was already released or reclaimed; as
    /// [`Slots::try_acquire`].
    pub async fn release(&self, pool: &str, slot: u32, owner: &Owner) -> Result<()> {
        self.modify(pool, |p, _| {
            decide::release(p, slot, owner)
                .map(Some)
                .ok_or_else(|| Error::LeaseNotHeld {
                    pool: pool.into(),
                    slot,
                })
        })
        .await?;
        Ok(())
    }

    /// One reclaim pass over every pool: removes leases of dead owners, expired leases,
    /// leases of runs that are gone, dead or expired waiters, and waiters an earlier process
    /// left (their requests died with it); records each in history.
    ///
    /// # Errors
    /// [`Error::StoreFailed`], [`Error::ContentionPersisted`].
    pub async fn reclaim(&self, checker: &dyn Checker) -> Result<Vec<Reclaimed>> {
        let mut out = Vec::new();
        for pool in self.store.list::<SlotPool>()?.items {
            let name = pool.metadata.name.clone();
            let store = self.store.clone();
            let run_hold = move |run: &str| match store.get_opt::<Run>(run) {
                Ok(Some(r)) if !r.status.phase.is_terminal() => RunHold::Active,
                Ok(Some(_)) | Ok(None) => RunHold::Gone,
                // Unreadable: do not take the slot from what may be an active run.
                Err(_) => RunHold::Active,
            };
            let (_, plan) = self
                .modify(&name, |p, now| {
                    let mut plan = decide::decide_reclaim(p, now, &|o| checker.check(o), &run_hold);
                    for w in decide::stale_waiters(p, self.line_since_ms) {
                        if !plan.waiters.iter().any(|(x, _)| *x == w) {
                            plan.waiters.push((w, ReclaimReason::RequestGone));
                        }
                    }
                    if plan.is_empty() {
                        return Ok(None);
                    }
                    decide::apply_reclaim(p, &plan);
                    Ok(Some(plan))
                })
                .await?;
            let Some(plan) = plan else { continue };
            for (lease, reason) in &plan.leases {
                out.push(Reclaimed {
                    pool: name.clone(),
                    slot: Some(lease.slot),
                    owner: lease.owner.clone(),
                    run: lease.run.clone(),
                    reason: *reason,
                });
            }
            for (w, reason) in &plan.waiters {
                out.push(Reclaimed {
                    pool: name.clone(),
                    slot: None,
                    owner: w.owner.clone(),
                    run: w.run.clone(),
                    reason: *reason,
                });
            }
        }
        for r in &out {
            let what = match r.slot {
                Some(s) => format!("slot {s} reclaimed"),
                None => "waiter dropped".to_string(),
            };
            let message = format!(
                "{what} from pid {} on {} ({:?})",
                r.owner.pid, r.owner.host, r.reason
            );
            tracing::info!(pool = r.pool, "{message}");
            self.store
                .append_history(
                    NewEntry::new(RECLAIMED, message)
                        .subject(ObjectRef::new(Kind::SlotPool, &r.pool))
                        .details(serde_json::to_value(r).unwrap_or_default()),
                )
                .await?;
        }
        Ok(out)
    }
}

/// The waiter entry of an [`Slots::acquire_with`] that is waiting; dropped with the wait (a
/// cancelled request), it leaves the line in a task of its own.
struct LeaveOnDrop {
    slots: Slots,
    req: SlotRequest,
    /// The entry's ticket while the wait is parked between attempts.
    ticket: Option<u64>,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let slots = self.slots.clone();
        let req = self.req.clone();
        let leaving = slots.leaving.clone();
        runtime.spawn(leaving.track_future(async move {
            if let Err(e) = slots.withdraw(&req, ticket).await {
                tracing::warn!(pool = req.pool, error = %e, "leaving the line of a cancelled wait failed");
            }
        }));
    }
}

/// How often [`ReclaimWorker`] checks owners by default: a dead owner's slot is free within
/// about this long.
pub const DEFAULT_RECLAIM_INTERVAL: Duration = Duration::from_millis(200);

/// Slot reclaim as a background worker: [`Slots::reclaim`] every `every` (liveness polling)
/// and whenever a pool changes (the store feed: a new lease or waiter is checked at once). A
/// failed pass is the worker's error, retried with the supervisor's backoff.
pub struct ReclaimWorker {
    slots: Slots,
    checker: Arc<dyn Checker>,
    every: Duration,
    seen: u64,
}

impl std::fmt::Debug for ReclaimWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReclaimWorker")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl ReclaimWorker {
    /// Reclaims `slots` whose owners `checker` finds dead, every `every` and on pool changes.
    pub fn new(slots: Slots, checker: Arc<dyn Checker>, every: Duration) -> Self {
        ReclaimWorker {
            slots,
            checker,
            every,
            seen: 0,
        }
    }
}

impl crate::runtime::workers::Worker for ReclaimWorker {
    fn name(&self) -> &'static str {
        "slot-reclaim"
    }

    fn schedule(&self) -> String {
        format!(
            "every {} and on slot pool changes",
            humantime::format_duration(self.every)
        )
    }

    async fn step(
        &mut self,
    ) -> std::result::Result<crate::runtime::workers::Next, crate::runtime::workers::Failure> {
        let seen = self.slots.store.revision();
        self.slots.reclaim(self.checker.as_ref()).await?;
        // A pass's own writes bump the revision after `seen`: wait for later changes only.
        self.seen = seen.max(self.slots.store.revision());
        Ok(crate::runtime::workers::Next::After(self.every))
    }

    async fn triggered(&mut self) -> std::result::Result<(), crate::runtime::workers::Failure> {
        self.slots.store.changed(Kind::SlotPool, self.seen).await;
        Ok(())
    }
}

/// The run's pool with the run's lease removed, or `None` when it holds none.
pub(crate) fn release_run_slot(store: &Store, run: &Run) -> state::Result<Option<SlotPool>> {
    let Some(pool_name) = run.spec.slot_pool.as_deref() else {
        return Ok(None);
    };
    let Some(mut pool) = store.get_opt::<SlotPool>(pool_name)? else {
        return Ok(None);
    };
    let before = pool.status.leases.len();
    pool.status
        .leases
        .retain(|l| l.run.as_deref() != Some(run.metadata.name.as_str()));
    if pool.status.leases.len() == before {
        return Ok(None);
    }
    decide::refresh_phase(&mut pool);
    Ok(Some(pool))
}

#[cfg(test)]
mod tests;
