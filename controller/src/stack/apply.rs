//! The executor: runs a [`Plan`] through `&dyn Swarm`, with retries and version conflicts handled.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crd::names::labels as keys;
use futures::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info};

use super::observe::{observe, Depth};
use super::plan::{plan, Action, Plan, NAMESPACE_LABEL};
use super::retry::{swarm_until, until};
use super::{Error, ObjectRef, Owner, Result, Rollback, CONCURRENCY, DEFAULT_APPLY_DEADLINE};
use crate::swarm::{self, spec::StackSpec, LabelFilter, ObjectKind, Swarm};

/// How an apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Deadline of the whole apply; retryable failures are retried with backoff until it.
    pub deadline: Duration,
    /// How often a service update that meets a newer version is re-read and tried again.
    pub conflict_retries: u32,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_APPLY_DEADLINE,
            conflict_retries: 3,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    /// The stack.
    pub namespace: String,
    /// The actions carried out, in order.
    pub done: Vec<Action>,
}

impl ApplyReport {
    /// Whether the stack was already converged.
    pub fn is_noop(&self) -> bool {
        self.done.is_empty()
    }
}

/// Observes the stack's namespace, plans, and executes the plan.
///
/// # Guarantees
/// An unchanged stack costs 5 list calls and zero writes. Everything [`execute`] guarantees.
///
/// # Errors
/// [`Error::ObserveFailed`] (after retries), the planner's errors, and [`execute`]'s.
pub async fn apply(
    swarm: &dyn Swarm,
    desired: &StackSpec,
    owner: &Owner,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let deadline = Instant::now() + options.deadline;
    let retried = AtomicBool::new(false);
    let observed = until(deadline, Error::is_retryable, &retried, || {
        observe(swarm, &desired.namespace, Depth::Objects)
    })
    .await?;
    let plan = plan(desired, owner, &observed)?;
    let volumes_before: BTreeSet<String> =
        observed.volumes.iter().map(|v| v.name.clone()).collect();
    execute_until(swarm, &plan, options, deadline, Some(&volumes_before)).await
}

/// Carries out a plan made against `observed` (a listing of the stack's namespace), without
/// observing or planning again: what [`apply`] does after its own listing, for a caller that
/// already observed and planned (the warm-app reconciler plans once per reconcile).
///
/// # Guarantees
/// Everything [`execute`] guarantees; a failed execution also removes the volumes its new
/// services' tasks created (those not in `observed`), as [`apply`] does.
///
/// # Errors
/// As [`execute`].
pub async fn execute_observed(
    swarm: &dyn Swarm,
    plan: &Plan,
    observed: &super::Observed,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    let volumes_before: BTreeSet<String> =
        observed.volumes.iter().map(|v| v.name.clone()).collect();
    execute_until(
        swarm,
        plan,
        options,
        Instant::now() + options.deadline,
        Some(&volumes_before),
    )
    .await
}

/// Carries out `plan`'s actions in order, stopping at the first that fails for good.
/// Consecutive independent actions (networks, volumes, secrets and configs; then services)
/// run concurrently, at most [`CONCURRENCY`] at once; the report lists them in plan order.
///
/// # Guarantees
/// - Retryable failures (timeouts, transport, unavailable, in use) are retried with
///   exponential backoff until `options.deadline`.
/// - A create that reports "already exists" after an earlier attempt of it failed counts as
///   done (the earlier attempt took effect); otherwise it is an error.
/// - A service update that is out of sequence re-reads the service and tries again with its
///   current version, up to `options.conflict_retries` times; if the re-read service already
///   carries the desired spec hash, the update is done.
/// - Removals count "not found" as done. No failure is swallowed.
/// - A failed execution leaves nothing it created, whatever step failed (#13): the services,
///   networks, secrets and configs it had created are removed again, newest first (through
///   [`apply`], also the volumes its new services' tasks created on this node), and a final
///   listing of the namespace checks that none of them is still there. Updates it made are
///   not undone (the next apply re-plans from what it observes).
///
/// # Errors
/// [`Error::ActionFailed`] naming the (first, in plan order) action that failed and how many
/// completed (those running alongside it included), or [`Error::ConflictPersisted`]; both
/// carry the [`Rollback`]: what was removed, and each object still there with why.
pub async fn execute(
    swarm: &dyn Swarm,
    plan: &Plan,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    execute_until(
        swarm,
        plan,
        options,
        Instant::now() + options.deadline,
        None,
    )
    .await
}

