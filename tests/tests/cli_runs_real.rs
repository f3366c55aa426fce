//! The CI commands end to end: `hearth serve` in-process on the real swarm (temp data dir, free
//! port), the real `hearth` binary as the client (`target/<profile>/hearth`, built by
//! `cargo nextest run --workspace` / `cargo build -p hearth-controller`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::runtime::Shutdown;
use controller::serve::{Options, Running};
use controller::swarm::Swarm;
use hearth_tests::ci_kill;
use hearth_tests::real_serve;
use hearth_tests::support::{real_swarm, unique_name};

/// The `hearth` binary next to this test's target directory.
fn hearth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/hearth
    let bin = exe.parent().unwrap().parent().unwrap().join("hearth");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p hearth-controller --bin hearth`; \
         `cargo nextest run --workspace` builds it)",
        bin.display()
    );
    bin
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
}

async fn start_serve(
    dir: &Path,
    state: &str,
    run: &str,
    catalogue: PathBuf,
) -> (Running, Shutdown) {
    let swarm = real_swarm(run).await.expect("real swarm");
    std::fs::write(dir.join("state.yml"), state).unwrap();
    let options = Options {
        catalogue,
        ..real_serve::options(dir, run)
    };
    real_serve::start(options, Arc::new(swarm.clone()), &swarm).await
}

fn pool_yaml(name: &str, slots: u32, wait: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {name}\nspec:\n  slots: {slots}\n  \
         portBase: 31000\n  portsPerSlot: 10\n  waitTimeout: {wait}\n"
    )
}

/// The token file of the daemon started in `dir` (clients get it through
/// `$HEARTH_TOKEN_FILE`, as a CI job would).
fn token_file(dir: &Path) -> PathBuf {
    dir.join("data").join("token")
}

fn slot_exec(dir: &Path, server: &str, pool: &str, script: &str) -> Child {
    Command::new(hearth_bin())
        .env("HEARTH_TOKEN_FILE", token_file(dir))
        .args(["slot", "exec", "--pool", pool, "--server", server, "--"])
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_for_pool(server: &str, pool: &str) {
    let client = controller::cli::ci::Client::new(server.parse().unwrap());
    for _ in 0..100 {
        let pools: Vec<crd::SlotPool> = client.get("/api/v1/slotpools").await.unwrap();
        if pools.iter().any(|p| p.metadata.name == pool) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pool {pool} never appeared");
}

/// Waits until the pool lists `pid` (the `hearth slot exec` wrapper) as a waiter or a lease
/// holder; jobs hold their slot for 0.6 s, far longer than the 20 ms between looks.
async fn wait_until_in_line(server: &str, pool: &str, pid: u32) {
    let client = controller::cli::ci::Client::new(server.parse().unwrap());
    let since = std::time::Instant::now();
    loop {
        let p: crd::SlotPool = client
            .get(&format!("/api/v1/slotpools/{pool}"))
            .await
            .unwrap();
        let st = &p.status;
        if st.leases.iter().any(|l| l.owner.pid == pid)
            || st.waiters.iter().any(|w| w.owner.pid == pid)
        {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "job {pid} never got in line: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_exec_with_three_slots_and_ten_jobs_keeps_three_inside_in_order_and_a_killed_wrapper_is_reclaimed(
) {
    let run = unique_name("cli-slot");
    let dir = tempfile::tempdir().unwrap();
    let state = format!(
        "{}---\n{}",
        pool_yaml("hearth-test-ci", 3, "2m"),
        pool_yaml("hearth-test-one", 1, "30s")
    );
    let (running, shutdown) = start_serve(dir.path(), &state, &run, examples()).await;
    let server = running.http_addr.unwrap().to_string();
    wait_for_pool(&server, "hearth-test-ci").await;
    wait_for_pool(&server, "hearth-test-one").await;

    // Ten jobs, each spawned once the daemon has the previous one in line (as a waiter or a
    // lease holder), so the order they arrive in is the order they were spawned in even on a
    // loaded machine; each records its entry order and how many are inside (a file per job
    // that is inside), checked from inside the job.
    let inside = dir.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    let log = dir.path().join("log");
    let mut jobs = Vec::new();
    for i in 0..10 {
        let script = format!(
            "touch {inside}/{i}; n=$(ls {inside} | wc -l); echo \"{i} $n $HEARTH_SLOT $HEARTH_PORT_BASE\" >> {log}; \
             sleep 0.6; rm {inside}/{i}",
            inside = inside.display(),
            log = log.display()
        );
        let job = slot_exec(dir.path(), &server, "hearth-test-ci", &script);
        wait_until_in_line(&server, "hearth-test-ci", job.id()).await;
        jobs.push(job);
        // Keep entries apart, so two jobs granted back to back don't race to write their
        // log line (the log records entry order as the jobs see it).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for mut job in jobs {
        let status = tokio::task::spawn_blocking(move || job.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "a job failed: {status}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 10, "{text}");
    let order: Vec<u32> = lines.iter().map(|l| l[0].parse().unwrap()).collect();
    let most = lines.iter().map(|l| l[1].parse::<u32>().unwrap()).max();
    println!("entry order {order:?}, most inside at once {most:?}");
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "FIFO: {text}");
    assert!(most.unwrap() <= 3, "more than 3 inside: {text}");
    assert!(
        lines
            .iter()
            .all(|l| l.len() == 4 && l[2].parse::<u32>().unwrap() < 3),
        "each job saw its slot and port base: {text}"
    );

    // A wrapper SIGKILLed while holding the only slot of a pool: the daemon reclaims the slot
    // (owner death), so the next job gets in long before the 30 s wait timeout.
    let child_pid = dir.path().join("child.pid");
    let mut holder = slot_exec(
        dir.path(),
        &server,
        "hearth-test-one",
        &format!("echo $$ > {}; exec sleep 120", child_pid.display()),
    );
    for _ in 0..200 {
        if std::fs::read_to_string(&child_pid).is_ok_and(|s| !s.trim().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let orphan: i32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let killed = Instant::now();
    let mut next = slot_exec(dir.path(), &server, "hearth-test-one", "true");
    let status = tokio::task::spawn_blocking(move || next.wait().unwrap())
        .await
        .unwrap();
    let took = killed.elapsed();
    // The orphaned command keeps running (it is not the lease owner); end it.
    let _ = Command::new("kill").arg(orphan.to_string()).status();
    println!("slot of the SIGKILLed wrapper reclaimed; next job ran after {took:?}");
    assert!(
        status.success(),
        "the next job did not get the slot: {status}"
    );
    assert!(
        took < Duration::from_secs(25),
        "reclaimed only by the wait timeout? {took:?}"
    );

    shutdown.stop_gracefully();
    running.wait().await;
}

/// Deploys the fixture full stack with `docker stack deploy` under `name`: no hearth label on
/// anything (only `hearth.test=1`).
fn deploy_foreign(name: &str) {
    let out = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(ci_kill::catalogue_dir().join("fullstack/compose.yml"))
        .arg(name)
        .env("VERSION", ci_kill::VERSION)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the foreign stack and, once its containers are gone, its volumes.
async fn remove_foreign(name: &str) {
    let _ = Command::new("docker").args(["stack", "rm", name]).output();
    for _ in 0..300 {
        let out = Command::new("docker")
            .args([
                "volume",
                "rm",
                &format!("{name}_data"),
                &format!("{name}_cache"),
            ])
            .output()
            .unwrap();
        if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("no such volume") {
            let left = Command::new("docker")
                .args(["volume", "ls", "-q", "--filter"])
                .arg(format!("label=com.docker.stack.namespace={name}"))
                .output()
                .unwrap();
            if left.stdout.trim_ascii().is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CI-kill scenario end to end: the script (`hearth run start --owner-pid $$ … -o env`,
/// with hearth or the script itself deploying the full stack) is SIGKILLed; the daemon removes
/// every object of the run — services, containers, networks, volumes, secrets, configs, each
/// kind checked by namespace and by run label — marks the run Orphaned and frees the slot,
/// while a foreign full stack deployed with `docker stack deploy` stays exactly as it was.
async fn a_killed_ci_script_is_cleaned_up(test: &str, deploy: ci_kill::Deploy) {
    let run = unique_name(test);
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) = start_serve(
        dir.path(),
        &pool_yaml("hearth-test-runs", 1, "1m"),
        &run,
        ci_kill::catalogue_dir(),
    )
    .await;
    let server = running.http_addr.unwrap().to_string();
    wait_for_pool(&server, "hearth-test-runs").await;
    let swarm = real_swarm(&run).await.unwrap();

    let foreign = format!("hearth-test-foreign-{}", &run[run.len() - 6..]).replace('_', "-");
    deploy_foreign(&foreign);

    let scenario = ci_kill::Scenario {
        hearth: hearth_bin(),
        server: server.clone(),
        pool: "hearth-test-runs".into(),
        deploy,
        work: dir.path().join("job"),
        env: vec![(
            "HEARTH_TOKEN_FILE".into(),
            token_file(dir.path()).display().to_string(),
        )],
    };
    let mut job = ci_kill::start_job(&swarm, &scenario, Duration::from_secs(120))
        .await
        .unwrap();
    println!("deployed: {:?}", job.deployed);
    // The foreign stack's containers appear after `docker stack deploy` returns: wait for
    // the whole stack before taking the snapshot it is compared against.
    let foreign_before =
        ci_kill::wait_until_complete(&swarm, &foreign, "-", Duration::from_secs(60))
            .await
            .unwrap();
    let client = controller::cli::ci::Client::new(server.parse().unwrap());
    let recorded: crd::Run = client
        .get(&format!("/api/v1/runs/{}", job.run))
        .await
        .unwrap();
    assert_eq!(recorded.status.phase, crd::RunPhase::Running);
    assert_eq!(recorded.spec.owner.pid, job.child.id());

    let killed = ci_kill::kill(&mut job).unwrap();
    let took = ci_kill::wait_until_gone(
        &swarm,
        &job.stack,
        &job.run,
        killed,
        Duration::from_secs(120),
        Duration::from_millis(25),
    )
    .await
    .unwrap();
    println!(
        "MEASURE cli_runs_real {deploy:?} kill_to_last_object_gone_ms={}",
        took.as_millis()
    );
    // The run is closed as orphaned and its slot is free again.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let pools: Vec<crd::SlotPool> = client.get("/api/v1/slotpools").await.unwrap();
        let pool = pools
            .iter()
            .find(|p| p.metadata.name == "hearth-test-runs")
            .unwrap();
        let r: crd::Run = client
            .get(&format!("/api/v1/runs/{}", job.run))
            .await
            .unwrap();
        if pool.status.leases.is_empty() && r.status.phase == crd::RunPhase::Orphaned {
            break;
        }
        assert!(
            Instant::now() < until,
            "slot still held or run not closed: {:?} {:?}",
            pool.status,
            r.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The foreign stack is untouched: every object still there.
    let foreign_after = ci_kill::inventory(&swarm, &foreign, "-").await.unwrap();
    remove_foreign(&foreign).await;
    assert_eq!(foreign_after, foreign_before);

    shutdown.stop_gracefully();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_ci_script_run_deployed_by_hearth_is_removed_entirely_and_a_foreign_stack_stays(
) {
    a_killed_ci_script_is_cleaned_up("cli-runkill", ci_kill::Deploy::Hearth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_ci_script_stack_deployed_by_the_harness_is_adopted_and_removed_and_a_foreign_stack_stays(
) {
    a_killed_ci_script_is_cleaned_up("cli-runadopt", ci_kill::Deploy::Harness).await;
}

/// `hearth run start --deploy` (no `--detach`) waits until the run's stack converges, with its
/// progress on stderr; stdout stays exactly the variables for `eval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_start_deploy_waits_for_the_stack_with_progress_on_stderr() {
    if real_swarm("run start waits").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_label = unique_name("rswait");
    let pool = format!("rw{:x}", std::process::id() & 0xffff);
    let (running, shutdown) = start_serve(
        dir.path(),
        &pool_yaml(&pool, 1, "1m"),
        &run_label,
        examples(),
    )
    .await;
    let server = running.http_addr.unwrap().to_string();
    let token = running.token_file.clone().unwrap();
    let owner = std::process::id().to_string();
    let hearth = |args: &[&str]| {
        let out = Command::new(hearth_bin())
            .args(args)
            .args(["--server", &server, "--token-file"])
            .arg(&token)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        println!("{args:?}: {}\n{stdout}{stderr}", out.status);
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = hearth(&[
        "run",
        "start",
        "--recipe",
        "webapp",
        "--version",
        "1.0.0",
        "--pool",
        &pool,
        "--owner-pid",
        &owner,
        "--deploy",
        "-o",
        "env",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("HEARTH_") && l.contains("='")),
        "stdout is only the variables: {stdout}"
    );
    let var = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}='")))
            .map(|v| v.trim_end_matches('\'').to_string())
            .unwrap()
    };
    let (id, stack) = (var("HEARTH_RUN_ID"), var("HEARTH_STACK"));
    assert!(
        stderr.contains(&format!("{stack}_app 1/1 ready")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Stack {stack} is ready")),
        "{stderr}"
    );
    let (ok, stdout, stderr) = hearth(&["run", "finish", &id]);
    assert!(ok, "{stdout}{stderr}");
    shutdown.stop_gracefully();
    running.wait().await;
}

