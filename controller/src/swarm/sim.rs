//! A simulated swarm: in memory, deterministic, converging over (virtual) tokio time.
//!
//! [`SimSwarm`] implements [`Swarm`] for tests of scale, faults and timing. Time is tokio's
//! clock, so tests run it paused (`#[tokio::test(start_paused = true)]`) and a minute of swarm
//! life passes in microseconds. IDs, fault draws and ordering come from one seeded RNG: the
//! same seed and the same calls give the same run.
//!
//! # How the simulation behaves
//! - A task starts `start_delay` after it is created (pending → running), with a container.
//!   With a healthcheck, the container is `starting` until one interval has passed, then
//!   `healthy` — or `unhealthy` after `retries` intervals for images marked with
//!   [`SimSwarm::set_unhealthy_image`]; an unhealthy task fails and is replaced after
//!   `restart_delay`.
//! - Removing a service stops its tasks: each container goes away after `stop_delay` (capped
//!   by the spec's stop grace period). Updating a service's template or mode replaces all its
//!   tasks at once (stop-first, parallelism unlimited: simpler than swarmkit's rolling update).
//! - A volume is in use while any container that mounts it exists; a network while a service
//!   or container uses it; a secret or config while a service refers to it; an image
//!   ([`SimSwarm::add_image`]) while a container runs from it (containers record the image
//!   their spec's reference named when they started).
//! - Faults: [`SimSwarm::fail_next`], [`SimSwarm::fail_fraction`], [`SimSwarm::set_latency`],
//!   [`SimSwarm::hang_removals`] (a kind), [`SimSwarm::hang_removal_of`] (one object);
//!   [`SimSwarm::restart_daemon`] ends every events stream; [`SimSwarm::remove_volume_driver`]
//!   makes creating a volume with that driver fail with "not found", as Docker answers when
//!   the volume plugin is not installed, and keeps a task mounting such a volume pending ("no
//!   suitable node (missing plugin on N node)"), as Swarm's scheduler does.
//! - Every call is logged ([`SimSwarm::calls`]) before faults apply.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, BoxStream, StreamExt};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use super::error::{Error, Result};
use super::spec;
use super::types::*;
use super::{with_deadline, Swarm, SwarmFuture, DEFAULT_CALL_TIMEOUT};

mod table;

use table::{Row, Table};

/// Finished tasks kept per service slot (swarmkit's default task history limit).
const TASK_HISTORY: usize = 5;

/// Timings and identity of a simulated swarm.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice (IDs, fault draws).
    pub seed: u64,
    /// Deadline of every call.
    pub call_timeout: Duration,
    /// Created → running.
    pub start_delay: Duration,
    /// How long a container takes to stop (capped by the spec's stop grace period).
    pub stop_delay: Duration,
    /// Failed task → its replacement is created.
    pub restart_delay: Duration,
    /// Healthcheck interval when the spec gives none (Docker's default).
    pub default_health_interval: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            start_delay: Duration::from_secs(1),
            stop_delay: Duration::from_secs(1),
            restart_delay: Duration::from_secs(5),
            default_health_interval: Duration::from_secs(30),
        }
    }
}

/// The error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// [`Error::Transport`] (connection refused).
    Transport,
    /// [`Error::Unavailable`] (HTTP 503).
    Unavailable,
    /// [`Error::Rejected`] with status 500.
    ServerError,
}

/// One logged call, with the virtual time since the swarm was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedCall {
    /// The call.
    pub call: Call,
    /// When it was received.
    pub at: Duration,
}

/// A simulated swarm. Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct SimSwarm {
    shared: Arc<Shared>,
    /// The node whose daemon this handle talks to: containers and volumes are that node's
    /// (the manager's for [`SimSwarm::new`]; another one for [`SimSwarm::node_view`]).
    node: String,
}

/// One node of a simulated swarm.
#[derive(Debug, Clone)]
struct SimNode {
    id: String,
    hostname: String,
}

struct Shared {
    config: SimConfig,
    state: Mutex<State>,
    /// Wakes the driver when a transition is scheduled earlier than the one it sleeps on.
    wake: Notify,
}

/// Something that happens to a task at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Pending → running, with a container.
    Start,
    /// The first health verdict.
    HealthVerdict,
    /// Unhealthy / killed: the task fails.
    Fail,
    /// The container finished stopping: it is removed.
    Stopped,
    /// Create a replacement for a failed task of the same slot.
    Replace,
    /// The task record is deleted (its container, if any, stays).
    Forget,
}

struct SimService {
    spec: spec::ServiceSpec,
    meta: Meta,
    /// [`digest_of`] `spec`, kept with it (set wherever `spec` is): the real daemon stores a
    /// service's spec once and its listings only read it, so a listing here must not hash
    /// every template again (a resync's listing of 10,000 services did).
    template_digest: Option<String>,
}

struct SimTask {
    task: Task,
    /// Its service's labels at creation. The real tasks list matches its `label` filter
    /// against these (swarmkit's task `ServiceAnnotations`), while the task's own labels, the
    /// ones it shows, are empty (measured on the real cluster, docs/RELIABILITY.md).
    service_labels: Labels,
    next: Option<(Instant, Step)>,
    /// The removed service's spec, for a task that still creates its container after its
    /// service went ([`SimSwarm::create_late_containers`]).
    late: Option<spec::ServiceSpec>,
}

struct SimContainer {
    container: Container,
    /// The node it runs on.
    node: String,
    task_id: String,
    volumes: Vec<String>,
    networks: Vec<String>,
}

struct SimObject {
    meta: Meta,
    /// Extra fields shown by list calls (network driver/scope, volume driver).
    driver: String,
    scope: String,
}

impl Row for SimService {
    fn labels(&self) -> &Labels {
        &self.meta.labels
    }
    fn name(&self) -> Option<&str> {
        Some(&self.meta.name)
    }
}

impl Row for SimTask {
    fn labels(&self) -> &Labels {
        &self.service_labels
    }
    fn name(&self) -> Option<&str> {
        None
    }
    fn owner(&self) -> Option<&str> {
        Some(&self.task.service_id)
    }
}

impl Row for SimContainer {
    fn labels(&self) -> &Labels {
        &self.container.labels
    }
    fn name(&self) -> Option<&str> {
        Some(&self.container.name)
    }
}

impl Row for SimObject {
    fn labels(&self) -> &Labels {
        &self.meta.labels
    }
    fn name(&self) -> Option<&str> {
        Some(&self.meta.name)
    }
}

struct State {
    epoch: Instant,
    rng: StdRng,
    next_version: u64,
    /// The manager's node ID (`nodes[0]`).
    node_id: String,
    /// Every node, the manager first.
    nodes: Vec<SimNode>,
    /// Round-robin cursor of task placement.
    next_node: usize,
    /// Nodes whose daemon does not answer (calls through their view fail with a transport
    /// error).
    unreachable: BTreeSet<String>,
    services: Table<SimService>,
    tasks: Table<SimTask>,
    /// Every task's scheduled step as `(when, task ID)`, in the order [`State::advance`]
    /// applies them. Entries are added whenever a task's `next` is set
    /// ([`State::schedule`]) and never removed early: an entry that no longer matches its
    /// task's `next` is stale and skipped when it comes due.
    due: BTreeSet<(Instant, String)>,
    containers: Table<SimContainer>,
    /// Containers started outside the swarm (`docker run`: a CI step), by ID.
    step_containers: BTreeMap<String, Container>,
    networks: Table<SimObject>,
    /// Volumes by node ID, then by name (volumes are node-local).
    volumes: BTreeMap<String, Table<SimObject>>,
    secrets: Table<SimObject>,
    configs: Table<SimObject>,
    /// Images by ID.
    images: BTreeMap<String, Image>,
    events: broadcast::Sender<Event>,
    log: Vec<LoggedCall>,
    /// Every remove call's kind and target (ID or name, as given), in order.
    removals: Vec<(ObjectKind, String)>,
    faults: VecDeque<(Option<Call>, Fault)>,
    /// Write calls (create, update, remove) received so far, and the one that fails.
    writes: usize,
    failing_write: Option<(usize, Fault)>,
    fail_fraction: f64,
    latency: Duration,
    hang: BTreeSet<ObjectKind>,
    hang_objects: BTreeSet<String>,
    unhealthy_images: BTreeSet<String>,
    missing_volume_drivers: BTreeSet<String>,
    late_containers: bool,
}

impl SimSwarm {
    /// A simulated single-node swarm. Starts a driver task that advances the simulation as
    /// virtual time passes; it stops when the last clone is dropped.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime.
    pub fn new(config: SimConfig) -> Self {
        Self::with_nodes(config, 1)
    }

