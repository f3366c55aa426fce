//! Indicative store load figures (not a test): durable writes with and without concurrency
//! (group commit), a 10,000-run list, and the size of 10,000 runs + 1,000 warm apps on disk.
//!
//! `cargo run --release -p hearth-state --example store_load [DIR]` (a temp dir by default).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use crd::{Run, WarmApp};
use serde_json::json;
use state::history::{NewEntry, ObjectRef};
use state::Store;

const WARM_APPS: usize = 1_000;
const RUNS: usize = 10_000;
const WRITERS: usize = 64;
const SEQUENTIAL: usize = 500;

fn warm_app(i: usize) -> WarmApp {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": format!("app-{i}")},
        "spec": {"recipe": format!("recipe-{i}"), "version": "1.11.0+1.29.0", "promote": "onGreen"}
    }))
    .unwrap()
}

fn run(i: usize) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": format!("run-{i}")},
        "spec": {"recipe": "web", "version": "1.0.0", "ref": "0123456789abcdef", "slotPool": "ci",
                 "owner": {"pid": 4242, "processStartTime": 777, "host": "ci-host-1",
                           "bootId": "6c1e2a8c-8d7e-4a0e-9f7d-0d6c1b6f4a11"},
                 "lease": {"ttl": "10m"}, "deps": ["db", "sso"],
                 "requiredTiers": ["install", "smoke", "custom"]}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("data"));
    let store = Store::open(&dir).await.unwrap();

    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        store.create(&warm_app(i)).await.unwrap();
    }
    let seq = started.elapsed();
    println!(
        "sequential durable creates: {SEQUENTIAL} in {seq:?} ({:.0}/s, {:?} each)",
        SEQUENTIAL as f64 / seq.as_secs_f64(),
        seq / SEQUENTIAL as u32
    );

    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < RUNS {
                    store.create(&run(i)).await.unwrap();
                    i += WRITERS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let conc = started.elapsed();
    println!(
        "concurrent durable creates ({WRITERS} writers, group commit): {RUNS} in {conc:?} ({:.0}/s)",
        RUNS as f64 / conc.as_secs_f64()
    );
    for i in SEQUENTIAL..WARM_APPS {
        store.create(&warm_app(i)).await.unwrap();
    }

    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < RUNS {
                    let mut r = store.get::<Run>(&format!("run-{i}")).unwrap();
                    r.status.last_heartbeat_ms = Some(1);
                    store.update_status(&r).await.unwrap();
                    store
                        .append_history(
                            NewEntry::new("Tested", "heartbeat").subject(ObjectRef::to(&r)),
                        )
                        .await
                        .unwrap();
                    i += WRITERS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let upd = started.elapsed();
    println!(
        "concurrent status update + history append: {RUNS} pairs in {upd:?} ({:.0} writes/s)",
        (2 * RUNS) as f64 / upd.as_secs_f64()
    );

    let started = Instant::now();
    let runs = store.list::<Run>().unwrap();
    println!(
        "list {} runs: {:?}; list {} warm apps: {:?}",
        runs.items.len(),
        started.elapsed(),
        store.list::<WarmApp>().unwrap().items.len(),
        {
            let t = Instant::now();
            let _ = store.list::<WarmApp>().unwrap();
            t.elapsed()
        }
    );
    println!(
        "size on disk with {RUNS} runs, {WARM_APPS} warm apps, {RUNS} history entries: {} bytes",
        store.size_on_disk().unwrap()
    );
}
