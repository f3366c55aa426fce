//! Other nodes' daemons: where teardown finds and removes a stack's node-local containers and volumes.
//!
//! A volume is node-local: a task that mounts a named volume creates it on the node it runs
//! on, and the Engine API of the manager cannot list or remove it there. So teardown asks on
//! which nodes the stack's tasks ran (tasks carry their node's ID; they are listed before the
//! services go, since tasks vanish with their service) and reaches each such node's own
//! daemon through an endpoint the operator configured ([`NodeDaemons`], `--node-endpoint
//! <node-id-or-hostname>=unix:///path`). A node where tasks ran that has no endpoint, or whose
//! endpoint does not answer, is never skipped silently: it is a residual of the teardown,
//! named by ID and hostname.
//!
//! # Decisions
//! - Nodes are surveyed only when a service of the stack mounts a named volume (`type:
//!   volume` with a source): otherwise no task can have left a volume of the stack anywhere
//!   (bind and tmpfs mounts create nothing; anonymous volumes carry no label of the stack and
//!   hearth never removes them, on any node). A stack without such mounts costs no extra call.
//! - The stack's tasks are listed in teardown's first round trip (alongside the services, so
//!   no extra round trip). The local node's ID comes from a task container's
//!   `com.docker.swarm.node.id` label when forced teardown listed one, otherwise from `info`
//!   (once per [`NodeDaemons`] value, cached); the nodes (hostnames) are listed only when a
//!   task ran on another node, endpoints are configured or nodes are required. On a
//!   single-node swarm: one extra call (the task list) in the first round trip, and a forced
//!   teardown of running containers adds no round trip before the services are removed.
//! - The local node is reached through the daemon hearth already talks to, unless an endpoint
//!   is configured for it explicitly: then its volumes are removed through that endpoint (and
//!   a dead endpoint is an error, as for any other node).
//! - A retry after a node could not be reached: the services, and with them the record of
//!   where tasks ran, are gone, so the caller passes that node in
//!   [`TeardownOptions::required_nodes`] (runs do, from their `node/<host>` residuals) and it
//!   stays a residual until it is reached.
//! - Containers on another node: forced teardown kills and removes them; graceful teardown
//!   waits for swarm to stop them, removing only containers that never started (by then no
//!   task may create one any more: the wait of [`super::teardown`] covers tasks on every node).
//!
//! # Caveats
//! Multi-node teardown is tested on the simulated swarm only; the real test swarm has one node
//! (its local node reached through an explicit endpoint). Only `unix://` endpoints are
//! supported: reach another node's daemon through a forwarded socket (e.g. `ssh -nNT -L
//! /run/hearth/node2.sock:/var/run/docker.sock node2`); the adapter's raw Engine calls speak
//! HTTP over a unix socket only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::plan::NAMESPACE_LABEL;
use super::retry::{poll_delays, swarm_until};
use super::teardown::{Drain, Hints, Scope, TeardownOptions};
use super::ObjectRef;
use crate::swarm::{self, LabelFilter, Node, ObjectKind, Service, Swarm, Task};

/// Opens the daemon of one node (lazily: only when a teardown needs that node).
pub type Connect = Arc<dyn Fn() -> BoxFuture<'static, swarm::Result<Arc<dyn Swarm>>> + Send + Sync>;

/// How long teardown tries to reach a node's daemon before naming it unreachable.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Endpoint {
    url: String,
    connect: Connect,
}

/// Engine endpoints of swarm nodes, by node ID or hostname; cheap to clone (clones share the
/// cached local node ID).
#[derive(Clone, Default)]
pub struct NodeDaemons {
    endpoints: BTreeMap<String, Endpoint>,
    /// The ID of the node the main daemon runs on, once read.
    local: Arc<OnceLock<String>>,
}

impl fmt::Debug for NodeDaemons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.endpoints.iter().map(|(k, e)| (k, &e.url)))
            .finish()
    }
}

impl NodeDaemons {
    /// No endpoint: only the local node's daemon is reached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the endpoint of `node` (its ID or hostname); `url` names it in reports and errors.
    pub fn add(&mut self, node: impl Into<String>, url: impl Into<String>, connect: Connect) {
        self.endpoints.insert(
            node.into(),
            Endpoint {
                url: url.into(),
                connect,
            },
        );
    }

