//! The nightly image prune on the real swarm: a dangling `hearth.test=1` image goes, a dangling
//! one still run by a service's container stays, tagged images stay.
//!
//! Needs `scripts/testbed.sh` (dockerd, an active single-node swarm). Under `CI=true` an
//! unreachable Docker fails this test; elsewhere it prints a loud SKIP. Every image is tagged
//! `hearth-test-…` and labelled `hearth.test=1` plus this test's run label, and the prune is
//! restricted to that run label, so images of parallel tests (or anyone's) are never touched.

use std::process::Command;
use std::time::Duration;

use controller::nightly::prune;
use controller::swarm::spec::{ContainerSpec, ServiceSpec, TaskSpec};
use controller::swarm::{ContainerState, ImageFilter, Swarm};
use hearth_tests::support::{eventually, labels, real_swarm, run_filter, unique_name};

/// `docker import`s a busybox rootfs (with a file that makes its ID unique) as `tag`, labelled
/// for `run`; returns the image ID.
fn import(tag: &str, run: &str, salt: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
    std::fs::copy("/usr/bin/busybox", dir.path().join("bin/busybox")).expect("busybox-static");
    std::fs::write(dir.path().join("salt"), salt).expect("salt");
    let script = format!(
        "tar -C '{}' -c . | docker import --change 'LABEL hearth.test=1' \
         --change 'LABEL hearth.test.run={run}' - '{tag}'",
        dir.path().display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_exists(id: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", id])
        .output()
        .expect("docker runs")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_prune_removes_an_unused_dangling_test_image_and_keeps_a_used_one() {
    let Some(swarm) = real_swarm("nightly_prune_real").await else {
        return;
    };
    let run = unique_name("prune");
    let used_tag = format!("{run}-used:1");
    let old_tag = format!("{run}-old:1");

    // `used`: a service runs it, then its tag moves on, so it is dangling but in use.
    let used = import(&used_tag, &run, "used-1");
    let service = ServiceSpec {
        name: Some(run.clone()),
        labels: Some(labels(&run)),
        task_template: Some(TaskSpec {
            container_spec: Some(ContainerSpec {
                image: Some(used_tag.clone()),
                command: Some(vec!["/bin/busybox".into(), "sleep".into(), "600".into()]),
                labels: Some(labels(&run)),
                stop_grace_period: Some(1_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service_id = swarm
        .create_service(&service)
        .await
        .expect("service created");
    let filter = run_filter(&run);
    eventually(
        "the service's container runs the first image",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let cs = swarm.list_containers(&filter).await.ok()?;
            cs.iter()
                .any(|c| c.state == ContainerState::Running && c.image_id.as_deref() == Some(&used))
                .then_some(())
        },
    )
    .await;
    let used_successor = import(&used_tag, &run, "used-2");
    // `unused`: dangling once its tag moves on, no one runs it.
    let unused = import(&old_tag, &run, "old-1");
    let unused_successor = import(&old_tag, &run, "old-2");
    let dangling: Vec<String> = swarm
        .list_images(&ImageFilter::dangling(filter.clone()))
        .await
        .expect("images listed")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(dangling.len(), 2, "{dangling:?}");
    assert!(dangling.contains(&used) && dangling.contains(&unused));

    // A deploy in progress: nothing is removed.
    let skipped = prune::prune(&swarm, &filter, || Some("a run is deploying".into()))
        .await
        .expect("listing works");
    assert_eq!(skipped, Err("a run is deploying".to_string()));
    assert!(image_exists(&unused));

    let report = prune::prune(&swarm, &filter, || None)
        .await
        .expect("listing works")
        .expect("nothing deploying");
    assert_eq!(report.pruned, std::slice::from_ref(&unused), "{report:?}");
    assert!(report.bytes_reclaimed > 0, "{report:?}");
    assert_eq!(report.in_use, std::slice::from_ref(&used), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!image_exists(&unused), "the unused dangling image is gone");
    assert!(image_exists(&used), "the image a container runs stays");
    assert!(image_exists(&used_successor) && image_exists(&unused_successor));

    // Clean up: the service, then our images once its container is gone.
    swarm
        .remove_service(&service_id)
        .await
        .expect("service removed");
    eventually(
        "the service's container is gone",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            swarm
                .list_containers(&filter)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await;
    for id in [&used, &used_successor, &unused_successor] {
        let _ = Command::new("docker").args(["rmi", id.as_str()]).output();
    }
}
