//! hearth that survives losing its node, on a real 3-manager swarm: the HA stack of
//! `deploy/ha` (etcd×3 and hearth×3, one each per manager, deployed with its one command) on
//! `scripts/cluster.sh up 3 --managers 3`, and the leader's node stopped.
//!
//! One test walks the whole story, so the stack is deployed once:
//! 1. a warm app (its stack deployed by the leader), a slot held by this live test process
//!    (30 s lease, heartbeated through the outage), a run deployed for a `sleep` child (8 s
//!    lease, heartbeated until the outage); a writer applies a new slot pool every 100 ms
//!    through the replicas in turn and keeps the names that were acknowledged;
//! 2. the leader's node is stopped (`cluster.sh stop-node`: its engine, its hearth replica and
//!    its etcd member stop) and the run's owner dies: another replica leads (ready); the time
//!    from the stop is printed, and measured as a median in `bench_failover`;
//! 3. every acknowledged pool is there; the dead owner's run is swept (its stack gone from the
//!    swarm, the run terminal); the live slot is still held after that; Swarm's service events
//!    (followed on a manager that stays up) show no service created twice or removed but the
//!    run's, and the warm app's service keeps its ID.
//!
//! Runs in the `cluster` test group (one at a time: it stops a node). About 90 s here, of which
//! the cluster's reshaping to 3 managers is ~15–45 s, the deploy ~15 s, the stop ~14 s.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;
use controller::runs::Started;
use crd::{Run, SlotPool};
use hearth_tests::cluster::{Cluster, NAMESPACE_LABEL};
use hearth_tests::ha::{HaStack, ServiceEvents};
use serde_json::Value;

const POOL: &str = "ha-pool";
const STATE: &str = "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ha-pool\nspec:\n  slots: 2\n  portBase: 29200\n  portsPerSlot: 10\n  waitTimeout: 5s\n";
const WARM_APP: &str = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: ha-web\nspec:\n  recipe: webapp\n  version: 1.0.0\n  env:\n    REPLICAS: \"1\"\n";

/// `POST path` with a body, at most 15 s (a fresh etcd cluster may still be electing its
/// raft leader: the store retries its writes meanwhile): (status, body); the transport failure
/// as an error.
async fn send(
    client: &Client,
    path: &str,
    body: Vec<u8>,
    kind: &str,
) -> Result<(u16, Value), String> {
    let call = client.send(hyper::Method::POST, path, body, kind);
    let (status, bytes) = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .map_err(|_| format!("POST {path}: no answer within 15 s"))?
        .map_err(|e| format!("POST {path}: {e}"))?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn post(client: &Client, path: &str, body: &Value) -> Result<(u16, Value), String> {
    send(
        client,
        path,
        body.to_string().into_bytes(),
        "application/json",
    )
    .await
}

async fn apply(client: &Client, yaml: &str) -> Result<(u16, Value), String> {
    send(
        client,
        "/api/v1/apply",
        yaml.as_bytes().to_vec(),
        "application/yaml",
    )
    .await
}

/// The services of stack `ns` on node `n`'s engine (a manager): name → ID.
fn services(cluster: &Cluster, n: usize, ns: &str) -> BTreeMap<String, String> {
    cluster
        .docker(
            n,
            &[
                "service",
                "ls",
                "--filter",
                &format!("label={NAMESPACE_LABEL}={ns}"),
                "--format",
                "{{.Name}} {{.ID}}",
            ],
        )
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, id)| (name.to_string(), id.to_string()))
        .collect()
}

