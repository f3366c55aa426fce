//! The promoter against an in-memory store; the WarmApp reconciler's side of the contract
//! (status at a generation) is played by hand, so every step is observable.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crd::condition::{set_condition, types};
use crd::promotion::{PromotionResult, PromotionSource};
use crd::warmapp::PromotePolicy;
use crd::{Condition, ConditionStatus, WarmApp, WarmAppPhase};
use metrics::Metrics;
use state::history::{reason, ObjectRef, Query};
use state::{ManualClock, Store};

use super::*;

async fn setup(version: &str, policy: PromotePolicy) -> (Store, Promoter, Metrics) {
    let store = Store::in_memory().await.unwrap();
    let mut app: WarmApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": "web"},
        "spec": {"recipe": "webapp", "version": version,
                 "health": {"readyTimeout": "30s"}}
    }))
    .unwrap();
    app.spec.promote = policy;
    store.create(&app).await.unwrap();
    let metrics = Metrics::new().unwrap();
    let promoter = Promoter::new(
        store.clone(),
        metrics.clone(),
        Arc::new(ManualClock::new(1_000)),
        None,
        Config {
            poll: Duration::from_millis(50),
            grace: Duration::from_secs(10),
        },
    );
    (store, promoter, metrics)
}

/// Plays the reconciler: the current generation is Ready at its spec version.
async fn reconciled_ready(store: &Store) {
    let mut app = store.get::<WarmApp>("web").unwrap();
    if let Some(v) = &app.status.observed_version {
        if v != &app.spec.version {
            app.status.previous_known_good = Some(v.clone());
        }
    }
    app.status.phase = WarmAppPhase::Ready;
    app.status.observed_version = Some(app.spec.version.clone());
    app.status.observed_generation = app.metadata.generation;
    store.update_status(&app).await.unwrap();
}

/// Plays the reconciler: the upgrade of the current generation failed and `serving` was
/// restored.
async fn reconciled_rolled_back(store: &Store, serving: &str) {
    let mut app = store.get::<WarmApp>("web").unwrap();
    app.status.phase = WarmAppPhase::Degraded;
    app.status.observed_version = Some(serving.into());
    app.status.observed_generation = app.metadata.generation;
    set_condition(
        &mut app.status.conditions,
        Condition::new(
            types::DEGRADED,
            ConditionStatus::True,
            crate::warmapp::decide::reason::UPGRADE_FAILED,
            "not ready",
            0,
            app.metadata.generation,
        ),
    );
    store.update_status(&app).await.unwrap();
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn promoted_results(store: &Store) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = store
        .history(
            &Query::newest(100)
                .about(ObjectRef::new(crd::Kind::WarmApp, "web"))
                .reason(reason::PROMOTED),
        )
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

fn green_run(version: &str, phase: crd::RunPhase, green: bool) -> Run {
    let mut run: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-1"},
        "spec": {"recipe": "webapp", "version": version,
                 "owner": {"host": "h", "pid": 1, "processStartTime": 1, "bootId": "b"}}
    }))
    .unwrap();
    run.status.phase = phase;
    run.status.verdict = Some(crd::Verdict {
        green,
        problems: vec![],
    });
    run
}

