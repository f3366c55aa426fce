//! The orphan sweeper: removes, with forced teardown, what hearth owns of runs that are over, unknown, expired or whose owner died.
//!
//! One pass: list every object kind in the scope (services, networks, volumes, secrets,
//! configs; with a narrowed scope, once more for every object with a stack namespace, so
//! adoption by namespace works), read the runs from the store, [`decide()`]
//! (pure), remove the selected objects (services, then their containers at once, then
//! networks, secrets, configs, then volumes), list again to verify, close the runs whose owner
//! died or lease expired (phase Orphaned/Expired, slot released in the same transaction), and
//! record one history entry per run with what was removed and what remained.
//!
//! # Other nodes
//! Volumes are node-local. With node endpoints configured (`--node-endpoint`, the same
//! [`NodeDaemons`] runs' teardowns use), a pass also lists the volumes in its scope through
//! each endpoint (one list call per endpoint per pass; two with a narrowed scope and adopted
//! stacks), decides about them exactly as about local ones (labels decide; a volume's node
//! only says where it is removed), and removes the selected ones through that node's daemon
//! after killing the swept services' containers there (on every node reached, whether or not
//! a volume is selected there). An endpoint that does not answer is a
//! failure of the pass naming the node and endpoint (report and history). Nodes of the swarm
//! without an endpoint are named once per pass ("volumes not swept on nodes …"): the nodes are
//! listed each pass only when endpoints are configured or `info` — read once per sweeper, in
//! the first pass's listing round trip — counted more than one node. Caveats: a swarm that grows
//! from one node after the sweeper started is not noticed until a restart; an endpoint
//! configured for the local node lists its volumes twice (the second removal finds them gone);
//! a run is closed even when a node could not be listed (the failure is in its history).
//!
//! # Ownership
//! Only objects carrying `hearth.managed-by=hearth`, or in the stack namespace hearth assigned
//! to a run it recorded (adoption), are ever touched, one by one: a foreign object sharing a
//! namespace with hearth's objects is not removed with them.

pub mod decide;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crd::{Kind, Run, RunPhase};
use serde::Serialize;
use state::history::{reason, NewEntry, ObjectRef};
use state::{Clock, Store};

use crate::liveness::Checker;
use crate::stack::{self, NodeDaemons, NAMESPACE_LABEL};
use crate::swarm::{self, LabelFilter, ObjectKind, Swarm};

pub use decide::{decide, CloseRun, Decision, Object, Reason, SweepAction};

