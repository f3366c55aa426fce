//! The WarmApp reconciler: keeps each warm app's stack deployed at its version, healthy, repaired, and upgraded only through a health gate.
//!
//! - [`decide`]: pure — which version to run ([`decide::target`]) and what one reconcile does
//!   ([`decide::step`]: (spec, status, observation, now) → (effect, next status, history)).
//! - [`probe`]: the optional HTTP/TCP probe, reaching task containers from the host through
//!   `docker_gwbridge` (this host has no ip_vs; see the module docs).
//! - This module: the thin executor ([`WarmAppReconciler`]) — render through the catalogue,
//!   observe with one list call per kind, decide, apply with `stack::apply`, write status,
//!   history and metrics.
//!
//! # Health gate and rollback
//! An upgrade is an in-place `stack::apply` of the new version. Every service is updated
//! start-first ([`prepare`] sets `update_config.order: start-first` when the recipe does not
//! choose, except for services with host-mode ports, which cannot run twice on one node), so
//! Swarm keeps the old task serving until the new one runs healthy. The new version is Ready
//! when every task that should run runs healthy, every such task's container carries the new
//! version's label (no old task left), and the probe passes. If that does not happen within
//! `spec.health.readyTimeout` — or Swarm rolls the update back by itself
//! (`failure_action: rollback`) — hearth applies the version that served before, marks the
//! app `RollingBack`, then `Degraded` with `Ready=True` (it serves), `Degraded=True` reason
//! `UpgradeFailed`, `lastError` saying why, and a `RolledBack` history entry. It stays at the
//! old version until the spec changes again (a new generation).

pub mod decide;
mod desired;
pub mod probe;
pub mod renders;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crd::names::{labels as keys, BaseDomain, StackName};
use crd::{Kind, Resource, WarmApp};
use metrics::Metrics;
use state::history::{reason, NewEntry, ObjectRef};
use state::{Clock, Store};
use tracing::{info, warn};

use crate::candidates::Snapshots;
use crate::catalogue::{Catalogue, RenderRequest, Rendered};
use crate::errors::chain;
use crate::runtime::triggers::{self, Survey};
use crate::runtime::{Action, Reconciler, Ticket};
use crate::stack::{self, ApplyOptions, ObservationCache, Observed, Owner, TeardownOptions};
use crate::swarm::{Labels, Swarm};

use decide::{Effect, Now, Observation, Readiness, Target};
use probe::Prober;

pub use crd::names::labels::{INSTANCE as INSTANCE_LABEL, WARM_VERSION as VERSION_LABEL};
pub use desired::{owner, prepare, probe_target, readiness};
pub use renders::{Desired, Renders};

/// Key of the daemon's instance ID (the value of [`INSTANCE_LABEL`]) in the store's named
/// values: drawn once per data directory by `hearth serve`.
pub(crate) const INSTANCE_KEY: &str = "serve.instance-id";

/// The controller name in metrics.
pub const CONTROLLER: &str = "warmapp";

/// What every WarmApp reconcile needs.
pub struct Context {
    /// The swarm.
    pub swarm: Arc<dyn Swarm>,
    /// The store (status and history writes).
    pub store: Store,
    /// Where recipes come from.
    pub catalogue: Arc<dyn Catalogue>,
    /// The optional HTTP/TCP probe.
    pub prober: Arc<dyn Prober>,
    /// Metrics (reconcile timer, ready + version info).
    pub metrics: Metrics,
    /// "Now" for deadlines (unix ms).
    pub clock: Arc<dyn Clock>,
    /// Base of derived domains (`<stack>.<base>`).
    pub base_domain: BaseDomain,
    /// Extra labels on every object of every warm-app stack: [`INSTANCE_LABEL`] (set by
    /// `serve`) and e.g. `hearth.test=1`; cleanup only tears down stacks carrying all of
    /// them, so a daemon never removes what another owns.
    pub extra_labels: Labels,
    /// How stacks are applied.
    pub apply: ApplyOptions,
    /// How a deleted app's stack is torn down.
    pub teardown: TeardownOptions,
    /// One listing of every stack shared by the reconciles of a resync (see
    /// [`stack::cache`]): a resync costs one list call per kind, not per app.
    pub observations: ObservationCache,
    /// Each app's stack per version, rendered and labelled, kept while its inputs are
    /// unchanged (see [`renders`]): a resync of unchanged apps renders nothing.
    pub renders: Renders,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("base_domain", &self.base_domain)
            .field("extra_labels", &self.extra_labels)
            .finish_non_exhaustive()
    }
}

