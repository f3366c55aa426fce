//! Sweeper and runs against the simulated swarm, in virtual time (here, not in `sweeper/`: they drive runs, and `runs` imports `sweeper`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd::names::BaseDomain;
use crd::{
    DepProvider, DepProviderSpec, Owner, Resource, Run, RunPhase, SlotPool, SlotPoolSpec,
    TierOutcome, TierResult,
};
use rand::{Rng, SeedableRng};
use state::history::Query;
use state::{Clock, Store};

use crate::catalogue::DirCatalogue;
use crate::liveness::{Checker, Liveness};
use crate::runs::{self, Runs, StartRequest};
use crate::swarm::sim::{SimConfig, SimSwarm};
use crate::swarm::{spec, LabelFilter, ObjectKind, Swarm};
use crate::sweeper::*;

/// The simulated swarm's wall clock (its fixed origin plus virtual time), so creation times,
/// store timestamps and lease expiry agree.
#[derive(Debug)]
struct SimClock(tokio::time::Instant);

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + u64::try_from(self.0.elapsed().as_millis()).unwrap()
    }
}

/// Owners are alive until the test kills them (their PIDs are made up).
#[derive(Debug, Default)]
struct Scripted {
    dead: Mutex<BTreeSet<u32>>,
}

impl Scripted {
    fn kill(&self, pid: u32) {
        self.dead.lock().unwrap().insert(pid);
    }
}

