//! hearth's multi-node promises on a real multi-node swarm: three dockerd on this machine,
//! each in its own network and UTS namespace (`scripts/cluster.sh`, `hearth_tests::cluster`).
//! Node 1 is the manager hearth talks to; nodes 2 and 3 are workers; hearth is given every
//! node's socket with `--node-endpoint hearth-nodeN=unix:///run/hearth-cluster/nodeN.sock`.
//!
//! The stacks are the `spread` recipe of `tests/fixtures/catalogue`: a global service (a task
//! on every node) mounting the stack's volume, so each node holds its own copy of the volume,
//! which only that node's daemon can remove. What is left is always checked on each node's own
//! daemon ([`Cluster::leftovers`]), never through hearth.
//!
//! The tests share the cluster and stop or partition its nodes, so they run one at a time (the
//! `cluster` group of `.config/nextest.toml`). Needs root; under `CI=true` a cluster that cannot
//! be brought up fails the test, elsewhere it is skipped loudly.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;
use controller::runs::Started;
use controller::swarm::{LabelFilter, Swarm, TaskState};
use crd::{Run, RunPhase};
use hearth_tests::ci_kill::catalogue_dir;
use hearth_tests::cluster::{Cluster, NAMESPACE_LABEL, RECIPE};
use hearth_tests::process::{free_addr, ServeProcess};

/// `hearth serve` on the cluster's manager with every node's endpoint, the fixture catalogue
/// and `hearth.test=1` on everything it deploys.
async fn serve(cluster: &Cluster, dir: &Path, extra: &[&str]) -> ServeProcess {
    let mut args: Vec<OsString> = vec![
        "--docker-socket".into(),
        cluster.node(1).socket.clone().into(),
        "--catalogue".into(),
        catalogue_dir().into(),
        "--label".into(),
        "hearth.test=1".into(),
    ];
    for e in cluster.endpoints() {
        args.push("--node-endpoint".into());
        args.push(e.into());
    }
    args.extend(extra.iter().map(OsString::from));
    let mut hearth = ServeProcess::new(dir, free_addr(), args);
    hearth.spawn();
    hearth.ready(Duration::from_secs(30)).await;
    hearth
}

/// Starts a run of `spread` owned by `owner`, deployed by hearth.
async fn start_run(client: &Client, owner: crd::Owner) -> Started {
    let body = serde_json::json!({
        "recipe": RECIPE, "version": "1.0.0", "owner": owner, "deploy": true,
        "requiredTiers": ["e2e"],
    });
    client
        .post::<Started>("/api/v1/runs", &body)
        .await
        .unwrap_or_else(|e| panic!("run start: {e}"))
}

