//! The nightly loop in virtual time (tokio's paused clock): once per window, resumed after a
//! restart (the store reopened on the same engine), a missed window caught up exactly once.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use metrics::Metrics;
use state::history::Query;
use state::{MemoryEngine, Store};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::warmapp::TokioClock;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// 2026-01-05 00:00:00 UTC, a Monday; 03:00 Berlin is 02:00 UTC in January.
const MONDAY: u64 = 1_767_571_200_000;

/// A job that counts its runs and takes a while (virtual).
struct Counting(AtomicUsize);

impl Job for Counting {
    fn run(&self) -> BoxFuture<'_, Vec<Step>> {
        Box::pin(async move {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(90)).await;
            vec![Step {
                name: "count".into(),
                ok: true,
                summary: "counted".into(),
                details: serde_json::Value::Null,
            }]
        })
    }
}

fn schedule() -> Schedule {
    Schedule::parse("0 3 * * *", "Europe/Berlin", Duration::from_secs(600), 7).unwrap()
}

async fn store_on(engine: &Arc<MemoryEngine>, start_ms: u64) -> Store {
    let config = state::Config {
        clock: Arc::new(TokioClock::starting_at(start_ms)),
        ..state::Config::default()
    };
    Store::with_engine(engine.clone(), config).await.unwrap()
}

/// Runs a loop from `start_ms` for `for_ms` of virtual time; returns the job's run count.
async fn live(engine: &Arc<MemoryEngine>, start_ms: u64, for_ms: u64) -> (usize, Metrics) {
    let store = store_on(engine, start_ms).await;
    let job = Arc::new(Counting(AtomicUsize::new(0)));
    let metrics = Metrics::new().unwrap();
    let nightly = Arc::new(Nightly::new(
        store,
        Some(schedule()),
        Arc::new(TokioClock::starting_at(start_ms)),
        job.clone(),
        metrics.clone(),
    ));
    let cancel = CancellationToken::new();
    let mut workers = crate::runtime::workers::Supervisor::new(
        cancel.clone(),
        crate::runtime::workers::DEFAULT_POLICY,
        None,
    );
    workers.spawn(NightlyWorker::new(nightly).unwrap());
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    cancel.cancel();
    workers.join().await;
    (job.0.load(Ordering::SeqCst), metrics)
}