    /// Adds an endpoint whose daemon is already open (the simulated swarm's node views).
    pub fn add_swarm(
        &mut self,
        node: impl Into<String>,
        url: impl Into<String>,
        swarm: Arc<dyn Swarm>,
    ) {
        let connect: Connect = Arc::new(move || {
            let swarm = Arc::clone(&swarm);
            Box::pin(async move { Ok(swarm) })
        });
        self.add(node, url, connect);
    }

    /// The local node's ID, once a survey read it.
    pub(crate) fn local_id(&self) -> Option<&str> {
        self.local.get().map(String::as_str)
    }

    /// Whether no endpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The configured endpoints: (node ID or hostname as configured, URL).
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (&str, &str)> {
        self.endpoints
            .iter()
            .map(|(node, e)| (node.as_str(), e.url.as_str()))
    }

    /// Whether an endpoint is configured for the node with this ID or hostname.
    pub(crate) fn has(&self, id: &str, hostname: &str) -> bool {
        self.find(id, hostname).is_some()
    }

    /// Opens and pings the daemon of the endpoint configured as `node`, trying for at most
    /// [`REACH_TIMEOUT`]; `None` when no endpoint is configured under that key.
    pub(crate) async fn reach(&self, node: &str) -> Option<swarm::Result<Arc<dyn Swarm>>> {
        let endpoint = self.endpoints.get(node)?;
        let reach = Instant::now() + REACH_TIMEOUT;
        Some(
            swarm_until(reach, || async {
                let daemon = (endpoint.connect)().await?;
                daemon.ping().await?;
                Ok(daemon)
            })
            .await,
        )
    }

    /// The endpoint of a node: by ID first, then by hostname.
    fn find(&self, id: &str, hostname: &str) -> Option<&Endpoint> {
        self.endpoints
            .get(id)
            .or_else(|| self.endpoints.get(hostname))
    }
}

/// Parses `--node-endpoint <node-id-or-hostname>=unix:///path/to/docker.sock`.
///
/// # Errors
/// A message naming what is wrong (no `=`, an empty node, a scheme other than `unix://`).
pub fn parse_endpoint(text: &str) -> Result<(String, PathBuf), String> {
    let (node, url) = text.split_once('=').ok_or_else(|| {
        format!("node endpoint {text:?}: expected <node-id-or-hostname>=unix:///path")
    })?;
    let node = node.trim();
    if node.is_empty() {
        return Err(format!(
            "node endpoint {text:?}: the node ID or hostname is empty"
        ));
    }
    match url.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok((node.to_string(), PathBuf::from(path))),
        _ => Err(format!(
            "node endpoint {text:?}: only unix:///absolute/path endpoints are supported (reach another node's daemon through a forwarded socket, e.g. ssh -nNT -L /run/hearth/node.sock:/var/run/docker.sock node)"
        )),
    }
}

/// What teardown does on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeTarget {
    /// Node ID.
    pub id: String,
    /// Hostname (empty if the node is no longer in the swarm).
    pub hostname: String,
    /// The configured endpoint's URL, `None` if none is configured.
    pub endpoint: Option<String>,
}

impl NodeTarget {
    fn label(&self) -> String {
        if self.hostname.is_empty() {
            format!("node {} (not in the swarm any more)", self.id)
        } else {
            format!("node {} ({})", self.hostname, self.id)
        }
    }
}

/// Decides which nodes teardown must reach besides its own daemon (pure): every node where a
/// task of the stack ran other than `local`, every `required` node (by ID or hostname; one
/// that left the swarm is kept by that name), every node an endpoint names, and `local`
/// itself when an endpoint names it.
pub(crate) fn targets(
    tasks: &[Task],
    required: &[String],
    local: &str,
    nodes: &[Node],
    daemons: &NodeDaemons,
) -> Vec<NodeTarget> {
    let required = required.iter().map(|r| {
        nodes
            .iter()
            .find(|n| n.meta.id == *r || n.meta.name == *r)
            .map_or(r.as_str(), |n| n.meta.id.as_str())
    });
    // Every node with an endpoint too: the stack's declared volumes were created on the
    // manager hearth talked to when it applied the stack, which after a manager failover is
    // neither this daemon's node nor one where tasks ran (found on the real 3-manager
    // cluster, docs/RELIABILITY.md). Reaching a node costs two list calls.
    let reachable = nodes
        .iter()
        .filter(|n| daemons.find(&n.meta.id, &n.meta.name).is_some())
        .map(|n| n.meta.id.as_str());
    let ran: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t.node_id.as_deref())
        .filter(|n| !n.is_empty())
        .chain(required)
        .chain(reachable)
        .chain(std::iter::once(local))
        .collect();
    ran.into_iter()
        .filter_map(|id| {
            let hostname = nodes
                .iter()
                .find(|n| n.meta.id == id)
                .map(|n| n.meta.name.clone())
                .unwrap_or_default();
            let endpoint = daemons.find(id, &hostname).map(|e| e.url.clone());
            (id != local || endpoint.is_some()).then(|| NodeTarget {
                id: id.to_string(),
                hostname,
                endpoint,
            })
        })
        .collect()
}