    /// A simulated swarm of `nodes` nodes (at least one): the first is the manager this handle
    /// talks to (hostname `sim`), the others are workers (`sim-2`, `sim-3`, …). Tasks are
    /// placed round-robin over the nodes; a task's container, and the volumes its mounts
    /// create, are on its node. [`SimSwarm::node_view`] gives the daemon of another node.
    /// Swarm-wide objects (services, tasks, networks, secrets, configs, nodes) are the same
    /// through every view. A global service still runs one task.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime.
    pub fn with_nodes(config: SimConfig, nodes: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let node_id = random_id(&mut rng, 25);
        let mut all = vec![SimNode {
            id: node_id.clone(),
            hostname: "sim".into(),
        }];
        for n in 2..=nodes {
            all.push(SimNode {
                id: random_id(&mut rng, 25),
                hostname: format!("sim-{n}"),
            });
        }
        let (events, _) = broadcast::channel(256);
        let state = State {
            epoch: Instant::now(),
            rng,
            next_version: 10,
            node_id: node_id.clone(),
            nodes: all,
            next_node: 0,
            unreachable: BTreeSet::new(),
            services: Table::default(),
            tasks: Table::default(),
            due: BTreeSet::new(),
            containers: Table::default(),
            step_containers: BTreeMap::new(),
            networks: Table::default(),
            volumes: BTreeMap::new(),
            secrets: Table::default(),
            configs: Table::default(),
            images: BTreeMap::new(),
            events,
            log: Vec::new(),
            removals: Vec::new(),
            faults: VecDeque::new(),
            writes: 0,
            failing_write: None,
            fail_fraction: 0.0,
            latency: Duration::ZERO,
            hang: BTreeSet::new(),
            hang_objects: BTreeSet::new(),
            unhealthy_images: BTreeSet::new(),
            missing_volume_drivers: BTreeSet::new(),
            late_containers: false,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            wake: Notify::new(),
        });
        tokio::spawn(drive(Arc::clone(&shared)));
        Self {
            shared,
            node: node_id,
        }
    }

    /// IDs of every node, the manager first.
    pub fn node_ids(&self) -> Vec<String> {
        self.lock().nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The daemon of node `node_id`: the same swarm, with that node's containers and volumes
    /// (and [`SwarmInfo::node_id`]). Shares the call log and faults with every view.
    pub fn node_view(&self, node_id: &str) -> SimSwarm {
        SimSwarm {
            shared: Arc::clone(&self.shared),
            node: node_id.to_string(),
        }
    }

    /// With `false`, every call through the view of `node_id` fails with a transport error
    /// (its daemon does not answer); `true` undoes it.
    pub fn set_node_reachable(&self, node_id: &str, reachable: bool) {
        let mut st = self.lock();
        if reachable {
            st.unreachable.remove(node_id);
        } else {
            st.unreachable.insert(node_id.to_string());
        }
    }

    /// Names of the volumes on node `node_id` whose labels match `filter` (no call is logged).
    pub fn volumes_on(&self, node_id: &str, filter: &LabelFilter) -> Vec<String> {
        let st = self.lock();
        st.volumes
            .get(node_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|v| filter.matches(&v.meta.labels))
            .map(|v| v.meta.name.clone())
            .collect()
    }

    /// The next `n` calls fail with `fault` (after being logged).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut st = self.lock();
        st.faults.extend(std::iter::repeat_n((None, fault), n));
    }

    /// The write call (create, update or remove) `k` writes from now (0: the next) fails with
    /// `fault`; every other call passes. For "a failure at step k" of a sequence of writes.
    pub fn fail_write(&self, k: usize, fault: Fault) {
        let mut st = self.lock();
        st.failing_write = Some((st.writes + k, fault));
    }

    /// Write calls received so far (for [`SimSwarm::fail_write`]'s `k`).
    pub fn writes_seen(&self) -> usize {
        self.lock().writes
    }

    /// The next `n` calls equal to `call` fail with `fault`; other calls pass.
    pub fn fail_next_of(&self, call: Call, n: usize, fault: Fault) {
        let mut st = self.lock();
        st.faults
            .extend(std::iter::repeat_n((Some(call), fault), n));
    }

    /// Each call fails with [`Fault::Transport`] with probability `p` (seeded draw).
    pub fn fail_fraction(&self, p: f64) {
        self.lock().fail_fraction = p.clamp(0.0, 1.0);
    }

    /// Every call takes `latency` (virtual time) before it acts.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Removals of `kind` never answer (until the call deadline fires); `false` undoes it.
    pub fn hang_removals(&self, kind: ObjectKind, hang: bool) {
        let mut st = self.lock();
        if hang {
            st.hang.insert(kind);
        } else {
            st.hang.remove(&kind);
        }
    }

    /// Removals of the one object with this ID or name never answer (until the call deadline
    /// fires); `false` undoes it.
    pub fn hang_removal_of(&self, id_or_name: impl Into<String>, hang: bool) {
        let mut st = self.lock();
        let key = id_or_name.into();
        if hang {
            st.hang_objects.insert(key);
        } else {
            st.hang_objects.remove(&key);
        }
    }

    /// Adds an image of `size` bytes with `labels` (as `docker import --change 'LABEL …'`
    /// does) and returns its ID. With `tag`, the tag moves to it: an image that held the tag
    /// before and has no other tag becomes dangling.
    pub fn add_image(&self, tag: Option<&str>, labels: Labels, size: u64) -> String {
        let mut st = self.lock();
        let id = format!("sha256:{}", random_hex(&mut st.rng, 64));
        if let Some(tag) = tag {
            for image in st.images.values_mut() {
                image.repo_tags.retain(|t| t != tag);
            }
        }
        let created_at = Some(st.now_wall());
        st.images.insert(
            id.clone(),
            Image {
                id: id.clone(),
                repo_tags: tag.map(str::to_string).into_iter().collect(),
                repo_digests: Vec::new(),
                labels,
                size,
                created_at,
            },
        );
        id
    }

    /// Creating a volume with `driver` fails with [`Error::NotFound`] (Docker's 404 "plugin not
    /// found": the volume plugin is not installed on the node).
    pub fn remove_volume_driver(&self, driver: impl Into<String>) {
        self.lock().missing_volume_drivers.insert(driver.into());
    }

    /// Tasks of `image` fail their healthcheck.
    pub fn set_unhealthy_image(&self, image: impl Into<String>) {
        self.lock().unhealthy_images.insert(image.into());
    }

    /// With `true`, a task whose service is removed before its container started is still
    /// being prepared: it creates its container when it would have started (state `created`,
    /// never started; a missing volume is created again), then ends (`shutdown`) and its
    /// record is deleted after `stop_delay` — and the container stays, holding its volumes
    /// in use. Swarm's agent does this on Engine 20.10 (measured: a service removed while its
    /// task was `preparing`; the `created` container was still there minutes later).
    pub fn create_late_containers(&self, on: bool) {
        self.lock().late_containers = on;
    }

    /// Starts a container outside the swarm on this node, as `docker run --name NAME` does
    /// for a CI step (no labels, no task), announcing it with a `start` event; returns its ID.
    pub fn run_container(&self, name: &str) -> String {
        let mut st = self.lock();
        let id = random_hex(&mut st.rng, 64);
        let created_at = Some(st.now_wall());
        st.step_containers.insert(
            id.clone(),
            Container {
                id: id.clone(),
                name: name.to_string(),
                labels: Labels::new(),
                image_id: None,
                state: ContainerState::Running,
                health: None,
                status: "Up".into(),
                created_at,
            },
        );
        st.emit(ObjectKind::Container, "start", &id, Some(name));
        id
    }

    /// Kills a container [`SimSwarm::run_container`] started, as `docker kill` does: it exits
    /// (kept, state `exited`) and Docker announces `kill` then `die`.
    pub fn kill_container(&self, id: &str) {
        let mut st = self.lock();
        let Some(c) = st.step_containers.get_mut(id) else {
            return;
        };
        c.state = ContainerState::Exited;
        c.status = "Exited (137)".into();
        let name = c.name.clone();
        st.emit(ObjectKind::Container, "kill", id, Some(&name));
        st.emit(ObjectKind::Container, "die", id, Some(&name));
    }

    /// Simulates a daemon restart: every open events stream ends (objects are kept).
    pub fn restart_daemon(&self) {
        let (events, _) = broadcast::channel(256);
        self.lock().events = events;
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<LoggedCall> {
        self.lock().log.clone()
    }

    /// How many calls were received.
    pub fn call_count(&self) -> usize {
        self.lock().log.len()
    }

    /// How many write calls (create, update, remove) were received.
    pub fn write_count(&self) -> usize {
        self.lock().log.iter().filter(|c| c.call.is_write()).count()
    }

    /// Every remove call received so far, in order: the kind and the target it named (an ID
    /// or a name, as the caller gave it), whether or not the removal succeeded. The call log
    /// has no targets; safety tests check with this that nothing else was ever addressed.
    pub fn removals(&self) -> Vec<(ObjectKind, String)> {
        self.lock().removals.clone()
    }

    /// Forgets the call log (and the removals).
    pub fn clear_calls(&self) {
        let mut st = self.lock();
        st.log.clear();
        st.removals.clear();
    }

    /// Virtual time since the swarm was created.
    pub fn elapsed(&self) -> Duration {
        self.lock().epoch.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Runs one call: log, latency, faults, then `act` on the advanced state.
    fn op<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        act: impl FnOnce(&mut State, &SimConfig) -> Result<T> + Send + 'a,
    ) -> SwarmFuture<'a, T> {
        self.op_on(call, None, act)
    }

    /// [`SimSwarm::op`] for a call addressing one object (`target`: its ID or name).
    fn op_on<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        target: Option<&'a str>,
        act: impl FnOnce(&mut State, &SimConfig) -> Result<T> + Send + 'a,
    ) -> SwarmFuture<'a, T> {
        let timeout = self.shared.config.call_timeout;
        with_deadline(call, timeout, async move {
            let (latency, fault, hang) = {
                let mut st = self.lock();
                let at = st.epoch.elapsed();
                st.log.push(LoggedCall { call, at });
                if let (Verb::Remove, Some(t)) = (call.verb, target) {
                    st.removals.push((call.kind, t.to_string()));
                }
                let fault = st.take_fault(call);
                let hang = call.verb == Verb::Remove
                    && (st.hang.contains(&call.kind)
                        || target.is_some_and(|t| {
                            st.identities(call.kind, t)
                                .iter()
                                .any(|i| st.hang_objects.contains(i))
                        }));
                let fault = if st.unreachable.contains(&self.node) {
                    Some(Fault::Transport)
                } else {
                    fault
                };
                (st.latency, fault, hang)
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if let Some(fault) = fault {
                return Err(fault_error(call, fault));
            }
            if hang {
                std::future::pending::<()>().await;
            }
            let result = {
                let mut st = self.lock();
                st.advance(Instant::now(), &self.shared.config);
                act(&mut st, &self.shared.config)
            };
            self.shared.wake.notify_one();
            result
        })
        .boxed()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (every step is applied whole),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Advances the simulation whenever the next scheduled step is due. Ends once every
/// [`SimSwarm`] clone is dropped (checked at least once a virtual minute).
async fn drive(shared: Arc<Shared>) {
    loop {
        if Arc::strong_count(&shared) == 1 {
            return;
        }
        let next = {
            let mut st = shared.lock();
            st.advance(Instant::now(), &shared.config);
            st.next_due()
        };
        let recheck = Instant::now() + Duration::from_secs(60);
        let until = next.map_or(recheck, |at| at.min(recheck));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

fn fault_error(call: Call, fault: Fault) -> Error {
    match fault {
        Fault::Transport => Error::Transport {
            call,
            source: "simulated: connection refused".into(),
        },
        Fault::Unavailable => Error::Unavailable {
            call,
            message: "simulated: swarm unavailable".into(),
        },
        Fault::ServerError => Error::Rejected {
            call,
            status: 500,
            message: "simulated: internal server error".into(),
        },
    }
}

/// [`spec::template_digest`] of a service's task template (the same for its tasks).
fn digest_of(service: &spec::ServiceSpec) -> Option<String> {
    service
        .task_template
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .map(|v| spec::template_digest(&v))
}

fn random_id(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn random_hex(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] = b"0123456789abcdef";
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn map_labels(labels: &Option<spec::Map>) -> Labels {
    labels.clone().unwrap_or_default().into()
}

fn nanos(ns: Option<i64>) -> Option<Duration> {
    ns.and_then(|n| u64::try_from(n).ok())
        .map(Duration::from_nanos)
}

fn container_spec(spec: &spec::ServiceSpec) -> Option<&spec::ContainerSpec> {
    spec.task_template.as_ref()?.container_spec.as_ref()
}

fn replicas(spec: &spec::ServiceSpec) -> u64 {
    match &spec.mode {
        None => 1,
        Some(spec::ServiceMode {
            replicated: Some(r),
            ..
        }) => r.replicas.unwrap_or(1),
        // One node: a global service runs one task.
        Some(spec::ServiceMode {
            global: Some(_), ..
        }) => 1,
        Some(_) => 1,
    }
}

fn has_healthcheck(spec: &spec::ServiceSpec) -> bool {
    container_spec(spec)
        .and_then(|c| c.health_check.as_ref())
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| t.first().map(String::as_str) != Some("NONE") && !t.is_empty())
}

fn service_mode(spec: &spec::ServiceSpec) -> ServiceMode {
    match &spec.mode {
        Some(spec::ServiceMode {
            global: Some(_), ..
        }) => ServiceMode::Global,
        _ => ServiceMode::Replicated(replicas(spec)),
    }
}

impl State {
    fn now_wall(&self) -> SystemTime {
        // A fixed wall-clock origin keeps runs identical.
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.epoch.elapsed()
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn emit(&self, kind: ObjectKind, action: &str, id: &str, name: Option<&str>) {
        // No receivers is fine: events are hints.
        let _ = self.events.send(Event {
            kind,
            action: action.to_string(),
            id: id.to_string(),
            name: name.map(str::to_string),
            time: Some(self.now_wall()),
        });
    }

    fn take_fault(&mut self, call: Call) -> Option<Fault> {
        if call.is_write() {
            let index = self.writes;
            self.writes += 1;
            if let Some((at, fault)) = self.failing_write {
                if at == index {
                    self.failing_write = None;
                    return Some(fault);
                }
            }
        }
        if let Some(pos) = self
            .faults
            .iter()
            .position(|(only, _)| only.is_none_or(|c| c == call))
        {
            return self.faults.remove(pos).map(|(_, f)| f);
        }
        if self.fail_fraction > 0.0 && self.rng.random::<f64>() < self.fail_fraction {
            return Some(Fault::Transport);
        }
        None
    }

    /// Records that task `task_id`'s `next` step was set (see [`State::due`]).
    fn schedule(&mut self, task_id: &str) {
        if let Some((at, _)) = self.tasks.get(task_id).and_then(|t| t.next) {
            self.due.insert((at, task_id.to_string()));
        }
    }

    /// Whether the schedule entry `(at, task_id)` is still its task's next step.
    fn is_current(&self, at: Instant, task_id: &str) -> bool {
        self.tasks
            .get(task_id)
            .and_then(|t| t.next)
            .is_some_and(|(next, _)| next == at)
    }

    /// When the earliest scheduled step is due (dropping stale entries on the way).
    fn next_due(&mut self) -> Option<Instant> {
        while let Some((at, id)) = self.due.first() {
            if self.is_current(*at, id) {
                return Some(*at);
            }
            self.due.pop_first();
        }
        None
    }

    /// Applies every step due at or before `now`, in time order (ties by task ID).
    fn advance(&mut self, now: Instant, cfg: &SimConfig) {
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                return;
            }
            let Some((at, task_id)) = self.due.pop_first() else {
                return;
            };
            let Some(step) = self
                .tasks
                .get(&task_id)
                .and_then(|t| t.next)
                .filter(|(next, _)| *next == at)
                .map(|(_, step)| step)
            else {
                continue;
            };
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.next = None;
            }
            self.apply(at, &task_id, step, cfg);
        }
    }

    /// Applies `step` to task `task_id` and schedules the task's next step, if it set one.
    fn apply(&mut self, at: Instant, task_id: &str, step: Step, cfg: &SimConfig) {
        self.apply_step(at, task_id, step, cfg);
        self.schedule(task_id);
    }

    fn apply_step(&mut self, at: Instant, task_id: &str, step: Step, cfg: &SimConfig) {
        let Some(service_id) = self.tasks.get(task_id).map(|t| t.task.service_id.clone()) else {
            return;
        };
        let spec = self.services.get(&service_id).map(|s| s.spec.clone());
        match step {
            Step::Start => {
                let late = self.tasks.get(task_id).and_then(|t| t.late.clone());
                let Some(spec) = spec.or_else(|| late.clone()) else {
                    return;
                };
                // As Swarm's scheduler: a task mounting a volume whose driver no node has stays
                // pending (the manager does not create the volume up front, #13).
                let missing = container_spec(&spec)
                    .and_then(|c| c.mounts.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.volume_options.as_ref()?.driver_config.as_ref())
                    .any(|d| self.missing_volume_drivers.contains(&d.name));
                if missing {
                    let nodes = self.nodes.len().max(1);
                    if let Some(t) = self.tasks.get_mut(task_id) {
                        t.task.state = TaskState::Pending;
                        t.task.error =
                            Some(format!("no suitable node (missing plugin on {nodes} node)"));
                        t.next = None;
                    }
                    return;
                }
                let container_id = random_hex(&mut self.rng, 64);
                let cs = container_spec(&spec);
                let image_id = cs.and_then(|c| c.image.as_deref()).and_then(|r| {
                    self.images
                        .values()
                        .find(|i| i.is_named_by(r))
                        .map(|i| i.id.clone())
                });
                let mut labels = cs.map(|c| map_labels(&c.labels)).unwrap_or_default();
                labels.insert(super::labels::SERVICE_ID.into(), service_id.clone());
                labels.insert(
                    super::labels::SERVICE_NAME.into(),
                    spec.name.clone().unwrap_or_default(),
                );
                labels.insert(super::labels::TASK_ID.into(), task_id.to_string());
                let mut volumes = Vec::new();
                let node = self
                    .tasks
                    .get(task_id)
                    .and_then(|t| t.task.node_id.clone())
                    .unwrap_or_else(|| self.node_id.clone());
                labels.insert(super::labels::NODE_ID.into(), node.clone());
                for m in cs.and_then(|c| c.mounts.as_ref()).into_iter().flatten() {
                    if m.r#type != Some(spec::MountType::Volume) {
                        continue;
                    }
                    let Some(source) = m.source.clone() else {
                        continue;
                    };
                    if !self
                        .volumes
                        .get(&node)
                        .is_some_and(|v| v.contains_key(&source))
                    {
                        let vol_labels = m
                            .volume_options
                            .as_ref()
                            .map(|o| map_labels(&o.labels))
                            .unwrap_or_default();
                        let driver = m
                            .volume_options
                            .as_ref()
                            .and_then(|o| o.driver_config.as_ref())
                            .map(|d| d.name.as_str())
                            .filter(|d| !d.is_empty())
                            .unwrap_or("local")
                            .to_string();
                        self.insert_volume(&node, &source, &driver, vol_labels);
                    }
                    volumes.push(source);
                }
                let networks = spec
                    .task_template
                    .as_ref()
                    .and_then(|t| t.networks.as_ref())
                    .map(|n| n.iter().map(|a| self.network_key(&a.target)).collect())
                    .unwrap_or_default();
                let healthcheck = has_healthcheck(&spec) && late.is_none();
                let name = format!(
                    "{}.{}.{}",
                    spec.name.clone().unwrap_or_default(),
                    self.tasks
                        .get(task_id)
                        .and_then(|t| t.task.slot)
                        .unwrap_or(1),
                    task_id
                );
                if late.is_some() {
                    let container = Container {
                        id: container_id.clone(),
                        name: name.clone(),
                        labels,
                        image_id,
                        state: ContainerState::Created,
                        health: None,
                        status: "Created".into(),
                        created_at: Some(self.now_wall()),
                    };
                    self.containers.insert(
                        container_id.clone(),
                        SimContainer {
                            container,
                            node: node.clone(),
                            task_id: task_id.to_string(),
                            volumes,
                            networks,
                        },
                    );
                    let version = self.bump();
                    if let Some(t) = self.tasks.get_mut(task_id) {
                        t.task.state = TaskState::Shutdown;
                        t.task.container_id = Some(container_id.clone());
                        t.task.version = version;
                        t.next = Some((at + cfg.stop_delay, Step::Forget));
                    }
                    self.emit(ObjectKind::Container, "create", &container_id, Some(&name));
                    return;
                }
                let container = Container {
                    id: container_id.clone(),
                    name: name.clone(),
                    labels,
                    image_id,
                    state: ContainerState::Running,
                    health: healthcheck.then_some(Health::Starting),
                    status: if healthcheck {
                        "Up (health: starting)".into()
                    } else {
                        "Up".into()
                    },
                    created_at: Some(self.now_wall()),
                };
                self.containers.insert(
                    container_id.clone(),
                    SimContainer {
                        container,
                        node: node.clone(),
                        task_id: task_id.to_string(),
                        volumes,
                        networks,
                    },
                );
                let version = self.bump();
                if let Some(t) = self.tasks.get_mut(task_id) {
                    // As on the real swarm: a task with a healthcheck stays `starting` until
                    // its first passing check (HealthVerdict), and never runs if it fails.
                    t.task.state = if healthcheck {
                        TaskState::Starting
                    } else {
                        TaskState::Running
                    };
                    t.task.message = Some("started".into());
                    t.task.container_id = Some(container_id.clone());
                    t.task.version = version;
                    if healthcheck {
                        let interval = container_spec(&spec)
                            .and_then(|c| c.health_check.as_ref())
                            .and_then(|h| nanos(h.interval))
                            .unwrap_or(cfg.default_health_interval);
                        t.next = Some((at + interval, Step::HealthVerdict));
                    }
                }
                self.emit(ObjectKind::Container, "start", &container_id, Some(&name));
            }
            Step::HealthVerdict => {
                let Some(spec) = spec else { return };
                let image = container_spec(&spec).and_then(|c| c.image.clone());
                let unhealthy = image.is_some_and(|i| self.unhealthy_images.contains(&i));
                let Some(cid) = self
                    .tasks
                    .get(task_id)
                    .and_then(|t| t.task.container_id.clone())
                else {
                    return;
                };
                if unhealthy {
                    let hc = container_spec(&spec).and_then(|c| c.health_check.clone());
                    let interval = hc
                        .as_ref()
                        .and_then(|h| nanos(h.interval))
                        .unwrap_or(cfg.default_health_interval);
                    let retries = hc
                        .and_then(|h| h.retries)
                        .and_then(|r| u32::try_from(r).ok())
                        .filter(|r| *r > 0)
                        .unwrap_or(3);
                    if let Some(c) = self.containers.get_mut(&cid) {
                        c.container.health = Some(Health::Unhealthy);
                        c.container.status = "Up (unhealthy)".into();
                    }
                    if let Some(t) = self.tasks.get_mut(task_id) {
                        t.next = Some((at + interval * retries.saturating_sub(1), Step::Fail));
                    }
                    self.emit(
                        ObjectKind::Container,
                        "health_status: unhealthy",
                        &cid,
                        None,
                    );
                } else {
                    if let Some(c) = self.containers.get_mut(&cid) {
                        c.container.health = Some(Health::Healthy);
                        c.container.status = "Up (healthy)".into();
                    }
                    let version = self.bump();
                    if let Some(t) = self.tasks.get_mut(task_id) {
                        if t.task.state == TaskState::Starting {
                            t.task.state = TaskState::Running;
                            t.task.version = version;
                        }
                    }
                    self.emit(ObjectKind::Container, "health_status: healthy", &cid, None);
                }
            }
            Step::Fail => {
                let version = self.bump();
                let mut cid = None;
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.task.state = TaskState::Failed;
                    t.task.desired_state = TaskState::Shutdown;
                    t.task.error = Some("task: non-zero exit (137): unhealthy container".into());
                    t.task.version = version;
                    cid = t.task.container_id.clone();
                    t.next = Some((at + cfg.restart_delay, Step::Replace));
                }
                if let Some(c) = cid.and_then(|c| self.containers.get_mut(&c)) {
                    c.container.state = ContainerState::Exited;
                    c.container.status = "Exited (137)".into();
                    let (id, name) = (c.container.id.clone(), c.container.name.clone());
                    self.emit(ObjectKind::Container, "die", &id, Some(&name));
                }
            }
            Step::Stopped => {
                let cid = self
                    .tasks
                    .get(task_id)
                    .and_then(|t| t.task.container_id.clone());
                if let Some(c) = cid.and_then(|c| self.containers.remove(&c)) {
                    self.emit(
                        ObjectKind::Container,
                        "destroy",
                        &c.container.id,
                        Some(&c.container.name),
                    );
                }
                let version = self.bump();
                if spec.is_none() {
                    // The service is gone: its tasks go with their containers.
                    self.tasks.remove(task_id);
                } else if let Some(t) = self.tasks.get_mut(task_id) {
                    if !t.task.state.is_terminal() {
                        t.task.state = TaskState::Shutdown;
                    }
                    t.task.version = version;
                }
            }
            Step::Forget => {
                self.tasks.remove(task_id);
            }
            Step::Replace => {
                let slot = self.tasks.get(task_id).and_then(|t| t.task.slot);
                let cid = self
                    .tasks
                    .get(task_id)
                    .and_then(|t| t.task.container_id.clone());
                if let Some(c) = cid.and_then(|c| self.containers.remove(&c)) {
                    self.emit(
                        ObjectKind::Container,
                        "destroy",
                        &c.container.id,
                        Some(&c.container.name),
                    );
                }
                if spec.is_some() {
                    self.new_task(&service_id, slot, at, cfg);
                    self.prune_history(&service_id, slot);
                }
            }
        }
    }

    /// The ID and name of the object of `kind` addressed as `target` (just `target` if absent).
    fn identities(&self, kind: ObjectKind, target: &str) -> Vec<String> {
        let mut out = vec![target.to_string()];
        let found = match kind {
            ObjectKind::Service => self
                .services
                .find(target)
                .and_then(|k| self.services.get(&k).map(|s| s.meta.clone())),
            ObjectKind::Network => find_key(&self.networks, target)
                .and_then(|k| self.networks.get(&k).map(|o| o.meta.clone())),
            ObjectKind::Volume => self
                .volumes
                .values()
                .find_map(|v| v.get(target))
                .map(|o| o.meta.clone()),
            ObjectKind::Secret => find_key(&self.secrets, target)
                .and_then(|k| self.secrets.get(&k).map(|o| o.meta.clone())),
            ObjectKind::Config => find_key(&self.configs, target)
                .and_then(|k| self.configs.get(&k).map(|o| o.meta.clone())),
            _ => None,
        };
        if let Some(meta) = found {
            out.push(meta.id);
            out.push(meta.name);
        }
        out
    }

    fn network_key(&self, target: &str) -> String {
        self.networks
            .find(target)
            .unwrap_or_else(|| target.to_string())
    }

    fn new_task(&mut self, service_id: &str, slot: Option<u64>, at: Instant, cfg: &SimConfig) {
        let Some(service) = self.services.get(service_id) else {
            return;
        };
        let service_labels = map_labels(&service.spec.labels);
        let container_labels = container_spec(&service.spec)
            .map(|c| map_labels(&c.labels))
            .unwrap_or_default();
        let template_digest = service.template_digest.clone();
        let id = random_id(&mut self.rng, 25);
        let version = self.bump();
        let node = self
            .nodes
            .get(self.next_node % self.nodes.len().max(1))
            .map_or_else(|| self.node_id.clone(), |n| n.id.clone());
        self.next_node = self.next_node.wrapping_add(1);
        let task = Task {
            id: id.clone(),
            version,
            service_id: service_id.to_string(),
            slot,
            node_id: Some(node),
            state: TaskState::Pending,
            desired_state: TaskState::Running,
            message: Some("pending task scheduling".into()),
            error: None,
            container_id: None,
            labels: Labels::new(),
            container_labels,
            created_at: Some(self.now_wall()),
            template_digest,
        };
        self.tasks.insert(
            id.clone(),
            SimTask {
                task,
                service_labels,
                next: Some((at + cfg.start_delay, Step::Start)),
                late: None,
            },
        );
        self.schedule(&id);
    }

    fn start_tasks(&mut self, service_id: &str, at: Instant, cfg: &SimConfig) {
        let Some(service) = self.services.get(service_id) else {
            return;
        };
        let global = matches!(service_mode(&service.spec), ServiceMode::Global);
        for slot in 1..=replicas(&service.spec) {
            self.new_task(service_id, (!global).then_some(slot), at, cfg);
        }
    }

    /// Stops every task of a service: running containers go after the stop delay, the rest
    /// at once.
    fn stop_tasks(
        &mut self,
        service_id: &str,
        grace: Option<Duration>,
        at: Instant,
        cfg: &SimConfig,
    ) {
        let delay = grace.map_or(cfg.stop_delay, |g| g.min(cfg.stop_delay));
        for id in self.tasks.owned_by(service_id) {
            let containers = &self.containers;
            if let Some(t) = self.tasks.get_mut(&id) {
                t.task.desired_state = TaskState::Shutdown;
                let running = t
                    .task
                    .container_id
                    .as_ref()
                    .and_then(|c| containers.get(c))
                    .is_some_and(|c| c.container.state == ContainerState::Running);
                t.next = Some((if running { at + delay } else { at }, Step::Stopped));
            }
            self.schedule(&id);
        }
    }

    /// Keeps at most `TASK_HISTORY` finished tasks per service slot, like swarmkit's
    /// task-history retention limit.
    fn prune_history(&mut self, service_id: &str, slot: Option<u64>) {
        let mut finished: Vec<(u64, String)> = self
            .tasks
            .owned_by(service_id)
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| t.task.slot == slot && t.task.state.is_terminal() && t.next.is_none())
            .map(|t| (t.task.version, t.task.id.clone()))
            .collect();
        finished.sort();
        let excess = finished.len().saturating_sub(TASK_HISTORY);
        for (_, id) in finished.into_iter().take(excess) {
            self.tasks.remove(&id);
        }
    }

    fn insert_volume(&mut self, node: &str, name: &str, driver: &str, labels: Labels) {
        let created = self.now_wall();
        self.volumes.entry(node.to_string()).or_default().insert(
            name.to_string(),
            SimObject {
                meta: Meta {
                    id: name.to_string(),
                    name: name.to_string(),
                    version: 0,
                    labels,
                    created_at: Some(created),
                    updated_at: Some(created),
                },
                driver: driver.to_string(),
                scope: "local".into(),
            },
        );
        self.emit(ObjectKind::Volume, "create", name, Some(name));
    }

    fn new_object(&mut self, name: &str, labels: Labels, driver: &str, scope: &str) -> SimObject {
        let id = random_id(&mut self.rng, 25);
        let version = self.bump();
        let now = self.now_wall();
        SimObject {
            meta: Meta {
                id,
                name: name.to_string(),
                version,
                labels,
                created_at: Some(now),
                updated_at: Some(now),
            },
            driver: driver.to_string(),
            scope: scope.to_string(),
        }
    }

    fn service_refs(&self) -> impl Iterator<Item = &spec::ServiceSpec> {
        self.services.values().map(|s| &s.spec)
    }
}

