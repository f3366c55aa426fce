//! WarmApps on the real swarm through the daemon (`serve::start` in-process, temp data dir and
//! state file): two apps Ready; a service removed by hand is repaired; a version bump upgrades;
//! the broken fixture version is rolled back while the old version keeps serving; a malformed
//! state file changes nothing; a restarted hearth makes no write calls for healthy apps.
//!
//! Needs `scripts/testbed.sh`. Under `CI=true` an unreachable Docker fails these tests. Every
//! object carries `hearth.test=1` and `hearth.test.run=<unique>`; the daemon under test only
//! tears down stacks carrying both, and each test removes its stacks at the end.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::runtime::Shutdown;
use controller::serve::{self, Running};
use controller::stack::{teardown, TeardownOptions};
use controller::swarm::{DockerSwarm, LabelFilter, Swarm, TaskState};
use crd::condition::{find_condition, types};
use crd::{ConditionStatus, WarmApp, WarmAppPhase};
use hearth_tests::counting::Counting;
use hearth_tests::real_serve::{self, write_state};
use hearth_tests::served::served_versions;
use hearth_tests::support::{eventually, real_swarm};
use state::history::{reason, Query};

static NAMES: AtomicUsize = AtomicUsize::new(0);

/// A short unique app name (the stack is `hw-<name>` / `hp-<name>`).
fn app_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t-{test}-{:x}{:x}{}",
        std::process::id() & 0xfff,
        nanos & 0xfff,
        NAMES.fetch_add(1, Ordering::Relaxed)
    )
}

fn webapp_doc(name: &str, version: &str, timeout: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: webapp\n  version: {version}\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: {timeout}\n  env:\n    REPLICAS: \"1\"\n"
    )
}

fn sso_doc(name: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: sso\n  version: 1.0.0\n  provider: true\n  health:\n    tcp:\n      service: idp\n      port: 8080\n    readyTimeout: 2m\n"
    )
}

async fn start(dir: &Path, swarm: Arc<Counting>, run: &str) -> (Running, Shutdown) {
    let options = real_serve::options(dir, run);
    let prober = real_serve::prober(swarm.inner());
    // After a restart in the same process, the previous instance's last store clone may be
    // dropped a moment after `wait()` returns (a new process in production): retry a locked
    // store for up to 10 s.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let shutdown = Shutdown::new();
        match serve::start(
            options.clone(),
            swarm.clone(),
            prober.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(running) => return (running, shutdown),
            Err(e) if Instant::now() < until && format!("{e:?}").contains("StoreLocked") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("hearth serve starts: {e:?}"),
        }
    }
}

async fn wait_app(
    running: &Running,
    name: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&WarmApp) -> bool,
) -> WarmApp {
    real_serve::wait_app(running, name, what, within, pred).await
}

fn ready_at(version: &str) -> impl Fn(&WarmApp) -> bool + '_ {
    move |a: &WarmApp| {
        a.status.phase == WarmAppPhase::Ready
            && a.status.observed_version.as_deref() == Some(version)
    }
}

async fn remove_stacks(swarm: &DockerSwarm, stacks: &[String]) {
    for s in stacks {
        teardown(swarm, s, &TeardownOptions::forced())
            .await
            .unwrap_or_else(|e| panic!("cleanup of {s} failed: {e}"));
    }
}

