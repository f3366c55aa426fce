//! The nightly sweep: on a cron schedule (time zone, jitter) — orphan sweep, warm-app refresh, store maintenance — each window run exactly once, across restarts.
//!
//! - [`schedule`] (pure): next window, missed-window catch-up, deterministic jitter.
//! - [`Nightly`], run on the schedule by [`NightlyWorker`]. It persists the last completed window in the store
//!   ([`LAST_WINDOW_KEY`]), so a restart neither repeats nor skips a night, and a window
//!   missed while hearth was down runs once at startup (only the latest one). A manual run
//!   (`hearth sweep --now`) completes no window.
//! - [`Job`]: what a run does; [`Work`] is the daemon's job (orphan sweep; refresh of every
//!   warm app — a reconcile of each, which repairs drift, a forced redeploy of unhealthy
//!   ones ([`redeploy`]), and for `refresh: latest` a promotion to the newest catalogue
//!   release through the same health gate; pruning of
//!   dangling images no service or container uses, skipped while a deploy is in progress
//!   ([`prune`]); store maintenance and size report).
//!
//! Each run appends one `Nightly` history entry with what every step did, and a successful
//! one sets `hearth_nightly_last_success_timestamp_seconds` and
//! `hearth_nightly_last_duration_seconds`.

pub mod prune;
pub mod redeploy;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use crd::promotion::PromotionSource;
use crd::warmapp::RefreshPolicy;
use crd::{Kind, WarmApp};
use futures::future::BoxFuture;
use metrics::Metrics;
use serde::{Deserialize, Serialize};
use state::history::{NewEntry, ObjectRef};
use state::{Clock, Store};
use tracing::{info, warn};

use crate::catalogue::Catalogue;
use crate::promote::{self, Promoter, Request};
use crate::runtime::workers;
use crate::swarm::{LabelFilter, Swarm};
use crate::sweeper::Sweeper;

pub use schedule::{next_action, Next, Schedule};

/// Store key of the last completed window.
pub const LAST_WINDOW_KEY: &str = "nightly.last-window";

/// History reason of a nightly run.
pub const NIGHTLY: &str = "Nightly";

/// History reason of a warm app the nightly redeployed because it was unhealthy.
pub const REDEPLOYED: &str = "Redeployed";

/// Nightly errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the last window failed. Retryable.
    #[error("nightly bookkeeping in the store failed")]
    StoreFailed(#[from] state::Error),
}

/// The persisted last completed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastWindow {
    /// The window (nominal cron time, unix ms).
    pub window_ms: u64,
    /// When its run finished (unix ms); 0 for the baseline written on a fresh store.
    pub finished_ms: u64,
    /// Whether every step succeeded.
    pub ok: bool,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// `sweep`, `refresh`, `store`, ...
    pub name: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// One line.
    pub summary: String,
    /// What it did, structured.
    pub details: serde_json::Value,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The window it completes; `None` for a manual run.
    pub window_ms: Option<u64>,
    /// Whether it caught up a window missed while hearth was down.
    pub missed: bool,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// Whether every step succeeded.
    pub ok: bool,
    /// How long it took (ms).
    pub took_ms: u64,
}

/// What a nightly run does.
pub trait Job: Send + Sync {
    /// Runs every step; a failed step is reported, never fatal to the others.
    fn run(&self) -> BoxFuture<'_, Vec<Step>>;
}

/// The nightly loop and manual trigger.
pub struct Nightly {
    store: Store,
    schedule: Option<Schedule>,
    clock: Arc<dyn Clock>,
    job: Arc<dyn Job>,
    metrics: Metrics,
    /// One run at a time (scheduled or manual).
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Nightly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nightly")
            .field("schedule", &self.schedule.as_ref().map(Schedule::expr))
            .finish_non_exhaustive()
    }
}