/// Finds an object by ID or name.
/// The node-local bridge through which swarm containers reach the host (as
/// `warmapp::probe::GATEWAY_BRIDGE`; named here so the swarm module imports nothing above it).
const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// A stable address for a container on a network: `<prefix>.<a>.<b>` from its ID's first
/// hex digits (`b` in 2..=253, clear of the gateway and broadcast).
fn sim_address(prefix: &str, id: &str) -> String {
    let n = u32::from_str_radix(id.get(..4).unwrap_or("0"), 16).unwrap_or(0);
    format!("{prefix}.{}.{}", (n >> 8) & 0xff, 2 + (n & 0xff) % 252)
}

fn find_key(map: &Table<SimObject>, id_or_name: &str) -> Option<String> {
    map.find(id_or_name)
}

fn not_found(call: Call, id: &str) -> Error {
    Error::NotFound {
        call,
        id: id.to_string(),
    }
}

fn in_use(call: Call, id: &str, message: String) -> Error {
    Error::InUse {
        call,
        id: id.to_string(),
        message,
    }
}

impl Swarm for SimSwarm {
    fn ping(&self) -> SwarmFuture<'_, ()> {
        self.op(Call::new(Verb::Ping, ObjectKind::Daemon), |_, _| Ok(()))
    }

    fn info(&self) -> SwarmFuture<'_, SwarmInfo> {
        self.op(Call::new(Verb::Info, ObjectKind::Daemon), |st, _| {
            Ok(SwarmInfo {
                node_id: self.node.clone(),
                local_node_state: "active".into(),
                control_available: self.node == st.node_id,
                nodes: u64::try_from(st.nodes.len()).unwrap_or(u64::MAX),
                managers: 1,
                server_version: "sim".into(),
                api_version: "1.41".into(),
            })
        })
    }

    fn list_services<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Service>> {
        self.op(Call::new(Verb::List, ObjectKind::Service), move |st, _| {
            Ok(st
                .services
                .select(filter)
                .map(|s| Service {
                    meta: s.meta.clone(),
                    image: container_spec(&s.spec).and_then(|c| c.image.clone()),
                    mode: service_mode(&s.spec),
                    volume_sources: container_spec(&s.spec)
                        .and_then(|c| c.mounts.as_ref())
                        .into_iter()
                        .flatten()
                        .filter(|m| m.r#type == Some(spec::MountType::Volume))
                        .filter_map(|m| m.source.clone())
                        .collect(),
                    template_digest: s.template_digest.clone(),
                })
                .collect())
        })
    }

    fn list_tasks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Task>> {
        self.op(Call::new(Verb::List, ObjectKind::Task), move |st, _| {
            Ok(st.tasks.select(filter).map(|t| t.task.clone()).collect())
        })
    }

    fn list_containers<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Container>> {
        self.op(
            Call::new(Verb::List, ObjectKind::Container),
            move |st, _| {
                let local = self.node == st.node_id;
                Ok(st
                    .containers
                    .select(filter)
                    .filter(|c| c.node == self.node)
                    .map(|c| c.container.clone())
                    .chain(
                        st.step_containers
                            .values()
                            .filter(|c| local && filter.matches(&c.labels))
                            .cloned(),
                    )
                    .collect())
            },
        )
    }

    fn inspect_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, Container> {
        let call = Call::new(Verb::Inspect, ObjectKind::Container);
        self.op_on(call, Some(id), move |st, _| {
            let local = self.node == st.node_id;
            let every = LabelFilter::all();
            let all = st
                .containers
                .select(&every)
                .filter(|c| c.node == self.node)
                .map(|c| &c.container)
                .chain(st.step_containers.values().filter(|_| local));
            // As Docker resolves a reference: the full ID, a name, else a unique ID prefix.
            let mut prefixed = Vec::new();
            for c in all {
                if c.id == id || c.name == id {
                    return Ok(c.clone());
                }
                if !id.is_empty() && c.id.starts_with(id) {
                    prefixed.push(c);
                }
            }
            match prefixed.as_slice() {
                [one] => Ok((*one).clone()),
                _ => Err(not_found(call, id)),
            }
        })
    }

    fn list_networks<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Network>> {
        self.op(Call::new(Verb::List, ObjectKind::Network), move |st, _| {
            Ok(st
                .networks
                .select(filter)
                .map(|n| Network {
                    id: n.meta.id.clone(),
                    name: n.meta.name.clone(),
                    driver: n.driver.clone(),
                    scope: n.scope.clone(),
                    labels: n.meta.labels.clone(),
                    created_at: n.meta.created_at,
                })
                .collect())
        })
    }

    fn list_volumes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Volume>> {
        self.op(Call::new(Verb::List, ObjectKind::Volume), move |st, _| {
            Ok(st
                .volumes
                .get(&self.node)
                .into_iter()
                .flat_map(|m| m.select(filter))
                .map(|v| Volume {
                    name: v.meta.name.clone(),
                    driver: v.driver.clone(),
                    labels: v.meta.labels.clone(),
                    created_at: v.meta.created_at,
                })
                .collect())
        })
    }

    fn list_secrets<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Secret>> {
        self.op(Call::new(Verb::List, ObjectKind::Secret), move |st, _| {
            Ok(st
                .secrets
                .select(filter)
                .map(|s| Secret {
                    meta: s.meta.clone(),
                })
                .collect())
        })
    }

    fn list_configs<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Config>> {
        self.op(Call::new(Verb::List, ObjectKind::Config), move |st, _| {
            Ok(st
                .configs
                .select(filter)
                .map(|c| Config {
                    meta: c.meta.clone(),
                })
                .collect())
        })
    }

    fn list_nodes<'a>(&'a self, filter: &'a LabelFilter) -> SwarmFuture<'a, Vec<Node>> {
        self.op(Call::new(Verb::List, ObjectKind::Node), move |st, _| {
            Ok(st
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| Node {
                    meta: Meta {
                        id: n.id.clone(),
                        name: n.hostname.clone(),
                        version: 1,
                        labels: Labels::new(),
                        created_at: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                        updated_at: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                    },
                    role: if i == 0 { "manager" } else { "worker" }.into(),
                    availability: "active".into(),
                    state: "ready".into(),
                    leader: i == 0,
                })
                .filter(|n| filter.matches(&n.meta.labels))
                .collect())
        })
    }

    fn create_service<'a>(&'a self, spec: &'a spec::ServiceSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Service);
        self.op(call, move |st, cfg| {
            let name = spec.name.clone().unwrap_or_default();
            if container_spec(spec)
                .and_then(|c| c.image.as_ref())
                .is_none()
            {
                return Err(Error::Rejected {
                    call,
                    status: 400,
                    message: "ContainerSpec: image reference must be provided".into(),
                });
            }
            if st.services.has_name(&name) {
                return Err(Error::AlreadyExists { call, name });
            }
            let cs = container_spec(spec);
            for r in cs.and_then(|c| c.secrets.as_ref()).into_iter().flatten() {
                let key = r.secret_id.as_deref().unwrap_or(&r.secret_name);
                if find_key(&st.secrets, key).is_none() {
                    return Err(not_found(Call::new(Verb::Create, ObjectKind::Secret), key));
                }
            }
            for r in cs.and_then(|c| c.configs.as_ref()).into_iter().flatten() {
                let key = r.config_id.as_deref().unwrap_or(&r.config_name);
                if find_key(&st.configs, key).is_none() {
                    return Err(not_found(Call::new(Verb::Create, ObjectKind::Config), key));
                }
            }
            let id = random_id(&mut st.rng, 25);
            let version = st.bump();
            let now = st.now_wall();
            st.services.insert(
                id.clone(),
                SimService {
                    spec: spec.clone(),
                    template_digest: digest_of(spec),
                    meta: Meta {
                        id: id.clone(),
                        name: name.clone(),
                        version,
                        labels: map_labels(&spec.labels),
                        created_at: Some(now),
                        updated_at: Some(now),
                    },
                },
            );
            st.start_tasks(&id, Instant::now(), cfg);
            st.emit(ObjectKind::Service, "create", &id, Some(&name));
            Ok(id)
        })
    }

    fn update_service<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ServiceSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Service);
        self.op(call, move |st, cfg| {
            let key = st.services.find(id).ok_or_else(|| not_found(call, id))?;
            let Some(current) = st.services.get(&key) else {
                return Err(not_found(call, id));
            };
            if current.meta.version != version {
                return Err(Error::OutOfSequence {
                    call,
                    id: id.to_string(),
                    version,
                });
            }
            let replace =
                current.spec.task_template != spec.task_template || current.spec.mode != spec.mode;
            let grace = container_spec(&current.spec).and_then(|c| nanos(c.stop_grace_period));
            let new_version = st.bump();
            let now = st.now_wall();
            let template_digest = digest_of(spec);
            st.services.update(&key, |s| {
                s.spec = spec.clone();
                s.template_digest = template_digest;
                s.meta.version = new_version;
                s.meta.labels = map_labels(&spec.labels);
                s.meta.updated_at = Some(now);
            });
            if replace {
                let at = Instant::now();
                st.stop_tasks(&key, grace, at, cfg);
                let delay = grace.map_or(cfg.stop_delay, |g| g.min(cfg.stop_delay));
                st.start_tasks(&key, at + delay, cfg);
            }
            let name = spec.name.clone();
            st.emit(ObjectKind::Service, "update", &key, name.as_deref());
            Ok(())
        })
    }

    fn force_update_service<'a>(&'a self, id: &'a str, version: u64) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Service);
        self.op(call, move |st, cfg| {
            let key = st.services.find(id).ok_or_else(|| not_found(call, id))?;
            let Some(current) = st.services.get(&key) else {
                return Err(not_found(call, id));
            };
            if current.meta.version != version {
                return Err(Error::OutOfSequence {
                    call,
                    id: id.to_string(),
                    version,
                });
            }
            let grace = container_spec(&current.spec).and_then(|c| nanos(c.stop_grace_period));
            let name = current.spec.name.clone();
            let new_version = st.bump();
            let now = st.now_wall();
            if let Some(s) = st.services.get_mut(&key) {
                s.meta.version = new_version;
                s.meta.updated_at = Some(now);
            }
            // same spec, new tasks (stop-first here, like every sim update)
            let at = Instant::now();
            st.stop_tasks(&key, grace, at, cfg);
            let delay = grace.map_or(cfg.stop_delay, |g| g.min(cfg.stop_delay));
            st.start_tasks(&key, at + delay, cfg);
            st.emit(ObjectKind::Service, "update", &key, name.as_deref());
            Ok(())
        })
    }

    fn remove_service<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Service);
        self.op_on(call, Some(id), move |st, cfg| {
            let key = st.services.find(id).ok_or_else(|| not_found(call, id))?;
            let Some(service) = st.services.remove(&key) else {
                return Err(not_found(call, id));
            };
            let grace = container_spec(&service.spec).and_then(|c| nanos(c.stop_grace_period));
            // Tasks not started yet that will create their container late.
            let late: Vec<(String, Instant)> = if st.late_containers {
                st.tasks
                    .owned_by(&key)
                    .into_iter()
                    .filter_map(|id| {
                        let t = st.tasks.get(&id)?;
                        match t.next {
                            Some((at, Step::Start)) if t.task.container_id.is_none() => {
                                Some((id, at))
                            }
                            _ => None,
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            st.stop_tasks(&key, grace, Instant::now(), cfg);
            let version = st.bump();
            for (id, at) in late {
                if let Some(t) = st.tasks.get_mut(&id) {
                    t.task.state = TaskState::Preparing;
                    t.task.desired_state = TaskState::Remove;
                    t.task.version = version;
                    t.next = Some((at, Step::Start));
                    t.late = Some(service.spec.clone());
                }
                st.schedule(&id);
            }
            st.emit(
                ObjectKind::Service,
                "remove",
                &key,
                Some(&service.meta.name),
            );
            Ok(())
        })
    }

    fn create_network<'a>(&'a self, spec: &'a spec::NetworkSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Network);
        self.op(call, move |st, _| {
            if st.networks.has_name(&spec.name) {
                return Err(Error::AlreadyExists {
                    call,
                    name: spec.name.clone(),
                });
            }
            let driver = spec.driver.clone().unwrap_or_else(|| "bridge".into());
            let scope = if driver == "overlay" {
                "swarm"
            } else {
                "local"
            };
            let obj = st.new_object(&spec.name, map_labels(&spec.labels), &driver, scope);
            let id = obj.meta.id.clone();
            st.networks.insert(id.clone(), obj);
            st.emit(ObjectKind::Network, "create", &id, Some(&spec.name));
            Ok(id)
        })
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Network);
        self.op_on(call, Some(id), move |st, _| {
            let key = find_key(&st.networks, id).ok_or_else(|| not_found(call, id))?;
            let name = st
                .networks
                .get(&key)
                .map(|n| n.meta.name.clone())
                .unwrap_or_default();
            let by_service = st.service_refs().find(|s| {
                s.task_template
                    .as_ref()
                    .and_then(|t| t.networks.as_ref())
                    .is_some_and(|n| n.iter().any(|a| a.target == key || a.target == name))
            });
            if let Some(s) = by_service {
                let message = format!(
                    "network {key} is in use by service {}",
                    s.name.clone().unwrap_or_default()
                );
                return Err(in_use(call, id, message));
            }
            if st.containers.values().any(|c| c.networks.contains(&key)) {
                return Err(in_use(
                    call,
                    id,
                    format!("error while removing network: network {name} id {key} has active endpoints"),
                ));
            }
            st.networks.remove(&key);
            st.emit(ObjectKind::Network, "destroy", &key, Some(&name));
            Ok(())
        })
    }

    fn create_volume<'a>(&'a self, spec: &'a spec::VolumeSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Volume);
        self.op(call, move |st, _| {
            // Docker returns the existing volume when the name is taken (create is idempotent).
            let exists = st
                .volumes
                .get(&self.node)
                .is_some_and(|v| v.contains_key(&spec.name));
            if !exists {
                let driver = spec.driver.clone().unwrap_or_else(|| "local".into());
                if st.missing_volume_drivers.contains(&driver) {
                    return Err(not_found(call, &spec.name));
                }
                st.insert_volume(&self.node, &spec.name, &driver, map_labels(&spec.labels));
            }
            Ok(spec.name.clone())
        })
    }

    fn remove_volume<'a>(&'a self, name: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Volume);
        self.op_on(call, Some(name), move |st, _| {
            let node = self.node.as_str();
            if !st.volumes.get(node).is_some_and(|v| v.contains_key(name)) {
                return Err(not_found(call, name));
            }
            let users: Vec<String> = st
                .containers
                .values()
                .filter(|c| c.node == node && c.volumes.iter().any(|v| v == name))
                .map(|c| c.container.id.clone())
                .collect();
            if !users.is_empty() {
                return Err(in_use(
                    call,
                    name,
                    format!("remove {name}: volume is in use - [{}]", users.join(", ")),
                ));
            }
            if let Some(v) = st.volumes.get_mut(node) {
                v.remove(name);
            }
            st.emit(ObjectKind::Volume, "destroy", name, Some(name));
            Ok(())
        })
    }

    fn create_secret<'a>(&'a self, spec: &'a spec::SecretSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Secret);
        self.op(call, move |st, _| {
            create_labelled(st, call, &spec.name, &spec.labels)
        })
    }

    fn update_secret<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::SecretSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Secret);
        self.op(call, move |st, _| {
            update_labels(st, ObjectKind::Secret, call, id, version, &spec.labels)
        })
    }

    fn remove_secret<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Secret);
        self.op_on(call, Some(id), move |st, _| remove_unused(st, call, id))
    }

    fn create_config<'a>(&'a self, spec: &'a spec::ConfigSpec) -> SwarmFuture<'a, String> {
        let call = Call::new(Verb::Create, ObjectKind::Config);
        self.op(call, move |st, _| {
            create_labelled(st, call, &spec.name, &spec.labels)
        })
    }

    fn update_config<'a>(
        &'a self,
        id: &'a str,
        version: u64,
        spec: &'a spec::ConfigSpec,
    ) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Update, ObjectKind::Config);
        self.op(call, move |st, _| {
            update_labels(st, ObjectKind::Config, call, id, version, &spec.labels)
        })
    }

    fn remove_config<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Config);
        self.op_on(call, Some(id), move |st, _| remove_unused(st, call, id))
    }

    fn list_images<'a>(&'a self, filter: &'a ImageFilter) -> SwarmFuture<'a, Vec<Image>> {
        self.op(Call::new(Verb::List, ObjectKind::Image), move |st, _| {
            Ok(st
                .images
                .values()
                .filter(|i| filter.matches(i))
                .cloned()
                .collect())
        })
    }

    fn remove_image<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Image);
        self.op_on(call, Some(id), move |st, _| {
            let key = st
                .images
                .values()
                .find(|i| i.is_named_by(id))
                .map(|i| i.id.clone())
                .ok_or_else(|| not_found(call, id))?;
            // Docker refuses (409) while any container, running or not, uses the image
            if let Some(c) = st
                .containers
                .values()
                .find(|c| c.container.image_id.as_deref() == Some(key.as_str()))
            {
                let state = if c.container.state == ContainerState::Running {
                    "running"
                } else {
                    "stopped"
                };
                return Err(in_use(
                    call,
                    id,
                    format!(
                        "conflict: unable to delete {id} - image is being used by {state} container {}",
                        c.container.id
                    ),
                ));
            }
            st.images.remove(&key);
            st.emit(ObjectKind::Image, "delete", &key, None);
            Ok(())
        })
    }

    fn network_endpoints<'a>(&'a self, network: &'a str) -> SwarmFuture<'a, Vec<NetworkEndpoint>> {
        let call = Call::new(Verb::Inspect, ObjectKind::Network);
        self.op_on(call, Some(network), move |st, _| {
            // As Docker: every node has the gateway bridge, and each running container
            // attached to an overlay network has an endpoint on it; a stack's own network
            // lists its running containers on this node.
            let (key, prefix) = if network == GATEWAY_BRIDGE {
                (None, "172.18")
            } else {
                let key =
                    find_key(&st.networks, network).ok_or_else(|| not_found(call, network))?;
                (Some(key), "10.0")
            };
            let mut out: Vec<NetworkEndpoint> = st
                .containers
                .values()
                .filter(|c| c.node == self.node && c.container.state == ContainerState::Running)
                .filter(|c| match &key {
                    None => !c.networks.is_empty(),
                    Some(k) => c.networks.contains(k),
                })
                .map(|c| NetworkEndpoint {
                    container_id: c.container.id.clone(),
                    ipv4: Some(sim_address(prefix, &c.container.id)),
                })
                .collect();
            out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
            Ok(out)
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> SwarmFuture<'a, ()> {
        let call = Call::new(Verb::Remove, ObjectKind::Container);
        self.op_on(call, Some(id), move |st, cfg| {
            let key = st
                .containers
                .candidates(id)
                .into_iter()
                .find(|k| st.containers.get(k).is_some_and(|c| c.node == self.node))
                .ok_or_else(|| not_found(call, id))?;
            let Some(c) = st.containers.remove(&key) else {
                return Err(not_found(call, id));
            };
            let version = st.bump();
            let now = Instant::now();
            let service_gone = st
                .tasks
                .get(&c.task_id)
                .is_some_and(|t| !st.services.contains_key(&t.task.service_id));
            if service_gone {
                st.tasks.remove(&c.task_id);
            } else if let Some(t) = st.tasks.get_mut(&c.task_id) {
                t.task.state = TaskState::Failed;
                t.task.desired_state = TaskState::Shutdown;
                t.task.error = Some("container removed".into());
                t.task.container_id = None;
                t.task.version = version;
                t.next = Some((now + cfg.restart_delay, Step::Replace));
            }
            st.schedule(&c.task_id);
            st.emit(
                ObjectKind::Container,
                "destroy",
                &c.container.id,
                Some(&c.container.name),
            );
            Ok(())
        })
    }

    fn events(&self) -> BoxStream<'static, Result<Event>> {
        let call = Call::new(Verb::Events, ObjectKind::Daemon);
        let receiver = {
            let mut st = self.lock();
            let at = st.epoch.elapsed();
            st.log.push(LoggedCall { call, at });
            let fault = st.take_fault(call);
            let fault = if st.unreachable.contains(&self.node) {
                Some(Fault::Transport)
            } else {
                fault
            };
            match fault {
                Some(fault) => Err(fault_error(call, fault)),
                None => Ok(st.events.subscribe()),
            }
        };
        match receiver {
            Err(e) => stream::once(async move { Err(e) }).boxed(),
            Ok(receiver) => stream::unfold(receiver, |mut rx| async move {
                // Lagging behind (more than 256 events) ends the stream, like a daemon that
                // dropped events: the consumer relists and reopens.
                rx.recv().await.ok().map(|event| (Ok(event), rx))
            })
            .boxed(),
        }
    }
}

