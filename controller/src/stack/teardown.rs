//! Teardown: remove a whole stack in dependency order, wait for its containers, verify nothing is left.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::forced::{Forced, Target};
use super::nodes::{self, NodeDaemons, NodeReport};
use super::observe::{Observed, SERVICE_ID_LABEL};
use super::plan::NAMESPACE_LABEL;
use super::retry::{poll_delays, swarm_until};
use super::{Error, ObjectRef, Result, CONCURRENCY};
use crate::swarm::{
    self, Container, ContainerState, Event, LabelFilter, ObjectKind, Swarm, Task, TaskState,
};

/// How containers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Services are removed and their tasks stop on their own, each within its stop grace
    /// period (warm apps, finished runs).
    #[default]
    Graceful,
    /// Right after the services are removed, their containers are killed and removed at once
    /// (orphans whose owner is dead).
    Forced,
}

/// How a teardown runs.
#[derive(Debug, Clone)]
pub struct TeardownOptions {
    /// Graceful or forced.
    pub mode: Mode,
    /// Deadline of the whole teardown: waiting for containers and retrying "in use" stop here.
    pub deadline: Duration,
    /// Longest pause between two looks at the containers and tasks while waiting for them
    /// (pauses start at 50 ms and grow; a container event of the stack ends a pause early).
    pub max_poll: Duration,
    /// Engine endpoints of other nodes, where the stack's tasks may have left containers and
    /// volumes (see [`super::nodes`]). Empty: a node other than this one where tasks ran is a
    /// residual.
    pub nodes: NodeDaemons,
    /// Nodes (ID or hostname) to reach whatever the survey finds: those a previous teardown of
    /// the same stack could not reach (its services, and with them the record of where their
    /// tasks ran, are gone by then), so a retry does not pass without reaching them.
    pub required_nodes: Vec<String>,
}

impl TeardownOptions {
    /// Graceful, within 3 minutes (enough for several 10 s grace periods and slow daemons).
    pub fn graceful() -> Self {
        Self {
            mode: Mode::Graceful,
            deadline: Duration::from_secs(180),
            // Container events end a pause at once; the poll is for task states, which have
            // no events, and for a dropped events stream.
            max_poll: Duration::from_millis(250),
            nodes: NodeDaemons::new(),
            required_nodes: Vec::new(),
        }
    }

    /// Forced, within 1 minute.
    pub fn forced() -> Self {
        Self {
            mode: Mode::Forced,
            deadline: Duration::from_secs(60),
            max_poll: Duration::from_millis(250),
            nodes: NodeDaemons::new(),
            required_nodes: Vec::new(),
        }
    }
}

/// What a teardown removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// The stack.
    pub namespace: String,
    /// Graceful or forced.
    pub mode: Mode,
    /// Objects removed, in the order removal succeeded (services, then networks, secrets,
    /// configs and volumes).
    pub removed: Vec<ObjectRef>,
    /// Objects that were listed but gone by the time hearth removed them (counted as done).
    pub already_gone: Vec<ObjectRef>,
    /// Containers hearth killed and removed: all of them in forced mode; in graceful mode
    /// only those that never started and whose task has ended or is gone (see [`teardown`]).
    pub containers_removed: Vec<ObjectRef>,
    /// Time spent waiting for the services' tasks and containers to go.
    pub containers_wait: Duration,
    /// Time of the whole teardown.
    pub elapsed: Duration,
    /// What was done on other nodes (and on this one when reached through an endpoint).
    pub nodes: Vec<NodeReport>,
}

fn observe_failed(namespace: &str, source: swarm::Error) -> Error {
    Error::ObserveFailed {
        namespace: namespace.to_string(),
        source,
    }
}

/// Records the outcome of one removal.
fn record(
    report: &mut TeardownReport,
    failures: &mut Vec<String>,
    object: ObjectRef,
    result: swarm::Result<()>,
) {
    record_removal(
        &mut report.removed,
        &mut report.already_gone,
        failures,
        object,
        result,
    );
}

/// Records the outcome of one removal: removed, already gone ("not found"), or a failure.
pub(super) fn record_removal(
    removed: &mut Vec<ObjectRef>,
    already_gone: &mut Vec<ObjectRef>,
    failures: &mut Vec<String>,
    object: ObjectRef,
    result: swarm::Result<()>,
) {
    match result {
        Ok(()) => removed.push(object),
        Err(e) if e.is_not_found() => already_gone.push(object),
        Err(e) => failures.push(format!("{object}: {e}")),
    }
}

