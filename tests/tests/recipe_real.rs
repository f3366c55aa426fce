//! A git recipe end to end on the real swarm, through the daemon (`serve::start` in-process):
//! a state file declares a `Recipe` on a `file://` clone of the test bed's fixture recipe
//! repository and a `refresh: latest` WarmApp on it. The app comes up Ready on the newest tag
//! (rendered at the tag from `.env.sample`, its overlay, `abra.sh`; the ecosystem's version
//! label on the `app` service; the versioned secret generated). A new tag committed to the
//! repository is deployed by `hearth sweep --now`, the generated secret kept; a broken new tag
//! is rolled back while the app keeps serving (probed every second). Then the repository is
//! made unreachable: the fetch fails, the app stays Ready on its last content, and the error
//! shows in `hearth describe recipe`, the history and a metric. Secret values: the generated
//! value is read from the container and searched for in the daemon's log, history, API
//! answers and metrics.
//!
//! Needs `scripts/testbed.sh` (fixture images and the fixture recipe repository). Under
//! `CI=true` an unreachable Docker or a missing repository fails this test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::runtime::Shutdown;
use controller::serve::Running;
use controller::stack::{teardown, TeardownOptions};
use controller::swarm::{DockerSwarm, LabelFilter, Swarm};
use crd::WarmApp;
use hearth_tests::gitrecipe::{fixture_recipe, fixture_recipe_present, publish};
use hearth_tests::real_serve::{self, ready_at, wait_app};
use hearth_tests::served::served_versions;
use hearth_tests::support::{eventually, real_swarm, short_name};
use state::history::{ObjectRef, Query};

/// Every log line of the in-process daemon (debug level), to search for secret values.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn state(name: &str, url: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: Recipe\nmetadata:\n  name: {name}\nspec:\n  git:\n    url: {url}\n  interval: 10s\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: {name}\n  version: 1.1.0+1.1.0\n  refresh: latest\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: 30s\n"
    )
}

async fn start(dir: &Path, docker: DockerSwarm, run: &str) -> (Running, Shutdown) {
    real_serve::start(
        real_serve::options(dir, run),
        Arc::new(docker.clone()),
        &docker,
    )
    .await
}

async fn sweep_now(running: &Running) -> serde_json::Value {
    let mut out = Vec::new();
    let mut said = Vec::new();
    controller::cli::ci::sweep(
        &controller::cli::ci::SweepArgs {
            dry_run: false,
            now: true,
            progress: controller::cli::progress::Mode::Plain,
            server: controller::cli::ci::ServerArg {
                server: running.http_addr.unwrap(),
                token_file: running.token_file.clone(),
                data_dir: None,
            },
        },
        &mut out,
        &mut said,
    )
    .await
    .unwrap();
    let said = String::from_utf8(said).unwrap();
    assert!(
        said.contains("\n  fetch "),
        "the fetch step is reported: {said}"
    );
    serde_json::from_slice(&out).unwrap()
}

/// The generated secret of `stack` (its ID), if it exists.
async fn secret_id(docker: &DockerSwarm, name: &str) -> Option<String> {
    docker
        .list_secrets(&LabelFilter::all())
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.meta.name == name)
        .map(|s| s.meta.id)
}

