//! The nightly's forced redeploy on the real swarm: `force_update_service` replaces a
//! service's task with a fresh one, keeping its spec (labels included).
//!
//! Needs `scripts/testbed.sh` (dockerd, an active single-node swarm, fixture images). Under
//! `CI=true` an unreachable Docker fails this test; elsewhere it prints a loud SKIP.

use std::time::Duration;

use controller::swarm::spec::{ContainerSpec, ServiceSpec, TaskSpec};
use controller::swarm::{Swarm, TaskState};
use hearth_tests::support::{eventually, fixtures, labels, real_swarm, run_filter, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_update_replaces_the_task_and_keeps_the_spec() {
    let Some(swarm) = real_swarm("nightly_redeploy_real").await else {
        return;
    };
    let run = unique_name("redeploy");
    let filter = run_filter(&run);
    let service = ServiceSpec {
        name: Some(run.clone()),
        labels: Some(labels(&run)),
        task_template: Some(TaskSpec {
            container_spec: Some(ContainerSpec {
                image: Some(fixtures::WEBAPP_1_0_0.into()),
                args: Some(vec!["/bin/serve".into()]),
                labels: Some(labels(&run)),
                stop_grace_period: Some(1_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = swarm
        .create_service(&service)
        .await
        .expect("service created");
    let running = |swarm: &controller::swarm::DockerSwarm| {
        let swarm = swarm.clone();
        let filter = filter.clone();
        async move {
            swarm
                .list_tasks(&filter)
                .await
                .ok()?
                .into_iter()
                .find(|t| t.state == TaskState::Running && t.desired_state == TaskState::Running)
                .map(|t| t.id)
        }
    };
    let first = eventually(
        "the first task runs",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || running(&swarm),
    )
    .await;
    let before = swarm.list_services(&filter).await.expect("listed");
    assert_eq!(before.len(), 1);

    swarm
        .force_update_service(&id, before[0].meta.version)
        .await
        .expect("forced update accepted");
    let second = eventually(
        "a fresh task runs",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let first = first.clone();
            let probe = running(&swarm);
            async move { probe.await.filter(|t| *t != first) }
        },
    )
    .await;
    assert_ne!(first, second);
    let after = swarm.list_services(&filter).await.expect("listed");
    assert!(after[0].meta.version > before[0].meta.version);
    assert_eq!(
        after[0].meta.labels, before[0].meta.labels,
        "spec labels kept"
    );
    assert_eq!(after[0].image, before[0].image);
    // a stale version is refused, typed
    let err = swarm
        .force_update_service(&id, before[0].meta.version)
        .await
        .expect_err("stale version");
    assert!(
        matches!(err, controller::swarm::Error::OutOfSequence { .. }),
        "{err}"
    );

    swarm.remove_service(&id).await.expect("removed");
}
