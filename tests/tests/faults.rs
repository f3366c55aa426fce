//! The fault matrix on the simulated swarm, in virtual time: 20 % of calls failing, latency spikes and removals that hang; 1,000 swarm objects still converge, backoff reaches its cap and never exceeds it, and API calls per stack stay bounded (no hot loop).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use controller::catalogue::DirCatalogue;
use controller::runtime::{self, Controller, Shutdown};
use controller::stack::{ApplyOptions, ObservationCache, TeardownOptions, NAMESPACE_LABEL};
use controller::swarm::sim::{SimConfig, SimSwarm};
use controller::swarm::{LabelFilter, Labels, ObjectKind, Swarm};
use controller::warmapp::probe::FixedProber;
use controller::warmapp::{Context, TokioClock, WarmAppReconciler};
use crd::names::BaseDomain;
use crd::{WarmApp, WarmAppPhase};
use hearth_tests::scale::{self, MemoCatalogue};
use state::Store;

/// Apps to converge: each stack is a service, a network, a task and its container.
const APPS: usize = 250;
/// Stacks of deleted apps to tear down (their removals hang at first).
const DOOMED: usize = 25;
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const JITTER: f64 = 0.2;
/// Docker calls of one resync pass: the relist's service listing and one listing of every
/// stack (services, networks, volumes, secrets, configs, tasks, containers).
const PASS_CALLS: usize = 8;