/// Errors of a sweep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the swarm's objects failed; nothing was removed. Retryable when the source is.
    #[error("listing swarm objects failed")]
    ObserveFailed(#[source] swarm::Error),
    /// Reading or writing the store failed. Retryable when the source is.
    #[error("store operation failed")]
    StoreFailed(#[from] state::Error),
}

/// `Result` of a sweep.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the sweeper.
#[derive(Debug, Clone)]
pub struct Config {
    /// The decision's settings (creation guard).
    pub decide: decide::Config,
    /// Deadline of one pass's removals ("in use" is retried until it).
    pub deadline: Duration,
    /// Which objects the pass looks at (every object by default). A narrower scope confines a
    /// sweeper to one hearth instance's or one test's objects; ownership is still decided
    /// within it.
    pub scope: LabelFilter,
    /// Endpoints of other nodes' daemons, where volumes are listed and removed too.
    pub nodes: NodeDaemons,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            decide: decide::Config::default(),
            deadline: Duration::from_secs(60),
            scope: LabelFilter::all(),
            nodes: NodeDaemons::new(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// What was decided.
    pub decision: Decision,
    /// Objects removed (or found gone).
    pub removed: Vec<Object>,
    /// Selected objects still present after the pass.
    pub remained: Vec<Object>,
    /// Errors met on the way (object: error).
    pub failures: Vec<String>,
    /// Runs closed (Orphaned/Expired).
    pub closed: Vec<String>,
    /// Runs left in TeardownFailed because objects remained.
    pub teardown_failed: Vec<String>,
}

/// The orphan sweeper.
#[derive(Clone)]
pub struct Sweeper {
    swarm: Arc<dyn Swarm>,
    store: Store,
    checker: Arc<dyn Checker>,
    clock: Arc<dyn Clock>,
    config: Config,
    metrics: Option<metrics::Metrics>,
    /// (local node ID, nodes in the swarm) from `info`, read once.
    swarm_info: Arc<std::sync::OnceLock<(String, u64)>>,
}

/// What a pass saw: the objects, the other nodes' daemons it reached, and what it could not see.
#[derive(Default)]
struct Observed {
    objects: Vec<Object>,
    daemons: BTreeMap<String, Arc<dyn Swarm>>,
    /// Nodes that did not answer or have no endpoint (each a failure of the pass).
    unseen: Vec<String>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("config", &self.config)
            .finish()
    }
}

fn ms(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// Lists every service, network, volume, secret and config in `scope` (one call per kind).
///
/// # Errors
/// [`Error::ObserveFailed`].
pub async fn observe(swarm: &dyn Swarm, scope: &LabelFilter) -> Result<Vec<Object>> {
    let all = scope;
    let (services, networks, volumes, secrets, configs) = futures::try_join!(
        swarm.list_services(all),
        swarm.list_networks(all),
        swarm.list_volumes(all),
        swarm.list_secrets(all),
        swarm.list_configs(all),
    )
    .map_err(Error::ObserveFailed)?;
    let mut out = Vec::new();
    let meta = |kind, m: swarm::Meta| Object {
        kind,
        id: m.id,
        name: m.name,
        labels: m.labels,
        created_at_ms: ms(m.created_at),
        node: None,
    };
    out.extend(
        services
            .into_iter()
            .map(|s| meta(ObjectKind::Service, s.meta)),
    );
    out.extend(networks.into_iter().map(|n| Object {
        kind: ObjectKind::Network,
        id: n.id,
        name: n.name,
        labels: n.labels,
        created_at_ms: ms(n.created_at),
        node: None,
    }));
    out.extend(volumes.into_iter().map(|v| Object {
        kind: ObjectKind::Volume,
        id: v.name.clone(),
        name: v.name,
        labels: v.labels,
        created_at_ms: ms(v.created_at),
        node: None,
    }));
    out.extend(
        secrets
            .into_iter()
            .map(|s| meta(ObjectKind::Secret, s.meta)),
    );
    out.extend(
        configs
            .into_iter()
            .map(|c| meta(ObjectKind::Config, c.meta)),
    );
    Ok(out)
}

impl Sweeper {
    /// A sweeper over `swarm` and `store`, judging owners with `checker` and time by `clock`
    /// (the store's clock, so lease expiry agrees with heartbeats).
    pub fn new(
        swarm: Arc<dyn Swarm>,
        store: Store,
        checker: Arc<dyn Checker>,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Sweeper {
        Sweeper {
            swarm,
            store,
            checker,
            clock,
            config,
            metrics: None,
            swarm_info: Arc::default(),
        }
    }

    /// The objects in the scope, plus — when the scope is narrower than everything — the
    /// objects in the stack namespaces hearth assigned to `runs` (adoption: a stack the CI
    /// harness deployed by itself carries none of this daemon's labels).
    ///
    /// # Errors
    /// [`Error::ObserveFailed`].
    async fn observe_owned(&self, runs: &[Run]) -> Result<Observed> {
        let (objects, remote) = futures::join!(self.observe_local(runs), self.observe_nodes(runs));
        let mut observed = remote?;
        observed.objects.splice(0..0, objects?);
        Ok(observed)
    }

    /// The scope's volumes (and, narrowed, the adopted stacks' volumes) on every node reached
    /// through an endpoint, and the nodes whose volumes could not be seen.
    ///
    /// # Errors
    /// [`Error::ObserveFailed`] when reading the swarm's info or nodes failed.
    async fn observe_nodes(&self, runs: &[Run]) -> Result<Observed> {
        let daemons = &self.config.nodes;
        let info = async {
            match self.swarm_info.get() {
                Some(i) => Ok(i.clone()),
                None => {
                    let info = self.swarm.info().await?;
                    Ok(self
                        .swarm_info
                        .get_or_init(|| (info.node_id, info.nodes))
                        .clone())
                }
            }
        };
        let (local, count) = info.await.map_err(Error::ObserveFailed)?;
        let mut out = Observed::default();
        if count > 1 || !daemons.is_empty() {
            let nodes = self
                .swarm
                .list_nodes(&LabelFilter::all())
                .await
                .map_err(Error::ObserveFailed)?;
            let blind = unreached_nodes(&nodes, &local, daemons);
            if !blind.is_empty() {
                out.unseen.push(format!(
                    "volumes not swept on nodes {}: no --node-endpoint",
                    blind.join(", ")
                ));
            }
        }
        let assigned = decide::assigned_stacks(runs);
        let adopt = !self.config.scope.conditions().is_empty() && !assigned.is_empty();
        let stacked = LabelFilter::all().and_has(NAMESPACE_LABEL);
        let scope = &self.config.scope;
        let (assigned, stacked) = (&assigned, &stacked);
        let listed = futures::future::join_all(daemons.endpoints().map(|(node, url)| async move {
            let daemon = match daemons.reach(node).await {
                Some(Ok(d)) => d,
                Some(Err(e)) => return (node, url, Err(e)),
                None => return (node, url, Ok(None)),
            };
            let volumes = async {
                let mut volumes = daemon.list_volumes(scope).await?;
                if adopt {
                    let seen: BTreeSet<String> = volumes.iter().map(|v| v.name.clone()).collect();
                    volumes.extend(daemon.list_volumes(stacked).await?.into_iter().filter(|v| {
                        !seen.contains(&v.name)
                            && v.labels
                                .get(NAMESPACE_LABEL)
                                .is_some_and(|ns| assigned.contains_key(ns))
                    }));
                }
                Ok::<_, swarm::Error>(volumes)
            };
            (node, url, volumes.await.map(|v| Some((daemon, v))))
        }))
        .await;
        for (node, url, result) in listed {
            match result {
                Ok(Some((daemon, volumes))) => {
                    out.objects.extend(volumes.into_iter().map(|v| Object {
                        kind: ObjectKind::Volume,
                        id: v.name.clone(),
                        name: v.name,
                        labels: v.labels,
                        created_at_ms: ms(v.created_at),
                        node: Some(node.to_string()),
                    }));
                    out.daemons.insert(node.to_string(), daemon);
                }
                Ok(None) => {}
                Err(e) => out.unseen.push(format!(
                    "volumes not swept on node {node}: its engine endpoint {url} did not answer ({e})"
                )),
            }
        }
        Ok(out)
    }

    /// The scope's objects on the daemon hearth talks to, plus adopted ones (see
    /// [`Sweeper::observe_owned`]).
    async fn observe_local(&self, runs: &[Run]) -> Result<Vec<Object>> {
        let mut objects = observe(self.swarm.as_ref(), &self.config.scope).await?;
        let assigned = decide::assigned_stacks(runs);
        if self.config.scope.conditions().is_empty() || assigned.is_empty() {
            return Ok(objects);
        }
        let seen: BTreeSet<(ObjectKind, String)> =
            objects.iter().map(|o| (o.kind, o.id.clone())).collect();
        let stacked = LabelFilter::all().and_has(NAMESPACE_LABEL);
        let adopted = observe(self.swarm.as_ref(), &stacked).await?;
        objects.extend(adopted.into_iter().filter(|o| {
            !seen.contains(&(o.kind, o.id.clone()))
                && o.labels
                    .get(NAMESPACE_LABEL)
                    .is_some_and(|ns| assigned.contains_key(ns))
        }));
        Ok(objects)
    }

    /// The controller name of sweep passes in `hearth_reconciles_total` and its siblings.
    pub const CONTROLLER: &'static str = "sweeper";

    /// Records every pass (`hearth_reconciles_total{controller="sweeper"}`, errors, duration)
    /// and the orphans it removed (`hearth_orphans_swept_total`, per object kind) in `metrics`.
    pub fn with_metrics(mut self, metrics: metrics::Metrics) -> Sweeper {
        self.metrics = Some(metrics);
        self
    }

    /// What a sweep would do now, without doing it (`hearth sweep --dry-run`).
    ///
    /// # Errors
    /// [`Error::ObserveFailed`], [`Error::StoreFailed`].
    pub async fn plan(&self) -> Result<Decision> {
        Ok(self.plan_observed().await?.0)
    }

    /// The decision, the daemons of the other nodes reached, and what could not be seen.
    async fn plan_observed(&self) -> Result<(Decision, Observed)> {
        let runs = self.store.list::<Run>()?.items;
        let mut observed = self.observe_owned(&runs).await?;
        let checker = self.checker.clone();
        let decision = decide(
            &observed.objects,
            &runs,
            self.clock.now_ms(),
            &|o| checker.check(o),
            &self.config.decide,
        );
        observed.objects.clear();
        Ok((decision, observed))
    }

    /// One sweep pass (see the module docs).
    ///
    /// # Guarantees
    /// A run is closed only when a listing after the removals found nothing of it; otherwise it
    /// is left in TeardownFailed with its residuals, and the next pass retries.
    ///
    /// # Errors
    /// [`Error::ObserveFailed`] (before or after removing), [`Error::StoreFailed`]. Removal
    /// failures are not errors of the pass: they are in the report and in history.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let Some(metrics) = &self.metrics else {
            return self.sweep_once().await;
        };
        let timer = metrics.reconcile_timer(Self::CONTROLLER);
        let result = self.sweep_once().await;
        timer.finish(result.is_ok());
        if let Ok(report) = &result {
            let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
            for o in &report.removed {
                *by_kind.entry(o.kind.as_str()).or_default() += 1;
            }
            for (kind, n) in by_kind {
                metrics.add_orphans_swept(kind, n);
            }
        }
        result
    }

    async fn sweep_once(&self) -> Result<SweepReport> {
        let (decision, observed) = self.plan_observed().await?;
        let mut report = SweepReport {
            failures: observed.unseen,
            ..SweepReport::default()
        };
        if decision.remove.is_empty() && decision.close.is_empty() {
            report.decision = decision;
            return Ok(report);
        }
        let selected: Vec<Object> = decision.remove.iter().map(|a| a.object.clone()).collect();
        report.failures.extend(
            remove_forced(
                self.swarm.as_ref(),
                &observed.daemons,
                &selected,
                self.config.deadline,
            )
            .await,
        );
        // Verify (adopted objects are outside the scope: list them the same way).
        let runs = self.store.list::<Run>()?.items;
        let present: BTreeSet<(ObjectKind, String, Option<String>)> = self
            .observe_owned(&runs)
            .await?
            .objects
            .into_iter()
            .map(|o| (o.kind, o.id, o.node))
            .collect();
        let mut remained_by_run: BTreeMap<String, Vec<Object>> = BTreeMap::new();
        let mut removed_by_run: BTreeMap<String, Vec<Object>> = BTreeMap::new();
        for a in &decision.remove {
            if present.contains(&(a.object.kind, a.object.id.clone(), a.object.node.clone())) {
                report.remained.push(a.object.clone());
                remained_by_run
                    .entry(a.run.clone())
                    .or_default()
                    .push(a.object.clone());
            } else {
                report.removed.push(a.object.clone());
                removed_by_run
                    .entry(a.run.clone())
                    .or_default()
                    .push(a.object.clone());
            }
        }
        for c in &decision.close {
            let left = remained_by_run.get(&c.run).cloned().unwrap_or_default();
            let phase = c.reason.closing_phase().unwrap_or(RunPhase::Orphaned);
            match close_run(
                &self.store,
                &c.run,
                phase,
                &left,
                c.reason,
                self.clock.now_ms(),
            )
            .await
            {
                Ok(true) if left.is_empty() => report.closed.push(c.run.clone()),
                Ok(true) => report.teardown_failed.push(c.run.clone()),
                Ok(false) => {}
                Err(e) => report.failures.push(format!("closing run {}: {e}", c.run)),
            }
        }
        // History: one entry per run touched.
        let mut runs: BTreeSet<String> = decision.remove.iter().map(|a| a.run.clone()).collect();
        runs.extend(decision.close.iter().map(|c| c.run.clone()));
        for run in runs {
            let removed = removed_by_run.get(&run).cloned().unwrap_or_default();
            let remained = remained_by_run.get(&run).cloned().unwrap_or_default();
            let why: BTreeSet<Reason> = decision
                .remove
                .iter()
                .filter(|a| a.run == run)
                .map(|a| a.reason)
                .chain(
                    decision
                        .close
                        .iter()
                        .filter(|c| c.run == run)
                        .map(|c| c.reason),
                )
                .collect();
            let why: Vec<&str> = why.iter().map(|r| r.as_str()).collect();
            let message = format!(
                "swept run {run} ({}): {} object(s) removed, {} remained",
                why.join(", "),
                removed.len(),
                remained.len()
            );
            let entry = NewEntry::new(
                if remained.is_empty() {
                    reason::SWEPT
                } else {
                    reason::TEARDOWN_FAILED
                },
                message,
            )
            .subject(ObjectRef::new(Kind::Run, &run))
            .details(serde_json::json!({
                "reasons": why,
                "removed": removed,
                "remained": remained,
                "failures": report.failures,
            }));
            self.store.append_history(entry).await?;
        }
        report.decision = decision;
        Ok(report)
    }
}

/// Sets a run's closing phase (or TeardownFailed with residuals) and, when closing, releases
/// its slot in the same transaction. Retries on conflicts ([`state::retry_conflicts`]).
/// `Ok(false)` when the run is gone or already terminal.
///
/// # Errors
/// The store's errors; a conflict still there after [`state::CONFLICT_ATTEMPTS`] attempts.
pub(crate) async fn close_run(
    store: &Store,
    name: &str,
    phase: RunPhase,
    residuals: &[Object],
    why: Reason,
    now: u64,
) -> state::Result<bool> {
    state::retry_conflicts(
        state::CONFLICT_ATTEMPTS,
        state::Error::is_conflict,
        || async {
            let Some(mut run) = store.get_opt::<Run>(name)? else {
                return Ok(false);
            };
            if run.status.phase.is_terminal() {
                return Ok(false);
            }
            let mut tx = store.transaction();
            if residuals.is_empty() {
                run.status.phase = phase;
                run.status.finished_at_ms = Some(now);
                run.status.residuals.clear();
                run.status.last_error =
                    Some(format!("{}: swept with forced teardown", why.as_str()));
                if let Some(pool) = crate::slots::release_run_slot(store, &run)? {
                    tx.update_status(&pool);
                }
            } else {
                run.status.phase = RunPhase::TeardownFailed;
                run.status.residuals = residuals
                    .iter()
                    .map(|o| format!("{}/{}", o.kind, o.name))
                    .collect();
                run.status.last_error = Some(format!(
                    "forced teardown left {} object(s); retrying",
                    residuals.len()
                ));
            }
            tx.update_status(&run);
            tx.commit().await?;
            Ok(true)
        },
    )
    .await
}

/// The nodes of the swarm other than `local` that no endpoint in `daemons` names, as
/// `hostname (id)` (pure).
pub(crate) fn unreached_nodes(
    nodes: &[swarm::Node],
    local: &str,
    daemons: &NodeDaemons,
) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.meta.id != local && !daemons.has(&n.meta.id, &n.meta.name))
        .map(|n| format!("{} ({})", n.meta.name, n.meta.id))
        .collect()
}

