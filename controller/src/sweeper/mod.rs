//! The orphan sweeper: finds runs whose owner died or lease expired and marks them for the run reconciler to close; removes, with forced teardown, what hearth owns of runs that are over or unknown.
//!
//! One pass: list every object kind in the scope (services, networks, volumes, secrets,
//! configs; with a narrowed scope, once more for every object with a stack namespace, so
//! adoption by namespace works), read the runs from the store, [`decide()`] (pure). A
//! recorded run whose owner died or lease expired is only marked (condition [`CLOSING`] with
//! the reason): its run reconciler ([`crate::runs::reconcile`]) closes it with
//! [`Sweeper::close`] — one reconcile of that run at a time — and the pass waits for that
//! closure to report it. The objects of runs that are over or not recorded at all (no run to
//! reconcile) are removed by the pass itself. Removal: services, then their containers at
//! once, then networks, secrets, configs, then volumes; then list again to verify — and while
//! selected objects are still there (containers stopping, Docker's lists catching up), remove
//! and list again until they are gone or [`SETTLE`] passes: a run whose objects are going is
//! not judged failed (issue 14, item 9). A closed run gets phase Orphaned/Expired, its slot
//! released in the same transaction; one history entry per run says what was removed and
//! what remained.
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

use crd::condition::{find_condition, set_condition};
use crd::{Condition, ConditionStatus, Kind, Run, RunPhase};
use serde::Serialize;
use state::history::{reason, NewEntry, ObjectRef};
use state::{Clock, Store};
use tokio::time::Instant;

use crate::liveness::Checker;
use crate::stack::{self, NodeDaemons, NAMESPACE_LABEL};
use crate::swarm::{self, LabelFilter, ObjectKind, Swarm};

pub use decide::{decide, CloseRun, Decision, Object, Reason, SweepAction};

/// Condition type of a run the sweeper found over (owner dead, lease expired): the run
/// reconciler closes it. Its reason is the [`Reason::code`].
pub const CLOSING: &str = "Closing";

/// Longest time a removal keeps removing and listing again while selected objects are still
/// listed (a killed run's containers take a moment to stop and release networks and volumes)
/// before what is left is judged to remain.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The reason a run was marked for closing, if it was (see [`CLOSING`]).
pub fn closing_reason(run: &Run) -> Option<Reason> {
    find_condition(&run.status.conditions, CLOSING)
        .filter(|c| c.status == ConditionStatus::True)
        .and_then(|c| Reason::from_code(&c.reason))
}

/// What closing one run did ([`Sweeper::close`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Closure {
    /// The run.
    pub run: String,
    /// Why it was closed.
    pub reason: Reason,
    /// Its objects removed (or found gone).
    pub removed: Vec<Object>,
    /// Its objects still present after [`SETTLE`]: the run stays TeardownFailed.
    pub remained: Vec<Object>,
    /// Errors of the last attempt, and nodes that could not be seen.
    pub failures: Vec<String>,
    /// Whether the run's record was changed (not when it was gone or already over).
    pub recorded: bool,
}

/// Per run a pass removed objects of: those removed, those remaining, and why.
type ByRun<'a> = BTreeMap<&'a str, (Vec<Object>, Vec<Object>, BTreeSet<Reason>)>;

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
    /// Tests of the sweeper with runs (`runs::sweep_tests`) narrow its scope or add nodes.
    pub(crate) config: Config,
    metrics: Option<metrics::Metrics>,
    /// (local node ID, nodes in the swarm) from `info`, read once.
    swarm_info: Arc<std::sync::OnceLock<(String, u64)>>,
    /// Closures done by the run reconciler, for the passes waiting for them.
    closures: tokio::sync::broadcast::Sender<Arc<Closure>>,
    /// The run controller, told of each run this sweeper marks: the mark is a status write,
    /// which does not trigger a reconcile by itself (the change feed skips status writes, a
    /// controller's own), so without it a marked run waited for the next resync (60 s).
    run_controller: Arc<std::sync::Mutex<Option<crate::runtime::Handle>>>,
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

