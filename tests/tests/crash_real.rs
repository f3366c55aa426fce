//! Crash safety on the real swarm (issue 7, item 2): a CI-like workload runs against `hearth
//! serve` — a child process with its own data directory and port — while the daemon is
//! SIGKILLed at random moments and restarted each time.
//!
//! Workers start runs (some with `deploy`), report tiers, finish them or let their owner
//! process die, retrying every request that met a dead daemon, and write down every answer the
//! daemon acknowledged. After the kills the owners all die, the daemon converges, and the test
//! checks:
//!
//! - no acknowledged state is lost: every acknowledged run exists, got at least as far as
//!   acknowledged, keeps every acknowledged tier report, and an acknowledged finish's phase;
//! - nothing is left behind: every run is terminal, the slot pool holds no lease, and no
//!   service, task container, network, volume, secret or config of this test remains — listed
//!   by label and by each run's stack namespace;
//! - no stack is deployed twice: `docker events` (recorded live from before the first start)
//!   shows at most one creation per service name of a run's stack, and at least one for each
//!   acknowledged deploy (so the recording is known to work).
//!
//! `HEARTH_CRASH_KILLS` sets the number of kills (default 5, the CI variant; the full run is
//! `bash scripts/crash.sh`, 25 kills), `HEARTH_CRASH_SEED` the random seed (printed).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller::cli::ci::{Client, Error as ClientError};
use controller::runs::Started;
use controller::swarm::Swarm;
use crd::{Run, RunPhase, SlotPool, TierOutcome};
use hearth_tests::process::{free_addr, ServeProcess};
use hearth_tests::support::{real_swarm, run_filter, unique_name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The slot pool every run takes a slot of.
const POOL: &str = "hearth-test-crash";
/// Concurrent CI-like workers.
const WORKERS: usize = 4;
/// How long one request is retried while the daemon is down or restarting.
const RETRY_FOR: Duration = Duration::from_secs(90);
/// How long a restarted daemon may take to answer.
const RESTART_WITHIN: Duration = Duration::from_secs(30);
/// How long the daemon may take to converge once every owner is dead.
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);

/// One acknowledged answer of the daemon.
#[derive(Debug, Clone)]
enum Ack {
    /// `POST /runs` answered 201: the run is Running (its stack deployed, with `deploy`).
    Started { run: String, deploy: bool },
    /// `POST /runs/{id}/report` answered 200 with these tiers recorded.
    Reported {
        run: String,
        tiers: Vec<(String, TierOutcome)>,
    },
    /// `POST /runs/{id}/finish` answered 200 (or, on a retry, "already over") with this phase.
    Finished { run: String, phase: RunPhase },
}

/// Kills what the test spawned, also when it fails half-way (the daemon is killed by its
/// own `Drop`).
struct Guard {
    owners: Arc<Mutex<Vec<Child>>>,
    events: Option<Child>,
    /// The daemon's directory: its logs (one per incarnation) are kept on drop, pass or fail.
    logs: PathBuf,
}

/// Copies every incarnation's log (`serve-<n>.log`) to `<target dir>/test-artifacts/crash_real/`
/// (emptied first), so a failed run can be read afterwards.
fn keep_logs(from: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // The test executable lives in <target>/<profile>/deps/.
    let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) else {
        return;
    };
    let to = target.join("test-artifacts").join("crash_real");
    let _ = std::fs::remove_dir_all(&to);
    if std::fs::create_dir_all(&to).is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("serve-") {
            let _ = std::fs::copy(entry.path(), to.join(&name));
        }
    }
    eprintln!("crash_real: the daemon's logs are kept in {}", to.display());
}

impl Drop for Guard {
    fn drop(&mut self) {
        keep_logs(&self.logs);
        for mut owner in self.owners.lock().unwrap().drain(..) {
            let _ = owner.kill();
            let _ = owner.wait();
        }
        if let Some(mut events) = self.events.take() {
            let _ = events.kill();
            let _ = events.wait();
        }
    }
}

