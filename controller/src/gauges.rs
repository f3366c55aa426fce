//! The daemon's gauges read from the store: runs by phase, slots per pool, teardown leftovers, store size, queue.
//!
//! Counters and histograms are recorded where things happen (reconciles, tier reports, slot
//! grants, sweeps, Docker calls); the gauges here describe the store's current contents, so a
//! worker ([`GaugesWorker`]) recomputes them with [`snapshot`] (pure) and writes them every
//! [`REFRESH`].

use std::collections::BTreeMap;
use std::time::Duration;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::runtime::workers::{Failure, Next, Worker};
use crate::runtime::Handle;
use crd::{Recipe, Run, RunPhase, SlotPool};
use metrics::{Metrics, UNDECLARED};
use state::Store;

/// How often the gauges are recomputed.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Every run phase, as the `phase` label spells it (all are exported, 0 when empty).
const PHASES: [(RunPhase, &str); 9] = [
    (RunPhase::Pending, "Pending"),
    (RunPhase::Deploying, "Deploying"),
    (RunPhase::Running, "Running"),
    (RunPhase::Finishing, "Finishing"),
    (RunPhase::Succeeded, "Succeeded"),
    (RunPhase::Failed, "Failed"),
    (RunPhase::TeardownFailed, "TeardownFailed"),
    (RunPhase::Expired, "Expired"),
    (RunPhase::Orphaned, "Orphaned"),
];

/// The closed set of leftover kinds; a residual of any other kind counts as `other`.
const LEFTOVER_KINDS: [&str; 8] = [
    "service",
    "container",
    "network",
    "volume",
    "secret",
    "config",
    "stack",
    "other",
];

