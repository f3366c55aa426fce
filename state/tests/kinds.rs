//! hearth's real kinds (from `crd`) through the store: round trips per kind, and the slot-lease
//! pattern the controller builds on (optimistic concurrency never over-grants).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{Backend, MemoryBackend, SledBackend};
use crd::slotpool::SlotLease;
use crd::{DepProvider, Kind, Owner, Recipe, Resource, Run, SlotPool, WarmApp};
use serde_json::json;
use state::{Config, Store};

fn warm_app() -> WarmApp {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
        "spec": {"recipe": "web", "version": "1.11.0+1.29.0", "promote": "onGreen",
                 "refresh": "pinned", "env": {"LOG_LEVEL": "debug"}}
    }))
    .unwrap()
}

fn run(name: &str) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": name},
        "spec": {"recipe": "web", "version": "1.0.0", "slotPool": "ci",
                 "owner": {"pid": 42, "processStartTime": 7, "host": "h", "bootId": "b"},
                 "lease": {"ttl": "10m"}}
    }))
    .unwrap()
}

fn dep_provider() -> DepProvider {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "DepProvider", "metadata": {"name": "db"},
        "spec": {"mode": "perRun", "recipe": "postgres", "version": "16.2.0"}
    }))
    .unwrap()
}

fn recipe() -> Recipe {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Recipe", "metadata": {"name": "web"},
        "spec": {"git": {"url": "file:///srv/web.git"}}
    }))
    .unwrap()
}

fn slot_pool(slots: u32) -> SlotPool {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "SlotPool", "metadata": {"name": "ci"},
        "spec": {"slots": slots, "portBase": 20000, "portsPerSlot": 10, "waitTimeout": "10m"}
    }))
    .unwrap()
}

fn owner(pid: u32) -> Owner {
    Owner {
        kind: crd::OwnerKind::Pid,
        pid,
        process_start_time: 1,
        host: "h".into(),
        boot_id: "b".into(),
    }
}

async fn round_trip<R: Resource + PartialEq + std::fmt::Debug>(store: &Store, obj: R) {
    let created = store.create(&obj).await.unwrap();
    assert_eq!(created.meta().generation, 1);
    assert_eq!(store.get::<R>(obj.name()).unwrap(), created);
    let listed = store.list::<R>().unwrap().items;
    assert_eq!(listed, [created]);
}

async fn every_kind_should_round_trip(b: impl Backend) {
    let store = Store::with_engine(b.engine(), Config::default())
        .await
        .unwrap();
    round_trip(&store, warm_app()).await;
    round_trip(&store, run("r1")).await;
    round_trip(&store, dep_provider()).await;
    round_trip(&store, slot_pool(3)).await;
    round_trip(&store, recipe()).await;
    // A spec change of a real kind bumps generation; a status change does not.
    let mut app = store.get::<WarmApp>("web").unwrap();
    app.spec.version = "1.12.0+1.29.0".into();
    let app = store.update(&app).await.unwrap();
    assert_eq!(app.metadata.generation, 2);
    let mut r = store.get::<Run>("r1").unwrap();
    r.status.last_heartbeat_ms = Some(1_000);
    let r = store.update_status(&r).await.unwrap();
    assert_eq!(r.metadata.generation, 1);
    drop(store);
    let store = Store::with_engine(b.engine(), Config::default())
        .await
        .unwrap();
    assert_eq!(store.get::<WarmApp>("web").unwrap(), app);
    assert_eq!(store.get::<Run>("r1").unwrap(), r);
    for kind in Kind::ALL {
        let n = match kind {
            Kind::WarmApp => store.list::<WarmApp>().unwrap().items.len(),
            Kind::Run => store.list::<Run>().unwrap().items.len(),
            Kind::DepProvider => store.list::<DepProvider>().unwrap().items.len(),
            Kind::SlotPool => store.list::<SlotPool>().unwrap().items.len(),
            Kind::Recipe => store.list::<Recipe>().unwrap().items.len(),
        };
        assert_eq!(n, 1, "{kind}");
    }
}

/// Tries to lease a slot for `run_name`, creating the Run in the same transaction; `None` when
/// the pool is full. Retries on conflicts (optimistic concurrency).
async fn acquire(store: &Store, run_name: String, pid: u32) -> Option<u32> {
    loop {
        let mut pool = store.get::<SlotPool>("ci").unwrap();
        let slot = pool.lowest_free_slot()?;
        pool.status.leases.push(SlotLease {
            slot,
            owner: owner(pid),
            run: Some(run_name.clone()),
            acquired_at_ms: 0,
            expires_at_ms: None,
        });
        let mut tx = store.transaction();
        tx.update_status(&pool).create(&run(&run_name));
        match tx.commit().await {
            Ok(_) => return Some(slot),
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn concurrent_slot_leases_should_never_over_grant(b: impl Backend) {
    let store = Store::with_engine(b.engine(), Config::default())
        .await
        .unwrap();
    store.create(&slot_pool(3)).await.unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..10u32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { acquire(&store, format!("run-{i}"), 100 + i).await })
        })
        .collect();
    let mut granted = BTreeSet::new();
    for t in tasks {
        if let Some(slot) = t.await.unwrap() {
            assert!(granted.insert(slot), "slot {slot} granted twice");
        }
    }
    assert_eq!(granted, BTreeSet::from([0, 1, 2]));
    let pool = store.get::<SlotPool>("ci").unwrap();
    assert_eq!(pool.status.leases.len(), 3);
    // Every lease's run exists (created atomically with it), and no other run does.
    let runs: BTreeSet<String> = store
        .list::<Run>()
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.metadata.name)
        .collect();
    let leased: BTreeSet<String> = pool
        .status
        .leases
        .iter()
        .filter_map(|l| l.run.clone())
        .collect();
    assert_eq!(runs, leased);
}

#[tokio::test]
async fn every_kind_should_round_trip_in_memory() {
    every_kind_should_round_trip(MemoryBackend::new()).await;
}

#[tokio::test]
async fn every_kind_should_round_trip_in_sled() {
    every_kind_should_round_trip(SledBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_slot_leases_should_never_over_grant_in_memory() {
    concurrent_slot_leases_should_never_over_grant(MemoryBackend::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_slot_leases_should_never_over_grant_in_sled() {
    concurrent_slot_leases_should_never_over_grant(SledBackend::new()).await;
}