/// How long one listing call of a pass is retried while it fails with a retryable error (the
/// shared Docker retry, [`crate::stack::retry::swarm_until`]) before the pass fails.
pub const LIST_RETRY: Duration = Duration::from_secs(10);

/// Runs listing call `op` until it succeeds, fails for good, or [`LIST_RETRY`] passed. A
/// transient failure of one of a pass's five-plus listings used to fail the whole pass (with the
/// sim's 10 % fault rate, four passes in ten), and the worker's backoff then grew to 30 s.
async fn listed<'a, T, F>(op: F) -> swarm::Result<T>
where
    F: FnMut() -> swarm::SwarmFuture<'a, T>,
{
    crate::stack::retry::swarm_until(Instant::now() + LIST_RETRY, op).await
}

/// Lists every service, network, volume, secret and config in `scope` (one call per kind, each
/// retried while it fails transiently, up to [`LIST_RETRY`]).
///
/// # Errors
/// [`Error::ObserveFailed`].
pub async fn observe(swarm: &dyn Swarm, scope: &LabelFilter) -> Result<Vec<Object>> {
    let all = scope;
    let (services, networks, volumes, secrets, configs) = futures::try_join!(
        listed(|| swarm.list_services(all)),
        listed(|| swarm.list_networks(all)),
        listed(|| swarm.list_volumes(all)),
        listed(|| swarm.list_secrets(all)),
        listed(|| swarm.list_configs(all)),
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
            closures: tokio::sync::broadcast::channel(1024).0,
            run_controller: Arc::default(),
        }
    }

    /// Tells `handle`'s run controller (the one whose reconciler calls [`Sweeper::close`]) of
    /// every run this sweeper (and its clones) marks for closing, so it closes it at once
    /// (the latest controller made replaces an earlier one, as after a restart in a test).
    /// [`crate::runs::reconcile::controller`] does this.
    pub fn close_through(&self, handle: crate::runtime::Handle) {
        *self
            .run_controller
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
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
                    let info = listed(|| self.swarm.info()).await?;
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
            let all = LabelFilter::all();
            let nodes = listed(|| self.swarm.list_nodes(&all))
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
            // Closed runs' objects were counted by `close`.
            let closed: BTreeSet<&str> = report
                .decision
                .close
                .iter()
                .map(|c| c.run.as_str())
                .collect();
            let own = report
                .decision
                .remove
                .iter()
                .filter(|a| !closed.contains(a.run.as_str()));
            let own: BTreeSet<(ObjectKind, &str)> =
                own.map(|a| (a.object.kind, a.object.id.as_str())).collect();
            let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
            for o in report
                .removed
                .iter()
                .filter(|o| own.contains(&(o.kind, o.id.as_str())))
            {
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
        // Recorded runs to close are their reconciler's: marked here, closed there.
        let closing: BTreeMap<String, Reason> = decision
            .close
            .iter()
            .map(|c| (c.run.clone(), c.reason))
            .collect();
        let mut closures = self.closures.subscribe();
        let mut waiting = BTreeSet::new();
        for (run, why) in &closing {
            match mark_closing(&self.store, run, *why, self.clock.now_ms()).await {
                Ok(true) => {
                    let controller = self
                        .run_controller
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some(controller) = controller {
                        controller.trigger(ObjectRef::new(Kind::Run, run));
                    }
                    waiting.insert(run.clone());
                }
                Ok(false) => {}
                Err(e) => report
                    .failures
                    .push(format!("marking run {run} for closing: {e}")),
            }
        }
        // Objects of runs that are over or unknown: no reconciler closes those.
        let actions: Vec<SweepAction> = decision
            .remove
            .iter()
            .filter(|a| !closing.contains_key(&a.run))
            .cloned()
            .collect();
        if !actions.is_empty() {
            let selected: Vec<Object> = actions.iter().map(|a| a.object.clone()).collect();
            let (remained, failures) = self.remove_settled(&observed.daemons, &selected).await?;
            report.failures.extend(failures);
            let gone = |o: &Object| !remained.contains(o);
            let mut by_run: ByRun<'_> = BTreeMap::new();
            for a in &actions {
                let entry = by_run.entry(a.run.as_str()).or_default();
                if gone(&a.object) {
                    report.removed.push(a.object.clone());
                    entry.0.push(a.object.clone());
                } else {
                    report.remained.push(a.object.clone());
                    entry.1.push(a.object.clone());
                }
                entry.2.insert(a.reason);
            }
            // History: one entry per run touched.
            for (run, (removed, remained, why)) in by_run {
                let why: Vec<Reason> = why.into_iter().collect();
                self.record(run, &why, &removed, &remained, &report.failures)
                    .await?;
            }
        }
        // The closures of the marked runs, as their reconciler reports them.
        let until = Instant::now() + self.config.deadline + SETTLE;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(until, closures.recv()).await {
                Ok(Ok(c)) => {
                    if !waiting.remove(&c.run) {
                        continue;
                    }
                    report.removed.extend(c.removed.iter().cloned());
                    report.remained.extend(c.remained.iter().cloned());
                    // A node the pass could not see is named once per pass, not again by
                    // each closure that could not see it either.
                    for f in &c.failures {
                        if !report.failures.contains(f) {
                            report.failures.push(f.clone());
                        }
                    }
                    match (c.recorded, c.remained.is_empty()) {
                        (true, true) => report.closed.push(c.run.clone()),
                        (true, false) => report.teardown_failed.push(c.run.clone()),
                        (false, _) => {}
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => {
                    report.failures.push(format!(
                        "run(s) {} marked for closing but not closed by the run reconciler yet",
                        waiting.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                    break;
                }
            }
        }
        report.decision = decision;
        Ok(report)
    }

    /// Removes `selected` with forced teardown, then lists again; while some are still listed,
    /// removes and lists those again (backing off up to 1 s) until none is or [`SETTLE`]
    /// passed. Returns the objects still present and the last attempt's failures.
    ///
    /// # Errors
    /// [`Error::ObserveFailed`], [`Error::StoreFailed`] of a verifying listing.
    async fn remove_settled(
        &self,
        daemons: &BTreeMap<String, Arc<dyn Swarm>>,
        selected: &[Object],
    ) -> Result<(Vec<Object>, Vec<String>)> {
        let settle = Instant::now() + SETTLE;
        let mut pause = Duration::from_millis(100);
        let mut left: Vec<Object> = selected.to_vec();
        loop {
            let failures =
                remove_forced(self.swarm.as_ref(), daemons, &left, self.config.deadline).await;
            // Verify (adopted objects are outside the scope: list them the same way).
            let runs = self.store.list::<Run>()?.items;
            let present: BTreeSet<(ObjectKind, String, Option<String>)> = self
                .observe_owned(&runs)
                .await?
                .objects
                .into_iter()
                .map(|o| (o.kind, o.id, o.node))
                .collect();
            left.retain(|o| present.contains(&(o.kind, o.id.clone(), o.node.clone())));
            if left.is_empty() {
                return Ok((left, Vec::new()));
            }
            if Instant::now() >= settle {
                return Ok((left, failures));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Records one history entry for run `run`: Swept when nothing remained, else
    /// TeardownFailed.
    async fn record(
        &self,
        run: &str,
        why: &[Reason],
        removed: &[Object],
        remained: &[Object],
        failures: &[String],
    ) -> Result<()> {
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
        .subject(ObjectRef::new(Kind::Run, run))
        .details(serde_json::json!({
            "reasons": why,
            "removed": removed,
            "remained": remained,
            "failures": failures,
        }));
        self.store.append_history(entry).await?;
        Ok(())
    }

    /// Closes run `name` (marked [`CLOSING`] for `why`): removes with forced teardown every
    /// object hearth owns of it (labels, or adoption by its assigned stack namespace; never a
    /// foreign object sharing a namespace), waits for them to go ([`SETTLE`]), then records
    /// the run Orphaned/Expired with its slot released in the same transaction — or
    /// TeardownFailed with what remained — and one history entry. Called by the run
    /// reconciler only, one reconcile of the run at a time.
    ///
    /// # Errors
    /// [`Error::ObserveFailed`], [`Error::StoreFailed`] (nothing was recorded then).
    pub async fn close(&self, name: &str, why: Reason) -> Result<Closure> {
        let runs = self.store.list::<Run>()?.items;
        let observed = self.observe_owned(&runs).await?;
        let assigned = decide::assigned_stacks(&runs);
        let selected: Vec<Object> = observed
            .objects
            .iter()
            .filter(|o| decide::owning_run(o, &assigned).is_some_and(|(run, _)| run == name))
            .cloned()
            .collect();
        let (remained, mut failures) = if selected.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.remove_settled(&observed.daemons, &selected).await?
        };
        failures.splice(0..0, observed.unseen);
        let removed: Vec<Object> = selected
            .iter()
            .filter(|o| !remained.contains(o))
            .cloned()
            .collect();
        if let Some(metrics) = &self.metrics {
            let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
            for o in &removed {
                *by_kind.entry(o.kind.as_str()).or_default() += 1;
            }
            for (kind, n) in by_kind {
                metrics.add_orphans_swept(kind, n);
            }
        }
        let phase = why.closing_phase().unwrap_or(RunPhase::Orphaned);
        let recorded = close_run(
            &self.store,
            name,
            phase,
            &remained,
            why,
            self.clock.now_ms(),
        )
        .await?;
        if recorded || !removed.is_empty() || !remained.is_empty() {
            self.record(name, &[why], &removed, &remained, &failures)
                .await?;
        }
        let closure = Arc::new(Closure {
            run: name.to_string(),
            reason: why,
            removed,
            remained,
            failures,
            recorded,
        });
        // Nobody waiting is fine: the history has it.
        let _ = self.closures.send(Arc::clone(&closure));
        Ok(Arc::unwrap_or_clone(closure))
    }
}

/// Marks run `name` for closing for `why` (condition [`CLOSING`]), unless it is gone, over, or
/// marked already. `Ok(true)` when it is (now) marked and not over.
///
/// # Errors
/// The store's errors; a conflict still there after [`state::CONFLICT_ATTEMPTS`] attempts.
pub(crate) async fn mark_closing(
    store: &Store,
    name: &str,
    why: Reason,
    now: u64,
) -> state::Result<bool> {
    edit_open_run(store, name, move |mut run| async move {
        if closing_reason(&run).is_some() {
            return Ok(true);
        }
        let generation = run.metadata.generation;
        set_condition(
            &mut run.status.conditions,
            Condition::new(
                CLOSING,
                ConditionStatus::True,
                why.code(),
                format!("{}: closing with forced teardown", why.as_str()),
                now,
                generation,
            ),
        );
        store.update_status(&run).await?;
        Ok(true)
    })
    .await
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
    edit_open_run(store, name, move |mut run| async move {
        let mut tx = store.transaction();
        if residuals.is_empty() {
            run.status.phase = phase;
            run.status.finished_at_ms = Some(now);
            run.status.residuals.clear();
            run.status.last_error = Some(format!("{}: swept with forced teardown", why.as_str()));
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
    })
    .await
}

/// The one read-modify-write of a run the sweeper does: reads run `name` and hands it to
/// `edit` (which writes it) unless it is gone or terminal, again on a store conflict
/// ([`state::retry_conflicts`]). `Ok(false)` when the run is gone or already terminal.
///
/// # Errors
/// The store's errors and `edit`'s; a conflict still there after [`state::CONFLICT_ATTEMPTS`]
/// attempts.
async fn edit_open_run<F, Fut>(store: &Store, name: &str, edit: F) -> state::Result<bool>
where
    F: Fn(Run) -> Fut,
    Fut: std::future::Future<Output = state::Result<bool>>,
{
    state::retry_conflicts(
        state::CONFLICT_ATTEMPTS,
        state::Error::is_conflict,
        || async {
            let Some(run) = store.get_opt::<Run>(name)? else {
                return Ok(false);
            };
            if run.status.phase.is_terminal() {
                return Ok(false);
            }
            edit(run).await
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
