//! Scenario tests of the WarmApp reconciler on the simulated swarm, in virtual time.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crd::condition::{find_condition, types};
use crd::names::BaseDomain;
use crd::{ConditionStatus, WarmApp, WarmAppPhase};
use state::history::Query;
use state::Store;

use super::probe::FixedProber;
use super::*;
use crate::catalogue::DirCatalogue;
use crate::stack::{Depth, TeardownOptions};
use crate::swarm::sim::{SimConfig, SimSwarm};
use crate::swarm::spec::{self, StackSpec, UpdateConfig, UpdateOrder};
use crate::swarm::{LabelFilter, Verb};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
}

struct World {
    swarm: Arc<SimSwarm>,
    store: Store,
    prober: FixedProber,
    ctx: Arc<Context>,
}

async fn world() -> World {
    let swarm = Arc::new(SimSwarm::new(SimConfig::default()));
    swarm.set_unhealthy_image("hearth-fixture/webapp:2.1.0-broken");
    let store = Store::in_memory().await.unwrap();
    let prober = FixedProber::passing();
    let ctx = Arc::new(Context {
        swarm: swarm.clone(),
        store: store.clone(),
        catalogue: Arc::new(DirCatalogue::open(examples()).unwrap()),
        prober: Arc::new(prober.clone()),
        metrics: metrics::Metrics::new().unwrap(),
        clock: Arc::new(TokioClock::new()),
        base_domain: BaseDomain::parse("hearth.test").unwrap(),
        extra_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
        apply: ApplyOptions::default(),
        teardown: TeardownOptions::graceful(),
        observations: ObservationCache::new(),
        renders: Default::default(),
    });
    World {
        swarm,
        store,
        prober,
        ctx,
    }
}

fn web(version: &str, timeout: &str) -> WarmApp {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": "web"},
        "spec": {"recipe": "webapp", "version": version,
                 "health": {"http": {"service": "app", "port": 8080, "path": "/healthz"},
                            "readyTimeout": timeout}}
    }))
    .unwrap()
}

impl World {
    fn app(&self) -> WarmApp {
        self.store.get::<WarmApp>("web").unwrap()
    }

    async fn reconcile(&self) -> Action {
        WarmAppReconciler::reconcile(Arc::new(self.app()), self.ctx.clone())
            .await
            .unwrap()
    }