/// A clock following tokio's (possibly paused) time from a wall-clock start, so deadlines work
/// the same in virtual-time tests and in production.
#[derive(Debug)]
pub struct TokioClock {
    start_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts now (must be called inside a tokio runtime).
    pub fn new() -> Self {
        Self {
            start_ms: state::SystemClock.now_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Starts now at `start_ms` (virtual-time tests start at a chosen date).
    pub fn starting_at(start_ms: u64) -> Self {
        Self {
            start_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// WarmApp reconciler errors. Every variant is retried with the key's backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app's name does not make a stack name (validation should have caught it). Not
    /// retryable until the object changes.
    #[error("warm app {name}: no stack name")]
    NameRejected {
        /// The app.
        name: String,
        /// Why.
        #[source]
        source: crd::names::Error,
    },
    /// Observing or applying the stack failed. Retryable when the source is.
    #[error("warm app {name}: stack operation failed")]
    StackFailed {
        /// The app.
        name: String,
        /// The stack error.
        #[source]
        source: stack::Error,
    },
    /// Writing status or history failed. Retryable (a conflict means someone wrote first:
    /// the next reconcile reads again).
    #[error("warm app {name}: store write failed")]
    StoreFailed {
        /// The app.
        name: String,
        /// The store error.
        #[source]
        source: state::Error,
    },
    /// A deleted app's stack was not torn down within [`CLEANUP_BUDGET`] (plus 2 s for a call
    /// in flight): cut off so it does not hold a worker. Retryable: the next attempt resumes
    /// from what is left.
    #[error("warm app {name}: teardown of {stack} not finished within {after:?}")]
    TeardownUnfinished {
        /// The app.
        name: String,
        /// The stack.
        stack: String,
        /// How long it ran.
        after: Duration,
    },
    /// A deleted app's stack could not be torn down completely. Retryable.
    #[error("warm app {name}: teardown of {stack} failed")]
    TeardownFailed {
        /// The app.
        name: String,
        /// The stack.
        stack: String,
        /// The teardown error (names the residual objects).
        #[source]
        source: stack::Error,
    },
}

/// The WarmApp reconciler (see the module docs).
#[derive(Debug)]
pub struct WarmAppReconciler;

impl Reconciler for WarmAppReconciler {
    type Object = WarmApp;
    type Context = Context;
    type Error = Error;

    async fn reconcile(app: Arc<WarmApp>, ctx: Arc<Context>) -> Result<Action, Error> {
        let timer = ctx.metrics.reconcile_timer(CONTROLLER);
        let result = reconcile(&app, &ctx).await;
        timer.finish(result.is_ok());
        result
    }

    async fn cleanup(key: ObjectRef, ctx: Arc<Context>) -> Result<Action, Error> {
        let timer = ctx.metrics.reconcile_timer(CONTROLLER);
        let result = cleanup(&key.name, &ctx).await;
        timer.finish(result.is_ok());
        result
    }

    fn survey(ctx: &Arc<Context>) -> Option<Arc<dyn Survey>> {
        Some(Arc::new(SharedSurvey(Arc::clone(ctx))))
    }
}

/// A relist's survey from the listing of every stack the reconciles share
/// ([`ObservationCache::snapshot`]): a resync lists each kind once (7 calls), not the relist's
/// services, networks and volumes first and every kind again for the reconciles (10).
///
/// That listing holds the objects with a stack namespace label, which every object hearth
/// deploys carries ([`stack::render`]); among them the owners are found by the same rule as
/// [`triggers::ListSurvey`]'s ([`triggers::stack_owners`]).
struct SharedSurvey(Arc<Context>);

impl Survey for SharedSurvey {
    fn owners(
        &self,
        since: Ticket,
    ) -> futures::future::BoxFuture<'_, Result<Vec<ObjectRef>, triggers::SurveyError>> {
        Box::pin(async move {
            let ctx = &self.0;
            let stacks = ctx.observations.snapshot(ctx.swarm.as_ref(), since).await?;
            // The reconciles waiting for this listing can go on now; the one woken first sits
            // in this worker's next-task slot, which no other worker takes, until this task
            // yields: finding the owners of 10,000 stacks held it back ~50 ms (issue 14).
            tokio::task::yield_now().await;
            let objects = || stacks.values();
            Ok(triggers::stack_owners(
                objects().flat_map(|o| &o.services),
                objects().flat_map(|o| &o.networks),
                objects().flat_map(|o| &o.volumes),
            ))
        })
    }
}

/// The app's stack at `version`, rendered and labelled for `owner`: the one remembered from an
/// earlier reconcile while the catalogue says the render's inputs (recipe files or commit,
/// version, stack, domain, env) are unchanged, a fresh render otherwise.
fn desired(
    ctx: &Context,
    app: &WarmApp,
    stack: &StackName,
    owner: &Owner,
    version: &str,
    since: Ticket,
) -> Result<Arc<Desired>, String> {
    let domain = app.domain(&ctx.base_domain).map_err(|e| e.to_string())?;
    let request = RenderRequest {
        recipe: &app.spec.recipe,
        version,
        stack: stack.as_str(),
        domain: &domain,
        env: &app.spec.env,
    };
    let name = app.name();
    // Promoted content (issue 16): exactly the snapshot a green run tested, at its version.
    if let Some(content) = app
        .spec
        .content
        .as_ref()
        .filter(|_| version == app.spec.version)
    {
        let digest = Snapshots::render_digest(content, &request);
        if let Some(kept) = ctx
            .renders
            .get(name, stack.as_str(), version, owner, &digest)
        {
            return Ok(kept);
        }
        let snapshots = Snapshots::new(ctx.store.clone(), ctx.catalogue.snapshot_dir());
        let rendered = snapshots.render(content, &request).map_err(|e| chain(&e))?;
        return remember(ctx, name, stack, owner, version, rendered);
    }
    if let Some(kept) = ctx
        .catalogue
        .inputs_digest(&request, since)
        .and_then(|digest| {
            ctx.renders
                .get(name, stack.as_str(), version, owner, &digest)
        })
    {
        return Ok(kept);
    }
    let rendered = ctx.catalogue.render(&request).map_err(|e| chain(&e))?;
    remember(ctx, name, stack, owner, version, rendered)
}

/// A fresh render of the app's stack at `version`, labelled for `owner` and remembered (by its
/// digest) for the next reconcile of app `name`.
fn remember(
    ctx: &Context,
    name: &str,
    stack: &StackName,
    owner: &Owner,
    version: &str,
    rendered: Rendered,
) -> Result<Arc<Desired>, String> {
    let labelled =
        stack::render(&prepare(rendered.stack, version), owner).map_err(|e| e.to_string())?;
    let fresh = Arc::new(Desired {
        rendered: labelled,
        timeout: rendered.timeout,
    });
    ctx.renders.put(
        name,
        stack.as_str(),
        version,
        owner,
        rendered.digest,
        Arc::clone(&fresh),
    );
    Ok(fresh)
}

/// The target's stack as observed: what reconcile decided from, and acts on.
struct Seen {
    observed: Arc<Observed>,
    plan: stack::Plan,
}

/// One reconcile: the target's stack (rendered only when its inputs changed), one observation
/// (shared by a resync's reconciles), one plan, decide, act on that plan, record.
async fn reconcile(app: &WarmApp, ctx: &Context) -> Result<Action, Error> {
    let name = app.name().to_string();
    let stack = app.stack_name().map_err(|source| Error::NameRejected {
        name: name.clone(),
        source,
    })?;
    let owner = owner(&name, &stack, &ctx.extra_labels);
    let target = decide::target(app);
    let version = target.version().to_string();
    let stack_failed = |source| Error::StackFailed {
        name: name.clone(),
        source,
    };
    let since = fresh_since();

    // Observe against the target.
    let mut recipe_timeout = None;
    let mut seen = None;
    let observation = match desired(ctx, app, &stack, &owner, &version, since) {
        Err(why) => Observation::RenderFailed(why),
        Ok(desired) => {
            recipe_timeout = desired.timeout;
            let observed = ctx
                .observations
                .observe(ctx.swarm.as_ref(), stack.as_str(), since)
                .await
                .map_err(stack_failed)?;
            match stack::plan_rendered(&desired.rendered, &owner, &observed) {
                Err(e) => Observation::RenderFailed(e.to_string()),
                Ok(plan) => {
                    let writes_needed = plan.actions.len();
                    let mut ready = if writes_needed == 0 {
                        readiness(&observed, &version)
                    } else {
                        Readiness::NotReady("stack differs from the desired spec".into())
                    };
                    if ready == Readiness::Ready {
                        if let Some(target) = probe_target(app, &desired.rendered, &observed) {
                            let outcome = match target {
                                Ok(t) => ctx.prober.probe(&t).await,
                                Err(e) => Err(e),
                            };
                            if let Err(why) = outcome {
                                ready = Readiness::NotReady(format!("probe failed: {why}"));
                            }
                        }
                    }
                    // During an upgrade: has the swarm rolled back to the serving version?
                    let at_serving_version = match (&target, &app.status.observed_version) {
                        (Target::Spec(v), Some(serving))
                            if serving != v
                                && writes_needed > 0
                                && app.status.phase == crd::WarmAppPhase::Upgrading =>
                        {
                            desired_plan(ctx, app, &stack, &owner, serving, since, &observed)
                                .is_ok_and(|p| p.is_empty())
                        }
                        _ => false,
                    };
                    seen = Some(Seen { observed, plan });
                    Observation::Seen {
                        writes_needed,
                        readiness: ready,
                        at_serving_version,
                    }
                }
            }
        }
    };

    let now = Now {
        ms: ctx.clock.now_ms(),
    };
    // The recipe's own convergence timeout bounds the health deadline unless the app sets
    // readyTimeout itself.
    let decision = match recipe_timeout {
        Some(t) if app.spec.health.ready_timeout.is_none() => {
            let mut bounded = app.clone();
            bounded.spec.health.ready_timeout = Some(t);
            decide::step(&bounded, &target, &observation, now)
        }
        _ => decide::step(app, &target, &observation, now),
    };
    let mut status = decision.status.clone();
    status.stack_name = Some(stack.as_str().to_string());
    status.domain = app.domain(&ctx.base_domain).ok();

    // Act: the plan made above (or, to go back to another version, that version's plan
    // against the same observation).
    let mut apply_error = None;
    if let (Effect::Apply(v), Some(seen)) = (&decision.effect, &seen) {
        let plan = if *v == version {
            Ok(seen.plan.clone())
        } else {
            desired_plan(ctx, app, &stack, &owner, v, since, &seen.observed)
        };
        match plan {
            Ok(plan) => {
                let applied =
                    stack::execute_observed(ctx.swarm.as_ref(), &plan, &seen.observed, &ctx.apply)
                        .await;
                // Also after a failure: some writes may have happened.
                ctx.observations.wrote(stack.as_str());
                match applied {
                    Ok(report) => {
                        if !report.is_noop() {
                            info!(stack = %stack, version = %v, writes = report.done.len(), "applied");
                        }
                    }
                    Err(e) => {
                        status.last_error = Some(format!("applying {v} failed: {}", chain(&e)));
                        apply_error = Some(e);
                    }
                }
            }
            Err(why) => {
                status.last_error = Some(format!("cannot render {v}: {why}"));
            }
        }
    }

    // Record.
    if status != app.status {
        let mut updated = app.clone();
        updated.status = status.clone();
        if let Err(source) = ctx.store.update_status(&updated).await {
            if source.is_conflict() || source.is_not_found() {
                // Someone wrote first (a spec change); the feed triggers a fresh reconcile.
                warn!(error = %source, "status write lost a race; reconciling again");
                return Ok(Action::requeue(decide::PROGRESS_POLL));
            }
            return Err(Error::StoreFailed { name, source });
        }
        if status.phase != app.status.phase {
            info!(from = ?app.status.phase, to = ?status.phase, version = ?status.observed_version, "phase changed");
        }
    }
    if let Some(note) = &decision.note {
        let entry = NewEntry::new(note.reason, note.message.clone())
            .subject(ObjectRef::new(Kind::WarmApp, &name))
            .details(serde_json::json!({
                "stack": stack.as_str(),
                "specVersion": app.spec.version,
                "observedVersion": status.observed_version,
                "phase": status.phase,
            }));
        ctx.store
            .append_history(entry)
            .await
            .map_err(|source| Error::StoreFailed {
                name: name.clone(),
                source,
            })?;
        info!(reason = note.reason, "{}", note.message);
    }
    let ready = crd::condition::find_condition(&status.conditions, crd::condition::types::READY)
        .is_some_and(|c| c.status == crd::ConditionStatus::True);
    ctx.metrics
        .set_warm_app(&name, ready, status.observed_version.as_deref());

    if let Some(e) = apply_error {
        return Err(stack_failed(e));
    }
    Ok(match decision.requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// The plan that takes the observed stack to `version` (a version other than the target's:
/// the one that served before an upgrade).
fn desired_plan(
    ctx: &Context,
    app: &WarmApp,
    stack: &StackName,
    owner: &Owner,
    version: &str,
    since: Ticket,
    observed: &Observed,
) -> Result<stack::Plan, String> {
    let desired = desired(ctx, app, stack, owner, version, since)?;
    stack::plan_rendered(&desired.rendered, owner, observed).map_err(|e| e.to_string())
}

/// Longest one cleanup holds a reconcile worker. A graceful teardown that does not finish
/// within it (a Docker call that never answers, containers slow to stop) is cut off, recorded
/// as unfinished (`TeardownFailed` in the history) and retried with the runtime's backoff, the
/// worker free in between: deleted apps whose teardowns hang no longer hold every worker
/// while the other apps wait (issue 14; `faults.rs` needed 16 workers for it before).
pub const CLEANUP_BUDGET: Duration = Duration::from_secs(20);

/// A deleted app: tear its stack down (either role's name), if this daemon owns it.
async fn cleanup(name: &str, ctx: &Context) -> Result<Action, Error> {
    for provider in [false, true] {
        let Ok(stack) = crd::names::warm_stack(name, provider) else {
            continue;
        };
        let observed = ctx
            .observations
            .observe(ctx.swarm.as_ref(), stack.as_str(), fresh_since())
            .await
            .map_err(|source| Error::StackFailed {
                name: name.to_string(),
                source,
            })?;
        if !owns(&observed, name, &ctx.extra_labels) {
            continue;
        }
        info!(stack = %stack, "warm app deleted; tearing its stack down gracefully");
        let subject = ObjectRef::new(Kind::WarmApp, name);
        let budget = ctx.teardown.deadline.min(CLEANUP_BUDGET);
        let options = TeardownOptions {
            deadline: budget,
            ..ctx.teardown.clone()
        };
        // The teardown's own deadline ends its waits and retries; the timeout also ends a
        // Docker call that does not answer.
        let cut_off = budget + Duration::from_secs(2);
        let torn = tokio::time::timeout(
            cut_off,
            stack::teardown(ctx.swarm.as_ref(), stack.as_str(), &options),
        )
        .await;
        ctx.observations.wrote(stack.as_str());
        let Ok(torn) = torn else {
            let message = format!(
                "teardown of {stack} not finished within {}s (a Docker call did not answer); \
                 cut off to free the worker, retried with backoff",
                cut_off.as_secs()
            );
            warn!(stack = %stack, "{message}");
            if let Err(e) = ctx
                .store
                .append_history(NewEntry::new(reason::TEARDOWN_FAILED, message).subject(subject))
                .await
            {
                warn!(error = %e, "recording the unfinished teardown failed");
            }
            return Err(Error::TeardownUnfinished {
                name: name.to_string(),
                stack: stack.as_str().to_string(),
                after: cut_off,
            });
        };
        match torn {
            Ok(report) => {
                let message = format!(
                    "stack {stack} torn down: {} object(s) removed, verified empty",
                    report.removed.len()
                );
                info!("{message}");
                ctx.store
                    .append_history(NewEntry::new(reason::TORN_DOWN, message).subject(subject))
                    .await
                    .map_err(|source| Error::StoreFailed {
                        name: name.to_string(),
                        source,
                    })?;
            }
            Err(source) => {
                let message = format!("teardown of {stack} failed: {}", chain(&source));
                // The error below carries the failure; a lost history write must not hide it.
                if let Err(e) = ctx
                    .store
                    .append_history(
                        NewEntry::new(reason::TEARDOWN_FAILED, message).subject(subject),
                    )
                    .await
                {
                    warn!(error = %e, "recording the failed teardown failed");
                }
                return Err(Error::TeardownFailed {
                    name: name.to_string(),
                    stack: stack.as_str().to_string(),
                    source,
                });
            }
        }
    }
    ctx.renders.forget(name);
    ctx.metrics.remove_warm_app(name);
    Ok(Action::await_change())
}

/// Whether a service or network of `observed` belongs to warm app `name` of this daemon
/// (carries its kind, name and every extra label).
fn owns(observed: &Observed, name: &str, extra: &Labels) -> bool {
    let mine = |labels: &Labels| {
        labels.get(keys::KIND).map(String::as_str) == Some(Kind::WarmApp.as_str())
            && labels.get(keys::NAME).map(String::as_str) == Some(name)
            && extra.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    observed.services.iter().any(|s| mine(&s.meta.labels))
        || observed.networks.iter().any(|n| mine(&n.labels))
}

/// The observation a reconcile needs: no older than what triggered it (now, when called
/// outside a controller).
fn fresh_since() -> Ticket {
    crate::runtime::fresh_since().unwrap_or_else(Ticket::next)
}
