//! Stacks on the real swarm: deploy, readiness, no-op re-apply, graceful and forced teardown.
//!
//! Needs `scripts/testbed.sh` (dockerd, an active single-node swarm, fixture images). Under
//! `CI=true` an unreachable Docker fails these tests; elsewhere they print a loud SKIP. Every
//! stack is named `hearth-test-<test>-<unique>` and every object carries `hearth.test=1`.

use std::process::Command;
use std::time::{Duration, Instant};

use controller::stack::{
    apply, observe, status, teardown, ApplyOptions, Depth, Mode, Owner, TeardownOptions,
};
use controller::swarm::spec::{
    self, ConfigReference, ConfigSpec, ContainerSpec, EndpointMode, EndpointSpec, FileTarget,
    HealthCheck, Map, Mount, MountType, NetworkAttachment, NetworkSpec, SecretReference,
    SecretSpec, ServiceSpec, StackSpec, TaskSpec, VolumeSpec,
};
use controller::swarm::{LabelFilter, Swarm, TaskState};
use hearth_tests::counting::Counting;
use hearth_tests::support::{fixtures, real_swarm, unique_name, RUN_LABEL, TEST_LABEL};

const SECOND: i64 = 1_000_000_000;

/// Two healthy fixture services on an overlay network, sharing a volume, a secret and a
/// config. `ignore_term` makes the services behave like a PID-1 shell that waits out its stop
/// grace period (5 s).
fn stack(ns: &str, ignore_term: bool) -> StackSpec {
    let service = |name: &str, image: &str| ServiceSpec {
        name: Some(format!("{ns}_{name}")),
        task_template: Some(TaskSpec {
            container_spec: Some(ContainerSpec {
                image: Some(image.into()),
                args: Some(vec!["/bin/serve".into()]),
                env: Some(vec![format!(
                    "HEARTH_FIXTURE_IGNORE_TERM={}",
                    u8::from(ignore_term)
                )]),
                health_check: Some(HealthCheck {
                    test: Some(vec!["CMD".into(), "/bin/healthcheck".into()]),
                    interval: Some(SECOND),
                    timeout: Some(3 * SECOND),
                    retries: Some(3),
                    ..Default::default()
                }),
                stop_grace_period: Some(5 * SECOND),
                secrets: Some(vec![SecretReference {
                    file: Some(FileTarget {
                        name: "token".into(),
                        uid: "0".into(),
                        gid: "0".into(),
                        mode: 0o444,
                    }),
                    secret_id: None,
                    secret_name: format!("{ns}_token"),
                }]),
                configs: Some(vec![ConfigReference {
                    file: Some(FileTarget {
                        name: "/etc/app.conf".into(),
                        uid: "0".into(),
                        gid: "0".into(),
                        mode: 0o444,
                    }),
                    config_id: None,
                    config_name: format!("{ns}_conf"),
                }]),
                mounts: Some(vec![Mount {
                    r#type: Some(MountType::Volume),
                    source: Some(format!("{ns}_data")),
                    target: Some("/data".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachment {
                target: format!("{ns}_net"),
                aliases: Some(vec![name.into()]),
                driver_opts: None,
            }]),
            ..Default::default()
        }),
        mode: Some(spec::ServiceMode::replicated(Some(1))),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointMode::Dnsrr),
            ports: None,
        }),
        ..Default::default()
    };
    let mut secret = SecretSpec {
        name: format!("{ns}_token"),
        ..Default::default()
    };
    secret.set_data(b"s3cret");
    let mut config = ConfigSpec {
        name: format!("{ns}_conf"),
        ..Default::default()
    };
    config.set_data(b"listen 8080\n");
    StackSpec {
        namespace: ns.into(),
        services: vec![
            service("api", fixtures::WEBAPP_1_0_0),
            service("web", fixtures::WEBAPP_1_1_0),
        ],
        networks: vec![NetworkSpec {
            name: format!("{ns}_net"),
            driver: Some("overlay".into()),
            labels: Some(Map::new()),
            ..Default::default()
        }],
        volumes: vec![VolumeSpec {
            name: format!("{ns}_data"),
            ..Default::default()
        }],
        secrets: vec![secret],
        configs: vec![config],
        externals: Default::default(),
        exact_names: Default::default(),
        generated_secrets: Vec::new(),
    }
}

fn owner(ns: &str) -> Owner {
    Owner::new("Stack", ns)
        .with_label(TEST_LABEL.0, TEST_LABEL.1)
        .with_label(RUN_LABEL, ns)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("/usr/bin/docker")
        .args(args)
        .output()
        .expect("run /usr/bin/docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deploys, waits for readiness, checks docker's own stack commands and a no-op re-apply.
async fn deploy_ready(swarm: &Counting, ns: &str, ignore_term: bool) {
    let desired = stack(ns, ignore_term);
    let started = Instant::now();
    let report = apply(swarm, &desired, &owner(ns), &ApplyOptions::default())
        .await
        .expect("first apply");
    // network, secret, config, two services (the volume is made by the tasks, #13)
    assert_eq!(report.done.len(), 5, "{:?}", report.done);
    let mut pause = Duration::from_millis(100);
    loop {
        let st = status(&observe(swarm, ns, Depth::WithTasks).await.expect("observe"));
        if st.ready {
            assert_eq!(st.services.len(), 2);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "stack {ns} not ready: {st:#?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(1));
    }
    eprintln!(
        "{ns}: all tasks running and healthy after {:?}",
        started.elapsed()
    );

    swarm.reset();
    let again = apply(swarm, &desired, &owner(ns), &ApplyOptions::default())
        .await
        .expect("re-apply");
    assert!(again.is_noop(), "{:?}", again.done);
    assert_eq!(swarm.writes(), 0);
    assert_eq!(swarm.calls(), 5);

    let ls = docker(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"]);
    assert!(
        ls.lines().any(|l| l == format!("{ns} 2")),
        "docker stack ls:\n{ls}"
    );
    let ps = docker(&["stack", "ps", ns, "--format", "{{.Name}} {{.CurrentState}}"]);
    let running = ps.lines().filter(|l| l.contains("Running")).count();
    assert_eq!(running, 2, "docker stack ps:\n{ps}");
}

/// Checks that nothing of the stack is left, by hearth's listing and by docker's.
async fn assert_gone(swarm: &Counting, ns: &str) {
    let mut left = observe(swarm, ns, Depth::WithTasks).await.expect("observe");
    // Swarm's task reaper deletes the task records of a removed service a moment later; a
    // record marked for removal whose container is gone is not a leftover object.
    left.tasks
        .retain(|t| t.desired_state != TaskState::Remove || !left.containers.is_empty());
    assert!(left.is_empty(), "left behind: {left:#?}");
    let filter = format!("label=com.docker.stack.namespace={ns}");
    for kind in ["service", "network", "secret", "config", "volume"] {
        let out = docker(&[kind, "ls", "-q", "--filter", &filter]);
        assert!(out.trim().is_empty(), "docker {kind} ls still shows: {out}");
    }
    let out = docker(&["ps", "-aq", "--filter", &filter]);
    assert!(out.trim().is_empty(), "docker ps still shows: {out}");
}

#[tokio::test]
async fn real_stack_graceful_teardown_removes_everything() {
    let Some(docker_swarm) = real_swarm("stack-graceful").await else {
        return;
    };
    let swarm = Counting::new(docker_swarm);
    let ns = unique_name("stkg");
    // PID-1 shells that ignore SIGTERM: graceful teardown must wait out the 5 s grace period.
    deploy_ready(&swarm, &ns, true).await;
    let report = teardown(&swarm, &ns, &TeardownOptions::graceful())
        .await
        .expect("graceful teardown");
    eprintln!(
        "{ns}: graceful teardown {:?} (waited {:?} for containers), removed {:?}",
        report.elapsed, report.containers_wait, report.removed
    );
    assert_eq!(report.mode, Mode::Graceful);
    assert_eq!(report.removed.len(), 6, "{report:?}");
    assert!(report.containers_removed.is_empty());
    // The grace period was respected (not a timing assertion: a lower bound by construction).
    assert!(
        report.containers_wait >= Duration::from_secs(4),
        "{report:?}"
    );
    assert_gone(&swarm, &ns).await;
}

#[tokio::test]
async fn real_stack_update_rotates_secrets_then_forced_teardown_removes_everything() {
    let Some(docker_swarm) = real_swarm("stack-forced").await else {
        return;
    };
    let swarm = Counting::new(docker_swarm);
    let ns = unique_name("stkf");
    deploy_ready(&swarm, &ns, true).await;

    // A new image for one service and new secret content: a new secret under a new name,
    // both services updated at their current version, the old secret removed.
    let filter = LabelFilter::eq("com.docker.stack.namespace", ns.as_str());
    let old_secrets = swarm.list_secrets(&filter).await.expect("secrets");
    let mut changed = stack(&ns, true);
    changed.secrets[0].set_data(b"rotated");
    if let Some(cs) = changed.services[0]
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        cs.image = Some(fixtures::WEBAPP_2_0_0.into());
    }
    let report = apply(&swarm, &changed, &owner(&ns), &ApplyOptions::default())
        .await
        .expect("update apply");
    let done: Vec<String> = report.done.iter().map(ToString::to_string).collect();
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done[0].starts_with("create secret"), "{done:?}");
    assert_eq!(
        &done[1..3],
        [
            format!("update service {ns}_api"),
            format!("update service {ns}_web")
        ]
    );
    assert_eq!(
        done[3],
        format!("remove secret {}", old_secrets[0].meta.name)
    );
    let started = Instant::now();
    loop {
        let st = status(
            &observe(&swarm, &ns, Depth::WithTasks)
                .await
                .expect("observe"),
        );
        if st.ready {
            let api = st.services.iter().find(|s| s.name.ends_with("_api"));
            assert_eq!(
                api.and_then(|s| s.image.as_deref()),
                Some(fixtures::WEBAPP_2_0_0)
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after update: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{ns}: updated stack ready after {:?}", started.elapsed());
    let secrets = swarm.list_secrets(&filter).await.expect("secrets");
    assert_eq!(secrets.len(), 1);
    assert_ne!(secrets[0].meta.name, old_secrets[0].meta.name);
    swarm.reset();
    let again = apply(&swarm, &changed, &owner(&ns), &ApplyOptions::default())
        .await
        .expect("re-apply");
    assert!(again.is_noop(), "{:?}", again.done);
    assert_eq!(swarm.writes(), 0);

    let report = teardown(&swarm, &ns, &TeardownOptions::forced())
        .await
        .expect("forced teardown");
    eprintln!(
        "{ns}: forced teardown {:?} (containers gone after {:?}), killed {}",
        report.elapsed,
        report.containers_wait,
        report.containers_removed.len()
    );
    assert_eq!(report.removed.len(), 6, "{report:?}");
    // The two running containers, plus the exited ones of the replaced tasks that swarm keeps
    // as task history.
    assert!(report.containers_removed.len() >= 2, "{report:?}");
    assert_gone(&swarm, &ns).await;
}

#[tokio::test]
async fn real_stack_cli_deploys_from_compose_and_removes_it() {
    let Some(docker_swarm) = real_swarm("stack-cli").await else {
        return;
    };
    let ns = unique_name("stkc");
    let dir = tempfile::tempdir().expect("tempdir");
    let compose = format!(
        r#"
version: "3.8"
services:
  web:
    image: {image}
    command: ["/bin/serve"]
    environment:
      PORT: "${{PORT:-8080}}"
    healthcheck:
      test: ["CMD", "/bin/healthcheck"]
      interval: 1s
      timeout: 3s
    deploy:
      endpoint_mode: dnsrr
    secrets: [token]
    configs:
      - source: conf
        target: /etc/app.conf
    volumes: [data:/data]
secrets:
  token:
    file: ./token.txt
configs:
  conf:
    file: ./app.conf
volumes:
  data: {{}}
"#,
        image = fixtures::WEBAPP_2_0_0
    );
    std::fs::write(dir.path().join("stack.yml"), compose).expect("write compose");
    std::fs::write(dir.path().join("token.txt"), "s3cret").expect("write secret");
    std::fs::write(dir.path().join("app.conf"), "x=1\n").expect("write config");
    std::fs::write(dir.path().join("vars.env"), "PORT=8081\n").expect("write env");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = controller::cli::stack::DeployArgs {
        compose_files: vec![dir.path().join("stack.yml")],
        env_file: Some(dir.path().join("vars.env")),
        labels: vec![
            format!("{}={}", TEST_LABEL.0, TEST_LABEL.1),
            format!("{RUN_LABEL}={ns}"),
        ],
        wait: true,
        detach: false,
        progress: controller::cli::progress::Mode::Plain,
        timeout: Duration::from_secs(90),
        name: ns.clone(),
    };
    let env = controller::cli::stack::read_env_file(&dir.path().join("vars.env")).expect("env");
    controller::cli::stack::deploy(&docker_swarm, &args, &env, &mut out, &mut err)
        .await
        .unwrap_or_else(|e| panic!("{}", controller::errors::chain(&e)));
    let printed = String::from_utf8_lossy(&out).into_owned();
    assert!(
        printed.contains(&format!("Creating service {ns}_web")),
        "{printed}"
    );
    assert!(printed.contains("is ready"), "{printed}");
    let ps = docker(&[
        "stack",
        "ps",
        &ns,
        "--format",
        "{{.Name}} {{.CurrentState}}",
    ]);
    assert!(ps.contains("Running"), "{ps}");
    let mut out = Vec::new();
    controller::cli::stack::ps(
        &docker_swarm,
        &controller::cli::stack::PsArgs {
            no_trunc: false,
            name: ns.clone(),
        },
        &mut out,
    )
    .await
    .expect("hearth stack ps");
    let table = String::from_utf8_lossy(&out).into_owned();
    assert!(table.contains("Running (healthy)"), "{table}");

    let mut out = Vec::new();
    controller::cli::stack::rm(
        &docker_swarm,
        &controller::cli::stack::RmArgs {
            force: true,
            timeout: None,
            node_endpoints: Vec::new(),
            names: vec![ns.clone()],
        },
        &mut out,
        &mut err,
    )
    .await
    .unwrap_or_else(|e| panic!("{}", controller::errors::chain(&e)));
    let printed = String::from_utf8_lossy(&out).into_owned();
    assert!(
        printed.contains(&format!("Removing volume {ns}_data")),
        "{printed}"
    );
    assert_gone(&Counting::new(docker_swarm), &ns).await;
}

/// Tears a stack down right after it was applied, while its tasks are still being assigned
/// and prepared (their containers, which mount the stack's volume, do not exist yet), then
/// checks a few seconds later that nothing came back. Swarm's agent creates the container of
/// a task it was preparing when the service went, after the removal, then forgets it: before
/// teardown waited for such tasks, forced teardown reported success and the orphaned
/// container brought the volume back, and graceful teardown waited on the volume "in use"
/// until its deadline.
async fn teardown_while_starting(mode: TeardownOptions, test: &str) {
    let Some(docker_swarm) = real_swarm(test).await else {
        return;
    };
    let swarm = Counting::new(docker_swarm);
    for round in 0..3 {
        let ns = unique_name("stks");
        let desired = stack(&ns, true);
        apply(&swarm, &desired, &owner(&ns), &ApplyOptions::default())
            .await
            .expect("apply");
        // Wait until a task reached a node (assigned, accepted, preparing), then a little
        // longer each round.
        let filter = LabelFilter::eq("com.docker.stack.namespace", ns.as_str());
        let started = Instant::now();
        let states = loop {
            let tasks = swarm.list_tasks(&filter).await.expect("tasks");
            if tasks.iter().any(|t| {
                matches!(
                    t.state,
                    TaskState::Assigned | TaskState::Accepted | TaskState::Preparing
                )
            }) || started.elapsed() > Duration::from_secs(10)
            {
                break tasks
                    .iter()
                    .map(|t| format!("{:?}", t.state))
                    .collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(40) * round).await;
        let report = teardown(&swarm, &ns, &mode)
            .await
            .unwrap_or_else(|e| panic!("round {round}: teardown of {ns} failed: {e}"));
        eprintln!(
            "{ns}: round {round}, tasks {states:?} at teardown; {:?} teardown {:?} (containers {:?})",
            report.mode, report.elapsed, report.containers_wait
        );
        // A task that was preparing when its service went creates its container later; the
        // container must not bring the volume back after a teardown that reported success.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_gone(&swarm, &ns).await;
    }
}

#[tokio::test]
async fn real_stack_graceful_teardown_while_tasks_start_leaves_nothing_behind() {
    // Before the fix this teardown waited on the volume "in use" by the orphaned container
    // until its deadline: 30 s is ample for the stack and keeps a regression short.
    let options = TeardownOptions {
        deadline: Duration::from_secs(30),
        ..TeardownOptions::graceful()
    };
    teardown_while_starting(options, "stack-graceful-starting").await;
}

#[tokio::test]
async fn real_stack_forced_teardown_while_tasks_start_leaves_nothing_behind() {
    teardown_while_starting(TeardownOptions::forced(), "stack-forced-starting").await;
}

/// A volume driver that is not installed (the name is ours: `hearth-test-…`, never a plugin).
const MISSING_DRIVER: &str = "hearth-test-nosuchdriver";

// Until #13 this test asserted that hearth refused the deploy (it created volumes up front, on
// the manager). `docker stack deploy` deploys such a stack and leaves the volume to the node
// that runs the task; hearth now does the same.
#[tokio::test]
async fn real_stack_with_a_volume_driver_missing_here_deploys_and_its_tasks_fail_here() {
    let Some(docker_swarm) = real_swarm("stack-missing-driver").await else {
        return;
    };
    let swarm = Counting::new(docker_swarm);
    let ns = unique_name("stkd");
    let mut desired = stack(&ns, false);
    desired.volumes[0].driver = Some(MISSING_DRIVER.into());
    apply(&swarm, &desired, &owner(&ns), &ApplyOptions::default())
        .await
        .expect("a volume driver the manager lacks does not stop the deploy (as with docker)");
    // Swarm's scheduler finds no node with the plugin: the tasks stay pending ("no suitable
    // node (missing plugin on 1 node)"); on a swarm whose workers have it they run there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let why = loop {
        let seen = observe(&swarm, &ns, Depth::WithTasks)
            .await
            .expect("observe");
        let failed = seen
            .tasks
            .iter()
            .filter_map(|t| t.error.clone())
            .find(|e| e.contains("missing plugin"));
        if let Some(why) = failed {
            break why;
        }
        assert!(
            Instant::now() < deadline,
            "no task failed on the driver: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{ns}: {why}");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &format!("name={ns}_data")]);
    assert!(volumes.trim().is_empty(), "no volume may exist: {volumes}");
    teardown(&swarm, &ns, &TeardownOptions::forced())
        .await
        .expect("teardown");
    assert_gone(&swarm, &ns).await;
}