/// Whether a service of the stack mounts a named volume (then tasks may have created it on
/// any node they ran on).
pub(crate) fn mounts_volumes(services: &[Service]) -> bool {
    services.iter().any(|s| !s.volume_sources.is_empty())
}

pub(crate) use crate::swarm::labels::NODE_ID as NODE_ID_LABEL;

/// Decides the nodes to reach from where the stack's tasks ran (`tasks`, listed before the
/// services go; empty when no service mounts a named volume). `local`: this daemon's node ID
/// if the caller knows it (a task container's [`NODE_ID_LABEL`]); otherwise it is read with
/// `info`, once per [`NodeDaemons`] value.
pub(crate) async fn survey(
    swarm: &dyn Swarm,
    options: &TeardownOptions,
    tasks: Vec<Task>,
    local: Option<String>,
    deadline: Instant,
) -> swarm::Result<Vec<NodeTarget>> {
    let (daemons, required) = (&options.nodes, &options.required_nodes);
    if tasks.is_empty() && daemons.is_empty() && required.is_empty() {
        return Ok(Vec::new());
    }
    let local = match daemons.local.get().cloned().or(local) {
        Some(id) => id,
        None => swarm_until(deadline, || swarm.info()).await?.node_id,
    };
    let local = daemons.local.get_or_init(|| local).clone();
    let remote = tasks.iter().any(|t| {
        t.node_id
            .as_deref()
            .is_some_and(|n| !n.is_empty() && n != local)
    });
    let all = LabelFilter::all();
    let nodes = if remote || !daemons.is_empty() || !required.is_empty() {
        swarm_until(deadline, || swarm.list_nodes(&all)).await?
    } else {
        Vec::new()
    };
    Ok(targets(&tasks, required, &local, &nodes, daemons))
}

/// What teardown did on one other node (or the local node, reached through its endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// Node ID.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// The endpoint used; `None` when none is configured (then the node is a residual).
    pub endpoint: Option<String>,
    /// Containers of the stack killed and removed there.
    pub containers_removed: Vec<ObjectRef>,
    /// Volumes of the stack removed there.
    pub volumes_removed: Vec<ObjectRef>,
}

/// The outcome of [`clean`] on every target node.
#[derive(Debug, Default)]
pub(crate) struct Cleaned {
    pub reports: Vec<NodeReport>,
    /// Nodes not reached (kind `Node`) and objects still there (named `… on node <host>`).
    pub residuals: Vec<ObjectRef>,
    pub failures: Vec<String>,
}

/// On each target node: waits for the stack's containers to go (forced: removes them), removes
/// the stack's volumes, and lists both again until nothing is left or `deadline`.
pub(crate) async fn clean(
    targets: &[NodeTarget],
    daemons: &NodeDaemons,
    namespace: &str,
    service_names: &BTreeMap<String, String>,
    options: &TeardownOptions,
    deadline: Instant,
) -> Cleaned {
    let runs = targets.iter().map(|t| async move {
        let endpoint = daemons.find(&t.id, &t.hostname);
        clean_node(t, endpoint, namespace, service_names, options, deadline).await
    });
    let mut out = Cleaned::default();
    for (report, residuals, failures) in futures::future::join_all(runs).await {
        out.reports.push(report);
        out.residuals.extend(residuals);
        out.failures.extend(failures);
    }
    out
}

