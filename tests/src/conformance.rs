//! The swarm conformance suite: behaviours every [`Swarm`] must show, simulated or real.
//!
//! Each behaviour is one async function taking the swarm and a unique run name; it creates
//! only objects named after the run and labelled with it, removes them, and panics with a
//! message on the first deviation. `tests/sim_conformance.rs` runs them on a paused clock
//! against [`controller::swarm::sim::SimSwarm`]; `tests/real_swarm.rs` against Docker.

use std::time::Duration;

use controller::swarm::{spec, task_health, Error, Event, Health, ObjectKind, Swarm, TaskState};
use futures::StreamExt;

use crate::support::{eventually, fixtures, labels, run_filter};

/// How long a task may take to run and turn healthy (the real swarm needs a few seconds).
const CONVERGE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
const SECOND: i64 = 1_000_000_000;

/// A service of the healthy fixture web app, labelled with `run` on the service and its
/// containers, with a 1 s healthcheck and a 1 s stop grace period.
pub fn web_service(name: &str, run: &str) -> spec::ServiceSpec {
    spec::ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels(run)),
        task_template: Some(spec::TaskSpec {
            container_spec: Some(spec::ContainerSpec {
                image: Some(fixtures::WEBAPP_1_0_0.to_string()),
                labels: Some(labels(run)),
                args: Some(vec!["/bin/serve".to_string()]),
                health_check: Some(spec::HealthCheck {
                    test: Some(vec!["CMD".to_string(), "/bin/healthcheck".to_string()]),
                    interval: Some(SECOND),
                    timeout: Some(2 * SECOND),
                    retries: Some(3),
                    start_period: Some(SECOND),
                    ..Default::default()
                }),
                stop_grace_period: Some(SECOND),
                ..Default::default()
            }),
            restart_policy: Some(spec::RestartPolicy {
                condition: Some(spec::RestartCondition::Any),
                delay: Some(SECOND),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(spec::ServiceMode::replicated(Some(1))),
        ..Default::default()
    }
}

/// Waits until the one task of `service_id` (found by the run's label filter) runs healthy;
/// returns its container ID.
pub async fn wait_running_healthy(swarm: &dyn Swarm, run: &str, service_id: &str) -> String {
    let filter = run_filter(run);
    eventually("task running and healthy", CONVERGE, POLL, || async {
        let tasks = swarm.list_tasks(&filter).await.expect("list tasks");
        let containers = swarm
            .list_containers(&filter)
            .await
            .expect("list containers");
        tasks
            .iter()
            .filter(|t| t.service_id == service_id)
            .find(|t| {
                t.state == TaskState::Running
                    && task_health(t, &containers) == Some(Health::Healthy)
            })
            .and_then(|t| t.container_id.clone())
    })
    .await
}

/// Waits until no container of the run exists (tasks stopped and reaped).
pub async fn wait_containers_gone(swarm: &dyn Swarm, run: &str) {
    let filter = run_filter(run);
    eventually("containers gone", CONVERGE, POLL, || async {
        let left = swarm
            .list_containers(&filter)
            .await
            .expect("list containers");
        left.is_empty().then_some(())
    })
    .await;
}

/// Create a labelled service from a fixture image → its task runs and is healthy → a label
/// list finds it → an update with a stale version fails with OutOfSequence, one with the
/// current version succeeds → remove → it and its containers are gone → removing it again
/// is NotFound.
pub async fn service_lifecycle(swarm: &dyn Swarm, run: &str) {
    let filter = run_filter(run);
    let spec = web_service(run, run);
    let id = swarm.create_service(&spec).await.expect("create service");
    assert!(!id.is_empty());
    let dup = swarm
        .create_service(&spec)
        .await
        .expect_err("duplicate name");
    assert!(matches!(dup, Error::AlreadyExists { .. }), "{dup}");

    wait_running_healthy(swarm, run, &id).await;
    let services = swarm.list_services(&filter).await.expect("list services");
    assert_eq!(services.len(), 1, "{services:?}");
    let service = &services[0];
    assert_eq!(
        (service.meta.id.as_str(), service.meta.name.as_str()),
        (id.as_str(), run)
    );
    assert_eq!(
        service
            .meta
            .labels
            .get("hearth.test.run")
            .map(String::as_str),
        Some(run)
    );
    assert_eq!(service.image.as_deref(), Some(fixtures::WEBAPP_1_0_0));
    assert!(service.meta.version > 0);

    let mut updated = spec.clone();
    if let Some(l) = updated.labels.as_mut() {
        l.insert("hearth.test.step".into(), "updated".into());
    }
    let stale = swarm
        .update_service(&id, service.meta.version - 1, &updated)
        .await
        .expect_err("stale version must fail");
    assert!(
        matches!(stale, Error::OutOfSequence { .. }) && !stale.is_retryable(),
        "{stale}"
    );
    swarm
        .update_service(&id, service.meta.version, &updated)
        .await
        .expect("update at the current version");
    let after = swarm.list_services(&filter).await.expect("list services");
    assert_eq!(after.len(), 1);
    assert!(after[0].meta.version > service.meta.version);
    assert_eq!(
        after[0]
            .meta
            .labels
            .get("hearth.test.step")
            .map(String::as_str),
        Some("updated")
    );

    swarm.remove_service(&id).await.expect("remove service");
    assert!(swarm.list_services(&filter).await.expect("list").is_empty());
    wait_containers_gone(swarm, run).await;
    let again = swarm.remove_service(&id).await.expect_err("second removal");
    assert!(again.is_not_found(), "{again}");
}

/// Networks, volumes, secrets and configs: create → a label list finds each → duplicate
/// names are AlreadyExists (volumes: create is idempotent) → secret/config label updates need
/// the current version → remove → lists are empty → removing again is NotFound.
pub async fn objects_lifecycle(swarm: &dyn Swarm, run: &str) {
    let filter = run_filter(run);
    let net = spec::NetworkSpec {
        name: format!("{run}-net"),
        driver: Some("overlay".into()),
        attachable: Some(true),
        labels: Some(labels(run)),
        ..Default::default()
    };
    let vol = spec::VolumeSpec {
        name: format!("{run}-vol"),
        labels: Some(labels(run)),
        ..Default::default()
    };
    let mut secret = spec::SecretSpec {
        name: format!("{run}-secret"),
        labels: Some(labels(run)),
        ..Default::default()
    };
    secret.set_data(b"s3cret");
    let mut config = spec::ConfigSpec {
        name: format!("{run}-config"),
        labels: Some(labels(run)),
        ..Default::default()
    };
    config.set_data(b"listen 8080\n");

    let net_id = swarm.create_network(&net).await.expect("create network");
    let vol_name = swarm.create_volume(&vol).await.expect("create volume");
    assert_eq!(vol_name, vol.name);
    let secret_id = swarm.create_secret(&secret).await.expect("create secret");
    let config_id = swarm.create_config(&config).await.expect("create config");

    let nets = swarm.list_networks(&filter).await.expect("list networks");
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert_eq!(
        (nets[0].id.as_str(), nets[0].name.as_str()),
        (net_id.as_str(), net.name.as_str())
    );
    assert_eq!(
        (nets[0].driver.as_str(), nets[0].scope.as_str()),
        ("overlay", "swarm")
    );
    let vols = swarm.list_volumes(&filter).await.expect("list volumes");
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].name, vol.name);
    let secrets = swarm.list_secrets(&filter).await.expect("list secrets");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(
        (secrets[0].meta.id.as_str(), secrets[0].meta.name.as_str()),
        (secret_id.as_str(), secret.name.as_str())
    );
    let configs = swarm.list_configs(&filter).await.expect("list configs");
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert_eq!(
        (configs[0].meta.id.as_str(), configs[0].meta.name.as_str()),
        (config_id.as_str(), config.name.as_str())
    );

    for e in [
        swarm.create_network(&net).await.map(drop),
        swarm.create_secret(&secret).await.map(drop),
        swarm.create_config(&config).await.map(drop),
    ] {
        let e = e.expect_err("duplicate name");
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    }
    assert_eq!(
        swarm
            .create_volume(&vol)
            .await
            .expect("volume create is idempotent"),
        vol.name
    );

    // Labels of secrets and configs can change at the current version only.
    let mut relabelled = secret.clone();
    if let Some(l) = relabelled.labels.as_mut() {
        l.insert("hearth.test.step".into(), "relabelled".into());
    }
    let v = secrets[0].meta.version;
    let stale = swarm
        .update_secret(&secret_id, v - 1, &relabelled)
        .await
        .expect_err("stale secret version");
    assert!(matches!(stale, Error::OutOfSequence { .. }), "{stale}");
    swarm
        .update_secret(&secret_id, v, &relabelled)
        .await
        .expect("relabel secret");
    let mut relabelled = config.clone();
    if let Some(l) = relabelled.labels.as_mut() {
        l.insert("hearth.test.step".into(), "relabelled".into());
    }
    let v = configs[0].meta.version;
    let stale = swarm
        .update_config(&config_id, v - 1, &relabelled)
        .await
        .expect_err("stale config version");
    assert!(matches!(stale, Error::OutOfSequence { .. }), "{stale}");
    swarm
        .update_config(&config_id, v, &relabelled)
        .await
        .expect("relabel config");
    let configs = swarm.list_configs(&filter).await.expect("list configs");
    assert_eq!(
        configs[0]
            .meta
            .labels
            .get("hearth.test.step")
            .map(String::as_str),
        Some("relabelled")
    );

    swarm.remove_network(&net_id).await.expect("remove network");
    swarm.remove_volume(&vol.name).await.expect("remove volume");
    swarm
        .remove_secret(&secret_id)
        .await
        .expect("remove secret");
    swarm
        .remove_config(&config_id)
        .await
        .expect("remove config");
    assert!(swarm.list_networks(&filter).await.expect("list").is_empty());
    assert!(swarm.list_volumes(&filter).await.expect("list").is_empty());
    assert!(swarm.list_secrets(&filter).await.expect("list").is_empty());
    assert!(swarm.list_configs(&filter).await.expect("list").is_empty());

    for (kind, e) in [
        (ObjectKind::Network, swarm.remove_network(&net_id).await),
        (ObjectKind::Volume, swarm.remove_volume(&vol.name).await),
        (ObjectKind::Secret, swarm.remove_secret(&secret_id).await),
        (ObjectKind::Config, swarm.remove_config(&config_id).await),
    ] {
        let e = e.expect_err("second removal");
        assert!(e.is_not_found(), "{kind}: {e}");
    }
}