#[tokio::test]
async fn a_green_run_sets_the_version_and_records_ready_after_the_gate() {
    let (store, promoter, metrics) = setup("1.0.0", PromotePolicy::OnGreen).await;
    let submitted = promoter
        .run_succeeded(&green_run("1.1.0", crd::RunPhase::Succeeded, true))
        .await
        .unwrap();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].state, "started");
    until("spec.version written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "1.1.0"
    })
    .await;
    let app = store.get::<WarmApp>("web").unwrap();
    let record = app.status.promotion.clone().unwrap();
    assert_eq!(record.declared_version, "1.0.0");
    assert_eq!(record.last.result, PromotionResult::Pending);
    assert_eq!(record.last.run.as_deref(), Some("r-webapp-1"));
    assert_eq!(record.last.generation, app.metadata.generation);
    assert!(promoter.busy("web"));
    reconciled_ready(&store).await;
    until("the gate's verdict", || !promoter.busy("web")).await;
    let app = store.get::<WarmApp>("web").unwrap();
    assert_eq!(
        app.status.promotion.unwrap().last.result,
        PromotionResult::Ready
    );
    assert_eq!(
        promoted_results(&store),
        [
            ("1.1.0".to_string(), "pending".to_string()),
            ("1.1.0".to_string(), "ready".to_string())
        ]
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("hearth_promotions_total{result=\"ready\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn runs_that_are_not_green_or_apps_not_on_green_promote_nothing() {
    let (store, promoter, _) = setup("1.0.0", PromotePolicy::OnGreen).await;
    for run in [
        green_run("1.1.0", crd::RunPhase::Failed, false),
        green_run("1.1.0", crd::RunPhase::Succeeded, false),
    ] {
        assert!(promoter.run_succeeded(&run).await.unwrap().is_empty());
    }
    let (store2, promoter2, _) = setup("1.0.0", PromotePolicy::Manual).await;
    assert!(promoter2
        .run_succeeded(&green_run("1.1.0", crd::RunPhase::Succeeded, true))
        .await
        .unwrap()
        .is_empty());
    for s in [&store, &store2] {
        assert_eq!(s.get::<WarmApp>("web").unwrap().spec.version, "1.0.0");
        assert!(promoted_results(s).is_empty());
    }
}

#[tokio::test]
async fn promotions_of_one_app_are_serialised_and_the_latest_waiting_request_wins() {
    let (store, promoter, metrics) = setup("1.0.0", PromotePolicy::OnGreen).await;
    let req = |to: &str| Request {
        app: "web".into(),
        to: to.into(),
        source: PromotionSource::Operator,
        run: None,
        allow_downgrade: false,
        content: None,
    };
    assert_eq!(
        promoter.submit(req("1.1.0")).await.unwrap().state,
        "started"
    );
    until("1.1.0 written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "1.1.0"
    })
    .await;
    assert_eq!(promoter.submit(req("1.2.0")).await.unwrap().state, "queued");
    assert_eq!(promoter.submit(req("2.0.0")).await.unwrap().state, "queued");
    // While 1.1.0 is in its gate nothing else is written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.get::<WarmApp>("web").unwrap().spec.version, "1.1.0");
    reconciled_ready(&store).await;
    until("2.0.0 written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "2.0.0"
    })
    .await;
    reconciled_ready(&store).await;
    until("all done", || !promoter.busy("web")).await;
    assert_eq!(
        promoted_results(&store),
        [
            ("1.1.0".to_string(), "pending".to_string()),
            ("1.2.0".to_string(), "superseded".to_string()),
            ("1.1.0".to_string(), "ready".to_string()),
            ("2.0.0".to_string(), "pending".to_string()),
            ("2.0.0".to_string(), "ready".to_string()),
        ]
    );
    let app = store.get::<WarmApp>("web").unwrap();
    assert_eq!(app.declared_version(), "1.0.0");
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("hearth_promotions_total{result=\"superseded\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_rolled_back_promotion_sets_the_version_back_and_a_rollback_undoes_the_last_ready_one() {
    let (store, promoter, _) = setup("1.0.0", PromotePolicy::OnGreen).await;
    reconciled_ready(&store).await;
    let req = |to: &str, source| Request {
        app: "web".into(),
        to: to.into(),
        source,
        run: None,
        allow_downgrade: false,
        content: None,
    };
    promoter
        .submit(req("2.0.0", PromotionSource::GreenRun))
        .await
        .unwrap();
    until("2.0.0 written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "2.0.0"
    })
    .await;
    reconciled_ready(&store).await;
    until("done", || !promoter.busy("web")).await;

    promoter
        .submit(req("2.1.0-broken", PromotionSource::GreenRun))
        .await
        .unwrap();
    until("broken written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "2.1.0-broken"
    })
    .await;
    reconciled_rolled_back(&store, "2.0.0").await;
    until("done", || !promoter.busy("web")).await;
    let app = store.get::<WarmApp>("web").unwrap();
    assert_eq!(app.spec.version, "2.0.0", "set back to what serves");
    let record = app.status.promotion.clone().unwrap();
    assert_eq!(record.last.result, PromotionResult::RolledBack);
    assert_eq!(app.version_view().promoted.as_deref(), Some("2.0.0"));
    assert_eq!(app.declared_version(), "1.0.0");

    // `hearth rollback`: back to the version before the last promotion that became Ready.
    reconciled_ready(&store).await;
    let s = promoter.rollback("web").await.unwrap();
    assert_eq!((s.from.as_str(), s.to.as_str()), ("2.0.0", "1.0.0"));
    until("1.0.0 written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "1.0.0"
    })
    .await;
    reconciled_ready(&store).await;
    until("done", || !promoter.busy("web")).await;
    let app = store.get::<WarmApp>("web").unwrap();
    assert_eq!(
        app.version_view().in_force,
        crd::promotion::InForce::Declared
    );
}