async fn execute_until(
    swarm: &dyn Swarm,
    plan: &Plan,
    options: &ApplyOptions,
    deadline: Instant,
    volumes_before: Option<&BTreeSet<String>>,
) -> Result<ApplyReport> {
    let mut report = ApplyReport {
        namespace: plan.namespace.clone(),
        done: Vec::with_capacity(plan.actions.len()),
    };
    // Objects created so far, with their IDs (for the rollback of a failed execution).
    let mut created: Vec<ObjectRef> = Vec::new();
    for group in groups(&plan.actions) {
        let runs: Vec<_> = group
            .iter()
            .map(|action| run_one(swarm, &plan.namespace, action, options, deadline))
            .collect();
        let results: Vec<(&Action, std::result::Result<Option<ObjectRef>, Step>)> =
            stream::iter(runs).buffered(CONCURRENCY).collect().await;
        let mut failed = None;
        for (action, result) in results {
            match result {
                Ok(object) => {
                    info!(stack = %plan.namespace, "{action}");
                    report.done.push(action.clone());
                    created.extend(object);
                }
                Err(e) => {
                    failed.get_or_insert((action, e));
                }
            }
        }
        if let Some((action, e)) = failed {
            // A failure that used up the deadline still gets time to undo.
            let deadline = deadline.max(Instant::now() + ROLLBACK_TIME);
            let in_use = used_by_updates(&report.done);
            let rollback = Box::new(
                roll_back(
                    swarm,
                    &plan.namespace,
                    &created,
                    &in_use,
                    volumes_before,
                    deadline,
                )
                .await,
            );
            return Err(match e {
                Step::Swarm(source) => Error::ActionFailed {
                    namespace: plan.namespace.clone(),
                    action: action.to_string(),
                    done: report.done.len(),
                    source,
                    rollback,
                },
                Step::Stack(Error::ConflictPersisted {
                    namespace,
                    service,
                    attempts,
                    ..
                }) => Error::ConflictPersisted {
                    namespace,
                    service,
                    attempts,
                    rollback,
                },
                Step::Stack(e) => e,
            });
        }
    }
    Ok(report)
}

/// How long a rollback may take at least, even when the apply's deadline has passed.
const ROLLBACK_TIME: Duration = Duration::from_secs(30);