/// While a service's container uses a volume, network, secret and config, removing each is
/// InUse (retryable); once the service and its containers are gone, each removal succeeds.
/// A forced container removal takes the container away at once.
pub async fn in_use_until_users_are_gone(swarm: &dyn Swarm, run: &str) {
    let net = spec::NetworkSpec {
        name: format!("{run}-net"),
        driver: Some("overlay".into()),
        labels: Some(labels(run)),
        ..Default::default()
    };
    let mut secret = spec::SecretSpec {
        name: format!("{run}-secret"),
        labels: Some(labels(run)),
        ..Default::default()
    };
    secret.set_data(b"s3cret");
    let mut config = spec::ConfigSpec {
        name: format!("{run}-config"),
        labels: Some(labels(run)),
        ..Default::default()
    };
    config.set_data(b"listen 8080\n");
    let volume = format!("{run}-vol");
    let net_id = swarm.create_network(&net).await.expect("create network");
    let secret_id = swarm.create_secret(&secret).await.expect("create secret");
    let config_id = swarm.create_config(&config).await.expect("create config");

    let mut spec = web_service(run, run);
    let template = spec.task_template.as_mut().expect("template");
    template.networks = Some(vec![spec::NetworkAttachment {
        target: net.name.clone(),
        ..Default::default()
    }]);
    let container = template.container_spec.as_mut().expect("container spec");
    container.mounts = Some(vec![spec::Mount {
        r#type: Some(spec::MountType::Volume),
        source: Some(volume.clone()),
        target: Some("/data".into()),
        volume_options: Some(spec::VolumeOptions {
            labels: Some(labels(run)),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let file = |name: &str| spec::FileTarget {
        name: name.to_string(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
    };
    // By name only: the swarm resolves the IDs.
    container.secrets = Some(vec![spec::SecretReference {
        file: Some(file("secret")),
        secret_id: None,
        secret_name: secret.name.clone(),
    }]);
    container.configs = Some(vec![spec::ConfigReference {
        file: Some(file("config")),
        config_id: None,
        config_name: config.name.clone(),
    }]);
    let service_id = swarm.create_service(&spec).await.expect("create service");
    let container_id = wait_running_healthy(swarm, run, &service_id).await;

    let vols = swarm
        .list_volumes(&run_filter(run))
        .await
        .expect("list volumes");
    assert_eq!(
        vols.len(),
        1,
        "the task created the labelled volume: {vols:?}"
    );
    for (kind, e) in [
        (ObjectKind::Volume, swarm.remove_volume(&volume).await),
        (ObjectKind::Network, swarm.remove_network(&net_id).await),
        (ObjectKind::Secret, swarm.remove_secret(&secret_id).await),
        (ObjectKind::Config, swarm.remove_config(&config_id).await),
    ] {
        let e = e.expect_err("removing a used object must fail");
        assert!(
            matches!(e, Error::InUse { .. }) && e.is_retryable(),
            "{kind}: {e}"
        );
    }

    // Forced removal of the task's container: gone at once (the swarm then replaces the task).
    swarm
        .remove_container(&container_id)
        .await
        .expect("force-remove container");
    let left = swarm
        .list_containers(&run_filter(run))
        .await
        .expect("list containers");
    assert!(left.iter().all(|c| c.id != container_id), "{left:?}");
    let e = swarm
        .remove_container(&container_id)
        .await
        .expect_err("second container removal");
    assert!(e.is_not_found(), "{e}");

    swarm
        .remove_service(&service_id)
        .await
        .expect("remove service");
    wait_containers_gone(swarm, run).await;
    // The network may keep an endpoint for a moment after the last container: retry InUse.
    eventually("network removable", CONVERGE, POLL, || async {
        match swarm.remove_network(&net_id).await {
            Ok(()) => Some(()),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("remove network: {e}"),
        }
    })
    .await;
    eventually("volume removable", CONVERGE, POLL, || async {
        match swarm.remove_volume(&volume).await {
            Ok(()) => Some(()),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("remove volume: {e}"),
        }
    })
    .await;
    swarm
        .remove_secret(&secret_id)
        .await
        .expect("remove secret");
    swarm
        .remove_config(&config_id)
        .await
        .expect("remove config");
}

/// A running task's container is an endpoint, with an IPv4 address, of its overlay network
/// and of the node's gateway bridge (how the warm-app probe reaches it); after its service
/// goes it is neither; an unknown network is `NotFound`.
pub async fn network_endpoints_list_running_containers(swarm: &dyn Swarm, run: &str) {
    const GATEWAY: &str = controller::warmapp::probe::GATEWAY_BRIDGE;
    let net = spec::NetworkSpec {
        name: format!("{run}-net"),
        driver: Some("overlay".into()),
        labels: Some(labels(run)),
        ..Default::default()
    };
    let net_id = swarm.create_network(&net).await.expect("create network");
    let mut spec = web_service(run, run);
    spec.task_template.as_mut().expect("template").networks = Some(vec![spec::NetworkAttachment {
        target: net.name.clone(),
        ..Default::default()
    }]);
    let service_id = swarm.create_service(&spec).await.expect("create service");
    let container_id = wait_running_healthy(swarm, run, &service_id).await;

    for network in [net.name.as_str(), net_id.as_str(), GATEWAY] {
        let endpoints = swarm
            .network_endpoints(network)
            .await
            .unwrap_or_else(|e| panic!("endpoints of {network}: {e}"));
        let mine = endpoints
            .iter()
            .find(|e| e.container_id == container_id)
            .unwrap_or_else(|| panic!("{container_id} not on {network}: {endpoints:?}"));
        let ip = mine.ipv4.as_deref().expect("an IPv4 address");
        assert!(
            ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "{network}: {ip:?} is an address without a prefix length"
        );
    }
    let e = swarm
        .network_endpoints(&format!("{run}-no-such-net"))
        .await
        .expect_err("an unknown network");
    assert!(e.is_not_found(), "{e}");

    swarm
        .remove_service(&service_id)
        .await
        .expect("remove service");
    wait_containers_gone(swarm, run).await;
    let endpoints = swarm
        .network_endpoints(GATEWAY)
        .await
        .expect("endpoints of the gateway bridge");
    assert!(
        endpoints.iter().all(|e| e.container_id != container_id),
        "{endpoints:?}"
    );
    eventually("network removable", CONVERGE, POLL, || async {
        match swarm.remove_network(&net_id).await {
            Ok(()) => Some(()),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("remove network: {e}"),
        }
    })
    .await;
}

/// The events stream reports a service's create and remove by ID.
pub async fn events_report_service_changes(swarm: &dyn Swarm, run: &str) {
    let mut events = swarm.events();
    let mut spec = web_service(run, run);
    if let Some(c) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        c.health_check = None;
    }
    let id = swarm.create_service(&spec).await.expect("create service");
    let created = next_service_event(&mut events, "create", &id).await;
    // Remove before asserting, so a missing event does not leak the service.
    swarm.remove_service(&id).await.expect("remove service");
    assert!(created, "no service create event for {id}");
    let removed = next_service_event(&mut events, "remove", &id).await;
    assert!(removed, "no service remove event for {id}");
    wait_containers_gone(swarm, run).await;
}

/// Reads `events` until a service event with `action` for `id` (true) or the stream ends or
/// stays silent for the convergence timeout (false).
async fn next_service_event(
    events: &mut futures::stream::BoxStream<'static, controller::swarm::Result<Event>>,
    action: &str,
    id: &str,
) -> bool {
    let found = tokio::time::timeout(CONVERGE, async {
        while let Some(e) = events.next().await {
            let e = e.expect("event");
            if e.kind == ObjectKind::Service && e.action == action && e.id == id {
                return true;
            }
        }
        false
    })
    .await;
    found == Ok(true)
}

/// The daemon answers, is an active swarm manager, and lists itself as a ready manager node.
pub async fn daemon_and_nodes(swarm: &dyn Swarm) {
    swarm.ping().await.expect("ping");
    let info = swarm.info().await.expect("info");
    assert!(info.is_active_manager(), "{info:?}");
    assert_eq!(info.api_version, "1.41");
    let nodes = swarm
        .list_nodes(&controller::swarm::LabelFilter::all())
        .await
        .expect("list nodes");
    let me = nodes
        .iter()
        .find(|n| n.meta.id == info.node_id)
        .unwrap_or_else(|| panic!("node {} not listed: {nodes:?}", info.node_id));
    assert_eq!(
        (me.role.as_str(), me.state.as_str(), me.leader),
        ("manager", "ready", true)
    );
    let none = swarm
        .list_nodes(&controller::swarm::LabelFilter::eq(
            "hearth.test.no-such-label",
            "1",
        ))
        .await
        .expect("list nodes by label");
    assert!(none.is_empty(), "{none:?}");
}

/// A service of an image whose healthcheck fails never turns healthy: the swarm stops the
/// task (it ends `complete` or `failed`, depending on how the process takes SIGTERM) and
/// starts a replacement.
pub async fn failing_healthcheck_replaces_the_task(swarm: &dyn Swarm, run: &str, image: &str) {
    let filter = run_filter(run);
    let mut spec = web_service(run, run);
    if let Some(c) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        c.image = Some(image.to_string());
        if let Some(h) = c.health_check.as_mut() {
            h.retries = Some(2);
        }
    }
    let id = swarm.create_service(&spec).await.expect("create service");
    let mut saw_healthy = false;
    let replaced = tokio::time::timeout(CONVERGE, async {
        loop {
            let tasks = swarm.list_tasks(&filter).await.expect("list tasks");
            let containers = swarm
                .list_containers(&filter)
                .await
                .expect("list containers");
            let mine: Vec<_> = tasks.iter().filter(|t| t.service_id == id).collect();
            saw_healthy |= mine
                .iter()
                .any(|t| task_health(t, &containers) == Some(Health::Healthy));
            let stopped = mine.iter().any(|t| t.state.is_terminal());
            let live = mine.iter().any(|t| !t.desired_state.is_terminal());
            if stopped && live && mine.len() >= 2 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    // Remove before asserting, so a failure does not leak the service.
    swarm.remove_service(&id).await.expect("remove service");
    wait_containers_gone(swarm, run).await;
    assert!(
        replaced.is_ok(),
        "no task of {image} was stopped and replaced within {CONVERGE:?}"
    );
    assert!(!saw_healthy, "{image} must never be healthy");
}