/// Runs `remove` on each object, at most [`CONCURRENCY`] at once; results in completion order.
pub(super) async fn remove_all<'a, F, Fut>(
    objects: Vec<ObjectRef>,
    remove: F,
) -> Vec<(ObjectRef, swarm::Result<()>)>
where
    F: Fn(ObjectRef) -> Fut,
    Fut: Future<Output = (ObjectRef, swarm::Result<()>)> + 'a,
{
    stream::iter(objects)
        .map(remove)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Removes one object of any removable kind, retrying what may pass later until `deadline`.
pub(super) async fn remove_one(
    swarm: &dyn Swarm,
    object: ObjectRef,
    deadline: Instant,
) -> (ObjectRef, swarm::Result<()>) {
    let id = object.id.as_str();
    let result = match object.kind {
        ObjectKind::Service => swarm_until(deadline, || swarm.remove_service(id)).await,
        ObjectKind::Container => swarm.remove_container(id).await,
        ObjectKind::Network => swarm_until(deadline, || swarm.remove_network(id)).await,
        ObjectKind::Secret => swarm_until(deadline, || swarm.remove_secret(id)).await,
        ObjectKind::Config => swarm_until(deadline, || swarm.remove_config(id)).await,
        ObjectKind::Volume => swarm_until(deadline, || swarm.remove_volume(id)).await,
        // Tasks go with their service; nodes, images and the daemon are not the stack's.
        ObjectKind::Task | ObjectKind::Node | ObjectKind::Image | ObjectKind::Daemon => Ok(()),
    };
    (object, result)
}

/// Removes everything carrying `com.docker.stack.namespace=<namespace>`.
///
/// Order: services; then wait until their tasks and containers are gone — in
/// [`Mode::Forced`] killing and removing the containers at once (those listed together with
/// the services first, right after the services went; then whatever a look finds), and
/// meanwhile removing the
/// secrets and configs (only the services held them); then networks, volumes and what is left
/// of secrets and configs (at once: none of them depends on another). Finally every kind is
/// listed again by the namespace label until nothing is left.
///
/// The wait looks at the containers and tasks, and looks again as soon as the events stream
/// reports an object of the stack changing after the last look began (or after a short pause,
/// 50 ms growing to `options.max_poll`: task states have no events, and events are only
/// hints); so does the final listing (an overlay network's node-local copy goes ~0.2 s after
/// the network is removed, with a `destroy` event). It ends when
/// no container of the stack is left and no task may still create one. Why both: a task that
/// swarm's agent is still preparing when its service is removed creates its container
/// afterwards (state `created`, never started) and then forgets it — the container holds
/// the stack's volume in use (or recreates a volume already removed) for good (measured on
/// Engine 20.10: tasks `preparing` → container `created` ~1 s later → task `shutdown`, the
/// container stays). So teardown waits while a task is still before `ready`, and removes
/// containers that never started and whose task has ended or is gone, in graceful mode too
/// (there is nothing to stop gracefully).
///
/// # Guarantees
/// - "Not found" counts as done; retryable failures ("in use", timeouts, transport) are retried
///   with backoff until the deadline; a removal that fails for good does not stop the others.
/// - Success means the final listing found nothing of the stack (services, tasks that may
///   still create a container, containers, networks, volumes, secrets, configs). No failure
///   is swallowed: failures whose object is gone anyway are logged; otherwise they are in the
///   error.
///
/// # Errors
/// [`Error::Residuals`] naming each leftover object (kind, name, ID) with the failures met;
/// [`Error::ObserveFailed`] if a listing fails for good.
///
/// Other nodes (see [`super::nodes`]): when a service mounts a named volume, the stack's
/// tasks are listed before the services go; every other node where one ran is reached through
/// its endpoint in `options.nodes` while step 3 runs (its containers waited for — forced:
/// removed —, its volumes removed and listed again); a node without an endpoint, or whose
/// endpoint does not answer, is a residual of kind node.
///
/// # Caveats
/// The [`Swarm`] trait reaches one daemon: what other nodes hold is seen only through the
/// configured endpoints. Multi-node teardown is tested on the simulated swarm only.
pub async fn teardown(
    swarm: &dyn Swarm,
    namespace: &str,
    options: &TeardownOptions,
) -> Result<TeardownReport> {
    let started = Instant::now();
    let deadline = started + options.deadline;
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    let mut report = TeardownReport {
        namespace: namespace.to_string(),
        mode: options.mode,
        ..TeardownReport::default()
    };
    let mut failures = Vec::new();
    // Opened before the services go, so no container event of the stack is missed.
    let events = swarm.events();

    // 1. Services (and, in the same round trip, what goes after them; forced, also the
    // containers, so their removal starts right after the services' without another look;
    // and the tasks, for where they ran: see `nodes`).
    let forced = options.mode == Mode::Forced;
    let Observed {
        services,
        tasks,
        containers,
        networks,
        volumes,
        secrets,
        configs,
    } = list_all(swarm, &filter, forced, deadline)
        .await
        .map_err(|e| observe_failed(namespace, e))?;
    // Where tasks ran, before the services (and with them their tasks) go.
    let mounts = nodes::mounts_volumes(&services);
    let node_targets = if mounts || !options.required_nodes.is_empty() {
        let tasks = if mounts { tasks } else { Vec::new() };
        // This daemon's node, as its task containers name it (saves reading `info`).
        let local = containers
            .iter()
            .find_map(|c| c.labels.get(nodes::NODE_ID_LABEL))
            .filter(|id| !id.is_empty())
            .cloned();
        nodes::survey(swarm, options, tasks, local, deadline)
            .await
            .map_err(|e| observe_failed(namespace, e))?
    } else {
        Vec::new()
    };
    // An endpoint configured for this very node: its volumes go through that endpoint.
    let local_by_endpoint = options
        .nodes
        .local_id()
        .is_some_and(|local| node_targets.iter().any(|t| t.id == local));
    let service_names: BTreeMap<String, String> = services
        .iter()
        .map(|s| (s.meta.id.clone(), s.meta.name.clone()))
        .collect();
    let scope = Scope {
        namespace: Some(namespace),
        service_names: &service_names,
    };
    let mut hints = Hints::new(Some(events), scope);
    let service_refs = services
        .iter()
        .map(|s| ObjectRef::new(ObjectKind::Service, &s.meta.name, &s.meta.id));
    let network_refs = networks
        .iter()
        .map(|n| ObjectRef::new(ObjectKind::Network, &n.name, &n.id));
    let volume_refs = volumes
        .iter()
        .filter(|_| !local_by_endpoint)
        .map(|v| ObjectRef::new(ObjectKind::Volume, &v.name, &v.name));
    let referenced = secrets
        .iter()
        .map(|s| ObjectRef::new(ObjectKind::Secret, &s.meta.name, &s.meta.id))
        .chain(
            configs
                .iter()
                .map(|c| ObjectRef::new(ObjectKind::Config, &c.meta.name, &c.meta.id)),
        );
    // Containers and volumes on the other nodes where tasks ran (a network is in use until
    // their containers there are gone too): right after the services went.
    let clean = nodes::clean(
        &node_targets,
        &options.nodes,
        namespace,
        &service_names,
        options,
        deadline,
    );
    let cleaned = if forced {
        // 1–3 by force: the one implementation ([`super::forced`]).
        let targets = service_refs
            .chain(referenced)
            .chain(network_refs)
            .chain(volume_refs)
            .map(Target::local)
            .collect();
        let run = Forced {
            swarm,
            nodes: &BTreeMap::new(),
            scope,
            max_poll: options.max_poll,
            deadline,
        };
        let (removal, cleaned) = run
            .run(targets, Some(containers), &mut hints, clean)
            .await
            .map_err(|e| observe_failed(namespace, e))?;
        report.removed.extend(removal.removed);
        report.already_gone.extend(removal.already_gone);
        report.containers_removed.extend(removal.containers_removed);
        report.containers_wait = removal.containers_wait;
        failures.extend(removal.failures);
        cleaned
    } else {
        let objects = service_refs.collect();
        for (object, result) in remove_all(objects, |o| remove_one(swarm, o, deadline)).await {
            record(&mut report, &mut failures, object, result);
        }
        // 2. Their tasks and containers.
        let waiting = Instant::now();
        let drained = Drain {
            daemon: swarm,
            scope,
            mode: Mode::Graceful,
            tasks: true,
            max_poll: options.max_poll,
            deadline,
            listed: None,
        }
        .run(&mut hints)
        .await
        .map_err(|e| observe_failed(namespace, e))?;
        report.containers_wait = waiting.elapsed();
        report.containers_removed.extend(drained.removed);
        if !drained.left.is_empty() {
            failures.push(format!(
                "{} container(s) or starting task(s) still present at the deadline: {}",
                drained.left.len(),
                super::list(&drained.left)
            ));
            failures.extend(drained.failures);
        }
        // 3. Networks, volumes, secrets and configs. Networks wait for the containers: an
        // overlay network removed while its containers still exist keeps its local copy on
        // the node for seconds (measured on Engine 20.10: ~3 s, against ~0.2 s when removed
        // after them).
        let later = network_refs.chain(volume_refs).chain(referenced).collect();
        let (removed, cleaned) =
            tokio::join!(remove_all(later, |o| remove_one(swarm, o, deadline)), clean);
        for (object, result) in removed {
            record(&mut report, &mut failures, object, result);
        }
        cleaned
    };
    report.nodes = cleaned.reports;
    failures.extend(cleaned.failures);

    // 4. Verify: list again until nothing is left. Swarm finishes some removals after
    // answering (an overlay network's node-local copy lingers for a moment after a forced
    // teardown), and objects may have appeared since the first listing: what is left is
    // removed again.
    let residuals = verify(
        swarm,
        namespace,
        options,
        deadline,
        &mut hints,
        &mut report,
        &mut failures,
    )
    .await?;
    let residuals: Vec<ObjectRef> = residuals.into_iter().chain(cleaned.residuals).collect();
    report.elapsed = started.elapsed();
    if residuals.is_empty() {
        for failure in &failures {
            warn!(
                stack = namespace,
                "teardown: {failure} (the object is gone anyway)"
            );
        }
        info!(
            stack = namespace,
            mode = ?options.mode,
            removed = report.removed.len(),
            elapsed = ?report.elapsed,
            "stack removed"
        );
        return Ok(report);
    }
    Err(Error::Residuals {
        namespace: namespace.to_string(),
        residuals,
        failures,
        report: Box::new(report),
    })
}

/// Containers of the stack on this node: those of its services, or carrying its namespace.
pub(super) fn stack_containers(
    containers: Vec<Container>,
    namespace: Option<&str>,
    service_names: &BTreeMap<String, String>,
) -> Vec<Container> {
    containers
        .into_iter()
        .filter(|c| {
            namespace
                .is_some_and(|ns| c.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(ns))
                || c.labels
                    .get(SERVICE_ID_LABEL)
                    .is_some_and(|id| service_names.contains_key(id))
        })
        .collect()
}

pub(super) fn swarm_containers() -> LabelFilter {
    LabelFilter::all().and_has(SERVICE_ID_LABEL)
}

use crate::swarm::labels::TASK_ID as TASK_ID_LABEL;

/// Whether swarm may still create a container for a task in this state: the task has not
/// reached `ready` (its container is created while it is `preparing`) and has not ended.
fn may_create_container(state: &TaskState) -> bool {
    matches!(
        state,
        TaskState::New
            | TaskState::Allocated
            | TaskState::Pending
            | TaskState::Assigned
            | TaskState::Accepted
            | TaskState::Preparing
    )
}

/// A task as errors name it: `<service>.<slot>` (or the service's name for a global one).
fn task_ref(task: &Task, service_names: &BTreeMap<String, String>) -> ObjectRef {
    let service = service_names
        .get(&task.service_id)
        .map_or(task.service_id.as_str(), String::as_str);
    let name = match task.slot {
        Some(slot) => format!("{service}.{slot} ({:?})", task.state),
        None => format!("{service} ({:?})", task.state),
    };
    ObjectRef::new(ObjectKind::Task, name, &task.id)
}

/// What one look at the stack's containers and tasks asks of the wait.
#[derive(Debug, Default, PartialEq)]
pub(super) struct WaitStep {
    /// Containers to kill and remove now.
    pub(super) remove: Vec<ObjectRef>,
    /// What the wait is still waiting for: containers of the stack, and tasks that may still
    /// create one. Empty: the wait is over.
    pub(super) awaited: Vec<ObjectRef>,
}

/// Decides the next step of the wait from the stack's containers and tasks (pure).
///
/// Forced: every container is removed. Graceful: containers are left to swarm (it stops and
/// removes them within the grace period), except one that never started (`created`) while
/// its task has ended or is gone: swarm forgot it, so it is removed.
pub(super) fn wait_step(
    mode: Mode,
    containers: &[Container],
    tasks: &[Task],
    service_names: &BTreeMap<String, String>,
) -> WaitStep {
    let running_tasks: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.id.as_str())
        .collect();
    let mut step = WaitStep::default();
    for c in containers {
        let object = ObjectRef::new(ObjectKind::Container, &c.name, &c.id);
        // Stopped containers are swarm's to remove (racing its agent gains nothing); one
        // that never started while its task has ended or is gone is forgotten by swarm.
        let orphan = c.state == ContainerState::Created
            && c.labels
                .get(TASK_ID_LABEL)
                .is_none_or(|t| !running_tasks.contains(t.as_str()));
        if mode == Mode::Forced || orphan {
            step.remove.push(object.clone());
        }
        step.awaited.push(object);
    }
    step.awaited.extend(
        tasks
            .iter()
            .filter(|t| may_create_container(&t.state))
            .map(|t| task_ref(t, service_names)),
    );
    step
}

