//! Docker restarts (issue 7, item 3): dockerd is restarted in the middle of a workload and
//! `hearth serve` reconnects, relists and converges.
//!
//! The machine's dockerd is shared and must never be restarted, so this test runs its own: an
//! isolated dockerd with its own single-node swarm in its own network namespace
//! (`scripts/dind-netns.sh`, torn down on drop even when the test fails). `hearth serve` runs
//! as a child process against that dockerd's socket, keeps a warm app and serves CI runs with
//! `deploy`. While runs are being started and finished and the warm app is being upgraded,
//! dockerd is stopped (SIGTERM) for a few seconds and started again. Then:
//!
//! - hearth never exited (one incarnation) and answers;
//! - the warm app is Ready at the new version;
//! - every run is terminal and none left an object behind on that swarm (listed per kind by
//!   this test's label and by each run's stack namespace);
//! - the events stream was reopened: a service of the warm app removed by hand after the
//!   restart is redeployed within seconds, although the periodic resync is 5 minutes away;
//! - no error loop: once converged, the daemon logs no warning or error for 10 s.
//!
//! The warm app has no HTTP probe: hearth's probe connects to containers through the node's
//! `docker_gwbridge`, which belongs to the isolated dockerd's network namespace and is not
//! reachable from the host's, where hearth and this test run. Its readiness is the tasks'
//! Docker healthcheck (the recipe has one).
//!
//! Needs root (network namespaces, a second dockerd). Under `CI=true` a failed setup fails the
//! test; elsewhere it is skipped loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller::cli::ci::{Client, Error as ClientError};
use controller::runs::Started;
use controller::swarm::{DockerOptions, DockerSwarm, Swarm};
use crd::{Run, WarmApp, WarmAppPhase};
use hearth_tests::process::{free_addr, IsolatedDocker, ServeProcess};
use hearth_tests::support::{in_ci, run_filter, unique_name};

const POOL: &str = "hearth-test-restart";
/// How long dockerd stays down.
const DOWN_FOR: Duration = Duration::from_secs(4);

fn state(version: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: webapp\nspec:\n  recipe: webapp\n  \
         version: {version}\n  health:\n    readyTimeout: 2m\n---\napiVersion: hearth/v1\nkind: SlotPool\n\
         metadata:\n  name: {POOL}\nspec:\n  slots: 4\n  portBase: 33000\n  portsPerSlot: 10\n  \
         waitTimeout: 2m\n"
    )
}