#[tokio::test]
async fn refusals_are_recorded_and_returned() {
    let (store, promoter, metrics) = setup("2.0.0", PromotePolicy::OnGreen).await;
    let err = promoter
        .submit(Request {
            app: "web".into(),
            to: "1.0.0".into(),
            source: PromotionSource::GreenRun,
            run: Some("r".into()),
            allow_downgrade: false,
            content: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PromotionRefused(_)), "{err}");
    let rejected = store
        .history(&Query::newest(5).reason(reason::REJECTED))
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].details["result"], "refused");
    assert!(metrics
        .encode()
        .unwrap()
        .contains("hearth_promotions_total{result=\"refused\"} 1"));
    assert!(matches!(
        promoter.rollback("web").await.unwrap_err(),
        Error::NothingToRollBack(_)
    ));
    assert!(matches!(
        promoter.rollback("nope").await.unwrap_err(),
        Error::AppNotFound(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_never_decides_times_out_and_says_so() {
    let (store, promoter, _) = setup("1.0.0", PromotePolicy::OnGreen).await;
    promoter
        .submit(Request {
            app: "web".into(),
            to: "1.1.0".into(),
            source: PromotionSource::Operator,
            run: None,
            allow_downgrade: false,
            content: None,
        })
        .await
        .unwrap();
    // 2 × 30 s ready timeout + 10 s grace, in virtual time.
    tokio::time::sleep(Duration::from_secs(80)).await;
    until("done", || !promoter.busy("web")).await;
    assert_eq!(
        promoted_results(&store).last().unwrap().1,
        "timedOut".to_string()
    );
}

#[tokio::test]
async fn the_entries_of_a_promotion_name_the_token_that_asked_for_it() {
    let (store, promoter, _) = setup("1.0.0", PromotePolicy::OnGreen).await;
    let request = |to: &str| Request {
        app: "web".into(),
        to: to.into(),
        source: PromotionSource::Operator,
        run: None,
        allow_downgrade: false,
        content: None,
    };
    // The HTTP layer runs each request inside `acting_as` its token's name; the promotion's
    // work goes on in another task and must still name it.
    state::history::acting_as("alice".into(), promoter.submit(request("1.1.0")))
        .await
        .unwrap();
    until("spec.version written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "1.1.0"
    })
    .await;
    reconciled_ready(&store).await;
    until("the gate's verdict", || !promoter.busy("web")).await;
    let entries = store
        .history(&Query::newest(10).reason(reason::PROMOTED))
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_eq!(e.actor.as_deref(), Some("alice"), "{e:?}");
    }
    // The daemon's own promotions (a green run) name nobody.
    promoter
        .run_succeeded(&green_run("2.0.0", crd::RunPhase::Succeeded, true))
        .await
        .unwrap();
    until("spec.version written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "2.0.0"
    })
    .await;
    reconciled_ready(&store).await;
    until("the gate's verdict", || !promoter.busy("web")).await;
    let entries = store
        .history(&Query::newest(2).reason(reason::PROMOTED))
        .unwrap();
    assert!(entries.iter().all(|e| e.actor.is_none()), "{entries:?}");
}

/// Issue 14: the promoter's background tasks were detached (`tokio::spawn`), so the daemon's
/// `wait()` could return while one still held the store. `stop` ends them cleanly and returns
/// once none is left: the promotion under way stays pending in the store (no verdict is made
/// up), the request queued behind it does not start, and the next process resumes the pending
/// one and records its verdict.
#[tokio::test]
async fn stop_ends_every_promotion_task_and_the_next_process_resumes_the_pending_one() {
    let (store, promoter, _) = setup("1.0.0", PromotePolicy::OnGreen).await;
    let req = |to: &str| Request {
        app: "web".into(),
        to: to.into(),
        source: PromotionSource::Operator,
        run: None,
        allow_downgrade: false,
        content: None,
    };
    promoter.submit(req("1.1.0")).await.unwrap();
    until("1.1.0 written", || {
        store.get::<WarmApp>("web").unwrap().spec.version == "1.1.0"
    })
    .await;
    assert_eq!(promoter.submit(req("1.2.0")).await.unwrap().state, "queued");
    assert_eq!(
        promoter.tasks(),
        1,
        "the gate's wait runs in a tracked task"
    );
    // The gate would wait 2 × 30 s + 10 s; stop does not.
    tokio::time::timeout(Duration::from_secs(5), promoter.stop())
        .await
        .expect("stop returns once its tasks ended");
    assert_eq!(promoter.tasks(), 0);
    assert!(!promoter.busy("web"));
    // Nothing was decided or started after the stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = store.get::<WarmApp>("web").unwrap();
    assert_eq!(app.spec.version, "1.1.0", "the queued 1.2.0 did not start");
    assert_eq!(
        app.status.promotion.as_ref().unwrap().last.result,
        PromotionResult::Pending
    );
    assert_eq!(
        promoted_results(&store),
        [("1.1.0".to_string(), "pending".to_string())]
    );
    // The next process.
    let next = Promoter::new(
        store.clone(),
        Metrics::new().unwrap(),
        Arc::new(ManualClock::new(2_000)),
        None,
        Config {
            poll: Duration::from_millis(50),
            grace: Duration::from_secs(10),
        },
    );
    assert_eq!(next.resume().unwrap(), 1);
    reconciled_ready(&store).await;
    until("resumed and recorded", || !next.busy("web")).await;
    assert_eq!(
        promoted_results(&store).last().unwrap(),
        &("1.1.0".to_string(), "ready".to_string())
    );
    next.stop().await;
}