fn update_labels(
    st: &mut State,
    kind: ObjectKind,
    call: Call,
    id: &str,
    version: u64,
    labels: &Option<spec::Map>,
) -> Result<()> {
    let version_next = st.bump();
    let now = st.now_wall();
    let map = secrets_or_configs(st, kind);
    let key = find_key(map, id).ok_or_else(|| not_found(call, id))?;
    match map.get(&key).map(|obj| obj.meta.version) {
        None => return Err(not_found(call, id)),
        Some(current) if current != version => {
            return Err(Error::OutOfSequence {
                call,
                id: id.to_string(),
                version,
            })
        }
        Some(_) => {}
    }
    map.update(&key, |obj| {
        obj.meta.labels = map_labels(labels);
        obj.meta.version = version_next;
        obj.meta.updated_at = Some(now);
    });
    Ok(())
}

/// The secret or config (`call`'s kind) table.
fn secrets_or_configs(st: &mut State, kind: ObjectKind) -> &mut Table<SimObject> {
    match kind {
        ObjectKind::Secret => &mut st.secrets,
        _ => &mut st.configs,
    }
}

/// Creates a secret or config (`call`'s kind) named `name`, as Docker does both: a name taken
/// is [`Error::AlreadyExists`]. Returns its ID.
fn create_labelled(
    st: &mut State,
    call: Call,
    name: &str,
    labels: &Option<spec::Map>,
) -> Result<String> {
    let kind = call.kind;
    if secrets_or_configs(st, kind).has_name(name) {
        return Err(Error::AlreadyExists {
            call,
            name: name.to_string(),
        });
    }
    let obj = st.new_object(name, map_labels(labels), "", "swarm");
    let id = obj.meta.id.clone();
    secrets_or_configs(st, kind).insert(id.clone(), obj);
    st.emit(kind, "create", &id, Some(name));
    Ok(id)
}

