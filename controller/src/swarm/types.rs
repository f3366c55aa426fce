//! Observed swarm objects in hearth's own types: what a list call returns, decoupled from bollard.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// Labels of an observed object, sorted: a map shared between clones (a clone copies a
/// pointer; a change copies the map first if another clone shares it).
///
/// Why shared: a resync lists every object of every stack, and every list answer, snapshot and
/// view used to copy each object's labels key by key (issue 14: at 10,000 stacks, copying and
/// freeing label maps was about a third of a pass).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(std::sync::Arc<BTreeMap<String, String>>);

impl Labels {
    /// No labels.
    pub fn new() -> Labels {
        Labels::default()
    }

    /// The map, to change (copied first when another clone shares it).
    pub fn make_mut(&mut self) -> &mut BTreeMap<String, String> {
        std::sync::Arc::make_mut(&mut self.0)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.make_mut().insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.make_mut().remove(key)
    }

    /// The map itself (a copy when another clone shares it).
    pub fn into_map(self) -> BTreeMap<String, String> {
        std::sync::Arc::unwrap_or_clone(self.0)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        BTreeMap::deserialize(d).map(Labels::from)
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        Labels(std::sync::Arc::new(map))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.into_map()
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Labels {
        Labels::from(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl Extend<(String, String)> for Labels {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        self.make_mut().extend(iter);
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

/// The kinds of object hearth reads or writes through a [`Swarm`](super::Swarm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A swarm service.
    Service,
    /// A task (one scheduled replica of a service).
    Task,
    /// A container (on this node).
    Container,
    /// A network.
    Network,
    /// A volume (on this node).
    Volume,
    /// A swarm secret.
    Secret,
    /// A swarm config.
    Config,
    /// A swarm node.
    Node,
    /// An image (on this node).
    Image,
    /// The swarm / daemon itself (info, ping, events).
    Daemon,
}

impl ObjectKind {
    /// Lowercase name, as Docker's API and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
            ObjectKind::Node => "node",
            ObjectKind::Image => "image",
            ObjectKind::Daemon => "daemon",
        }
    }

    /// Parses Docker's lowercase spelling (as in event types).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "service" => ObjectKind::Service,
            "task" => ObjectKind::Task,
            "container" => ObjectKind::Container,
            "network" => ObjectKind::Network,
            "volume" => ObjectKind::Volume,
            "secret" => ObjectKind::Secret,
            "config" => ObjectKind::Config,
            "node" => ObjectKind::Node,
            "image" => ObjectKind::Image,
            "daemon" => ObjectKind::Daemon,
            _ => return None,
        })
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call does; with an [`ObjectKind`] it names one API call ([`Call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// List objects of one kind by label filter.
    List,
    /// Create an object.
    Create,
    /// Update an object at a version index.
    Update,
    /// Remove an object.
    Remove,
    /// Open the events stream.
    Events,
    /// Read swarm / daemon info.
    Info,
    /// Ping the daemon.
    Ping,
    /// Read one object in detail.
    Inspect,
}

impl Verb {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Remove => "remove",
            Verb::Events => "events",
            Verb::Info => "info",
            Verb::Ping => "ping",
            Verb::Inspect => "inspect",
        }
    }
}

/// One API call: what it does and to which kind of object. Errors name the call that failed;
/// the simulated swarm logs every call it receives as a `Call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Call {
    /// What the call does.
    pub verb: Verb,
    /// The kind of object it touches.
    pub kind: ObjectKind,
}

impl Call {
    /// A call.
    pub const fn new(verb: Verb, kind: ObjectKind) -> Self {
        Self { verb, kind }
    }

    /// Whether the call changes the swarm (create, update, remove).
    pub fn is_write(&self) -> bool {
        matches!(self.verb, Verb::Create | Verb::Update | Verb::Remove)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb.as_str(), self.kind)
    }
}

/// A label filter for list calls: every condition must hold (Docker ANDs `label=` filters).
///
/// An empty filter matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    conditions: Vec<(String, Option<String>)>,
}

impl LabelFilter {
    /// A filter that matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// A filter requiring `key=value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::default().and_eq(key, value)
    }

    /// Adds the condition `key=value`.
    pub fn and_eq(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conditions.push((key.into(), Some(value.into())));
        self
    }

