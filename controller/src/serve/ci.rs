//! The daemon's CI side: runs, slots and the orphan sweeper, with their background loops (slot reclaim, sweep, teardown retries).
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
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::liveness::ProcLiveness;
use crate::runs::{self, Runs};
use crate::slots::{self, Slots};
use crate::swarm::{LabelFilter, Labels, Swarm};
use crate::sweeper::{self, Sweeper};

/// How often the orphan sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often finishing runs left in TeardownFailed are retried.
pub const TEARDOWN_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// What the CI side needs.
pub(crate) struct Setup {
    pub store: Store,
    pub swarm: Arc<dyn Swarm>,
    pub catalogue: Arc<dyn crate::catalogue::Catalogue>,
    pub base_domain: BaseDomain,
    pub extra_labels: Labels,
    pub instance: String,
    pub cancel: CancellationToken,
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
}

/// Builds runs, slots and the sweeper and spawns their loops on `setup.cancel`.
///
/// # Errors
/// [`super::Error::HostUnidentified`] when this host's identity cannot be read.
pub(crate) fn start(setup: Setup) -> Result<Started, super::Error> {
    let checker = Arc::new(ProcLiveness::new().map_err(super::Error::HostUnidentified)?);
    let clock = Arc::new(SystemClock);
    let mut config = runs::Config::new(setup.base_domain);
    config.extra_labels = setup.extra_labels;
    config.teardown.nodes = setup.node_endpoints.clone();
    config.collision_teardown.nodes = setup.node_endpoints.clone();
    let catalogue: Arc<dyn crate::catalogue::Catalogue> = setup.catalogue;
    let runs = Runs::new(
        setup.store.clone(),
        setup.swarm.clone(),
        Some(catalogue),
        clock.clone(),
        config,
    )
    .with_metrics(setup.metrics.clone())
    .with_promoter(setup.promoter);
    let slots =
        Slots::with_clock(setup.store.clone(), clock.clone()).with_metrics(setup.metrics.clone());
    let sweeper = Sweeper::new(
        setup.swarm,
        setup.store,
        checker.clone(),
        clock,
        sweeper::Config {
            scope: LabelFilter::eq(crate::warmapp::INSTANCE_LABEL, &setup.instance),
            nodes: setup.node_endpoints,
            ..sweeper::Config::default()
        },
    )
    .with_metrics(setup.metrics);
    // Read before the API serves its first request (see `Runs::interrupted_starts`).
    let interrupted = runs.interrupted_starts().unwrap_or_else(|e| {
        warn!(error = %e, "cannot list runs whose start a restart interrupted");
        Vec::new()
    });
    let tasks = vec![
        (
            "slot-reclaim",
            tokio::spawn(slots::reclaim_loop(
                slots.clone(),
                checker,
                slots::DEFAULT_RECLAIM_INTERVAL,
                setup.cancel.clone(),
            )),
        ),
        (
            "sweeper",
            tokio::spawn(sweeper::sweep_loop(
                sweeper.clone(),
                SWEEP_INTERVAL,
                setup.cancel.clone(),
            )),
        ),
        (
            "teardown-retry",
            tokio::spawn(retry_loop(runs.clone(), interrupted, setup.cancel)),
        ),
    ];
    info!(
        reclaim = ?slots::DEFAULT_RECLAIM_INTERVAL,
        sweep = ?SWEEP_INTERVAL,
        "slot reclaim, orphan sweep and teardown retries running"
    );
    Ok(Started {
        runs,
        slots,
        sweeper,
        tasks,
    })
}

/// Closes the starts an earlier process was cut off in (`interrupted`), then retries failed
/// and cut-off teardowns at once and every [`TEARDOWN_RETRY_INTERVAL`] until `cancel`.
async fn retry_loop(runs: Runs, interrupted: Vec<String>, cancel: CancellationToken) {
    if !interrupted.is_empty() {
        info!(runs = ?interrupted, "closing runs whose start a restart interrupted");
        let closing = runs.close_interrupted(&interrupted);
        let outcomes = tokio::select! {
            () = cancel.cancelled() => return,
            outcomes = closing => outcomes,
        };
        for (run, outcome) in outcomes {
            match outcome {
                Ok(r) => info!(run, phase = ?r.status.phase, "interrupted start closed"),
                Err(e) => {
                    warn!(run, error = %e, "closing an interrupted start failed (retried with the teardowns)")
                }
            }
        }
    }
    // The first retry at once: a teardown an earlier process was cut off in (Finishing) holds
    // its run's slot until it completes.
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = TEARDOWN_RETRY_INTERVAL;
        match runs.retry_teardowns().await {
            Ok(retried) if !retried.is_empty() => info!(?retried, "teardowns retried"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retrying teardowns failed"),
        }
    }
}
