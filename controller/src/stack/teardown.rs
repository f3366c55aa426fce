//! Teardown: remove a whole stack in dependency order, wait for its containers, verify nothing is left.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::{info, warn};

use super::observe::SERVICE_ID_LABEL;
use super::plan::NAMESPACE_LABEL;
use super::retry::{poll_delays, swarm_until};
use super::{Error, ObjectRef, Result};
use crate::swarm::{self, Container, LabelFilter, ObjectKind, Swarm};

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
    /// Longest pause between two polls of the containers (polls start at 50 ms and grow).
    pub max_poll: Duration,
}

impl TeardownOptions {
    /// Graceful, within 3 minutes (enough for several 10 s grace periods and slow daemons).
    pub fn graceful() -> Self {
        Self {
            mode: Mode::Graceful,
            deadline: Duration::from_secs(180),
            // One list call per poll; 250 ms keeps hearth within a poll of docker's own timing.
            max_poll: Duration::from_millis(250),
        }
    }

    /// Forced, within 1 minute.
    pub fn forced() -> Self {
        Self {
            mode: Mode::Forced,
            deadline: Duration::from_secs(60),
            max_poll: Duration::from_millis(250),
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
    /// Objects removed, in the order removal succeeded (services, networks, secrets, configs,
    /// volumes).
    pub removed: Vec<ObjectRef>,
    /// Objects that were listed but gone by the time hearth removed them (counted as done).
    pub already_gone: Vec<ObjectRef>,
    /// Containers killed and removed (forced mode).
    pub containers_removed: Vec<ObjectRef>,
    /// Time spent waiting for the services' containers to go.
    pub containers_wait: Duration,
    /// Time of the whole teardown.
    pub elapsed: Duration,
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
    match result {
        Ok(()) => report.removed.push(object),
        Err(e) if e.is_not_found() => report.already_gone.push(object),
        Err(e) => failures.push(format!("{object}: {e}")),
    }
}

/// Removes everything carrying `com.docker.stack.namespace=<namespace>`.
///
/// Order: services; then wait (polling containers with growing pauses, no fixed sleeps) until
/// their containers are gone — in [`Mode::Forced`] killing and removing them at once; then
/// networks, secrets and configs; then volumes. Finally every kind is listed again by the
/// namespace label.
///
/// # Guarantees
/// - "Not found" counts as done; retryable failures ("in use", timeouts, transport) are retried
///   with backoff until the deadline; a removal that fails for good does not stop the others.
/// - Success means the final listing found nothing of the stack. No failure is swallowed:
///   failures whose object is gone anyway are logged; otherwise they are in the error.
///
/// # Errors
/// [`Error::Residuals`] naming each leftover object (kind, name, ID) with the failures met;
/// [`Error::ObserveFailed`] if a listing fails for good.
///
/// # Caveats
/// Containers and volumes are those of the node hearth talks to: on a multi-node swarm the
/// volumes that tasks created on other nodes are not removed (the [`Swarm`] trait reaches one
/// daemon).
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

    // 1. Services.
    let services = swarm_until(deadline, || swarm.list_services(&filter))
        .await
        .map_err(|e| observe_failed(namespace, e))?;
    let service_ids: BTreeSet<String> = services.iter().map(|s| s.meta.id.clone()).collect();
    let removals = join_all(services.iter().map(|s| async move {
        let result = swarm_until(deadline, || swarm.remove_service(&s.meta.id)).await;
        (
            ObjectRef::new(ObjectKind::Service, &s.meta.name, &s.meta.id),
            result,
        )
    }))
    .await;
    for (object, result) in removals {
        record(&mut report, &mut failures, object, result);
    }

    // 2. Their containers.
    let waiting = Instant::now();
    wait_for_containers(
        swarm,
        namespace,
        &service_ids,
        options,
        deadline,
        &mut report,
        &mut failures,
    )
    .await?;
    report.containers_wait = waiting.elapsed();

    // 3. Networks, secrets, configs.
    let (networks, secrets, configs) = futures::try_join!(
        swarm_until(deadline, || swarm.list_networks(&filter)),
        swarm_until(deadline, || swarm.list_secrets(&filter)),
        swarm_until(deadline, || swarm.list_configs(&filter)),
    )
    .map_err(|e| observe_failed(namespace, e))?;
    let networks = networks.iter().map(|n| async move {
        let result = swarm_until(deadline, || swarm.remove_network(&n.id)).await;
        (ObjectRef::new(ObjectKind::Network, &n.name, &n.id), result)
    });
    let secrets = secrets.iter().map(|s| async move {
        let result = swarm_until(deadline, || swarm.remove_secret(&s.meta.id)).await;
        (
            ObjectRef::new(ObjectKind::Secret, &s.meta.name, &s.meta.id),
            result,
        )
    });
    let configs = configs.iter().map(|c| async move {
        let result = swarm_until(deadline, || swarm.remove_config(&c.meta.id)).await;
        (
            ObjectRef::new(ObjectKind::Config, &c.meta.name, &c.meta.id),
            result,
        )
    });
    let (n, s, c) = futures::join!(join_all(networks), join_all(secrets), join_all(configs));
    for (object, result) in n.into_iter().chain(s).chain(c) {
        record(&mut report, &mut failures, object, result);
    }

    // 4. Volumes (this node).
    let volumes = swarm_until(deadline, || swarm.list_volumes(&filter))
        .await
        .map_err(|e| observe_failed(namespace, e))?;
    let removals = join_all(volumes.iter().map(|v| async move {
        let result = swarm_until(deadline, || swarm.remove_volume(&v.name)).await;
        (ObjectRef::new(ObjectKind::Volume, &v.name, &v.name), result)
    }))
    .await;
    for (object, result) in removals {
        record(&mut report, &mut failures, object, result);
    }

    // 5. Verify: list again until nothing is left. Swarm finishes some removals after
    // answering (an overlay network's node-local copy lingers for a moment after a forced
    // teardown), and a task that was starting during teardown may have created a volume late:
    // leftovers hearth did not remove yet are removed again.
    let residuals = verify(
        swarm,
        namespace,
        &service_ids,
        options,
        deadline,
        &mut report,
        &mut failures,
    )
    .await?;
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
fn stack_containers(
    containers: Vec<Container>,
    namespace: &str,
    service_ids: &BTreeSet<String>,
) -> Vec<Container> {
    containers
        .into_iter()
        .filter(|c| {
            c.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(namespace)
                || c.labels
                    .get(SERVICE_ID_LABEL)
                    .is_some_and(|id| service_ids.contains(id))
        })
        .collect()
}

fn swarm_containers() -> LabelFilter {
    LabelFilter::all().and_has(SERVICE_ID_LABEL)
}

/// Polls (50 ms, growing to `options.max_poll`) until the stack's containers are gone; in
/// forced mode removes each one it sees.
async fn wait_for_containers(
    swarm: &dyn Swarm,
    namespace: &str,
    service_ids: &BTreeSet<String>,
    options: &TeardownOptions,
    deadline: Instant,
    report: &mut TeardownReport,
    failures: &mut Vec<String>,
) -> Result<()> {
    let filter = swarm_containers();
    let mut pauses = poll_delays(options.max_poll);
    let mut removed = BTreeSet::new();
    loop {
        let listed = swarm_until(deadline, || swarm.list_containers(&filter))
            .await
            .map_err(|e| observe_failed(namespace, e))?;
        let ours = stack_containers(listed, namespace, service_ids);
        if ours.is_empty() {
            return Ok(());
        }
        let mut last_errors = Vec::new();
        if options.mode == Mode::Forced {
            let results = join_all(
                ours.iter()
                    .map(|c| async move { (c, swarm.remove_container(&c.id).await) }),
            )
            .await;
            for (c, result) in results {
                match result {
                    Ok(()) => {
                        if removed.insert(c.id.clone()) {
                            report.containers_removed.push(ObjectRef::new(
                                ObjectKind::Container,
                                &c.name,
                                &c.id,
                            ));
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => last_errors.push(format!("container {}: {e}", c.name)),
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let names: Vec<&str> = ours.iter().map(|c| c.name.as_str()).collect();
            failures.push(format!(
                "{} container(s) still present at the deadline: {}",
                ours.len(),
                names.join(", ")
            ));
            failures.extend(last_errors);
            return Ok(());
        }
        let pause = pauses.next().unwrap_or(options.max_poll);
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

/// How long verification keeps listing after the deadline, so a teardown that used its whole
/// deadline still gets its removals confirmed.
const SETTLE: Duration = Duration::from_secs(10);

/// Lists the stack until nothing is left or the deadline (at least [`SETTLE`] from now) passes,
/// removing again what is left and was not removed yet. Returns what is still there.
async fn verify(
    swarm: &dyn Swarm,
    namespace: &str,
    service_ids: &BTreeSet<String>,
    options: &TeardownOptions,
    deadline: Instant,
    report: &mut TeardownReport,
    failures: &mut Vec<String>,
) -> Result<Vec<ObjectRef>> {
    let deadline = deadline.max(Instant::now() + SETTLE);
    let mut pauses = poll_delays(options.max_poll);
    loop {
        let left = residuals(swarm, namespace, service_ids, deadline).await?;
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            return Ok(left);
        }
        let removed: BTreeSet<&str> = report.removed.iter().map(|o| o.id.as_str()).collect();
        let again: Vec<ObjectRef> = left
            .into_iter()
            .filter(|o| !removed.contains(o.id.as_str()))
            .filter(|o| o.kind != ObjectKind::Container || options.mode == Mode::Forced)
            .collect();
        let results = join_all(again.into_iter().map(|o| async move {
            let result = match o.kind {
                ObjectKind::Service => swarm.remove_service(&o.id).await,
                ObjectKind::Container => swarm.remove_container(&o.id).await,
                ObjectKind::Network => swarm.remove_network(&o.id).await,
                ObjectKind::Secret => swarm.remove_secret(&o.id).await,
                ObjectKind::Config => swarm.remove_config(&o.id).await,
                ObjectKind::Volume => swarm.remove_volume(&o.id).await,
                ObjectKind::Task | ObjectKind::Node | ObjectKind::Daemon => Ok(()),
            };
            (o, result)
        }))
        .await;
        for (object, result) in results {
            match result {
                Ok(()) if object.kind == ObjectKind::Container => {
                    report.containers_removed.push(object)
                }
                Ok(()) => report.removed.push(object),
                Err(e) if e.is_not_found() => {}
                // Still in use, or still hanging: the next round tries again.
                Err(e) if e.is_retryable() => {}
                Err(e) => failures.push(format!("{object}: {e}")),
            }
        }
        let pause = pauses.next().unwrap_or(options.max_poll);
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

/// Everything of the stack that is still there.
async fn residuals(
    swarm: &dyn Swarm,
    namespace: &str,
    service_ids: &BTreeSet<String>,
    deadline: Instant,
) -> Result<Vec<ObjectRef>> {
    let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
    // The verification must run even when the deadline has passed.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(10));
    let containers_filter = swarm_containers();
    let (services, containers, networks, volumes, secrets, configs) = futures::try_join!(
        swarm_until(deadline, || swarm.list_services(&filter)),
        swarm_until(deadline, || swarm.list_containers(&containers_filter)),
        swarm_until(deadline, || swarm.list_networks(&filter)),
        swarm_until(deadline, || swarm.list_volumes(&filter)),
        swarm_until(deadline, || swarm.list_secrets(&filter)),
        swarm_until(deadline, || swarm.list_configs(&filter)),
    )
    .map_err(|e| observe_failed(namespace, e))?;
    let mut left = Vec::new();
    left.extend(
        services
            .iter()
            .map(|s| ObjectRef::new(ObjectKind::Service, &s.meta.name, &s.meta.id)),
    );
    left.extend(
        stack_containers(containers, namespace, service_ids)
            .iter()
            .map(|c| ObjectRef::new(ObjectKind::Container, &c.name, &c.id)),
    );
    left.extend(
        networks
            .iter()
            .map(|n| ObjectRef::new(ObjectKind::Network, &n.name, &n.id)),
    );
    left.extend(
        secrets
            .iter()
            .map(|s| ObjectRef::new(ObjectKind::Secret, &s.meta.name, &s.meta.id)),
    );
    left.extend(
        configs
            .iter()
            .map(|c| ObjectRef::new(ObjectKind::Config, &c.meta.name, &c.meta.id)),
    );
    left.extend(
        volumes
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
    use crate::swarm::{Call, Verb};

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
}