    /// Adds the condition "has label `key`" (any value).
    pub fn and_has(mut self, key: impl Into<String>) -> Self {
        self.conditions.push((key.into(), None));
        self
    }

    /// The conditions, as `(key, Some(value))` or `(key, None)` for presence only.
    pub fn conditions(&self) -> &[(String, Option<String>)] {
        &self.conditions
    }

    /// Docker's filter syntax for each condition: `key=value` or `key`.
    pub fn to_docker(&self) -> Vec<String> {
        self.conditions
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect()
    }

    /// Whether `labels` satisfy every condition.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.conditions
            .iter()
            .all(|(k, v)| match (labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}

/// Identity and bookkeeping shared by versioned swarm objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Object ID.
    pub id: String,
    /// Object name.
    pub name: String,
    /// Version index; updates must pass the current one.
    pub version: u64,
    /// Labels from the object's spec.
    pub labels: Labels,
    /// When the object was created.
    pub created_at: Option<SystemTime>,
    /// When the object was last updated.
    pub updated_at: Option<SystemTime>,
}

/// How many tasks a service wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMode {
    /// A fixed number of replicas.
    Replicated(u64),
    /// One task per eligible node.
    Global,
    /// A mode hearth does not manage (replicated-job, global-job).
    Other,
}

/// An observed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Identity, version, labels, times.
    pub meta: Meta,
    /// Image of the task template.
    pub image: Option<String>,
    /// Replicated or global.
    pub mode: ServiceMode,
    /// Sources of the task template's `volume` mounts (named volumes its tasks create on the
    /// node they run on, if missing). Teardown asks on which nodes tasks ran only when a
    /// service has one.
    pub volume_sources: Vec<String>,
    /// [`crate::swarm::spec::template_digest`] of its task template.
    pub template_digest: Option<String>,
}

/// A task's state, as swarmkit reports it (observed and desired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Created, not yet allocated.
    New,
    /// Resources allocated.
    Allocated,
    /// Waiting for a node.
    Pending,
    /// Assigned to a node.
    Assigned,
    /// Accepted by the node.
    Accepted,
    /// Preparing (image, mounts).
    Preparing,
    /// Ready to start.
    Ready,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Exited with status 0.
    Complete,
    /// Stopped by the orchestrator.
    Shutdown,
    /// Exited with an error.
    Failed,
    /// Rejected by the node (e.g. image missing).
    Rejected,
    /// Marked for removal.
    Remove,
    /// The node went away.
    Orphaned,
    /// A state this version of hearth does not know.
    Other(String),
}

impl TaskState {
    /// Parses swarmkit's lowercase name.
    pub fn parse(s: &str) -> Self {
        match s {
            "new" => TaskState::New,
            "allocated" => TaskState::Allocated,
            "pending" => TaskState::Pending,
            "assigned" => TaskState::Assigned,
            "accepted" => TaskState::Accepted,
            "preparing" => TaskState::Preparing,
            "ready" => TaskState::Ready,
            "starting" => TaskState::Starting,
            "running" => TaskState::Running,
            "complete" => TaskState::Complete,
            "shutdown" => TaskState::Shutdown,
            "failed" => TaskState::Failed,
            "rejected" => TaskState::Rejected,
            "remove" => TaskState::Remove,
            "orphaned" => TaskState::Orphaned,
            other => TaskState::Other(other.to_string()),
        }
    }

    /// Whether the task has stopped for good (it will not run again).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Complete
                | TaskState::Shutdown
                | TaskState::Failed
                | TaskState::Rejected
                | TaskState::Remove
                | TaskState::Orphaned
        )
    }
}

/// An observed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Task ID.
    pub id: String,
    /// Version index.
    pub version: u64,
    /// The service it belongs to.
    pub service_id: String,
    /// Replica slot (replicated services).
    pub slot: Option<u64>,
    /// Node it was scheduled on.
    pub node_id: Option<String>,
    /// Observed state.
    pub state: TaskState,
    /// State the orchestrator wants.
    pub desired_state: TaskState,
    /// Status message ("started", "preparing", …).
    pub message: Option<String>,
    /// Error text when the task failed or was rejected.
    pub error: Option<String>,
    /// Its container, once one exists. Health lives on the container: see [`task_health`].
    pub container_id: Option<String>,
    /// Task labels.
    pub labels: Labels,
    /// The labels of its own container spec (the spec the task was created from), which its
    /// container will carry — hearth puts `hearth.spec-hash` there. Known without seeing the
    /// container, which is listed only by the daemon of the task's node.
    pub container_labels: Labels,
    /// When the task was created.
    pub created_at: Option<SystemTime>,
    /// [`crate::swarm::spec::template_digest`] of the template it was made from.
    pub template_digest: Option<String>,
}