/// Writes the state file atomically (the daemon watches its directory).
fn write_state(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn warm_app(client: &Client) -> Option<WarmApp> {
    let apps: Vec<WarmApp> = client.get("/api/v1/warmapps").await.ok()?;
    apps.into_iter().find(|a| a.metadata.name == "webapp")
}

fn ready_at(app: &WarmApp, version: &str) -> bool {
    app.status.phase == WarmAppPhase::Ready
        && app.status.observed_version.as_deref() == Some(version)
}

/// What the CI workers got back.
#[derive(Debug, Default)]
struct Outcomes {
    started: Vec<String>,
    start_refused: Vec<String>,
    finished: Vec<String>,
    finish_refused: Vec<String>,
}

/// CI jobs one after another: start with deploy, finish after a moment.
async fn worker(client: Client, stop: Arc<AtomicBool>, out: Arc<Mutex<Outcomes>>) {
    // The test process stays alive throughout: runs are closed by `finish`, not by the sweeper.
    let owner = controller::liveness::current_owner().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let body = serde_json::json!({
            "recipe": "webapp", "version": "1.0.0", "pool": POOL, "owner": owner, "deploy": true,
        });
        let run = match client.post::<Started>("/api/v1/runs", &body).await {
            Ok(s) => {
                out.lock().unwrap().started.push(s.run.clone());
                s.run
            }
            Err(e) => {
                // Docker being down is a legitimate refusal (the run ends Failed); hearth
                // being unreachable is not.
                assert!(
                    !matches!(e, ClientError::DaemonUnreachable { .. }),
                    "hearth stopped answering: {e}"
                );
                out.lock().unwrap().start_refused.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let path = format!("/api/v1/runs/{run}/finish");
        match client.post::<Run>(&path, &serde_json::json!({})).await {
            Ok(_) => out.lock().unwrap().finished.push(run),
            Err(e) => {
                assert!(
                    !matches!(e, ClientError::DaemonUnreachable { .. }),
                    "hearth stopped answering: {e}"
                );
                out.lock()
                    .unwrap()
                    .finish_refused
                    .push(format!("{run}: {e}"));
            }
        }
    }
}

/// Every object of this test on the isolated swarm, by label and by namespace.
async fn leftovers(swarm: &dyn Swarm, label: &str, stacks: &[String]) -> Vec<String> {
    let filter = run_filter(label);
    let mut out = Vec::new();
    let Ok(services) = swarm.list_services(&filter).await else {
        return vec!["(listing failed)".into()];
    };
    for s in services {
        // The warm app's stack stays; everything else must go.
        if !s.meta.name.starts_with("hw-webapp_") {
            out.push(format!("service {}", s.meta.name));
        }
    }
    for stack in stacks {
        match controller::stack::observe(swarm, stack, controller::stack::Depth::Objects).await {
            Ok(o) if o.is_empty() => {}
            Ok(o) => out.push(format!("stack {stack}: {o:?}")),
            Err(e) => out.push(format!("stack {stack}: listing failed: {e}")),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_reconnects_relists_and_converges_after_dockerd_restarts_mid_workload() {
    let label = unique_name("dockerd");
    let base = tempfile::Builder::new()
        .prefix("hdind")
        .tempdir_in("/tmp")
        .unwrap();
    let docker = match IsolatedDocker::up(&base.path().join("d")) {
        Ok(d) => d,
        Err(e) if in_ci() => panic!("CI=true and the isolated dockerd cannot start: {e}"),
        Err(e) => {
            eprintln!("\n!!!!!! SKIPPING {label}: the isolated dockerd cannot start: {e}\n");
            return;
        }
    };
    let swarm = DockerSwarm::connect(DockerOptions {
        socket: docker.socket(),
        ..DockerOptions::default()
    })
    .await
    .unwrap();

    let dir = base.path().join("hearth");
    std::fs::create_dir(&dir).unwrap();
    let state_file = dir.join("state.yml");
    write_state(&state_file, &state("1.0.0"));
    let catalogue = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue");
    let mut daemon = ServeProcess::new(
        &dir,
        free_addr(),
        vec![
            "--docker-socket".into(),
            docker.socket().into(),
            "--state".into(),
            state_file.clone().into(),
            "--catalogue".into(),
            catalogue.into(),
            "--resync".into(),
            "5m".into(),
            "--base-domain".into(),
            "hearth.test".into(),
            "--label".into(),
            "hearth.test=1".into(),
            "--label".into(),
            format!("hearth.test.run={label}").into(),
        ],
    );
    daemon.spawn();
    daemon.ready(Duration::from_secs(30)).await;
    let client = daemon.client();
    let t0 = Instant::now();
    loop {
        let app = warm_app(&client).await;
        if app.as_ref().is_some_and(|a| ready_at(a, "1.0.0")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the warm app is not Ready at 1.0.0: {:?}\n{}",
            app.map(|a| a.status),
            daemon.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("warm app Ready after {:?}", t0.elapsed());

    // The workload, then an upgrade, then dockerd goes away in the middle of both.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let workers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(worker(daemon.client(), stop.clone(), outcomes.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    write_state(&state_file, &state("1.1.0"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = Instant::now();
    docker.stop().unwrap();
    println!("dockerd stopped after {:?}", stopped.elapsed());
    tokio::time::sleep(DOWN_FOR).await;
    let starting = Instant::now();
    docker.start().unwrap();
    println!(
        "dockerd answering again {:?} after the start; down {:?} in all",
        starting.elapsed(),
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let restarted = Instant::now();

    // Convergence.
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let app = warm_app(&client).await;
        let runs: Vec<Run> = client.get("/api/v1/runs").await.unwrap();
        let open: Vec<String> = runs
            .iter()
            .filter(|r| !r.status.phase.is_terminal())
            .map(|r| format!("{} {:?}", r.metadata.name, r.status.phase))
            .collect();
        let stacks: Vec<String> = runs
            .iter()
            .filter_map(|r| r.status.stack_name.clone())
            .collect();
        let left = leftovers(&swarm, &label, &stacks).await;
        let app_ok = app.as_ref().is_some_and(|a| ready_at(a, "1.1.0"));
        if app_ok && open.is_empty() && left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "not converged: warm app {:?}, open runs {open:?}, leftovers {left:?}\n{}",
            app.map(|a| a.status),
            daemon.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = restarted.elapsed();
    assert_eq!(daemon.incarnation(), 1);

    // The events stream was reopened: drift is repaired without waiting for the 5 min resync.
    let service = "hw-webapp_app";
    let out = Command::new("/usr/bin/docker")
        .arg("-H")
        .arg(format!("unix://{}", docker.socket().display()))
        .args(["service", "rm", service])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed = Instant::now();
    hearth_tests::support::eventually(
        "the removed warm-app service is redeployed",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let services = swarm.list_services(&run_filter(&label)).await.ok()?;
            services
                .iter()
                .any(|s| s.meta.name == service)
                .then_some(())
        },
    )
    .await;
    let repaired = removed.elapsed();
    hearth_tests::support::eventually(
        "the warm app is Ready again after the repair",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { warm_app(&client).await.filter(|a| ready_at(a, "1.1.0")) },
    )
    .await;

    // No error loop: a quiet window without warnings or errors.
    let log = daemon.log_path();
    let before = std::fs::read_to_string(&log).unwrap().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let quiet: Vec<&str> = text[before..]
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();

    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    println!(
        "MEASURE docker_restart_real runs_started={} starts_refused={} finished={} finishes_refused={} \
         converged_after_restart_s={:.1} drift_repaired_s={:.1}",
        o.started.len(),
        o.start_refused.len(),
        o.finished.len(),
        o.finish_refused.len(),
        converged.as_secs_f64(),
        repaired.as_secs_f64()
    );
    for r in o.start_refused.iter().chain(&o.finish_refused) {
        println!("refused while docker was down: {r}");
    }
    assert!(
        quiet.is_empty(),
        "warnings or errors after convergence (an error loop?):\n{}",
        quiet.join("\n")
    );
    assert!(!o.started.is_empty(), "no run started at all");
    assert!(
        repaired < Duration::from_secs(20),
        "repair took {repaired:?}: the events stream was not reopened?"
    );
    drop(daemon);
    drop(docker);
}
