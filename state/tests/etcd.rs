//! What only the etcd engine has: one holder per prefix, waiting campaigns, fenced writes.
//! Runs against the 3-member test cluster (scripts/etcd.sh); under CI=true a missing etcd fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{etcd_available, etcd_endpoints, App, EtcdBackend};
use state::engine::Error as EngineError;
use state::etcd_engine::Holder;
use state::{Config, Engine, EtcdEngine, Store};

/// Revokes `lease` from outside, as etcd does when a holder's lease runs out while it is
/// partitioned away (etcdctl: the test does not talk to etcd through the engine).
fn revoke_from_outside(lease: i64) {
    let endpoints = etcd_endpoints();
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints,
            "lease",
            "revoke",
            &format!("{lease:x}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl lease revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_second_holder_should_be_refused_naming_the_first() {
    if !etcd_available("a_second_holder_should_be_refused_naming_the_first") {
        return;
    }
    let b = EtcdBackend::new();
    let mut config = b.config();
    config.api = Some("http://10.9.8.7:7777".into());
    let first = EtcdEngine::open(config.clone()).unwrap();
    assert_eq!(
        first.tenure().holder,
        Holder::this_process(config.api.clone())
    );
    // Same process: the opener waits out the grace for a closing holder, then refuses.
    let err = EtcdEngine::open(b.config()).unwrap_err();
    let EngineError::LocationHeld { location, holder } = &err else {
        panic!("{err}");
    };
    assert!(location.ends_with("/data"), "{location}");
    assert!(
        holder.contains(&format!("pid {}", std::process::id())) && holder.contains("10.9.8.7"),
        "{holder}"
    );
    // Closing gives the key up at once.
    drop(first);
    let started = Instant::now();
    let again = EtcdEngine::open(b.config()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(again);
}

#[tokio::test]
async fn a_campaign_should_take_over_when_the_holder_closes() {
    if !etcd_available("a_campaign_should_take_over_when_the_holder_closes") {
        return;
    }
    let b = EtcdBackend::new();
    let first = Store::with_engine(
        Arc::new(EtcdEngine::open(b.config()).unwrap()),
        Config::default(),
    )
    .await
    .unwrap();
    let written = first.create(&App::new("web", "1.0.0")).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let seen = seen.clone();
        Box::new(move |h: Option<Holder>| seen.lock().unwrap().push(h))
    };
    let campaign = tokio::spawn(EtcdEngine::campaign(b.config(), observer));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !campaign.is_finished(),
        "the campaign waits while the key is held"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the holder was observed once"
    );
    let closed = Instant::now();
    drop(first);
    let second = campaign.await.unwrap().unwrap();
    assert!(
        closed.elapsed() < Duration::from_secs(2),
        "{:?}",
        closed.elapsed()
    );
    let store = Store::with_engine(Arc::new(second), Config::default())
        .await
        .unwrap();
    assert_eq!(store.get::<App>("web").unwrap(), written);
}

#[tokio::test]
async fn a_deferring_campaign_should_leave_a_free_key_to_another_and_take_it_when_alone() {
    if !etcd_available(
        "a_deferring_campaign_should_leave_a_free_key_to_another_and_take_it_when_alone",
    ) {
        return;
    }
    let b = EtcdBackend::new();
    let first = EtcdEngine::open(b.config()).unwrap();
    // Two campaigns wait; the one asked to defer (hearth: its node leads Swarm's raft) first.
    let deferring = tokio::spawn(EtcdEngine::campaign_deferring(
        b.config(),
        Box::new(|_| {}),
        Box::new(|| true),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plain = tokio::spawn(EtcdEngine::campaign(b.config(), Box::new(|_| {})));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first);
    let winner = tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !deferring.is_finished(),
        "the deferring campaign left the free key to the other one"
    );
    // Alone now: when the winner closes, the deferring campaign still takes the key, after
    // leaving it free for its 2 s.
    let closed = Instant::now();
    drop(winner);
    let second = tokio::time::timeout(Duration::from_secs(10), deferring)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        closed.elapsed() >= Duration::from_millis(1500),
        "it deferred before taking the key: {:?}",
        closed.elapsed()
    );
    drop(second);
}

#[tokio::test]
async fn a_deposed_holder_should_be_refused_and_told() {
    if !etcd_available("a_deposed_holder_should_be_refused_and_told") {
        return;
    }
    let b = EtcdBackend::new();
    let mut config = b.config();
    config.lease_ttl = Duration::from_secs(4);
    let engine = Arc::new(EtcdEngine::open(config.clone()).unwrap());
    let lease = engine.tenure().lease;
    let lost = engine.lost();
    let old = Store::with_engine(engine.clone() as Arc<dyn Engine>, Config::default())
        .await
        .unwrap();
    old.create(&App::new("before", "1")).await.unwrap();

    // The old holder's lease ends behind its back (a partition outlasting the TTL looks the
    // same to etcd); another process takes the key and writes.
    revoke_from_outside(lease);
    let new_engine = tokio::time::timeout(
        Duration::from_secs(5),
        EtcdEngine::campaign(config.clone(), Box::new(|_| {})),
    )
    .await
    .unwrap()
    .unwrap();
    let new = Store::with_engine(Arc::new(new_engine), Config::default())
        .await
        .unwrap();
    new.create(&App::new("by-new", "1")).await.unwrap();

    // The old holder still believes it holds the store: its next write is refused by etcd.
    let err = old.create(&App::new("by-old", "1")).await.unwrap_err();
    assert!(
        err.to_string().contains("flush") || format!("{err:?}").contains("no longer holds"),
        "{err:?}"
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .unwrap();
    assert!(
        reason.contains("no longer holds") || reason.contains("lease"),
        "{reason}"
    );
    // Poisoned: later writes fail at once; nothing of the old holder reached etcd.
    assert!(old.create(&App::new("later", "1")).await.is_err());
    drop(old);
    drop(engine);
    drop(new);
    let check = EtcdEngine::open(config).unwrap();
    let store = Store::with_engine(Arc::new(check), Config::default())
        .await
        .unwrap();
    let names: Vec<String> = store
        .list::<App>()
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.metadata.name)
        .collect();
    assert_eq!(names, ["before", "by-new"]);
}

#[tokio::test]
async fn a_holder_that_cannot_renew_should_give_up_before_the_lease_ends() {
    if !etcd_available("a_holder_that_cannot_renew_should_give_up_before_the_lease_ends") {
        return;
    }
    let b = EtcdBackend::new();
    let mut config = b.config();
    config.lease_ttl = Duration::from_secs(4);
    let engine = EtcdEngine::open(config).unwrap();
    let lost = engine.lost();
    let holds = engine.holds();
    assert!(holds.now());
    let started = Instant::now();
    // Renewals of a revoked lease answer TTL 0: the holder learns at its next renewal
    // (every TTL/4) and stops.
    revoke_from_outside(engine.tenure().lease);
    let reason = tokio::time::timeout(Duration::from_secs(4), lost)
        .await
        .unwrap();
    assert!(reason.contains("lease"), "{reason}");
    assert!(!holds.now(), "no longer holds once lost");
    assert!(
        started.elapsed() <= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(engine.apply(state::engine::Keyspace::Meta, vec![]).is_err());
}
