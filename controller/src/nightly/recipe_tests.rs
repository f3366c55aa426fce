//! The nightly schedule and a git recipe, in virtual time on the simulated swarm: the cron
//! window fires, the nightly fetches a real git repository (in a temporary directory) and a
//! `refresh: latest` warm app advances to the tag committed since — through the health gate,
//! or back again when the new tag is broken (issue 15).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crd::names::BaseDomain;
use crd::promotion::PromotionResult;
use crd::{RecipeSpec, WarmApp, WarmAppPhase};
use state::history::{reason, Query};
use state::{MemoryEngine, Store};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::catalogue::sources::tests::sh;
use crate::catalogue::sources::Limits;
use crate::catalogue::Sources;
use crate::recipes::Fetcher;
use crate::runtime::Reconciler;
use crate::stack::{ApplyOptions, ObservationCache, TeardownOptions};
use crate::swarm::sim::{SimConfig, SimSwarm};
use crate::swarm::Labels;
use crate::warmapp::probe::FixedProber;
use crate::warmapp::{Context, TokioClock, WarmAppReconciler};

const HOUR: u64 = 3_600_000;
/// 2026-01-05 00:00:00 UTC, a Monday; the window `0 3 * * *` Berlin is 02:00 UTC.
const MONDAY: u64 = 1_767_571_200_000;
const BROKEN_IMAGE: &str = "hearth-fixture/webapp:2.1.0-broken";

/// The fixture web app as a Co-op Cloud recipe: `compose.yml` pinning `image`, the version
/// label, an `.env.sample`.
fn publish(repo: &Path, version: &str, image: &str) {
    let compose = format!(
        r#"version: "3.8"
services:
  app:
    image: {image}
    command: ["/bin/serve"]
    environment:
      - PORT
    healthcheck:
      test: ["CMD", "/bin/healthcheck"]
      interval: 2s
      timeout: 2s
      retries: 3
      start_period: 2s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={version}"
        - "coop-cloud.${{STACK_NAME}}.timeout=${{TIMEOUT:-60}}"
"#
    );
    std::fs::write(repo.join("compose.yml"), compose).unwrap();
    std::fs::write(repo.join(".env.sample"), "TYPE=webfix\nPORT=8080\n").unwrap();
    sh(repo, &["add", "-A"]);
    sh(repo, &["commit", "-q", "-m", &format!("publish {version}")]);
    sh(repo, &["tag", version]);
}

struct World {
    _repo: tempfile::TempDir,
    _data: tempfile::TempDir,
    repo: std::path::PathBuf,
    swarm: Arc<SimSwarm>,
    store: Store,
    nightly: Arc<Nightly>,
    cancel: CancellationToken,
}

impl World {
    async fn new() -> World {
        let repo_dir = tempfile::tempdir().unwrap();
        let repo = repo_dir.path().to_path_buf();
        sh(&repo, &["init", "-q", "-b", "main"]);
        publish(&repo, "1.0.0+1.0.0", "hearth-fixture/webapp:1.0.0");
        let data = tempfile::tempdir().unwrap();

        let engine = Arc::new(MemoryEngine::new());
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(MONDAY));
        let store = Store::with_engine(
            engine,
            state::Config {
                clock: clock.clone(),
                ..state::Config::default()
            },
        )
        .await
        .unwrap();
        let metrics = Metrics::new().unwrap();
        let swarm = Arc::new(SimSwarm::new(SimConfig::default()));
        swarm.set_unhealthy_image(BROKEN_IMAGE);
        let sources = Arc::new(Sources::new(
            data.path().join("recipes"),
            None,
            Limits::default(),
        ));
        let catalogue: Arc<dyn crate::catalogue::Catalogue> = sources.clone();
        store
            .create(&crd::Recipe::new(
                "webfix",
                RecipeSpec {
                    git: Some(crd::recipe::GitSource {
                        url: format!("file://{}", repo.display()),
                        ..Default::default()
                    }),
                    ..RecipeSpec::default()
                },
            ))
            .await
            .unwrap();
        let fetcher = Arc::new(Fetcher::new(
            store.clone(),
            sources,
            metrics.clone(),
            clock.clone(),
        ));
        let first = fetcher.fetch_all().await;
        assert_eq!(first[0].newest.as_deref(), Some("1.0.0+1.0.0"), "{first:?}");

