//! Teardown through a node's own Engine endpoint on the real swarm (`--node-endpoint`).
//!
//! The test swarm has one node, so its local node is configured explicitly as
//! `<local-node-id>=unix:///var/run/docker.sock`: teardown must then remove the stack's volume
//! through that endpoint, and an endpoint pointing at a dead socket must end in an error naming
//! the node. Several nodes are only tested on the simulated swarm (`controller::stack::nodes`).
//! Every stack is named `hearth-test-nodes…-<unique>` and every object carries `hearth.test=1`.

use std::time::{Duration, Instant};

use controller::cli::stack::{rm, RmArgs};
use controller::stack::{apply, observe, status, ApplyOptions, Depth, Owner};
use controller::swarm::spec::{
    self, ContainerSpec, EndpointMode, EndpointSpec, Mount, MountType, ServiceSpec, StackSpec,
    TaskSpec, VolumeSpec,
};
use controller::swarm::{DockerSwarm, LabelFilter, Swarm, TaskState};
use hearth_tests::support::{fixtures, real_swarm, unique_name, RUN_LABEL, TEST_LABEL};

/// One fixture service mounting the stack's named volume.
fn stack(ns: &str) -> StackSpec {
    StackSpec {
        namespace: ns.into(),
        services: vec![ServiceSpec {
            name: Some(format!("{ns}_web")),
            task_template: Some(TaskSpec {
                container_spec: Some(ContainerSpec {
                    image: Some(fixtures::WEBAPP_1_0_0.into()),
                    args: Some(vec!["/bin/serve".into()]),
                    mounts: Some(vec![Mount {
                        r#type: Some(MountType::Volume),
                        source: Some(format!("{ns}_data")),
                        target: Some("/data".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(spec::ServiceMode::replicated(Some(1))),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointMode::Dnsrr),
                ports: None,
            }),
            ..Default::default()
        }],
        networks: Vec::new(),
        volumes: vec![VolumeSpec {
            name: format!("{ns}_data"),
            ..Default::default()
        }],
        secrets: Vec::new(),
        configs: Vec::new(),
        externals: Default::default(),
        exact_names: Default::default(),
        generated_secrets: Vec::new(),
    }
}

/// Deploys the stack and waits until its task runs; returns the local node's ID and hostname.
async fn deploy(swarm: &DockerSwarm, ns: &str) -> (String, String) {
    let owner = Owner::new("Stack", ns)
        .with_label(TEST_LABEL.0, TEST_LABEL.1)
        .with_label(RUN_LABEL, ns);
    apply(swarm, &stack(ns), &owner, &ApplyOptions::default())
        .await
        .expect("apply");
    let started = Instant::now();
    loop {
        let seen = observe(swarm, ns, Depth::WithTasks).await.expect("observe");
        if status(&seen).ready {
            assert!(seen.tasks.iter().any(|t| t.state == TaskState::Running));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let local = swarm.info().await.expect("info").node_id;
    let hostname = swarm
        .list_nodes(&LabelFilter::all())
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.meta.id == local)
        .map(|n| n.meta.name)
        .expect("the local node is listed");
    (local, hostname)
}

/// Nothing of the stack is left (hearth's listing; the task records of the removed service
/// may linger a moment without containers).
async fn assert_gone(swarm: &DockerSwarm, ns: &str) {
    let mut left = observe(swarm, ns, Depth::WithTasks).await.expect("observe");
    left.tasks
        .retain(|t| t.desired_state != TaskState::Remove || !left.containers.is_empty());
    assert!(left.is_empty(), "left behind: {left:#?}");
}

fn rm_args(ns: &str, endpoint: String) -> RmArgs {
    RmArgs {
        force: true,
        timeout: Some(Duration::from_secs(20)),
        node_endpoints: vec![endpoint],
        names: vec![ns.to_string()],
    }
}

#[tokio::test]
async fn real_teardown_removes_the_volume_through_the_local_nodes_explicit_endpoint() {
    let Some(swarm) = real_swarm("nodes-endpoint").await else {
        return;
    };
    let ns = unique_name("nodes");
    let (local, hostname) = deploy(&swarm, &ns).await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let endpoint = format!("{local}=unix:///var/run/docker.sock");
    let result = rm(&swarm, &rm_args(&ns, endpoint), &mut out, &mut err).await;
    let printed = String::from_utf8_lossy(&out).into_owned();
    let errors = String::from_utf8_lossy(&err).into_owned();
    result.unwrap_or_else(|e| panic!("{}\n{errors}", controller::errors::chain(&e)));
    // The volume went through the endpoint, not through the daemon the teardown talks to.
    assert!(
        printed.contains(&format!(
            "Removing volume {ns}_data on node {hostname} ({local}) via unix:///var/run/docker.sock"
        )),
        "{printed}"
    );
    assert!(
        !printed
            .lines()
            .any(|l| l == format!("Removing volume {ns}_data")),
        "{printed}"
    );
    assert_gone(&swarm, &ns).await;
}

#[tokio::test]
async fn real_teardown_with_a_dead_endpoint_for_the_local_node_is_an_error_naming_it() {
    let Some(swarm) = real_swarm("nodes-dead-endpoint").await else {
        return;
    };
    let ns = unique_name("nodesdead");
    let (local, hostname) = deploy(&swarm, &ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A socket path nothing listens on.
    let dead = dir.path().join("dead.sock");
    let endpoint = format!("{local}=unix://{}", dead.display());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let e = rm(&swarm, &rm_args(&ns, endpoint), &mut out, &mut err)
        .await
        .expect_err("a dead endpoint must fail the teardown");
    let text = controller::errors::chain(&e);
    assert!(text.contains(&format!("node {hostname} (")), "{text}");
    assert!(text.contains(&local), "{text}");
    assert!(text.contains("did not answer"), "{text}");
    assert!(text.contains(&dead.display().to_string()), "{text}");
    assert!(text.contains("may remain"), "{text}");
    // Given up on within the deadline; and the daemon the teardown talks to still removed
    // the stack (its final listing removes what is left), so nothing leaks.
    assert!(started.elapsed() < Duration::from_secs(40), "{text}");
    assert_gone(&swarm, &ns).await;
}