async fn clean_node(
    target: &NodeTarget,
    endpoint: Option<&Endpoint>,
    namespace: &str,
    service_names: &BTreeMap<String, String>,
    options: &TeardownOptions,
    deadline: Instant,
) -> (NodeReport, Vec<ObjectRef>, Vec<String>) {
    let mut report = NodeReport {
        id: target.id.clone(),
        hostname: target.hostname.clone(),
        endpoint: target.endpoint.clone(),
        ..NodeReport::default()
    };
    let name = if target.hostname.is_empty() {
        &target.id
    } else {
        &target.hostname
    };
    let node_ref = ObjectRef::new(ObjectKind::Node, name, &target.id);
    let Some(endpoint) = endpoint else {
        let failure = format!(
            "{}: tasks of stack {namespace} ran there and no engine endpoint is configured for it, so volumes of the stack may remain there; configure one with --node-endpoint {}=unix:///path/to/its/docker.sock (e.g. a socket forwarded over ssh)",
            target.label(),
            target.id
        );
        return (report, vec![node_ref], vec![failure]);
    };
    let reach = deadline.min(Instant::now() + REACH_TIMEOUT);
    let connected = swarm_until(reach, || async {
        let daemon = (endpoint.connect)().await?;
        daemon.ping().await?;
        Ok(daemon)
    })
    .await;
    let daemon = match connected {
        Ok(d) => d,
        Err(e) => {
            let failure = format!(
                "{}: its engine endpoint {} did not answer ({e}), so volumes of stack {namespace} may remain there",
                target.label(),
                endpoint.url
            );
            return (report, vec![node_ref], vec![failure]);
        }
    };
    let on =
        |o: &ObjectRef| ObjectRef::new(o.kind, format!("{} on {}", o.name, target.label()), &o.id);
    // The listing must run even when the deadline has passed.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(10));
    // Containers first (volumes are in use until they are gone). Tasks are swarm-wide: the
    // teardown's wait covers those that may still create a container, so a container that
    // never started is an orphan here.
    let scope = Scope {
        namespace: Some(namespace),
        service_names,
    };
    let drained = Drain {
        daemon: daemon.as_ref(),
        scope,
        mode: options.mode,
        tasks: false,
        max_poll: options.max_poll,
        deadline,
        listed: None,
    }
    .run(&mut Hints::new(None, scope))
    .await;
    let listing_failed = |e: swarm::Error| {
        format!(
            "{}: listing the stack's containers and volumes through {} failed ({e})",
            target.label(),
            endpoint.url
        )
    };
    let drained = match drained {
        Ok(d) => d,
        Err(e) => return (report, vec![node_ref], vec![listing_failed(e)]),
    };
    report.containers_removed.extend(drained.removed);
    if !drained.left.is_empty() {
        let residuals = drained.left.iter().map(on).collect();
        return (report, residuals, drained.failures);
    }
    // Then the volumes, listed again until none is left.
    let volumes_filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    let mut pauses = poll_delays(options.max_poll);
    let mut last_errors: Vec<String> = Vec::new();
    loop {
        let volumes = match swarm_until(deadline, || daemon.list_volumes(&volumes_filter)).await {
            Ok(v) => v,
            Err(e) => return (report, vec![node_ref], vec![listing_failed(e)]),
        };
        let volumes: Vec<ObjectRef> = volumes
            .iter()
            .map(|v| ObjectRef::new(ObjectKind::Volume, &v.name, &v.name))
            .collect();
        if volumes.is_empty() {
            return (report, Vec::new(), Vec::new());
        }
        if Instant::now() >= deadline {
            let residuals = volumes.iter().map(on).collect();
            return (report, residuals, last_errors);
        }
        last_errors.clear();
        let mut progress = false;
        for v in &volumes {
            match daemon.remove_volume(&v.name).await {
                Ok(()) => {
                    progress = true;
                    report.volumes_removed.push(v.clone());
                }
                Err(e) if e.is_not_found() => progress = true,
                // "In use" and transient failures: the next look tries again.
                Err(e) => last_errors.push(format!("{}: {e}", on(v))),
            }
        }
        if !progress {
            let pause = pauses.next().unwrap_or(options.max_poll);
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::{Labels, Meta, TaskState};

    use crate::stack::plan::tests::sample_stack;
    use crate::stack::{apply, observe, teardown, ApplyOptions, Depth, Error, Mode, Owner};
    use crate::swarm::sim::{SimConfig, SimSwarm};
    use crate::swarm::{spec, Call, Verb};

    /// Applies `stack` as operator `owner`.
    async fn deploy(swarm: &SimSwarm, stack: &spec::StackSpec, owner: &str) {
        apply(
            swarm,
            stack,
            &Owner::operator(owner),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
    }

    /// A 3-node simulated swarm with stack `s` (api ×2, web ×1: one task per node, each
    /// mounting `s_data`) and stack `other` that must survive.
    async fn three_nodes() -> SimSwarm {
        let swarm = SimSwarm::with_nodes(SimConfig::default(), 3);
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.services[0].mode = Some(spec::ServiceMode {
            replicated: Some(spec::Replicated { replicas: Some(2) }),
            ..spec::ServiceMode::default()
        });
        deploy(&swarm, &stack, "s").await;
        deploy(&swarm, &sample_stack("other", "img:1", "pw"), "other").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm
    }

    fn ns(namespace: &str) -> LabelFilter {
        LabelFilter::eq(NAMESPACE_LABEL, namespace)
    }

    fn endpoints(swarm: &SimSwarm, nodes: &[String]) -> NodeDaemons {
        let mut daemons = NodeDaemons::new();
        for id in nodes {
            daemons.add_swarm(id, format!("sim://{id}"), Arc::new(swarm.node_view(id)));
        }
        daemons
    }

    #[tokio::test(start_paused = true)]
    async fn teardown_removes_the_stacks_volumes_on_every_node_through_their_endpoints() {
        for mode in [TeardownOptions::graceful(), TeardownOptions::forced()] {
            let swarm = three_nodes().await;
            let ids = swarm.node_ids();
            let others: Vec<Vec<String>> = ids
                .iter()
                .map(|id| swarm.volumes_on(id, &ns("other")))
                .collect();
            assert!(others.iter().any(|o| !o.is_empty()));
            for id in &ids {
                assert_eq!(swarm.volumes_on(id, &ns("s")), ["s_data"], "{id}");
            }
            let options = TeardownOptions {
                nodes: endpoints(&swarm, &ids[1..]),
                ..mode
            };
            let report = teardown(&swarm, "s", &options).await.unwrap();
            for (id, other) in ids.iter().zip(&others) {
                assert!(swarm.volumes_on(id, &ns("s")).is_empty(), "{id}");
                assert_eq!(&swarm.volumes_on(id, &ns("other")), other, "{id}");
            }
            assert_eq!(report.nodes.len(), 2, "{report:?}");
            for n in &report.nodes {
                assert_eq!(n.volumes_removed.len(), 1, "{n:?}");
                assert!(n.endpoint.as_deref().unwrap().starts_with("sim://"));
            }
            if options.mode == Mode::Forced {
                let remote: usize = report
                    .nodes
                    .iter()
                    .map(|n| n.containers_removed.len())
                    .sum();
                assert_eq!(remote, 2, "{report:?}");
            }
            assert!(observe(&swarm, "s", Depth::WithTasks)
                .await
                .unwrap()
                .is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_without_an_endpoint_is_a_residual_named_by_hostname_and_id() {
        let swarm = three_nodes().await;
        let ids = swarm.node_ids();
        let options = TeardownOptions {
            nodes: endpoints(&swarm, &ids[1..2]),
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
        assert_eq!(residuals.len(), 1, "{residuals:?}");
        assert_eq!(residuals[0].kind, ObjectKind::Node);
        assert_eq!(residuals[0].id, ids[2]);
        let text = err.to_string();
        assert!(text.contains("node sim-3 ("), "{text}");
        assert!(
            failures.iter().any(|f| f.contains(&ids[2])
                && f.contains("no engine endpoint")
                && f.contains("--node-endpoint")),
            "{failures:?}"
        );
        // Everything else went: the node with an endpoint and the local node are clean.
        assert!(swarm.volumes_on(&ids[0], &ns("s")).is_empty());
        assert!(swarm.volumes_on(&ids[1], &ns("s")).is_empty());
        assert_eq!(swarm.volumes_on(&ids[2], &ns("s")), ["s_data"]);
        assert_eq!(report.nodes.len(), 2);

        // A retry: the services (and the record of where tasks ran) are gone; the node the
        // first attempt could not reach is required, and reached once it has an endpoint.
        let retry = TeardownOptions {
            nodes: endpoints(&swarm, &ids[2..]),
            required_nodes: vec!["sim-3".into()],
            ..TeardownOptions::forced()
        };
        let report = teardown(&swarm, "s", &retry).await.unwrap();
        assert_eq!(report.nodes.len(), 1, "{report:?}");
        assert_eq!(report.nodes[0].volumes_removed.len(), 1, "{report:?}");
        assert!(swarm.volumes_on(&ids[2], &ns("s")).is_empty());
        // Still required and still without an endpoint: the retry fails again.
        let retry = TeardownOptions {
            required_nodes: vec!["sim-3".into()],
            ..TeardownOptions::forced()
        };
        let err = teardown(&swarm, "s", &retry).await.unwrap_err();
        assert!(err.to_string().contains("node sim-3 ("), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_endpoint_is_a_residual_naming_the_node_and_the_endpoint() {
        let swarm = three_nodes().await;
        let ids = swarm.node_ids();
        swarm.set_node_reachable(&ids[1], false);
        let options = TeardownOptions {
            nodes: endpoints(&swarm, &ids[1..]),
            ..TeardownOptions::forced()
        };
        let before = swarm.elapsed();
        let err = teardown(&swarm, "s", &options).await.unwrap_err();
        let Error::Residuals {
            residuals,
            failures,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(residuals.len(), 1, "{residuals:?}");
        assert_eq!(
            (residuals[0].kind, residuals[0].name.as_str()),
            (ObjectKind::Node, "sim-2")
        );
        assert!(
            failures
                .iter()
                .any(|f| f.contains(&format!("sim://{}", ids[1])) && f.contains("did not answer")),
            "{failures:?}"
        );
        assert!(swarm.volumes_on(&ids[2], &ns("s")).is_empty());
        // Given up on after the reach timeout, not the whole deadline.
        assert!(swarm.elapsed() - before < REACH_TIMEOUT + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_volume_in_use_by_another_stack_stays_a_named_residual() {
        let swarm = three_nodes().await;
        let ids = swarm.node_ids();
        // A container of stack `x` on node 2 mounting s_data: it stays in use there.
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
        deploy(&swarm, &intruder, "x").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let options = TeardownOptions {
            nodes: endpoints(&swarm, &ids[1..]),
            deadline: Duration::from_secs(20),
            ..TeardownOptions::forced()
        };
        let err = teardown(&swarm, "s", &options).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("volume s_data on node sim-"), "{text}");
        assert!(text.contains("in use"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_node_teardown_lists_tasks_in_its_first_round_trip_and_reads_info_only_without_a_container(
    ) {
        let first_round = |swarm: &SimSwarm| -> Vec<Call> {
            swarm
                .calls()
                .iter()
                .map(|c| c.call)
                .take_while(|c| *c != Call::new(Verb::Remove, ObjectKind::Service))
                .collect()
        };
        // Without volume mounts: the first round trip is the same lists as without nodes.
        let swarm = SimSwarm::new(SimConfig::default());
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.volumes.clear();
        for svc in &mut stack.services {
            let cs = svc
                .task_template
                .as_mut()
                .unwrap()
                .container_spec
                .as_mut()
                .unwrap();
            cs.mounts = None;
        }
        deploy(&swarm, &stack, "s").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm.clear_calls();
        let report = teardown(&swarm, "s", &TeardownOptions::forced())
            .await
            .unwrap();
        assert!(report.nodes.is_empty());
        let calls = first_round(&swarm);
        // Forced: the containers and the tasks are listed in the same round trip (the
        // containers are killed right after the services go).
        assert_eq!(calls.len(), 8, "events + seven lists: {calls:?}");
        let surveyed = |calls: &[Call]| {
            calls
                .iter()
                .filter(|c| {
                    [
                        Call::new(Verb::List, ObjectKind::Task),
                        Call::new(Verb::Info, ObjectKind::Daemon),
                        Call::new(Verb::List, ObjectKind::Node),
                    ]
                    .contains(c)
                })
                .count()
        };
        assert_eq!(surveyed(&calls), 1, "the task list only: {calls:?}");

        // With a volume mount, forced: the same round trip; the local node's ID comes from a
        // task container's label, so no info (and it is cached in the options after).
        let swarm = SimSwarm::new(SimConfig::default());
        deploy(&swarm, &sample_stack("s", "img:1", "pw"), "s").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm.clear_calls();
        let options = TeardownOptions::forced();
        let report = teardown(&swarm, "s", &options).await.unwrap();
        assert!(report.nodes.is_empty());
        let calls = first_round(&swarm);
        assert_eq!(calls.len(), 8, "events + seven lists: {calls:?}");
        assert_eq!(surveyed(&calls), 1, "{calls:?}");
        assert_eq!(
            options.nodes.local_id(),
            swarm.node_ids().first().map(String::as_str)
        );

        // Graceful (no container listed): one info, once per `NodeDaemons` value.
        let swarm = SimSwarm::new(SimConfig::default());
        for name in ["s", "t"] {
            deploy(&swarm, &sample_stack(name, "img:1", "pw"), name).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let options = TeardownOptions::graceful();
        for (name, infos) in [("s", 1), ("t", 0)] {
            swarm.clear_calls();
            let report = teardown(&swarm, name, &options).await.unwrap();
            assert!(report.nodes.is_empty());
            let calls = first_round(&swarm);
            let info = calls
                .iter()
                .filter(|c| **c == Call::new(Verb::Info, ObjectKind::Daemon))
                .count();
            assert_eq!(info, infos, "{name}: {calls:?}");
            assert!(!calls.contains(&Call::new(Verb::List, ObjectKind::Node)));
        }
        assert_eq!(
            options.nodes.local_id(),
            swarm.node_ids().first().map(String::as_str)
        );
    }

    fn task(node: &str) -> Task {
        Task {
            id: format!("t-{node}"),
            version: 1,
            service_id: "svc".into(),
            slot: Some(1),
            node_id: Some(node.into()),
            state: TaskState::Running,
            desired_state: TaskState::Running,
            message: None,
            error: None,
            container_id: None,
            labels: Labels::new(),
            container_labels: Labels::new(),
            created_at: None,
            template_digest: None,
        }
    }

    fn node(id: &str, hostname: &str) -> Node {
        Node {
            meta: Meta {
                id: id.into(),
                name: hostname.into(),
                version: 1,
                labels: Labels::new(),
                created_at: None,
                updated_at: None,
            },
            role: "worker".into(),
            availability: "active".into(),
            state: "ready".into(),
            leader: false,
        }
    }

    fn dead() -> Connect {
        Arc::new(|| {
            Box::pin(async {
                Err(swarm::Error::Transport {
                    call: swarm::Call::new(swarm::Verb::Ping, ObjectKind::Daemon),
                    source: "refused".into(),
                })
            })
        })
    }

    #[test]
    fn targets_are_the_other_nodes_where_tasks_ran_and_the_local_node_only_when_named() {
        let tasks = [task("a"), task("b"), task("b"), task("c")];
        let nodes = [
            node("a", "host-a"),
            node("b", "host-b"),
            node("c", "host-c"),
        ];
        let mut daemons = NodeDaemons::new();
        daemons.add("host-b", "unix:///b.sock", dead());
        let t = targets(&tasks, &[], "a", &nodes, &daemons);
        assert_eq!(
            t,
            [
                NodeTarget {
                    id: "b".into(),
                    hostname: "host-b".into(),
                    endpoint: Some("unix:///b.sock".into()),
                },
                NodeTarget {
                    id: "c".into(),
                    hostname: "host-c".into(),
                    endpoint: None,
                },
            ]
        );
        // The local node is a target once an endpoint names it (by ID here).
        daemons.add("a", "unix:///a.sock", dead());
        let t = targets(&tasks, &[], "a", &nodes, &daemons);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].endpoint.as_deref(), Some("unix:///a.sock"));
        // Tasks on the local node only and no endpoint: nothing to reach.
        assert!(targets(&[task("a")], &[], "a", &nodes, &NodeDaemons::new()).is_empty());
        // A required node is a target without tasks (by hostname → its ID; or kept by name).
        let required = ["host-c".to_string(), "gone".to_string()];
        let t = targets(&[], &required, "a", &nodes, &NodeDaemons::new());
        let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["c", "gone"]);
        assert_eq!(t[1].hostname, "");
    }

    #[test]
    fn endpoints_parse_unix_sockets_and_reject_anything_else_with_a_reason() {
        assert_eq!(
            parse_endpoint("abc=unix:///var/run/docker.sock").unwrap(),
            ("abc".into(), PathBuf::from("/var/run/docker.sock"))
        );
        for bad in [
            "abc",
            "=unix:///x",
            "abc=tcp://10.0.0.2:2375",
            "abc=unix://relative",
        ] {
            let err = parse_endpoint(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