impl Nightly {
    /// A nightly runner (`schedule: None`: manual runs only); `clock` must follow tokio's
    /// clock (e.g. [`crate::warmapp::TokioClock`]) so virtual-time tests and production agree.
    pub fn new(
        store: Store,
        schedule: Option<Schedule>,
        clock: Arc<dyn Clock>,
        job: Arc<dyn Job>,
        metrics: Metrics,
    ) -> Nightly {
        Nightly {
            store,
            schedule,
            clock,
            job,
            metrics,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The last completed window, as persisted.
    ///
    /// # Errors
    /// [`Error::StoreFailed`].
    pub fn last_window(&self) -> Result<Option<LastWindow>, Error> {
        Ok(self.store.get_value::<LastWindow>(LAST_WINDOW_KEY)?)
    }

    /// Runs the job now. With `window`, the run completes that window (persisted); without,
    /// it is a manual run that completes none.
    ///
    /// # Errors
    /// [`Error::StoreFailed`] when the window or the history entry cannot be written (the
    /// job's own failures are in the report).
    pub async fn run_once(&self, window: Option<u64>, missed: bool) -> Result<Report, Error> {
        let _one = self.running.lock().await;
        let started = tokio::time::Instant::now();
        info!(?window, missed, "nightly run starting");
        let steps = self.job.run().await;
        let took = started.elapsed();
        let ok = steps.iter().all(|s| s.ok);
        let report = Report {
            window_ms: window,
            missed,
            steps,
            ok,
            took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        };
        let finished_ms = self.clock.now_ms();
        if let Some(window_ms) = window {
            self.store
                .put_value(
                    LAST_WINDOW_KEY,
                    &LastWindow {
                        window_ms,
                        finished_ms,
                        ok,
                    },
                )
                .await?;
        }
        let summary: Vec<String> = report
            .steps
            .iter()
            .map(|s| format!("{}: {}", s.name, s.summary))
            .collect();
        let kind = match (window, missed) {
            (None, _) => "manual nightly run",
            (Some(_), true) => "nightly run (catching up a missed window)",
            (Some(_), false) => "nightly run",
        };
        self.store
            .append_history(
                NewEntry::new(
                    NIGHTLY,
                    format!(
                        "{kind} {} in {}: {}",
                        if ok { "done" } else { "done with failures" },
                        humantime::format_duration(Duration::from_millis(report.took_ms)),
                        summary.join("; ")
                    ),
                )
                .details(serde_json::to_value(&report).unwrap_or_default()),
            )
            .await?;
        if ok {
            #[allow(clippy::cast_precision_loss)]
            let finished_s = finished_ms as f64 / 1000.0;
            self.metrics.record_nightly(finished_s, took);
        }
        info!(ok, took = ?took, "nightly run finished");
        Ok(report)
    }

    /// One decision on `schedule`: runs the due window (then the next step decides again at
    /// once), or says how long until the next one.
    async fn step(&self, schedule: &Schedule) -> Result<workers::Next, Error> {
        let now = self.clock.now_ms();
        let last = match self.last_window()? {
            Some(l) => l.window_ms,
            None => {
                // A fresh store: the baseline is the latest window before now, so a restart
                // after the next window (even before it ran) catches it up instead of
                // skipping it.
                let baseline = schedule.previous_window(now).unwrap_or(0);
                self.store
                    .put_value(
                        LAST_WINDOW_KEY,
                        &LastWindow {
                            window_ms: baseline,
                            finished_ms: 0,
                            ok: true,
                        },
                    )
                    .await?;
                baseline
            }
        };
        match next_action(schedule, Some(last), now) {
            Next::Run { window, missed } => {
                self.run_once(Some(window), missed).await?;
                Ok(workers::Next::After(Duration::ZERO))
            }
            Next::Wait { window, at_ms } => {
                let wait = Duration::from_millis(at_ms.saturating_sub(now));
                info!(window, in_ = ?wait, "next nightly run");
                Ok(workers::Next::After(wait))
            }
            Next::Never => {
                warn!(
                    schedule = schedule.expr(),
                    "the nightly schedule matches no future time"
                );
                Ok(workers::Next::Done)
            }
        }
    }
}

/// The nightly schedule as a background worker (see the module docs). A failed step (the
/// store bookkeeping) is retried with the supervisor's backoff.
#[derive(Debug)]
pub struct NightlyWorker {
    nightly: Arc<Nightly>,
    schedule: Schedule,
}

impl NightlyWorker {
    /// The worker of `nightly`, or `None` when it has no schedule (manual runs only).
    pub fn new(nightly: Arc<Nightly>) -> Option<Self> {
        let schedule = nightly.schedule.clone()?;
        Some(NightlyWorker { nightly, schedule })
    }
}

impl workers::Worker for NightlyWorker {
    fn name(&self) -> &'static str {
        "nightly"
    }

    fn schedule(&self) -> String {
        format!("cron {} ({})", self.schedule.expr(), self.schedule.tz())
    }

    async fn step(&mut self) -> Result<workers::Next, workers::Failure> {
        Ok(self.nightly.step(&self.schedule).await?)
    }

    /// A run under way at shutdown may finish and record its window; cut off, the window
    /// is not recorded and runs again at the next start (catch-up).
    fn grace(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The daemon's nightly job.
pub struct Work {
    /// The store (apps, maintenance).
    pub store: Store,
    /// The orphan sweeper.
    pub sweeper: Sweeper,
    /// Where the newest versions come from.
    pub catalogue: Arc<dyn Catalogue>,
    /// Fetches the declared git recipes first, so `refresh: latest` sees new tags.
    pub fetcher: Option<Arc<crate::recipes::Fetcher>>,
    /// Promotions (refresh: latest goes through the same health gate).
    pub promoter: Promoter,
    /// The WarmApp controller's handle: every app is reconciled (drift repaired).
    pub handle: Option<crate::runtime::Handle>,
    /// Store size gauge, image prune counters.
    pub metrics: Metrics,
    /// The swarm (image pruning).
    pub swarm: Arc<dyn Swarm>,
    /// Only dangling images whose labels match are pruned (`--nightly-prune-label`); empty:
    /// every dangling image no service or container uses.
    pub prune_labels: LabelFilter,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work").finish_non_exhaustive()
    }
}

fn step(name: &str, ok: bool, summary: String, details: serde_json::Value) -> Step {
    Step {
        name: name.into(),
        ok,
        summary,
        details,
    }
}

impl Work {
    async fn sweep(&self) -> Step {
        match self.sweeper.sweep().await {
            Ok(report) => {
                let details = serde_json::to_value(&report).unwrap_or_default();
                step("sweep", true, "orphan sweep done".into(), details)
            }
            Err(e) => step(
                "sweep",
                false,
                format!("orphan sweep failed: {e}"),
                serde_json::Value::Null,
            ),
        }
    }

    /// Fetches every declared git recipe; a failed fetch fails the step (the last good
    /// content stays in force for the refresh that follows).
    async fn fetch(&self) -> Step {
        let Some(fetcher) = &self.fetcher else {
            return step(
                "fetch",
                true,
                "no git recipes (no fetcher)".into(),
                serde_json::Value::Null,
            );
        };
        let outcomes = fetcher.fetch_all().await;
        let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
        step(
            "fetch",
            failed == 0,
            format!(
                "{} git recipe(s) fetched, {failed} failed (their last good content stays in force)",
                outcomes.len() - failed
            ),
            serde_json::to_value(&outcomes).unwrap_or_default(),
        )
    }

    async fn refresh(&self) -> Step {
        let apps = match self.store.list::<WarmApp>() {
            Ok(l) => l.items,
            Err(e) => {
                return step(
                    "refresh",
                    false,
                    format!("listing warm apps failed: {e}"),
                    serde_json::Value::Null,
                )
            }
        };
        let mut reconciled = Vec::new();
        let mut redeployed = Vec::new();
        let mut advanced = Vec::new();
        let mut current = Vec::new();
        let mut problems = Vec::new();
        for app in &apps {
            let name = app.metadata.name.clone();
            if let Some(why) = redeploy::unhealthy(app) {
                match self.redeploy(app, &why).await {
                    Ok(()) => redeployed.push(name.clone()),
                    Err(e) => problems.push(format!("{name}: redeploy failed: {e}")),
                }
            }
            if let Some(h) = &self.handle {
                h.trigger(ObjectRef::new(Kind::WarmApp, &name));
                reconciled.push(name.clone());
            }
            if app.spec.refresh != RefreshPolicy::Latest {
                continue;
            }
            let newest = match self.catalogue.newest(&app.spec.recipe, false) {
                Ok(v) => v.to_string(),
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            match self
                .promoter
                .submit(Request {
                    app: name.clone(),
                    to: newest.clone(),
                    source: PromotionSource::Refresh,
                    run: None,
                    allow_downgrade: false,
                    content: None,
                })
                .await
            {
                Ok(s) if s.state == "alreadyCurrent" => current.push(name),
                Ok(_) => advanced.push(format!("{name} -> {newest}")),
                Err(promote::Error::StoreFailed(e)) => problems.push(format!("{name}: {e}")),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        step(
            "refresh",
            problems.is_empty(),
            format!(
                "{} app(s) reconciled, {} unhealthy redeployed, {} advanced to the newest release, \
                 {} already current{}",
                reconciled.len(),
                redeployed.len(),
                advanced.len(),
                current.len(),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(", {} problem(s)", problems.len())
                }
            ),
            serde_json::json!({
                "reconciled": reconciled, "redeployed": redeployed, "advanced": advanced,
                "current": current, "problems": problems,
            }),
        )
    }

    /// Forces a redeploy of an unhealthy app's services and records it in the history.
    async fn redeploy(&self, app: &WarmApp, why: &str) -> Result<(), String> {
        let name = &app.metadata.name;
        let Some(namespace) = app.status.stack_name.as_deref() else {
            return Err("no stack deployed yet".into());
        };
        let result = redeploy::redeploy(self.swarm.as_ref(), namespace).await;
        let (message, details) = match &result {
            Ok(services) => (
                format!(
                    "nightly refresh redeployed unhealthy warm app {name} ({why}): {} service(s) \
                     force-updated; the health gate decides when it is Ready again",
                    services.len()
                ),
                serde_json::json!({ "why": why, "services": services }),
            ),
            Err(e) => (
                format!("nightly refresh could not redeploy unhealthy warm app {name}: {e}"),
                serde_json::json!({ "why": why, "error": e }),
            ),
        };
        info!(app = %name, %why, ok = result.is_ok(), "nightly redeploy of an unhealthy warm app");
        self.store
            .append_history(
                NewEntry::new(REDEPLOYED, message)
                    .subject(ObjectRef::new(Kind::WarmApp, name))
                    .details(details),
            )
            .await
            .map_err(|e| e.to_string())?;
        result.map(|_| ())
    }

    /// Why a deploy is in progress right now, if one is (see [`prune::busy_reason`]).
    fn busy(&self) -> Option<String> {
        let apps = match self.store.list::<WarmApp>() {
            Ok(l) => l.items,
            Err(e) => return Some(format!("cannot read warm apps: {e}")),
        };
        let runs = match self.store.list::<crd::Run>() {
            Ok(l) => l.items,
            Err(e) => return Some(format!("cannot read runs: {e}")),
        };
        prune::busy_reason(self.promoter.any_busy(), &apps, &runs)
    }

    async fn prune_images(&self) -> Step {
        match prune::prune(self.swarm.as_ref(), &self.prune_labels, || self.busy()).await {
            Ok(Ok(r)) => {
                self.metrics
                    .record_image_prune(r.pruned.len() as u64, r.bytes_reclaimed);
                let ok = r.failed.is_empty();
                step(
                    "images",
                    ok,
                    format!(
                        "{} dangling image(s) pruned, {} bytes reclaimed, {} in use kept{}",
                        r.pruned.len(),
                        r.bytes_reclaimed,
                        r.in_use.len(),
                        if ok {
                            String::new()
                        } else {
                            format!(", {} removal(s) failed", r.failed.len())
                        }
                    ),
                    serde_json::to_value(&r).unwrap_or_default(),
                )
            }
            Ok(Err(reason)) => {
                self.metrics.record_image_prune_skipped();
                warn!(%reason, "image pruning skipped: a deploy is in progress");
                step(
                    "images",
                    true,
                    format!("image pruning skipped: {reason}"),
                    serde_json::json!({ "skipped": reason }),
                )
            }
            Err(e) => step(
                "images",
                false,
                format!("image pruning failed: {e}"),
                serde_json::Value::Null,
            ),
        }
    }

    /// Objects per kind in the store (`kind: error` when one cannot be read).
    fn counts(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        fn count<R: crd::Resource>(store: &Store) -> Result<usize, String> {
            store
                .list::<R>()
                .map(|l| l.items.len())
                .map_err(|e| e.to_string())
        }
        let mut out = serde_json::Map::new();
        for kind in Kind::ALL {
            let n = match kind {
                Kind::WarmApp => count::<WarmApp>(&self.store),
                Kind::Run => count::<crd::Run>(&self.store),
                Kind::DepProvider => count::<crd::DepProvider>(&self.store),
                Kind::SlotPool => count::<crd::SlotPool>(&self.store),
                Kind::Recipe => count::<crd::Recipe>(&self.store),
            }
            .map_err(|e| format!("{kind:?}: {e}"))?;
            out.insert(format!("{kind:?}"), n.into());
        }
        Ok(out)
    }

    async fn maintenance(&self) -> Step {
        match self.store.maintenance().await {
            Ok(r) => {
                self.metrics.set_store_size(r.size_on_disk);
                let (objects, problem) = match self.counts() {
                    Ok(c) => (serde_json::Value::Object(c), None),
                    Err(e) => (serde_json::Value::Null, Some(e)),
                };
                let listed = objects
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| format!("{v} {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                step(
                    "store",
                    problem.is_none(),
                    format!(
                        "flushed; {} history entries pruned, {} kept; {}; store is {} bytes on disk{}",
                        r.history_pruned,
                        r.history_entries,
                        listed,
                        r.size_on_disk,
                        problem
                            .as_ref()
                            .map(|p| format!("; counting failed: {p}"))
                            .unwrap_or_default()
                    ),
                    serde_json::json!({
                        "historyPruned": r.history_pruned,
                        "historyEntries": r.history_entries,
                        "sizeOnDisk": r.size_on_disk,
                        "objects": objects,
                    }),
                )
            }
            Err(e) => step(
                "store",
                false,
                format!("store maintenance failed: {e}"),
                serde_json::Value::Null,
            ),
        }
    }
}

impl Job for Work {
    fn run(&self) -> BoxFuture<'_, Vec<Step>> {
        Box::pin(async move {
            vec![
                self.sweep().await,
                self.fetch().await,
                self.refresh().await,
                self.prune_images().await,
                self.maintenance().await,
            ]
        })
    }
}

#[cfg(test)]
mod recipe_tests;
#[cfg(test)]
mod tests;
