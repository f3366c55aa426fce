//! Forced removal: the one implementation that removes a stack's objects by force — services,
//! then at once their containers (killed and removed, on every daemon), then everything else
//! as soon as nothing uses it.
//!
//! Used by `hearth stack rm --force` and every forced [`super::teardown`] (the objects listed
//! by the stack's namespace label, verified by a final listing there), and by the sweeper and
//! the run reconciler through [`remove_forced`] (a selection of objects, each on the daemon
//! hearth talks to or on another node's; the caller verifies). The waits and removals are
//! those of graceful teardown ([`super::teardown`]'s `Drain`, `remove_one`): one loop kills
//! and waits for containers on any daemon, one function removes an object of any kind.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::teardown::{
    record_removal, remove_all, remove_one, swarm_containers, Drain, Drained, Hints, Mode, Scope,
};
use super::ObjectRef;
use crate::swarm::{self, Container, ObjectKind, Swarm};

/// One object to remove by force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The object (kind, name, ID; a volume's ID is its name).
    pub object: ObjectRef,
    /// The node whose daemon holds it (a key of the daemons passed along); `None`: the daemon
    /// hearth talks to. Only volumes are node-local.
    pub node: Option<String>,
}

impl Target {
    /// An object on the daemon hearth talks to.
    pub fn local(object: ObjectRef) -> Self {
        Target { object, node: None }
    }
}

/// What a forced removal did.
#[derive(Debug, Default)]
pub(super) struct Removal {
    /// Objects removed (services, networks, secrets, configs, volumes).
    pub(super) removed: Vec<ObjectRef>,
    /// Objects gone before hearth removed them.
    pub(super) already_gone: Vec<ObjectRef>,
    /// Containers killed and removed (on any daemon).
    pub(super) containers_removed: Vec<ObjectRef>,
    /// Containers (and tasks that may still create one) still there at the deadline.
    pub(super) left: Vec<ObjectRef>,
    /// Failures met (objects that may be gone anyway: the caller's listing judges).
    pub(super) failures: Vec<String>,
    /// Time spent until the containers were gone from the daemon hearth talks to.
    pub(super) containers_wait: Duration,
}

impl Removal {
    /// Records the outcome of removing `object` ([`record_removal`]).
    fn record(&mut self, object: ObjectRef, result: swarm::Result<()>) {
        record_removal(
            &mut self.removed,
            &mut self.already_gone,
            &mut self.failures,
            object,
            result,
        );
    }
}

/// A forced removal: where and how.
pub(super) struct Forced<'a> {
    /// The daemon hearth talks to (a manager).
    pub(super) swarm: &'a dyn Swarm,
    /// Other nodes' daemons by the keys [`Target::node`] names: their containers of the
    /// removed services are killed too, their volumes removed through them.
    pub(super) nodes: &'a BTreeMap<String, Arc<dyn Swarm>>,
    /// Whose containers and tasks.
    pub(super) scope: Scope<'a>,
    /// Longest pause between two looks at the containers.
    pub(super) max_poll: Duration,
    /// Retries and waits end here.
    pub(super) deadline: Instant,
}

