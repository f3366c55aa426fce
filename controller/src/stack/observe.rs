//! Observing stacks (one list call per kind, for one stack or all at once) and their readiness.

use std::collections::{BTreeMap, HashMap};

use crd::names::labels as keys;

use super::plan::NAMESPACE_LABEL;
use super::{Error, Result};
use crate::swarm::{
    Config, Container, Health, LabelFilter, Network, Secret, Service, ServiceMode, Swarm, Task,
    TaskState, Volume,
};

pub(crate) use crate::swarm::labels::SERVICE_ID as SERVICE_ID_LABEL;

/// How much to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Services, networks, volumes, secrets, configs (5 list calls): enough to plan.
    Objects,
    /// Also tasks and containers (7 list calls): enough to judge readiness.
    WithTasks,
}

/// What one stack's namespace holds, as the list calls returned it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Services.
    pub services: Vec<Service>,
    /// Tasks of those services (with [`Depth::WithTasks`]).
    pub tasks: Vec<Task>,
    /// Their containers on this node (with [`Depth::WithTasks`]).
    pub containers: Vec<Container>,
    /// Networks.
    pub networks: Vec<Network>,
    /// Volumes on this node.
    pub volumes: Vec<Volume>,
    /// Secrets.
    pub secrets: Vec<Secret>,
    /// Configs.
    pub configs: Vec<Config>,
}

impl Observed {
    /// Whether nothing of the stack exists.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.tasks.is_empty()
            && self.containers.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
            && self.secrets.is_empty()
            && self.configs.is_empty()
    }
}

fn observe_failed(namespace: &str) -> impl Fn(crate::swarm::Error) -> Error + '_ {
    move |source| Error::ObserveFailed {
        namespace: namespace.to_string(),
        source,
    }
}

