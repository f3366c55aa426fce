//! Promotion: a green run's version (or an operator's, a rollback's, the nightly refresh's) becomes a warm app's version, serialised per app, latest wins, gated by the WarmApp reconciler.
//!
//! - [`decide`] (pure): may a request promote ([`decide::plan`]), what the health gate
//!   decided ([`decide::outcome`]), where a rollback goes ([`decide::rollback_target`]).
//! - [`Promoter`]: the executor over the store. It writes `spec.version` (and the
//!   declared/promoted record in `status.promotion`), then waits for the WarmApp reconciler's
//!   verdict — Ready at the new version, or rolled back — and records it.
//!
//! # Guarantees
//! - One promotion of an app at a time: a request for an app whose promotion is under way
//!   waits; a newer request replaces a waiting older one (latest wins; the older one is
//!   recorded as superseded). Different apps promote in parallel.
//! - Every request ends in exactly one history entry with its final result (`Promoted` with
//!   details `run, from, to, source, result`, or `Rejected` for a refused one) and one count
//!   in `hearth_promotions_total{result}`; a promotion that starts also gets a `pending`
//!   entry when `spec.version` is written.
//! - A rolled-back promotion sets `spec.version` back to the version that serves, so the
//!   next green run is judged against what really runs.
//! - A green run promotes exactly what it tested (issue 16, docs/CANDIDATES.md): its snapshot
//!   goes into `spec.content` with the version; a release whose tag moved since the run
//!   started is refused, a candidate is refused unless the app has `promoteCandidates`.
//!
//! # Stopping
//! The background work of promotions (a request's write, its wait for the gate, the requests
//! queued behind it) runs in tasks the promoter tracks; [`Promoter::stop`] (the daemon's
//! `wait()` calls it) ends them cleanly and returns once none is left: a write under way
//! finishes, a wait for the gate ends where it is (the promotion stays `pending` in the store
//! and is resumed at the next start), and no queued request starts.
//!
//! # Caveats
//! The queue lives in memory: a request waiting behind another when hearth stops is lost
//! (logged; the next green run or operator asks again). A promotion already written is resumed
//! at startup ([`Promoter::resume`]): its verdict is still recorded.

pub mod decide;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crd::promotion::{PromotionAttempt, PromotionRecord, PromotionResult, PromotionSource};
use crd::warmapp::PromotePolicy;
use crd::{Content, Kind, Run, RunPhase, WarmApp};
use metrics::Metrics;
use state::history::{reason, NewEntry, ObjectRef, Query};
use state::{Clock, Store, CONFLICT_ATTEMPTS};
use tracing::{info, warn};

use crate::catalogue::Catalogue;

pub use decide::{Plan, Request};

/// Promotion errors (of a request as submitted).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No WarmApp of that name. Not retryable.
    #[error("WarmApp/{0} was not found")]
    AppNotFound(String),
    /// The request was refused by the app's policy or version order (recorded as
    /// `Rejected`). Not retryable as is.
    #[error("{0}")]
    PromotionRefused(String),
    /// The version is not published by the app's recipe. Not retryable as is.
    #[error("{field}: {message}")]
    VersionUnknown {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No promotion of the app ever became Ready, so there is nothing to roll back. Not
    /// retryable.
    #[error("WarmApp/{0} has no promotion to roll back (none became Ready)")]
    NothingToRollBack(String),
    /// The store failed. Retryable.
    #[error(transparent)]
    StoreFailed(#[from] state::Error),
    /// Another writer changed the app between the promotion's record and its spec write, each
    /// of [`state::CONFLICT_ATTEMPTS`] times. Retryable.
    #[error("WarmApp/{0} kept changing while the promotion was written")]
    Raced(String),
}

impl Error {
    /// A write to do again: a store conflict, or another writer in between.
    fn is_conflict(&self) -> bool {
        match self {
            Error::StoreFailed(e) => e.is_conflict(),
            Error::Raced(_) => true,
            _ => false,
        }
    }
}

/// What became of a submitted request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Submitted {
    /// The WarmApp.
    pub app: String,
    /// Its `spec.version` when the request came.
    pub from: String,
    /// The version asked for.
    pub to: String,
    /// `started`, `queued` (behind a promotion under way; a newer request replaces it) or
    /// `alreadyCurrent`.
    pub state: &'static str,
}