/// Waits until stack `ns` has a running task, a container and its volume on every node.
async fn wait_spread(cluster: &Cluster, ns: &str) {
    cluster
        .wait_spread(ns, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Reports a passing tier (so a verified teardown ends the run Succeeded) and finishes it.
async fn finish(client: &Client, run: &str) -> Result<Run, controller::cli::ci::Error> {
    let _: Run = client
        .post(
            &format!("/api/v1/runs/{run}/report"),
            &serde_json::json!({"tiers": ["e2e=pass"]}),
        )
        .await
        .unwrap();
    client
        .post(
            &format!("/api/v1/runs/{run}/finish"),
            &serde_json::json!({}),
        )
        .await
}

/// Polls the run until its phase is not `while_in` (or 90 s passed).
async fn wait_phase_leaves(
    client: &Client,
    run: &str,
    while_in: &[RunPhase],
    hearth: &ServeProcess,
) -> Run {
    let since = Instant::now();
    loop {
        let r = get_run(client, run).await;
        if !while_in.contains(&r.status.phase) {
            return r;
        }
        assert!(
            since.elapsed() < Duration::from_secs(90),
            "still {:?} after 90 s: {:?}\n{}",
            r.status.phase,
            r.status,
            hearth.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn get_run(client: &Client, run: &str) -> Run {
    client.get(&format!("/api/v1/runs/{run}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_overlay_network_reaches_a_task_on_another_node() {
    let Some(cluster) = Cluster::ensure("cluster-overlay").await else {
        return;
    };
    let name = hearth_tests::support::unique_name("ov");
    let manager = cluster.node(1).socket.display().to_string();
    let docker = |sock: &str, args: &[&str]| {
        let out = Command::new("/usr/bin/docker")
            .args(["-H", &format!("unix://{sock}")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let net = format!("{name}-net");
    docker(
        &manager,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--label",
            "hearth.test=1",
            &net,
        ],
    );
    for (svc, node) in [("a", 2), ("b", 3)] {
        docker(
            &manager,
            &[
                "service",
                "create",
                "-q",
                "-d",
                "--name",
                &format!("{name}-{svc}"),
                "--label",
                "hearth.test=1",
                "--network",
                &net,
                "--endpoint-mode",
                "dnsrr",
                "--constraint",
                &format!("node.hostname==hearth-node{node}"),
                "hearth-fixture/webapp:1.0.0",
                "/bin/serve",
            ],
        );
    }
    // The task of `a` on node 2 resolves `b` (on node 3) through swarm's DNS and fetches its
    // /version over the overlay network (VXLAN between the two nodes' namespaces).
    let node2 = cluster.node(2).socket.display().to_string();
    let since = Instant::now();
    let answer = loop {
        let id = docker(
            &node2,
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={name}-a"),
            ],
        );
        if !id.is_empty() {
            let out = Command::new("/usr/bin/docker")
                .args(["-H", &format!("unix://{node2}"), "exec", &id, "sh", "-c"])
                .arg(format!(
                    "printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | busybox nc {name}-b 8080"
                ))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.trim_end().ends_with("1.0.0") {
                break text;
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "node 2's task never reached node 3's over the overlay"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(answer.contains("200 OK"), "{answer}");
    let b_node = docker(
        &manager,
        &[
            "service",
            "ps",
            "--format",
            "{{.Node}}",
            &format!("{name}-b"),
        ],
    );
    assert_eq!(b_node.lines().next(), Some("hearth-node3"));
    docker(
        &manager,
        &["service", "rm", &format!("{name}-a"), &format!("{name}-b")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_finished_run_removes_its_volume_on_every_node() {
    let Some(cluster) = Cluster::ensure("cluster-finish").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hearth = serve(&cluster, dir.path(), &[]).await;
    let client = hearth.client();
    let started = start_run(&client, controller::liveness::current_owner().unwrap()).await;
    // Each node holds its own copy of the volume, which only its own daemon can remove.
    wait_spread(&cluster, &started.stack).await;
    let finished = finish(&client, &started.run).await.unwrap();
    assert_eq!(
        finished.status.phase,
        RunPhase::Succeeded,
        "{:?}\n{}",
        finished.status,
        hearth.log_tail(40)
    );
    // Verified teardown: nothing of the stack on any node, asked of each node's own daemon.
    let left = cluster.leftovers(&started.stack).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_killed_owner_is_swept_on_every_node() {
    let Some(cluster) = Cluster::ensure("cluster-kill").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hearth = serve(&cluster, dir.path(), &[]).await;
    let client = hearth.client();
    let (took, started) = cluster
        .killed_owner_swept(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", hearth.log_tail(40)));
    println!(
        "MEASURE cluster_real kill_to_last_object_gone_on_3_nodes_ms={}",
        took.as_millis()
    );
    // hearth's own verification may take another pass (an overlay network stays "in use" on
    // the manager until the killed tasks are reported gone): the run closes Orphaned.
    let run = wait_phase_leaves(
        &client,
        &started.run,
        &[RunPhase::Running, RunPhase::TeardownFailed],
        &hearth,
    )
    .await;
    assert_eq!(run.status.phase, RunPhase::Orphaned, "{:?}", run.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stopped_worker_fails_the_teardown_naming_it_and_the_retry_clears_it() {
    let Some(cluster) = Cluster::ensure("cluster-stopped").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hearth = serve(&cluster, dir.path(), &[]).await;
    let client = hearth.client();
    let started = start_run(&client, controller::liveness::current_owner().unwrap()).await;
    wait_spread(&cluster, &started.stack).await;
    cluster.stop_node(3);
    let run = match finish(&client, &started.run).await {
        Ok(run) => run,
        Err(e) => {
            println!("finish answered {e}");
            get_run(&client, &started.run).await
        }
    };
    // Restart the node before asserting, so a failed assertion leaves a whole cluster.
    let status = run.status.clone();
    cluster.start_node(3);
    assert_eq!(
        status.phase,
        RunPhase::TeardownFailed,
        "{status:?}\n{}",
        hearth.log_tail(200)
    );
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("hearth-node3"), "{error}");
    // The node is back: the retry (every 10 s) removes what was left on it.
    let run = wait_phase_leaves(&client, &started.run, &[RunPhase::TeardownFailed], &hearth).await;
    assert_eq!(run.status.phase, RunPhase::Succeeded, "{:?}", run.status);
    let left = cluster.leftovers(&started.stack).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

fn warm_app_state(version: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: spread\nspec:\n  recipe: {RECIPE}\n  \
         version: {version}\n  health:\n    readyTimeout: 2m\n"
    )
}

/// Writes the state file atomically (the daemon watches its directory).
fn write_state(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn warm_app(client: &Client) -> Option<crd::WarmApp> {
    let apps: Vec<crd::WarmApp> = client.get("/api/v1/warmapps").await.ok()?;
    apps.into_iter().find(|a| a.metadata.name == "spread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partitioned_worker_during_a_warm_app_upgrade_completes_or_rolls_back_and_says_which(
) {
    let Some(cluster) = Cluster::ensure("cluster-partition").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yml");
    write_state(&state, &warm_app_state("1.0.0"));
    let state_arg = state.display().to_string();
    let hearth = serve(&cluster, dir.path(), &["--state", &state_arg, "--prune"]).await;
    let client = hearth.client();
    let app = wait_ready(&client, "1.0.0", &hearth).await;
    let stack = app.status.stack_name.clone().unwrap();
    wait_spread(&cluster, &stack).await;

    // Node 3 is cut off (its link down) while the upgrade rolls over the nodes; healed 15 s
    // later.
    cluster.partition(3);
    write_state(&state, &warm_app_state("1.1.0"));
    tokio::time::sleep(Duration::from_secs(15)).await;
    cluster.heal(3);

    let since = Instant::now();
    let app = loop {
        let app = warm_app(&client).await.unwrap();
        let st = &app.status;
        let settled = matches!(
            st.phase,
            crd::WarmAppPhase::Ready | crd::WarmAppPhase::Degraded | crd::WarmAppPhase::Failed
        ) && app.metadata.generation >= 2
            && st.observed_generation >= app.metadata.generation;
        if settled {
            break app;
        }
        assert!(
            since.elapsed() < Duration::from_secs(180),
            "the upgrade never settled: {st:?}\n{}",
            hearth.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let st = &app.status;
    println!(
        "partitioned upgrade settled {:?} at {:?} (last error {:?}) after {:?} from the heal",
        st.phase,
        st.observed_version,
        st.last_error,
        since.elapsed()
    );
    // Completed (Ready at 1.1.0) or rolled back (back at 1.0.0, the reason recorded): the
    // status says which, and nothing is in between.
    match st.observed_version.as_deref() {
        Some("1.1.0") => assert_eq!(st.phase, crd::WarmAppPhase::Ready, "{st:?}"),
        Some("1.0.0") => assert!(st.last_error.is_some(), "rolled back silently: {st:?}"),
        other => panic!("observed version {other:?}: {st:?}"),
    }
    // No duplicate stack: one stack (the same), one service, one task per node at most.
    let manager = cluster.manager().await;
    let services = manager
        .list_services(&LabelFilter::eq(
            hearth_tests::support::TEST_LABEL.0,
            hearth_tests::support::TEST_LABEL.1,
        ))
        .await
        .unwrap();
    let namespaces: std::collections::BTreeSet<String> = services
        .iter()
        .filter_map(|s| s.meta.labels.get(NAMESPACE_LABEL).cloned())
        .collect();
    assert_eq!(
        namespaces,
        std::collections::BTreeSet::from([stack.clone()]),
        "{services:#?}"
    );
    assert_eq!(services.len(), 1, "{services:#?}");
    let tasks = manager
        .list_tasks(&LabelFilter::eq(NAMESPACE_LABEL, &stack))
        .await
        .unwrap();
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
    {
        *per_node
            .entry(t.node_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(per_node.values().all(|n| *n == 1), "{per_node:?}");
    // Pruned away at the end: the warm app's stack leaves nothing on any node.
    // (The file keeps one other resource, a slot pool: the warm app is what it drops.)
    write_state(
        &state,
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: hearth-test-cluster\nspec:\n  \
         slots: 1\n  portBase: 34000\n  portsPerSlot: 10\n  waitTimeout: 1m\n",
    );
    let gone = cluster
        .wait_until_gone(
            &stack,
            Instant::now(),
            Duration::from_secs(90),
            Duration::from_millis(250),
        )
        .await;
    assert!(gone.is_ok(), "{gone:?}\n{}", hearth.log_tail(40));
}

/// Docker writes hearth made so far (creates, updates, removals), from its `/metrics`.
fn docker_writes(addr: std::net::SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: hearth\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("hearth_docker_api_calls_total{"))
        .filter(|l| {
            ["create_", "update_", "remove_", "force_update_"]
                .iter()
                .any(|w| l.contains(&format!("operation=\"{w}")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits until the warm app is Ready at `version`.
async fn wait_ready(client: &Client, version: &str, hearth: &ServeProcess) -> crd::WarmApp {
    let since = Instant::now();
    loop {
        if let Some(app) = warm_app(client).await {
            if app.status.phase == crd::WarmAppPhase::Ready
                && app.status.observed_version.as_deref() == Some(version)
            {
                return app;
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "not Ready at {version}: {:?}\n{}",
            warm_app(client).await.map(|a| a.status),
            hearth.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_managers_hearth_fails_over_relists_writes_nothing_and_repairs() {
    // Three managers (a cluster of that shape, built for this test). Node 1 is drained, so
    // the warm app's tasks run on nodes 2 and 3: stopping node 1 takes a manager away, not a
    // part of the app.
    let Some(cluster) = Cluster::ensure_with("cluster-managers", 3).await else {
        return;
    };
    cluster.docker(
        1,
        &["node", "update", "--availability", "drain", "hearth-node1"],
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yml");
    write_state(&state, &warm_app_state("1.0.0"));
    let args = [
        "--state".to_string(),
        state.display().to_string(),
        "--prune".into(),
        "--manager-socket".into(),
        cluster.node(2).socket.display().to_string(),
        "--manager-socket".into(),
        cluster.node(3).socket.display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hearth = serve(&cluster, dir.path(), &args).await;
    let client = hearth.client();
    let app = wait_ready(&client, "1.0.0", &hearth).await;
    let stack = app.status.stack_name.clone().unwrap();
    let service = format!("{stack}_app");
    // Converged: a moment without writes.
    let mut before = docker_writes(hearth.addr());
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = docker_writes(hearth.addr());
        if now == before {
            break;
        }
        before = now;
    }

    cluster.stop_node(1);
    let stopped = Instant::now();
    // hearth notices (its events stream ends, the relist fails), connects to node 2 or 3.
    let switched = |log: &str| {
        log.lines().any(|l| {
            l.contains("talking to this swarm manager")
                && (l.contains("node2.sock") || l.contains("node3.sock"))
        })
    };
    loop {
        let log = std::fs::read_to_string(hearth.log_path()).unwrap();
        if switched(&log) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "never failed over:\n{}",
            hearth.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("failed over {:?} after node 1 stopped", stopped.elapsed());
    // Relisted and converged: Ready at 1.0.0, and nothing was redeployed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_ready(&client, "1.0.0", &hearth).await;
    let after = docker_writes(hearth.addr());
    assert_eq!(
        after,
        before,
        "writes after the failover\n{}",
        hearth.log_tail(40)
    );

    // A service removed by hand (through node 2) is repaired through the new manager.
    cluster.docker(2, &["service", "rm", &service]);
    let removed = Instant::now();
    loop {
        let listed = cluster.docker(
            2,
            &[
                "service",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &format!("name={service}"),
            ],
        );
        if listed.lines().any(|l| l == service) {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(60),
            "the removed service was not repaired\n{}",
            hearth.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("repaired {:?} after the removal", removed.elapsed());
    wait_ready(&client, "1.0.0", &hearth).await;

    // Node 1 back; the warm app dropped from the state file and torn down on nodes 2 and 3.
    cluster.start_node(1);
    write_state(
        &state,
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: hearth-test-cluster\nspec:\n  \
         slots: 1\n  portBase: 34000\n  portsPerSlot: 10\n  waitTimeout: 1m\n",
    );
    let gone = cluster
        .wait_until_gone(
            &stack,
            Instant::now(),
            Duration::from_secs(90),
            Duration::from_millis(250),
        )
        .await;
    assert!(gone.is_ok(), "{gone:?}\n{}", hearth.log_tail(40));
}
