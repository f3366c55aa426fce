//! Promotion on the real swarm through the daemon (`serve::start` in-process, temp data dir and
//! state file, the example catalogue and the fixture images): a run with a failed required
//! tier and one with a required tier skipped because its dependency was not ready promote
//! nothing; a green run promotes its version, which becomes Ready and serves; re-applying the
//! unchanged state file keeps the promotion; `hearth promote` to the broken fixture version is
//! rolled back while the app keeps serving (probed every second), and `spec.version` is set
//! back to the version that serves; `hearth sweep --now` runs the nightly sweep, whose refresh
//! advances a `refresh: latest` app to the newest release through the same gate.
//!
//! Needs `scripts/testbed.sh`. Under `CI=true` an unreachable Docker fails this test. Every
//! object carries `hearth.test=1` and `hearth.test.run=<unique>`; the test removes its stack.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::access::admin_token as auth;
use controller::cli::ci::Client;
use controller::runtime::Shutdown;
use controller::serve::Running;
use controller::stack::{teardown, TeardownOptions};
use controller::swarm::DockerSwarm;
use crd::promotion::{InForce, PromotionResult};
use crd::{RunPhase, WarmApp};
use hearth_tests::real_serve::{self, ready_at, wait_app, write_state};
use hearth_tests::served::served_versions;
use hearth_tests::support::{eventually, real_swarm, unique_name};
use state::history::{reason, ObjectRef, Query};

fn webapp_doc(name: &str, version: &str) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: webapp\n  version: {version}\n  promote: onGreen\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: 30s\n  env:\n    REPLICAS: \"1\"\n"
    )
}

async fn start(dir: &Path, docker: DockerSwarm, run: &str) -> (Running, Shutdown) {
    real_serve::start(
        real_serve::options(dir, run),
        Arc::new(docker.clone()),
        &docker,
    )
    .await
}

/// Starts a run of webapp `version` through the daemon (nothing deployed: the CI harness
/// would), reports `tiers`, finishes it; returns the run id and its final phase.
async fn run_through(client: &Client, version: &str, tiers: &[&str]) -> (String, RunPhase) {
    let owner = controller::liveness::current_owner().unwrap();
    let started: serde_json::Value = client
        .post(
            "/api/v1/runs",
            &serde_json::json!({
                "recipe": "webapp", "version": version, "owner": owner,
                "requiredTiers": ["install"],
            }),
        )
        .await
        .unwrap();
    let id = started["run"].as_str().unwrap().to_string();
    let _: serde_json::Value = client
        .post(
            &format!("/api/v1/runs/{id}/report"),
            &serde_json::json!({ "tiers": tiers }),
        )
        .await
        .unwrap();
    let run: crd::Run = client
        .post(&format!("/api/v1/runs/{id}/finish"), &serde_json::json!({}))
        .await
        .unwrap();
    (id, run.status.phase)
}

