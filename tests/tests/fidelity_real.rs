//! The reproducers of issue #13, on the real swarm: each deploys one small compose file with
//! `docker stack deploy` (Debian's 20.10 CLI, the engine's version) and with hearth (the
//! library calls `hearth stack deploy` makes), and compares the raw specs the daemon stores
//! (`hearth_tests::differential`: nulls, empty maps and field presence included; only
//! daemon-assigned fields and hearth's own `hearth.*` labels left out).
//!
//! 1. `Privileges` on every service (docker sends `{"CredentialSpec": null, "SELinuxContext":
//!    null}`);
//! 2. a config with an explicit `name:` keeps that name exactly; new content under the same
//!    name is refused naming the config and saying to bump its version;
//! 3. a volume whose driver the manager lacks (`driver: hetzner-volume`), and one whose
//!    `driver_opts` the node cannot honour (`size: 1` without quota support), deploy as with
//!    docker: the tasks create volumes, the deploy does not;
//! 4. an apply that fails half-way (a service refers to a missing external secret) removes
//!    exactly what it created (final listing);
//! 5. `docker stack deploy` over a stack hearth deployed, and `hearth stack deploy` over one
//!    docker deployed, leave every task running untouched (same task IDs, no new task).
//!
//! Needs `scripts/testbed.sh`; under `CI=true` an unreachable Docker fails the tests.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use controller::compose;
use controller::stack::{self, ApplyOptions, Owner};
use controller::swarm::DockerSwarm;
use hearth_tests::differential::{
    chain, compare, docker, leftovers_of, remove, snapshot, Snapshot, DOCKER,
};
use hearth_tests::support::{fixtures, real_swarm, unique_name, TEST_LABEL};

/// A compose file and the side files it reads, in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(compose: &str, side: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
        for (name, text) in side {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Files { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }
}

fn env(stack: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("STACK_NAME".to_string(), stack.to_string())])
}