        let ctx = Arc::new(Context {
            swarm: swarm.clone(),
            store: store.clone(),
            catalogue: catalogue.clone(),
            prober: Arc::new(FixedProber::passing()),
            metrics: metrics.clone(),
            clock: clock.clone(),
            base_domain: BaseDomain::parse("hearth.test").unwrap(),
            extra_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
            apply: ApplyOptions::default(),
            teardown: TeardownOptions::graceful(),
            observations: ObservationCache::new(),
            renders: Default::default(),
        });
        let dyn_swarm: Arc<dyn Swarm> = swarm.clone();
        let work = Work {
            store: store.clone(),
            sweeper: Sweeper::new(
                dyn_swarm.clone(),
                store.clone(),
                Arc::new(crate::liveness::ProcLiveness::new().unwrap()),
                clock.clone(),
                crate::sweeper::Config::default(),
            ),
            catalogue: catalogue.clone(),
            fetcher: Some(fetcher),
            promoter: Promoter::new(
                store.clone(),
                metrics.clone(),
                clock.clone(),
                Some(catalogue),
                crate::promote::Config::default(),
            ),
            handle: None,
            metrics: metrics.clone(),
            swarm: dyn_swarm,
            prune_labels: LabelFilter::all(),
        };
        let schedule =
            Schedule::parse("0 3 * * *", "Europe/Berlin", Duration::from_secs(600), 7).unwrap();
        let nightly = Arc::new(Nightly::new(
            store.clone(),
            Some(schedule),
            clock,
            Arc::new(work),
            metrics,
        ));