/// The windows completed, oldest first, from the history.
async fn windows(engine: &Arc<MemoryEngine>) -> Vec<(u64, bool)> {
    let store = store_on(engine, 0).await;
    let mut out: Vec<(u64, bool)> = store
        .history(&Query::newest(100).reason(NIGHTLY))
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.details["windowMs"].as_u64().unwrap(),
                e.details["missed"].as_bool().unwrap(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test(start_paused = true)]
async fn the_loop_runs_once_per_window_at_the_window_plus_its_jitter() {
    let engine = Arc::new(MemoryEngine::new());
    // Monday 00:00 → Thursday 01:00: the windows of Monday, Tuesday and Wednesday.
    let (runs, metrics) = live(&engine, MONDAY, 3 * DAY + HOUR).await;
    assert_eq!(runs, 3);
    let w = MONDAY + 2 * HOUR;
    assert_eq!(
        windows(&engine).await,
        [(w, false), (w + DAY, false), (w + 2 * DAY, false)]
    );
    let store = store_on(&engine, 0).await;
    let last: LastWindow = store.get_value(LAST_WINDOW_KEY).unwrap().unwrap();
    assert_eq!(last.window_ms, w + 2 * DAY);
    // It finished at the window + its jitter + the job's 90 s.
    let s = schedule();
    assert_eq!(
        last.finished_ms,
        w + 2 * DAY + s.jitter_of(w + 2 * DAY) + 90_000
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("hearth_nightly_last_duration_seconds 90"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_neither_repeats_nor_skips_a_window() {
    let engine = Arc::new(MemoryEngine::new());
    // First life: Monday 00:00 → Tuesday 12:00 (Monday's and Tuesday's windows).
    let (first, _) = live(&engine, MONDAY, DAY + 12 * HOUR).await;
    assert_eq!(first, 2);
    // Restarted at Tuesday 12:00 (store reopened) until Thursday 01:00: only Wednesday's.
    let (second, _) = live(&engine, MONDAY + DAY + 12 * HOUR, DAY + 13 * HOUR).await;
    assert_eq!(second, 1, "Tuesday's window must not run again");
    let w = MONDAY + 2 * HOUR;
    assert_eq!(
        windows(&engine).await,
        [(w, false), (w + DAY, false), (w + 2 * DAY, false)]
    );
    // Restarted right after a window's time but before its jittered run: not skipped.
    let s = schedule();
    let thursday = w + 3 * DAY;
    let (third, _) = live(&engine, thursday + 1, s.jitter_of(thursday) + 120_000).await;
    assert_eq!(third, 1);
    assert_eq!(windows(&engine).await.last(), Some(&(thursday, false)));
}

#[tokio::test(start_paused = true)]
async fn windows_missed_while_down_are_caught_up_exactly_once_at_startup() {
    let engine = Arc::new(MemoryEngine::new());
    let (first, _) = live(&engine, MONDAY, 12 * HOUR).await;
    assert_eq!(first, 1);
    // Down from Monday 12:00 to Friday 12:00: Tuesday..Friday missed; one catch-up run at
    // startup (Friday's window), then nothing until Saturday's.
    let (second, _) = live(&engine, MONDAY + 4 * DAY + 12 * HOUR, 12 * HOUR).await;
    assert_eq!(second, 1);
    let w = MONDAY + 2 * HOUR;
    assert_eq!(windows(&engine).await, [(w, false), (w + 4 * DAY, true)]);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_store_does_not_run_at_once_but_a_manual_run_completes_no_window() {
    let engine = Arc::new(MemoryEngine::new());
    // Monday 03:00 UTC: today's window (02:00 UTC) is before the first start: not run.
    let (runs, _) = live(&engine, MONDAY + 3 * HOUR, HOUR).await;
    assert_eq!(runs, 0);
    let store = store_on(&engine, MONDAY + 4 * HOUR).await;
    let job = Arc::new(Counting(AtomicUsize::new(0)));
    let nightly = Nightly::new(
        store.clone(),
        Some(schedule()),
        Arc::new(TokioClock::starting_at(MONDAY + 4 * HOUR)),
        job.clone(),
        Metrics::new().unwrap(),
    );
    let report = nightly.run_once(None, false).await.unwrap();
    assert!(report.ok);
    assert_eq!(report.window_ms, None);
    let last = nightly.last_window().unwrap().unwrap();
    assert_eq!(
        last.window_ms,
        MONDAY + 2 * HOUR,
        "the baseline, not the manual run"
    );
    assert_eq!(last.finished_ms, 0);
    let entry = &store.history(&Query::newest(1).reason(NIGHTLY)).unwrap()[0];
    assert!(
        entry.message.starts_with("manual nightly run done"),
        "{}",
        entry.message
    );
}

mod refresh {
    //! The refresh step on the simulated swarm, in virtual time: an unhealthy warm app is
    //! force-redeployed and recorded; a healthy one is left alone.

    use crd::names::BaseDomain;
    use crd::{WarmApp, WarmAppPhase};
    use state::history::Query;
    use state::Store;

    use super::super::*;
    use crate::catalogue::DirCatalogue;
    use crate::runtime::Reconciler;
    use crate::stack::{ApplyOptions, Depth, ObservationCache, TeardownOptions};
    use crate::swarm::sim::{SimConfig, SimSwarm};
    use crate::swarm::{Labels, Swarm, Verb};
    use crate::warmapp::probe::FixedProber;
    use crate::warmapp::{Context, TokioClock, WarmAppReconciler};

    fn examples() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
    }

    async fn reconcile_until(
        store: &Store,
        ctx: &Arc<Context>,
        done: impl Fn(&WarmApp) -> bool,
    ) -> WarmApp {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let app = store.get::<WarmApp>("web").unwrap();
            let action = WarmAppReconciler::reconcile(Arc::new(app), ctx.clone())
                .await
                .unwrap();
            let app = store.get::<WarmApp>("web").unwrap();
            if done(&app) {
                return app;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reached: {:?}",
                app.status
            );
            tokio::time::sleep(action.requeue_after().unwrap_or(Duration::from_secs(1))).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_warm_app_is_force_redeployed_and_becomes_ready_through_the_gate() {
        let swarm = Arc::new(SimSwarm::new(SimConfig::default()));
        let store = Store::in_memory().await.unwrap();
        let prober = FixedProber::passing();
        let metrics = Metrics::new().unwrap();
        let catalogue: Arc<dyn crate::catalogue::Catalogue> =
            Arc::new(DirCatalogue::open(examples()).unwrap());
        let ctx = Arc::new(Context {
            swarm: swarm.clone(),
            store: store.clone(),
            catalogue: catalogue.clone(),
            prober: Arc::new(prober.clone()),
            metrics: metrics.clone(),
            clock: Arc::new(TokioClock::new()),
            base_domain: BaseDomain::parse("hearth.test").unwrap(),
            extra_labels: Labels::from([("hearth.test".to_string(), "1".to_string())]),
            apply: ApplyOptions::default(),
            teardown: TeardownOptions::graceful(),
            observations: ObservationCache::new(),
            renders: Default::default(),
        });
        let app: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "web"},
            "spec": {"recipe": "webapp", "version": "1.0.0",
                     "health": {"http": {"service": "app", "port": 8080, "path": "/healthz"},
                                "readyTimeout": "60s"}}
        }))
        .unwrap();
        store.create(&app).await.unwrap();
        reconcile_until(&store, &ctx, |a| a.status.phase == WarmAppPhase::Ready).await;

        let dyn_swarm: Arc<dyn Swarm> = swarm.clone();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let work = Work {
            fetcher: None,
            store: store.clone(),
            sweeper: Sweeper::new(
                dyn_swarm.clone(),
                store.clone(),
                Arc::new(crate::liveness::ProcLiveness::new().unwrap()),
                clock.clone(),
                crate::sweeper::Config::default(),
            ),
            catalogue,
            promoter: Promoter::new(
                store.clone(),
                metrics.clone(),
                clock,
                None,
                crate::promote::Config::default(),
            ),
            handle: None,
            metrics,
            swarm: dyn_swarm,
            prune_labels: LabelFilter::all(),
        };

        // Healthy: the refresh writes nothing to the swarm.
        swarm.clear_calls();
        let step = work.refresh().await;
        assert!(step.ok, "{step:?}");
        assert_eq!(step.details["redeployed"], serde_json::json!([]));
        assert_eq!(swarm.write_count(), 0, "{:?}", swarm.calls());

        // The app's probe fails: the reconciler marks it Degraded/Unhealthy, with nothing to
        // write (the stack matches its spec).
        prober.set_failure(Some("connection refused".into()));
        reconcile_until(&store, &ctx, |a| redeploy::unhealthy(a).is_some()).await;
        let before = crate::stack::observe(swarm.as_ref(), "hw-web", Depth::WithTasks)
            .await
            .unwrap();
        let old_tasks: Vec<String> = before.tasks.iter().map(|t| t.id.clone()).collect();
        assert!(!old_tasks.is_empty());

        swarm.clear_calls();
        let step = work.refresh().await;
        assert!(step.ok, "{step:?}");
        assert_eq!(step.details["redeployed"], serde_json::json!(["web"]));
        let updates = swarm
            .calls()
            .iter()
            .filter(|c| c.call.verb == Verb::Update)
            .count();
        assert_eq!(
            updates,
            before.services.len(),
            "one forced update per service"
        );
        let entries = store
            .history(&Query::newest(10).reason(REDEPLOYED))
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].message.contains("web"), "{}", entries[0].message);

        // The gate: Ready again only once fresh tasks run healthy and the probe passes.
        prober.set_failure(None);
        let app = reconcile_until(&store, &ctx, |a| a.status.phase == WarmAppPhase::Ready).await;
        assert_eq!(app.status.observed_version.as_deref(), Some("1.0.0"));
        let after = crate::stack::observe(swarm.as_ref(), "hw-web", Depth::WithTasks)
            .await
            .unwrap();
        let running_new = after
            .tasks
            .iter()
            .filter(|t| t.state == crate::swarm::TaskState::Running)
            .all(|t| !old_tasks.contains(&t.id));
        assert!(running_new, "every running task is a new one");

        // Store maintenance reports counts per kind and the history's length.
        let step = work.maintenance().await;
        assert!(step.ok, "{step:?}");
        assert_eq!(step.details["objects"]["WarmApp"], 1, "{step:?}");
        assert_eq!(step.details["objects"]["Run"], 0, "{step:?}");
        let kept = step.details["historyEntries"].as_u64().unwrap();
        assert!(kept >= 2, "deployed + redeployed at least: {step:?}");
        assert!(step.summary.starts_with("flushed;"), "{}", step.summary);
    }
}