/// Which containers, tasks and events are the stack's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope<'a> {
    /// The stack's namespace: containers and tasks carrying its label are the stack's. `None`
    /// for a selection of objects (the sweeper's): then only its services' containers are.
    pub(super) namespace: Option<&'a str>,
    /// Names of the stack's (removed) services by ID.
    pub(super) service_names: &'a BTreeMap<String, String>,
}

/// Drains one daemon of a stack's containers: the one wait of every teardown (the daemon
/// hearth talks to in graceful and forced teardowns, other nodes' daemons, the sweeper's).
pub(super) struct Drain<'a> {
    /// The daemon whose containers are drained.
    pub(super) daemon: &'a dyn Swarm,
    /// Whose containers.
    pub(super) scope: Scope<'a>,
    /// Forced: every container is killed and removed; graceful: see [`wait_step`].
    pub(super) mode: Mode,
    /// Whether the stack's tasks are listed too (on the manager hearth talks to, with a
    /// namespace: tasks are swarm-wide, so the drains of other nodes need not).
    pub(super) tasks: bool,
    /// Longest pause between two looks.
    pub(super) max_poll: Duration,
    /// When the drain gives up (what is still there is in [`Drained::left`]).
    pub(super) deadline: Instant,
    /// Forced: the containers listed with the services, removed before the first look.
    pub(super) listed: Option<Vec<Container>>,
}

