//! `hearth serve` in-process against the machine's real Docker engine, as the real-swarm
//! scenario tests start it: a temp directory for the state file and data, an ephemeral port,
//! the example catalogue, every object labelled `hearth.test=1` plus the test's run label, and
//! image pruning limited to test images (never others' images on the shared machine).
//! Also the warm-app waits those tests share, and what Docker runs for a warm app (its app
//! service's image, ID and spec version).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use controller::runtime::Shutdown;
use controller::serve::{self, Options, Running};
use controller::swarm::{DockerSwarm, Labels, Swarm};
use controller::warmapp::probe::GatewayProber;
use crd::names::BaseDomain;
use crd::{WarmApp, WarmAppPhase};

use crate::daemon::example_catalogue;
use crate::support::{eventually, RUN_LABEL, TEST_LABEL};

/// The Docker socket the tests use: `HEARTH_DOCKER_SOCKET`, else the machine's.
pub fn docker_socket() -> PathBuf {
    std::env::var_os("HEARTH_DOCKER_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// The serve options of a real-swarm test: state file `dir/state.yml` (pruning), data in
/// `dir/data`, the example catalogue, resync every 5 minutes, an ephemeral loopback port, base
/// domain `hearth.test`, labels `hearth.test=1` and the run label `run`. Change fields as a
/// test needs.
pub fn options(dir: &Path, run: &str) -> Options {
    Options {
        state_file: Some(dir.join("state.yml")),
        prune: true,
        data_dir: dir.join("data"),
        catalogue: example_catalogue(),
        docker_socket: docker_socket(),
        resync: Duration::from_secs(300),
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        base_domain: BaseDomain::parse("hearth.test").expect("the test base domain is valid"),
        extra_labels: Labels::from([
            (TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string()),
            (RUN_LABEL.to_string(), run.to_string()),
        ]),
        token_file: None,
        access: Default::default(),
        // never prune images of others on the shared test machine
        nightly_prune_labels: Labels::from([(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())]),
        node_endpoints: Default::default(),
    }
}

/// The warm-app prober serve uses, reaching containers through `docker`'s gateway bridge.
pub fn prober(docker: &DockerSwarm) -> Arc<GatewayProber> {
    Arc::new(GatewayProber::new(
        Arc::new(docker.clone()),
        Duration::from_secs(3),
    ))
}

/// Starts `hearth serve` with `options` on `swarm` (the real engine, or a wrapper of it),
/// probing through `docker`.
pub async fn start(
    options: Options,
    swarm: Arc<dyn Swarm>,
    docker: &DockerSwarm,
) -> (Running, Shutdown) {
    let shutdown = Shutdown::new();
    let running = serve::start(options, swarm, prober(docker), shutdown.clone())
        .await
        .expect("hearth serve starts");
    (running, shutdown)
}

/// Replaces the state file by rename, as editors do.
pub fn write_state(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write state file");
    std::fs::rename(&tmp, path).expect("rename state file");
}

/// Waits up to `within` (polling every 250 ms) for warm app `name` to satisfy `pred`; `what`
/// names the wait in the failure.
pub async fn wait_app(
    running: &Running,
    name: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&WarmApp) -> bool,
) -> WarmApp {
    let store = running.store.clone();
    eventually(
        &format!("{name}: {what}"),
        within,
        Duration::from_millis(250),
        || {
            let hit = store
                .get_opt::<WarmApp>(name)
                .expect("store read")
                .filter(|a| pred(a));
            async move { hit }
        },
    )
    .await
}

/// Ready, serving `version`, and declaring it.
pub fn ready_at(version: &str) -> impl Fn(&WarmApp) -> bool + '_ {
    move |a: &WarmApp| {
        a.status.phase == WarmAppPhase::Ready
            && a.status.observed_version.as_deref() == Some(version)
            && a.spec.version == version
    }
}

/// `docker service inspect {stack}_app --format FORMAT`, trimmed.
///
/// # Panics
/// When the service cannot be inspected.
pub fn app_service(stack: &str, format: &str) -> String {
    let out = std::process::Command::new("/usr/bin/docker")
        .args([
            "service",
            "inspect",
            &format!("{stack}_app"),
            "--format",
            format,
        ])
        .output()
        .expect("docker service inspect runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image of `stack`'s app service as Docker has it.
pub fn app_image(stack: &str) -> String {
    app_service(stack, "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
}

/// The ID and spec version (`Version.Index`) of `stack`'s app service: both stay the same as
/// long as nothing writes the service.
pub fn app_service_version(stack: &str) -> String {
    app_service(stack, "{{.ID}} {{.Version.Index}}")
}

/// Waits (up to 60 s) until no rolling update of `stack`'s app service is in flight: Swarm
/// writes the service (its `Version.Index`) when an update's monitor period ends, so a test
/// comparing versions across a promotion waits for this first.
///
/// # Panics
/// When the update does not end.
pub async fn wait_app_service_settled(stack: &str) {
    eventually(
        &format!("{stack}_app: no update in flight"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let state = app_service(stack, "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}");
            let done = matches!(
                state.as_str(),
                "" | "completed" | "rollback_completed" | "paused" | "rollback_paused"
            );
            async move { done.then_some(()) }
        },
    )
    .await;
}

/// Waits up to 45 s until the daemon's git recipe `recipe` has fetched version `tag`.
pub async fn wait_fetched(running: &Running, recipe: &str, tag: &str) {
    let store = running.store.clone();
    eventually(
        &format!("{recipe}: tag {tag} fetched"),
        Duration::from_secs(45),
        Duration::from_millis(250),
        || {
            let hit = store
                .get::<crd::Recipe>(recipe)
                .expect("store read")
                .status
                .versions
                .iter()
                .any(|v| v.version == tag)
                .then_some(());
            async move { hit }
        },
    )
    .await
}
