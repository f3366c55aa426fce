//! The daemon's CI side: runs (their reconciler), slots and the orphan sweeper, with their background workers (slot reclaim, sweep).
//!
//! Scope: the sweeper looks at objects labelled `hearth.instance=<this daemon's id>` (run
//! stacks and per-run deps this daemon deployed) and at objects in a stack namespace this
//! daemon assigned to a run in its own store (adoption: a stack the CI harness deployed by
//! itself, without `--deploy`, carries no hearth label). A daemon never sweeps what another
//! hearth (or another test) deployed on a shared swarm.

use std::sync::Arc;
use std::time::Duration;

use crd::names::BaseDomain;
use state::{Store, SystemClock};
use tokio::task::JoinHandle;
use tracing::info;

use crate::liveness::{ContainerWatch, Owners, ProcLiveness, WatchWorker};
use crate::runs::{self, Runs};
use crate::slots::{self, Slots};
use crate::swarm::{LabelFilter, Labels, Swarm};
use crate::sweeper::{self, Sweeper};

/// How often the orphan sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What the CI side needs.
pub(crate) struct Setup {
    pub store: Store,
    pub swarm: Arc<dyn Swarm>,
    pub catalogue: Arc<dyn crate::catalogue::Catalogue>,
    pub base_domain: BaseDomain,
    pub extra_labels: Labels,
    pub instance: String,
    /// Stops the run controller (graceful: in-flight starts and teardowns finish).
    pub shutdown: crate::runtime::Shutdown,
    pub metrics: metrics::Metrics,
    pub promoter: crate::promote::Promoter,
    /// Engine endpoints of other swarm nodes, for the runs' teardowns.
    pub node_endpoints: crate::stack::NodeDaemons,
}

/// The started CI side.
pub(crate) struct Started {
    pub runs: Runs,
    pub slots: Slots,
    pub sweeper: Sweeper,
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The run controller (awaited on shutdown: it drains its reconciles).
    pub controller: JoinHandle<crate::runtime::Stopped>,
}

/// Builds runs, slots and the sweeper, starts the run controller and hands the slot reclaim
/// and the orphan sweep to `workers`.
///
/// # Errors
/// [`super::Error::HostUnidentified`] when this host's identity cannot be read.
pub(crate) fn start(
    setup: Setup,
    workers: &mut crate::runtime::workers::Supervisor,
) -> Result<Started, super::Error> {
    // Process owners from /proc, container owners from the engine's events.
    let containers = ContainerWatch::new();
    let checker = Arc::new(Owners::new(
        ProcLiveness::new().map_err(super::Error::HostUnidentified)?,
        containers.clone(),
    ));
    workers.spawn(WatchWorker::new(setup.swarm.clone(), containers));
    let clock = Arc::new(SystemClock);
    let mut config = runs::Config::new(setup.base_domain);
    config.extra_labels = setup.extra_labels;
    config.teardown.nodes = setup.node_endpoints.clone();
    config.collision_teardown.nodes = setup.node_endpoints.clone();
    let catalogue: Arc<dyn crate::catalogue::Catalogue> = setup.catalogue;
    let slots =
        Slots::with_clock(setup.store.clone(), clock.clone()).with_metrics(setup.metrics.clone());
    let sweeper = Sweeper::new(
        setup.swarm.clone(),
        setup.store.clone(),
        checker.clone(),
        clock.clone(),
        sweeper::Config {
            scope: LabelFilter::eq(crate::warmapp::INSTANCE_LABEL, &setup.instance),
            nodes: setup.node_endpoints,
            ..sweeper::Config::default()
        },
    )
    .with_metrics(setup.metrics.clone());
    let runs = Runs::new(
        setup.store.clone(),
        setup.swarm.clone(),
        Some(catalogue),
        clock.clone(),
        config,
    )
    .with_metrics(setup.metrics.clone())
    .with_promoter(setup.promoter)
    .with_sweeper(sweeper.clone());
    // Starts, finishes, teardown retries, closing the runs the sweeper marks, and starts an
    // earlier process was cut off in.
    let controller = tokio::spawn(
        runs::reconcile::controller(runs.clone(), runs::reconcile::config()).run(setup.shutdown),
    );
    workers.spawn(slots::ReclaimWorker::new(
        slots.clone(),
        checker,
        slots::DEFAULT_RECLAIM_INTERVAL,
    ));
    workers.spawn(sweeper::SweepWorker::new(sweeper.clone(), SWEEP_INTERVAL));
    let tasks = Vec::new();
    info!(
        reclaim = ?slots::DEFAULT_RECLAIM_INTERVAL,
        sweep = ?SWEEP_INTERVAL,
        "run controller, slot reclaim and orphan sweep running"
    );
    Ok(Started {
        runs,
        slots,
        sweeper,
        tasks,
        controller,
    })
}