fn owner_of(pid: u32) -> Value {
    serde_json::to_value(controller::liveness::owner_of(pid).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_node_stopped_another_replica_leads_and_nothing_acknowledged_is_lost() {
    let Some(cluster) = Cluster::ensure_with("ha-failover", 3).await else {
        return;
    };
    // What a failed run left (hearth's replicas first, so they deploy nothing meanwhile).
    HaStack::remove(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yml");
    std::fs::write(&state, STATE).unwrap();
    let stack = HaStack::deploy(dir.path(), &state)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let leader = stack
        .wait_settled(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A manager that stays up: the events follower and the client that sets things up.
    let watcher = if leader == 1 { 2 } else { 1 };
    let events = ServiceEvents::start(&cluster, watcher, &dir.path().join("events.json")).unwrap();
    let via = stack.client(watcher);

    // 1. A warm app, deployed by the leader (through a standby: forwarded).
    // Retried: an apply is idempotent, and the first writes of a fresh stack may wait for
    // etcd's raft (the members start one after another).
    let since = Instant::now();
    loop {
        match apply(&via, WARM_APP).await {
            Ok((200, _)) => break,
            other => assert!(
                since.elapsed() < Duration::from_secs(60),
                "the warm app was not applied: {other:?}"
            ),
        }
    }
    let since = Instant::now();
    let warm = loop {
        let s = services(&cluster, watcher, "hw-ha-web");
        if !s.is_empty() {
            break s;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the warm app's stack was not deployed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // A slot held by this (live) process, heartbeated all along.
    let me = std::process::id();
    let (status, grant) = post(
        &via,
        &format!("/api/v1/slotpools/{POOL}/acquire"),
        &serde_json::json!({ "owner": owner_of(me), "ttl": "30s" }),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{grant}");
    let slot = grant["slot"].as_u64().unwrap();

    // A run deployed for a child process, heartbeated until the outage.
    let mut job = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let (status, started) = post(
        &via,
        "/api/v1/runs",
        &serde_json::json!({
            "recipe": "webapp", "version": "1.0.0", "owner": owner_of(job.id()), "ttl": "8s",
            "deploy": true, "requiredTiers": ["e2e"],
        }),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{started}");
    let started: Started = serde_json::from_value(started).unwrap();
    let since = Instant::now();
    while services(&cluster, watcher, &started.stack).is_empty() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the run's stack was not deployed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Heartbeats (slot: always; run: until the outage) and the writer, through every replica
    // in turn; a replica that does not answer is skipped.
    let clients: Vec<Client> = (1..=3).map(|n| stack.client(n)).collect();
    let outage = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let slot_beats = {
        let (clients, done, owner) = (clients.clone(), done.clone(), owner_of(me));
        tokio::spawn(async move {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let body = serde_json::json!({ "slot": slot, "owner": owner, "ttl": "30s" });
                let path = format!("/api/v1/slotpools/{POOL}/heartbeat");
                for _ in 0..3 {
                    i += 1;
                    if matches!(post(&clients[i % 3], &path, &body).await, Ok((200, _))) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let run_beats = {
        let (clients, outage, run) = (clients.clone(), outage.clone(), started.run.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !outage.load(Ordering::Relaxed) {
                i += 1;
                let _ = post(
                    &clients[i % 3],
                    &format!("/api/v1/runs/{run}/heartbeat"),
                    &Value::Null,
                )
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let writer = {
        let (clients, done, acked) = (clients.clone(), done.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let name = format!("ha-ack-{i}");
                let yaml = format!(
                    "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {name}\nspec:\n  slots: 1\n  portBase: 29300\n  portsPerSlot: 1\n  waitTimeout: 1s\n"
                );
                if matches!(apply(&clients[i % 3], &yaml).await, Ok((200, _))) {
                    acked.lock().unwrap().push(name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. The leader's node stops; the run's owner dies meanwhile.
    let stopped = Instant::now();
    let stopping = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop_node(leader))
    };
    outage.store(true, Ordering::Relaxed);
    job.kill().unwrap();
    job.wait().unwrap();
    let others: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let new_leader = match stack
        .wait_leader(Some(leader), Duration::from_secs(30))
        .await
    {
        Ok(n) => n,
        Err(e) => panic!("{e}\n{}", HaStack::replica_logs(&cluster, &others, 40)),
    };
    let takeover = stopped.elapsed();
    eprintln!(
        "ha-failover: node {leader} stopped; node {new_leader}'s replica leads after {takeover:?}"
    );
    // How fast is measured in `bench_failover` (median of >= 5 in BENCHMARKS.md), never by a
    // timed assert here: one takeover on a loaded 2-core CI machine says little. This test
    // holds what must happen: another replica leads (within `wait_leader`'s 30 s), and below,
    // nothing acknowledged is lost and nothing is acted on twice.
    stopping.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let via = stack.client(new_leader);

    // 3a. Every acknowledged mutation is there.
    let pools: Vec<SlotPool> = via.get("/api/v1/slotpools").await.unwrap();
    let present: BTreeSet<String> = pools.iter().map(|p| p.metadata.name.clone()).collect();
    let acked_now = acked.lock().unwrap().clone();
    assert!(
        acked_now.len() > 10,
        "too few writes acknowledged: {acked_now:?}"
    );
    let lost: Vec<&String> = acked_now.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // 3b. The dead owner's run is swept after the outage.
    let since = Instant::now();
    let run = loop {
        let run: Run = via
            .get(&format!("/api/v1/runs/{}", started.run))
            .await
            .unwrap();
        let left = services(&cluster, new_leader, &started.stack);
        if run.status.phase.is_terminal() && left.is_empty() {
            break run;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the dead owner's run is not swept: {:?}, services {left:?}",
            run.status.phase
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "ha-failover: the dead owner's run is {:?} {:?} after the stop",
        run.status.phase,
        stopped.elapsed()
    );

    // 3c. The live slot is still held.
    let pool: SlotPool = via.get(&format!("/api/v1/slotpools/{POOL}")).await.unwrap();
    let holders: Vec<u32> = pool.status.leases.iter().map(|l| l.owner.pid).collect();
    assert_eq!(holders, [me], "{:?}", pool.status);

    // 3d. No stack deployed twice: the warm app's service kept its ID; no service was
    // created twice or removed, but the dead run's.
    done.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    slot_beats.await.unwrap();
    run_beats.await.unwrap();
    assert_eq!(services(&cluster, new_leader, "hw-ha-web"), warm);
    let events = events.stop();
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.action == "create") {
        *created.entry(e.name.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "created more than once: {twice:?}\n{events:#?}"
    );
    for e in events.iter().filter(|e| e.action == "remove") {
        assert!(
            e.name.starts_with(&format!("{}_", started.stack)),
            "removed: {e:?}"
        );
    }
    assert!(
        created
            .keys()
            .any(|n| n.starts_with(&format!("{}_", started.stack))),
        "the events follower saw no service created: {events:#?}"
    );

    // The stopped node back, the stack and what hearth deployed gone.
    cluster.start_node(leader);
    HaStack::remove(&cluster).await;
}
