//! Pure helpers of the WarmApp reconciler: whose a stack is, how a render is made fit for health-gated upgrades, and how readiness and the probe target are read from an observation.

use crd::{Kind, WarmApp};

use super::decide::Readiness;
use super::probe::{probe_spec, ProbeTarget};
use super::VERSION_LABEL;
use crate::stack::{self, Observed, Owner, StackSpec};
use crate::swarm::labels::SERVICE_NAME as SERVICE_NAME_LABEL;
use crate::swarm::spec::{PublishMode, UpdateConfig, UpdateOrder};
use crate::swarm::{Labels, TaskState};

use crd::names::StackName;

/// The owner labels of app `name`'s stack.
pub fn owner(name: &str, stack: &StackName, extra: &Labels) -> Owner {
    Owner {
        kind: Kind::WarmApp.as_str().to_string(),
        name: name.to_string(),
        role: Some(stack.role()),
        run: None,
        extra: extra.clone(),
    }
}

/// Makes a rendered stack fit for health-gated in-place upgrades.
///
/// # Guarantees
/// Pure. Every service's containers carry [`VERSION_LABEL`]`=<version>`; every service
/// without host-mode published ports updates (and rolls back) start-first unless the recipe
/// chose an order itself; nothing else of the update and rollback configs changes (one task at a
/// time, Docker's default, where the recipe gives none). `tests/recipe_differential.rs` checks
/// this is the whole difference from `docker stack deploy` on the real recipes.
pub fn prepare(mut stack: StackSpec, version: &str) -> StackSpec {
    for s in &mut stack.services {
        let host_ports = s
            .endpoint_spec
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .is_some_and(|ports| {
                ports
                    .iter()
                    .any(|p| p.publish_mode == Some(PublishMode::Host))
            });
        if !host_ports {
            for config in [&mut s.update_config, &mut s.rollback_config] {
                // A config the recipe does not give is Docker's default but for the order:
                // one task at a time (an empty config would store parallelism 0, all at once,
                // where `docker stack deploy` gets the daemon's default of 1).
                let c = config.get_or_insert_with(|| UpdateConfig {
                    parallelism: Some(1),
                    ..UpdateConfig::default()
                });
                if c.order.is_none() {
                    c.order = Some(UpdateOrder::StartFirst);
                }
            }
        }
        if let Some(cs) = s
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            cs.labels
                .get_or_insert_with(Default::default)
                .insert(VERSION_LABEL.into(), version.into());
        }
    }
    stack
}

/// Judges readiness at `version` from an observation with tasks (probe not included): every
/// service ready (tasks running, healthchecks healthy, replicas met) and every task that
/// should run belongs to `version`.
pub fn readiness(observed: &Observed, version: &str) -> Readiness {
    let st = stack::status(observed);
    if !st.ready {
        let why = st
            .services
            .iter()
            .find(|s| !s.ready)
            .map(|s| {
                let problem = s
                    .problems
                    .first()
                    .map(|p| p.message.clone())
                    .unwrap_or_else(|| "tasks not started yet".into());
                format!(
                    "service {}: {}/{} ready: {problem}",
                    s.name, s.ready_tasks, s.desired
                )
            })
            .unwrap_or_else(|| "no services".into());
        return Readiness::NotReady(why);
    }
    for t in observed
        .tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
    {
        let container = t
            .container_id
            .as_deref()
            .and_then(|id| observed.containers.iter().find(|c| c.id == id));
        // A task on another node: its container is listed by that node only; the task's own
        // container spec carries the same label (docs/RELIABILITY.md, multi-node).
        let runs = match container {
            Some(c) => c.labels.get(VERSION_LABEL),
            None => t.container_labels.get(VERSION_LABEL),
        };
        if runs.map(String::as_str) != Some(version) {
            let service = container
                .and_then(|c| c.labels.get(SERVICE_NAME_LABEL))
                .cloned()
                .unwrap_or_else(|| t.service_id.clone());
            return Readiness::NotReady(format!(
                "service {service} still runs a task of version {}",
                runs.map(String::as_str).unwrap_or("unknown")
            ));
        }
    }
    Readiness::Ready
}

/// The probe of `app` against the observed stack, if it has one.
pub fn probe_target(
    app: &WarmApp,
    desired: &StackSpec,
    observed: &Observed,
) -> Option<Result<ProbeTarget, String>> {
    let (service, port, kind) = probe_spec(&app.spec.health)?;
    let short = match service.or_else(|| {
        desired.services.first().and_then(|s| {
            s.name
                .as_deref()
                .and_then(|n| n.strip_prefix(&format!("{}_", desired.namespace)))
                .map(str::to_string)
        })
    }) {
        Some(s) => s,
        None => {
            return Some(Err(
                "the probe names no service and the stack has none".into()
            ))
        }
    };
    let full = format!("{}_{short}", desired.namespace);
    let Some(svc) = observed.services.iter().find(|s| s.meta.name == full) else {
        return Some(Err(format!("probed service {short} is not in the stack")));
    };
    let containers = observed
        .tasks
        .iter()
        .filter(|t| {
            t.service_id == svc.meta.id
                && t.desired_state == TaskState::Running
                && t.state == TaskState::Running
        })
        .filter_map(|t| t.container_id.clone())
        .collect();
    Some(Ok(ProbeTarget {
        kind,
        port,
        containers,
    }))
}