/// What the app's running container reads at /run/secrets/api_key.
fn secret_value(stack: &str) -> String {
    let out = Command::new("/usr/bin/docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={stack}_app"),
            "--filter",
            "status=running",
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let out = Command::new("/usr/bin/docker")
        .args(["exec", &id, "cat", "/run/secrets/api_key"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_recipe_comes_up_on_its_newest_tag_advances_rolls_back_and_survives_its_url() {
    let Some(docker) = real_swarm("recipe_real").await else {
        return;
    };
    let base = fixture_recipe();
    if !fixture_recipe_present("recipe_real") {
        return;
    }
    let log = LogBuffer::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(log.clone())
        .with_ansi(false)
        .init();
    let t0 = Instant::now();
    // A short, unique recipe name (it is part of the stack, secret and config names).
    let name = short_name("rc");
    let stack = format!("hw-{name}");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(&base)
        .arg(&repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("file://{}", repo.display());
    std::fs::write(dir.path().join("state.yml"), state(&name, &url)).unwrap();
    let (running, shutdown) = start(dir.path(), docker.clone(), &name).await;
    let client = controller::cli::ci::Client::new(running.http_addr.unwrap()).with_token(Some(
        controller::access::admin_token::read(running.token_file.as_ref().unwrap()).unwrap(),
    ));

    // 1. Ready on the newest tag, rendered as the recipe means it.
    wait_app(
        &running,
        &name,
        "Ready at the newest tag 1.1.0+1.1.0",
        Duration::from_secs(120),
        ready_at("1.1.0+1.1.0"),
    )
    .await;
    let recipe: crd::Recipe = client
        .get(&format!("/api/v1/recipes/{name}"))
        .await
        .unwrap();
    let versions: Vec<_> = recipe
        .status
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions, ["1.0.0+1.0.0", "1.1.0+1.1.0"]);
    assert_eq!(
        served_versions(&docker, &stack).await,
        ["1.1.0".to_string()].into()
    );
    let services = docker
        .list_services(&LabelFilter::eq("com.docker.stack.namespace", &stack))
        .await
        .unwrap();
    let app = services
        .iter()
        .find(|s| s.meta.name == format!("{stack}_app"))
        .unwrap();
    assert_eq!(
        app.meta
            .labels
            .get(&format!("coop-cloud.{stack}.version"))
            .map(String::as_str),
        Some("1.1.0+1.1.0")
    );
    let secret_name = format!("{stack}_api_key_v1");
    let secret = secret_id(&docker, &secret_name)
        .await
        .expect("secret generated");
    let value = secret_value(&stack);
    assert_eq!(value.len(), 24, "length=24 from the .env.sample modifier");
    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
    eprintln!(
        "timing: declared to Ready at 1.1.0+1.1.0 in {:?}",
        t0.elapsed()
    );

    // 2. A new tag: `hearth sweep --now` fetches it and the refresh deploys it.
    publish(&repo, "2.0.0+2.0.0", "2.0.0");
    let t = Instant::now();
    let report = sweep_now(&running).await;
    assert_eq!(report["ok"], true, "{report}");
    wait_app(
        &running,
        &name,
        "Ready at the new tag 2.0.0+2.0.0",
        Duration::from_secs(120),
        ready_at("2.0.0+2.0.0"),
    )
    .await;
    // Start-first: the old task serves until the new one is healthy, then stops.
    let d = docker.clone();
    let s = stack.clone();
    eventually(
        "only 2.0.0 serves",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let (d, s) = (d.clone(), s.clone());
            async move {
                (served_versions(&d, &s).await == ["2.0.0".to_string()].into()).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        secret_id(&docker, &secret_name).await.as_deref(),
        Some(secret.as_str()),
        "the generated secret is kept across upgrades"
    );
    assert_eq!(secret_value(&stack), value);
    eprintln!(
        "timing: new tag to Ready at 2.0.0+2.0.0 in {:?}",
        t.elapsed()
    );

    // 3. A broken tag: rolled back, and the app serves throughout.
    publish(&repo, "2.1.0+2.1.0", "2.1.0-broken");
    let t = Instant::now();
    let report = sweep_now(&running).await;
    assert!(
        report["steps"][2]["details"]["advanced"][0]
            .as_str()
            .unwrap_or("")
            .ends_with("-> 2.1.0+2.1.0"),
        "{report}"
    );
    let store = running.store.clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut probes = 0;
    loop {
        let served = served_versions(&docker, &stack).await;
        assert!(
            !served.is_empty(),
            "the app stopped serving during the broken upgrade"
        );
        probes += 1;
        let a = store.get::<WarmApp>(&name).unwrap();
        if probes > 3 && ready_at("2.0.0+2.0.0")(&a) {
            break;
        }
        assert!(Instant::now() < deadline, "not rolled back: {:?}", a.status);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rolled: Vec<_> = running
        .store
        .history(&Query::newest(50).about(ObjectRef::new(crd::Kind::WarmApp, &name)))
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(
        rolled.iter().any(|r| r.contains("RolledBack")),
        "{rolled:?}"
    );
    eprintln!(
        "timing: broken tag rolled back in {:?} ({probes} probes, all served)",
        t.elapsed()
    );

    // 4. The URL made unreachable: the next fetch (10 s interval) fails, the app stays Ready.
    std::fs::rename(&repo, dir.path().join("gone")).unwrap();
    let r = eventually(
        "the fetch failure shows in the recipe's status",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let r = store.get::<crd::Recipe>(&name).unwrap();
            async move { r.status.last_fetch_error.is_some().then_some(r) }
        },
    )
    .await;
    assert!(r
        .status
        .last_fetch_error
        .unwrap()
        .contains("git fetch failed"));
    assert_eq!(
        r.status.newest.as_deref(),
        Some("2.1.0+2.1.0"),
        "last good content"
    );
    let a = store.get::<WarmApp>(&name).unwrap();
    assert!(ready_at("2.0.0+2.0.0")(&a), "{:?}", a.status);
    let mut described = Vec::new();
    controller::cli::objects::describe(
        &controller::cli::objects::ObjectArgs {
            kind: "recipe".into(),
            name: name.clone(),
            output: controller::cli::objects::Output::Table,
            server: controller::cli::ci::ServerArg {
                server: running.http_addr.unwrap(),
                token_file: running.token_file.clone(),
                data_dir: None,
            },
        },
        &mut described,
    )
    .await
    .unwrap();
    let described = String::from_utf8(described).unwrap();
    assert!(
        described.contains("Fetch error:        git fetch failed"),
        "{described}"
    );
    assert!(described.contains("RecipeFetchFailed"), "{described}");
    let metrics = running.metrics.encode().unwrap();
    assert!(
        metrics.contains(&format!(
            "hearth_recipe_fetch_failing{{recipe=\"{name}\"}} 1"
        )),
        "{metrics}"
    );

    // 5. The generated value is nowhere hearth writes: history, API answers, metrics.
    let history =
        serde_json::to_string(&running.store.history(&Query::newest(10_000)).unwrap()).unwrap();
    assert!(!history.contains(&value), "secret value in the history");
    assert!(!metrics.contains(&value), "secret value in the metrics");
    for path in [
        "/api/v1/warmapps".to_string(),
        format!("/api/v1/warmapps/{name}"),
        "/api/v1/recipes".to_string(),
        format!("/api/v1/recipes/{name}"),
        "/api/v1/history?limit=1000".to_string(),
    ] {
        let answer: serde_json::Value = client.get(&path).await.unwrap();
        assert!(
            !answer.to_string().contains(&value),
            "secret value in {path}"
        );
    }
    assert!(!described.contains(&value));
    let logged = String::from_utf8_lossy(&log.0.lock().unwrap()).to_string();
    assert!(logged.contains("recipe fetched"), "the log was captured");
    assert!(!logged.contains(&value), "secret value in the daemon's log");

    shutdown.stop_gracefully();
    running.wait().await;
    teardown(&docker, &stack, &TeardownOptions::forced())
        .await
        .unwrap();
    assert_eq!(
        secret_id(&docker, &secret_name).await,
        None,
        "the generated secret goes with its stack"
    );
    eprintln!("timing: whole test {:?}", t0.elapsed());
}