fn history_reasons(running: &Running, name: &str) -> Vec<String> {
    running
        .store
        .history(&Query::newest(50).about(state::history::ObjectRef::new(crd::Kind::WarmApp, name)))
        .expect("history")
        .into_iter()
        .map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_warm_apps_become_ready_a_bad_file_changes_nothing_and_a_restart_writes_nothing() {
    let Some(docker) = real_swarm("warmapp two apps").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (web, sso) = (app_name("a"), app_name("p"));
    let run = format!("warm-{web}");
    let stacks = vec![format!("hw-{web}"), format!("hp-{sso}")];
    let good = format!("{}---\n{}", webapp_doc(&web, "1.1.0", "90s"), sso_doc(&sso));
    write_state(&dir.path().join("state.yml"), &good);

    // 1. Two warm apps → both Ready.
    let swarm = Arc::new(Counting::new(docker.clone()));
    let started = Instant::now();
    let (running, shutdown) = start(dir.path(), swarm.clone(), &run).await;
    let a = wait_app(
        &running,
        &web,
        "Ready at 1.1.0",
        Duration::from_secs(120),
        ready_at("1.1.0"),
    )
    .await;
    let b = wait_app(
        &running,
        &sso,
        "Ready at 1.0.0",
        Duration::from_secs(120),
        ready_at("1.0.0"),
    )
    .await;
    eprintln!("timing: two warm apps Ready after {:?}", started.elapsed());
    assert_eq!(a.status.stack_name.as_deref(), Some(stacks[0].as_str()));
    assert_eq!(b.status.stack_name.as_deref(), Some(stacks[1].as_str()));
    assert_eq!(
        served_versions(&docker, &stacks[0]).await,
        BTreeSet::from(["1.1.0".to_string()])
    );
    for app in [&a, &b] {
        let ready = find_condition(&app.status.conditions, types::READY).expect("Ready condition");
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(app.status.observed_generation, app.metadata.generation);
    }
    assert!(history_reasons(&running, &web).contains(&reason::DEPLOYED.to_string()));
    let text = running.metrics.encode().expect("metrics");
    assert!(
        text.contains(&format!("hearth_warm_app_ready{{app=\"{web}\"}} 1")),
        "{text}"
    );
    // `hearth get warmapps` goes through the daemon's endpoint.
    let addr = running.http_addr.expect("endpoint").to_string();
    let mut out = Vec::new();
    let get = controller::cli::objects::GetCommand::Warmapps(controller::cli::objects::GetArgs {
        name: None,
        output: controller::cli::objects::Output::Table,
        server: controller::cli::ci::ServerArg {
            server: addr.parse().expect("addr"),
            token_file: None,
            data_dir: Some(dir.path().join("not-used")),
        },
    });
    controller::cli::objects::get(&get, &mut out)
        .await
        .expect("hearth get warmapps");
    let table = String::from_utf8(out).expect("utf-8");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(web.as_str()) && l.contains("1.1.0") && l.contains("Ready")),
        "{table}"
    );
    assert!(
        !dir.path().join("not-used").exists(),
        "answered by the daemon, not the store"
    );

    // 2. A malformed state file → rejected with its location; nothing changes.
    let bad = format!(
        "{}---\n{}",
        webapp_doc(&web, "2.0.0", "90s").replace("port: 8080", "port: eighty"),
        sso_doc(&sso)
    );
    swarm.reset();
    let before = running.store.revision();
    write_state(&dir.path().join("state.yml"), &bad);
    let store = running.store.clone();
    let rejected = eventually(
        "the rejection in the history",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let entries = store
                .history(&Query::newest(5).reason(reason::REJECTED))
                .expect("history");
            async move { entries.into_iter().next() }
        },
    )
    .await;
    let problems = rejected.details.to_string();
    assert!(problems.contains("state.yml:11:"), "{problems}");
    assert!(problems.contains("spec.health.http.port"), "{problems}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now_a = running.store.get::<WarmApp>(&web).expect("app");
    assert_eq!(now_a.spec.version, "1.1.0");
    assert_eq!(now_a.metadata.generation, a.metadata.generation);
    assert_eq!(
        swarm.writes(),
        0,
        "a rejected file writes nothing to docker"
    );
    assert!(running.store.revision() >= before);
    let text = running.metrics.encode().expect("metrics");
    assert!(
        text.contains("hearth_state_file_rejections_total 1"),
        "{text}"
    );

    // 3. Restart → no write calls for apps that are already healthy.
    write_state(&dir.path().join("state.yml"), &good);
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.stop_gracefully();
    running.wait().await;
    // The store is released when its last clone goes (a new process in production).
    drop(store);
    let swarm2 = Arc::new(Counting::new(docker.clone()));
    let restarted = Instant::now();
    let (running, shutdown) = start(dir.path(), swarm2.clone(), &run).await;
    let handle = running.handle.clone();
    eventually(
        "both apps reconciled after the restart",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let done = handle.reconciles_started() >= 2
                && handle.active_workers() == 0
                && handle.queue_depth() == 0;
            async move { done.then_some(()) }
        },
    )
    .await;
    // Give events and requeues a moment to show any write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "timing: restart reconciled both apps in {:?} with {} calls",
        restarted.elapsed(),
        swarm2.calls()
    );
    assert_eq!(swarm2.writes(), 0, "a restart makes no write calls");
    let again = running.store.get::<WarmApp>(&web).expect("app");
    assert_eq!(again.status.phase, WarmAppPhase::Ready);

    shutdown.stop_gracefully();
    running.wait().await;
    remove_stacks(&docker, &stacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_upgrades_are_gated_and_a_broken_version_rolls_back_while_the_old_serves()
{
    let Some(docker) = real_swarm("warmapp upgrade and rollback").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let web = app_name("u");
    let run = format!("warm-{web}");
    let stack = format!("hw-{web}");
    let state = dir.path().join("state.yml");
    write_state(&state, &webapp_doc(&web, "1.0.0", "45s"));
    let swarm = Arc::new(Counting::new(docker.clone()));
    let (running, shutdown) = start(dir.path(), swarm.clone(), &run).await;
    wait_app(
        &running,
        &web,
        "Ready at 1.0.0",
        Duration::from_secs(120),
        ready_at("1.0.0"),
    )
    .await;

    // A service removed by hand → repaired.
    let services = docker
        .list_services(&LabelFilter::eq(
            "com.docker.stack.namespace",
            stack.as_str(),
        ))
        .await
        .expect("list");
    assert_eq!(services.len(), 1);
    let t = Instant::now();
    docker
        .remove_service(&services[0].meta.id)
        .await
        .expect("remove by hand");
    let store = running.store.clone();
    let name = web.clone();
    eventually(
        "the drift noticed",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let app = store.get::<WarmApp>(&name).expect("app");
            async move { (app.status.phase != WarmAppPhase::Ready).then_some(()) }
        },
    )
    .await;
    wait_app(
        &running,
        &web,
        "Ready again after repair",
        Duration::from_secs(90),
        ready_at("1.0.0"),
    )
    .await;
    eprintln!(
        "timing: removed service repaired and Ready in {:?}",
        t.elapsed()
    );
    assert!(history_reasons(&running, &web).contains(&"Repaired".to_string()));

    // Version bumped in the file → upgraded and Ready at the new version.
    let t = Instant::now();
    write_state(&state, &webapp_doc(&web, "2.0.0", "45s"));
    let app = wait_app(
        &running,
        &web,
        "Ready at 2.0.0",
        Duration::from_secs(120),
        ready_at("2.0.0"),
    )
    .await;
    eprintln!("timing: upgrade 1.0.0 -> 2.0.0 Ready in {:?}", t.elapsed());
    assert_eq!(app.status.previous_known_good.as_deref(), Some("1.0.0"));
    let served = eventually(
        "only 2.0.0 serving",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let d = docker.clone();
            let s = stack.clone();
            async move {
                let v = served_versions(&d, &s).await;
                (v == BTreeSet::from(["2.0.0".to_string()])).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(served.len(), 1);

    // Bumped to the broken version → rolled back, 2.0.0 keeps serving throughout.
    let t = Instant::now();
    write_state(&state, &webapp_doc(&web, "2.1.0-broken", "45s"));
    let mut samples = 0;
    let rolled_back = loop {
        let app = running.store.get::<WarmApp>(&web).expect("app");
        let held = app.status.phase == WarmAppPhase::Degraded
            && app.status.observed_version.as_deref() == Some("2.0.0")
            && find_condition(&app.status.conditions, types::DEGRADED)
                .is_some_and(|c| c.reason == "UpgradeFailed" && c.status == ConditionStatus::True);
        if held {
            break app;
        }
        let served = served_versions(&docker, &stack).await;
        assert!(
            served.contains("2.0.0"),
            "the old version stopped serving during the upgrade: {served:?} ({:?})",
            app.status
        );
        samples += 1;
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no rollback within 180 s: {:?}",
            app.status
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "timing: broken version rolled back in {:?} ({samples} serving samples, all 2.0.0)",
        t.elapsed()
    );
    assert_eq!(rolled_back.spec.version, "2.1.0-broken");
    let err = rolled_back.status.last_error.clone().unwrap_or_default();
    assert!(err.starts_with("upgrade to 2.1.0-broken failed"), "{err}");
    assert!(err.contains("rolling back to 2.0.0"), "{err}");
    let ready = find_condition(&rolled_back.status.conditions, types::READY).expect("ready");
    assert_eq!(ready.status, ConditionStatus::True, "it still serves");
    assert!(history_reasons(&running, &web).contains(&reason::ROLLED_BACK.to_string()));
    let served = eventually(
        "only 2.0.0 serving after the rollback",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let d = docker.clone();
            let s = stack.clone();
            async move {
                let v = served_versions(&d, &s).await;
                (v == BTreeSet::from(["2.0.0".to_string()])).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(served.len(), 1);
    let tasks = docker
        .list_tasks(&LabelFilter::eq(
            "com.docker.stack.namespace",
            stack.as_str(),
        ))
        .await
        .expect("tasks");
    assert!(tasks.iter().any(|t| t.state == TaskState::Running));

    // Pruning the app from the file tears its stack down, verified.
    let t = Instant::now();
    write_state(
        &state,
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n  slots: 1\n  portBase: 20000\n  portsPerSlot: 10\n  waitTimeout: 10m\n",
    );
    let store = running.store.clone();
    let name = web.clone();
    eventually(
        "the TornDown entry",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let entries = store
                .history(
                    &Query::newest(5)
                        .about(state::history::ObjectRef::new(crd::Kind::WarmApp, &name)),
                )
                .expect("history");
            async move { entries.into_iter().find(|e| e.reason == reason::TORN_DOWN) }
        },
    )
    .await;
    eprintln!("timing: pruned app torn down in {:?}", t.elapsed());
    let left = docker
        .list_services(&LabelFilter::eq(
            "com.docker.stack.namespace",
            stack.as_str(),
        ))
        .await
        .expect("list");
    assert!(left.is_empty());
    shutdown.stop_gracefully();
    running.wait().await;
    remove_stacks(&docker, &[stack]).await;
}