impl Checker for Scripted {
    fn check(&self, owner: &Owner) -> Liveness {
        if self.dead.lock().unwrap().contains(&owner.pid) {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }
}

fn owner(pid: u32) -> Owner {
    Owner {
        kind: crd::OwnerKind::Pid,
        pid,
        process_start_time: 7,
        host: "ci-host".into(),
        boot_id: "boot-1".into(),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A catalogue with `app` (service, volume, network, secret, config) and `db` (service,
/// volume).
fn catalogue(dir: &Path) -> Arc<DirCatalogue> {
    write(
        &dir.join("app/recipe.yml"),
        "composeFiles: [compose.yml]\nversions: [1.0.0]\n",
    );
    write(&dir.join("app/pw.txt"), "secret\n");
    write(&dir.join("app/conf.txt"), "conf\n");
    write(
        &dir.join("app/compose.yml"),
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
    );
    write(
        &dir.join("db/recipe.yml"),
        "composeFiles: [compose.yml]\nversions: [1.0.0]\n",
    );
    write(
        &dir.join("db/compose.yml"),
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
    );
    Arc::new(DirCatalogue::open(dir).unwrap())
}

struct Bed {
    sim: SimSwarm,
    store: Store,
    checker: Arc<Scripted>,
    runs: Runs,
    sweeper: Sweeper,
    /// Stops this "process"'s run controller.
    shutdown: crate::runtime::Shutdown,
    /// Builds the runs executor of a new "process" on the same store and swarm.
    fresh_runs: Box<dyn Fn(Sweeper) -> Runs + Send + Sync>,
    _dir: tempfile::TempDir,
}

/// Starts the run controller of `runs` (what `hearth serve` runs), stopped by the returned
/// shutdown.
fn run_controller(runs: &Runs) -> crate::runtime::Shutdown {
    let shutdown = crate::runtime::Shutdown::new();
    tokio::spawn(
        runs::reconcile::controller(runs.clone(), runs::reconcile::config()).run(shutdown.clone()),
    );
    shutdown
}

impl Bed {
    /// The daemon killed and started again on the same store and swarm: its run controller
    /// stops at once (in-flight reconciles aborted), a new executor with no start in flight
    /// and a new controller take over.
    fn restart(&mut self) {
        self.use_sweeper(self.sweeper.clone());
    }

    /// [`Bed::restart`] with `sweeper` (its scope and node endpoints) closing the runs it
    /// marks, as `hearth serve` wires its one sweeper into the run reconciler.
    fn use_sweeper(&mut self, sweeper: Sweeper) {
        self.shutdown.stop_now();
        self.runs = (self.fresh_runs)(sweeper.clone());
        self.sweeper = sweeper;
        self.shutdown = run_controller(&self.runs);
    }
}

/// Waits (virtual time, ≤ `secs` s) until `done` holds for run `name`; returns the run.
async fn run_until(bed: &Bed, name: &str, secs: u64, done: impl Fn(&Run) -> bool) -> Run {
    for _ in 0..secs * 10 {
        let run: Run = bed.store.get(name).unwrap();
        if done(&run) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run: Run = bed.store.get(name).unwrap();
    panic!("run {name} did not get there in {secs} s: {:?}", run.status);
}

async fn bed(slots: u32) -> Bed {
    bed_with(slots, None).await
}

/// [`bed`] whose runs, slots, sweeper and swarm calls record into `metrics`.
async fn bed_with(slots: u32, metrics: Option<metrics::Metrics>) -> Bed {
    bed_on(SimSwarm::new(SimConfig::default()), slots, metrics).await
}

/// [`bed_with`] on a given simulated swarm (e.g. one of several nodes).
async fn bed_on(sim: SimSwarm, slots: u32, metrics: Option<metrics::Metrics>) -> Bed {
    let clock: Arc<dyn Clock> = Arc::new(SimClock(tokio::time::Instant::now()));
    let store = Store::with_engine(
        Arc::new(state::MemoryEngine::new()),
        state::Config {
            clock: clock.clone(),
            ..state::Config::default()
        },
    )
    .await
    .unwrap();
    store
        .create(&SlotPool::new(
            "ci",
            SlotPoolSpec {
                slots,
                port_base: 20000,
                ports_per_slot: 10,
                wait_timeout: Duration::from_secs(3600),
                // Declared, so the cardinality test sees them as `tier` label values.
                tiers: vec!["install".into(), "upgrade".into(), "custom-sso".into()],
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
    let checker = Arc::new(Scripted::default());
    let mut swarm: Arc<dyn Swarm> = Arc::new(sim.clone());
    if let Some(m) = &metrics {
        swarm = Arc::new(crate::swarm::MeteredSwarm::new(swarm, m.clone()));
    }
    let mut sweeper = Sweeper::new(
        swarm.clone(),
        store.clone(),
        checker.clone(),
        clock.clone(),
        Config::default(),
    );
    if let Some(m) = &metrics {
        sweeper = sweeper.with_metrics(m.clone());
    }
    let fresh_runs = {
        let (store, swarm, clock, metrics) =
            (store.clone(), swarm.clone(), clock.clone(), metrics.clone());
        let catalogue = catalogue(dir.path());
        Box::new(move |sweeper: Sweeper| {
            let runs = Runs::new(
                store.clone(),
                swarm.clone(),
                Some(catalogue.clone()),
                clock.clone(),
                runs::Config::new(BaseDomain::parse("ci.test").unwrap()),
            )
            .with_sweeper(sweeper);
            match &metrics {
                Some(m) => runs.with_metrics(m.clone()),
                None => runs,
            }
        })
    };
    let runs = fresh_runs(sweeper.clone());
    let shutdown = run_controller(&runs);
    Bed {
        sim,
        store,
        checker,
        runs,
        sweeper,
        shutdown,
        fresh_runs,
        _dir: dir,
    }
}

fn request(pid: u32, nonce: &str) -> StartRequest {
    StartRequest {
        recipe: "app".into(),
        version: "1.0.0".into(),
        git_ref: Some("abc123".into()),
        candidate: None,
        env: Default::default(),
        deps: vec!["db".into()],
        pool: Some("ci".into()),
        ttl: None,
        owner: owner(pid),
        deploy: true,
        required_tiers: vec!["install".into()],
        nonce: nonce.as_bytes().to_vec(),
    }
}

/// Waits (virtual time, ≤ 60 s) until a task created a volume whose name starts with `prefix`.
async fn volume_made(sim: &SimSwarm, prefix: &str) {
    for _ in 0..60 {
        let volumes = sim.list_volumes(&LabelFilter::all()).await.unwrap();
        if volumes.iter().any(|v| v.name.starts_with(prefix)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    panic!("no task created a volume {prefix}…");
}

/// Every object in the simulated swarm, by kind and name.
async fn everything(sim: &SimSwarm) -> Vec<String> {
    try_everything(sim).await.unwrap()
}

/// [`everything`], or the first list call's error.
async fn try_everything(sim: &SimSwarm) -> crate::swarm::Result<Vec<String>> {
    let all = LabelFilter::all();
    let mut out = Vec::new();
    out.extend(
        sim.list_services(&all)
            .await?
            .into_iter()
            .map(|s| format!("service/{}", s.meta.name)),
    );
    out.extend(
        sim.list_networks(&all)
            .await?
            .into_iter()
            .map(|n| format!("network/{}", n.name)),
    );
    out.extend(
        sim.list_volumes(&all)
            .await?
            .into_iter()
            .map(|v| format!("volume/{}", v.name)),
    );
    out.extend(
        sim.list_secrets(&all)
            .await?
            .into_iter()
            .map(|s| format!("secret/{}", s.meta.name)),
    );
    out.extend(
        sim.list_configs(&all)
            .await?
            .into_iter()
            .map(|c| format!("config/{}", c.meta.name)),
    );
    out.extend(
        sim.list_containers(&all)
            .await?
            .into_iter()
            .map(|c| format!("container/{}", c.name)),
    );
    Ok(out)
}

#[tokio::test(start_paused = true)]
async fn a_finished_run_tears_down_its_stack_and_per_run_dep_and_releases_its_slot() {
    let bed = bed(2).await;
    let started = bed.runs.start(&request(100, "job-1")).await.unwrap();
    assert_eq!(started.stack, format!("hr-{}", started.run));
    assert_eq!(started.slot.as_ref().unwrap().port_base, 20000);
    assert_eq!(started.deps.len(), 1);
    assert!(started.deps[0].stack_name.starts_with("hd-db-") && started.deps[0].ready);
    // The dep's volume is made by its task when the task starts (as docker does, #13).
    volume_made(&bed.sim, "hd-db-").await;
    let objects = everything(&bed.sim).await;
    assert!(
        objects.iter().any(|o| o.starts_with("service/hr-")),
        "{objects:?}"
    );
    assert!(
        objects.iter().any(|o| o.starts_with("secret/hr-")),
        "{objects:?}"
    );
    assert!(
        objects.iter().any(|o| o.starts_with("volume/hd-db-")),
        "{objects:?}"
    );
    bed.runs
        .report(
            &started.run,
            &[TierResult {
                name: "install".into(),
                result: TierOutcome::Pass,
                required: false,
                reason: None,
            }],
        )
        .await
        .unwrap();
    let run = bed.runs.finish(&started.run).await.unwrap();
    assert_eq!(run.status.phase, RunPhase::Succeeded, "{:?}", run.status);
    assert!(run.status.verdict.unwrap().green);
    assert_eq!(everything(&bed.sim).await, Vec::<String>::new());
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dead_owners_run_is_swept_closed_as_orphaned_and_its_slot_freed_while_a_foreign_stack_stays(
) {
    let bed = bed(1).await;
    // A foreign stack: deployed without hearth's labels, under a name hearth never assigned.
    let foreign: spec::ServiceSpec = serde_json::from_value(serde_json::json!({
        "Name": "foreign_web",
        "Labels": {"com.docker.stack.namespace": "foreign"},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1000"]}}
    }))
    .unwrap();
    bed.sim.create_service(&foreign).await.unwrap();
    let started = bed.runs.start(&request(200, "job-2")).await.unwrap();
    // A second run waits for the only slot.
    let waiting = {
        let runs = bed.runs.clone();
        tokio::spawn(async move { runs.start(&request(201, "job-3")).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    let plan = bed.sweeper.plan().await.unwrap();
    assert!(plan.remove.is_empty() && plan.close.is_empty(), "{plan:?}");
    bed.checker.kill(200);
    let dry = bed.sweeper.plan().await.unwrap();
    assert_eq!(dry.close.len(), 1);
    assert!(dry.remove.len() >= 6, "{dry:?}");
    assert!(dry.remove.iter().all(|a| a.run == started.run));
    let report = bed.sweeper.sweep().await.unwrap();
    assert!(report.remained.is_empty(), "{report:?}");
    assert_eq!(report.closed, std::slice::from_ref(&started.run));
    let run: Run = bed.store.get(&started.run).unwrap();
    assert_eq!(run.status.phase, RunPhase::Orphaned);
    let next = waiting.await.unwrap().unwrap();
    assert_eq!(next.slot.unwrap().index, 0);
    let left = everything(&bed.sim).await;
    assert!(
        left.contains(&"service/foreign_web".to_string()),
        "{left:?}"
    );
    assert!(!left.iter().any(|o| o.contains(&started.run)), "{left:?}");
    let history = bed
        .store
        .history(
            &Query::newest(10).about(state::history::ObjectRef::new(crd::Kind::Run, &started.run)),
        )
        .unwrap();
    let swept = history.iter().find(|e| e.reason == "Swept").unwrap();
    assert!(swept.details["removed"].as_array().unwrap().len() >= 6);
    assert_eq!(swept.details["remained"].as_array().unwrap().len(), 0);
}

/// The mark is a status write, which the run controller's change feed skips (a controller's
/// own writes): the sweeper triggers the run's reconcile itself, so the run is closed within
/// the pass, not at the run controller's next resync (60 s; what made crash_real fail to
/// converge and the real kill tests take 67 s instead of 7 s).
#[tokio::test(start_paused = true)]
async fn a_run_the_sweeper_marks_is_closed_within_the_pass_not_at_the_next_resync() {
    let bed = bed(1).await;
    let started = bed.runs.start(&request(220, "job-prompt")).await.unwrap();
    bed.checker.kill(220);
    let t0 = tokio::time::Instant::now();
    let report = bed.sweeper.sweep().await.unwrap();
    let took = t0.elapsed();
    assert_eq!(
        report.closed,
        std::slice::from_ref(&started.run),
        "{report:?}"
    );
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    let run: Run = bed.store.get(&started.run).unwrap();
    assert_eq!(run.status.phase, RunPhase::Orphaned);
}

/// Issue 14 (a new user's trip): the history read `swept run r (\u{7b}OwnerDead\u{7d})`.
#[tokio::test(start_paused = true)]
async fn a_swept_runs_history_and_error_give_the_reason_in_words() {
    let bed = bed(1).await;
    let started = bed.runs.start(&request(210, "job-words")).await.unwrap();
    bed.checker.kill(210);
    let report = bed.sweeper.sweep().await.unwrap();
    assert_eq!(report.closed, std::slice::from_ref(&started.run));
    let history = bed
        .store
        .history(
            &Query::newest(10).about(state::history::ObjectRef::new(crd::Kind::Run, &started.run)),
        )
        .unwrap();
    let swept = history.iter().find(|e| e.reason == "Swept").unwrap();
    let head = format!("swept run {} (owner dead): ", started.run);
    assert!(swept.message.starts_with(&head), "{}", swept.message);
    assert!(!swept.message.contains('{'), "{}", swept.message);
    let run: Run = bed.store.get(&started.run).unwrap();
    assert_eq!(
        run.status.last_error.as_deref(),
        Some("owner dead: swept with forced teardown")
    );
}

#[tokio::test(start_paused = true)]
async fn reusing_a_deterministic_dep_name_after_a_leaked_run_sweeps_the_leftovers_first() {
    let bed = bed(2).await;
    let first = bed.runs.start(&request(300, "job-4")).await.unwrap();
    let dep_stack = first.deps[0].stack_name.clone();
    let old_ids: BTreeSet<String> = bed
        .sim
        .list_services(&LabelFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.meta.id)
        .collect();
    // The earlier attempt leaked: its record is lost (as after a crash before it was
    // written), so nothing but the deterministic names ties hearth to its objects.
    let run: Run = bed.store.get(&first.run).unwrap();
    bed.store
        .delete::<Run>(&first.run, Some(run.meta().resource_version))
        .await
        .unwrap();
    let mut pool: SlotPool = bed.store.get("ci").unwrap();
    pool.status.leases.clear();
    bed.store.update_status(&pool).await.unwrap();
    // The retried CI job reuses its nonce: same run id, same dep stack name.
    let second = bed.runs.start(&request(301, "job-4")).await.unwrap();
    assert_eq!(second.run, first.run);
    assert_eq!(second.deps[0].stack_name, dep_stack);
    let history = bed
        .store
        .history(&Query::newest(50).reason(runs::COLLISION_SWEPT))
        .unwrap();
    let namespaces: BTreeSet<&str> = history
        .iter()
        .map(|e| e.details["namespace"].as_str().unwrap())
        .collect();
    assert!(namespaces.contains(dep_stack.as_str()), "{history:?}");
    assert!(namespaces.contains(second.stack.as_str()), "{history:?}");
    let new_ids: BTreeSet<String> = bed
        .sim
        .list_services(&LabelFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.meta.id)
        .collect();
    assert_eq!(new_ids.len(), 2);
    assert!(
        new_ids.is_disjoint(&old_ids),
        "the leftovers were replaced, not reused"
    );
}

/// A `container:REF` owner is recorded as given by the start and resolved by the run's
/// reconciler before it deploys: by name to the full ID when the container runs; a missing or
/// stopped container fails the run with the reason (field path first), nothing deployed, the
/// slot freed.
#[tokio::test(start_paused = true)]
async fn a_container_owner_is_resolved_by_the_run_reconciler_before_anything_is_deployed() {
    let bed = bed(2).await;
    let id = bed.sim.run_container("ci-step");
    let with_container = |nonce: &str, reference: &str| {
        let mut req = request(600, nonce);
        req.owner = req
            .owner
            .with_kind(crd::OwnerKind::Container(reference.into()));
        req
    };
    let started = bed
        .runs
        .start(&with_container("job-c1", "ci-step"))
        .await
        .unwrap();
    let run: Run = bed.store.get(&started.run).unwrap();
    assert_eq!(run.spec.owner.kind, crd::OwnerKind::Container(id.clone()));
    bed.runs.finish(&started.run).await.unwrap();

    let err = bed
        .runs
        .start(&with_container("job-c2", "no-such-step"))
        .await
        .unwrap_err();
    assert!(matches!(err, runs::Error::OwnerUnavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("spec.owner.kind.container: no container \"no-such-step\""),
        "{err}"
    );
    bed.sim.kill_container(&id);
    let err = bed
        .runs
        .start(&with_container("job-c3", &id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not running"), "{err}");
    for name in bed.store.list::<Run>().unwrap().items {
        if name.metadata.name == started.run {
            continue;
        }
        let run = run_until(&bed, &name.metadata.name, 30, |r| {
            r.status.phase.is_terminal()
        })
        .await;
        assert_eq!(run.status.phase, RunPhase::Failed, "{:?}", run.status);
        assert!(run.status.deployed_at_ms.is_none());
        assert!(
            run.status
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("spec.owner.kind.container"),
            "{:?}",
            run.status
        );
    }
    // The CI step's own container (stopped) is all there is.
    assert_eq!(
        everything(&bed.sim).await,
        vec!["container/ci-step".to_string()]
    );
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_finished_runs_id_can_be_reused_but_a_live_one_cannot() {
    let bed = bed(2).await;
    let first = bed.runs.start(&request(400, "job-5")).await.unwrap();
    let err = bed.runs.start(&request(401, "job-5")).await.unwrap_err();
    assert!(matches!(err, runs::Error::RunStillActive { .. }), "{err}");
    bed.runs.finish(&first.run).await.unwrap();
    let again = bed.runs.start(&request(401, "job-5")).await.unwrap();
    assert_eq!(again.run, first.run);
    let history = bed
        .store
        .history(&Query::newest(50).reason(runs::RUN_REPLACED))
        .unwrap();
    assert_eq!(history.len(), 1);
}

/// 1,000 runs through 8 slots with 10 % of swarm calls failing: a third of the owners die
/// (some while others wait for their slot), the rest report and finish. The sweeper runs
/// concurrently. At the end: nothing is left in the swarm, no slot was ever over-granted,
/// every run is terminal.
#[tokio::test(start_paused = true)]
async fn a_thousand_runs_with_random_owner_deaths_and_api_failures_leak_nothing() {
    const RUNS: u32 = 1000;
    const SLOTS: u32 = 8;
    let bed = Arc::new(bed(SLOTS).await);
    bed.sim.fail_fraction(0.10);
    // Check every pool version written.
    let watcher = {
        let store = bed.store.clone();
        let mut feed = store.subscribe();
        tokio::spawn(async move {
            let mut checked = 0u64;
            while let Ok(change) = feed.recv().await {
                if change.kind == crd::Kind::SlotPool {
                    let pool: SlotPool = store.get("ci").unwrap();
                    let slots: BTreeSet<u32> = pool.status.leases.iter().map(|l| l.slot).collect();
                    assert!(
                        pool.status.leases.len() <= SLOTS as usize,
                        "over-granted: {pool:?}"
                    );
                    assert_eq!(slots.len(), pool.status.leases.len(), "a slot leased twice");
                    assert!(slots.iter().all(|s| *s < SLOTS));
                    checked += 1;
                }
            }
            checked
        })
    };
    let sweeping = tokio_util::sync::CancellationToken::new();
    let mut sweeper = crate::runtime::workers::Supervisor::new(
        sweeping.clone(),
        crate::runtime::workers::DEFAULT_POLICY,
        None,
    );
    sweeper.spawn(SweepWorker::new(
        bed.sweeper.clone(),
        Duration::from_secs(2),
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut jobs = tokio::task::JoinSet::new();
    let mut start_failures = 0;
    for i in 0..RUNS {
        let pid = 10_000 + i;
        let dies = rng.random_bool(0.33);
        let pass = rng.random_bool(0.7);
        let hold = Duration::from_millis(rng.random_range(0..5_000));
        let bed = bed.clone();
        jobs.spawn(async move {
            let started = match bed.runs.start(&request(pid, &format!("job-{i}"))).await {
                Ok(s) => s,
                // A start that fails ends its run Failed after tearing down what it deployed.
                Err(_) => return false,
            };
            tokio::time::sleep(hold).await;
            if dies {
                bed.checker.kill(pid);
                return true;
            }
            let outcome = if pass {
                TierOutcome::Pass
            } else {
                TierOutcome::Fail
            };
            let tier = TierResult {
                name: "install".into(),
                result: outcome,
                required: true,
                reason: None,
            };
            // The owner may report and finish; calls fail only on store errors.
            bed.runs.report(&started.run, &[tier]).await.unwrap();
            bed.runs.finish(&started.run).await.unwrap();
            true
        });
        // Keep a bounded number of CI jobs in flight (more than slots: some wait).
        while jobs.len() >= 2 * SLOTS as usize {
            if !jobs.join_next().await.unwrap().unwrap() {
                start_failures += 1;
            }
        }
    }
    while let Some(j) = jobs.join_next().await {
        if !j.unwrap() {
            start_failures += 1;
        }
    }
    // Let the reconciler's teardown retries and the sweeper finish their work, then stop
    // failing.
    for _ in 0..30 {
        let runs = bed.store.list::<Run>().unwrap().items;
        if runs.iter().all(|r| r.status.phase.is_terminal())
            && try_everything(&bed.sim).await.is_ok_and(|l| l.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let passes = sweeper.board().get("orphan-sweep").unwrap();
    sweeping.cancel();
    sweeper.join().await;
    bed.sim.fail_fraction(0.0);
    let runs = bed.store.list::<Run>().unwrap().items;
    assert_eq!(runs.len(), RUNS as usize);
    let not_terminal: Vec<_> = runs
        .iter()
        .filter(|r| !r.status.phase.is_terminal())
        .map(|r| {
            (
                r.metadata.name.clone(),
                r.status.phase,
                r.status.last_error.clone(),
            )
        })
        .collect();
    assert!(not_terminal.is_empty(), "{not_terminal:?}");
    let left = everything(&bed.sim).await;
    assert!(left.is_empty(), "leaked: {left:?}");
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty(), "{pool:?}");
    let phases: std::collections::BTreeMap<String, usize> =
        runs.iter().fold(Default::default(), |mut m, r| {
            *m.entry(format!("{:?}", r.status.phase)).or_default() += 1;
            m
        });
    eprintln!(
        "phases: {phases:?}; starts failed: {start_failures}; sim calls: {}; sweep passes: {}, \
         failed: {}",
        bed.sim.call_count(),
        passes.runs,
        passes.errors
    );
    assert!(
        phases.get("Orphaned").copied().unwrap_or(0) > 200,
        "{phases:?}"
    );
    assert!(
        phases.get("Succeeded").copied().unwrap_or(0) > 200,
        "{phases:?}"
    );
    drop(bed);
    watcher.abort();
}

#[tokio::test(start_paused = true)]
async fn a_teardown_with_leftovers_keeps_the_run_in_teardown_failed_until_a_retry_removes_them() {
    let bed = bed(1).await;
    let started = bed.runs.start(&request(500, "job-6")).await.unwrap();
    volume_made(&bed.sim, "hd-db-").await;
    bed.sim
        .hang_removals(crate::swarm::ObjectKind::Volume, true);
    let run = bed.runs.finish(&started.run).await.unwrap();
    assert_eq!(run.status.phase, RunPhase::TeardownFailed);
    assert!(
        run.status
            .residuals
            .iter()
            .any(|r| r.starts_with("volume/")),
        "{:?}",
        run.status
    );
    assert!(run
        .status
        .last_error
        .as_deref()
        .unwrap()
        .contains("teardown left"));
    // The slot stays held while anything of the run remains.
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert_eq!(pool.status.leases.len(), 1);
    let history = bed
        .store
        .history(&Query::newest(10).reason(state::history::reason::TEARDOWN_FAILED))
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(!history[0].details["remained"]
        .as_array()
        .unwrap()
        .is_empty());
    bed.sim
        .hang_removals(crate::swarm::ObjectKind::Volume, false);
    // The reconciler retries the teardown after its backoff.
    let run = run_until(&bed, &started.run, 60, |r| r.status.phase.is_terminal()).await;
    assert_eq!(
        run.status.phase,
        RunPhase::Failed,
        "no tiers reported: not green"
    );
    assert!(run.status.residuals.is_empty());
    assert_eq!(everything(&bed.sim).await, Vec::<String>::new());
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_tasks_ran_on_a_node_without_an_endpoint_ends_in_teardown_failed_naming_it() {
    let bed = bed_on(SimSwarm::with_nodes(SimConfig::default(), 2), 1, None).await;
    let started = bed.runs.start(&request(600, "job-7")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = bed.sim.node_ids();
    let on_worker = bed.sim.volumes_on(
        &ids[1],
        &LabelFilter::all().and_has(crate::stack::NAMESPACE_LABEL),
    );
    assert!(!on_worker.is_empty(), "a task ran on the worker");
    let run = bed.runs.finish(&started.run).await.unwrap();
    assert_eq!(
        run.status.phase,
        RunPhase::TeardownFailed,
        "{:?}",
        run.status
    );
    assert!(
        run.status.residuals.contains(&"node/sim-2".to_string()),
        "{:?}",
        run.status
    );
    let error = run.status.last_error.as_deref().unwrap();
    assert!(
        error.contains(&ids[1]) && error.contains("no engine endpoint"),
        "{error}"
    );
    // Not pretended away: the volume is still on the worker, and the slot is still held.
    assert_eq!(
        bed.sim.volumes_on(
            &ids[1],
            &LabelFilter::all().and_has(crate::stack::NAMESPACE_LABEL)
        ),
        on_worker
    );
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert_eq!(pool.status.leases.len(), 1);
    // A retry does not pass just because the services (and their tasks) are gone now: the
    // reconciler retried (its backoff is at most 10 s) and the run is still TeardownFailed.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let retried = bed
        .store
        .history(&Query::newest(50).reason(state::history::reason::TEARDOWN_FAILED))
        .unwrap();
    assert!(retried.len() >= 2, "{retried:?}");
    let run: Run = bed.store.get(&started.run).unwrap();
    assert_eq!(
        run.status.phase,
        RunPhase::TeardownFailed,
        "{:?}",
        run.status
    );
    assert_eq!(run.status.residuals, ["node/sim-2"], "{:?}", run.status);
}

/// A sweeper confined to one daemon's objects (`hearth.instance=<id>`, as `hearth serve`
/// runs it) still adopts a stack the CI harness deployed by itself under the name hearth
/// assigned — it carries no hearth label at all — and still leaves a foreign stack alone.
#[tokio::test(start_paused = true)]
async fn a_scoped_sweeper_adopts_a_harness_deployed_stack_by_its_namespace_and_leaves_a_foreign_one(
) {
    let bed = bed(1).await;
    let mut sweeper = bed.sweeper.clone();
    sweeper.config.scope = LabelFilter::eq("hearth.instance", "this-daemon");
    let mut req = request(600, "job-7");
    req.deploy = false;
    req.deps.clear();
    let started = bed.runs.start(&req).await.unwrap();
    let service = |name: &str, namespace: &str| -> spec::ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "Name": name,
            "Labels": {"com.docker.stack.namespace": namespace},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1000"]}}
        }))
        .unwrap()
    };
    // What `docker stack deploy -c … $HEARTH_STACK` leaves: namespace labels only.
    let adopted = format!("{}_app", started.stack);
    bed.sim
        .create_service(&service(&adopted, &started.stack))
        .await
        .unwrap();
    bed.sim
        .create_service(&service("foreign_web", "foreign"))
        .await
        .unwrap();
    // A stack in the namespace of a run another daemon recorded: not this store's run.
    bed.sim
        .create_service(&service("hr-app-0000000000_app", "hr-app-0000000000"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await; // past the creation guard
    let plan = sweeper.plan().await.unwrap();
    assert!(plan.remove.is_empty(), "owner alive: {plan:?}");
    bed.checker.kill(600);
    let plan = sweeper.plan().await.unwrap();
    let names: Vec<(&str, bool)> = plan
        .remove
        .iter()
        .map(|a| (a.object.name.as_str(), a.adopted))
        .collect();
    assert_eq!(names, [(adopted.as_str(), true)]);
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(report.remained.is_empty(), "{report:?}");
    assert_eq!(report.closed, std::slice::from_ref(&started.run));
    let left = everything(&bed.sim).await;
    assert!(!left.contains(&format!("service/{adopted}")), "{left:?}");
    assert!(
        left.contains(&"service/foreign_web".to_string()),
        "{left:?}"
    );
    assert!(
        left.contains(&"service/hr-app-0000000000_app".to_string()),
        "{left:?}"
    );
}

/// One run of the cardinality test: started, tiers reported (pass, fail, skip), then finished
/// — or, every fifth run, its owner dies and the sweeper closes it.
async fn one_run(bed: &Bed, metrics: &metrics::Metrics, i: u32) -> String {
    let pid = 10_000 + i;
    let started = bed
        .runs
        .start(&request(pid, &format!("card-{i}")))
        .await
        .unwrap();
    let tiers: Vec<TierResult> = [
        ("install", TierOutcome::Pass),
        ("upgrade", TierOutcome::Fail),
        ("custom-sso", TierOutcome::Skip),
    ]
    .into_iter()
    .map(|(name, result)| TierResult {
        name: name.into(),
        result,
        required: false,
        reason: None,
    })
    .collect();
    bed.runs.report(&started.run, &tiers).await.unwrap();
    if i.is_multiple_of(5) {
        bed.checker.kill(pid);
        let report = bed.sweeper.sweep().await.unwrap();
        assert_eq!(report.closed, std::slice::from_ref(&started.run));
    } else {
        let run = bed.runs.finish(&started.run).await.unwrap();
        assert!(run.status.phase.is_terminal(), "{:?}", run.status);
    }
    crate::gauges::refresh(&bed.store, metrics, &[]).unwrap();
    started.run
}

#[tokio::test(start_paused = true)]
async fn two_hundred_runs_leave_the_number_of_metric_series_unchanged() {
    let metrics = metrics::Metrics::new().unwrap();
    let bed = bed_with(1, Some(metrics.clone())).await;
    // Warm-up: every path (finish, sweep) and every tier outcome has been taken once.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(one_run(&bed, &metrics, i).await);
    }
    let series = metrics.series_count();
    let operations = metrics.label_values("docker_api_calls_total", "operation");
    assert!(
        series > 100,
        "the test must watch a populated registry: {series}"
    );
    assert!(
        operations.contains(&"create_service".to_string()),
        "{operations:?}"
    );
    for i in 5..200 {
        ids.push(one_run(&bed, &metrics, i).await);
    }
    assert_eq!(metrics.series_count(), series, "series grew with the runs");
    assert_eq!(
        metrics.label_values("docker_api_calls_total", "operation"),
        operations
    );
    assert_eq!(
        metrics.label_values("tier_results_total", "tier"),
        ["custom-sso", "install", "upgrade"]
    );
    assert_eq!(
        metrics.label_values("tier_results_total", "recipe"),
        ["app"]
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(
            r#"hearth_tier_results_total{recipe="app",result="pass",tier="install"} 200"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_runs{phase="Orphaned"} 40"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_runs{phase="Succeeded"} 160"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_reconciles_total{controller="sweeper"} 40"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_orphans_swept_total{kind="service"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_slots_capacity{pool="ci"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hearth_slot_wait_seconds_count{pool="ci"} 200"#),
        "{text}"
    );
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "run id {id} leaked into a label"
        );
    }
}

/// The slot grant and the run's record are one store transaction: while a start waits in
/// line nothing of its run is recorded; when its grant comes, the run appears already
/// Deploying with its slot; and when recording the run fails (here: a run of that id was
/// created meanwhile), the grant is not written either — no lease without its run, no waiter
/// left in line.
#[tokio::test(start_paused = true)]
async fn a_runs_record_and_its_slot_grant_are_written_together_or_not_at_all() {
    let bed = bed(1).await;
    let mut plain = request(700, "job-8");
    plain.deps.clear();
    let first = bed.runs.start(&plain).await.unwrap();
    let run: Run = bed.store.get(&first.run).unwrap();
    assert_eq!(run.status.slot.as_ref().unwrap().index, 0);
    assert!(run.status.started_at_ms.is_some());

    let mut second = request(701, "job-9");
    second.deps.clear();
    let second_id = crd::names::run_id("app", b"job-9").unwrap();
    let waiting = {
        let runs = bed.runs.clone();
        let req = second.clone();
        tokio::spawn(async move { runs.start(&req).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    assert!(bed.store.get_opt::<Run>(&second_id).unwrap().is_none());
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert_eq!(pool.status.waiters.len(), 1, "{:?}", pool.status);

    // A run of the same id appears meanwhile; the grant's transaction must fail as a whole.
    let mut intruder = Run::new(&second_id, bed.store.get::<Run>(&first.run).unwrap().spec);
    intruder.status.phase = RunPhase::Running;
    bed.store.create(&intruder).await.unwrap();
    bed.runs.finish(&first.run).await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, runs::Error::RunStillActive { .. }), "{err}");
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty(), "{:?}", pool.status);
    assert!(pool.status.waiters.is_empty(), "{:?}", pool.status);
    let intruder: Run = bed.store.get(&second_id).unwrap();
    assert!(intruder.status.slot.is_none());

    // Without the intruder, the next start gets the slot with its record.
    let mut third = request(702, "job-10");
    third.deps.clear();
    let third = bed.runs.start(&third).await.unwrap();
    let run: Run = bed.store.get(&third.run).unwrap();
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert_eq!(pool.status.leases.len(), 1);
    assert_eq!(
        pool.status.leases[0].run.as_deref(),
        Some(third.run.as_str())
    );
    assert_eq!(
        run.status.slot.as_ref().unwrap().index,
        pool.status.leases[0].slot
    );
}

/// A start cut off mid-deploy (the daemon killed: here its run controller aborted and its
/// request dropped) leaves a run Deploying with its slot and part of its objects, whose id no
/// client ever got. A retried start with the same nonce is refused while it is live; the next
/// process's run reconciler finds it in its first pass (no request of that process waits for
/// it) and closes it: torn down, verified, Failed, slot released, recorded — after which the
/// retried start goes through.
#[tokio::test(start_paused = true)]
async fn a_start_cut_off_mid_deploy_is_closed_by_the_next_process_and_its_id_and_slot_freed() {
    let mut bed = bed(1).await;
    bed.sim.set_latency(Duration::from_millis(200));
    let req = request(900, "job-cut");
    let id = crd::names::run_id("app", b"job-cut").unwrap();
    let starting = {
        let runs = bed.runs.clone();
        let req = req.clone();
        tokio::spawn(async move { runs.start(&req).await })
    };
    // Cut off once something of it is deployed (looking at the call log: listing would take
    // the simulated latency too).
    let created = || {
        bed.sim
            .calls()
            .iter()
            .filter(|c| c.call.verb == crate::swarm::Verb::Create)
            .count()
    };
    for _ in 0..1000 {
        if created() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(created() >= 2, "{:?}", bed.sim.calls());
    // Those creations complete (one latency); what came after them is still in flight.
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The process dies: its reconciles and its waiting request with it.
    let dead = bed.shutdown.clone();
    dead.stop_now();
    starting.abort();
    assert!(starting.await.unwrap_err().is_cancelled());
    bed.sim.set_latency(Duration::ZERO);
    let left = everything(&bed.sim).await;
    assert!(!left.is_empty(), "the cut-off start deployed something");
    let run: Run = bed.store.get(&id).unwrap();
    assert_eq!(run.status.phase, RunPhase::Deploying);
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert_eq!(pool.status.leases.len(), 1, "{:?}", pool.status);

    // The client retries with the same nonce: refused while the cut-off run is live.
    let err = bed.runs.start(&req).await.unwrap_err();
    assert!(matches!(err, runs::Error::RunStillActive { .. }), "{err}");

    // The next process: the same store and swarm, a new run controller.
    bed.restart();
    let run = run_until(&bed, &id, 60, |r| r.status.phase.is_terminal()).await;
    assert_eq!(run.status.phase, RunPhase::Failed, "{:?}", run.status);
    assert!(run
        .status
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("start interrupted"));
    assert_eq!(everything(&bed.sim).await, Vec::<String>::new());
    let pool: SlotPool = bed.store.get("ci").unwrap();
    assert!(pool.status.leases.is_empty(), "{:?}", pool.status);
    let store = bed.store.clone();
    let interrupted = || {
        store
            .history(&Query::newest(50).reason(runs::START_INTERRUPTED))
            .unwrap()
    };
    assert_eq!(interrupted().len(), 1);

    // Running and finished runs are never taken for interrupted starts.
    let again = bed.runs.start(&req).await.unwrap();
    assert_eq!(again.run, id);
    bed.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(interrupted().len(), 1);
    let run: Run = bed.store.get(&id).unwrap();
    assert_eq!(run.status.phase, RunPhase::Running, "{:?}", run.status);
    bed.runs.finish(&again.run).await.unwrap();
    bed.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(interrupted().len(), 1);
}

/// Endpoints for `nodes` of `sim`, each reaching that node's view (`sim://<id>`).
fn endpoints(sim: &SimSwarm, nodes: &[String]) -> crate::stack::NodeDaemons {
    let mut daemons = crate::stack::NodeDaemons::new();
    for id in nodes {
        daemons.add_swarm(id, format!("sim://{id}"), Arc::new(sim.node_view(id)));
    }
    daemons
}

fn namespaced() -> LabelFilter {
    LabelFilter::all().and_has(crate::stack::NAMESPACE_LABEL)
}

/// A volume created directly on node `node` of `sim`.
async fn volume_on(sim: &SimSwarm, node: &str, name: &str, labels: &[(&str, &str)]) {
    let spec = spec::VolumeSpec {
        name: name.into(),
        driver: None,
        driver_opts: None,
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
    };
    sim.node_view(node).create_volume(&spec).await.unwrap();
}

/// A 3-node swarm with a dead owner's run whose tasks ran on every node; the sweeper (scoped
/// to this daemon's instance, as `hearth serve` runs it) reaches nodes 2 and 3 through
/// endpoints. Node 2 also holds a foreign volume, node 3 another instance's volume.
async fn three_node_orphan() -> (Bed, Sweeper, String, Vec<String>) {
    let mut bed = bed_on(SimSwarm::with_nodes(SimConfig::default(), 3), 1, None).await;
    let ids = bed.sim.node_ids();
    let started = bed.runs.start(&request(700, "job-9")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let remote: usize = ids[1..]
        .iter()
        .map(|id| bed.sim.volumes_on(id, &namespaced()).len())
        .sum();
    assert!(remote > 0, "tasks ran on other nodes");
    volume_on(&bed.sim, &ids[1], "foreign_data", &[]).await;
    volume_on(
        &bed.sim,
        &ids[2],
        "hr-app-0000000000_data",
        &[
            (crd::names::labels::MANAGED_BY, "hearth"),
            (crate::stack::NAMESPACE_LABEL, "hr-app-0000000000"),
            (crate::warmapp::INSTANCE_LABEL, "other-daemon"),
        ],
    )
    .await;
    let mut sweeper = bed.sweeper.clone();
    sweeper.config.scope = LabelFilter::eq(crate::warmapp::INSTANCE_LABEL, "this-daemon");
    sweeper.config.nodes = endpoints(&bed.sim, &ids[1..]);
    bed.use_sweeper(sweeper.clone());
    tokio::time::sleep(Duration::from_secs(60)).await; // past the creation guard
    bed.checker.kill(700);
    (bed, sweeper, started.run, ids)
}

#[tokio::test(start_paused = true)]
async fn a_swept_orphans_volumes_on_every_node_are_removed_through_the_endpoints_and_others_stay() {
    let (bed, sweeper, run, ids) = three_node_orphan().await;
    let plan = sweeper.plan().await.unwrap();
    let remote: Vec<String> = plan
        .remove
        .iter()
        .filter(|a| a.object.node.is_some())
        .map(|a| a.object.to_string())
        .collect();
    assert!(!remote.is_empty(), "{plan:?}");
    assert!(
        remote.iter().all(|r| r.starts_with("volume ")),
        "{remote:?}"
    );
    let report = sweeper.sweep().await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(report.remained.is_empty(), "{report:?}");
    assert_eq!(report.closed, std::slice::from_ref(&run));
    assert!(
        report.removed.iter().any(|o| o.node.is_some()),
        "{report:?}"
    );
    // Only the other instance's volume is left of any stack, on any node.
    let left: Vec<Vec<String>> = ids
        .iter()
        .map(|id| bed.sim.volumes_on(id, &namespaced()))
        .collect();
    assert_eq!(
        left,
        [vec![], vec![], vec!["hr-app-0000000000_data".to_string()]]
    );
    assert_eq!(
        bed.sim.volumes_on(&ids[1], &LabelFilter::all()),
        ["foreign_data"]
    );
    assert_eq!(
        bed.sim.volumes_on(&ids[2], &LabelFilter::all()),
        ["hr-app-0000000000_data"]
    );
    // The history of the run names the remote volumes it removed.
    let history = bed
        .store
        .history(&Query::newest(10).about(state::history::ObjectRef::new(crd::Kind::Run, &run)))
        .unwrap();
    let swept = history.iter().find(|e| e.reason == "Swept").unwrap();
    assert!(
        swept.details["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["node"] == ids[1].as_str() || o["node"] == ids[2].as_str()),
        "{:?}",
        swept.details
    );
    // An unscoped sweeper leaves the foreign volume alone as well.
    let mut unscoped = sweeper.clone();
    unscoped.config.scope = LabelFilter::all();
    let plan = unscoped.plan().await.unwrap();
    assert!(
        !plan.remove.iter().any(|a| a.object.name == "foreign_data"),
        "{plan:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_node_endpoint_is_a_failure_of_the_pass_naming_the_node() {
    let (bed, sweeper, run, ids) = three_node_orphan().await;
    bed.sim.set_node_reachable(&ids[1], false);
    let report = sweeper.sweep().await.unwrap();
    let named: Vec<&String> = report
        .failures
        .iter()
        .filter(|f| {
            f.contains(&format!("node {}", ids[1]))
                && f.contains(&format!("sim://{}", ids[1]))
                && f.contains("did not answer")
        })
        .collect();
    assert_eq!(named.len(), 1, "{report:?}");
    // Its volumes are still there; the reachable node's are gone.
    assert!(!bed.sim.volumes_on(&ids[1], &namespaced()).is_empty());
    assert_eq!(
        bed.sim.volumes_on(&ids[2], &namespaced()),
        ["hr-app-0000000000_data"]
    );
    // The failure is in the run's history.
    let history = bed
        .store
        .history(&Query::newest(10).about(state::history::ObjectRef::new(crd::Kind::Run, &run)))
        .unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.details["failures"].as_array().is_some_and(|f| f
                .iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains("did not answer"))))),
        "{history:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_without_an_endpoint_is_reported_once_per_pass_and_a_single_node_pass_lists_no_nodes(
) {
    let (mut multi, mut sweeper, _run, ids) = three_node_orphan().await;
    sweeper.config.nodes = endpoints(&multi.sim, &ids[1..2]);
    multi.use_sweeper(sweeper.clone());
    let report = sweeper.sweep().await.unwrap();
    let blind: Vec<&String> = report
        .failures
        .iter()
        .filter(|f| f.contains("volumes not swept on nodes"))
        .collect();
    assert_eq!(blind.len(), 1, "{report:?}");
    assert!(
        blind[0].contains(&format!("sim-3 ({})", ids[2])) && blind[0].contains("--node-endpoint"),
        "{blind:?}"
    );
    assert!(!blind[0].contains(&ids[1]), "{blind:?}");
    // An idle pass reports it too.
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(
        report
            .failures
            .iter()
            .filter(|f| f.contains("volumes not swept on nodes"))
            .count(),
        1,
        "{report:?}"
    );

    // One node, no endpoint: no node list, `info` once per sweeper, nothing reported.
    let single = self::bed(1).await;
    let count = |sim: &SimSwarm, call: crate::swarm::Call| {
        sim.calls().iter().filter(|c| c.call == call).count()
    };
    for _ in 0..3 {
        let report = single.sweeper.sweep().await.unwrap();
        assert!(report.failures.is_empty(), "{report:?}");
    }
    let info = crate::swarm::Call::new(crate::swarm::Verb::Info, ObjectKind::Daemon);
    let nodes = crate::swarm::Call::new(crate::swarm::Verb::List, ObjectKind::Node);
    assert_eq!(count(&single.sim, info), 1);
    assert_eq!(count(&single.sim, nodes), 0);
}
