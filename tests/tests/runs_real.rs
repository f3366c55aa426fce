//! Runs on the real swarm: a SIGKILLed CI job's run is swept and its slot freed while a foreign
//! stack stays; a run with a per-run and a shared dep finishes with nothing left; a killed job's
//! run is recorded swept once, never failed first (issue 14, item 9).
//!
//! Needs `scripts/testbed.sh` (dockerd, an active single-node swarm, fixture images). Under
//! `CI=true` an unreachable Docker fails these tests; elsewhere they print a loud SKIP. Every
//! object carries `hearth.test=1` and this test's `hearth.test.run` label; the sweeper is
//! scoped to that label so other tests sharing the daemon are never looked at.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::catalogue::DirCatalogue;
use controller::liveness::{self, ProcLiveness};
use controller::runs::{self, Runs, StartRequest};
use controller::stack::{self, Depth};
use controller::swarm::{LabelFilter, Swarm};
use controller::sweeper::{self, Sweeper};
use crd::names::BaseDomain;
use crd::{
    DepProvider, DepProviderSpec, Run, RunPhase, SlotPool, SlotPoolSpec, TierOutcome, TierResult,
    WarmApp, WarmAppPhase,
};
use hearth_tests::support::{real_swarm, unique_name, RUN_LABEL, TEST_LABEL};
use state::{Store, SystemClock};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `app`: a service with a volume, a network, a secret and a config; `db`: a service with a
/// volume. Fixture image, dnsrr (no ip_vs here), short grace period.
fn catalogue(dir: &Path) -> Arc<DirCatalogue> {
    for (recipe, compose) in [
        (
            "app",
            r#"version: "3.8"
services:
  web:
    image: hearth-fixture/webapp:${VERSION}
    command: ["/bin/serve"]
    volumes: [data:/data]
    networks: [net]
    secrets: [pw]
    configs: [conf]
    stop_grace_period: 1s
    deploy: { endpoint_mode: dnsrr }
volumes: { data: {} }
networks: { net: {} }
secrets: { pw: { file: ./pw.txt } }
configs: { conf: { file: ./conf.txt } }
"#,
        ),
        (
            "db",
            r#"version: "3.8"
services:
  db:
    image: hearth-fixture/webapp:${VERSION}
    command: ["/bin/serve"]
    volumes: [data:/data]
    stop_grace_period: 1s
    deploy: { endpoint_mode: dnsrr }
volumes: { data: {} }
"#,
        ),
    ] {
        write(
            &dir.join(recipe).join("recipe.yml"),
            "composeFiles: [compose.yml]\nversions: [1.0.0]\n",
        );
        write(&dir.join(recipe).join("compose.yml"), compose);
    }
    write(&dir.join("app/pw.txt"), "secret\n");
    write(&dir.join("app/conf.txt"), "conf\n");
    Arc::new(DirCatalogue::open(dir).unwrap())
}

struct Bed {
    swarm: Arc<dyn Swarm>,
    store: Store,
    runs: Runs,
    sweeper: Sweeper,
    scope: String,
    _dir: tempfile::TempDir,
}

