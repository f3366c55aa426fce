//! hearth's Prometheus metrics: a `Metrics` struct that owns its registry.
//!
//! There are no global metrics: the controller builds one [`Metrics`], shares it (it is cheap
//! to clone: every metric is reference-counted inside) and the HTTP server encodes it at
//! `/metrics`.
//!
//! # Label cardinality
//! No label may grow without bound. Labels are either closed sets spelled by hearth's own code
//! (`controller`, `phase`, `result`, `kind`, `verb`, `object`: `&'static str` in the API so a
//! per-object string cannot slip in) or operator-declared names that are bounded by the state
//! file and the recipe catalogue (`app`, `recipe`, `tier`, `pool`). Run ids never become
//! labels, and versions appear only in the `hearth_warm_app_info` info metric, whose series for
//! an app is replaced (the old version's series removed) when the version changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// What can go wrong building or encoding the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric could not be defined or registered (a programming error: duplicate name or
    /// bad label set). Not retryable.
    #[error("metric definition rejected")]
    DefinitionRejected(#[source] prometheus::Error),
    /// Encoding the registry to the text format failed. Not retryable.
    #[error("metrics encoding failed")]
    EncodingFailed(#[source] prometheus::Error),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Buckets for reconcile and Docker call latencies, in seconds (1 ms … 2 min).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets for slot wait times, in seconds (0 … 1 h).
const WAIT_BUCKETS: &[f64] = &[
    0.0, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The label value of a tier or recipe that is not declared: never a declared name (those are
/// DNS labels, which cannot start with `_`). Kept here, with the families it bounds, so that
/// whatever counts runs and whatever prunes series name it alike.
pub const UNDECLARED: &str = "_undeclared";

/// A warm app's readiness and version, as its series were last set.
type WarmAppSeries = (bool, Option<String>);

/// Every metric hearth exports, owned together with their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: HistogramVec,
    queue_depth: IntGaugeVec,
    active_workers: IntGaugeVec,
    warm_app_ready: IntGaugeVec,
    warm_app_info: IntGaugeVec,
    /// Each warm app's readiness and version as last set ([`Metrics::set_warm_app`]).
    warm_apps: Arc<Mutex<HashMap<String, WarmAppSeries>>>,
    runs_by_phase: IntGaugeVec,
    tier_results: IntCounterVec,
    slots_in_use: IntGaugeVec,
    slots_capacity: IntGaugeVec,
    slot_wait: HistogramVec,
    orphans_swept: IntCounterVec,
    teardown_leftovers: IntGaugeVec,
    promotions: IntCounterVec,
    nightly_last_success: Gauge,
    nightly_duration: Gauge,
    store_size: IntGauge,
    images_pruned: IntCounter,
    image_bytes_reclaimed: IntCounter,
    image_prunes_skipped: IntCounter,
    state_file_rejections: IntCounter,
    recipe_fetches: IntCounterVec,
    recipe_fetch_failing: IntGaugeVec,
    docker_calls: IntCounterVec,
    docker_errors: IntCounterVec,
    docker_latency: HistogramVec,
    worker_runs: IntCounterVec,
    worker_errors: IntCounterVec,
    worker_last_success: prometheus::GaugeVec,
    worker_up: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registers `metric` with `registry` and hands it back.
fn register<M>(registry: &Registry, metric: M) -> Result<M>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry
        .register(Box::new(metric.clone()))
        .map_err(Error::DefinitionRejected)?;
    Ok(metric)
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    let m = IntCounterVec::new(Opts::new(name, help), labels).map_err(Error::DefinitionRejected)?;
    register(r, m)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).map_err(Error::DefinitionRejected)?;
    register(r, m)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let m = HistogramVec::new(opts, labels).map_err(Error::DefinitionRejected)?;
    register(r, m)
}

impl Metrics {
    /// Builds the registry with every metric defined (and none observed yet).
    ///
    /// # Errors
    /// Only on a programming error in the definitions ([`Error::DefinitionRejected`]).
    pub fn new() -> Result<Self> {
        let r = Registry::new_custom(Some("hearth".to_owned()), None)
            .map_err(Error::DefinitionRejected)?;
        let nightly_last_success = register(
            &r,
            Gauge::new(
                "nightly_last_success_timestamp_seconds",
                "Unix time at which the nightly sweep last completed successfully.",
            )
            .map_err(Error::DefinitionRejected)?,
        )?;
        let nightly_duration = register(
            &r,
            Gauge::new(
                "nightly_last_duration_seconds",
                "How long the last completed nightly sweep took.",
            )
            .map_err(Error::DefinitionRejected)?,
        )?;
        let store_size = register(
            &r,
            IntGauge::new("store_size_bytes", "Size of the state store on disk.")
                .map_err(Error::DefinitionRejected)?,
        )?;
        let state_file_rejections = register(
            &r,
            IntCounter::new(
                "state_file_rejections_total",
                "Operator state files rejected as a whole (parse or validation errors).",
            )
            .map_err(Error::DefinitionRejected)?,
        )?;
        let counter = |name: &str, help: &str| {
            register(
                &r,
                IntCounter::new(name, help).map_err(Error::DefinitionRejected)?,
            )
        };
        let images_pruned = counter(
            "nightly_images_pruned_total",
            "Dangling images removed by the nightly sweep.",
        )?;
        let image_bytes_reclaimed = counter(
            "nightly_image_bytes_reclaimed_total",
            "Bytes reclaimed by removing dangling images in the nightly sweep.",
        )?;
        let image_prunes_skipped = counter(
            "nightly_image_prunes_skipped_total",
            "Nightly image prunes skipped because a deploy was in progress.",
        )?;
        Ok(Metrics {
            reconciles: counter_vec(
                &r,
                "reconciles_total",
                "Reconciles run, per controller.",
                &["controller"],
            )?,
            reconcile_errors: counter_vec(
                &r,
                "reconcile_errors_total",
                "Reconciles that returned an error, per controller.",
                &["controller"],
            )?,
            reconcile_duration: histogram_vec(
                &r,
                "reconcile_duration_seconds",
                "Time spent in one reconcile, per controller.",
                &["controller"],
                LATENCY_BUCKETS,
            )?,
            queue_depth: gauge_vec(
                &r,
                "queue_depth",
                "Keys waiting to be reconciled, per controller.",
                &["controller"],
            )?,
            active_workers: gauge_vec(
                &r,
                "active_workers",
                "Reconciles running now, per controller.",
                &["controller"],
            )?,
            warm_app_ready: gauge_vec(
                &r,
                "warm_app_ready",
                "1 when the warm app is Ready at its desired version, else 0.",
                &["app"],
            )?,
            warm_app_info: gauge_vec(
                &r,
                "warm_app_info",
                "Always 1; the labels say which version each warm app runs.",
                &["app", "version"],
            )?,
            warm_apps: Arc::new(Mutex::new(HashMap::new())),
            runs_by_phase: gauge_vec(&r, "runs", "Runs in the store, per phase.", &["phase"])?,
            tier_results: counter_vec(
                &r,
                "tier_results_total",
                "Tier results reported by runs, per recipe, tier and result.",
                &["recipe", "tier", "result"],
            )?,
            slots_in_use: gauge_vec(&r, "slots_in_use", "Slots held, per pool.", &["pool"])?,
            slots_capacity: gauge_vec(&r, "slots_capacity", "Slots a pool has in all.", &["pool"])?,
            slot_wait: histogram_vec(
                &r,
                "slot_wait_seconds",
                "Time a caller waited for a slot, per pool.",
                &["pool"],
                WAIT_BUCKETS,
            )?,
            orphans_swept: counter_vec(
                &r,
                "orphans_swept_total",
                "Orphaned objects removed by the sweeper, per object kind.",
                &["kind"],
            )?,
            teardown_leftovers: gauge_vec(
                &r,
                "teardown_leftovers",
                "Objects a verified teardown found left behind, per object kind.",
                &["kind"],
            )?,
            promotions: counter_vec(
                &r,
                "promotions_total",
                "Promotions of warm apps, per result.",
                &["result"],
            )?,
            nightly_last_success,
            nightly_duration,
            store_size,
            images_pruned,
            image_bytes_reclaimed,
            image_prunes_skipped,
            state_file_rejections,
            recipe_fetches: counter_vec(
                &r,
                "recipe_fetches_total",
                "Git recipe fetches, by result (ok, failed).",
                &["result"],
            )?,
            recipe_fetch_failing: gauge_vec(
                &r,
                "recipe_fetch_failing",
                "1 while a declared git recipe's last fetch failed (its last good content stays in force).",
                &["recipe"],
            )?,
            docker_calls: counter_vec(
                &r,
                "docker_api_calls_total",
                "Docker Engine API calls, per operation.",
                &["operation"],
            )?,
            docker_errors: counter_vec(
                &r,
                "docker_api_errors_total",
                "Docker Engine API calls that failed, per operation and error kind.",
                &["operation", "error"],
            )?,
            docker_latency: histogram_vec(
                &r,
                "docker_api_call_duration_seconds",
                "Latency of Docker Engine API calls, per operation.",
                &["operation"],
                LATENCY_BUCKETS,
            )?,
            worker_runs: counter_vec(
                &r,
                "worker_runs_total",
                "Steps started by each background worker.",
                &["worker"],
            )?,
            worker_errors: counter_vec(
                &r,
                "worker_errors_total",
                "Steps (and triggers) of each background worker that failed or panicked.",
                &["worker"],
            )?,
            worker_last_success: {
                let m = prometheus::GaugeVec::new(
                    Opts::new(
                        "worker_last_success_timestamp_seconds",
                        "Unix time at which each background worker last finished a step successfully.",
                    ),
                    &["worker"],
                )
                .map_err(Error::DefinitionRejected)?;
                register(&r, m)?
            },
            worker_up: gauge_vec(
                &r,
                "worker_up",
                "1 while a background worker is supervised and its last step did not fail, else 0.",
                &["worker"],
            )?,
            registry: r,
        })
    }

    /// The registry, for callers that add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Encodes every metric in the Prometheus text exposition format.
    ///
    /// # Errors
    /// [`Error::EncodingFailed`] if a metric family cannot be encoded.
    pub fn encode(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(Error::EncodingFailed)?;
        String::from_utf8(out).map_err(|e| {
            Error::EncodingFailed(prometheus::Error::Msg(format!("non-utf8 output: {e}")))
        })
    }

    /// The content type `encode` produces.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// Records one reconcile of `controller` that took `took` and succeeded or not.
    pub fn observe_reconcile(&self, controller: &'static str, took: Duration, ok: bool) {
        self.reconciles.with_label_values(&[controller]).inc();
        if !ok {
            self.reconcile_errors.with_label_values(&[controller]).inc();
        }
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    /// Starts a timer that records a reconcile of `controller` when finished (or dropped,
    /// which counts as an error: the reconcile did not report success).
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            controller,
            started: std::time::Instant::now(),
            done: false,
        }
    }

    /// Sets the queue depth and running reconciles of `controller`.
    pub fn set_queue(&self, controller: &'static str, depth: usize, active: usize) {
        self.queue_depth
            .with_label_values(&[controller])
            .set(saturating_i64(depth));
        self.active_workers
            .with_label_values(&[controller])
            .set(saturating_i64(active));
    }

    /// Sets a warm app's readiness and running version. The app's previous version series is
    /// removed from the info metric, so each app has exactly one info series. Nothing is
    /// written when both are as last set (a resync sets them for every app).
    pub fn set_warm_app(&self, app: &str, ready: bool, version: Option<&str>) {
        let mut apps = self
            .warm_apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if apps
            .get(app)
            .is_some_and(|(r, v)| *r == ready && v.as_deref() == version)
        {
            return;
        }
        self.warm_app_ready
            .with_label_values(&[app])
            .set(i64::from(ready));
        let previous = apps
            .insert(app.to_owned(), (ready, version.map(str::to_owned)))
            .and_then(|(_, v)| v);
        if let Some(old) = previous {
            if Some(old.as_str()) != version {
                // An absent series is fine: nothing to remove.
                let _ = self.warm_app_info.remove_label_values(&[app, &old]);
            }
        }
        if let Some(v) = version {
            self.warm_app_info.with_label_values(&[app, v]).set(1);
        }
    }

    /// Forgets a warm app that was deleted.
    pub fn remove_warm_app(&self, app: &str) {
        self.set_warm_app(app, false, None);
        // An absent series is fine: nothing to remove.
        let _ = self.warm_app_ready.remove_label_values(&[app]);
        self.warm_apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(app);
    }

    /// Replaces the runs-by-phase gauge with `counts` (phase name → runs). Phases missing
    /// from `counts` are set to 0, so a phase that empties reads 0 rather than its last value.
    pub fn set_runs_by_phase(&self, counts: impl IntoIterator<Item = (&'static str, usize)>) {
        self.runs_by_phase.reset();
        for (phase, n) in counts {
            self.runs_by_phase
                .with_label_values(&[phase])
                .set(saturating_i64(n));
        }
    }

    /// Counts one reported tier result (`result` is `pass`, `fail` or `skip`).
    pub fn record_tier(&self, recipe: &str, tier: &str, result: &'static str) {
        self.tier_results
            .with_label_values(&[recipe, tier, result])
            .inc();
    }

    /// Sets a pool's capacity and slots in use.
    pub fn set_slots(&self, pool: &str, in_use: usize, capacity: usize) {
        self.slots_in_use
            .with_label_values(&[pool])
            .set(saturating_i64(in_use));
        self.slots_capacity
            .with_label_values(&[pool])
            .set(saturating_i64(capacity));
    }

    /// Forgets a slot pool that was deleted (its in-use, capacity and wait series).
    pub fn remove_slot_pool(&self, pool: &str) {
        // An absent series is fine: nothing to remove.
        let _ = self.slots_in_use.remove_label_values(&[pool]);
        let _ = self.slots_capacity.remove_label_values(&[pool]);
        let _ = self.slot_wait.remove_label_values(&[pool]);
    }

    /// Removes the series of pools `keep` refuses from every per-pool family (pools no longer
    /// declared, including ones declared and removed between two calls).
    pub fn retain_slot_pools(&self, keep: impl Fn(&str) -> bool) {
        let by_pool = |labels: &HashMap<&str, &str>| keep(labels.get("pool").unwrap_or(&""));
        retain_series(&self.slots_in_use, by_pool);
        retain_series(&self.slots_capacity, by_pool);
        retain_series(&self.slot_wait, by_pool);
    }

    /// Removes the tier-result series whose `(recipe, tier)` `keep` refuses: names the state
    /// file declared once and no longer does.
    pub fn retain_tier_results(&self, keep: impl Fn(&str, &str) -> bool) {
        retain_series(&self.tier_results, |labels| {
            keep(
                labels.get("recipe").unwrap_or(&""),
                labels.get("tier").unwrap_or(&""),
            )
        });
    }

    /// Records how long a caller waited for a slot of `pool`.
    pub fn observe_slot_wait(&self, pool: &str, waited: Duration) {
        self.slot_wait
            .with_label_values(&[pool])
            .observe(waited.as_secs_f64());
    }

    /// Counts `n` orphaned objects of `kind` removed by the sweeper.
    pub fn add_orphans_swept(&self, kind: &'static str, n: u64) {
        self.orphans_swept.with_label_values(&[kind]).inc_by(n);
    }

    /// Sets the number of objects of `kind` that teardowns currently leave behind.
    pub fn set_teardown_leftovers(&self, kind: &'static str, n: usize) {
        self.teardown_leftovers
            .with_label_values(&[kind])
            .set(saturating_i64(n));
    }

    /// Counts one promotion that ended with `result` (e.g. `promoted`, `rolled_back`,
    /// `rejected`).
    pub fn record_promotion(&self, result: &'static str) {
        self.promotions.with_label_values(&[result]).inc();
    }

    /// Records a completed nightly sweep that finished at `finished_unix_s` after `took`.
    pub fn record_nightly(&self, finished_unix_s: f64, took: Duration) {
        self.nightly_last_success.set(finished_unix_s);
        self.nightly_duration.set(took.as_secs_f64());
    }

    /// Sets the store's size on disk.
    pub fn set_store_size(&self, bytes: u64) {
        self.store_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts `images` dangling images removed by the nightly sweep, reclaiming `bytes`.
    pub fn record_image_prune(&self, images: u64, bytes: u64) {
        self.images_pruned.inc_by(images);
        self.image_bytes_reclaimed.inc_by(bytes);
    }

    /// Counts one nightly image prune skipped because a deploy was in progress.
    pub fn record_image_prune_skipped(&self) {
        self.image_prunes_skipped.inc();
    }

    /// Records one git recipe fetch of `recipe`.
    pub fn record_recipe_fetch(&self, recipe: &str, ok: bool) {
        self.recipe_fetches
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.recipe_fetch_failing
            .with_label_values(&[recipe])
            .set(i64::from(!ok));
    }

    /// Forgets a recipe that is no longer declared.
    pub fn remove_recipe(&self, recipe: &str) {
        // An absent series is fine: nothing to remove.
        let _ = self.recipe_fetch_failing.remove_label_values(&[recipe]);
    }

    /// Counts one rejected operator state file.
    pub fn record_state_file_rejection(&self) {
        self.state_file_rejections.inc();
    }

    /// Records one Docker API call: its operation (`list_services`, `create_volume`, … — a
    /// closed set spelled by the metered swarm), latency, and error kind when it failed
    /// (`not_found`, `timeout`, … — a closed set defined by the swarm's error type).
    pub fn observe_docker_call(
        &self,
        operation: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.docker_calls.with_label_values(&[operation]).inc();
        self.docker_latency
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.docker_errors
                .with_label_values(&[operation, kind])
                .inc();
        }
    }

    /// Counts a step of the background worker `worker` (a closed set of names spelled by the
    /// daemon's code).
    pub fn record_worker_run(&self, worker: &'static str) {
        self.worker_runs.with_label_values(&[worker]).inc();
    }

    /// Records a successful step of `worker`, finished at `unix_ms`: it is up.
    pub fn record_worker_success(&self, worker: &'static str, unix_ms: u64) {
        #[allow(clippy::cast_precision_loss)]
        let seconds = unix_ms as f64 / 1000.0;
        self.worker_last_success
            .with_label_values(&[worker])
            .set(seconds);
        self.worker_up.with_label_values(&[worker]).set(1);
    }

    /// Counts a failed (or panicked) step of `worker`: it is down until its next success.
    pub fn record_worker_error(&self, worker: &'static str) {
        self.worker_errors.with_label_values(&[worker]).inc();
        self.worker_up.with_label_values(&[worker]).set(0);
    }

    /// Sets whether `worker` is up (supervised and not failing).
    pub fn set_worker_up(&self, worker: &'static str, up: bool) {
        self.worker_up
            .with_label_values(&[worker])
            .set(i64::from(up));
        // Every family of a supervised worker exists from its start (0 until it happens).
        self.worker_runs.with_label_values(&[worker]);
        self.worker_errors.with_label_values(&[worker]);
    }

    /// The number of series (samples, counting every histogram bucket) the registry exports
    /// now: what a cardinality test watches.
    pub fn series_count(&self) -> usize {
        self.registry
            .gather()
            .iter()
            .map(|family| {
                let per_metric = match family.get_field_type() {
                    // every bucket, plus _sum and _count
                    prometheus::proto::MetricType::HISTOGRAM => {
                        |m: &prometheus::proto::Metric| m.get_histogram().get_bucket().len() + 2
                    }
                    _ => |_: &prometheus::proto::Metric| 1,
                };
                family.get_metric().iter().map(per_metric).sum::<usize>()
            })
            .sum()
    }

    /// Every label value of `label` that series of the family `name` (without the `hearth_`
    /// prefix) carry now, sorted and deduplicated: what tests read to check label sets.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let full = format!("hearth_{name}");
        let mut out: Vec<String> = self
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == full)
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|m| m.get_label().iter())
            .filter(|l| l.name() == label)
            .map(|l| l.value().to_owned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Records a reconcile's duration when finished; see [`Metrics::reconcile_timer`].
#[must_use = "a timer records on finish or drop"]
pub struct ReconcileTimer {
    metrics: Metrics,
    controller: &'static str,
    started: std::time::Instant,
    done: bool,
}

impl ReconcileTimer {
    /// Records the reconcile as succeeded (`ok`) or failed.
    pub fn finish(mut self, ok: bool) {
        self.record(ok);
    }

    fn record(&mut self, ok: bool) {
        if !self.done {
            self.done = true;
            self.metrics
                .observe_reconcile(self.controller, self.started.elapsed(), ok);
        }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.record(false);
    }
}

/// Removes every series of `vec` whose labels (name → value) `keep` refuses.
fn retain_series<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    keep: impl Fn(&HashMap<&str, &str>) -> bool,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if !keep(&labels) {
                // Gone already (a concurrent removal) is fine.
                let _ = vec.remove(&labels);
            }
        }
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_family_is_prefixed_and_encodes() {
        let m = Metrics::new().unwrap();
        m.observe_reconcile("warmapp", Duration::from_millis(20), true);
        m.set_store_size(1234);
        let text = m.encode().unwrap();
        assert!(text.contains("hearth_reconciles_total{controller=\"warmapp\"} 1"));
        assert_eq!(line_value(&text, "hearth_store_size_bytes"), Some(1234.0));
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("hearth_"), "unprefixed series: {line}");
        }
    }

    #[test]
    fn a_failed_reconcile_counts_as_an_error_and_a_dropped_timer_too() {
        let m = Metrics::new().unwrap();
        m.reconcile_timer("run").finish(true);
        m.reconcile_timer("run").finish(false);
        drop(m.reconcile_timer("run"));
        let text = m.encode().unwrap();
        assert_eq!(
            line_value(&text, "hearth_reconciles_total{controller=\"run\"}"),
            Some(3.0)
        );
        assert_eq!(
            line_value(&text, "hearth_reconcile_errors_total{controller=\"run\"}"),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &text,
                "hearth_reconcile_duration_seconds_count{controller=\"run\"}"
            ),
            Some(3.0)
        );
    }

    #[test]
    fn a_warm_app_has_one_info_series_whatever_versions_it_went_through() {
        let m = Metrics::new().unwrap();
        m.set_warm_app("web", false, Some("1.0.0"));
        m.set_warm_app("web", true, Some("1.1.0"));
        m.set_warm_app("web", true, Some("2.0.0"));
        let text = m.encode().unwrap();
        let info: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("hearth_warm_app_info{"))
            .collect();
        assert_eq!(info.len(), 1, "{info:?}");
        assert!(info[0].contains("version=\"2.0.0\""));
        assert_eq!(
            line_value(&text, "hearth_warm_app_ready{app=\"web\"}"),
            Some(1.0)
        );
        m.remove_warm_app("web");
        let text = m.encode().unwrap();
        assert!(!text.contains("app=\"web\""), "{text}");
    }

    #[test]
    fn a_warm_app_deleted_and_made_again_with_the_same_state_gets_its_series_back() {
        let m = Metrics::new().unwrap();
        m.set_warm_app("web", false, None);
        m.set_warm_app("web", false, None);
        m.remove_warm_app("web");
        m.set_warm_app("web", false, None);
        let text = m.encode().unwrap();
        assert_eq!(
            line_value(&text, "hearth_warm_app_ready{app=\"web\"}"),
            Some(0.0),
            "{text}"
        );
        m.set_warm_app("web", true, Some("1.0.0"));
        m.set_warm_app("web", true, Some("1.0.0"));
        let text = m.encode().unwrap();
        assert_eq!(
            line_value(&text, "hearth_warm_app_ready{app=\"web\"}"),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "hearth_warm_app_info{app=\"web\",version=\"1.0.0\"}"),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn runs_by_phase_forgets_phases_that_emptied() {
        let m = Metrics::new().unwrap();
        m.set_runs_by_phase([("Running", 3), ("Succeeded", 1)]);
        m.set_runs_by_phase([("Succeeded", 4)]);
        let text = m.encode().unwrap();
        assert_eq!(line_value(&text, "hearth_runs{phase=\"Running\"}"), None);
        assert_eq!(
            line_value(&text, "hearth_runs{phase=\"Succeeded\"}"),
            Some(4.0)
        );
    }

    #[test]
    fn docker_calls_count_errors_by_class() {
        let m = Metrics::new().unwrap();
        m.observe_docker_call("list_services", Duration::from_millis(3), None);
        m.observe_docker_call("remove_volume", Duration::from_millis(9), Some("in_use"));
        let text = m.encode().unwrap();
        assert_eq!(
            line_value(
                &text,
                "hearth_docker_api_errors_total{error=\"in_use\",operation=\"remove_volume\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                "hearth_docker_api_calls_total{operation=\"list_services\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            m.label_values("docker_api_calls_total", "operation"),
            ["list_services", "remove_volume"]
        );
    }

    #[test]
    fn retain_removes_the_series_of_names_no_longer_declared() {
        let m = Metrics::new().unwrap();
        m.record_tier("webapp", "install", "pass");
        m.record_tier("webapp", "install", "fail");
        m.record_tier("gone", "install", "pass");
        m.record_tier("webapp", "old", "skip");
        m.set_slots("ci", 0, 1);
        m.observe_slot_wait("ci", Duration::from_secs(1));
        m.set_slots("gone", 0, 1);
        m.observe_slot_wait("gone", Duration::from_secs(1));
        m.retain_tier_results(|recipe, tier| recipe == "webapp" && tier == "install");
        m.retain_slot_pools(|pool| pool == "ci");
        assert_eq!(m.label_values("tier_results_total", "recipe"), ["webapp"]);
        assert_eq!(m.label_values("tier_results_total", "tier"), ["install"]);
        assert_eq!(
            m.label_values("tier_results_total", "result"),
            ["fail", "pass"]
        );
        for family in ["slots_in_use", "slots_capacity", "slot_wait_seconds"] {
            assert_eq!(m.label_values(family, "pool"), ["ci"], "{family}");
        }
        m.observe_slot_wait("gone", Duration::from_secs(1));
        m.remove_slot_pool("gone");
        assert_eq!(m.label_values("slot_wait_seconds", "pool"), ["ci"]);
    }

    #[test]
    fn tiers_slots_orphans_promotions_and_nightly_are_exported() {
        let m = Metrics::new().unwrap();
        m.record_tier("webapp", "install", "pass");
        m.set_slots("ci", 2, 3);
        m.observe_slot_wait("ci", Duration::from_secs(2));
        m.add_orphans_swept("volume", 2);
        m.set_teardown_leftovers("network", 1);
        m.record_promotion("promoted");
        m.record_nightly(1_700_000_000.0, Duration::from_secs(42));
        m.record_state_file_rejection();
        m.record_image_prune(2, 4_000);
        m.record_image_prune(1, 500);
        m.record_image_prune_skipped();
        let text = m.encode().unwrap();
        for series in [
            "hearth_tier_results_total{recipe=\"webapp\",result=\"pass\",tier=\"install\"} 1",
            "hearth_slots_in_use{pool=\"ci\"} 2",
            "hearth_slots_capacity{pool=\"ci\"} 3",
            "hearth_slot_wait_seconds_count{pool=\"ci\"} 1",
            "hearth_orphans_swept_total{kind=\"volume\"} 2",
            "hearth_teardown_leftovers{kind=\"network\"} 1",
            "hearth_promotions_total{result=\"promoted\"} 1",
            "hearth_nightly_last_duration_seconds 42",
            "hearth_state_file_rejections_total 1",
            "hearth_nightly_images_pruned_total 3",
            "hearth_nightly_image_bytes_reclaimed_total 4500",
            "hearth_nightly_image_prunes_skipped_total 1",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        assert_eq!(
            line_value(&text, "hearth_nightly_last_success_timestamp_seconds"),
            Some(1.7e9)
        );
    }
}