/// What the gauges should read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Runs per phase (every phase present).
    pub runs_by_phase: Vec<(&'static str, usize)>,
    /// Per pool: (slots in use, capacity).
    pub slots: BTreeMap<String, (usize, usize)>,
    /// Objects that teardowns of runs still in TeardownFailed left behind, per kind (every
    /// kind present).
    pub leftovers: Vec<(&'static str, usize)>,
}

/// The gauges' values for `runs` and `pools`. Pure.
pub fn snapshot(runs: &[Run], pools: &[SlotPool]) -> Snapshot {
    let runs_by_phase = PHASES
        .iter()
        .map(|(phase, label)| {
            let n = runs.iter().filter(|r| r.status.phase == *phase).count();
            (*label, n)
        })
        .collect();
    let slots = pools
        .iter()
        .map(|p| {
            let capacity = usize::try_from(p.spec.slots).unwrap_or(usize::MAX);
            (p.metadata.name.clone(), (p.status.leases.len(), capacity))
        })
        .collect();
    let mut leftovers: Vec<(&'static str, usize)> =
        LEFTOVER_KINDS.iter().map(|k| (*k, 0)).collect();
    for run in runs
        .iter()
        .filter(|r| r.status.phase == RunPhase::TeardownFailed)
    {
        for residual in &run.status.residuals {
            let kind = residual.split('/').next().unwrap_or_default();
            let slot = leftovers
                .iter()
                .position(|(k, _)| *k == kind)
                .unwrap_or(LEFTOVER_KINDS.len() - 1);
            if let Some((_, n)) = leftovers.get_mut(slot) {
                *n += 1;
            }
        }
    }
    Snapshot {
        runs_by_phase,
        slots,
        leftovers,
    }
}

/// Reads the store and writes every gauge once; pools that disappeared since `known` are
/// forgotten. Returns the pools written.
///
/// # Errors
/// When the runs or slot pools cannot be read (no gauge is written then).
pub fn refresh(
    store: &Store,
    metrics: &Metrics,
    known: &[String],
) -> Result<Vec<String>, state::Error> {
    let runs = store.list::<Run>()?.items;
    let pools = store.list::<SlotPool>()?.items;
    let snap = snapshot(&runs, &pools);
    metrics.set_runs_by_phase(snap.runs_by_phase);
    for pool in known.iter().filter(|p| !snap.slots.contains_key(*p)) {
        metrics.remove_slot_pool(pool);
    }
    for (pool, (in_use, capacity)) in &snap.slots {
        metrics.set_slots(pool, *in_use, *capacity);
    }
    for (kind, n) in snap.leftovers {
        metrics.set_teardown_leftovers(kind, n);
    }
    match store.size_on_disk() {
        Ok(bytes) => metrics.set_store_size(bytes),
        Err(e) => tracing::warn!(error = %e, "reading the store size failed"),
    }
    Ok(snap.slots.into_keys().collect())
}

/// Removes the series of names the store no longer declares, so every operator-named label
/// value stays within the state file in force: tier results of a recipe that is neither a
/// declared Recipe nor in `catalogue`, or of a tier no pool or recipe declares (other than
/// `_undeclared`); per-pool series of pools that are gone (also ones declared and removed
/// between two refreshes, which [`refresh`]'s `known` never saw). A report racing a
/// declaration made between the listing and the removal may lose its count; the next report
/// counts again.
///
/// # Errors
/// When the pools or recipes cannot be read (nothing is removed then).
pub fn bound_labels(
    store: &Store,
    catalogue: Option<&dyn Catalogue>,
    metrics: &Metrics,
) -> Result<(), state::Error> {
    let pools = store.list::<SlotPool>()?.items;
    let recipes = store.list::<Recipe>()?.items;
    let pool_names: BTreeSet<&str> = pools.iter().map(|p| p.metadata.name.as_str()).collect();
    metrics.retain_slot_pools(|p| pool_names.contains(p));
    let tiers: BTreeSet<&str> = pools
        .iter()
        .flat_map(|p| p.spec.tiers.iter())
        .chain(recipes.iter().flat_map(|r| r.spec.tiers.iter()))
        .map(String::as_str)
        .collect();
    let in_catalogue = catalogue.and_then(|c| c.recipes().ok()).unwrap_or_default();
    let recipe_names: BTreeSet<&str> = recipes
        .iter()
        .map(|r| r.metadata.name.as_str())
        .chain(in_catalogue.iter().map(String::as_str))
        .collect();
    metrics.retain_tier_results(|recipe, tier| {
        (recipe == UNDECLARED || recipe_names.contains(recipe))
            && (tier == UNDECLARED || tiers.contains(tier))
    });
    Ok(())
}

/// The gauges as a background worker: refreshed (with the warm-app controller's queue gauges
/// from its handle) every [`REFRESH`].
pub struct GaugesWorker {
    store: Store,
    metrics: Metrics,
    handle: Handle,
    controller: &'static str,
    known: Vec<String>,
    catalogue: Option<Arc<dyn Catalogue>>,
}

impl std::fmt::Debug for GaugesWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugesWorker")
            .field("controller", &self.controller)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl GaugesWorker {
    /// Refreshes `metrics` from `store` and `controller`'s `handle`.
    pub fn new(store: Store, metrics: Metrics, handle: Handle, controller: &'static str) -> Self {
        GaugesWorker {
            store,
            metrics,
            handle,
            controller,
            known: Vec::new(),
            catalogue: None,
        }
    }

    /// Counts recipes of `catalogue` as declared when bounding labels ([`bound_labels`]).
    pub fn with_catalogue(mut self, catalogue: Arc<dyn Catalogue>) -> Self {
        self.catalogue = Some(catalogue);
        self
    }
}

impl Worker for GaugesWorker {
    fn name(&self) -> &'static str {
        "gauges"
    }

    fn schedule(&self) -> String {
        format!("every {}", humantime::format_duration(REFRESH))
    }

    async fn step(&mut self) -> Result<Next, Failure> {
        self.metrics.set_queue(
            self.controller,
            self.handle.queue_depth(),
            self.handle.active_workers(),
        );
        self.known = refresh(&self.store, &self.metrics, &self.known)?;
        bound_labels(&self.store, self.catalogue.as_deref(), &self.metrics)?;
        Ok(Next::After(REFRESH))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crd::{Owner, RunSpec, SlotPoolSpec};

    fn run(name: &str, phase: RunPhase, residuals: &[&str]) -> Run {
        let spec: RunSpec = serde_json::from_value(serde_json::json!({
            "recipe": "app", "version": "1.0.0",
            "owner": Owner { kind: crd::OwnerKind::Pid, pid: 1, process_start_time: 1, host: "h".into(), boot_id: "b".into() },
        }))
        .unwrap();
        let mut r = Run::new(name, spec);
        r.status.phase = phase;
        r.status.residuals = residuals.iter().map(ToString::to_string).collect();
        r
    }

    #[test]
    fn the_snapshot_counts_every_phase_slots_per_pool_and_leftovers_per_kind() {
        let runs = [
            run("a", RunPhase::Running, &[]),
            run("b", RunPhase::Running, &[]),
            run(
                "c",
                RunPhase::TeardownFailed,
                &["volume/x", "volume/y", "stack/hr-c", "weird/z"],
            ),
            // residuals of a run no longer in TeardownFailed are not leftovers
            run("d", RunPhase::Succeeded, &["volume/old"]),
        ];
        let mut pool = SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots: 3,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(60),
                tiers: Vec::new(),
            },
        );
        pool.status.leases = serde_json::from_value(serde_json::json!([
            {"slot": 0, "owner": {"pid": 1, "processStartTime": 1, "host": "h", "bootId": "b"}, "acquiredAtMs": 1}
        ]))
        .unwrap();
        let snap = snapshot(&runs, &[pool]);
        assert_eq!(snap.runs_by_phase.len(), 9, "every phase is exported");
        let phase = |p: &str| snap.runs_by_phase.iter().find(|(l, _)| *l == p).unwrap().1;
        assert_eq!(phase("Running"), 2);
        assert_eq!(phase("TeardownFailed"), 1);
        assert_eq!(phase("Succeeded"), 1);
        assert_eq!(phase("Pending"), 0);
        assert_eq!(snap.slots.get("ci"), Some(&(1, 3)));
        let kind = |k: &str| snap.leftovers.iter().find(|(l, _)| *l == k).unwrap().1;
        assert_eq!(kind("volume"), 2);
        assert_eq!(kind("stack"), 1);
        assert_eq!(kind("other"), 1);
        assert_eq!(kind("service"), 0);
    }
}