/// What the workers saw, shared.
#[derive(Default)]
struct Ledger {
    acks: Vec<Ack>,
    /// Requests that met a dead or restarting daemon and were sent again.
    retries: u32,
    /// Answers that were neither an acknowledgement nor a transport failure.
    refusals: Vec<String>,
}

/// Sends a request until the daemon answers; transport failures (daemon down) are retried.
async fn retrying<T, F, Fut>(
    ledger: &Mutex<Ledger>,
    what: &str,
    mut call: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let until = Instant::now() + RETRY_FOR;
    loop {
        let answer = tokio::time::timeout(RETRY_FOR, call()).await;
        match answer {
            Ok(Err(ClientError::DaemonUnreachable { .. })) | Err(_) => {
                assert!(
                    Instant::now() < until,
                    "{what}: no answer within {RETRY_FOR:?}"
                );
                ledger.lock().unwrap().retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(other) => return other,
        }
    }
}

/// A CI job's script: a process whose death the daemon must notice.
fn spawn_owner(owners: &Mutex<Vec<Child>>) -> crd::Owner {
    let child = Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let owner = controller::liveness::owner_of(child.id()).unwrap();
    owners.lock().unwrap().push(child);
    owner
}

fn kill_owner(owners: &Mutex<Vec<Child>>, pid: u32) {
    let mut list = owners.lock().unwrap();
    if let Some(i) = list.iter().position(|c| c.id() == pid) {
        let mut child = list.swap_remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One worker: CI jobs one after another until `stop`.
async fn worker(
    id: usize,
    seed: u64,
    client: Client,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    owners: Arc<Mutex<Vec<Child>>>,
    jobs: Arc<AtomicU32>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    while !stop.load(Ordering::Relaxed) {
        jobs.fetch_add(1, Ordering::Relaxed);
        let owner = spawn_owner(&owners);
        let pid = owner.pid;
        let deploy = rng.random_bool(0.4);
        let body = serde_json::json!({
            "recipe": "webapp",
            "version": "1.0.0",
            "pool": POOL,
            "owner": owner,
            "deploy": deploy,
            "requiredTiers": ["install"],
        });
        let started = retrying(&ledger, "run start", || {
            client.post::<Started>("/api/v1/runs", &body)
        })
        .await;
        let run = match started {
            Ok(s) => {
                ledger.lock().unwrap().acks.push(Ack::Started {
                    run: s.run.clone(),
                    deploy,
                });
                s.run
            }
            Err(e) => {
                ledger.lock().unwrap().refusals.push(format!("start: {e}"));
                kill_owner(&owners, pid);
                continue;
            }
        };
        // The job's tests run for a while.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        // 0–5: report and finish; 6–7: report, then the job is killed; 8–9: killed at once.
        let fate = rng.random_range(0..10);
        if fate < 8 {
            let outcome = if rng.random_bool(0.7) {
                TierOutcome::Pass
            } else {
                TierOutcome::Fail
            };
            let tier = match outcome {
                TierOutcome::Pass => "install=pass".to_string(),
                _ => "install=fail:broken".to_string(),
            };
            let path = format!("/api/v1/runs/{run}/report");
            let body = serde_json::json!({ "tiers": [tier] });
            match retrying(&ledger, "run report", || client.post::<Run>(&path, &body)).await {
                Ok(_) => ledger.lock().unwrap().acks.push(Ack::Reported {
                    run: run.clone(),
                    tiers: vec![("install".into(), outcome)],
                }),
                Err(e) => ledger
                    .lock()
                    .unwrap()
                    .refusals
                    .push(format!("report {run}: {e}")),
            }
        }
        if fate < 6 {
            let path = format!("/api/v1/runs/{run}/finish");
            let body = serde_json::json!({});
            let mut attempts = 0;
            let answer = retrying(&ledger, "run finish", || {
                attempts += 1;
                client.post::<Run>(&path, &body)
            })
            .await;
            match answer {
                Ok(r) => ledger.lock().unwrap().acks.push(Ack::Finished {
                    run: run.clone(),
                    phase: r.status.phase,
                }),
                // A retried finish whose first attempt completed before the kill.
                Err(ClientError::RequestRefused { status: 409, .. }) if attempts > 1 => {
                    let get = format!("/api/v1/runs/{run}");
                    let r: Run = retrying(&ledger, "run get", || client.get::<Run>(&get))
                        .await
                        .unwrap();
                    ledger.lock().unwrap().acks.push(Ack::Finished {
                        run: run.clone(),
                        phase: r.status.phase,
                    });
                }
                Err(e) => ledger
                    .lock()
                    .unwrap()
                    .refusals
                    .push(format!("finish {run}: {e}")),
            }
        }
        // The job's script ends (or is killed): its process is gone either way.
        kill_owner(&owners, pid);
    }
}

fn phase_rank(p: RunPhase) -> u8 {
    match p {
        RunPhase::Pending => 0,
        RunPhase::Deploying => 1,
        RunPhase::Running => 2,
        RunPhase::Finishing | RunPhase::TeardownFailed => 3,
        RunPhase::Succeeded | RunPhase::Failed | RunPhase::Expired | RunPhase::Orphaned => 4,
    }
}

/// Everything of this test still on the swarm, by label and by the runs' namespaces.
async fn leftovers(swarm: &dyn Swarm, run_label: &str, stacks: &[String]) -> Vec<String> {
    let filter = run_filter(run_label);
    let mut out = Vec::new();
    for s in swarm.list_services(&filter).await.unwrap() {
        out.push(format!("service {}", s.meta.name));
    }
    for c in swarm.list_containers(&filter).await.unwrap() {
        out.push(format!("container {} ({:?})", c.id, c.state));
    }
    for n in swarm.list_networks(&filter).await.unwrap() {
        out.push(format!("network {}", n.name));
    }
    for v in swarm.list_volumes(&filter).await.unwrap() {
        out.push(format!("volume {}", v.name));
    }
    for s in swarm.list_secrets(&filter).await.unwrap() {
        out.push(format!("secret {}", s.meta.name));
    }
    for c in swarm.list_configs(&filter).await.unwrap() {
        out.push(format!("config {}", c.meta.name));
    }
    for stack in stacks {
        // hearth's labels are not on containers (#13): they carry the stack's namespace.
        let namespace = controller::swarm::LabelFilter::eq("com.docker.stack.namespace", stack);
        for c in swarm.list_containers(&namespace).await.unwrap() {
            out.push(format!("container {} ({:?})", c.id, c.state));
        }
        let o = controller::stack::observe(swarm, stack, controller::stack::Depth::Objects)
            .await
            .unwrap();
        if !o.is_empty() {
            out.push(format!("stack {stack}: {o:?}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_daemon_loses_no_acknowledged_state_leaves_nothing_behind_and_deploys_nothing_twice(
) {
    let run_label = unique_name("crash");
    let Some(swarm) = real_swarm(&run_label).await else {
        return;
    };
    let kills: u32 = std::env::var("HEARTH_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("HEARTH_CRASH_KILLS is a number"))
        .unwrap_or(5);
    let seed: u64 = std::env::var("HEARTH_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("HEARTH_CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    println!("crash test: {kills} kills, seed {seed}, label {run_label}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.yml"),
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {POOL}\nspec:\n  slots: 8\n  \
             portBase: 32000\n  portsPerSlot: 10\n  waitTimeout: 2m\n"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let catalogue = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue");
    let mut daemon = ServeProcess::new(
        dir.path(),
        addr,
        vec![
            "--state".into(),
            dir.path().join("state.yml").into(),
            "--catalogue".into(),
            catalogue.into(),
            "--base-domain".into(),
            "hearth.test".into(),
            "--label".into(),
            "hearth.test=1".into(),
            "--label".into(),
            format!("hearth.test.run={run_label}").into(),
        ],
    );
    let owners: Arc<Mutex<Vec<Child>>> = Arc::default();
    // Service creations, recorded live (the daemon keeps only 256 events).
    let events_file = dir.path().join("events");
    let events = Command::new("/usr/bin/docker")
        .args([
            "events",
            "--filter",
            "type=service",
            "--filter",
            "event=create",
            "--format",
            "{{.Actor.ID}} {{.Actor.Attributes.name}}",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&events_file).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard {
        owners: owners.clone(),
        events: Some(events),
        logs: dir.path().to_path_buf(),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    daemon.spawn();
    daemon.ready(RESTART_WITHIN).await;
    // Mutations carry the token the daemon created in its data directory (kept across restarts).
    let client = daemon.client();
    hearth_tests::support::eventually(
        "the slot pool is loaded",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let pools: Vec<SlotPool> = client.get("/api/v1/slotpools").await.ok()?;
            pools.iter().any(|p| p.metadata.name == POOL).then_some(())
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let jobs = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            tokio::spawn(worker(
                i,
                seed,
                client.clone(),
                stop.clone(),
                ledger.clone(),
                owners.clone(),
                jobs.clone(),
            ))
        })
        .collect();

    // The kills: at a random moment after each restart, SIGKILL, reap, restart.
    let workload = Instant::now();
    let mut restarts = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        daemon.kill();
        daemon.spawn();
        let took = daemon.ready(RESTART_WITHIN).await;
        restarts.push(took);
        println!(
            "kill {}/{kills} at {:.1}s: restarted and answering after {took:?}",
            k + 1,
            workload.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let workload_took = workload.elapsed();
    // Every job's process is gone by now; the daemon must close and sweep what is left.
    assert!(owners.lock().unwrap().is_empty());

    let converge = Instant::now();
    let (runs, left) = loop {
        let runs: Vec<Run> = client.get("/api/v1/runs").await.unwrap();
        let pools: Vec<SlotPool> = client.get("/api/v1/slotpools").await.unwrap();
        let leases: usize = pools
            .iter()
            .filter(|p| p.metadata.name == POOL)
            .map(|p| p.status.leases.len())
            .sum();
        let stacks: Vec<String> = runs
            .iter()
            .filter_map(|r| r.status.stack_name.clone())
            .chain(
                runs.iter()
                    .flat_map(|r| r.status.deps.iter().map(|d| d.stack_name.clone())),
            )
            .collect();
        let open: Vec<String> = runs
            .iter()
            .filter(|r| !r.status.phase.is_terminal())
            .map(|r| format!("{} {:?}", r.metadata.name, r.status.phase))
            .collect();
        let left = leftovers(&swarm, &run_label, &stacks).await;
        if open.is_empty() && leases == 0 && left.is_empty() {
            break (runs, left);
        }
        if converge.elapsed() > CONVERGE_WITHIN {
            panic!(
                "not converged within {CONVERGE_WITHIN:?}: open runs {open:?}, {leases} lease(s), \
                 left on the swarm {left:?}\nlast daemon log:\n{}",
                daemon.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(left.is_empty());
    let converged_after = converge.elapsed();

    // 1. No acknowledged state lost.
    let by_name: BTreeMap<&str, &Run> =
        runs.iter().map(|r| (r.metadata.name.as_str(), r)).collect();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut lost = Vec::new();
    let mut acked_runs = BTreeSet::new();
    let mut acked_deploys = BTreeSet::new();
    for ack in &ledger.acks {
        let name = match ack {
            Ack::Started { run, .. } | Ack::Reported { run, .. } | Ack::Finished { run, .. } => run,
        };
        acked_runs.insert(name.clone());
        let Some(r) = by_name.get(name.as_str()) else {
            lost.push(format!("{ack:?}: the run is gone"));
            continue;
        };
        match ack {
            Ack::Started { deploy, .. } => {
                if phase_rank(r.status.phase) < phase_rank(RunPhase::Running) {
                    lost.push(format!("{ack:?}: now {:?}", r.status.phase));
                }
                if r.status.deployed_at_ms.is_none() {
                    lost.push(format!("{ack:?}: no deployedAt recorded"));
                }
                if *deploy {
                    acked_deploys.insert(r.status.stack_name.clone().unwrap_or_default());
                }
            }
            Ack::Reported { tiers, .. } => {
                for (tier, outcome) in tiers {
                    let kept = r
                        .status
                        .tiers
                        .iter()
                        .any(|t| &t.name == tier && &t.result == outcome);
                    if !kept {
                        lost.push(format!("{ack:?}: tiers now {:?}", r.status.tiers));
                    }
                }
            }
            Ack::Finished { phase, .. } => {
                let same = if phase.is_terminal() {
                    r.status.phase == *phase
                } else {
                    // TeardownFailed: retried until terminal, never back before Finishing.
                    phase_rank(r.status.phase) >= phase_rank(*phase)
                };
                if !same || !r.spec.finish {
                    lost.push(format!("{ack:?}: now {:?}", r.status.phase));
                }
            }
        }
    }

    // 2. No stack deployed twice: one creation per service name of this test's run stacks.
    let mut guard_events = guard.events.take().unwrap();
    let _ = guard_events.kill();
    let _ = guard_events.wait();
    let text = std::fs::read_to_string(&events_file).unwrap();
    let stacks: BTreeSet<String> = runs
        .iter()
        .filter_map(|r| r.status.stack_name.clone())
        .collect();
    let mut created: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let Some((stack, _)) = name.split_once('_') else {
            continue;
        };
        if stacks.contains(stack) {
            created
                .entry(name.to_string())
                .or_default()
                .push(id.to_string());
        }
    }
    let twice: Vec<_> = created.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let deployed_stacks: BTreeSet<&str> = created
        .keys()
        .filter_map(|n| n.split_once('_').map(|(s, _)| s))
        .collect();
    let unseen: Vec<_> = acked_deploys
        .iter()
        .filter(|s| !deployed_stacks.contains(s.as_str()))
        .collect();

    // Starts a kill cut off are closed by the next process's run reconciler
    // (`runs::reconcile`):
    // never one whose start was acknowledged.
    let interrupted: BTreeSet<&str> = runs
        .iter()
        .filter(|r| {
            r.status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("start interrupted"))
        })
        .map(|r| r.metadata.name.as_str())
        .collect();
    for name in &interrupted {
        if acked_runs.contains(*name) {
            lost.push(format!(
                "{name}: acknowledged, but closed as an interrupted start"
            ));
        }
    }

    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *phases.entry(format!("{:?}", r.status.phase)).or_default() += 1;
    }
    let mut restarts_ms: Vec<u128> = restarts.iter().map(Duration::as_millis).collect();
    restarts_ms.sort_unstable();
    println!(
        "MEASURE crash_real kills={kills} seed={seed} jobs={} runs_recorded={} acked_runs={} \
         acks={} acked_deploys={} services_created={} retried_requests={} workload_s={:.1} \
         converged_s={:.1} restart_to_ready_ms_median={} restart_to_ready_ms_max={} \
         closed_as_interrupted_starts={} phases={phases:?}",
        jobs.load(Ordering::Relaxed),
        runs.len(),
        acked_runs.len(),
        ledger.acks.len(),
        acked_deploys.len(),
        created.len(),
        ledger.retries,
        workload_took.as_secs_f64(),
        converged_after.as_secs_f64(),
        restarts_ms
            .get(restarts_ms.len() / 2)
            .copied()
            .unwrap_or_default(),
        restarts_ms.last().copied().unwrap_or_default(),
        interrupted.len(),
    );
    drop(guard);
    assert!(lost.is_empty(), "acknowledged state lost: {lost:#?}");
    assert!(
        twice.is_empty(),
        "services created more than once: {twice:?}"
    );
    assert!(
        unseen.is_empty(),
        "acknowledged deploys without a recorded creation (is the event recording broken?): {unseen:?}"
    );
    assert!(
        ledger.refusals.is_empty(),
        "requests refused: {:#?}",
        ledger.refusals
    );
    assert!(
        acked_runs.len() >= kills as usize,
        "too little work happened between the kills: {} acknowledged runs",
        acked_runs.len()
    );
}