async fn list_all(
    swarm: &dyn Swarm,
    filter: &LabelFilter,
    depth: Depth,
) -> crate::swarm::Result<Observed> {
    let with_tasks = depth == Depth::WithTasks;
    let tasks = async {
        if with_tasks {
            swarm.list_tasks(filter).await
        } else {
            Ok(Vec::new())
        }
    };
    let containers = async {
        if with_tasks {
            swarm.list_containers(filter).await
        } else {
            Ok(Vec::new())
        }
    };
    let (services, tasks, containers, networks, volumes, secrets, configs) = futures::try_join!(
        swarm.list_services(filter),
        tasks,
        containers,
        swarm.list_networks(filter),
        swarm.list_volumes(filter),
        swarm.list_secrets(filter),
        swarm.list_configs(filter),
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

/// Reads one stack: one list call per kind, filtered by its namespace label, run concurrently.
///
/// # Errors
/// [`Error::ObserveFailed`] with the first failed call (not retried here: callers requeue).
pub async fn observe(swarm: &dyn Swarm, namespace: &str, depth: Depth) -> Result<Observed> {
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    list_all(swarm, &filter, depth)
        .await
        .map_err(observe_failed(namespace))
}

/// Reads every stack matching `filter` (plus "has a namespace label") at once and groups the
/// objects by namespace: a resync costs 5 (or 7) list calls however many stacks exist.
///
/// Tasks are grouped through their service (Docker filters tasks by their service's labels
/// but returns them without labels); containers by their namespace label, else through their
/// service.
///
/// # Errors
/// [`Error::ObserveFailed`] (namespace `*`) with the first failed call.
pub async fn observe_all(
    swarm: &dyn Swarm,
    filter: &LabelFilter,
    depth: Depth,
) -> Result<BTreeMap<String, Observed>> {
    Ok(observe_grouped(swarm, filter, depth)
        .await?
        .into_iter()
        .collect())
}

/// [`observe_all`] without ordering the stacks by namespace (a resync's snapshot looks
/// stacks up by namespace; sorting 10,000 of them was ~5 % of the listing).
///
/// # Errors
/// As [`observe_all`].
pub(crate) async fn observe_grouped(
    swarm: &dyn Swarm,
    filter: &LabelFilter,
    depth: Depth,
) -> Result<HashMap<String, Observed>> {
    let filter = filter.clone().and_has(NAMESPACE_LABEL);
    let all = list_all(swarm, &filter, depth)
        .await
        .map_err(observe_failed("*"))?;
    Ok(group(all))
}

fn namespace_of(labels: &crate::swarm::Labels) -> Option<&str> {
    labels.get(NAMESPACE_LABEL).map(String::as_str)
}

/// Stacks by namespace while grouping: hashed (one hash per object, not a string comparison
/// per tree level), a namespace copied once per stack, not once per object.
struct Groups(HashMap<String, Observed>);

impl Groups {
    /// Adds to stack `ns` (made empty first if new) with `add`.
    fn put(&mut self, ns: &str, add: impl FnOnce(&mut Observed)) {
        match self.0.get_mut(ns) {
            Some(o) => add(o),
            None => {
                let mut o = Observed::default();
                add(&mut o);
                self.0.insert(ns.to_string(), o);
            }
        }
    }
}

/// Splits one observation of many stacks by namespace (each stack's objects in listing
/// order).
fn group(all: Observed) -> HashMap<String, Observed> {
    let Observed {
        services,
        tasks,
        containers,
        networks,
        volumes,
        secrets,
        configs,
    } = all;
    let mut out = Groups(HashMap::with_capacity(services.len().max(networks.len())));
    {
        // Each service's namespace by service ID (tasks carry only their service's ID),
        // borrowed from the services, which are grouped after their tasks and containers.
        let service_ns: HashMap<&str, &str> = services
            .iter()
            .filter_map(|s| Some((s.meta.id.as_str(), namespace_of(&s.meta.labels)?)))
            .collect();
        for t in tasks {
            if let Some(ns) = service_ns.get(t.service_id.as_str()) {
                out.put(ns, |o| o.tasks.push(t));
            }
        }
        for c in containers {
            // Labels are shared maps: holding a clone while the object moves copies a pointer.
            let labels = c.labels.clone();
            let ns = namespace_of(&labels).or_else(|| {
                labels
                    .get(SERVICE_ID_LABEL)
                    .and_then(|id| service_ns.get(id.as_str()).copied())
            });
            if let Some(ns) = ns {
                out.put(ns, |o| o.containers.push(c));
            }
        }
    }
    for s in services {
        let labels = s.meta.labels.clone();
        if let Some(ns) = namespace_of(&labels) {
            out.put(ns, |o| o.services.push(s));
        }
    }
    for n in networks {
        let labels = n.labels.clone();
        if let Some(ns) = namespace_of(&labels) {
            out.put(ns, |o| o.networks.push(n));
        }
    }
    for v in volumes {
        let labels = v.labels.clone();
        if let Some(ns) = namespace_of(&labels) {
            out.put(ns, |o| o.volumes.push(v));
        }
    }
    for s in secrets {
        let labels = s.meta.labels.clone();
        if let Some(ns) = namespace_of(&labels) {
            out.put(ns, |o| o.secrets.push(s));
        }
    }
    for c in configs {
        let labels = c.meta.labels.clone();
        if let Some(ns) = namespace_of(&labels) {
            out.put(ns, |o| o.configs.push(c));
        }
    }
    out.0
}

/// Why a task does not count as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProblem {
    /// Task ID.
    pub task_id: String,
    /// Its observed state.
    pub state: TaskState,
    /// Its container's health, when known.
    pub health: Option<Health>,
    /// What is wrong, for humans.
    pub message: String,
}

/// Readiness of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service ID.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Image of its template.
    pub image: Option<String>,
    /// The `hearth.spec-hash` it carries (which desired spec it runs).
    pub spec_hash: Option<String>,
    /// Replicated or global.
    pub mode: ServiceMode,
    /// Tasks the orchestrator wants running.
    pub desired: u64,
    /// Tasks running (and healthy where a healthcheck exists).
    pub ready_tasks: u64,
    /// Tasks that should run but are not ready.
    pub problems: Vec<TaskProblem>,
    /// Every wanted task runs (and is healthy) and replicas are satisfied.
    pub ready: bool,
}

/// Readiness of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackStatus {
    /// Each service, by name.
    pub services: Vec<ServiceStatus>,
    /// Every service is ready (a stack without services is not).
    pub ready: bool,
}

