//! The controller runtime: triggers, a deduplicating scheduler and a runner that reconciles each key alone.
//!
//! In the spirit of kube-runtime, one concept per module:
//! - [`scheduler`]: one pending request per key, earliest wins.
//! - [`backoff`]: per-key exponential backoff with jitter, reset on success.
//! - [`triggers`]: what makes a key due: the store's change feed, Docker events mapped to the
//!   owning resource, a periodic resync with jitter, and full relists.
//! - [`Controller`]: the wiring — the runner that never reconciles one key twice at once, with
//!   bounded concurrency, requeue timers and graceful shutdown ([`Shutdown`], [`signals`]).
//! - [`logging`]: human-readable or JSON log output for the daemon.
//! - [`workers`]: everything else the daemon does in the background (sweeps, reclaim, the
//!   nightly job, gauges, file followers) as supervised [`workers::Worker`]s with a status.
//!
//! # The reconcile contract
//! A [`Reconciler`] gets the object (`reconcile(Arc<Obj>, Arc<Ctx>) -> Result<Action>`), or
//! only its key when the object does not exist (`cleanup`), never the reason it was triggered:
//! reconcilers must be idempotent and observe before they act. Triggers are hints; the
//! periodic resync is the safety net for missed ones.

pub mod backoff;
mod controller;
pub mod logging;
pub mod scheduler;
pub mod signals;
pub mod triggers;
pub mod workers;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crd::Resource;
use serde::{Deserialize, Serialize};

pub use controller::{Controller, Handle, Stopped};
pub use signals::Shutdown;

tokio::task_local! {
    /// The latest request of the running reconcile (see [`fresh_since`]).
    static FRESH_SINCE: Ticket;
}

/// A point in the order of events of this process: every ticket is greater than every ticket
/// taken before it (a process-wide counter). Unlike [`tokio::time::Instant`]s, two tickets
/// never tie, also in paused (virtual) time where a write and a listing happen at the same
/// instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

static TICKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Ticket {
    /// A ticket greater than every ticket taken so far.
    pub fn next() -> Ticket {
        Ticket(TICKETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }
}

/// Inside a reconcile run by a [`Controller`]: the ticket of the latest request for this
/// reconcile — a store change, a Docker event or a relist when it was sent; a requeue, a
/// backoff or a rerun when it came due. An observation whose listing took a later ticket
/// reflects everything that triggered the call, so the reconciles of one resync may share one
/// listing ([`crate::stack::ObservationCache`]). `None` outside a controller (direct calls).
///
/// This is not the trigger's reason, which stays hidden: reconcilers must stay idempotent.
pub fn fresh_since() -> Option<Ticket> {
    FRESH_SINCE.try_with(|t| *t).ok()
}

/// The key the runtime schedules and locks: kind and name of a resource.
pub use state::history::ObjectRef;

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Requeue(Duration),
    AwaitChange,
    Backoff,
}

impl Action {
    /// Reconcile again after `after` (or earlier, if something triggers the key).
    pub fn requeue(after: Duration) -> Action {
        Action {
            next: Next::Requeue(after),
        }
    }

    /// Reconcile again only when something triggers the key (a change, an event, the resync).
    pub fn await_change() -> Action {
        Action {
            next: Next::AwaitChange,
        }
    }

    /// For [`Reconciler::error_policy`]: retry after the key's exponential backoff delay.
    /// Returned by a successful reconcile it means the same as [`Action::await_change`].
    pub fn backoff() -> Action {
        Action {
            next: Next::Backoff,
        }
    }

    /// The requeue delay, if this action asks for one.
    pub fn requeue_after(&self) -> Option<Duration> {
        match self.next {
            Next::Requeue(d) => Some(d),
            Next::AwaitChange | Next::Backoff => None,
        }
    }
}