/// A client of the daemon `running` (for reading runs back).
fn api(running: &Running) -> controller::cli::ci::Client {
    controller::cli::ci::ServerArg {
        server: running.http_addr.unwrap(),
        token_file: running.token_file.clone(),
        data_dir: None,
    }
    .client()
    .unwrap()
}

async fn get_run(api: &controller::cli::ci::Client, id: &str) -> crd::Run {
    api.get(&format!("/api/v1/runs/{id}")).await.unwrap()
}

/// Polls until the run is over (Succeeded/Failed/…), at most `within`.
async fn wait_terminal(api: &controller::cli::ci::Client, id: &str, within: Duration) -> crd::Run {
    let end = Instant::now() + within;
    loop {
        let run = get_run(api, id).await;
        if run.status.phase.is_terminal() {
            return run;
        }
        assert!(
            Instant::now() < end,
            "run {id} still {:?}",
            run.status.phase
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// `hearth run exec`: CMD gets the run's variables and its status is the wrapper's; the
/// run is finished with a verified teardown of its stack; 20 wrappers whose lease (TTL 2 s)
/// would expire without heartbeats are never swept while their command runs (4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exec_passes_the_commands_status_finishes_the_run_and_is_never_swept_while_it_runs() {
    if real_swarm("run exec").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_label = unique_name("rexec");
    let pool = format!("rx{:x}", std::process::id() & 0xffff);
    let (running, shutdown) = start_serve(
        dir.path(),
        &pool_yaml(&pool, 1, "1m"),
        &run_label,
        examples(),
    )
    .await;
    let server = running.http_addr.unwrap().to_string();
    let token = running.token_file.clone().unwrap();
    let api = api(&running);
    let exec = |extra: &[&str], script: &str| {
        Command::new(hearth_bin())
            .args(["run", "exec", "--recipe", "webapp", "--version", "1.0.0"])
            .args(extra)
            .args(["--server", &server, "--token-file"])
            .arg(&token)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Exit 3 with a deployed stack: the wrapper exits 3, the run is over, its stack gone.
    let out = exec(
        &["--pool", &pool, "--deploy"],
        "echo \"$HEARTH_RUN_ID $HEARTH_STACK $HEARTH_SLOT\"; exit 3",
    )
    .wait_with_output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let mut vars = stdout.split_whitespace();
    let (id, stack, slot) = (
        vars.next().unwrap().to_string(),
        vars.next().unwrap().to_string(),
        vars.next().unwrap().to_string(),
    );
    assert_eq!(slot, "0", "{stdout}");
    let run = get_run(&api, &id).await;
    assert!(run.status.phase.is_terminal(), "{:?}", run.status.phase);
    assert!(
        run.status.residuals.is_empty(),
        "{:?}",
        run.status.residuals
    );
    assert!(stderr.contains("teardown verified"), "{stderr}");
    let swarm = real_swarm("run exec").await.unwrap();
    let left = swarm
        .list_services(&controller::swarm::LabelFilter::eq(
            controller::swarm::labels::NAMESPACE,
            &stack,
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "stack {stack} left {left:?}");

    // 20 wrappers at once, TTL 2 s, each command running 4 s: heartbeats keep every run.
    let started = Instant::now();
    let jobs: Vec<Child> = (0..20)
        .map(|_| exec(&["--ttl", "2s"], "echo $HEARTH_RUN_ID; sleep 4"))
        .collect();
    for job in jobs {
        let out = tokio::task::spawn_blocking(move || job.wait_with_output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        let id = stdout.trim();
        let run = get_run(&api, id).await;
        // Finished by its wrapper (a swept run would have refused the finish: exit 1).
        assert!(stderr.contains("teardown verified"), "{stderr}");
        assert!(run.status.finished_at_ms.is_some(), "{run:?}");
        let history: Vec<serde_json::Value> = api
            .get(&format!("/api/v1/history?kind=Run&name={id}"))
            .await
            .unwrap();
        assert!(
            !history.iter().any(|e| e["reason"] == "Swept"),
            "run {id} was swept while its command ran: {history:?}"
        );
    }
    println!("20 run exec wrappers: {:?}", started.elapsed());
    shutdown.stop_gracefully();
}

/// A lease run outlives the `hearth run start` that created it, lives on heartbeats and is
/// swept once they stop, after its TTL; a container-owned run is swept within 3 s of `docker
/// kill` of its container (times from Docker's die event and the run's finishedAtMs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_runs_live_on_heartbeats_and_container_runs_die_with_their_container() {
    if real_swarm("run owners").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_label = unique_name("rown");
    let pool = format!("ro{:x}", std::process::id() & 0xffff);
    let (running, shutdown) = start_serve(
        dir.path(),
        &pool_yaml(&pool, 2, "1m"),
        &run_label,
        examples(),
    )
    .await;
    let server = running.http_addr.unwrap().to_string();
    let token = running.token_file.clone().unwrap();
    let api = api(&running);
    let hearth = |args: &[&str]| {
        let out = Command::new(hearth_bin())
            .args(args)
            .args(["--server", &server, "--token-file"])
            .arg(&token)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        stdout
    };
    let start = |owner: &str, ttl: &str| {
        let env = hearth(&[
            "run",
            "start",
            "--recipe",
            "webapp",
            "--version",
            "1.0.0",
            "--pool",
            &pool,
            "--owner",
            owner,
            "--ttl",
            ttl,
            "-o",
            "env",
        ]);
        env.lines()
            .find_map(|l| l.strip_prefix("HEARTH_RUN_ID='"))
            .unwrap()
            .trim_end_matches('\'')
            .to_string()
    };
    // Lease, TTL 3 s: the creating CLI has exited; heartbeats at 1.5 s and 3 s keep it past
    // 3 s after creation; without them it is swept after lastHeartbeat + 3 s.
    let lease = start("lease", "3s");
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        hearth(&["run", "heartbeat", &lease]);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = get_run(&api, &lease).await;
    assert!(
        !run.status.phase.is_terminal(),
        "swept while heartbeating: {run:?}"
    );
    let last = run.status.last_heartbeat_ms.unwrap();
    let run = wait_terminal(&api, &lease, Duration::from_secs(10)).await;
    let finished = run.status.finished_at_ms.unwrap();
    println!(
        "lease run swept {} ms after its last heartbeat (TTL 3000)",
        finished - last
    );
    assert!(finished >= last + 3000, "swept before its TTL: {run:?}");

    // Container owner: killed → swept within 3 s of the die event.
    let name = unique_name("rowner");
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--name",
            &name,
            "--label",
            "hearth.test=1",
        ])
        .args([
            "--entrypoint",
            "sleep",
            hearth_tests::support::fixtures::WEBAPP_1_0_0,
            "300",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let owned = start(&format!("container:{container}"), "10m");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!get_run(&api, &owned).await.status.phase.is_terminal());
    let since = now_ms() / 1000;
    let killed = Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let run = wait_terminal(&api, &owned, Duration::from_secs(10)).await;
    let events = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(now_ms() / 1000 + 1).to_string(),
        ])
        .args([
            "--filter",
            &format!("container={container}"),
            "--filter",
            "event=die",
        ])
        .args(["--format", "{{.TimeNano}}"])
        .output()
        .unwrap();
    let died_ns: u64 = String::from_utf8_lossy(&events.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let died = died_ns / 1_000_000;
    let finished = run.status.finished_at_ms.unwrap();
    println!(
        "container-owned run finished {} ms after the die event",
        finished.saturating_sub(died)
    );
    assert!(
        finished <= died + 3000,
        "die at {died}, finished at {finished}"
    );
    shutdown.stop_gracefully();
}