/// Judges readiness from an observation made with [`Depth::WithTasks`].
///
/// A service is ready when every task whose desired state is `running` is running with a
/// container that is healthy (or has no healthcheck) and runs the service's current spec (its
/// `hearth.spec-hash` label matches the service's, for services hearth deployed), and there
/// are at least as many such tasks as replicas (a global service: at least one). During a
/// start-first update the old tasks keep running, so the service is not ready until the new
/// ones have replaced them.
///
/// Containers are listed on the node hearth talks to only. A running task whose container is
/// not listed (it runs on another node) is judged by its task: swarm reports a task with a
/// healthcheck `running` only once the check passed, and the task's template digest says which
/// spec it runs.
///
/// # Caveats
/// A task on another node that turns unhealthy after it started counts as ready until swarm
/// replaces it (its health lives on the container, which only that node's daemon lists).
pub fn status(observed: &Observed) -> StackStatus {
    let mut services: Vec<ServiceStatus> = observed
        .services
        .iter()
        .map(|s| service_status(s, observed))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let ready = !services.is_empty() && services.iter().all(|s| s.ready);
    StackStatus { services, ready }
}

fn service_status(service: &Service, observed: &Observed) -> ServiceStatus {
    let wanted: Vec<&Task> = observed
        .tasks
        .iter()
        .filter(|t| t.service_id == service.meta.id && t.desired_state == TaskState::Running)
        .collect();
    let mut ready_tasks = 0;
    let mut problems = Vec::new();
    for t in &wanted {
        let container = t
            .container_id
            .as_deref()
            .and_then(|id| observed.containers.iter().find(|c| c.id == id));
        let health = container.and_then(|c| c.health);
        let problem = if t.state == TaskState::Starting
            && matches!(health, Some(Health::Starting | Health::Unhealthy))
        {
            // Swarm holds a task with a healthcheck in `starting` until the check passes: the
            // container's health says why it is not running yet.
            Some(match health {
                Some(Health::Unhealthy) => "health: unhealthy".to_string(),
                _ => "health: starting".to_string(),
            })
        } else if t.state != TaskState::Running {
            let why = t.error.as_deref().or(t.message.as_deref()).unwrap_or("");
            Some(format!("task is {:?}: {why}", t.state).to_lowercase())
        } else {
            match (container, health) {
                // The task was made from an older template (a rolling update replaces it),
                // wherever it runs.
                (_, _)
                    if service.template_digest.is_some()
                        && t.template_digest != service.template_digest =>
                {
                    Some("runs an older spec of the service".to_string())
                }
                // A task on another node: its container is listed only by that node's daemon.
                // Swarm keeps a task with a healthcheck `starting` until the check passes
                // (measured on the real 3-node cluster, docs/CLUSTER.md), so `running` is
                // healthy.
                (None, _) => None,
                (Some(_), None | Some(Health::Healthy)) => None,
                (Some(_), Some(Health::Starting)) => Some("health: starting".to_string()),
                (Some(_), Some(Health::Unhealthy)) => Some("health: unhealthy".to_string()),
            }
        };
        match problem {
            None => ready_tasks += 1,
            Some(message) => problems.push(TaskProblem {
                task_id: t.id.clone(),
                state: t.state.clone(),
                health,
                message,
            }),
        }
    }
    let desired = match service.mode {
        ServiceMode::Replicated(n) => n,
        ServiceMode::Global => (wanted.len() as u64).max(1),
        ServiceMode::Other => wanted.len() as u64,
    };
    ServiceStatus {
        id: service.meta.id.clone(),
        name: service.meta.name.clone(),
        image: service.image.clone(),
        spec_hash: service.meta.labels.get(keys::SPEC_HASH).cloned(),
        mode: service.mode,
        desired,
        ready_tasks,
        ready: problems.is_empty() && ready_tasks >= desired,
        problems,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::sim::{SimConfig, SimSwarm};
    use crate::swarm::{ObjectKind, Verb};
    use std::time::Duration;

    use crate::stack::plan::tests::sample_stack;
    use crate::stack::{apply, ApplyOptions, Owner};

    #[tokio::test(start_paused = true)]
    async fn a_stack_becomes_ready_once_every_task_runs_healthy() {
        let swarm = SimSwarm::new(SimConfig::default());
        let stack = sample_stack("s", "img:1", "pw");
        apply(
            &swarm,
            &stack,
            &Owner::operator("s"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        let seen = observe(&swarm, "s", Depth::WithTasks).await.unwrap();
        let st = status(&seen);
        assert!(!st.ready);
        assert_eq!(st.services.len(), 2);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        assert!(!st.ready, "health is still starting");
        assert_eq!(st.services[0].problems[0].message, "health: starting");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        assert!(st.ready, "{st:?}");
        assert_eq!(st.services[0].ready_tasks, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_on_other_nodes_count_by_their_state_and_their_own_spec() {
        // Three nodes; hearth sees the containers of the first only (as on the real cluster).
        let swarm = SimSwarm::with_nodes(SimConfig::default(), 3);
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.services[0].mode = Some(crate::swarm::spec::ServiceMode::replicated(Some(3)));
        let owner = Owner::operator("s");
        apply(&swarm, &stack, &owner, &ApplyOptions::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let seen = observe(&swarm, "s", Depth::WithTasks).await.unwrap();
        assert!(seen.containers.len() < seen.tasks.len(), "{seen:#?}");
        // Started, not yet healthy: `starting` everywhere, so not ready.
        assert!(!status(&seen).ready);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        let web = st.services.iter().find(|s| s.desired == 3).unwrap();
        assert_eq!(web.ready_tasks, 3, "{st:?}");
        assert!(st.ready, "{st:?}");
        // A new spec: no task counts until the new tasks run, wherever they are.
        let mut next = sample_stack("s", "img:2", "pw");
        next.services[0].mode = stack.services[0].mode.clone();
        apply(&swarm, &next, &owner, &ApplyOptions::default())
            .await
            .unwrap();
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        assert!(!st.ready, "{st:?}");
        let web = st.services.iter().find(|s| s.desired == 3).unwrap();
        assert_eq!(web.ready_tasks, 0, "{st:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_update_only_tasks_of_the_new_spec_count() {
        let swarm = SimSwarm::new(SimConfig::default());
        let owner = Owner::operator("s");
        apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &owner,
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = observe(&swarm, "s", Depth::WithTasks).await.unwrap();
        assert!(status(&before).ready);
        apply(
            &swarm,
            &sample_stack("s", "img:2", "pw"),
            &owner,
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        // A view where the old task is still wanted (as in a start-first update) is not ready:
        // its container carries the previous spec hash.
        let mut mixed = observe(&swarm, "s", Depth::Objects).await.unwrap();
        mixed.tasks = before.tasks.clone();
        mixed.containers = before.containers.clone();
        let st = status(&mixed);
        assert!(!st.ready);
        assert_eq!(
            st.services[0].problems[0].message,
            "runs an older spec of the service"
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        assert!(st.ready, "{st:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_image_keeps_the_stack_unready() {
        let swarm = SimSwarm::new(SimConfig::default());
        swarm.set_unhealthy_image("img:broken");
        let stack = sample_stack("s", "img:broken", "pw");
        apply(
            &swarm,
            &stack,
            &Owner::operator("s"),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let st = status(&observe(&swarm, "s", Depth::WithTasks).await.unwrap());
        assert!(!st.ready);
        assert!(st.services[0]
            .problems
            .iter()
            .any(|p| p.health == Some(Health::Unhealthy)));
    }

    #[tokio::test(start_paused = true)]
    async fn observing_all_stacks_costs_the_same_calls_for_one_or_fifty() {
        let swarm = SimSwarm::new(SimConfig::default());
        let owner = Owner::operator("x");
        for i in 0..50 {
            let ns = format!("s{i}");
            apply(
                &swarm,
                &sample_stack(&ns, "img:1", "pw"),
                &owner,
                &ApplyOptions::default(),
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        swarm.clear_calls();
        let all = observe_all(&swarm, &LabelFilter::all(), Depth::WithTasks)
            .await
            .unwrap();
        assert_eq!(swarm.call_count(), 7);
        assert!(swarm
            .calls()
            .iter()
            .all(|c| c.call.verb == Verb::List && c.call.kind != ObjectKind::Node));
        assert_eq!(all.len(), 50);
        let one = &all["s7"];
        assert_eq!(one.services.len(), 2);
        assert_eq!(one.tasks.len(), 2);
        assert_eq!(one.containers.len(), 2);
        assert_eq!((one.networks.len(), one.volumes.len()), (1, 1));
        assert_eq!((one.secrets.len(), one.configs.len()), (1, 1));
        assert!(status(one).ready);
        // A resync plans from the grouped observation alone: nothing to do, no further call.
        for (ns, observed) in &all {
            let plan =
                crate::stack::plan(&sample_stack(ns, "img:1", "pw"), &owner, observed).unwrap();
            assert!(plan.is_empty(), "{ns}: {:?}", plan.actions);
        }
        assert_eq!(swarm.call_count(), 7);
    }
}