/// What a [`Drain`] did.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// Containers killed and removed.
    pub(super) removed: Vec<ObjectRef>,
    /// What was still awaited at the deadline (containers, tasks that may still create one);
    /// empty when the daemon was drained.
    pub(super) left: Vec<ObjectRef>,
    /// The last failures to remove a container (when `left` is not empty).
    pub(super) failures: Vec<String>,
}

impl Drain<'_> {
    /// Waits until no container of the stack is left on the daemon and no task may still
    /// create one, or the deadline passes. Looks again at once after a removal, on an event of
    /// the stack (`hints`), or after a pause (50 ms growing to `max_poll`).
    ///
    /// # Errors
    /// A listing that fails for good.
    pub(super) async fn run(&mut self, hints: &mut Hints<'_>) -> swarm::Result<Drained> {
        let containers_filter = swarm_containers();
        let tasks_filter = self
            .scope
            .namespace
            .filter(|_| self.tasks)
            .map(|ns| LabelFilter::eq(NAMESPACE_LABEL, ns));
        let mut pauses = poll_delays(self.max_poll);
        let mut drained = Drained::default();
        let mut removed = BTreeSet::new();
        if let Some(listed) = self.listed.take() {
            // The services are gone, so swarm starts no replacement for these. What fails
            // here is seen again by the first look and retried; what the listing missed
            // (a late container, a task before `ready`) is found by it.
            let ours = stack_containers(listed, self.scope.namespace, self.scope.service_names);
            let remove = ours
                .iter()
                .map(|c| ObjectRef::new(ObjectKind::Container, &c.name, &c.id))
                .collect();
            let (_, errors) =
                remove_containers(self.daemon, remove, &mut drained.removed, &mut removed).await;
            for error in errors {
                debug!(stack = ?self.scope.namespace, "teardown: {error}; looking again");
            }
        }
        loop {
            hints.look();
            let (containers, tasks) = futures::try_join!(
                swarm_until(self.deadline, || self
                    .daemon
                    .list_containers(&containers_filter)),
                async {
                    match &tasks_filter {
                        Some(f) => swarm_until(self.deadline, || self.daemon.list_tasks(f)).await,
                        None => Ok(Vec::new()),
                    }
                },
            )?;
            let ours = stack_containers(containers, self.scope.namespace, self.scope.service_names);
            let step = wait_step(self.mode, &ours, &tasks, self.scope.service_names);
            if step.awaited.is_empty() {
                return Ok(drained);
            }
            let (progress, last_errors) =
                remove_containers(self.daemon, step.remove, &mut drained.removed, &mut removed)
                    .await;
            let now = Instant::now();
            if now >= self.deadline {
                drained.left = step.awaited;
                drained.failures = last_errors;
                return Ok(drained);
            }
            if progress {
                // Look again at once: the removals may have been the last thing awaited.
                continue;
            }
            let pause = pauses.next().unwrap_or(self.max_poll);
            hints.pause(pause.min(self.deadline - now)).await;
        }
    }
}

/// Kills and removes containers at once (`removed` holds the IDs already counted); returns
/// whether any went (or was gone) and the failures.
async fn remove_containers(
    swarm: &dyn Swarm,
    containers: Vec<ObjectRef>,
    report: &mut Vec<ObjectRef>,
    removed: &mut BTreeSet<String>,
) -> (bool, Vec<String>) {
    let results = remove_all(containers, |o| async move {
        let result = swarm.remove_container(&o.id).await;
        (o, result)
    })
    .await;
    let mut progress = false;
    let mut errors = Vec::new();
    for (object, result) in results {
        match result {
            Ok(()) => {
                progress = true;
                if removed.insert(object.id.clone()) {
                    report.push(object);
                }
            }
            Err(e) if e.is_not_found() => progress = true,
            Err(e) => errors.push(format!("{object}: {e}")),
        }
    }
    (progress, errors)
}