async fn bed(test: &str) -> Option<Bed> {
    let swarm: Arc<dyn Swarm> = Arc::new(real_swarm(test).await?);
    let scope = unique_name(test);
    let store = Store::in_memory().await.unwrap();
    store
        .create(&SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots: 1,
                port_base: 21000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(300),
                tiers: Vec::new(),
            },
        ))
        .await
        .unwrap();
    store
        .create(&DepProvider::new(
            "db",
            DepProviderSpec::PerRun {
                recipe: "db".into(),
                version: "1.0.0".into(),
                env: Default::default(),
            },
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = runs::Config::new(BaseDomain::parse("ci.test").unwrap());
    config
        .extra_labels
        .insert(TEST_LABEL.0.into(), TEST_LABEL.1.into());
    config.extra_labels.insert(RUN_LABEL.into(), scope.clone());
    let runs = Runs::new(
        store.clone(),
        swarm.clone(),
        Some(catalogue(dir.path())),
        Arc::new(SystemClock),
        config,
    );
    let sweeper = Sweeper::new(
        swarm.clone(),
        store.clone(),
        Arc::new(ProcLiveness::new().unwrap()),
        Arc::new(SystemClock),
        sweeper::Config {
            scope: LabelFilter::eq(RUN_LABEL, &scope),
            ..sweeper::Config::default()
        },
    );
    // The run reconciler does the work `start` and `finish` wait for and closes the runs the
    // sweeper marks (as in `hearth serve`); it stops with the test's runtime.
    let runs = runs.with_sweeper(sweeper.clone());
    tokio::spawn(
        runs::reconcile::controller(runs.clone(), runs::reconcile::config())
            .run(controller::runtime::Shutdown::new()),
    );
    Some(Bed {
        swarm,
        store,
        runs,
        sweeper,
        scope,
        _dir: dir,
    })
}

fn request(owner: crd::Owner, nonce: &str, deps: Vec<String>) -> StartRequest {
    StartRequest {
        recipe: "app".into(),
        version: "1.0.0".into(),
        git_ref: Some("f00d".into()),
        candidate: None,
        env: Default::default(),
        deps,
        pool: Some("ci".into()),
        ttl: None,
        owner,
        deploy: true,
        required_tiers: vec!["install".into()],
        nonce: nonce.as_bytes().to_vec(),
    }
}

/// Deploys a stack with `docker stack deploy`, without any `hearth.managed-by` label (only
/// the test labels, so the test bed can clean up and the scoped sweeper sees it).
fn deploy_foreign(name: &str, scope: &str, dir: &Path) {
    let compose = dir.join("foreign.yml");
    write(
        &compose,
        &format!(
            r#"version: "3.8"
services:
  web:
    image: hearth-fixture/webapp:1.0.0
    command: ["/bin/serve"]
    deploy:
      endpoint_mode: dnsrr
      labels: {{ "hearth.test": "1", "hearth.test.run": "{scope}" }}
    networks: [net]
networks:
  net:
    labels: {{ "hearth.test": "1", "hearth.test.run": "{scope}" }}
"#
        ),
    );
    let out = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(&compose)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn remove_foreign(name: &str) {
    let _ = Command::new("docker").args(["stack", "rm", name]).output();
}

async fn objects_of(swarm: &dyn Swarm, namespace: &str) -> stack::Observed {
    stack::observe(swarm, namespace, Depth::WithTasks)
        .await
        .unwrap()
}

/// The objects a teardown removes (tasks of removed services linger in the swarm's task
/// list for a while; they are not objects hearth or docker removes).
fn without_tasks(mut o: stack::Observed) -> stack::Observed {
    o.tasks.clear();
    o
}

async fn running_tasks(swarm: &dyn Swarm, namespace: &str) -> usize {
    objects_of(swarm, namespace)
        .await
        .tasks
        .iter()
        .filter(|t| t.state == controller::swarm::TaskState::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_ci_jobs_run_is_swept_and_its_slot_freed_while_a_foreign_stack_stays() {
    let Some(bed) = bed("runs-kill").await else {
        return;
    };
    let foreign = format!("{}-f", bed.scope);
    deploy_foreign(&foreign, &bed.scope, bed._dir.path());
    // The CI job: a separate process that owns the run (`hearth run start --owner-pid`).
    let mut job = Command::new("sleep").arg("600").spawn().unwrap();
    let owner = liveness::owner_of(job.id()).unwrap();
    let started = bed
        .runs
        .start(&request(owner, &bed.scope, vec!["db".into()]))
        .await
        .unwrap();
    let dep = started.deps[0].stack_name.clone();
    // Wait until both stacks run (containers exist, volumes are in use).
    let until = Instant::now() + Duration::from_secs(90);
    while running_tasks(bed.swarm.as_ref(), &started.stack).await < 1
        || running_tasks(bed.swarm.as_ref(), &dep).await < 1
    {
        assert!(Instant::now() < until, "stacks did not start");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deployed = objects_of(bed.swarm.as_ref(), &started.stack).await;
    assert_eq!(
        (
            deployed.services.len(),
            deployed.networks.len(),
            deployed.secrets.len(),
            deployed.configs.len()
        ),
        (1, 1, 1, 1),
        "{deployed:?}"
    );
    assert!(!deployed.volumes.is_empty(), "{deployed:?}");
    // The sweeper runs as the daemon would, every 200 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeping = {
        let (sweeper, stop) = (bed.sweeper.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = sweeper.sweep().await {
                    eprintln!("sweep failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bed.store.get::<Run>(&started.run).unwrap().status.phase,
        RunPhase::Running,
        "a live owner's run is left alone"
    );
    let killed = Instant::now();
    job.kill().unwrap(); // SIGKILL
    job.wait().unwrap();
    loop {
        let a = without_tasks(objects_of(bed.swarm.as_ref(), &started.stack).await);
        let b = without_tasks(objects_of(bed.swarm.as_ref(), &dep).await);
        if a.is_empty() && b.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "not swept: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "MEASURE runs_real kill_to_last_object_gone_ms={}",
        took.as_millis()
    );
    // Closed and slot freed (the close follows the verifying listing).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let run: Run = bed.store.get(&started.run).unwrap();
        let pool: SlotPool = bed.store.get("ci").unwrap();
        if run.status.phase == RunPhase::Orphaned && pool.status.leases.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "{:?} {:?}", run.status, pool.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeping.await.unwrap();
    // The foreign stack is untouched.
    let f = objects_of(bed.swarm.as_ref(), &foreign).await;
    assert_eq!((f.services.len(), f.networks.len()), (1, 1), "{f:?}");
    remove_foreign(&foreign);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_per_run_and_a_shared_dep_finishes_with_nothing_left() {
    let Some(bed) = bed("runs-deps").await else {
        return;
    };
    // The shared provider: a warm app the warm-app reconciler keeps Ready; here its stack is
    // deployed directly and its status set as that reconciler would.
    let warm = format!("sso{}", &bed.scope[bed.scope.len() - 6..]).replace('_', "");
    let mut app: WarmApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": warm},
        "spec": {"recipe": "db", "version": "1.0.0", "provider": true}
    }))
    .unwrap();
    app = bed.store.create(&app).await.unwrap();
    app.status.phase = WarmAppPhase::Ready;
    bed.store.update_status(&app).await.unwrap();
    bed.store
        .create(&DepProvider::new(
            "sso",
            DepProviderSpec::Shared {
                warm_app: warm.clone(),
            },
        ))
        .await
        .unwrap();
    let provider_stack = format!("hp-{warm}");
    let cat = catalogue(bed._dir.path());
    let rendered = controller::catalogue::Catalogue::render(
        cat.as_ref(),
        &controller::catalogue::RenderRequest {
            recipe: "db",
            version: "1.0.0",
            stack: &provider_stack,
            domain: "sso.ci.test",
            env: &Default::default(),
        },
    )
    .unwrap();
    let owner = stack::Owner::new("WarmApp", &warm)
        .with_label(TEST_LABEL.0, TEST_LABEL.1)
        .with_label(RUN_LABEL, &bed.scope);
    stack::apply(
        bed.swarm.as_ref(),
        &rendered.stack,
        &owner,
        &stack::ApplyOptions::default(),
    )
    .await
    .unwrap();

    let me = liveness::current_owner().unwrap();
    let started = bed
        .runs
        .start(&request(me, &bed.scope, vec!["db".into(), "sso".into()]))
        .await
        .unwrap();
    assert_eq!(started.deps.len(), 2);
    assert_eq!(started.deps[0].mode, crd::DepMode::PerRun);
    assert!(started.deps[0].stack_name.starts_with("hd-db-"));
    assert_eq!(started.deps[1].stack_name, provider_stack);
    assert!(started.deps.iter().all(|d| d.ready), "{:?}", started.deps);
    let per_run = started.deps[0].stack_name.clone();
    assert!(!objects_of(bed.swarm.as_ref(), &per_run).await.is_empty());
    bed.runs
        .report(
            &started.run,
            &[TierResult {
                name: "install".into(),
                result: TierOutcome::Pass,
                required: true,
                reason: None,
            }],
        )
        .await
        .unwrap();
    let run = bed.runs.finish(&started.run).await.unwrap();
    assert_eq!(run.status.phase, RunPhase::Succeeded, "{:?}", run.status);
    for ns in [&started.stack, &per_run] {
        let left = without_tasks(objects_of(bed.swarm.as_ref(), ns).await);
        assert!(left.is_empty(), "{ns}: {left:?}");
    }
    // The shared provider is not the run's to tear down.
    assert_eq!(
        objects_of(bed.swarm.as_ref(), &provider_stack)
            .await
            .services
            .len(),
        1
    );
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty());
    let torn = bed
        .store
        .history(&state::history::Query::newest(10).reason(state::history::reason::TORN_DOWN))
        .unwrap();
    assert_eq!(torn.len(), 1);
    // Own stack first, then the per-run dep (reverse order of deps).
    let removed: Vec<String> = torn[0].details["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let first_dep = removed.iter().position(|r| r.contains(&per_run)).unwrap();
    let last_own = removed
        .iter()
        .rposition(|r| r.contains(&started.stack))
        .unwrap();
    assert!(last_own < first_dep, "{removed:?}");
    if let Err(e) = stack::teardown(
        bed.swarm.as_ref(),
        &provider_stack,
        &stack::TeardownOptions::forced(),
    )
    .await
    {
        panic!("cleaning up the provider stack: {e}");
    }
}

/// Issue 14, item 9: a new user saw a killed CI job's run recorded `TeardownFailed … 1
/// remained`, then a second later `Swept … 0 remained`. A run whose objects are still going
/// away (containers stopping) is not failed: the closing waits for them to go, then judges —
/// so the run's history reads one `Swept … 0 remained` and no TeardownFailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_jobs_run_is_recorded_swept_once_with_nothing_remaining_and_never_failed_first() {
    let Some(bed) = bed("runs-swept-once").await else {
        return;
    };
    let mut job = Command::new("sleep").arg("600").spawn().unwrap();
    let owner = liveness::owner_of(job.id()).unwrap();
    let started = bed
        .runs
        .start(&request(owner, &bed.scope, vec!["db".into()]))
        .await
        .unwrap();
    let dep = started.deps[0].stack_name.clone();
    let until = Instant::now() + Duration::from_secs(90);
    while running_tasks(bed.swarm.as_ref(), &started.stack).await < 1
        || running_tasks(bed.swarm.as_ref(), &dep).await < 1
    {
        assert!(Instant::now() < until, "stacks did not start");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The daemon's sweep loop (every second).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeping = {
        let (sweeper, stop) = (bed.sweeper.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = sweeper.sweep().await {
                    eprintln!("sweep failed: {e}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    job.kill().unwrap(); // SIGKILL
    job.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let run: Run = bed.store.get(&started.run).unwrap();
        if run.status.phase.is_terminal() {
            assert_eq!(run.status.phase, RunPhase::Orphaned, "{:?}", run.status);
            break;
        }
        assert!(Instant::now() < until, "{:?}", run.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more passes: nothing more is recorded about the closed run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeping.await.unwrap();
    let about = |reason: &str| {
        bed.store
            .history(
                &state::history::Query::newest(20)
                    .about(state::history::ObjectRef::new(crd::Kind::Run, &started.run))
                    .reason(reason),
            )
            .unwrap()
    };
    let failed = about(state::history::reason::TEARDOWN_FAILED);
    assert!(
        failed.is_empty(),
        "judged failed while its objects were going: {failed:?}"
    );
    let swept = about(state::history::reason::SWEPT);
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(
        swept[0].message.ends_with(", 0 remained"),
        "{}",
        swept[0].message
    );
    // In words, never a Debug format (the trip read `({OwnerDead})`).
    assert!(
        swept[0].message.contains(" (owner dead): ") && !swept[0].message.contains('{'),
        "{}",
        swept[0].message
    );
    assert_eq!(swept[0].details["remained"].as_array().unwrap().len(), 0);
    for ns in [&started.stack, &dep] {
        let left = without_tasks(objects_of(bed.swarm.as_ref(), ns).await);
        assert!(left.is_empty(), "{ns}: {left:?}");
    }
}