    /// Reconciles as the runtime would (honouring requeues) until `done` or `limit` passes.
    async fn until(&self, limit: Duration, done: impl Fn(&WarmApp) -> bool) -> WarmApp {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let action = self.reconcile().await;
            let app = self.app();
            if done(&app) {
                return app;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reached within {limit:?}: {:?}",
                app.status
            );
            tokio::time::sleep(action.requeue_after().unwrap_or(Duration::from_secs(1))).await;
        }
    }

    async fn ready_at(&self, version: &str) -> WarmApp {
        let v = version.to_string();
        self.until(Duration::from_secs(120), move |a| {
            a.status.phase == WarmAppPhase::Ready
                && a.status.observed_version.as_deref() == Some(v.as_str())
        })
        .await
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_reconcile_of_an_unchanged_ready_app_makes_zero_write_calls() {
    let w = world().await;
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    let app = w.ready_at("1.0.0").await;
    assert_eq!(app.status.stack_name.as_deref(), Some("hw-web"));
    assert_eq!(app.status.observed_generation, 1);
    assert!(w.swarm.write_count() > 0, "the first deploy wrote");
    w.swarm.clear_calls();
    let revision = w.store.revision();
    let action = w.reconcile().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(w.swarm.write_count(), 0, "{:?}", w.swarm.calls());
    assert!(w.swarm.calls().iter().all(|c| c.call.verb == Verb::List));
    assert_eq!(w.store.revision(), revision, "no status write either");
    assert_eq!(w.app().status, app.status);
}

#[tokio::test(start_paused = true)]
async fn a_removed_service_is_recreated_and_the_repair_is_recorded() {
    let w = world().await;
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    w.ready_at("1.0.0").await;
    let services = w.swarm.list_services(&LabelFilter::all()).await.unwrap();
    w.swarm.remove_service(&services[0].meta.id).await.unwrap();
    w.swarm.clear_calls();
    w.reconcile().await;
    assert_eq!(w.app().status.phase, WarmAppPhase::Degraded);
    assert!(w.swarm.calls().iter().any(|c| c.call.verb == Verb::Create));
    w.ready_at("1.0.0").await;
    let history = w
        .store
        .history(&Query::newest(10).about(ObjectRef::new(Kind::WarmApp, "web")))
        .unwrap();
    assert!(
        history.iter().any(|e| e.reason == decide::REPAIRED),
        "{history:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_becomes_ready_at_the_new_version_with_the_old_as_known_good() {
    let w = world().await;
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    w.ready_at("1.0.0").await;
    let mut app = w.app();
    app.spec.version = "2.0.0".into();
    w.store.update(&app).await.unwrap();
    let app = w.ready_at("2.0.0").await;
    assert_eq!(app.status.previous_known_good.as_deref(), Some("1.0.0"));
    assert_eq!(app.status.observed_generation, 2);
}

#[tokio::test(start_paused = true)]
async fn a_broken_version_is_rolled_back_after_its_deadline_and_status_says_why() {
    let w = world().await;
    w.store.create(&web("1.1.0", "30s")).await.unwrap();
    w.ready_at("1.1.0").await;
    let mut app = w.app();
    app.spec.version = "2.1.0-broken".into();
    w.store.update(&app).await.unwrap();
    let started = tokio::time::Instant::now();
    let app = w
        .until(Duration::from_secs(300), |a| {
            a.status.phase == WarmAppPhase::Degraded
                && a.status.observed_version.as_deref() == Some("1.1.0")
                && find_condition(&a.status.conditions, types::READY)
                    .is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "not before the deadline"
    );
    let err = app.status.last_error.clone().unwrap();
    assert!(err.starts_with("upgrade to 2.1.0-broken failed"), "{err}");
    let degraded = find_condition(&app.status.conditions, types::DEGRADED).unwrap();
    assert_eq!(degraded.reason, decide::reason::UPGRADE_FAILED);
    let history = w
        .store
        .history(&Query::newest(20).about(ObjectRef::new(Kind::WarmApp, "web")))
        .unwrap();
    assert!(history.iter().any(|e| e.reason == reason::ROLLED_BACK));
    // Held there: further reconciles write nothing.
    w.swarm.clear_calls();
    w.reconcile().await;
    assert_eq!(w.swarm.write_count(), 0);
    assert_eq!(w.app().status.phase, WarmAppPhase::Degraded);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_keeps_a_new_app_from_being_ready() {
    let w = world().await;
    w.prober
        .set_failure(Some("GET /healthz answered 503".into()));
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    for _ in 0..10 {
        w.reconcile().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let app = w.app();
    assert_eq!(app.status.phase, WarmAppPhase::Deploying);
    let ready = find_condition(&app.status.conditions, types::READY).unwrap();
    assert!(ready.message.contains("probe failed"), "{ready:?}");
    w.prober.set_failure(None);
    w.ready_at("1.0.0").await;
}

#[tokio::test(start_paused = true)]
async fn deleting_an_app_tears_its_stack_down_and_only_its_own() {
    let w = world().await;
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    w.ready_at("1.0.0").await;
    w.store.delete::<WarmApp>("web", None).await.unwrap();
    WarmAppReconciler::cleanup(ObjectRef::new(Kind::WarmApp, "web"), w.ctx.clone())
        .await
        .unwrap();
    let left = stack::observe(w.swarm.as_ref(), "hw-web", Depth::WithTasks)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let history = w
        .store
        .history(&Query::newest(5).about(ObjectRef::new(Kind::WarmApp, "web")))
        .unwrap();
    assert_eq!(history[0].reason, reason::TORN_DOWN);
    // A stack with another owner's labels is never touched.
    let other = Arc::new(Context {
        extra_labels: Labels::from([("hearth.test".to_string(), "other".to_string())]),
        ..clone_ctx(&w.ctx)
    });
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    w.ready_at("1.0.0").await;
    w.store.delete::<WarmApp>("web", None).await.unwrap();
    WarmAppReconciler::cleanup(ObjectRef::new(Kind::WarmApp, "web"), other)
        .await
        .unwrap();
    let left = stack::observe(w.swarm.as_ref(), "hw-web", Depth::Objects)
        .await
        .unwrap();
    assert_eq!(left.services.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_teardown_that_hangs_is_cut_off_recorded_and_finished_by_a_later_attempt() {
    let w = world().await;
    w.store.create(&web("1.0.0", "60s")).await.unwrap();
    w.ready_at("1.0.0").await;
    w.store.delete::<WarmApp>("web", None).await.unwrap();
    // The network's removal never answers (until the sim's call deadline, 30 s).
    w.swarm
        .hang_removals(crate::swarm::ObjectKind::Network, true);
    let started = tokio::time::Instant::now();
    let err = WarmAppReconciler::cleanup(ObjectRef::new(Kind::WarmApp, "web"), w.ctx.clone())
        .await
        .unwrap_err();
    let held = started.elapsed();
    assert!(matches!(err, Error::TeardownUnfinished { .. }), "{err}");
    assert!(
        held <= CLEANUP_BUDGET + Duration::from_secs(2),
        "the worker was held {held:?}"
    );
    let history = w
        .store
        .history(&Query::newest(1).about(ObjectRef::new(Kind::WarmApp, "web")))
        .unwrap();
    assert_eq!(history[0].reason, reason::TEARDOWN_FAILED);
    assert!(
        history[0].message.contains("not finished within 22s"),
        "{}",
        history[0].message
    );
    // Docker answers again: the retry finishes and verifies.
    w.swarm
        .hang_removals(crate::swarm::ObjectKind::Network, false);
    WarmAppReconciler::cleanup(ObjectRef::new(Kind::WarmApp, "web"), w.ctx.clone())
        .await
        .unwrap();
    let left = stack::observe(w.swarm.as_ref(), "hw-web", Depth::WithTasks)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

fn clone_ctx(c: &Context) -> Context {
    Context {
        swarm: c.swarm.clone(),
        store: c.store.clone(),
        catalogue: c.catalogue.clone(),
        prober: c.prober.clone(),
        metrics: c.metrics.clone(),
        clock: c.clock.clone(),
        base_domain: c.base_domain.clone(),
        extra_labels: c.extra_labels.clone(),
        apply: c.apply.clone(),
        teardown: c.teardown.clone(),
        observations: ObservationCache::new(),
        renders: Default::default(),
    }
}

#[test]
fn prepared_stacks_update_start_first_and_label_their_version() {
    use crate::swarm::spec::{ContainerSpec, ServiceSpec, TaskSpec};
    let stack = StackSpec {
        namespace: "hw-web".into(),
        services: vec![ServiceSpec {
            name: Some("hw-web_app".into()),
            task_template: Some(TaskSpec {
                container_spec: Some(ContainerSpec::default()),
                ..TaskSpec::default()
            }),
            ..ServiceSpec::default()
        }],
        ..StackSpec::default()
    };
    let out = prepare(stack, "1.2.3");
    let s = &out.services[0];
    assert_eq!(
        s.update_config.as_ref().unwrap().order,
        Some(UpdateOrder::StartFirst)
    );
    assert_eq!(
        s.rollback_config.as_ref().unwrap().order,
        Some(UpdateOrder::StartFirst)
    );
    let labels = s
        .task_template
        .as_ref()
        .unwrap()
        .container_spec
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels.get(VERSION_LABEL).map(String::as_str), Some("1.2.3"));
}

#[test]
fn a_prepared_stack_updates_one_task_at_a_time_where_the_recipe_gives_no_update_config() {
    // Found by tests/recipe_differential.rs: an empty config made the daemon store parallelism
    // 0 (every task at once) where `docker stack deploy` gets its default of 1.
    use crate::swarm::spec::ServiceSpec;
    let given = UpdateConfig {
        parallelism: Some(3),
        failure_action: Some(crate::swarm::spec::FailureAction::Rollback),
        ..UpdateConfig::default()
    };
    let stack = StackSpec {
        namespace: "hw-web".into(),
        services: vec![ServiceSpec {
            name: Some("hw-web_app".into()),
            update_config: Some(given.clone()),
            ..ServiceSpec::default()
        }],
        ..StackSpec::default()
    };
    let out = prepare(stack, "1.2.3");
    let s = &out.services[0];
    assert_eq!(
        s.update_config,
        Some(UpdateConfig {
            order: Some(UpdateOrder::StartFirst),
            ..given
        }),
        "the recipe's own config keeps everything but gains the order"
    );
    assert_eq!(
        s.rollback_config,
        Some(UpdateConfig {
            parallelism: Some(1),
            order: Some(UpdateOrder::StartFirst),
            ..UpdateConfig::default()
        }),
        "a config the recipe does not give is Docker's default but for the order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_relist_finds_stacks_from_the_listing_its_reconciles_then_share() {
    // A warm app's stack with only its network left (a teardown cut off after the services)
    // and another's task-made volume (only the namespace label, #13): the survey finds both
    // owners, and a reconcile triggered by the relist reads that same listing.
    let w = world().await;
    let owner = owner(
        "netonly",
        &crd::names::warm_stack("netonly", false).unwrap(),
        &w.ctx.extra_labels,
    );
    let mut labels = spec::Map::from([(
        crate::swarm::labels::NAMESPACE.to_string(),
        "hw-netonly".to_string(),
    )]);
    owner.stamp(&mut labels);
    w.swarm
        .create_network(&spec::NetworkSpec {
            name: "hw-netonly_default".into(),
            driver: Some("overlay".into()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap();
    w.swarm
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
    w.swarm.clear_calls();
    let survey = WarmAppReconciler::survey(&w.ctx).unwrap();
    let relist = Ticket::next();
    let owners = survey.owners(relist).await.unwrap();
    assert_eq!(
        owners,
        [
            ObjectRef::new(Kind::WarmApp, "netonly"),
            ObjectRef::new(Kind::WarmApp, "volonly")
        ]
    );
    assert_eq!(w.swarm.call_count(), 7, "one listing of every kind");
    let seen = w
        .ctx
        .observations
        .observe(w.swarm.as_ref(), "hw-netonly", relist)
        .await
        .unwrap();
    assert_eq!(seen.networks.len(), 1);
    assert_eq!(
        w.swarm.call_count(),
        7,
        "the reconcile read the relist's listing"
    );
    assert_eq!(w.ctx.observations.stats().refreshes, 1);
    // A later relist lists again.
    survey.owners(Ticket::next()).await.unwrap();
    assert_eq!(w.swarm.call_count(), 14);
}