/// A container's health, from its healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Within the start period, or no check has passed yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The checks failed `retries` times in a row.
    Unhealthy,
}

/// A container's run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed).
    Dead,
    /// A state this version of hearth does not know.
    Other(String),
}

impl ContainerState {
    /// Parses Docker's lowercase name.
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            other => ContainerState::Other(other.to_string()),
        }
    }
}

/// A container attached to a network on the node hearth talks to (network inspect's
/// `Containers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEndpoint {
    /// The attached container's ID.
    pub container_id: String,
    /// Its IPv4 address on the network without the prefix length (`172.18.0.3`), if any.
    pub ipv4: Option<String>,
}

/// An observed container (on the node hearth talks to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Container labels (swarm adds `com.docker.swarm.service.id`, `…task.id`, …).
    pub labels: Labels,
    /// The ID of the image it runs (`sha256:…`), when known.
    pub image_id: Option<String>,
    /// Run state.
    pub state: ContainerState,
    /// Health, when the container has a healthcheck.
    pub health: Option<Health>,
    /// Human-readable status ("Up 5 seconds (healthy)").
    pub status: String,
    /// When the container was created.
    pub created_at: Option<SystemTime>,
}

impl Container {
    /// The swarm task this container runs, if any.
    pub fn task_id(&self) -> Option<&str> {
        self.labels.get(super::labels::TASK_ID).map(String::as_str)
    }
}

/// Parses the health part of a container list status: `Up 5 seconds (healthy)`.
pub fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// The health of a task: the health of its container among `containers`.
///
/// Swarm keeps health on the container, not on the task; a list of tasks plus one list of
/// containers answers it for a whole stack without per-task inspects.
pub fn task_health(task: &Task, containers: &[Container]) -> Option<Health> {
    let id = task.container_id.as_deref()?;
    containers
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.health)
}

/// Which images a [`Swarm::list_images`](super::Swarm::list_images) call returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// `Some(true)`: only dangling images (no tag); `Some(false)`: only tagged ones.
    pub dangling: Option<bool>,
    /// Label conditions (the image's config labels).
    pub labels: LabelFilter,
}

impl ImageFilter {
    /// Dangling images whose labels match `labels`.
    pub fn dangling(labels: LabelFilter) -> Self {
        Self {
            dangling: Some(true),
            labels,
        }
    }

    /// Whether `image` passes the filter.
    pub fn matches(&self, image: &Image) -> bool {
        self.dangling.is_none_or(|d| d == image.is_dangling()) && self.labels.matches(&image.labels)
    }
}

/// An observed image (on the node hearth talks to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Image ID (`sha256:…`).
    pub id: String,
    /// Tags (`repo:tag`); empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Labels of the image's config.
    pub labels: Labels,
    /// Size in bytes (what removing it may reclaim).
    pub size: u64,
    /// When the image was created.
    pub created_at: Option<SystemTime>,
}

impl Image {
    /// Whether the image has no tag (Docker lists such tags as `<none>:<none>`).
    pub fn is_dangling(&self) -> bool {
        self.repo_tags.iter().all(|t| t == "<none>:<none>")
    }