/// Services and networks of the deleted apps' stacks still there; `None` when a list call
/// failed (faults stay on while the test looks). Returns the calls it made too.
async fn doomed_left(swarm: &SimSwarm) -> (Option<(usize, usize)>, usize) {
    let all = LabelFilter::all().and_has(NAMESPACE_LABEL);
    let Ok(services) = swarm.list_services(&all).await else {
        return (None, 1);
    };
    let Ok(networks) = swarm.list_networks(&all).await else {
        return (None, 2);
    };
    let doomed = |name: &str| name.starts_with("hw-doomed-");
    let left = (
        services.iter().filter(|s| doomed(&s.meta.name)).count(),
        networks.iter().filter(|n| doomed(&n.name)).count(),
    );
    (Some(left), 2)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_objects_converge_under_failing_slow_and_hanging_calls_with_bounded_backoff_and_calls(
) {
    let swarm = Arc::new(SimSwarm::new(SimConfig {
        start_delay: Duration::from_millis(100),
        seed: 20,
        ..SimConfig::default()
    }));
    let catalogue = Arc::new(MemoCatalogue::new(
        DirCatalogue::open(scale::examples()).unwrap(),
    ));
    let base = BaseDomain::parse("hearth.test").unwrap();
    let extra: Labels = [("hearth.test".to_string(), "1".to_string())].into();
    // Stacks of apps that are no longer declared: the controller must tear them down.
    for i in 0..DOOMED {
        let app = scale::warm_app(&format!("doomed-{i:03}")).unwrap();
        scale::deploy(&swarm, catalogue.as_ref(), &base, &extra, &app)
            .await
            .unwrap();
    }
    let store = Store::in_memory().await.unwrap();
    for i in 0..APPS {
        store
            .create(&scale::warm_app(&scale::app_name(i)).unwrap())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The faults: 20 % of calls fail, network removals hang (until the call deadline) for the
    // first 10 minutes, and every 2 minutes calls take 3 s for 30 s.
    swarm.fail_fraction(0.2);
    swarm.hang_removals(ObjectKind::Network, true);
    let spikes = {
        let swarm = swarm.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(90)).await;
                swarm.set_latency(Duration::from_secs(3));
                tokio::time::sleep(Duration::from_secs(30)).await;
                swarm.set_latency(Duration::ZERO);
            }
        })
    };
    let unhang = {
        let swarm = swarm.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            swarm.hang_removals(ObjectKind::Network, false);
        })
    };
    swarm.clear_calls();

    let ctx = Arc::new(Context {
        swarm: swarm.clone(),
        store: store.clone(),
        catalogue,
        prober: Arc::new(FixedProber::passing()),
        metrics: metrics::Metrics::new().unwrap(),
        clock: Arc::new(TokioClock::new()),
        base_domain: base,
        extra_labels: extra,
        apply: ApplyOptions::default(),
        teardown: TeardownOptions::graceful(),
        observations: ObservationCache::new(),
        renders: Default::default(),
    });
    let config = runtime::Config {
        resync_period: Duration::from_secs(300),
        backoff_base: Duration::from_secs(1),
        backoff_max: BACKOFF_MAX,
        backoff_jitter: JITTER,
        seed: Some(3),
        // Above the default of 4: every teardown of a deleted app holds a worker for the
        // 30 s call deadline while its network removal hangs, and 25 of them at 4 workers
        // starve the other apps for the 10 minutes the hang lasts (11 of 250 Ready then).
        concurrency: 16,
        ..runtime::Config::default()
    };
    let controller =
        Controller::<WarmAppReconciler>::new(store.clone(), ctx, config).with_swarm(swarm.clone());
    let handle = controller.handle();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(controller.run(shutdown.clone()));

    let mut own_calls = 0;
    let start = tokio::time::Instant::now();
    let limit = Duration::from_secs(3600);
    loop {
        let apps = store.list::<WarmApp>().unwrap().items;
        let ready = apps
            .iter()
            .filter(|a| {
                a.status.phase == WarmAppPhase::Ready
                    && a.status.observed_version.as_deref() == Some("1.0.0")
            })
            .count();
        let (left, calls) = doomed_left(&swarm).await;
        own_calls += calls;
        if ready == APPS && left == Some((0, 0)) {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "not converged within {limit:?}: {ready}/{APPS} ready, doomed left {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let converged_after = start.elapsed();
    spikes.abort();
    unhang.abort();
    let calls = swarm.calls();

    // At rest, faults off: the controller only makes its resync passes (no hot loop left
    // behind by the faults). Passes come at least 300 s apart (the period, stretched by
    // jitter), so 20 minutes hold at most 5, each a relist and one observation of every stack.
    swarm.fail_fraction(0.0);
    swarm.set_latency(Duration::ZERO);
    swarm.hang_removals(ObjectKind::Network, false);
    // Retries scheduled before the faults stopped fire within one capped backoff; let them.
    tokio::time::sleep(BACKOFF_MAX.mul_f64(1.0 + JITTER) + Duration::from_secs(30)).await;
    swarm.clear_calls();
    tokio::time::sleep(Duration::from_secs(1200)).await;
    let idle_calls = swarm.call_count();
    shutdown.graceful.cancel();
    task.await.unwrap();

    // What converged: every app's service, network, running task and container.
    swarm.fail_fraction(0.0);
    let all = LabelFilter::all().and_has(NAMESPACE_LABEL);
    let services = swarm.list_services(&all).await.unwrap();
    let networks = swarm.list_networks(&all).await.unwrap();
    let tasks = swarm.list_tasks(&LabelFilter::all()).await.unwrap();
    let containers = swarm.list_containers(&all).await.unwrap();
    let running = tasks
        .iter()
        .filter(|t| t.state == controller::swarm::TaskState::Running)
        .count();
    let objects = services.len() + networks.len() + running + containers.len();
    assert_eq!(
        (services.len(), networks.len(), running, containers.len()),
        (APPS, APPS, APPS, APPS),
        "one of each per app"
    );
    assert!(objects >= 1000, "{objects} objects");

    // Backoff reached its cap and never went beyond it (jitter stretches by < 1 + JITTER).
    let longest = handle.longest_backoff();
    assert!(
        longest >= BACKOFF_MAX,
        "the cap was never reached: {longest:?}"
    );
    assert!(
        longest < BACKOFF_MAX.mul_f64(1.0 + JITTER),
        "beyond the cap: {longest:?}"
    );

    // Calls per stack bounded while converging; at rest only resync passes.
    // The controller's calls: those logged until convergence, less the test's own lists.
    let controller_calls = calls.len() - own_calls;
    let stacks = APPS + DOOMED;
    let per_stack = controller_calls as f64 / stacks as f64;
    eprintln!(
        "converged after {converged_after:?}; {controller_calls} calls ({per_stack:.1} per stack), \
         {} reconciles ({} failed), longest backoff {longest:?}; at rest {idle_calls} calls in 20 min",
        handle.reconciles_started(),
        handle.reconciles_failed()
    );
    assert!(per_stack <= 40.0, "{per_stack:.1} calls per stack");
    assert!(
        idle_calls <= 5 * PASS_CALLS,
        "{idle_calls} calls in 20 idle minutes: more than 5 resync passes"
    );
}
