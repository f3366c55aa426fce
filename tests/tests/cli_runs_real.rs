//! The CI commands end to end: `hearth serve` in-process on the real swarm (temp data dir, free
//! port), the real `hearth` binary as the client (`target/<profile>/hearth`, built by
//! `cargo nextest run --workspace` / `cargo build -p hearth-controller`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::runtime::Shutdown;
use controller::serve::{self, Options, Running};
use controller::swarm::{Labels, Swarm};
use controller::warmapp::probe::GatewayProber;
use crd::names::BaseDomain;
use hearth_tests::support::{real_swarm, unique_name, RUN_LABEL, TEST_LABEL};

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

async fn start_serve(dir: &Path, state: &str, run: &str) -> (Running, Shutdown) {
    let swarm = real_swarm(run).await.expect("real swarm");
    std::fs::write(dir.join("state.yml"), state).unwrap();
    let socket = std::env::var_os("HEARTH_DOCKER_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    let options = Options {
        state_file: Some(dir.join("state.yml")),
        prune: true,
        data_dir: dir.join("data"),
        catalogue: Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue"),
        docker_socket: socket.clone(),
        resync: Duration::from_secs(300),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        base_domain: BaseDomain::parse("hearth.test").unwrap(),
        extra_labels: Labels::from([
            (TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string()),
            (RUN_LABEL.to_string(), run.to_string()),
        ]),
    };
    let prober = Arc::new(GatewayProber::new(
        socket,
        swarm.api_version(),
        Duration::from_secs(3),
    ));
    let swarm: Arc<dyn Swarm> = Arc::new(swarm);
    let shutdown = Shutdown::new();
    let running = serve::start(options, swarm, prober, shutdown.clone())
        .await
        .expect("hearth serve starts");
    (running, shutdown)
}

fn pool_yaml(name: &str, slots: u32, wait: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {name}\nspec:\n  slots: {slots}\n  \
         portBase: 31000\n  portsPerSlot: 10\n  waitTimeout: {wait}\n"
    )
}

fn slot_exec(server: &str, pool: &str, script: &str) -> Child {
    Command::new(hearth_bin())
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
    let (running, shutdown) = start_serve(dir.path(), &state, &run).await;
    let server = running.http_addr.unwrap().to_string();
    wait_for_pool(&server, "hearth-test-ci").await;
    wait_for_pool(&server, "hearth-test-one").await;

    // Ten jobs, enqueued 150 ms apart; each records its entry order and how many are inside
    // (a file per job that is inside), checked from inside the job.
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
        jobs.push(slot_exec(&server, "hearth-test-ci", &script));
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
    let mut next = slot_exec(&server, "hearth-test-one", "true");
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

async fn objects_of(swarm: &dyn Swarm, namespace: &str) -> controller::stack::Observed {
    let mut o = controller::stack::observe(swarm, namespace, controller::stack::Depth::WithTasks)
        .await
        .unwrap();
    // Tasks of removed services linger in the task list; they are not removable objects.
    o.tasks.clear();
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_ci_script_run_through_the_cli_is_cleaned_up_by_the_daemon_and_a_foreign_stack_stays(
) {
    let run = unique_name("cli-runkill");
    let dir = tempfile::tempdir().unwrap();
    let (running, shutdown) =
        start_serve(dir.path(), &pool_yaml("hearth-test-runs", 1, "1m"), &run).await;
    let server = running.http_addr.unwrap().to_string();
    wait_for_pool(&server, "hearth-test-runs").await;
    let swarm = real_swarm(&run).await.unwrap();

    // A foreign stack, deployed with `docker stack deploy` and no hearth labels.
    let foreign = format!("hearth-test-foreign-{}", &run[run.len() - 6..]).replace('_', "-");
    let compose = dir.path().join("foreign.yml");
    std::fs::write(
        &compose,
        format!(
            "version: \"3.8\"\nservices:\n  web:\n    image: hearth-fixture/webapp:1.0.0\n    \
             command: [\"/bin/serve\"]\n    deploy:\n      endpoint_mode: dnsrr\n      \
             labels: {{ \"hearth.test\": \"1\", \"{RUN_LABEL}\": \"{run}\" }}\n"
        ),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(&compose)
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CI-like script: starts a run owned by itself, lets hearth deploy, then waits.
    let stack_file = dir.path().join("stack");
    let script = format!(
        "set -e\neval \"$({hearth} run start --server {server} --recipe webapp --version 1.0.0 \
         --pool hearth-test-runs --owner-pid $$ --deploy -o env)\"\n\
         echo \"$HEARTH_STACK\" > {stack_file}.tmp && mv {stack_file}.tmp {stack_file}\nsleep 600\n",
        hearth = hearth_bin().display(),
        stack_file = stack_file.display()
    );
    let mut job = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    let stack = loop {
        if let Ok(s) = std::fs::read_to_string(&stack_file) {
            break s.trim().to_string();
        }
        assert!(Instant::now() < until, "run start did not finish");
        assert!(
            job.try_wait().unwrap().is_none(),
            "the CI script ended early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let o = controller::stack::observe(&swarm, &stack, controller::stack::Depth::WithTasks)
            .await
            .unwrap();
        if o.tasks
            .iter()
            .any(|t| t.state == controller::swarm::TaskState::Running)
        {
            break;
        }
        assert!(Instant::now() < until, "the run's stack did not come up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deployed = objects_of(&swarm, &stack).await;
    assert!(!deployed.services.is_empty(), "{deployed:?}");
    let client = controller::cli::ci::Client::new(server.parse().unwrap());

    let killed = Instant::now();
    job.kill().unwrap(); // SIGKILL
    job.wait().unwrap();
    loop {
        let o = objects_of(&swarm, &stack).await;
        if o.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "not swept: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    println!(
        "MEASURE cli_runs_real kill_to_last_object_gone_ms={}",
        took.as_millis()
    );
    // The slot is free again.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let pools: Vec<crd::SlotPool> = client.get("/api/v1/slotpools").await.unwrap();
        let pool = pools
            .iter()
            .find(|p| p.metadata.name == "hearth-test-runs")
            .unwrap();
        if pool.status.leases.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "slot still held: {:?}", pool.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The foreign stack is untouched.
    let f = objects_of(&swarm, &foreign).await;
    let _ = Command::new("docker")
        .args(["stack", "rm", &foreign])
        .output();
    assert_eq!(f.services.len(), 1, "{f:?}");

    shutdown.stop_gracefully();
    running.wait().await;
}