    /// Whether the image reference `reference` (as a service spec or container names it:
    /// `repo:tag`, `repo:tag@sha256:…`, `repo@sha256:…`, an ID or ID prefix) denotes this
    /// image.
    pub fn is_named_by(&self, reference: &str) -> bool {
        let hex = self.id.trim_start_matches("sha256:");
        let bare = reference.trim_start_matches("sha256:");
        if bare.len() >= 12 && bare.bytes().all(|b| b.is_ascii_hexdigit()) && hex.starts_with(bare)
        {
            return true;
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        if let Some(digest) = digest {
            let by_digest = self
                .repo_digests
                .iter()
                .any(|d| d.split_once('@').is_some_and(|(_, have)| have == digest));
            if by_digest || digest.trim_start_matches("sha256:") == hex {
                return true;
            }
        }
        if name.is_empty() {
            return false;
        }
        // `repo` means `repo:latest`; the tag is after the last `/` (`host:port/repo` has none)
        let last = name.rsplit('/').next().unwrap_or(name);
        let tagged = if last.contains(':') {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        self.repo_tags.contains(&tagged)
    }
}

/// An observed network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Network ID.
    pub id: String,
    /// Network name.
    pub name: String,
    /// Driver (`overlay`, `bridge`, …).
    pub driver: String,
    /// `swarm` or `local`.
    pub scope: String,
    /// Labels.
    pub labels: Labels,
    /// When the network was created.
    pub created_at: Option<SystemTime>,
}

/// An observed volume (on the node hearth talks to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Volume name (its identity).
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Labels.
    pub labels: Labels,
    /// When the volume was created.
    pub created_at: Option<SystemTime>,
}

/// An observed secret (the data is never returned by Docker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Identity, version, labels, times.
    pub meta: Meta,
}

/// An observed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Identity, version, labels, times.
    pub meta: Meta,
}

/// An observed swarm node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Identity (name = hostname), version, node labels, times.
    pub meta: Meta,
    /// `manager` or `worker`.
    pub role: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, …
    pub state: String,
    /// Whether it is the raft leader.
    pub leader: bool,
}

/// What `info` says about the daemon and its swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmInfo {
    /// This node's ID in the swarm (empty when not in a swarm).
    pub node_id: String,
    /// `active`, `inactive`, `pending`, `error` or `locked`.
    pub local_node_state: String,
    /// Whether this node can take manager requests (services, secrets, …).
    pub control_available: bool,
    /// Nodes in the swarm.
    pub nodes: u64,
    /// Managers in the swarm.
    pub managers: u64,
    /// Engine version.
    pub server_version: String,
    /// API version in use (after negotiation).
    pub api_version: String,
}

impl SwarmInfo {
    /// Whether this node is an active swarm manager (what hearth needs).
    pub fn is_active_manager(&self) -> bool {
        self.local_node_state == "active" && self.control_available
    }
}

/// A hint from the events stream: something about this object changed. Treat it as a trigger
/// to relist, never as the state itself (Docker keeps only 256 events and service events carry
/// no labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Kind of object.
    pub kind: ObjectKind,
    /// Docker's action (`create`, `update`, `remove`, `destroy`, `health_status: healthy`, …).
    pub action: String,
    /// Object ID.
    pub id: String,
    /// Object name, when the event carries one.
    pub name: Option<String>,
    /// When it happened.
    pub time: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_filter_requires_every_condition() {
        let f = LabelFilter::eq("a", "1").and_has("b");
        assert!(f.matches(&labels(&[("a", "1"), ("b", "x")])));
        assert!(!f.matches(&labels(&[("a", "1")])));
        assert!(!f.matches(&labels(&[("a", "2"), ("b", "x")])));
        assert!(LabelFilter::all().matches(&Labels::new()));
        assert_eq!(f.to_docker(), vec!["a=1".to_string(), "b".to_string()]);
    }

    #[test]
    fn health_is_read_from_the_container_status() {
        assert_eq!(
            health_from_status("Up 4 seconds (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(
            health_from_status("Up 9 seconds (unhealthy)"),
            Some(Health::Unhealthy)
        );
        assert_eq!(health_from_status("Up 2 minutes"), None);
    }

    #[test]
    fn task_states_parse_and_know_when_they_are_final() {
        assert_eq!(TaskState::parse("running"), TaskState::Running);
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::parse("shutdown").is_terminal());
        assert_eq!(TaskState::parse("weird"), TaskState::Other("weird".into()));
    }

    #[test]
    fn calls_know_whether_they_write() {
        assert!(Call::new(Verb::Remove, ObjectKind::Volume).is_write());
        assert!(!Call::new(Verb::List, ObjectKind::Service).is_write());
        assert_eq!(
            Call::new(Verb::Create, ObjectKind::Secret).to_string(),
            "create secret"
        );
    }
}
