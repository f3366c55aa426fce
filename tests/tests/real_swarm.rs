//! The swarm conformance suite against the real Docker Swarm of the test bed.
//!
//! Needs `scripts/testbed.sh` (dockerd, an active single-node swarm, fixture images). Under
//! `CI=true` an unreachable Docker fails these tests; elsewhere they print a loud SKIP.
//! Every object is named `hearth-test-<test>-<unique>` and labelled `hearth.test=1`.

use hearth_tests::conformance;
use hearth_tests::support::{fixtures, real_swarm, unique_name};

#[tokio::test]
async fn real_service_runs_healthy_updates_and_is_removed() {
    let Some(swarm) = real_swarm("service-lifecycle").await else {
        return;
    };
    conformance::service_lifecycle(&swarm, &unique_name("svc")).await;
}

#[tokio::test]
async fn real_networks_volumes_secrets_configs_are_created_listed_and_removed() {
    let Some(swarm) = real_swarm("objects-lifecycle").await else {
        return;
    };
    conformance::objects_lifecycle(&swarm, &unique_name("obj")).await;
}

#[tokio::test]
async fn real_objects_are_in_use_while_a_container_uses_them() {
    let Some(swarm) = real_swarm("in-use").await else {
        return;
    };
    conformance::in_use_until_users_are_gone(&swarm, &unique_name("use")).await;
}

#[tokio::test]
async fn real_network_endpoints_list_running_containers() {
    let Some(swarm) = real_swarm("network-endpoints").await else {
        return;
    };
    conformance::network_endpoints_list_running_containers(&swarm, &unique_name("nep")).await;
}

#[tokio::test]
async fn real_events_report_service_create_and_remove() {
    let Some(swarm) = real_swarm("events").await else {
        return;
    };
    conformance::events_report_service_changes(&swarm, &unique_name("evt")).await;
}

#[tokio::test]
async fn real_daemon_is_an_active_manager_and_lists_its_node() {
    let Some(swarm) = real_swarm("daemon").await else {
        return;
    };
    conformance::daemon_and_nodes(&swarm).await;
}

#[tokio::test]
async fn real_broken_fixture_is_never_healthy_and_is_replaced() {
    let Some(swarm) = real_swarm("broken-fixture").await else {
        return;
    };
    conformance::failing_healthcheck_replaces_the_task(
        &swarm,
        &unique_name("bad"),
        fixtures::WEBAPP_BROKEN,
    )
    .await;
}
