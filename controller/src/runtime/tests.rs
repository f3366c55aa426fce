//! Scenario tests of the runtime in virtual time, with the memory store and the simulated swarm.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd::names::labels;
use crd::{Kind, WarmApp};
use state::Store;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::swarm::sim::{SimConfig, SimSwarm};
use crate::swarm::{spec, LabelFilter, Swarm, Verb};

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

/// What the test reconciler does and what it saw.
struct Probe {
    epoch: Instant,
    /// (name, virtual time since epoch) of every reconcile start.
    calls: Mutex<Vec<(String, Duration)>>,
    /// Names whose reconcile finished.
    finished: Mutex<Vec<String>>,
    /// Names passed to `cleanup`.
    cleanups: Mutex<Vec<String>>,
    in_flight: Mutex<HashMap<String, usize>>,
    max_per_key: AtomicUsize,
    total: AtomicUsize,
    max_total: AtomicUsize,
    /// How long a reconcile takes.
    work: Mutex<Duration>,
    /// Remaining failures per name.
    failures: Mutex<HashMap<String, u32>>,
    /// What a successful reconcile returns.
    action: Mutex<Action>,
    /// A swarm the reconcile observes (services seen per call).
    swarm: Option<SimSwarm>,
    seen_services: Mutex<Vec<usize>>,
}

impl Probe {
    fn new(swarm: Option<SimSwarm>) -> Arc<Probe> {
        Arc::new(Probe {
            epoch: Instant::now(),
            calls: Mutex::default(),
            finished: Mutex::default(),
            cleanups: Mutex::default(),
            in_flight: Mutex::default(),
            max_per_key: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            max_total: AtomicUsize::new(0),
            work: Mutex::new(Duration::ZERO),
            failures: Mutex::default(),
            action: Mutex::new(Action::await_change()),
            swarm,
            seen_services: Mutex::default(),
        })
    }

    fn calls_of(&self, name: &str) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }

    fn count(&self, name: &str) -> usize {
        self.calls_of(name).len()
    }
}

struct TestReconciler;

impl Reconciler for TestReconciler {
    type Object = WarmApp;
    type Context = Probe;
    type Error = Injected;

    async fn reconcile(obj: Arc<WarmApp>, probe: Arc<Probe>) -> Result<Action, Injected> {
        let name = obj.metadata.name.clone();
        probe
            .calls
            .lock()
            .unwrap()
            .push((name.clone(), probe.epoch.elapsed()));
        {
            let mut in_flight = probe.in_flight.lock().unwrap();
            let n = in_flight.entry(name.clone()).or_insert(0);
            *n += 1;
            probe.max_per_key.fetch_max(*n, Ordering::SeqCst);
        }
        let total = probe.total.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_total.fetch_max(total, Ordering::SeqCst);
        if let Some(swarm) = &probe.swarm {
            let services = swarm.list_services(&LabelFilter::all()).await.unwrap();
            probe.seen_services.lock().unwrap().push(services.len());
        }
        let work = *probe.work.lock().unwrap();
        tokio::time::sleep(work).await;
        probe.total.fetch_sub(1, Ordering::SeqCst);
        *probe
            .in_flight
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert(1) -= 1;
        probe.finished.lock().unwrap().push(name.clone());
        let fail = {
            let mut failures = probe.failures.lock().unwrap();
            match failures.get_mut(&name) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if fail {
            return Err(Injected);
        }
        let action = *probe.action.lock().unwrap();
        Ok(action)
    }

    async fn cleanup(key: ObjectRef, probe: Arc<Probe>) -> Result<Action, Injected> {
        probe.cleanups.lock().unwrap().push(key.name);
        Ok(Action::await_change())
    }
}

fn warm(name: &str) -> WarmApp {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1",
        "kind": "WarmApp",
        "metadata": { "name": name },
        "spec": { "recipe": "webapp", "version": "1.0.0" },
    }))
    .unwrap()
}

fn config() -> Config {
    Config {
        concurrency: 2,
        resync_period: Duration::from_secs(3600),
        seed: Some(7),
        ..Config::default()
    }
}