fn promotions(running: &Running, app: &str) -> Vec<serde_json::Value> {
    running
        .store
        .history(
            &Query::newest(50)
                .about(ObjectRef::new(crd::Kind::WarmApp, app))
                .reason(reason::PROMOTED),
        )
        .unwrap()
        .into_iter()
        .map(|e| e.details)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_runs_promote_failed_or_skipped_ones_do_not_and_a_broken_promotion_rolls_back_while_serving(
) {
    let Some(docker) = real_swarm("promote").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run_label = unique_name("promote");
    let web = format!("t-pr-{:x}", std::process::id() & 0xffff);
    let stack = format!("hw-{web}");
    let state_file = dir.path().join("state.yml");
    write_state(&state_file, &webapp_doc(&web, "1.0.0"));
    let (running, shutdown) = start(dir.path(), docker.clone(), &run_label).await;
    // Runs change state: the client carries the token the daemon created.
    let token = running
        .token_file
        .as_deref()
        .map(|f| auth::read(f).unwrap());
    let client = Client::new(running.http_addr.unwrap()).with_token(token);
    wait_app(
        &running,
        &web,
        "Ready at 1.0.0",
        Duration::from_secs(120),
        ready_at("1.0.0"),
    )
    .await;

    // A failed required tier, and a required tier skipped because its dep was not ready:
    // neither run is green, neither promotes.
    let (_, failed) = run_through(&client, "1.1.0", &["install=fail:exit 1"]).await;
    assert_eq!(failed, RunPhase::Failed);
    let (_, skipped) = run_through(
        &client,
        "1.1.0",
        &["install=skip:dependency sso was not ready"],
    )
    .await;
    assert_eq!(skipped, RunPhase::Failed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = running.store.get::<WarmApp>(&web).unwrap();
    assert_eq!(app.spec.version, "1.0.0");
    assert!(promotions(&running, &web).is_empty());

    // A green run: its version becomes the warm app's, Ready and serving.
    let t = Instant::now();
    let (green, phase) = run_through(&client, "1.1.0", &["install=pass"]).await;
    assert_eq!(phase, RunPhase::Succeeded);
    let app = wait_app(
        &running,
        &web,
        "Ready at the promoted 1.1.0",
        Duration::from_secs(120),
        ready_at("1.1.0"),
    )
    .await;
    eprintln!("timing: green run to Ready at 1.1.0 in {:?}", t.elapsed());
    let view = app.version_view();
    assert_eq!(
        (view.declared.as_str(), view.in_force),
        ("1.0.0", InForce::Promoted)
    );
    let store = running.store.clone();
    let name = web.clone();
    let last = eventually(
        "the promotion's Ready verdict",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let p = store
                .get::<WarmApp>(&name)
                .unwrap()
                .status
                .promotion
                .filter(|p| p.last.result == PromotionResult::Ready);
            async move { p }
        },
    )
    .await;
    assert_eq!(last.last.run.as_deref(), Some(green.as_str()));
    let ready_entry = promotions(&running, &web)
        .into_iter()
        .find(|d| d["result"] == "ready")
        .unwrap();
    assert_eq!(ready_entry["run"], green.as_str());
    assert_eq!(
        (ready_entry["from"].as_str(), ready_entry["to"].as_str()),
        (Some("1.0.0"), Some("1.1.0"))
    );
    eventually(
        "only 1.1.0 serving after the promotion",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let d = docker.clone();
            let s = stack.clone();
            async move {
                let v = served_versions(&d, &s).await;
                (v == BTreeSet::from(["1.1.0".to_string()])).then_some(v)
            }
        },
    )
    .await;
    let metrics = running.metrics.encode().unwrap();
    assert!(
        metrics.contains("hearth_promotions_total{result=\"ready\"} 1"),
        "{metrics}"
    );

    // The unchanged state file, re-applied, never reverts the promotion.
    let mut edited = webapp_doc(&web, "1.0.0");
    edited.push_str("# saved again\n");
    write_state(&state_file, &edited);
    let store = running.store.clone();
    eventually(
        "the re-applied file recorded",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let n = store
                .history(&Query::newest(20).reason(controller::statefile::APPLIED))
                .unwrap()
                .len();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        running.store.get::<WarmApp>(&web).unwrap().spec.version,
        "1.1.0"
    );

    // `hearth promote --to 2.1.0-broken`: the gate fails, 1.1.0 keeps serving throughout and
    // is restored; spec.version is set back to it.
    let t = Instant::now();
    let mut out = Vec::new();
    controller::cli::promote::promote(
        &controller::cli::promote::PromoteArgs {
            app: web.clone(),
            to: "2.1.0-broken".into(),
            allow_downgrade: false,
            // Returns once the daemon accepted it: this test samples the served versions
            // while the upgrade runs.
            wait: controller::cli::progress::WaitArgs::detached(),
            server: controller::cli::ci::ServerArg {
                server: running.http_addr.unwrap(),
                token_file: running.token_file.clone(),
                data_dir: None,
            },
        },
        &mut out,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.starts_with(&format!("{web} 1.1.0 -> 2.1.0-broken: started")),
        "{printed}"
    );
    let mut samples = 0;
    let mut saw_broken_spec = false;
    loop {
        let app = running.store.get::<WarmApp>(&web).unwrap();
        saw_broken_spec |= app.spec.version == "2.1.0-broken";
        let done = app.status.promotion.as_ref().is_some_and(|p| {
            p.last.to == "2.1.0-broken" && p.last.result != PromotionResult::Pending
        });
        if done {
            break;
        }
        let served = served_versions(&docker, &stack).await;
        assert!(
            served.contains("1.1.0"),
            "1.1.0 stopped serving during the upgrade: {served:?} ({:?})",
            app.status
        );
        samples += 1;
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no verdict within 180 s: {:?}",
            app.status
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "timing: broken promotion rolled back in {:?} ({samples} serving samples, all with 1.1.0)",
        t.elapsed()
    );
    assert!(saw_broken_spec);
    let app = running.store.get::<WarmApp>(&web).unwrap();
    let record = app.status.promotion.clone().unwrap();
    assert_eq!(record.last.result, PromotionResult::RolledBack);
    assert_eq!(app.spec.version, "1.1.0", "set back to what serves");
    wait_app(
        &running,
        &web,
        "Ready at 1.1.0 after the rollback",
        Duration::from_secs(60),
        ready_at("1.1.0"),
    )
    .await;
    let served = eventually(
        "only 1.1.0 serving after the rollback",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let d = docker.clone();
            let s = stack.clone();
            async move {
                let v = served_versions(&d, &s).await;
                (v == BTreeSet::from(["1.1.0".to_string()])).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(served.len(), 1);
    assert!(promotions(&running, &web)
        .iter()
        .any(|d| d["result"] == "rolledBack" && d["to"] == "2.1.0-broken"));
    let metrics = running.metrics.encode().unwrap();
    assert!(
        metrics.contains("hearth_promotions_total{result=\"rolled_back\"} 1"),
        "{metrics}"
    );

    // Validation errors name the field.
    let err = client
        .post::<serde_json::Value>(
            &format!("/api/v1/warmapps/{web}/promote"),
            &serde_json::json!({"to": "9.9.9"}),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(": 422: to: "), "{text}");

    // The nightly sweep by hand (`hearth sweep --now`) with `refresh: latest` declared (an
    // unrelated edit: the promoted 1.1.0 stays): the refresh advances the app to the newest
    // release through the same health gate.
    write_state(
        &state_file,
        &webapp_doc(&web, "1.0.0").replace(
            "  promote: onGreen\n",
            "  promote: onGreen\n  refresh: latest\n",
        ),
    );
    let store = running.store.clone();
    let name = web.clone();
    eventually(
        "refresh: latest applied",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let a = store.get::<WarmApp>(&name).unwrap();
            async move { (a.spec.refresh == crd::warmapp::RefreshPolicy::Latest).then_some(a) }
        },
    )
    .await;
    assert_eq!(
        running.store.get::<WarmApp>(&web).unwrap().spec.version,
        "1.1.0"
    );
    let t = Instant::now();
    let (mut out, mut said) = (Vec::new(), Vec::new());
    controller::cli::ci::sweep(
        &controller::cli::ci::SweepArgs {
            dry_run: false,
            now: true,
            progress: controller::cli::progress::Mode::Plain,
            server: controller::cli::ci::ServerArg {
                server: running.http_addr.unwrap(),
                token_file: running.token_file.clone(),
                data_dir: None,
            },
        },
        &mut out,
        &mut said,
    )
    .await
    .unwrap();
    // Progress in plain mode: a line before, one per step and one at the end (stderr).
    let said = String::from_utf8(said).unwrap();
    assert!(said.starts_with("nightly sweep started"), "{said}");
    for step in ["sweep", "refresh", "images", "store"] {
        assert!(said.contains(&format!("\n  {step} ok: ")), "{said}");
    }
    assert!(said.contains("nightly sweep done in "), "{said}");
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["sweep", "fetch", "refresh", "images", "store"]);
    assert_eq!(
        report["steps"][2]["details"]["advanced"][0],
        format!("{web} -> 2.0.0")
    );
    // The refresh just started a health-gated upgrade (seconds on the real swarm): the image
    // prune right after it must wait for another night.
    let skipped = report["steps"][3]["details"]["skipped"]
        .as_str()
        .unwrap_or("");
    assert!(skipped.contains("promotion"), "{report}");
    wait_app(
        &running,
        &web,
        "Ready at the newest release 2.0.0 after the nightly refresh",
        Duration::from_secs(120),
        ready_at("2.0.0"),
    )
    .await;
    eprintln!(
        "timing: nightly refresh to Ready at 2.0.0 in {:?}",
        t.elapsed()
    );
    let nightly = running
        .store
        .history(&Query::newest(5).reason(controller::nightly::NIGHTLY))
        .unwrap();
    assert_eq!(nightly.len(), 1);
    assert!(
        nightly[0].message.starts_with("manual nightly run done"),
        "{}",
        nightly[0].message
    );
    assert!(running
        .metrics
        .encode()
        .unwrap()
        .contains("hearth_nightly_last_success_timestamp_seconds"));

    shutdown.stop_gracefully();
    running.wait().await;
    teardown(&docker, &stack, &TeardownOptions::forced())
        .await
        .unwrap();
}