impl Forced<'_> {
    /// Removes `targets`: services first (the daemon's containers listed at the same time
    /// unless `listed` already holds them); then at once their containers are killed and
    /// removed on every daemon — meanwhile one attempt at each secret and config (only the
    /// services held them) —, and as soon as a daemon holds no container of the stack any
    /// more, its networks and volumes go (and the secrets and configs that were still in use).
    /// `alongside` runs once the services are gone, together with the rest (a teardown's
    /// cleaning of other nodes reached through endpoints); its output is returned with the
    /// removal's.
    ///
    /// # Errors
    /// A listing of the containers of the daemon hearth talks to that fails for good (the
    /// removals done are lost from the report then; the caller lists again anyway).
    pub(super) async fn run<T>(
        &self,
        targets: Vec<Target>,
        listed: Option<Vec<Container>>,
        hints: &mut Hints<'_>,
        alongside: impl Future<Output = T>,
    ) -> swarm::Result<(Removal, T)> {
        let mut out = Removal::default();
        let (services, rest): (Vec<Target>, Vec<Target>) = targets
            .into_iter()
            .partition(|t| t.object.kind == ObjectKind::Service && t.node.is_none());
        let services: Vec<ObjectRef> = services.into_iter().map(|t| t.object).collect();
        let must_drain = !services.is_empty() || self.scope.namespace.is_some();
        // 1. Services (and this daemon's containers, when not listed yet).
        let containers_filter = swarm_containers();
        let (removed, listed) = tokio::join!(
            remove_all(services, |o| remove_one(self.swarm, o, self.deadline)),
            async {
                match listed {
                    Some(l) => Ok(l),
                    None if must_drain => {
                        super::retry::swarm_until(self.deadline, || {
                            self.swarm.list_containers(&containers_filter)
                        })
                        .await
                    }
                    None => Ok(Vec::new()),
                }
            },
        );
        for (object, result) in removed {
            out.record(object, result);
        }
        // What this listing missed, the drain's first look finds.
        let listed = listed.unwrap_or_default();

        // 2. Containers on every daemon; this daemon's secrets and configs once meanwhile.
        let (early, mut later): (Vec<Target>, Vec<Target>) = rest.into_iter().partition(|t| {
            t.node.is_none() && matches!(t.object.kind, ObjectKind::Secret | ObjectKind::Config)
        });
        let waiting = Instant::now();
        let local = async {
            let mut drain = Drain {
                daemon: self.swarm,
                scope: self.scope,
                mode: Mode::Forced,
                tasks: true,
                max_poll: self.max_poll,
                deadline: self.deadline,
                listed: Some(listed),
            };
            let once = Instant::now();
            let early = early.into_iter().map(|t| t.object).collect();
            let (drained, early) = tokio::join!(
                async {
                    if must_drain {
                        drain.run(hints).await
                    } else {
                        Ok(Drained::default())
                    }
                },
                remove_all(early, |o| remove_one(self.swarm, o, once)),
            );
            (drained, waiting.elapsed(), early)
        };
        // Other nodes: each drained, then its volumes removed.
        let mut by_node: BTreeMap<&str, Vec<ObjectRef>> = BTreeMap::new();
        for t in later.iter().filter(|t| t.node.is_some()) {
            if let Some(node) = t.node.as_deref() {
                by_node.entry(node).or_default().push(t.object.clone());
            }
        }
        let others = futures::future::join_all(self.nodes.iter().map(|(node, daemon)| {
            let volumes = by_node.remove(node.as_str()).unwrap_or_default();
            self.node(node, daemon.as_ref(), volumes, must_drain)
        }));
        for (node, volumes) in by_node {
            for v in volumes {
                out.failures.push(format!(
                    "{v} on node {node}: node {node} was not reached in this pass"
                ));
            }
        }
        later.retain(|t| t.node.is_none());
        let mut later: Vec<ObjectRef> = later.into_iter().map(|t| t.object).collect();
        let local_then_later = async {
            let (drained, wait, early) = local.await;
            let drained = drained?;
            for (object, result) in early {
                match result {
                    Err(e) if e.is_retryable() => later.push(object),
                    result => out.record(object, result),
                }
            }
            // 3. Networks and volumes (in use until the containers are gone), and what was
            // still in use of the secrets and configs.
            for (object, result) in
                remove_all(later, |o| remove_one(self.swarm, o, self.deadline)).await
            {
                out.record(object, result);
            }
            swarm::Result::Ok((drained, wait))
        };
        let (local, others, beside) = tokio::join!(local_then_later, others, alongside);
        let (drained, wait) = local?;
        out.containers_wait = wait;
        absorb(&mut out, Ok(drained), "");
        for (node, drained, volumes) in others {
            absorb(&mut out, drained, &format!(" on node {node}"));
            for (object, result) in volumes {
                let object = ObjectRef::new(
                    object.kind,
                    format!("{} on node {node}", object.name),
                    &object.id,
                );
                out.record(object, result);
            }
        }
        Ok((out, beside))
    }

    /// On another node: kills and removes the containers of the removed services, then removes
    /// `volumes` there.
    async fn node<'n>(
        &self,
        node: &'n str,
        daemon: &dyn Swarm,
        volumes: Vec<ObjectRef>,
        drain: bool,
    ) -> (
        &'n str,
        swarm::Result<Drained>,
        Vec<(ObjectRef, swarm::Result<()>)>,
    ) {
        let drained = if drain {
            let mut hints = Hints::new(None, self.scope);
            Drain {
                daemon,
                scope: self.scope,
                mode: Mode::Forced,
                tasks: false,
                max_poll: self.max_poll,
                deadline: self.deadline,
                listed: None,
            }
            .run(&mut hints)
            .await
        } else {
            Ok(Drained::default())
        };
        let removed = remove_all(volumes, |o| remove_one(daemon, o, self.deadline)).await;
        (node, drained, removed)
    }
}

/// Adds what a drain did (`on` names the node in failures) to `out`.
fn absorb(out: &mut Removal, drained: swarm::Result<Drained>, on: &str) {
    match drained {
        Ok(d) => {
            out.containers_removed.extend(d.removed);
            if !d.left.is_empty() {
                out.failures.push(format!(
                    "{} container(s) or starting task(s){on} still present at the deadline: {}",
                    d.left.len(),
                    super::list(&d.left)
                ));
                out.left.extend(d.left);
            }
            out.failures.extend(d.failures);
        }
        Err(e) => out.failures.push(format!("listing containers{on}: {e}")),
    }
}

/// Removes `targets` by force (the sweeper's and the run reconciler's entry point): services,
/// their containers killed and removed at once on the daemon hearth talks to and on every
/// daemon in `nodes`, secrets and configs, then networks and volumes as soon as the
/// containers are gone (a volume on a node through that node's daemon in `nodes`).
/// Retryable failures are retried until `deadline` from now. Returns the failures of objects
/// whose removal failed for good or timed out; the caller lists again to verify (what it
/// finds is the residual).
pub async fn remove_forced(
    swarm: &dyn Swarm,
    nodes: &BTreeMap<String, Arc<dyn Swarm>>,
    targets: &[Target],
    deadline: Duration,
) -> Vec<String> {
    let service_names: BTreeMap<String, String> = targets
        .iter()
        .filter(|t| t.object.kind == ObjectKind::Service && t.node.is_none())
        .map(|t| (t.object.id.clone(), t.object.name.clone()))
        .collect();
    let scope = Scope {
        namespace: None,
        service_names: &service_names,
    };
    // Opened before the services go, so no container event is missed.
    let events = (!service_names.is_empty()).then(|| swarm.events());
    let mut hints = Hints::new(events, scope);
    let forced = Forced {
        swarm,
        nodes,
        scope,
        max_poll: Duration::from_millis(250),
        deadline: Instant::now() + deadline,
    };
    match forced
        .run(targets.to_vec(), None, &mut hints, std::future::ready(()))
        .await
    {
        Ok((removal, ())) => removal.failures,
        Err(e) => vec![format!("listing containers: {e}")],
    }
}