/// Removes what an execution created, newest first (services before what they use) — except
/// what a service it updated refers to (`in_use`, named in `kept`) — then the
/// volumes that its services' tasks created on this node (those not in `volumes_before`),
/// then lists the namespace once more: whatever of it is still listed is named in `left`.
async fn roll_back(
    swarm: &dyn Swarm,
    namespace: &str,
    created: &[ObjectRef],
    in_use: &BTreeSet<(ObjectKind, String)>,
    volumes_before: Option<&BTreeSet<String>>,
    deadline: Instant,
) -> Rollback {
    let mut removed = Vec::new();
    let mut left = Vec::new();
    let mut kept = Vec::new();
    for object in created.iter().rev() {
        if in_use.contains(&(object.kind, object.name.clone())) {
            kept.push(object.clone());
            continue;
        }
        let id = object.id.as_str();
        let result = match object.kind {
            ObjectKind::Service => remove(deadline, || swarm.remove_service(id)).await,
            ObjectKind::Network => remove(deadline, || swarm.remove_network(id)).await,
            ObjectKind::Volume => remove(deadline, || swarm.remove_volume(id)).await,
            ObjectKind::Secret => remove(deadline, || swarm.remove_secret(id)).await,
            ObjectKind::Config => remove(deadline, || swarm.remove_config(id)).await,
            // Only the kinds above are recorded as created.
            _ => continue,
        };
        match result {
            Ok(()) => {
                info!("rolled back: removed {object}");
                removed.push(object.clone());
            }
            Err(e) => left.push(format!("{object}: {e}")),
        }
    }
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    let services_created = created.iter().any(|o| o.kind == ObjectKind::Service);
    if let (Some(before), true) = (volumes_before, services_created) {
        match swarm_until(deadline, || swarm.list_volumes(&filter)).await {
            Ok(volumes) => {
                for v in volumes.into_iter().filter(|v| !before.contains(&v.name)) {
                    let object = ObjectRef::new(ObjectKind::Volume, &v.name, &v.name);
                    // "In use" is retried: the removed services' containers are going.
                    match remove(deadline, || swarm.remove_volume(&v.name)).await {
                        Ok(()) => {
                            info!("rolled back: removed {object} (created by a task)");
                            removed.push(object);
                        }
                        Err(e) => left.push(format!("{object}: {e}")),
                    }
                }
            }
            Err(e) => left.push(format!("the stack's volumes: listing failed: {e}")),
        }
    }
    // The final listing: nothing removed above may still be there.
    let listed = futures::try_join!(
        swarm_until(deadline, || swarm.list_services(&filter)),
        swarm_until(deadline, || swarm.list_networks(&filter)),
        swarm_until(deadline, || swarm.list_volumes(&filter)),
        swarm_until(deadline, || swarm.list_secrets(&filter)),
        swarm_until(deadline, || swarm.list_configs(&filter)),
    );
    match listed {
        Ok((services, networks, volumes, secrets, configs)) => {
            let present = |o: &ObjectRef| -> bool {
                let is = |id: &str, name: &str| id == o.id || name == o.name;
                match o.kind {
                    ObjectKind::Service => services.iter().any(|s| is(&s.meta.id, &s.meta.name)),
                    ObjectKind::Network => networks.iter().any(|n| is(&n.id, &n.name)),
                    ObjectKind::Volume => volumes.iter().any(|v| is(&v.name, &v.name)),
                    ObjectKind::Secret => secrets.iter().any(|s| is(&s.meta.id, &s.meta.name)),
                    ObjectKind::Config => configs.iter().any(|c| is(&c.meta.id, &c.meta.name)),
                    _ => false,
                }
            };
            let mut still = Vec::new();
            removed.retain(|o| {
                let there = present(o);
                if there {
                    still.push(format!("{o}: still listed after its removal"));
                }
                !there
            });
            left.extend(still);
        }
        Err(e) => left.push(format!("the final listing failed: {e}")),
    }
    Rollback {
        removed,
        kept,
        left,
    }
}

/// The networks, secrets and configs that the services updated by `done` refer to: a
/// rollback keeps them (removing them would break the updated services; Docker refuses).
fn used_by_updates(done: &[Action]) -> BTreeSet<(ObjectKind, String)> {
    let mut out = BTreeSet::new();
    for action in done {
        let Action::UpdateService { spec, .. } = action else {
            continue;
        };
        let Some(task) = spec.task_template.as_ref() else {
            continue;
        };
        for n in task.networks.iter().flatten() {
            out.insert((ObjectKind::Network, n.target.clone()));
        }
        if let Some(c) = task.container_spec.as_ref() {
            for s in c.secrets.iter().flatten() {
                out.insert((ObjectKind::Secret, s.secret_name.clone()));
            }
            for r in c.configs.iter().flatten() {
                out.insert((ObjectKind::Config, r.config_name.clone()));
            }
        }
    }
    out
}

/// [`run`], returning the action with its outcome.
async fn run_one<'a>(
    swarm: &dyn Swarm,
    namespace: &str,
    action: &'a Action,
    options: &ApplyOptions,
    deadline: Instant,
) -> (&'a Action, std::result::Result<Option<ObjectRef>, Step>) {
    (
        action,
        run(swarm, namespace, action, options, deadline).await,
    )
}

/// Which actions may run at once: the plan's order holds between phases, and runs of
/// consecutive actions of one phase are independent of each other.
fn phase(action: &Action) -> u8 {
    match action {
        // Only while the stack has no services, before the network is created again.
        Action::RemoveNetwork { .. } => 0,
        // What services refer to.
        Action::CreateNetwork(_)
        | Action::CreateSecret(_)
        | Action::UpdateSecret { .. }
        | Action::CreateConfig(_)
        | Action::UpdateConfig { .. } => 1,
        Action::CreateService(_) | Action::UpdateService { .. } | Action::RemoveService { .. } => 2,
        // Superseded secrets and configs, once no service refers to them.
        Action::RemoveSecret { .. } | Action::RemoveConfig { .. } => 3,
    }
}