/// Events of the stack that end a pause early: hints only, the caller always looks again.
pub(super) struct Hints<'a> {
    /// `None` once the stream ended or failed (then pauses run their full length).
    events: Option<BoxStream<'static, swarm::Result<Event>>>,
    /// Whose events.
    scope: Scope<'a>,
    /// When the last look started.
    since: SystemTime,
}

impl<'a> Hints<'a> {
    /// Hints from `events` (opened before the services went, so none is missed); `None`:
    /// pauses run their full length.
    pub(super) fn new(
        events: Option<BoxStream<'static, swarm::Result<Event>>>,
        scope: Scope<'a>,
    ) -> Self {
        Hints {
            events,
            scope,
            since: SystemTime::now(),
        }
    }

    /// Marks the start of a look: events that happened before it are reflected in what it
    /// sees, so they must not end the pause after it (the stream delivers a backlog late: it
    /// connects on its first poll and replays from its opening).
    pub(super) fn look(&mut self) {
        self.since = SystemTime::now();
    }

    /// Returns after `pause`, or earlier when an object of the stack changes.
    pub(super) async fn pause(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        let Some(events) = self.events.as_mut() else {
            tokio::time::sleep_until(until).await;
            return;
        };
        loop {
            match tokio::time::timeout_at(until, events.next()).await {
                Err(_) => return,
                Ok(Some(Ok(event))) => {
                    let stale = event.time.is_some_and(|t| t < self.since);
                    if !stale && concerns(self.scope, &event) {
                        debug!(
                            stack = ?self.scope.namespace,
                            kind = %event.kind,
                            action = %event.action,
                            "event of the stack"
                        );
                        return;
                    }
                }
                Ok(Some(Err(e))) => {
                    debug!(
                        stack = ?self.scope.namespace,
                        "events stream failed: {e}; polling only"
                    );
                    self.events = None;
                    tokio::time::sleep_until(until).await;
                    return;
                }
                Ok(None) => {
                    self.events = None;
                    tokio::time::sleep_until(until).await;
                    return;
                }
            }
        }
    }
}

/// Whether an event may be about an object of the stack: a container of one of its services
/// (task containers are named `<service>.<slot>.<task>`), or a network, volume, secret, config
/// or service named `<namespace>_…`; an event without a name may be.
fn concerns(scope: Scope<'_>, event: &Event) -> bool {
    let in_namespace = |name: &str| {
        scope.namespace.is_some_and(|ns| {
            name.strip_prefix(ns)
                .is_some_and(|rest| rest.starts_with('_'))
        })
    };
    let service_names = scope.service_names;
    match (event.kind, event.name.as_deref()) {
        // Tasks have no events; nodes, images and the daemon are not the stack's.
        (ObjectKind::Task | ObjectKind::Node | ObjectKind::Image | ObjectKind::Daemon, _) => false,
        (_, None) => true,
        (ObjectKind::Container, Some(name)) => {
            let service = name.split('.').next().unwrap_or(name);
            in_namespace(name) || service_names.values().any(|s| s == service)
        }
        (
            ObjectKind::Network
            | ObjectKind::Volume
            | ObjectKind::Secret
            | ObjectKind::Config
            | ObjectKind::Service,
            Some(name),
        ) => in_namespace(name),
    }
}

/// How long verification keeps listing after the deadline, so a teardown that used its whole
/// deadline still gets its removals confirmed.
const SETTLE: Duration = Duration::from_secs(10);

/// Lists the stack until nothing is left or the deadline (at least [`SETTLE`] from now) passes,
/// removing again what is left; an event of the stack ends a pause early. Returns what is
/// still there.
async fn verify(
    swarm: &dyn Swarm,
    namespace: &str,
    options: &TeardownOptions,
    deadline: Instant,
    hints: &mut Hints<'_>,
    report: &mut TeardownReport,
    failures: &mut Vec<String>,
) -> Result<Vec<ObjectRef>> {
    let service_names = hints.scope.service_names;
    let deadline = deadline.max(Instant::now() + SETTLE);
    let mut pauses = poll_delays(options.max_poll);
    loop {
        hints.look();
        let left = residuals(swarm, namespace, service_names, deadline).await?;
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            return Ok(left);
        }
        // Live containers are swarm's to stop in graceful mode; tasks go on their own.
        let again: Vec<ObjectRef> = left
            .into_iter()
            .filter(|o| o.kind != ObjectKind::Task)
            .filter(|o| o.kind != ObjectKind::Container || options.mode == Mode::Forced)
            .collect();
        let results = remove_all(again, |o| async move {
            let id = o.id.clone();
            let result = match o.kind {
                ObjectKind::Service => swarm.remove_service(&id).await,
                ObjectKind::Container => swarm.remove_container(&id).await,
                ObjectKind::Network => swarm.remove_network(&id).await,
                ObjectKind::Secret => swarm.remove_secret(&id).await,
                ObjectKind::Config => swarm.remove_config(&id).await,
                ObjectKind::Volume => swarm.remove_volume(&id).await,
                ObjectKind::Task | ObjectKind::Node | ObjectKind::Image | ObjectKind::Daemon => {
                    Ok(())
                }
            };
            (o, result)
        })
        .await;
        for (object, result) in results {
            match result {
                Ok(()) if object.kind == ObjectKind::Container => {
                    report.containers_removed.push(object)
                }
                Ok(()) => {
                    if !report.removed.contains(&object) {
                        report.removed.push(object)
                    }
                }
                Err(e) if e.is_not_found() => {}
                // Still in use, or still hanging: the next round tries again.
                Err(e) if e.is_retryable() => {}
                Err(e) => failures.push(format!("{object}: {e}")),
            }
        }
        let pause = pauses.next().unwrap_or(options.max_poll);
        hints.pause(pause.min(deadline - now)).await;
    }
}