/// A reconciler of one resource kind.
///
/// # Guarantees (given by the runtime)
/// - Never two calls for the same key at once; a key triggered during a call is called again
///   after it.
/// - Every call runs in a tracing span `reconcile{object=Kind/name}`.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind reconciled.
    type Object: Resource;
    /// What every call needs (swarm client, store, catalogue, ...).
    type Context: Send + Sync + 'static;
    /// A failed call.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Drives the world toward `obj`'s spec and records what it saw in its status.
    fn reconcile(
        obj: Arc<Self::Object>,
        ctx: Arc<Self::Context>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// Called for a key whose object does not exist (deleted, or named by a swarm object whose
    /// owner is gone): tear down what it owned. Does nothing by default.
    fn cleanup(
        key: ObjectRef,
        ctx: Arc<Self::Context>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send {
        async move {
            let _ = (key, ctx);
            Ok(Action::await_change())
        }
    }

    /// How a relist finds the stacks on the swarm and their owners (used only with a swarm,
    /// [`Controller::with_swarm`]). Default (`None`): [`triggers::ListSurvey`], 3 list calls
    /// of its own. A reconciler whose reconciles share one listing of every stack answers from
    /// that listing, which the reconciles of the relist then use too.
    fn survey(ctx: &Arc<Self::Context>) -> Option<Arc<dyn triggers::Survey>> {
        let _ = ctx;
        None
    }

    /// What to do after a failed call. Default: retry after the key's backoff delay.
    fn error_policy(key: &ObjectRef, error: &Self::Error, ctx: &Self::Context) -> Action {
        let _ = (key, error, ctx);
        Action::backoff()
    }
}

/// Runtime settings. Durations are humantime strings in YAML (`90s`, `2h 30m`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Most reconciles running at once (across keys), at least 1.
    pub concurrency: usize,
    /// Every key is reconciled at least this often (the safety net for missed triggers).
    #[serde(with = "crd::duration")]
    pub resync_period: Duration,
    /// Each resync wait is stretched by a random factor in `[1, 1 + resyncJitter)`, so
    /// controllers started together do not relist together.
    pub resync_jitter: f64,
    /// Backoff after the first failure of a key.
    #[serde(with = "crd::duration")]
    pub backoff_base: Duration,
    /// Longest backoff (before jitter).
    #[serde(with = "crd::duration")]
    pub backoff_max: Duration,
    /// Backoff jitter factor (see [`backoff::Policy::jitter`]).
    pub backoff_jitter: f64,
    /// First delay before reopening the Docker events stream after it ended.
    #[serde(with = "crd::duration")]
    pub events_reconnect_base: Duration,
    /// Longest delay between attempts to reopen the events stream.
    #[serde(with = "crd::duration")]
    pub events_reconnect_max: Duration,
    /// Seed for jitter draws (tests); drawn from the OS when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 4,
            resync_period: Duration::from_secs(300),
            resync_jitter: 0.1,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_jitter: 0.2,
            events_reconnect_base: Duration::from_secs(1),
            events_reconnect_max: Duration::from_secs(60),
            seed: None,
        }
    }
}

impl Config {
    /// The backoff policy of reconcile failures.
    pub fn backoff_policy(&self) -> backoff::Policy {
        backoff::Policy {
            base: self.backoff_base,
            max: self.backoff_max,
            jitter: self.backoff_jitter,
        }
    }

    /// The backoff policy of events-stream reconnects.
    pub fn reconnect_policy(&self) -> backoff::Policy {
        backoff::Policy {
            base: self.events_reconnect_base,
            max: self.events_reconnect_max,
            jitter: self.backoff_jitter,
        }
    }
}

/// What went wrong around a reconcile (the reconciler's own errors are its `Error` type).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object could not be read from the store before reconciling. Retryable (backoff).
    #[error("reading {key} from the store failed")]
    ObjectReadFailed {
        /// The key.
        key: ObjectRef,
        /// The store's error.
        #[source]
        source: state::Error,
    },
    /// The reconciler panicked. Retried with backoff; the panic is a bug to fix.
    #[error("reconciling {key} panicked: {message}")]
    ReconcilerPanicked {
        /// The key.
        key: ObjectRef,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The log subscriber could not be installed (bad filter, or one is installed already).
    /// Not retryable.
    #[error("{0}")]
    LoggingInitFailed(String),
    /// Listing objects for a relist failed. Retryable: the next trigger relists again.
    #[error("relisting {what} failed: {message}")]
    RelistFailed {
        /// What was listed (`store` or `swarm services`).
        what: &'static str,
        /// Why.
        message: String,
    },
}