/// `hearth promote` and `hearth rollback` (the real binary, no `--detach`) wait for the
/// promotion's result, showing the app's phase and its stack's services: a good version ends
/// `ready` (exit 0), a rollback too, and a version whose health check fails ends non-zero
/// saying it was rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_wait_for_the_result_and_a_rolled_back_promotion_exits_non_zero() {
    let Some(docker) = real_swarm("promote waits").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run_label = unique_name("prwait");
    let web = format!("t-pw-{:x}", std::process::id() & 0xffff);
    let stack = format!("hw-{web}");
    write_state(&dir.path().join("state.yml"), &webapp_doc(&web, "1.0.0"));
    let (running, shutdown) = start(dir.path(), docker.clone(), &run_label).await;
    wait_app(
        &running,
        &web,
        "Ready at 1.0.0",
        Duration::from_secs(120),
        ready_at("1.0.0"),
    )
    .await;
    let server = running.http_addr.unwrap().to_string();
    let token = running.token_file.clone().unwrap();
    let hearth = |args: &[&str]| {
        let t = Instant::now();
        let out = std::process::Command::new(hearth_tests::support::hearth_bin())
            .args(args)
            .args(["--server", &server, "--token-file"])
            .arg(&token)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        println!(
            "{args:?} in {:?}: {}\n{stdout}{stderr}",
            t.elapsed(),
            out.status
        );
        (out.status.success(), stdout, stderr)
    };

    let (ok, stdout, stderr) = hearth(&["promote", &web, "--to", "1.1.0"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(&format!("{web} 1.0.0 -> 1.1.0: ready\n")),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("{web}: Upgrading")), "{stderr}");
    assert!(
        stderr.contains(&format!("{stack}_app 1/1 ready")),
        "{stderr}"
    );
    assert!(ready_at("1.1.0")(
        &running.store.get::<WarmApp>(&web).unwrap()
    ));

    let (ok, stdout, stderr) = hearth(&["rollback", &web]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(&format!("{web} 1.1.0 -> 1.0.0: ready\n")),
        "{stdout}"
    );

    let (ok, stdout, stderr) = hearth(&["promote", &web, "--to", "2.1.0-broken"]);
    assert!(!ok, "{stdout}{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("hearth: {web} 1.0.0 -> 2.1.0-broken: rolledBack"))
            && last.contains("failed the health gate"),
        "{stderr}"
    );
    assert_eq!(
        running.store.get::<WarmApp>(&web).unwrap().spec.version,
        "1.0.0"
    );

    shutdown.stop_gracefully();
    running.wait().await;
    teardown(&docker, &stack, &TeardownOptions::forced())
        .await
        .unwrap();
}