/// One look at a namespace (`filter`) in one round trip, each list call retried until
/// `deadline`: services, tasks, networks, volumes, secrets, configs and, with `containers`,
/// every swarm task container of this daemon (the caller picks the stack's: a container's
/// labels may lack the namespace).
async fn list_all(
    swarm: &dyn Swarm,
    filter: &LabelFilter,
    containers: bool,
    deadline: Instant,
) -> crate::swarm::Result<Observed> {
    let containers_filter = swarm_containers();
    let (services, tasks, networks, volumes, secrets, configs, containers) = futures::try_join!(
        swarm_until(deadline, || swarm.list_services(filter)),
        swarm_until(deadline, || swarm.list_tasks(filter)),
        swarm_until(deadline, || swarm.list_networks(filter)),
        swarm_until(deadline, || swarm.list_volumes(filter)),
        swarm_until(deadline, || swarm.list_secrets(filter)),
        swarm_until(deadline, || swarm.list_configs(filter)),
        async {
            if containers {
                swarm_until(deadline, || swarm.list_containers(&containers_filter)).await
            } else {
                Ok(Vec::new())
            }
        },
    )?;
    Ok(Observed {
        services,
        tasks,
        containers,
        networks,
        volumes,
        secrets,
        configs,
    })
}

/// Everything of the stack that is still there: services, tasks that may still create a
/// container, containers, networks, secrets, configs, volumes.
async fn residuals(
    swarm: &dyn Swarm,
    namespace: &str,
    service_names: &BTreeMap<String, String>,
    deadline: Instant,
) -> Result<Vec<ObjectRef>> {
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    // The verification must run even when the deadline has passed.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(10));
    let seen = list_all(swarm, &filter, true, deadline)
        .await
        .map_err(|e| observe_failed(namespace, e))?;
    let mut left = Vec::new();
    left.extend(
        seen.services
            .iter()
            .map(|s| ObjectRef::new(ObjectKind::Service, &s.meta.name, &s.meta.id)),
    );
    left.extend(
        seen.tasks
            .iter()
            .filter(|t| may_create_container(&t.state))
            .map(|t| task_ref(t, service_names)),
    );
    left.extend(
        stack_containers(seen.containers, Some(namespace), service_names)
            .iter()
            .map(|c| ObjectRef::new(ObjectKind::Container, &c.name, &c.id)),
    );
    left.extend(
        seen.networks
            .iter()
            .map(|n| ObjectRef::new(ObjectKind::Network, &n.name, &n.id)),
    );
    left.extend(
        seen.secrets
            .iter()
            .map(|s| ObjectRef::new(ObjectKind::Secret, &s.meta.name, &s.meta.id)),
    );
    left.extend(
        seen.configs
            .iter()
            .map(|c| ObjectRef::new(ObjectKind::Config, &c.meta.name, &c.meta.id)),
    );
    left.extend(
        seen.volumes
            .iter()
            .map(|v| ObjectRef::new(ObjectKind::Volume, &v.name, &v.name)),
    );
    Ok(left)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stack::plan::tests::sample_stack;
    use crate::stack::{apply, observe, ApplyOptions, Depth, Owner};
    use crate::swarm::sim::{SimConfig, SimSwarm};
    use crate::swarm::{Call, Labels, Verb};

    async fn deployed(config: SimConfig) -> SimSwarm {
        let swarm = SimSwarm::new(config);
        apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &Owner::operator("s"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        // Another stack that must survive.
        apply(
            &swarm,
            &sample_stack("other", "img:1", "pw"),
            &Owner::operator("other"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm
    }

    fn kinds(objects: &[ObjectRef]) -> Vec<ObjectKind> {
        let mut k: Vec<ObjectKind> = objects.iter().map(|o| o.kind).collect();
        k.sort();
        k
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_teardown_waits_for_containers_then_removes_everything() {
        let swarm = SimSwarm::new(SimConfig {
            stop_delay: Duration::from_secs(4),
            ..SimConfig::default()
        });
        apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &Owner::operator("s"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = teardown(&swarm, "s", &TeardownOptions::graceful())
            .await
            .unwrap();
        assert_eq!(
            kinds(&report.removed),
            [
                ObjectKind::Service,
                ObjectKind::Service,
                ObjectKind::Network,
                ObjectKind::Volume,
                ObjectKind::Secret,
                ObjectKind::Config
            ]
        );
        // The stop grace period in the spec (2 s) caps the simulated stop delay (4 s).
        assert!(
            report.containers_wait >= Duration::from_secs(2),
            "{report:?}"
        );
        assert!(
            report.containers_wait < Duration::from_secs(3),
            "{report:?}"
        );
        assert!(report.containers_removed.is_empty());
        assert!(observe(&swarm, "s", Depth::WithTasks)
            .await
            .unwrap()
            .is_empty());
        // "In use" was never hit: networks and volumes were removed after the containers.
        let removes_before_wait_end = swarm
            .calls()
            .iter()
            .filter(|c| c.call == Call::new(Verb::Remove, ObjectKind::Volume))
            .count();
        assert_eq!(removes_before_wait_end, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_teardown_removes_containers_at_once_and_spares_other_stacks() {
        let swarm = deployed(SimConfig {
            stop_delay: Duration::from_secs(30),
            ..SimConfig::default()
        })
        .await;
        let before = swarm.elapsed();
        let report = teardown(&swarm, "s", &TeardownOptions::forced())
            .await
            .unwrap();
        assert!(
            swarm.elapsed() - before < Duration::from_secs(1),
            "{report:?}"
        );
        assert_eq!(report.containers_removed.len(), 2);
        assert_eq!(report.removed.len(), 6);
        assert!(observe(&swarm, "s", Depth::WithTasks)
            .await
            .unwrap()
            .is_empty());
        let other = observe(&swarm, "other", Depth::WithTasks).await.unwrap();
        assert_eq!(other.services.len(), 2);
        assert_eq!(other.containers.len(), 2);
        assert_eq!(other.volumes.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_teardown_kills_the_containers_listed_with_the_services_right_after_them() {
        let swarm = deployed(SimConfig::default()).await;
        swarm.clear_calls();
        let report = teardown(&swarm, "s", &TeardownOptions::forced())
            .await
            .unwrap();
        assert_eq!(report.containers_removed.len(), 2, "{report:?}");
        let calls: Vec<Call> = swarm.calls().iter().map(|c| c.call).collect();
        let first = |verb, kind| {
            calls
                .iter()
                .position(|c| *c == Call::new(verb, kind))
                .unwrap()
        };
        let listed = first(Verb::List, ObjectKind::Container);
        let services_removed = calls
            .iter()
            .rposition(|c| *c == Call::new(Verb::Remove, ObjectKind::Service))
            .unwrap();
        let killed = first(Verb::Remove, ObjectKind::Container);
        assert!(listed < services_removed, "{calls:?}");
        assert!(services_removed < killed, "{calls:?}");
        // No look in between: the kills follow the service removals at once.
        assert!(
            !calls[services_removed..killed]
                .iter()
                .any(|c| c.verb == Verb::List),
            "{calls:?}"
        );
        assert!(observe(&swarm, "s", Depth::WithTasks)
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_wait_removes_orphans_in_graceful_mode_and_everything_in_forced_mode() {
        let names = BTreeMap::from([("svc1".to_string(), "s_web".to_string())]);
        let container = |id: &str, task: &str, state: ContainerState| Container {
            id: id.into(),
            name: format!("s_web.1.{task}"),
            labels: [(TASK_ID_LABEL.to_string(), task.to_string())].into(),
            image_id: None,
            state,
            health: None,
            status: String::new(),
            created_at: None,
        };
        let task = |id: &str, state: TaskState| Task {
            id: id.into(),
            version: 1,
            service_id: "svc1".into(),
            slot: Some(1),
            node_id: None,
            state,
            desired_state: TaskState::Remove,
            message: None,
            error: None,
            container_id: None,
            labels: Labels::new(),
            container_labels: Labels::new(),
            created_at: None,
            template_digest: None,
        };
        let containers = [
            // Stopping within its grace period.
            container("c1", "t1", ContainerState::Running),
            // Created late for a task that has ended: an orphan.
            container("c2", "t2", ContainerState::Created),
            // Created, its task still running towards start: swarm's.
            container("c3", "t3", ContainerState::Created),
            // Stopped, its task ended: swarm's agent removes it.
            container("c5", "t5", ContainerState::Exited),
        ];
        let tasks = [
            task("t1", TaskState::Running),
            task("t2", TaskState::Shutdown),
            task("t3", TaskState::Ready),
            task("t4", TaskState::Preparing),
            task("t5", TaskState::Shutdown),
        ];
        let ids = |objects: &[ObjectRef]| -> Vec<String> {
            objects.iter().map(|o| o.id.clone()).collect()
        };
        let graceful = wait_step(Mode::Graceful, &containers, &tasks, &names);
        assert_eq!(ids(&graceful.remove), ["c2"]);
        assert_eq!(ids(&graceful.awaited), ["c1", "c2", "c3", "c5", "t4"]);
        assert!(graceful.awaited[4].name.starts_with("s_web.1"));
        let forced = wait_step(Mode::Forced, &containers, &tasks, &names);
        assert_eq!(ids(&forced.remove), ["c1", "c2", "c3", "c5"]);
        assert_eq!(ids(&forced.awaited), ["c1", "c2", "c3", "c5", "t4"]);
        // Ended or running tasks without containers are not waited for.
        let done = wait_step(
            Mode::Graceful,
            &[],
            &[
                task("t1", TaskState::Running),
                task("t2", TaskState::Failed),
            ],
            &names,
        );
        assert_eq!(done, WaitStep::default());
    }

    #[tokio::test(start_paused = true)]
    async fn teardown_right_after_apply_waits_for_tasks_still_preparing_and_leaves_nothing() {
        for options in [TeardownOptions::graceful(), TeardownOptions::forced()] {
            let swarm = SimSwarm::new(SimConfig::default());
            swarm.create_late_containers(true);
            apply(
                &swarm,
                &sample_stack("s", "img:1", "pw"),
                &Owner::operator("s"),
                &ApplyOptions::default(),
            )
            .await
            .unwrap();
            let report = teardown(&swarm, "s", &options).await.unwrap();
            // The containers came ~1 s after the services went, created, never started.
            assert_eq!(report.containers_removed.len(), 2, "{report:?}");
            assert!(report.containers_wait >= Duration::from_millis(900));
            assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
            tokio::time::sleep(Duration::from_secs(30)).await;
            let left = observe(&swarm, "s", Depth::WithTasks).await.unwrap();
            assert!(left.is_empty(), "{:?}: {left:#?}", options.mode);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_teardown_notices_the_last_container_going_by_its_event() {
        let swarm = SimSwarm::new(SimConfig {
            stop_delay: Duration::from_millis(1100),
            ..SimConfig::default()
        });
        let mut stack = sample_stack("s", "img:1", "pw");
        for svc in &mut stack.services {
            let cs = svc
                .task_template
                .as_mut()
                .unwrap()
                .container_spec
                .as_mut()
                .unwrap();
            cs.stop_grace_period = Some(10_000_000_000);
        }
        apply(
            &swarm,
            &stack,
            &Owner::operator("s"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let options = TeardownOptions {
            // A poll alone would notice the containers going up to 2 s late.
            max_poll: Duration::from_secs(2),
            ..TeardownOptions::graceful()
        };
        let report = teardown(&swarm, "s", &options).await.unwrap();
        assert!(
            report.containers_wait >= Duration::from_millis(1100),
            "{report:?}"
        );
        assert!(
            // Polls alone would look at 1039 ms and 1608 ms.
            report.containers_wait < Duration::from_millis(1110),
            "{report:?}"
        );
        let opened = swarm
            .calls()
            .iter()
            .filter(|c| c.call == Call::new(Verb::Events, ObjectKind::Daemon))
            .count();
        assert_eq!(opened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn in_use_volumes_are_retried_until_their_containers_are_gone() {
        let swarm = deployed(SimConfig::default()).await;
        // A service of another stack mounts this stack's volume, so the volume stays in use
        // after this stack's own containers are gone — until that service goes 5 s later.
        let mut intruder = sample_stack("x", "img:1", "pw");
        for svc in &mut intruder.services {
            let cs = svc
                .task_template
                .as_mut()
                .unwrap()
                .container_spec
                .as_mut()
                .unwrap();
            cs.mounts.as_mut().unwrap()[0].source = Some("s_data".into());
        }
        apply(
            &swarm,
            &intruder,
            &Owner::operator("x"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let remover = {
            let swarm = swarm.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                for s in swarm
                    .list_services(&LabelFilter::eq(NAMESPACE_LABEL, "x"))
                    .await
                    .unwrap()
                {
                    swarm.remove_service(&s.meta.id).await.unwrap();
                }
            })
        };
        swarm.clear_calls();
        let before = swarm.elapsed();
        let report = teardown(&swarm, "s", &TeardownOptions::graceful())
            .await
            .unwrap();
        remover.await.unwrap();
        assert!(
            report.removed.iter().any(|o| o.name == "s_data"),
            "{report:?}"
        );
        let volume_removes = swarm
            .calls()
            .iter()
            .filter(|c| c.call == Call::new(Verb::Remove, ObjectKind::Volume))
            .count();
        assert!(
            volume_removes > 2,
            "in use must be retried: {volume_removes}"
        );
        // Removed once the intruder's containers stopped (5 s + 1 s stop delay), at the next
        // retry (at most 2 s apart, doubled by jitter).
        assert!(swarm.elapsed() - before >= Duration::from_secs(6));
        assert!(swarm.elapsed() - before <= Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn teardown_succeeds_through_a_fifth_of_calls_failing() {
        for seed in 1..=5 {
            let swarm = deployed(SimConfig {
                seed,
                ..SimConfig::default()
            })
            .await;
            swarm.fail_fraction(0.2);
            let mode = if seed % 2 == 0 {
                TeardownOptions::forced()
            } else {
                TeardownOptions::graceful()
            };
            let report = teardown(&swarm, "s", &mode).await.unwrap();
            assert_eq!(
                report.removed.len() + report.already_gone.len(),
                6,
                "{report:?}"
            );
            swarm.fail_fraction(0.0);
            assert!(observe(&swarm, "s", Depth::WithTasks)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(
                observe(&swarm, "other", Depth::Objects)
                    .await
                    .unwrap()
                    .services
                    .len(),
                2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_removal_that_hangs_ends_in_an_error_naming_the_leftovers() {
        let swarm = deployed(SimConfig {
            call_timeout: Duration::from_secs(2),
            ..SimConfig::default()
        })
        .await;
        swarm.hang_removals(ObjectKind::Network, true);
        swarm.hang_removals(ObjectKind::Config, true);
        let options = TeardownOptions {
            deadline: Duration::from_secs(20),
            ..TeardownOptions::forced()
        };
        let err = teardown(&swarm, "s", &options).await.unwrap_err();
        let Error::Residuals {
            residuals,
            failures,
            report,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(kinds(residuals), [ObjectKind::Network, ObjectKind::Config]);
        let text = err.to_string();
        assert!(text.contains("network s_default ("), "{text}");
        assert!(text.contains("config s_conf-"), "{text}");
        assert!(
            failures.iter().any(|f| f.contains("timed out")),
            "{failures:?}"
        );
        assert_eq!(report.removed.len(), 4, "services, secret and volume went");
        assert!(swarm.elapsed() < Duration::from_secs(3 + 20 + 15));
    }

    fn event(kind: ObjectKind, name: Option<&str>, time: Option<SystemTime>) -> Event {
        Event {
            kind,
            action: "destroy".to_string(),
            id: "x".to_string(),
            name: name.map(str::to_string),
            time,
        }
    }

    #[test]
    fn events_concern_the_stack_by_name_prefix_or_service() {
        let services = BTreeMap::from([("id1".to_string(), "custom".to_string())]);
        let yes = [
            event(ObjectKind::Network, Some("ns_net"), None),
            event(ObjectKind::Volume, Some("ns_data"), None),
            event(ObjectKind::Container, Some("ns_web.1.abc"), None),
            event(ObjectKind::Container, Some("custom.1.abc"), None),
            event(ObjectKind::Volume, None, None),
        ];
        let scope = Scope {
            namespace: Some("ns"),
            service_names: &services,
        };
        for e in &yes {
            assert!(concerns(scope, e), "{e:?}");
        }
        let no = [
            event(ObjectKind::Network, Some("ns2_net"), None),
            event(ObjectKind::Network, Some("nsnet"), None),
            event(ObjectKind::Container, Some("other_web.1.abc"), None),
            event(ObjectKind::Node, Some("ns_node"), None),
            event(ObjectKind::Node, None, None),
        ];
        for e in &no {
            assert!(!concerns(scope, e), "{e:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_from_before_the_last_look_does_not_end_the_pause() {
        let services = BTreeMap::new();
        let before = SystemTime::now() - Duration::from_secs(1);
        let old = event(ObjectKind::Network, Some("ns_net"), Some(before));
        let mut hints = Hints::new(
            Some(stream::iter([Ok(old)]).chain(stream::pending()).boxed()),
            Scope {
                namespace: Some("ns"),
                service_names: &services,
            },
        );
        hints.since = SystemTime::UNIX_EPOCH;
        hints.look();
        let started = Instant::now();
        hints.pause(Duration::from_millis(200)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(200));

        let fresh = event(ObjectKind::Network, Some("ns_net"), Some(SystemTime::now()));
        hints.events = Some(stream::iter([Ok(fresh)]).chain(stream::pending()).boxed());
        let started = Instant::now();
        hints.pause(Duration::from_millis(200)).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "a fresh event ends it");
    }
}