/// Removes a secret or config (`call`'s kind) by ID or name, as Docker does both:
/// [`Error::InUse`] naming the first service that refers to it (by ID or by name).
fn remove_unused(st: &mut State, call: Call, id: &str) -> Result<()> {
    let kind = call.kind;
    let table = secrets_or_configs(st, kind);
    let key = find_key(table, id).ok_or_else(|| not_found(call, id))?;
    let name = table
        .get(&key)
        .map(|s| s.meta.name.clone())
        .unwrap_or_default();
    let refers = |ref_id: &Option<String>, ref_name: &str| {
        ref_id.as_deref() == Some(&key) || ref_name == name
    };
    let user = st.service_refs().find(|s| {
        container_spec(s).is_some_and(|c| match kind {
            ObjectKind::Secret => c
                .secrets
                .iter()
                .flatten()
                .any(|r| refers(&r.secret_id, &r.secret_name)),
            _ => c
                .configs
                .iter()
                .flatten()
                .any(|r| refers(&r.config_id, &r.config_name)),
        })
    });
    if let Some(s) = user {
        let message = format!(
            "{} '{name}' is in use by the following service: {}",
            kind.as_str(),
            s.name.clone().unwrap_or_default()
        );
        return Err(in_use(call, id, message));
    }
    secrets_or_configs(st, kind).remove(&key);
    st.emit(kind, "remove", &key, Some(&name));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn web(name: &str, image: &str) -> spec::ServiceSpec {
        spec::ServiceSpec {
            name: Some(name.into()),
            labels: Some(spec::Map::from([("hearth.test".into(), "1".into())])),
            task_template: Some(spec::TaskSpec {
                container_spec: Some(spec::ContainerSpec {
                    image: Some(image.into()),
                    args: Some(vec!["/bin/serve".into()]),
                    health_check: Some(spec::HealthCheck {
                        test: Some(vec!["CMD".into(), "/bin/healthcheck".into()]),
                        interval: Some(1_000_000_000),
                        retries: Some(2),
                        ..Default::default()
                    }),
                    mounts: Some(vec![spec::Mount {
                        r#type: Some(spec::MountType::Volume),
                        source: Some(format!("{name}-data")),
                        target: Some("/data".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sim() -> SimSwarm {
        SimSwarm::new(SimConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_converge_to_running_and_healthy_over_virtual_time() {
        let swarm = sim();
        let id = swarm.create_service(&web("a", "img:1")).await.unwrap();
        let all = LabelFilter::all();
        let tasks = swarm.list_tasks(&all).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].state, TaskState::Pending);
        assert_eq!(tasks[0].service_id, id);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Started, not yet checked: `starting`, as the real swarm reports it (docs/CLUSTER.md).
        let tasks = swarm.list_tasks(&all).await.unwrap();
        assert_eq!(tasks[0].state, TaskState::Starting);
        let containers = swarm.list_containers(&all).await.unwrap();
        assert_eq!(task_health(&tasks[0], &containers), Some(Health::Starting));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tasks = swarm.list_tasks(&all).await.unwrap();
        assert_eq!(tasks[0].state, TaskState::Running);
        let containers = swarm.list_containers(&all).await.unwrap();
        assert_eq!(task_health(&tasks[0], &containers), Some(Health::Healthy));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_image_fails_and_is_replaced() {
        let swarm = sim();
        swarm.set_unhealthy_image("img:broken");
        swarm.create_service(&web("b", "img:broken")).await.unwrap();
        // start 1 s + first verdict 1 s + (retries-1) 1 s → failed; replacement after 5 s.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let tasks = swarm.list_tasks(&LabelFilter::all()).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].state, TaskState::Failed);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let tasks = swarm.list_tasks(&LabelFilter::all()).await.unwrap();
        let states: Vec<_> = tasks.iter().map(|t| t.state.clone()).collect();
        assert_eq!(tasks.len(), 2, "{states:?}");
        // The replacement runs the same broken image: it never leaves `starting`.
        assert!(states.contains(&TaskState::Failed) && states.contains(&TaskState::Starting));
    }

    #[tokio::test(start_paused = true)]
    async fn a_volume_is_in_use_until_its_containers_are_gone() {
        let swarm = sim();
        let id = swarm.create_service(&web("c", "img:1")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        swarm.remove_service(&id).await.unwrap();
        let err = swarm.remove_volume("c-data").await.unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(swarm
            .list_containers(&LabelFilter::all())
            .await
            .unwrap()
            .is_empty());
        swarm.remove_volume("c-data").await.unwrap();
        let err = swarm.remove_volume("c-data").await.unwrap_err();
        assert!(err.is_not_found());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_removed_while_preparing_leaves_a_created_container_holding_its_volume() {
        let swarm = sim();
        swarm.create_late_containers(true);
        let id = swarm.create_service(&web("l", "img:1")).await.unwrap();
        swarm.remove_service(&id).await.unwrap();
        let all = LabelFilter::all();
        let tasks = swarm.list_tasks(&all).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].state, TaskState::Preparing);
        assert_eq!(tasks[0].desired_state, TaskState::Remove);
        // Nothing yet: a volume removed now comes back with the container.
        assert!(swarm.list_containers(&all).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let containers = swarm.list_containers(&all).await.unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].state, ContainerState::Created);
        assert_eq!(
            swarm.list_tasks(&all).await.unwrap()[0].state,
            TaskState::Shutdown
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(swarm.list_tasks(&all).await.unwrap().is_empty());
        assert_eq!(swarm.list_containers(&all).await.unwrap().len(), 1);
        let err = swarm.remove_volume("l-data").await.unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        swarm.remove_container(&containers[0].id).await.unwrap();
        swarm.remove_volume("l-data").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures_hit_the_next_calls_only() {
        let swarm = sim();
        swarm.fail_next(2, Fault::Transport);
        let all = LabelFilter::all();
        assert!(swarm.list_services(&all).await.unwrap_err().is_retryable());
        assert!(swarm.list_services(&all).await.is_err());
        assert!(swarm.list_services(&all).await.is_ok());
        swarm.fail_next_of(
            Call::new(Verb::Remove, ObjectKind::Volume),
            1,
            Fault::ServerError,
        );
        assert!(swarm.list_volumes(&all).await.is_ok());
        assert!(matches!(
            swarm.remove_volume("x").await.unwrap_err(),
            Error::Rejected { status: 500, .. }
        ));
        assert_eq!(swarm.call_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_removal_ends_at_the_call_deadline() {
        let swarm = SimSwarm::new(SimConfig {
            call_timeout: Duration::from_secs(5),
            ..SimConfig::default()
        });
        let id = swarm
            .create_network(&spec::NetworkSpec {
                name: "n".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        swarm.hang_removals(ObjectKind::Network, true);
        let before = swarm.elapsed();
        let err = swarm.remove_network(&id).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert_eq!(swarm.elapsed() - before, Duration::from_secs(5));
        swarm.hang_removals(ObjectKind::Network, false);
        swarm.remove_network(&id).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_removal_can_hang_for_one_named_object_only() {
        let swarm = SimSwarm::new(SimConfig {
            call_timeout: Duration::from_secs(5),
            ..SimConfig::default()
        });
        for name in ["stuck", "fine"] {
            swarm
                .create_volume(&spec::VolumeSpec {
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        swarm.hang_removal_of("stuck", true);
        swarm.remove_volume("fine").await.unwrap();
        let err = swarm.remove_volume("stuck").await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        let left = swarm.list_volumes(&LabelFilter::all()).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "stuck");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_every_call() {
        let swarm = sim();
        swarm.set_latency(Duration::from_millis(200));
        let before = swarm.elapsed();
        swarm.ping().await.unwrap();
        assert_eq!(swarm.elapsed() - before, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fraction_of_calls_fails_the_same_way_for_the_same_seed() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let swarm = SimSwarm::new(SimConfig {
                seed,
                ..SimConfig::default()
            });
            swarm.fail_fraction(0.5);
            let mut out = Vec::new();
            for _ in 0..40 {
                out.push(swarm.ping().await.is_ok());
            }
            out
        }
        let a = pattern(7).await;
        assert_eq!(a, pattern(7).await);
        let failures = a.iter().filter(|ok| !**ok).count();
        assert!((8..=32).contains(&failures), "{failures} of 40 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn events_announce_changes_and_end_when_the_daemon_restarts() {
        let swarm = sim();
        let mut events = swarm.events();
        let id = swarm.create_service(&web("e", "img:1")).await.unwrap();
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(
            (first.kind, first.action.as_str(), first.id.as_str()),
            (ObjectKind::Service, "create", id.as_str())
        );
        swarm.restart_daemon();
        // Drain what was sent before the restart, then the stream must end.
        let rest: Vec<_> = events.collect().await;
        assert!(rest.iter().all(|e| e.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_relist_costs_one_call_per_kind_however_many_stacks_exist() {
        let swarm = sim();
        for i in 0..30 {
            let mut spec = web(&format!("s{i}"), "img:1");
            spec.labels = Some(spec::Map::from([(
                "com.docker.stack.namespace".into(),
                format!("stack{}", i % 10),
            )]));
            swarm.create_service(&spec).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm.clear_calls();
        let mine = LabelFilter::all().and_has("com.docker.stack.namespace");
        assert_eq!(swarm.list_services(&mine).await.unwrap().len(), 30);
        assert_eq!(swarm.list_tasks(&mine).await.unwrap().len(), 30);
        swarm.list_containers(&mine).await.unwrap();
        swarm.list_networks(&mine).await.unwrap();
        swarm.list_volumes(&mine).await.unwrap();
        swarm.list_secrets(&mine).await.unwrap();
        swarm.list_configs(&mine).await.unwrap();
        assert_eq!(swarm.call_count(), 7);
        assert_eq!(swarm.write_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_log_counts_writes_and_reads() {
        let swarm = sim();
        let all = LabelFilter::all();
        swarm.list_services(&all).await.unwrap();
        let id = swarm.create_service(&web("f", "img:1")).await.unwrap();
        let version = swarm.list_services(&all).await.unwrap()[0].meta.version;
        let err = swarm
            .update_service(&id, version - 1, &web("f", "img:2"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OutOfSequence { .. }));
        swarm
            .update_service(&id, version, &web("f", "img:2"))
            .await
            .unwrap();
        assert_eq!(swarm.call_count(), 5);
        assert_eq!(swarm.write_count(), 3);
        let calls: Vec<Call> = swarm.calls().into_iter().map(|c| c.call).collect();
        assert_eq!(calls[1], Call::new(Verb::Create, ObjectKind::Service));
    }
}