/// Splits the plan into runs of consecutive actions of the same [`phase`] (pure).
fn groups(actions: &[Action]) -> Vec<&[Action]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=actions.len() {
        if i == actions.len() || phase(&actions[i]) != phase(&actions[start]) {
            if start < i {
                out.push(&actions[start..i]);
            }
            start = i;
        }
    }
    out
}

/// An action's failure: a swarm call, or a stack-level condition.
enum Step {
    Swarm(swarm::Error),
    Stack(Error),
}

impl From<swarm::Error> for Step {
    fn from(e: swarm::Error) -> Self {
        Step::Swarm(e)
    }
}

/// Runs a create; "already exists" after a failed earlier attempt means that attempt worked.
/// Returns the new object's ID (`None` when an earlier attempt created it).
async fn create<F, Fut>(
    deadline: Instant,
    op: F,
) -> std::result::Result<Option<String>, swarm::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = swarm::Result<String>>,
{
    let retried = AtomicBool::new(false);
    match until(deadline, swarm::Error::is_retryable, &retried, op).await {
        Ok(id) => Ok(Some(id)),
        Err(swarm::Error::AlreadyExists { .. }) if retried.load(Ordering::Relaxed) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The object a create made, by ID (by name if an earlier attempt made it: Docker takes
/// either).
fn made(kind: ObjectKind, name: &str, id: Option<String>) -> Option<ObjectRef> {
    let id = id.unwrap_or_else(|| name.to_string());
    Some(ObjectRef::new(kind, name, id))
}

/// Runs a removal; "not found" means done.
async fn remove<F, Fut>(deadline: Instant, op: F) -> std::result::Result<(), swarm::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = swarm::Result<()>>,
{
    match swarm_until(deadline, op).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

async fn run(
    swarm: &dyn Swarm,
    namespace: &str,
    action: &Action,
    options: &ApplyOptions,
    deadline: Instant,
) -> std::result::Result<Option<ObjectRef>, Step> {
    match action {
        Action::CreateNetwork(spec) => {
            let id = create(deadline, || swarm.create_network(spec)).await?;
            return Ok(made(ObjectKind::Network, &spec.name, id));
        }
        Action::RemoveNetwork { id, .. } => remove(deadline, || swarm.remove_network(id)).await?,
        Action::CreateSecret(spec) => {
            if let Some(length) = generated_length(spec) {
                // The value exists only here and in Docker: never in a plan, a spec, a log.
                let filled = swarm::spec::SecretSpec {
                    data: Some(random_secret(length)),
                    ..spec.clone()
                };
                let id = match create(deadline, || swarm.create_secret(&filled)).await {
                    // Made meanwhile (an operator's, or a run of the same stack): it is used
                    // as it is, as the recipe ecosystem does.
                    Err(swarm::Error::AlreadyExists { .. }) => None,
                    other => other?,
                };
                return Ok(made(ObjectKind::Secret, &spec.name, id));
            }
            let id = create(deadline, || swarm.create_secret(spec)).await?;
            return Ok(made(ObjectKind::Secret, &spec.name, id));
        }
        Action::UpdateSecret { id, version, spec } => {
            swarm_until(deadline, || swarm.update_secret(id, *version, spec)).await?
        }
        Action::CreateConfig(spec) => {
            let id = create(deadline, || swarm.create_config(spec)).await?;
            return Ok(made(ObjectKind::Config, &spec.name, id));
        }
        Action::UpdateConfig { id, version, spec } => {
            swarm_until(deadline, || swarm.update_config(id, *version, spec)).await?
        }
        Action::CreateService(spec) => {
            let id = create(deadline, || swarm.create_service(spec)).await?;
            let name = spec.name.clone().unwrap_or_default();
            return Ok(made(ObjectKind::Service, &name, id));
        }
        Action::UpdateService { id, version, spec } => {
            update_service(swarm, namespace, id, *version, spec, options, deadline).await?
        }
        Action::RemoveService { id, .. } => remove(deadline, || swarm.remove_service(id)).await?,
        Action::RemoveSecret { id, .. } => remove(deadline, || swarm.remove_secret(id)).await?,
        Action::RemoveConfig { id, .. } => remove(deadline, || swarm.remove_config(id)).await?,
    }
    Ok(None)
}

async fn update_service(
    swarm: &dyn Swarm,
    namespace: &str,
    id: &str,
    observed_version: u64,
    spec: &swarm::spec::ServiceSpec,
    options: &ApplyOptions,
    deadline: Instant,
) -> std::result::Result<(), Step> {
    let want_hash = spec.labels.as_ref().and_then(|l| l.get(keys::SPEC_HASH));
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    let mut version = observed_version;
    let mut conflicts = 0;
    loop {
        match swarm_until(deadline, || swarm.update_service(id, version, spec)).await {
            Ok(()) => return Ok(()),
            Err(swarm::Error::OutOfSequence { .. }) if conflicts < options.conflict_retries => {
                conflicts += 1;
                let services = swarm_until(deadline, || swarm.list_services(&filter)).await?;
                let Some(current) = services.iter().find(|s| s.meta.id == id) else {
                    return Err(Step::Swarm(swarm::Error::NotFound {
                        call: swarm::Call::new(swarm::Verb::Update, swarm::ObjectKind::Service),
                        id: id.to_string(),
                    }));
                };
                let labels_match = spec.labels.as_ref().is_some_and(|want| {
                    want.iter()
                        .all(|(k, v)| current.meta.labels.get(k) == Some(v))
                });
                if labels_match && current.meta.labels.get(keys::SPEC_HASH) == want_hash {
                    debug!(service = id, "already updated by an earlier attempt");
                    return Ok(());
                }
                debug!(
                    service = id,
                    stale = version,
                    current = current.meta.version,
                    "update out of sequence; retrying at the current version"
                );
                version = current.meta.version;
            }
            Err(swarm::Error::OutOfSequence { .. }) => {
                return Err(Step::Stack(Error::ConflictPersisted {
                    namespace: namespace.to_string(),
                    service: spec.name.clone().unwrap_or_else(|| id.to_string()),
                    attempts: conflicts + 1,
                    rollback: Box::default(),
                }))
            }
            Err(e) => return Err(Step::Swarm(e)),
        }
    }
}

/// The length of a secret hearth is to generate (no data, [`keys::GENERATED`] label).
fn generated_length(spec: &swarm::spec::SecretSpec) -> Option<usize> {
    if spec.data.is_some() {
        return None;
    }
    spec.labels.as_ref()?.get(keys::GENERATED)?.parse().ok()
}

/// `length` random letters and digits (the thread's CSPRNG, seeded by the OS), base64-encoded
/// for the API.
fn random_secret(length: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let value = Alphanumeric.sample_string(&mut rand::rng(), length);
    swarm::spec::base64_encode(value.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stack::plan::tests::sample_stack;
    use crate::stack::Owner;
    use crate::swarm::sim::{Fault, SimConfig, SimSwarm};
    use crate::swarm::spec::StackSpec;
    use crate::swarm::{Call, ObjectKind, Verb};

    fn owner() -> Owner {
        Owner::new("WarmApp", "shop").with_label("hearth.test", "1")
    }

    fn sim() -> SimSwarm {
        SimSwarm::new(SimConfig::default())
    }

    /// Every object of namespace `ns`, as `kind name`.
    async fn objects_of(swarm: &SimSwarm, ns: &str) -> BTreeSet<String> {
        let f = LabelFilter::eq(NAMESPACE_LABEL, ns);
        let mut out = BTreeSet::new();
        for s in swarm.list_services(&f).await.unwrap() {
            out.insert(format!("service {}", s.meta.name));
        }
        for n in swarm.list_networks(&f).await.unwrap() {
            out.insert(format!("network {}", n.name));
        }
        for v in swarm.list_volumes(&f).await.unwrap() {
            out.insert(format!("volume {}", v.name));
        }
        for s in swarm.list_secrets(&f).await.unwrap() {
            out.insert(format!("secret {}", s.meta.name));
        }
        for c in swarm.list_configs(&f).await.unwrap() {
            out.insert(format!("config {}", c.meta.name));
        }
        out
    }

    /// Applies `stack` on a fresh sim where `before` was applied first, with the k-th write of
    /// the second apply failing for good; returns (error, objects before, objects after).
    async fn fail_at(
        k: usize,
        before: Option<&StackSpec>,
        stack: &StackSpec,
    ) -> (Option<Error>, BTreeSet<String>, BTreeSet<String>) {
        let swarm = sim();
        if let Some(b) = before {
            apply(&swarm, b, &owner(), &ApplyOptions::default())
                .await
                .unwrap();
            // the tasks start and create their volumes
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let ns = &stack.namespace;
        let had = objects_of(&swarm, ns).await;
        swarm.fail_write(k, Fault::ServerError);
        let result = apply(&swarm, stack, &owner(), &ApplyOptions::default()).await;
        // let any task the apply started create its volume, had it not been rolled back
        tokio::time::sleep(Duration::from_secs(10)).await;
        (result.err(), had, objects_of(&swarm, ns).await)
    }

    #[tokio::test(start_paused = true)]
    async fn an_apply_failing_at_any_write_leaves_nothing_it_created() {
        // A fresh stack, and a rotation of an existing one (new secret and config, services
        // updated, old secret and config removed).
        let fresh = sample_stack("s", "img:1", "pw");
        let mut rotated = sample_stack("s", "img:2", "pw2");
        rotated.configs[0].set_data(b"listen 9090\n");
        for (before, stack) in [(None, &fresh), (Some(&fresh), &rotated)] {
            // How many writes a clean apply makes: every k below it is a step that can fail.
            let clean = sim();
            if let Some(b) = before {
                apply(&clean, b, &owner(), &ApplyOptions::default())
                    .await
                    .unwrap();
            }
            let from = clean.writes_seen();
            apply(&clean, stack, &owner(), &ApplyOptions::default())
                .await
                .unwrap();
            let steps = clean.writes_seen() - from;
            assert!(steps >= 4, "{steps}");
            for k in 0..steps {
                let (err, had, after) = fail_at(k, before, stack).await;
                let err = err.unwrap_or_else(|| panic!("step {k} of {steps}: no error"));
                let rollback = match &err {
                    Error::ActionFailed { rollback, .. } => rollback,
                    other => panic!("step {k}: unexpected error {other}"),
                };
                // Kept only: what a service this apply had already updated uses.
                let kept: BTreeSet<String> = rollback
                    .kept
                    .iter()
                    .map(|o| format!("{} {}", o.kind, o.name))
                    .collect();
                let created: Vec<&String> = after
                    .difference(&had)
                    .filter(|o| !kept.contains(*o))
                    .collect();
                assert!(
                    created.is_empty(),
                    "step {k} of {steps} failed ({err}); left behind: {created:?}"
                );
                assert!(rollback.left.is_empty(), "step {k}: {rollback:?}");
                if before.is_none() {
                    // nothing existed: everything the apply made was removed again
                    assert!(after.is_empty(), "step {k}: {after:?}");
                    assert!(rollback.kept.is_empty(), "step {k}: {rollback:?}");
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_stack_s_volumes_are_left_to_the_tasks_that_mount_them() {
        let swarm = sim();
        let mut desired = sample_stack("st", "img:1", "s3cret");
        // a driver the manager does not have: docker deploys such a stack, so does hearth
        swarm.remove_volume_driver("hearth-test-nosuchdriver");
        desired.volumes[0].driver = Some("hearth-test-nosuchdriver".into());
        desired.volumes[0].driver_opts = Some([("size".to_string(), "1".to_string())].into());
        let report = apply(&swarm, &desired, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        assert!(!swarm
            .calls()
            .iter()
            .any(|c| c.call == Call::new(Verb::Create, ObjectKind::Volume)));
        assert_eq!(report.done.len(), 5, "{:?}", report.done);
        let services = observe(&swarm, "st", Depth::Objects)
            .await
            .unwrap()
            .services;
        assert_eq!(services.len(), 2);
        // the mount carries what the task's daemon needs to create the volume, as docker's
        // CLI sends it: the volume's labels (namespace included, hearth's not) and its driver
        let rendered = crate::stack::plan::render(&desired, &owner()).unwrap();
        let mount = rendered.services[0]
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.mounts.as_ref())
            .map(|m| m[0].clone())
            .unwrap();
        let options = mount.volume_options.unwrap();
        let labels = options.labels.unwrap();
        assert_eq!(labels.get(NAMESPACE_LABEL).map(String::as_str), Some("st"));
        assert!(
            labels.keys().all(|k| !k.starts_with("hearth.")),
            "{labels:?}"
        );
        let driver = options.driver_config.unwrap();
        assert_eq!(driver.name, "hearth-test-nosuchdriver");
        assert_eq!(
            driver.options.unwrap().get("size").map(String::as_str),
            Some("1")
        );
        // no node has the plugin: the tasks stay pending, as on the real swarm, and nothing
        // creates the volume
        tokio::time::sleep(Duration::from_secs(10)).await;
        let tasks = swarm.list_tasks(&LabelFilter::all()).await.unwrap();
        assert_eq!(tasks.len(), 2, "{tasks:?}");
        assert!(
            tasks
                .iter()
                .all(|t| t.state == crate::swarm::TaskState::Pending
                    && t.error
                        .as_deref()
                        .is_some_and(|e| e.contains("missing plugin"))),
            "{tasks:?}"
        );
        assert!(swarm
            .list_volumes(&LabelFilter::all())
            .await
            .unwrap()
            .is_empty());
        // with a driver the node has, the tasks create it, with the mount's driver and labels
        let mut plain = sample_stack("pl", "img:1", "s3cret");
        plain.volumes[0].labels = Some([("l".to_string(), "2".to_string())].into());
        apply(&swarm, &plain, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let volumes = swarm
            .list_volumes(&LabelFilter::eq(NAMESPACE_LABEL, "pl"))
            .await
            .unwrap();
        assert_eq!(volumes.len(), 1, "{volumes:?}");
        assert_eq!(volumes[0].name, "pl_data");
        assert_eq!(volumes[0].labels.get("l").map(String::as_str), Some("2"));
        assert!(volumes[0].labels.keys().all(|k| !k.starts_with("hearth.")));
    }

    #[tokio::test(start_paused = true)]
    async fn reapplying_an_unchanged_stack_makes_zero_writes() {
        let swarm = sim();
        let stack = sample_stack("s", "img:1", "pw");
        let first = apply(&swarm, &stack, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        assert_eq!(first.done.len(), 5);
        tokio::time::sleep(Duration::from_secs(5)).await;
        swarm.clear_calls();
        let again = apply(&swarm, &stack, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        assert!(again.is_noop(), "{:?}", again.done);
        assert_eq!(swarm.write_count(), 0);
        assert_eq!(swarm.call_count(), 5, "one list per kind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_secret_and_config_replace_the_old_ones_which_are_removed() {
        let swarm = sim();
        apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &owner(),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        let before = swarm.list_secrets(&LabelFilter::all()).await.unwrap();
        let mut changed = sample_stack("s", "img:1", "pw2");
        changed.configs[0].set_data(b"listen 9090\n");
        let report = apply(&swarm, &changed, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        let verbs: Vec<String> = report.done.iter().map(ToString::to_string).collect();
        assert_eq!(verbs.len(), 6, "{verbs:?}");
        let secrets = swarm.list_secrets(&LabelFilter::all()).await.unwrap();
        let configs = swarm.list_configs(&LabelFilter::all()).await.unwrap();
        assert_eq!((secrets.len(), configs.len()), (1, 1));
        assert_ne!(secrets[0].meta.name, before[0].meta.name);
        assert!(secrets[0].meta.name.starts_with("s_token-"));
        // Converged: a third apply writes nothing.
        swarm.clear_calls();
        apply(&swarm, &changed, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        assert_eq!(swarm.write_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_out_of_sequence_update_rereads_the_service_and_retries() {
        let swarm = sim();
        let stack = sample_stack("s", "img:1", "pw");
        apply(&swarm, &stack, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        let observed = observe(&swarm, "s", Depth::Objects).await.unwrap();
        // Someone else updates the service after we observed it: our version is stale.
        let api = observed
            .services
            .iter()
            .find(|s| s.meta.name == "s_api")
            .unwrap();
        let mut theirs = crate::stack::plan::render(&stack, &owner())
            .unwrap()
            .services[0]
            .clone();
        theirs
            .labels
            .as_mut()
            .unwrap()
            .insert("someone".into(), "else".into());
        swarm
            .update_service(&api.meta.id, api.meta.version, &theirs)
            .await
            .unwrap();
        let plan = plan(&sample_stack("s", "img:2", "pw"), &owner(), &observed).unwrap();
        swarm.clear_calls();
        execute(&swarm, &plan, &ApplyOptions::default())
            .await
            .unwrap();
        let calls: Vec<Call> = swarm.calls().iter().map(|c| c.call).collect();
        let update = Call::new(Verb::Update, ObjectKind::Service);
        let list = Call::new(Verb::List, ObjectKind::Service);
        assert_eq!(calls, vec![update, list, update, update], "{calls:?}");
        let services = swarm.list_services(&LabelFilter::all()).await.unwrap();
        assert!(services.iter().all(|s| s.image.as_deref() == Some("img:2")));
    }

    #[tokio::test(start_paused = true)]
    async fn independent_objects_then_the_services_are_created_concurrently() {
        let swarm = sim();
        swarm.set_latency(Duration::from_millis(100));
        let before = swarm.elapsed();
        let report = apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &owner(),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
        let took = swarm.elapsed() - before;
        // One round trip to observe, one for network, secret and config, one for both
        // services (one after another: 6).
        assert!(took < Duration::from_millis(350), "{took:?}");
        // Reported in plan order (content-hash suffixes cut).
        let done: Vec<String> = report
            .done
            .iter()
            .map(|a| a.to_string().split('-').next().unwrap().to_string())
            .collect();
        assert_eq!(
            done,
            [
                "create network s_default",
                "create secret s_token",
                "create config s_conf",
                "create service s_api",
                "create service s_web"
            ]
        );
    }

    #[test]
    fn groups_run_consecutive_actions_of_one_phase_together_and_keep_the_plan_order() {
        let net = |n: &str| {
            Action::CreateNetwork(crate::swarm::spec::NetworkSpec {
                name: n.into(),
                ..Default::default()
            })
        };
        let actions = vec![
            net("a"),
            Action::RemoveNetwork {
                id: "b1".into(),
                name: "b".into(),
            },
            net("b"),
            Action::CreateConfig(crate::swarm::spec::ConfigSpec {
                name: "c".into(),
                ..Default::default()
            }),
            Action::CreateService(Box::default()),
            Action::CreateService(Box::default()),
            Action::RemoveSecret {
                id: "s".into(),
                name: "s".into(),
            },
        ];
        let sizes: Vec<usize> = groups(&actions).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1, 1, 2, 2, 1]);
        assert!(groups(&[]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_a_rejection_is_reported() {
        let swarm = sim();
        swarm.fail_next(3, Fault::Transport);
        let stack = sample_stack("s", "img:1", "pw");
        let report = apply(&swarm, &stack, &owner(), &ApplyOptions::default())
            .await
            .unwrap();
        assert_eq!(report.done.len(), 5);

        let mut bad = sample_stack("t", "img:1", "pw");
        bad.services[1]
            .task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .image = None;
        let err = apply(&swarm, &bad, &owner(), &ApplyOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ActionFailed { action, done: 4, .. } if action == "create service t_web"),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_taken_outside_the_stack_is_an_error_not_an_adoption() {
        let swarm = sim();
        swarm
            .create_network(&crate::swarm::spec::NetworkSpec {
                name: "s_default".into(),
                driver: Some("overlay".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let err = apply(
            &swarm,
            &sample_stack("s", "img:1", "pw"),
            &owner(),
            &ApplyOptions::default(),
        )
        .await
        .unwrap_err();
        // Secret and config were created alongside (and removed again); no service was.
        assert!(
            matches!(&err, Error::ActionFailed { action, done: 2, source: swarm::Error::AlreadyExists { .. }, .. } if action == "create network s_default"),
            "{err}"
        );
    }
}