/// Per app with a promotion under way: the request waiting behind it (the newest wins) and
/// the API token name that asked for it.
type Queues = HashMap<String, Option<(Request, Option<String>)>>;

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often a promotion under way looks at its app (besides change notifications).
    pub poll: Duration,
    /// How long a promotion waits for the gate beyond twice the app's ready timeout.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll: Duration::from_millis(500),
            grace: Duration::from_secs(120),
        }
    }
}

struct Inner {
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    catalogue: Option<Arc<dyn Catalogue>>,
    config: Config,
    /// Apps with a promotion under way, and the request waiting behind it with the API token
    /// name that asked (its history entries name it, issue 19).
    queues: Mutex<Queues>,
    /// The promotions' background tasks (see [`Promoter::stop`]).
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled by [`Promoter::stop`]: waits for the gate end, queued requests do not start.
    stopping: tokio_util::sync::CancellationToken,
}

/// The promotion executor (cheap to clone; see the module docs).
#[derive(Clone)]
pub struct Promoter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Promoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promoter")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Promoter {
    /// A promoter; `catalogue` (when given) lets it refuse versions the recipe does not
    /// publish before anything is written.
    pub fn new(
        store: Store,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
        catalogue: Option<Arc<dyn Catalogue>>,
        config: Config,
    ) -> Promoter {
        Promoter {
            inner: Arc::new(Inner {
                store,
                metrics,
                clock,
                catalogue,
                config,
                queues: Mutex::new(HashMap::new()),
                tasks: tokio_util::task::TaskTracker::new(),
                stopping: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// Stops the promotions' background work and returns once none of its tasks is left: a
    /// store write under way finishes, a wait for the gate ends (the promotion stays pending
    /// in the store; [`Promoter::resume`] picks it up at the next start), a queued request does
    /// not start (it is logged). A request submitted afterwards is written but not waited for.
    pub async fn stop(&self) {
        self.inner.stopping.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let left: Vec<String> = self.queues().drain().map(|(app, _)| app).collect();
        if !left.is_empty() {
            info!(apps = ?left, "promotions stopped; written ones are resumed at the next start");
        }
    }

    /// How many of the promotions' background tasks are running.
    pub fn tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Runs `work` as one of the promoter's tracked tasks.
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(work);
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a promotion of `app` is under way or waiting.
    pub fn busy(&self, app: &str) -> bool {
        self.queues().contains_key(app)
    }

    /// Whether any promotion is under way (the nightly image prune waits for none).
    pub fn any_busy(&self) -> bool {
        !self.queues().is_empty()
    }

    /// Submits a request: checked now against the app as stored (a refusal is recorded and
    /// returned), then started, or queued behind the app's promotion under way.
    ///
    /// # Errors
    /// [`Error::AppNotFound`], [`Error::PromotionRefused`], [`Error::VersionUnknown`],
    /// [`Error::StoreFailed`].
    pub async fn submit(&self, req: Request) -> Result<Submitted, Error> {
        let app = self
            .inner
            .store
            .get_opt::<WarmApp>(&req.app)?
            .ok_or_else(|| Error::AppNotFound(req.app.clone()))?;
        self.check_published(&app, &req)?;
        let from = app.spec.version.clone();
        let submitted = |state| Submitted {
            app: req.app.clone(),
            from: from.clone(),
            to: req.to.clone(),
            state,
        };
        let busy = self.busy(&req.app);
        // Judged now for a prompt answer; judged again when it runs (the app may change).
        match decide::plan(&app, &req) {
            Plan::Refused(why) => {
                self.record_refusal(&req, &from, &why).await?;
                return Err(Error::PromotionRefused(why));
            }
            Plan::AlreadyCurrent if !busy => {
                self.record_final(
                    &req,
                    &from,
                    PromotionResult::Ready,
                    "already at that version",
                )
                .await?;
                return Ok(submitted("alreadyCurrent"));
            }
            Plan::AlreadyCurrent | Plan::Promote { .. } => {}
        }
        // Who asked (the request's token), for the entries the background work writes.
        let actor = state::history::current_actor();
        let older = {
            let mut queues = self.queues();
            match queues.get_mut(&req.app) {
                Some(waiting) => Some(waiting.replace((req.clone(), actor.clone()))),
                None => {
                    queues.insert(req.app.clone(), None);
                    None
                }
            }
        };
        match older {
            None => {
                let this = self.clone();
                let first = req.clone();
                self.spawn(async move { this.work(first, actor).await });
                Ok(submitted("started"))
            }
            Some(replaced) => {
                if let Some((old, _)) = replaced {
                    self.record_final(
                        &old,
                        &from,
                        PromotionResult::Superseded,
                        "a newer request replaced it while it waited",
                    )
                    .await?;
                }
                Ok(submitted("queued"))
            }
        }
    }

    fn check_published(&self, app: &WarmApp, req: &Request) -> Result<(), Error> {
        let Some(catalogue) = &self.inner.catalogue else {
            return Ok(());
        };
        // Exact content is served from its snapshot: a candidate's version need not be
        // published (it is gated by promoteCandidates instead).
        if req.content.is_some() {
            return Ok(());
        }
        let unknown = |message: String| Error::VersionUnknown {
            field: "to",
            message,
        };
        let recipe = catalogue
            .recipe(&app.spec.recipe)
            .map_err(|e| unknown(e.to_string()))?;
        if recipe.published(&req.to).is_none() {
            return Err(unknown(format!(
                "recipe {} does not publish version {} (published: {})",
                app.spec.recipe,
                req.to,
                recipe
                    .versions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// A green run finished: promotes its version to every WarmApp of its recipe with
    /// `promote: onGreen`. Returns what was submitted; refusals are recorded, not returned.
    ///
    /// # Errors
    /// [`Error::StoreFailed`].
    pub async fn run_succeeded(&self, run: &Run) -> Result<Vec<Submitted>, Error> {
        let green = run.status.phase == RunPhase::Succeeded
            && run.status.verdict.as_ref().is_some_and(|v| v.green);
        if !green {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // Exactly what the run tested (issue 16): its snapshot, tagged with the run.
        let content = run.spec.content.clone().map(|mut c| {
            c.run = Some(run.metadata.name.clone());
            c
        });
        // A release's tag must still point where it pointed when the run started.
        let moved = match &content {
            Some(c) if !c.is_candidate() => self.tag_moved(run, c),
            _ => None,
        };
        for app in self.inner.store.list::<WarmApp>()?.items {
            if app.spec.recipe != run.spec.recipe || app.spec.promote != PromotePolicy::OnGreen {
                continue;
            }
            let req = Request {
                app: app.metadata.name.clone(),
                to: run.spec.version.clone(),
                source: PromotionSource::GreenRun,
                run: Some(run.metadata.name.clone()),
                allow_downgrade: false,
                content: content.clone(),
            };
            let refusal = match &content {
                Some(c) if c.is_candidate() && !app.spec.promote_candidates => Some(format!(
                    "run {} tested a candidate ({}), not a published version; WarmApp/{} promotes candidates only with promoteCandidates: true",
                    run.metadata.name,
                    c.summary(),
                    app.metadata.name
                )),
                _ => moved.clone(),
            };
            if let Some(why) = refusal {
                info!(app = %app.metadata.name, run = %run.metadata.name, reason = %why, "green run not promoted");
                self.record_refusal(&req, &app.spec.version, &why).await?;
                continue;
            }
            match self.submit(req).await {
                Ok(s) => {
                    info!(app = %s.app, to = %s.to, state = s.state, run = %run.metadata.name, "green run promoted");
                    out.push(s);
                }
                Err(Error::StoreFailed(e)) => return Err(Error::StoreFailed(e)),
                Err(e) => info!(run = %run.metadata.name, error = %e, "green run not promoted"),
            }
        }
        Ok(out)
    }

    /// Why `content` (a release a run tested) may not be promoted any more: its tag now
    /// points at another commit than the one snapshotted at the run's start (or cannot be
    /// read). `None`: the tag is where it was.
    fn tag_moved(&self, run: &Run, content: &Content) -> Option<String> {
        let catalogue = self.inner.catalogue.as_ref()?;
        let tag = content.tag.as_deref().unwrap_or(&run.spec.version);
        match catalogue.source_tree(&run.spec.recipe, &run.spec.version, None) {
            Ok(now) if Some(&now.commit) == content.commit.as_ref() => None,
            Ok(now) => Some(format!(
                "tag {tag} of {} moved since run {} started: the run tested commit {}, the tag now points at {}; test the tag again",
                run.spec.recipe,
                run.metadata.name,
                content.commit.as_deref().unwrap_or("?"),
                now.commit
            )),
            Err(e) => Some(format!(
                "tag {tag} of {} cannot be checked against what run {} tested: {}",
                run.spec.recipe,
                run.metadata.name,
                crate::errors::chain(&e)
            )),
        }
    }

    /// `hearth rollback APP`: promotes the version before the app's last promotion that
    /// became Ready (from the history).
    ///
    /// # Errors
    /// [`Error::NothingToRollBack`], and as [`Promoter::submit`].
    pub async fn rollback(&self, app: &str) -> Result<Submitted, Error> {
        let entries = self.inner.store.history(
            &Query::newest(500)
                .about(ObjectRef::new(Kind::WarmApp, app))
                .reason(reason::PROMOTED),
        )?;
        if self.inner.store.get_opt::<WarmApp>(app)?.is_none() {
            return Err(Error::AppNotFound(app.to_string()));
        }
        let (back_to, _) = decide::rollback_target(&entries)
            .ok_or_else(|| Error::NothingToRollBack(app.into()))?;
        self.submit(Request {
            app: app.to_string(),
            to: back_to,
            source: PromotionSource::Rollback,
            run: None,
            allow_downgrade: true,
            content: None,
        })
        .await
    }

    /// Resumes watching every promotion the store says is pending (after a restart).
    ///
    /// # Errors
    /// [`Error::StoreFailed`].
    pub fn resume(&self) -> Result<usize, Error> {
        let mut resumed = 0;
        for app in self.inner.store.list::<WarmApp>()?.items {
            let Some(record) = &app.status.promotion else {
                continue;
            };
            if record.last.result != PromotionResult::Pending {
                continue;
            }
            let name = app.metadata.name.clone();
            {
                let mut queues = self.queues();
                if queues.contains_key(&name) {
                    continue;
                }
                queues.insert(name.clone(), None);
            }
            let this = self.clone();
            let attempt = record.last.clone();
            let declared = record.declared_version.clone();
            resumed += 1;
            info!(app = %name, to = %attempt.to, "resuming a promotion under way");
            self.spawn(async move {
                if let Err(e) = this.gate(&name, attempt, &declared).await {
                    warn!(app = %name, error = %e, "promotion failed");
                }
                this.drain(&name).await;
            });
        }
        Ok(resumed)
    }

    /// Runs `first`, then whatever waits behind it, until the app's queue is empty.
    async fn work(&self, first: Request, actor: Option<String>) {
        let app = first.app.clone();
        if let Err(e) = self.execute_for(&first, actor).await {
            warn!(app = %app, error = %e, "promotion failed");
        }
        self.drain(&app).await;
    }

    /// [`Promoter::execute`] with `actor` (the token that asked) on its history entries.
    async fn execute_for(&self, req: &Request, actor: Option<String>) -> Result<(), Error> {
        match actor {
            Some(name) => state::history::acting_as(name, self.execute(req)).await,
            None => self.execute(req).await,
        }
    }

    async fn drain(&self, app: &str) {
        loop {
            let next = {
                let mut queues = self.queues();
                if self.inner.stopping.is_cancelled() {
                    if let Some(Some((waiting, _))) = queues.remove(app) {
                        info!(app = %app, to = %waiting.to, "hearth stops: a queued promotion is dropped (ask again)");
                    }
                    return;
                }
                match queues.get_mut(app).and_then(Option::take) {
                    Some(next) => next,
                    None => {
                        queues.remove(app);
                        return;
                    }
                }
            };
            let (next, actor) = next;
            if let Err(e) = self.execute_for(&next, actor).await {
                warn!(app = %app, error = %e, "promotion failed");
            }
        }
    }

    /// One request: judge again, write, wait for the gate, record.
    async fn execute(&self, req: &Request) -> Result<(), Error> {
        let written = state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_conflict, || {
            self.write_promotion(req)
        })
        .await?;
        let Some((attempt, declared)) = written else {
            return Ok(());
        };
        let message = format!(
            "promoting {} from {} to {} ({}{}); the health gate decides",
            req.app,
            attempt.from,
            req.to,
            req.source.as_str(),
            req.run
                .as_deref()
                .map(|r| format!(" of run {r}"))
                .unwrap_or_default()
        );
        info!("{message}");
        self.inner
            .store
            .append_history(
                NewEntry::new(reason::PROMOTED, message)
                    .subject(ObjectRef::new(Kind::WarmApp, &req.app))
                    .details(decide::details(&attempt, &declared)),
            )
            .await?;
        self.gate(&req.app, attempt, &declared).await
    }

    /// Judges `req` against the app as stored and writes the promotion (record, then spec);
    /// the attempt and the declared version, or `None` when the request was settled without
    /// a promotion (app deleted, refused, already current; each recorded).
    ///
    /// # Errors
    /// A store conflict or [`Error::Raced`] (the caller reads and judges again), other store
    /// errors.
    async fn write_promotion(
        &self,
        req: &Request,
    ) -> Result<Option<(PromotionAttempt, String)>, Error> {
        let store = &self.inner.store;
        let Some(app) = store.get_opt::<WarmApp>(&req.app)? else {
            self.record_final(req, "", PromotionResult::Superseded, "the app was deleted")
                .await?;
            return Ok(None);
        };
        let (from, declared) = match decide::plan(&app, req) {
            Plan::Refused(why) => {
                self.record_refusal(req, &app.spec.version, &why).await?;
                return Ok(None);
            }
            Plan::AlreadyCurrent => {
                self.record_final(
                    req,
                    &app.spec.version,
                    PromotionResult::Ready,
                    "already at that version",
                )
                .await?;
                return Ok(None);
            }
            Plan::Promote { from, declared, .. } => (from, declared),
        };
        let attempt = PromotionAttempt {
            source: req.source,
            run: req.run.clone(),
            from,
            to: req.to.clone(),
            generation: app.metadata.generation + 1,
            at_ms: self.inner.clock.now_ms(),
            result: PromotionResult::Pending,
            content: req.content.clone(),
            from_content: app.spec.content.clone(),
        };
        // The record first, then the spec: a crash in between leaves a record that is not
        // in force (its version is not spec.version), i.e. nothing promoted.
        let mut with_record = app.clone();
        with_record.status.promotion = Some(PromotionRecord {
            declared_version: declared.clone(),
            version: req.to.clone(),
            last: attempt.clone(),
        });
        let mut promoted = store.update_status(&with_record).await?;
        promoted.spec.version = req.to.clone();
        promoted.spec.content = req.content.clone();
        let written = store.update(&promoted).await?;
        if written.metadata.generation != attempt.generation {
            return Err(Error::Raced(req.app.clone()));
        }
        Ok(Some((attempt, declared)))
    }

    /// Waits for the gate's verdict on `attempt` and records it.
    async fn gate(
        &self,
        name: &str,
        mut attempt: PromotionAttempt,
        declared: &str,
    ) -> Result<(), Error> {
        let store = &self.inner.store;
        let timeout = store
            .get_opt::<WarmApp>(name)?
            .map(|a| a.spec.health.ready_timeout())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + timeout * 2 + self.inner.config.grace;
        let result = loop {
            let revision = store.revision();
            let app = store.get_opt::<WarmApp>(name)?;
            if let Some(result) = decide::outcome(app.as_ref(), &attempt) {
                break result;
            }
            if tokio::time::Instant::now() >= deadline {
                break PromotionResult::TimedOut;
            }
            tokio::select! {
                _ = store.changed(Kind::WarmApp, revision) => {}
                () = tokio::time::sleep(self.inner.config.poll) => {}
                () = self.inner.stopping.cancelled() => {
                    info!(app = %name, to = %attempt.to, "hearth stops: the promotion stays pending and is resumed at the next start");
                    return Ok(());
                }
            }
        };
        attempt.result = result;
        // Write the verdict into the record; a rollback also sets spec.version back.
        let attempt_ref = &attempt;
        state::retry_conflicts(
            CONFLICT_ATTEMPTS,
            state::Error::is_conflict,
            || async move {
                let Some(mut app) = store.get_opt::<WarmApp>(name)? else {
                    return Ok(());
                };
                let ours = app.status.promotion.as_ref().is_some_and(|p| {
                    p.last.generation == attempt_ref.generation && p.last.to == attempt_ref.to
                });
                if !ours {
                    return Ok(());
                }
                let rolled_back =
                    result == PromotionResult::RolledBack && app.spec.version == attempt_ref.to;
                if let Some(p) = app.status.promotion.as_mut() {
                    p.last.result = result;
                    if rolled_back {
                        p.version = attempt_ref.from.clone();
                    }
                }
                let recorded = store.update_status(&app).await?;
                if rolled_back {
                    let mut back = recorded;
                    back.spec.version = attempt_ref.from.clone();
                    back.spec.content = attempt_ref.from_content.clone();
                    store.update(&back).await?;
                }
                Ok(())
            },
        )
        .await?;
        let message = match result {
            PromotionResult::Ready => format!("{name} promoted from {} to {}; ready", attempt.from, attempt.to),
            PromotionResult::RolledBack => format!(
                "promotion of {name} to {} failed the health gate; {} restored and serving, spec.version set back to it",
                attempt.to, attempt.from
            ),
            PromotionResult::Superseded => format!(
                "promotion of {name} to {} superseded: its version was changed or the app deleted",
                attempt.to
            ),
            PromotionResult::TimedOut => format!(
                "promotion of {name} to {}: no verdict of the health gate in time",
                attempt.to
            ),
            PromotionResult::Pending => format!("promotion of {name} to {} pending", attempt.to),
        };
        info!("{message}");
        store
            .append_history(
                NewEntry::new(reason::PROMOTED, message)
                    .subject(ObjectRef::new(Kind::WarmApp, name))
                    .details(decide::details(&attempt, declared)),
            )
            .await?;
        self.inner.metrics.record_promotion(result.metric_label());
        Ok(())
    }

    async fn record_refusal(&self, req: &Request, from: &str, why: &str) -> Result<(), Error> {
        self.inner
            .store
            .append_history(
                NewEntry::new(reason::REJECTED, why.to_string())
                    .subject(ObjectRef::new(Kind::WarmApp, &req.app))
                    .details(serde_json::json!({
                        "run": req.run, "from": from, "to": req.to,
                        "source": req.source, "result": "refused",
                    })),
            )
            .await?;
        self.inner.metrics.record_promotion("refused");
        Ok(())
    }

    /// Records a request that ended without a spec write.
    async fn record_final(
        &self,
        req: &Request,
        from: &str,
        result: PromotionResult,
        why: &str,
    ) -> Result<(), Error> {
        let label = if result == PromotionResult::Ready {
            "unchanged"
        } else {
            result.metric_label()
        };
        self.inner
            .store
            .append_history(
                NewEntry::new(
                    reason::PROMOTED,
                    format!("promotion of {} to {}: {why}", req.app, req.to),
                )
                .subject(ObjectRef::new(Kind::WarmApp, &req.app))
                .details(serde_json::json!({
                    "run": req.run, "from": from, "to": req.to,
                    "source": req.source, "result": label,
                })),
            )
            .await?;
        self.inner.metrics.record_promotion(label);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