/// Removes `objects` with forced teardown: the one implementation,
/// [`crate::stack::remove_forced`] (services, their containers killed and removed at once on
/// the local daemon and on every node in `nodes`, secrets and configs, then networks and
/// volumes as soon as the containers are gone; a volume listed through a node endpoint
/// through that node's daemon in `nodes`). Retryable failures are retried until `deadline`.
/// Returns the failures of objects whose removal failed for good or timed out.
pub async fn remove_forced(
    swarm: &dyn Swarm,
    nodes: &BTreeMap<String, Arc<dyn Swarm>>,
    objects: &[Object],
    deadline: Duration,
) -> Vec<String> {
    let targets: Vec<stack::Target> = objects
        .iter()
        .map(|o| stack::Target {
            object: stack::ObjectRef::new(o.kind, &o.name, &o.id),
            node: o.node.clone(),
        })
        .collect();
    stack::remove_forced(swarm, nodes, &targets, deadline).await
}

/// The orphan sweep as a background worker: [`Sweeper::sweep`] every `every`. A failed pass is
/// the worker's error (retried with the supervisor's backoff); objects a pass could not remove
/// are logged (the next pass tries them again).
#[derive(Debug)]
pub struct SweepWorker {
    sweeper: Sweeper,
    every: Duration,
}

impl SweepWorker {
    /// Sweeps with `sweeper` every `every`.
    pub fn new(sweeper: Sweeper, every: Duration) -> Self {
        SweepWorker { sweeper, every }
    }
}

impl crate::runtime::workers::Worker for SweepWorker {
    fn name(&self) -> &'static str {
        "orphan-sweep"
    }

    fn schedule(&self) -> String {
        format!("every {}", humantime::format_duration(self.every))
    }

    async fn step(
        &mut self,
    ) -> Result<crate::runtime::workers::Next, crate::runtime::workers::Failure> {
        let r = self.sweeper.sweep().await?;
        if !r.removed.is_empty() || !r.closed.is_empty() || !r.remained.is_empty() {
            tracing::info!(
                removed = r.removed.len(),
                remained = r.remained.len(),
                closed = r.closed.len(),
                "sweep"
            );
        }
        for failure in &r.failures {
            tracing::warn!(%failure, "sweep");
        }
        Ok(crate::runtime::workers::Next::After(self.every))
    }
}

#[cfg(test)]
mod owner_kinds_tests;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;