        let app: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
            "spec": {"recipe": "webfix", "version": "1.0.0+1.0.0", "refresh": "latest",
                     "health": {"http": {"service": "app", "port": 8080, "path": "/healthz"},
                                "readyTimeout": "60s"}}
        }))
        .unwrap();
        store.create(&app).await.unwrap();
        // The WarmApp controller: reconciles as the runtime does — on a change of a warm app,
        // or when the reconcile asked for a requeue.
        let cancel = CancellationToken::new();
        let (s, c, stop) = (store.clone(), ctx, cancel.clone());
        tokio::spawn(async move {
            loop {
                let seen = s.revision();
                let app = s.get::<WarmApp>("web").unwrap();
                let wait = match WarmAppReconciler::reconcile(Arc::new(app), c.clone()).await {
                    Ok(action) => action.requeue_after().unwrap_or(Duration::from_secs(600)),
                    Err(_) => Duration::from_secs(1),
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = s.changed(Kind::WarmApp, seen) => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
        World {
            _repo: repo_dir,
            _data: data,
            repo,
            swarm,
            store,
            nightly,
            cancel,
        }
    }

    fn app(&self) -> WarmApp {
        self.store.get::<WarmApp>("web").unwrap()
    }

    async fn until(&self, what: &str, limit: Duration, done: impl Fn(&WarmApp) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.app()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not reached within {limit:?}: {:?}",
                self.app().status
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn ready_at(&self, version: &str) {
        self.until(
            &format!("Ready at {version}"),
            Duration::from_secs(120),
            |a| {
                a.status.phase == WarmAppPhase::Ready
                    && a.status.observed_version.as_deref() == Some(version)
            },
        )
        .await;
    }

    /// The image and version label of the deployed `app` service.
    async fn deployed(&self) -> (String, String) {
        let services = self
            .swarm
            .list_services(&LabelFilter::eq("com.docker.stack.namespace", "hw-web"))
            .await
            .unwrap();
        let app = services
            .iter()
            .find(|s| s.meta.name == "hw-web_app")
            .unwrap();
        let image = app.image.clone().unwrap();
        let label = app.meta.labels["coop-cloud.hw-web.version"].clone();
        (image, label)
    }

    /// Runs the nightly loop from now (Monday, before the window) until `for_ms` later.
    async fn nightly_for(&self, for_ms: u64) {
        let cancel = CancellationToken::new();
        let mut task = crate::runtime::workers::Supervisor::new(
            cancel.clone(),
            crate::runtime::workers::DEFAULT_POLICY,
            None,
        );
        task.spawn(NightlyWorker::new(self.nightly.clone()).unwrap());
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        cancel.cancel();
        task.join().await;
    }

    fn promotions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .store
            .history(&Query::newest(50).reason(reason::PROMOTED))
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.details["to"].as_str().unwrap_or_default().to_string(),
                    e.details["result"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.reverse();
        out
    }

    fn nightly_steps(&self) -> serde_json::Value {
        let entries = self
            .store
            .history(&Query::newest(5).reason(NIGHTLY))
            .unwrap();
        assert_eq!(entries.len(), 1, "one window ran: {entries:?}");
        entries[0].details["steps"].clone()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn step<'a>(steps: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_nightly_window_fetches_a_new_tag_and_advances_a_latest_warm_app_through_the_gate() {
    let w = World::new().await;
    w.ready_at("1.0.0+1.0.0").await;
    assert_eq!(
        w.deployed().await,
        (
            "hearth-fixture/webapp:1.0.0".to_string(),
            "1.0.0+1.0.0".to_string()
        )
    );
    // A new tag is committed to the recipe's repository; nothing fetches it before the window.
    publish(&w.repo, "1.1.0+1.1.0", "hearth-fixture/webapp:1.1.0");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(w.app().spec.version, "1.0.0+1.0.0");

    // Monday ~01:00 UTC → 04:00 UTC: the 02:00 UTC window (+ up to 10 min jitter) runs once.
    w.nightly_for(3 * HOUR).await;
    let steps = w.nightly_steps();
    assert_eq!(step(&steps, "fetch")["ok"], true, "{steps}");
    assert_eq!(
        step(&steps, "fetch")["details"][0]["newest"],
        "1.1.0+1.1.0",
        "{steps}"
    );
    assert_eq!(
        step(&steps, "refresh")["details"]["advanced"],
        serde_json::json!(["web -> 1.1.0+1.1.0"]),
        "{steps}"
    );
    w.ready_at("1.1.0+1.1.0").await;
    let app = w.app();
    assert_eq!(app.spec.version, "1.1.0+1.1.0");
    assert_eq!(
        app.status.previous_known_good.as_deref(),
        Some("1.0.0+1.0.0")
    );
    assert_eq!(
        w.deployed().await,
        (
            "hearth-fixture/webapp:1.1.0".to_string(),
            "1.1.0+1.1.0".to_string()
        ),
        "the files at the new tag are what runs"
    );
    let result = serde_json::to_value(PromotionResult::Ready).unwrap();
    assert_eq!(
        w.promotions().last().cloned(),
        Some((
            "1.1.0+1.1.0".to_string(),
            result.as_str().unwrap().to_string()
        ))
    );
    // The promotion was issued within the window (02:00 UTC + ≤ 10 min jitter).
    let promoted = w
        .store
        .history(&Query::newest(1).reason(reason::PROMOTED))
        .unwrap();
    let at = promoted[0].time_ms;
    assert!(
        (MONDAY + 2 * HOUR..MONDAY + 2 * HOUR + HOUR / 2).contains(&at),
        "promoted at {at}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_tag_found_by_the_nightly_is_rolled_back_and_the_app_keeps_serving() {
    let w = World::new().await;
    w.ready_at("1.0.0+1.0.0").await;
    publish(&w.repo, "1.1.0+1.1.0", BROKEN_IMAGE);
    tokio::time::sleep(Duration::from_secs(3600)).await;

    w.nightly_for(3 * HOUR).await;
    let steps = w.nightly_steps();
    assert_eq!(
        step(&steps, "refresh")["details"]["advanced"],
        serde_json::json!(["web -> 1.1.0+1.1.0"]),
        "{steps}"
    );
    // The gate fails, the stack goes back to 1.0.0+1.0.0 and the promoter sets the spec back:
    // the app ends Ready on its last good tag, the promotion recorded as rolled back.
    w.until(
        "rolled back, serving 1.0.0+1.0.0",
        Duration::from_secs(600),
        |a| {
            a.spec.version == "1.0.0+1.0.0"
                && a.status.phase == WarmAppPhase::Ready
                && a.status.observed_version.as_deref() == Some("1.0.0+1.0.0")
                && a.status.observed_generation == a.metadata.generation
                && a.status.promotion.as_ref().is_some_and(|p| {
                    p.last.to == "1.1.0+1.1.0" && p.last.result == PromotionResult::RolledBack
                })
        },
    )
    .await;
    let history = w
        .store
        .history(&Query::newest(50).about(ObjectRef::new(Kind::WarmApp, "web")))
        .unwrap();
    let failed = history
        .iter()
        .find(|e| e.reason == reason::ROLLED_BACK)
        .expect("a RolledBack history entry");
    assert!(failed.message.contains("1.1.0+1.1.0"), "{}", failed.message);
    assert_eq!(
        w.deployed().await,
        (
            "hearth-fixture/webapp:1.0.0".to_string(),
            "1.0.0+1.0.0".to_string()
        ),
        "the last good tag serves again"
    );
    let rolled_back = serde_json::to_value(PromotionResult::RolledBack).unwrap();
    assert_eq!(
        w.promotions().last().map(|(_, r)| r.clone()).as_deref(),
        rolled_back.as_str()
    );
}