/// `docker stack deploy` of the directory's compose.yml; its stderr when it fails.
fn docker_deploy(files: &Files, namespace: &str) -> Result<(), String> {
    let out = Command::new(DOCKER)
        .current_dir(files.path())
        .env("STACK_NAME", namespace)
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(files.path().join("compose.yml"))
        .arg(namespace)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn translate(files: &Files, namespace: &str) -> compose::Translation {
    compose::translate_paths(
        &[files.path().join("compose.yml")],
        namespace,
        &env(namespace),
    )
    .unwrap_or_else(|e| panic!("translation: {e}"))
}

/// What `hearth stack deploy` does: translate, then apply as `Stack/<name>`.
async fn hearth_deploy(
    swarm: &DockerSwarm,
    files: &Files,
    namespace: &str,
) -> Result<stack::ApplyReport, stack::Error> {
    hearth_deploy_with(swarm, files, namespace, &ApplyOptions::default()).await
}

async fn hearth_deploy_with(
    swarm: &DockerSwarm,
    files: &Files,
    namespace: &str,
    options: &ApplyOptions,
) -> Result<stack::ApplyReport, stack::Error> {
    let t = translate(files, namespace);
    let owner = Owner::operator(namespace).with_label(TEST_LABEL.0, TEST_LABEL.1);
    stack::apply(swarm, &t.stack, &owner, options).await
}

fn exact_names(files: &Files, namespace: &str) -> BTreeSet<String> {
    let t = translate(files, namespace);
    t.stack
        .exact_names
        .secrets
        .into_iter()
        .chain(t.stack.exact_names.configs)
        .collect()
}

/// Deploys `files` with docker and with hearth (one after the other), snapshots both, removes
/// both; returns the snapshots.
async fn both(swarm: &DockerSwarm, test: &str, files: &Files) -> (Snapshot, Snapshot) {
    let reference = unique_name(&format!("{test}r"));
    let ours = unique_name(&format!("{test}h"));
    let mut exact = exact_names(files, &reference);
    exact.extend(exact_names(files, &ours));
    docker_deploy(files, &reference).unwrap_or_else(|e| panic!("docker refused: {e}"));
    // Give a task the moment it takes to create a volume it can create.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let docker_side = snapshot(&reference, &exact);
    remove(swarm, &reference).await;
    hearth_deploy(swarm, files, &ours)
        .await
        .unwrap_or_else(|e| panic!("hearth refused: {}", chain(&e)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hearth_side = snapshot(&ours, &exact);
    remove(swarm, &ours).await;
    (docker_side, hearth_side)
}

fn assert_same(docker_side: &Snapshot, hearth_side: &Snapshot) {
    let diffs = compare(docker_side, hearth_side);
    let lines: Vec<String> = diffs.iter().map(ToString::to_string).collect();
    assert!(
        lines.is_empty(),
        "{} difference(s) between docker stack deploy and hearth:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

#[tokio::test]
async fn every_service_carries_privileges_as_docker_sends_them() {
    let Some(swarm) = real_swarm("fidelity-privileges").await else {
        return;
    };
    let files = Files::new(
        &format!(
            "version: \"3.8\"\nservices:\n  a:\n    image: {}\n",
            fixtures::WEBAPP_1_0_0
        ),
        &[],
    );
    let (d, h) = both(&swarm, "fidp", &files).await;
    let service = d
        .iter()
        .find(|((kind, _), _)| kind == "service")
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(
        service.pointer("/TaskTemplate/ContainerSpec/Privileges/CredentialSpec"),
        Some(&serde_json::Value::Null),
        "docker's side: {service:#}"
    );
    assert_same(&d, &h);
}

#[tokio::test]
async fn an_explicitly_named_config_keeps_its_name_and_refuses_new_content_under_it() {
    let Some(swarm) = real_swarm("fidelity-named-config").await else {
        return;
    };
    let compose = format!(
        "version: \"3.8\"\nservices:\n  a:\n    image: {}\n    configs: [c]\n\
         configs:\n  c:\n    name: ${{STACK_NAME}}_c_v1\n    file: ./c.txt\n",
        fixtures::WEBAPP_1_0_0
    );
    let files = Files::new(&compose, &[("c.txt", "first\n")]);
    let (d, h) = both(&swarm, "fidc", &files).await;
    assert!(
        h.contains_key(&("config".to_string(), "<STACK>_c_v1".to_string())),
        "hearth's config is not named exactly: {:?}",
        h.keys().collect::<Vec<_>>()
    );
    assert_same(&d, &h);

    // New content under the same name: docker fails, hearth fails naming the config and
    // saying what to do, and the deployed stack stays as it was.
    let reference = unique_name("fidcr");
    let ours = unique_name("fidch");
    docker_deploy(&files, &reference).unwrap();
    hearth_deploy(&swarm, &files, &ours).await.unwrap();
    files.write("c.txt", "second\n");
    let docker_error = docker_deploy(&files, &reference).expect_err("docker must refuse");
    eprintln!("docker: {docker_error}");
    let err = hearth_deploy(&swarm, &files, &ours)
        .await
        .expect_err("hearth must refuse");
    let message = chain(&err);
    eprintln!("hearth: {message}");
    assert!(
        matches!(err, stack::Error::ContentChanged { .. }),
        "{message}"
    );
    assert!(
        message.contains(&format!("config {ours}_c_v1")),
        "{message}"
    );
    assert!(
        message.contains("bump the version in its name"),
        "{message}"
    );
    let content = docker(&[
        "config",
        "inspect",
        &format!("{ours}_c_v1"),
        "--format",
        "{{json .Spec.Data}}",
    ]);
    assert!(content.status.success());
    let stored = String::from_utf8_lossy(&content.stdout).to_string();
    // "first\n" in base64
    assert!(stored.contains("Zmlyc3QK"), "the config changed: {stored}");
    remove(&swarm, &reference).await;
    remove(&swarm, &ours).await;
}

/// A stack mounting one volume whose definition is `volume` (YAML under `volumes: v:`).
fn volume_stack(volume: &str) -> Files {
    Files::new(
        &format!(
            "version: \"3.8\"\nservices:\n  a:\n    image: {}\n    volumes: [\"v:/data\"]\n\
             volumes:\n  v:\n{volume}",
            fixtures::WEBAPP_1_0_0
        ),
        &[],
    )
}

#[tokio::test]
async fn a_volume_driver_the_manager_lacks_deploys_as_with_docker() {
    let Some(swarm) = real_swarm("fidelity-driver").await else {
        return;
    };
    let files = volume_stack("    driver: hetzner-volume\n");
    let (d, h) = both(&swarm, "fidd", &files).await;
    assert!(
        !d.keys().chain(h.keys()).any(|(kind, _)| kind == "volume"),
        "no side may have a volume: {:?} / {:?}",
        d.keys().collect::<Vec<_>>(),
        h.keys().collect::<Vec<_>>()
    );
    assert_same(&d, &h);
}

#[tokio::test]
async fn volume_driver_opts_the_node_cannot_honour_deploy_as_with_docker() {
    let Some(swarm) = real_swarm("fidelity-driver-opts").await else {
        return;
    };
    let files = volume_stack("    driver_opts:\n      size: \"1\"\n");
    let (d, h) = both(&swarm, "fido", &files).await;
    assert_same(&d, &h);
}

#[tokio::test]
async fn an_apply_that_fails_half_way_removes_exactly_what_it_created() {
    let Some(swarm) = real_swarm("fidelity-rollback").await else {
        return;
    };
    // The second service refers to an external secret that does not exist: Docker refuses its
    // create ("secret not found"), after the network, the config, the secret and (running
    // alongside) possibly the first service were created.
    let missing = unique_name("fidrmissing");
    let compose = format!(
        "version: \"3.8\"\nservices:\n  a:\n    image: {img}\n    configs: [c]\n    secrets: [s]\n\
         \x20 b:\n    image: {img}\n    secrets: [gone]\n    volumes: [\"v:/data\"]\n\
         volumes:\n  v: {{}}\nconfigs:\n  c:\n    file: ./c.txt\n\
         secrets:\n  s:\n    file: ./s.txt\n  gone:\n    external: true\n    name: {missing}\n",
        img = fixtures::WEBAPP_1_0_0
    );
    let files = Files::new(&compose, &[("c.txt", "c\n"), ("s.txt", "s\n")]);
    let ns = unique_name("fidr");
    let started = Instant::now();
    let options = ApplyOptions {
        deadline: Duration::from_secs(20),
        ..ApplyOptions::default()
    };
    let err = hearth_deploy_with(&swarm, &files, &ns, &options)
        .await
        .expect_err("the second service's create must fail");
    let message = chain(&err);
    eprintln!("{ns}: {message} [{:.1?}]", started.elapsed());
    let stack::Error::ActionFailed { rollback, .. } = &err else {
        panic!("unexpected error: {message}");
    };
    assert!(rollback.left.is_empty(), "{rollback:?}");
    // network, config and secret at least
    assert!(rollback.removed.len() >= 3, "{rollback:?}");
    // The final listing, by the namespace label and by name.
    let left = leftovers_of(&ns);
    assert!(left.is_empty(), "left behind: {left:?}");
    for kind in ["service", "network", "secret", "config", "volume"] {
        let out = docker(&[kind, "ls", "-q", "--filter", &format!("name={ns}")]);
        let names = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(names.trim().is_empty(), "{kind}s left: {names}");
    }
}

/// Every task of the stack (history included), and whether each wanted one runs.
fn tasks_of(namespace: &str) -> (BTreeSet<String>, bool) {
    let out = docker(&[
        "stack",
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.DesiredState}} {{.CurrentState}}",
        namespace,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut ids = BTreeSet::new();
    let mut running = !text.trim().is_empty();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        ids.insert(parts.next().unwrap_or_default().to_string());
        if parts.next() == Some("Running") && parts.next() != Some("Running") {
            running = false;
        }
    }
    (ids, running)
}

async fn running_tasks(namespace: &str) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ids, running) = tasks_of(namespace);
        if running {
            return ids;
        }
        assert!(Instant::now() < deadline, "{namespace}: tasks not running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A recipe-like stack: two services, a network, a volume, container and service labels,
/// an explicitly named config (recipes version theirs in the name).
fn recipe_stack() -> Files {
    let compose = format!(
        "version: \"3.8\"\nservices:\n  app:\n    image: {img}\n    labels: [\"x=1\"]\n\
         \x20   deploy:\n      labels: [\"traefik.enable=true\"]\n\
         \x20   networks: [internal]\n    volumes: [\"data:/data\"]\n    configs:\n\
         \x20     - source: conf\n        target: /etc/app.conf\n\
         \x20 worker:\n    image: {img}\n    environment: [\"MODE=worker\"]\n\
         \x20   networks: [internal]\nnetworks:\n  internal: {{}}\n\
         volumes:\n  data: {{}}\nconfigs:\n  conf:\n    name: ${{STACK_NAME}}_conf_v1\n\
         \x20   file: ./conf.txt\n",
        img = fixtures::WEBAPP_1_0_0
    );
    Files::new(&compose, &[("conf.txt", "listen 8080\n")])
}

#[tokio::test]
async fn a_redeploy_by_the_other_tool_leaves_every_task_untouched() {
    let Some(swarm) = real_swarm("fidelity-redeploy").await else {
        return;
    };
    let files = recipe_stack();

    // docker over hearth
    let ns = unique_name("fidx");
    hearth_deploy(&swarm, &files, &ns)
        .await
        .unwrap_or_else(|e| panic!("hearth: {}", chain(&e)));
    let before = running_tasks(&ns).await;
    docker_deploy(&files, &ns).unwrap_or_else(|e| panic!("docker: {e}"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (after, running) = tasks_of(&ns);
    assert_eq!(
        after, before,
        "docker stack deploy over hearth's stack replaced tasks"
    );
    assert!(running, "{ns}: a task stopped");
    remove(&swarm, &ns).await;

    // hearth over docker
    let ns = unique_name("fidy");
    docker_deploy(&files, &ns).unwrap_or_else(|e| panic!("docker: {e}"));
    let before = running_tasks(&ns).await;
    let report = hearth_deploy(&swarm, &files, &ns)
        .await
        .unwrap_or_else(|e| panic!("hearth: {}", chain(&e)));
    eprintln!("hearth over docker: {:?}", report.done);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (after, running) = tasks_of(&ns);
    assert_eq!(
        after, before,
        "hearth stack deploy over docker's stack replaced tasks"
    );
    assert!(running, "{ns}: a task stopped");
    remove(&swarm, &ns).await;
}