async fn store_with(names: &[&str]) -> Store {
    let store = Store::in_memory().await.unwrap();
    for name in names {
        store.create(&warm(name)).await.unwrap();
    }
    store
}

struct Running {
    handle: Handle,
    shutdown: Shutdown,
    task: JoinHandle<Stopped>,
}

fn start(store: &Store, probe: &Arc<Probe>, config: Config, swarm: Option<SimSwarm>) -> Running {
    let mut controller =
        Controller::<TestReconciler>::new(store.clone(), Arc::clone(probe), config);
    if let Some(swarm) = swarm {
        controller = controller.with_swarm(Arc::new(swarm));
    }
    let handle = controller.handle();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    Running {
        handle,
        shutdown,
        task,
    }
}

async fn sleep_secs(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s)).await;
}

fn web() -> ObjectRef {
    ObjectRef::new(Kind::WarmApp, "web")
}

fn managed_service(name: &str) -> spec::ServiceSpec {
    spec::ServiceSpec {
        name: Some(name.into()),
        labels: Some(spec::Map::from([(
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        )])),
        task_template: Some(spec::TaskSpec {
            container_spec: Some(spec::ContainerSpec {
                image: Some("hearth-fixture/webapp:1.0.0".into()),
                args: Some(vec!["/bin/serve".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn startup_should_reconcile_every_object_once() {
    let store = store_with(&["web", "api"]).await;
    let probe = Probe::new(None);
    let run = start(&store, &probe, config(), None);
    sleep_secs(5.0).await;
    assert_eq!((probe.count("web"), probe.count("api")), (1, 1));
    assert_eq!(run.handle.queue_depth(), 0);
    assert_eq!(run.handle.active_workers(), 0);
    run.shutdown.stop_gracefully();
    assert_eq!(run.task.await.unwrap(), Stopped::Drained);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_triggers_should_become_one_reconcile() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    let run = start(&store, &probe, config(), None);
    sleep_secs(1.0).await;
    assert_eq!(probe.count("web"), 1);
    for _ in 0..100 {
        assert!(run.handle.trigger(web()));
    }
    sleep_secs(5.0).await;
    assert_eq!(probe.count("web"), 2, "100 triggers, one reconcile");
    assert_eq!(run.handle.reconciles_started(), 2);
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_reconcile_should_cause_exactly_one_rerun_after_it() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    *probe.work.lock().unwrap() = Duration::from_secs(10);
    let run = start(&store, &probe, config(), None);
    sleep_secs(1.0).await;
    assert_eq!(run.handle.active_workers(), 1);
    // Triggers from every source while the first reconcile runs.
    for i in 0..50 {
        run.handle.trigger(web());
        let mut obj = store.get::<WarmApp>("web").unwrap();
        obj.spec.version = format!("1.0.{i}");
        store.update(&obj).await.unwrap();
        sleep_secs(0.1).await;
    }
    assert_eq!(
        probe.count("web"),
        1,
        "no second reconcile while the first runs"
    );
    assert_eq!(run.handle.queue_depth(), 1, "one deferred rerun");
    sleep_secs(30.0).await;
    let calls = probe.calls_of("web");
    assert_eq!(calls.len(), 2, "exactly one rerun: {calls:?}");
    assert!(
        calls[1] >= Duration::from_secs(10),
        "the rerun starts after the first ends"
    );
    assert_eq!(probe.max_per_key.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn one_key_should_never_be_reconciled_twice_at_once_and_concurrency_is_bounded() {
    let names = ["a", "b", "c", "d"];
    let store = store_with(&names).await;
    let probe = Probe::new(None);
    *probe.work.lock().unwrap() = Duration::from_millis(1700);
    *probe.action.lock().unwrap() = Action::requeue(Duration::from_millis(300));
    let run = start(&store, &probe, config(), None);
    for i in 0..400usize {
        let name = names[(i * 7 + i / 3) % names.len()];
        run.handle.trigger(ObjectRef::new(Kind::WarmApp, name));
        if i % 5 == 0 {
            let mut obj = store.get::<WarmApp>(name).unwrap();
            obj.spec.version = format!("1.0.{i}");
            store.update(&obj).await.unwrap();
        }
        sleep_secs(0.13).await;
    }
    let total: usize = names.iter().map(|n| probe.count(n)).sum();
    assert!(total > 40, "the keys were reconciled many times ({total})");
    assert_eq!(probe.max_per_key.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.max_total.load(Ordering::SeqCst),
        2,
        "the concurrency bound is reached and never exceeded"
    );
    run.shutdown.stop_gracefully();
    assert_eq!(run.task.await.unwrap(), Stopped::Drained);
    assert_eq!(probe.total.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_should_grow_on_failures_and_reset_after_a_success() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    probe.failures.lock().unwrap().insert("web".into(), 5);
    let cfg = Config {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        backoff_jitter: 0.2,
        ..config()
    };
    let run = start(&store, &probe, cfg, None);
    sleep_secs(100.0).await;
    let calls = probe.calls_of("web");
    assert_eq!(
        calls.len(),
        6,
        "five failures, then a success and no more: {calls:?}"
    );
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let plain = Duration::from_secs(1 << i);
        assert!(
            gap >= plain && gap < plain.mul_f64(1.2) + Duration::from_millis(1),
            "gap {i} is {gap:?}, expected {plain:?} plus at most 20%"
        );
    }
    assert_eq!(run.handle.reconciles_failed(), 5);
    // After the success the backoff starts again at the base delay.
    probe.failures.lock().unwrap().insert("web".into(), 2);
    run.handle.trigger(web());
    sleep_secs(10.0).await;
    let calls = probe.calls_of("web");
    assert_eq!(calls.len(), 9);
    let first_gap = calls[7] - calls[6];
    assert!(
        first_gap >= Duration::from_secs(1) && first_gap < Duration::from_millis(1201),
        "reset backoff gap {first_gap:?}"
    );
    let second_gap = calls[8] - calls[7];
    assert!(second_gap >= Duration::from_secs(2) && second_gap < Duration::from_millis(2401));
}

#[tokio::test(start_paused = true)]
async fn a_requeue_action_should_reconcile_again_after_its_delay() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    *probe.action.lock().unwrap() = Action::requeue(Duration::from_secs(30));
    let _run = start(&store, &probe, config(), None);
    sleep_secs(95.0).await;
    let calls = probe.calls_of("web");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls
        .windows(2)
        .all(|p| p[1] - p[0] == Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_success_returning_backoff_should_just_await_a_change() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    *probe.action.lock().unwrap() = Action::backoff();
    let _run = start(&store, &probe, config(), None);
    sleep_secs(600.0).await;
    assert_eq!(probe.count("web"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_resync_should_catch_a_change_whose_event_was_missed() {
    let swarm = SimSwarm::new(SimConfig::default());
    let id = swarm
        .create_service(&managed_service("hw-web_app"))
        .await
        .unwrap();
    let store = store_with(&["web"]).await;
    let probe = Probe::new(Some(swarm.clone()));
    let cfg = Config {
        resync_period: Duration::from_secs(60),
        resync_jitter: 0.1,
        ..config()
    };
    // No swarm attached to the controller: it hears no Docker events at all.
    let _run = start(&store, &probe, cfg, None);
    sleep_secs(1.0).await;
    assert_eq!(*probe.seen_services.lock().unwrap(), vec![1]);
    swarm.remove_service(&id).await.unwrap();
    sleep_secs(58.0).await;
    assert_eq!(
        probe.count("web"),
        1,
        "nothing triggered the key before the resync"
    );
    sleep_secs(8.0).await;
    assert_eq!(probe.count("web"), 2, "the resync reconciled it");
    assert_eq!(*probe.seen_services.lock().unwrap(), vec![1, 0]);
}

#[tokio::test(start_paused = true)]
async fn docker_events_should_trigger_the_owner_and_a_restart_should_reconnect_and_relist() {
    let swarm = SimSwarm::new(SimConfig::default());
    let store = store_with(&["web", "api"]).await;
    let probe = Probe::new(None);
    let _run = start(&store, &probe, config(), Some(swarm.clone()));
    sleep_secs(1.0).await;
    assert_eq!((probe.count("web"), probe.count("api")), (1, 1));
    let events_calls = || {
        swarm
            .calls()
            .iter()
            .filter(|c| c.call.verb == Verb::Events)
            .count()
    };
    assert_eq!(events_calls(), 1);

    // A service event names only the service: it is mapped to WarmApp "web" by its name.
    swarm
        .create_service(&managed_service("hw-web_app"))
        .await
        .unwrap();
    sleep_secs(0.5).await;
    assert!(probe.count("web") >= 2, "the service event triggered web");
    assert_eq!(probe.count("api"), 1, "and only web");

    // dockerd restarts: the stream ends; the runtime reopens it and relists everything.
    let (web_before, api_before) = (probe.count("web"), probe.count("api"));
    swarm.restart_daemon();
    sleep_secs(0.5).await;
    assert_eq!(events_calls(), 1, "it waits its reconnect delay first");
    sleep_secs(2.0).await;
    assert_eq!(events_calls(), 2, "the stream was reopened");
    assert_eq!(
        probe.count("api"),
        api_before + 1,
        "the relist reconciled api"
    );
    assert!(probe.count("web") > web_before, "and web");

    // The reopened stream works.
    let api_now = probe.count("api");
    swarm
        .create_service(&managed_service("hw-api_app"))
        .await
        .unwrap();
    sleep_secs(0.5).await;
    assert_eq!(probe.count("api"), api_now + 1);
}

#[tokio::test(start_paused = true)]
async fn a_swarm_orphan_without_an_object_should_be_cleaned_up_at_relist() {
    let swarm = SimSwarm::new(SimConfig::default());
    swarm
        .create_service(&managed_service("hw-gone_app"))
        .await
        .unwrap();
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    let _run = start(&store, &probe, config(), Some(swarm.clone()));
    sleep_secs(1.0).await;
    assert_eq!(*probe.cleanups.lock().unwrap(), vec!["gone".to_string()]);
    assert_eq!(probe.count("web"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stack_with_only_networks_and_volumes_left_should_be_found_at_relist() {
    // A teardown cut off after removing the services leaves the stack's network (hearth's
    // labels) and a volume a task made (only the stack namespace label, #13): the relist
    // finds their owners too, and each gets its cleanup.
    let swarm = SimSwarm::new(SimConfig::default());
    swarm
        .create_network(&spec::NetworkSpec {
            name: "hw-netonly_default".into(),
            driver: Some("overlay".into()),
            labels: Some(spec::Map::from([
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
                (labels::KIND.to_string(), Kind::WarmApp.as_str().to_string()),
                (labels::NAME.to_string(), "netonly".to_string()),
            ])),
            ..Default::default()
        })
        .await
        .unwrap();
    swarm
        .create_volume(&spec::VolumeSpec {
            name: "hw-volonly_data".into(),
            labels: Some(spec::Map::from([(
                crate::swarm::labels::NAMESPACE.to_string(),
                "hw-volonly".to_string(),
            )])),
            ..Default::default()
        })
        .await
        .unwrap();
    // Someone else's stack volume maps to no owner.
    swarm
        .create_volume(&spec::VolumeSpec {
            name: "other_data".into(),
            labels: Some(spec::Map::from([(
                crate::swarm::labels::NAMESPACE.to_string(),
                "other".to_string(),
            )])),
            ..Default::default()
        })
        .await
        .unwrap();
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    let _run = start(&store, &probe, config(), Some(swarm.clone()));
    sleep_secs(1.0).await;
    let mut cleaned = probe.cleanups.lock().unwrap().clone();
    cleaned.sort();
    assert_eq!(cleaned, ["netonly", "volonly"]);
    assert_eq!(probe.count("web"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_orphan_should_be_cleaned_up_soon_when_the_relists_swarm_listing_fails() {
    // The startup relist's listing of services and its first two retries fail: the orphan
    // comes with the third retry (1 + 2 + 4 s of backoff, stretched by jitter < 1.2), not
    // with the next resync an hour later. Its name maps to no owner, so only a listing (by
    // its labels) finds it, never its creation event.
    let swarm = SimSwarm::new(SimConfig::default());
    let mut orphan = managed_service("hd-gone-0123456789ab_app");
    orphan.labels.get_or_insert_with(Default::default).extend([
        (labels::KIND.to_string(), Kind::WarmApp.as_str().to_string()),
        (labels::NAME.to_string(), "gone".to_string()),
    ]);
    swarm.create_service(&orphan).await.unwrap();
    let list_services = crate::swarm::Call::new(Verb::List, crate::swarm::ObjectKind::Service);
    swarm.fail_next_of(list_services, 3, crate::swarm::sim::Fault::Unavailable);
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    let _run = start(&store, &probe, config(), Some(swarm.clone()));
    sleep_secs(1.0).await;
    assert_eq!(
        probe.count("web"),
        1,
        "the store's keys do not wait for the swarm"
    );
    assert!(probe.cleanups.lock().unwrap().is_empty());
    sleep_secs(8.0).await;
    assert_eq!(*probe.cleanups.lock().unwrap(), vec!["gone".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn spec_changes_and_deletes_trigger_but_status_writes_do_not() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    let _run = start(&store, &probe, config(), None);
    sleep_secs(1.0).await;
    assert_eq!(probe.count("web"), 1);

    let mut obj = store.get::<WarmApp>("web").unwrap();
    obj.status.observed_generation = 1;
    store.update_status(&obj).await.unwrap();
    sleep_secs(1.0).await;
    assert_eq!(
        probe.count("web"),
        1,
        "a status write is the controller's own"
    );

    let mut obj = store.get::<WarmApp>("web").unwrap();
    obj.spec.version = "1.1.0".into();
    store.update(&obj).await.unwrap();
    sleep_secs(1.0).await;
    assert_eq!(probe.count("web"), 2);

    store.create(&warm("new")).await.unwrap();
    store.delete::<WarmApp>("web", None).await.unwrap();
    sleep_secs(1.0).await;
    assert_eq!(probe.count("new"), 1);
    assert_eq!(*probe.cleanups.lock().unwrap(), vec!["web".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_should_finish_in_flight_reconciles_and_start_no_new_ones() {
    let store = store_with(&["web", "api"]).await;
    let probe = Probe::new(None);
    *probe.work.lock().unwrap() = Duration::from_secs(10);
    let cfg = Config {
        concurrency: 1,
        ..config()
    };
    let run = start(&store, &probe, cfg, None);
    sleep_secs(1.0).await;
    run.shutdown.stop_gracefully();
    let started = Instant::now();
    assert_eq!(run.task.await.unwrap(), Stopped::Drained);
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "it waited for the reconcile"
    );
    assert_eq!(probe.finished.lock().unwrap().len(), 1);
    assert_eq!(
        probe.calls.lock().unwrap().len(),
        1,
        "the queued key never started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forced_shutdown_should_abort_in_flight_reconciles() {
    let store = store_with(&["web"]).await;
    let probe = Probe::new(None);
    *probe.work.lock().unwrap() = Duration::from_secs(3600);
    let run = start(&store, &probe, config(), None);
    sleep_secs(1.0).await;
    run.shutdown.stop_gracefully();
    sleep_secs(1.0).await;
    run.shutdown.stop_now();
    assert_eq!(run.task.await.unwrap(), Stopped::Aborted);
    assert!(probe.finished.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_should_release_its_key_and_retry_with_backoff() {
    struct Panicky;
    impl Reconciler for Panicky {
        type Object = WarmApp;
        type Context = AtomicUsize;
        type Error = Injected;
        async fn reconcile(_: Arc<WarmApp>, n: Arc<AtomicUsize>) -> Result<Action, Injected> {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom");
            }
            Ok(Action::await_change())
        }
    }
    let store = store_with(&["web"]).await;
    let n = Arc::new(AtomicUsize::new(0));
    let controller = Controller::<Panicky>::new(store, Arc::clone(&n), config());
    let handle = controller.handle();
    tokio::spawn(controller.run(Shutdown::new()));
    sleep_secs(5.0).await;
    assert_eq!(n.load(Ordering::SeqCst), 2);
    assert_eq!(handle.reconciles_failed(), 1);
}

#[test]
fn config_durations_should_read_as_humantime() {
    let cfg: Config = serde_saphyr::from_str(
        "concurrency: 8\nresyncPeriod: 2h 30m\nbackoffBase: 500ms\nbackoffMax: 90s\n",
    )
    .unwrap();
    assert_eq!(cfg.concurrency, 8);
    assert_eq!(cfg.resync_period, Duration::from_secs(9000));
    assert_eq!(cfg.backoff_base, Duration::from_millis(500));
    assert_eq!(cfg.backoff_max, Duration::from_secs(90));
    assert_eq!(
        cfg.events_reconnect_base,
        Config::default().events_reconnect_base
    );
    let err = serde_saphyr::from_str::<Config>("resyncPeriod: soon\n").unwrap_err();
    assert!(err.to_string().contains("soon"), "{err}");
}

/// Records every new span's name and `object` field.
#[derive(Clone, Default)]
struct SpanRecorder(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanRecorder {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Object(String);
        impl tracing::field::Visit for Object {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "object" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut object = Object(String::new());
        attrs.record(&mut object);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), object.0));
    }
}

#[tokio::test(start_paused = true)]
async fn every_reconcile_should_run_in_a_span_carrying_its_key() {
    use tracing_subscriber::layer::SubscriberExt;

    struct SpanSeer;
    impl Reconciler for SpanSeer {
        type Object = WarmApp;
        type Context = Mutex<Vec<Option<&'static str>>>;
        type Error = Injected;
        async fn reconcile(_: Arc<WarmApp>, seen: Arc<Self::Context>) -> Result<Action, Injected> {
            let span = tracing::Span::current();
            seen.lock().unwrap().push(span.metadata().map(|m| m.name()));
            Ok(Action::await_change())
        }
    }
    let recorder = SpanRecorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = store_with(&["web", "api"]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let controller = Controller::<SpanSeer>::new(store, Arc::clone(&seen), config());
    tokio::spawn(controller.run(Shutdown::new()));
    sleep_secs(1.0).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("reconcile"), Some("reconcile")]
    );
    let mut spans: Vec<(String, String)> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "reconcile")
        .cloned()
        .collect();
    spans.sort();
    assert_eq!(
        spans,
        vec![
            ("reconcile".to_string(), "WarmApp/api".to_string()),
            ("reconcile".to_string(), "WarmApp/web".to_string()),
        ]
    );
}

/// Issue 14 (`serve`'s `wait()` returned before the store was released: the API test
/// `after_wait_returns_the_data_directory_opens_again_at_once` once failed with
/// `DirectoryInUse`): when `run` returns, none of the controller's tasks holds the store any
/// more. Its trigger tasks (store feed, resync, relist; each with a store clone) were aborted
/// but not awaited, so they lived on until the runtime next polled them — on this
/// current-thread runtime, until after `run` had returned.
#[tokio::test]
async fn when_run_returns_no_task_of_the_controller_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    store.create(&warm("web")).await.unwrap();
    let probe = Probe::new(None);
    let controller = Controller::<TestReconciler>::new(store.clone(), Arc::clone(&probe), config());
    let shutdown = Shutdown::new();
    let stopper = {
        let (shutdown, probe) = (shutdown.clone(), Arc::clone(&probe));
        tokio::spawn(async move {
            while probe.finished.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shutdown.stop_gracefully();
        })
    };
    let stopped = controller.run(shutdown).await;
    assert_eq!(stopped, Stopped::Drained);
    drop(store);
    // No await in between: what `run` left running has had no chance to end.
    let reopened = Store::open(dir.path()).await;
    assert!(
        reopened.is_ok(),
        "the store is still held after run returned: {:?}",
        reopened.err()
    );
    stopper.await.unwrap();
}
