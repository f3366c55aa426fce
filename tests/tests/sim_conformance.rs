//! The swarm conformance suite against the simulated swarm, on a paused (virtual) clock.

use controller::swarm::sim::{SimConfig, SimSwarm};
use hearth_tests::conformance;
use hearth_tests::support::fixtures;

fn sim() -> SimSwarm {
    SimSwarm::new(SimConfig::default())
}

#[tokio::test(start_paused = true)]
async fn sim_service_lifecycle_conforms() {
    conformance::service_lifecycle(&sim(), "hearth-test-svc").await;
}

#[tokio::test(start_paused = true)]
async fn sim_objects_lifecycle_conforms() {
    conformance::objects_lifecycle(&sim(), "hearth-test-obj").await;
}

#[tokio::test(start_paused = true)]
async fn sim_in_use_until_users_are_gone_conforms() {
    conformance::in_use_until_users_are_gone(&sim(), "hearth-test-use").await;
}

#[tokio::test(start_paused = true)]
async fn sim_network_endpoints_list_running_containers_conforms() {
    conformance::network_endpoints_list_running_containers(&sim(), "hearth-test-nep").await;
}

#[tokio::test(start_paused = true)]
async fn sim_events_report_service_changes_conforms() {
    conformance::events_report_service_changes(&sim(), "hearth-test-evt").await;
}

#[tokio::test(start_paused = true)]
async fn sim_daemon_and_nodes_conform() {
    conformance::daemon_and_nodes(&sim()).await;
}

#[tokio::test(start_paused = true)]
async fn sim_failing_healthcheck_replaces_the_task_conforms() {
    let swarm = sim();
    swarm.set_unhealthy_image(fixtures::WEBAPP_BROKEN);
    conformance::failing_healthcheck_replaces_the_task(
        &swarm,
        "hearth-test-bad",
        fixtures::WEBAPP_BROKEN,
    )
    .await;
}
