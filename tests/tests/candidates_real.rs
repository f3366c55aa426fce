//! Candidates and exact promotion on the real swarm, through the daemon (`serve::start`
//! in-process) and the CLI, on a `file://` clone of the test bed's git fixture recipe (issue 16):
//!
//! 1. A candidate working tree (a "pull request": image 1.1.0, version 1.2.0) is started with
//!    `hearth run start --candidate DIR --deploy`; the tree is edited afterwards (image 2.0.0):
//!    the run's stack runs the snapshot (1.1.0), `run deploy --from canonical` puts the warm
//!    canonical's exact content in (1.0.0, the upgrade tier's base), `--commit SHA` and
//!    `--version V` their snapshots, and `run deploy --from run` the snapshot again — never the
//!    edit. Green, it does not move the canonical
//!    (`promoteCandidates` is off): refused, recorded.
//! 2. With `promoteCandidates: true`, the same candidate's green run moves the canonical to
//!    exactly its snapshot (digest, commit, run), serving 1.1.0; re-applying the unchanged state
//!    file afterwards makes 0 Docker writes.
//! 3. The change is released (tag 1.2.0+1.2.0, image 1.1.0): a green run of the tag moves the
//!    canonical to exactly that tag's commit and digest.
//! 4. A run of a tag that is moved before it finishes is refused (history says why); a run
//!    whose required tier was skipped promotes nothing.
//!
//! Needs `scripts/testbed.sh`. Under `CI=true` an unreachable Docker or a missing fixture
//! repository fails this test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use controller::cli::{Cli, Command as CliCommand};
use controller::runtime::Shutdown;
use controller::serve::Running;
use controller::stack::{teardown, TeardownOptions};
use controller::swarm::{DockerSwarm, Swarm};
use crd::names::BaseDomain;
use crd::{ContentKind, Run, RunPhase, WarmApp, WarmAppPhase};
use hearth_tests::counting::Counting;
use hearth_tests::gitrecipe::{clone_fixture, fixture_recipe_present, git, publish, set_version};
use hearth_tests::real_serve::{self, app_image};
use hearth_tests::support::{eventually, real_swarm, short_name};
use state::history::{ObjectRef, Query};

fn state(name: &str, url: &str, promote_candidates: bool) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: Recipe\nmetadata:\n  name: {name}\nspec:\n  git:\n    url: {url}\n  interval: 10s\n---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: {name}\n  version: 1.0.0+1.0.0\n  promote: onGreen\n  promoteCandidates: {promote_candidates}\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: 30s\n"
    )
}

async fn start(
    dir: &Path,
    swarm: Arc<dyn Swarm>,
    docker: DockerSwarm,
    run: &str,
) -> (Running, Shutdown) {
    real_serve::start(real_serve::options(dir, run), swarm, &docker).await
}

/// Runs `hearth ARGS… --server … --token-file …` in-process; its stdout.
async fn hearth(running: &Running, args: &[&str]) -> String {
    let addr = running.http_addr.unwrap().to_string();
    let token = running.token_file.as_ref().unwrap().display().to_string();
    let mut all = vec!["hearth"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &addr, "--token-file", &token]);
    let cli = Cli::try_parse_from(&all).unwrap();
    let CliCommand::Run(command) = cli.command else {
        panic!("not a run command: {args:?}")
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let result = controller::cli::ci::run(&command, &mut out, &mut err).await;
    assert!(
        result.is_ok(),
        "hearth {args:?}: {:?}\n{}",
        result.err(),
        String::from_utf8_lossy(&err)
    );
    String::from_utf8(out).unwrap()
}

async fn wait_app(
    running: &Running,
    name: &str,
    what: &str,
    pred: impl Fn(&WarmApp) -> bool,
) -> WarmApp {
    real_serve::wait_app(running, name, what, Duration::from_secs(120), pred).await
}

fn ready(a: &WarmApp) -> bool {
    a.status.phase == WarmAppPhase::Ready && a.status.observed_generation == a.metadata.generation
}

/// Starts a run (`extra` are `run start` flags), returns its id.
async fn run_start(running: &Running, recipe: &str, extra: &[&str]) -> String {
    let pid = std::process::id().to_string();
    let mut args = vec![
        "run",
        "start",
        "--recipe",
        recipe,
        "--deploy",
        "--detach",
        "--owner-pid",
        &pid,
        "--require",
        "install",
    ];
    args.extend_from_slice(extra);
    let out = hearth(running, &args).await;
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    started["run"].as_str().unwrap().to_string()
}

/// Reports `tiers` and finishes the run; returns it as finished.
async fn run_finish(running: &Running, id: &str, tiers: &[&str]) -> Run {
    let mut args = vec!["run", "report", id];
    for t in tiers {
        args.extend_from_slice(&["--tier", t]);
    }
    hearth(running, &args).await;
    hearth(running, &["run", "finish", id]).await;
    running.store.get::<Run>(id).unwrap()
}

/// The newest history entries about the app with `reason`.
fn entries(running: &Running, app: &str, reason: &str) -> Vec<state::history::Entry> {
    running
        .store
        .history(
            &Query::newest(50)
                .about(ObjectRef::new(crd::Kind::WarmApp, app))
                .reason(reason),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_snapshotted_and_only_what_went_green_is_promoted_exactly() {
    let Some(docker) = real_swarm("candidates_real").await else {
        return;
    };
    if !fixture_recipe_present("candidates_real") {
        return;
    }
    let t0 = Instant::now();
    let name = short_name("cd");
    let stack = format!("hw-{name}");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    clone_fixture(&repo);
    let url = format!("file://{}", repo.display());
    std::fs::write(dir.path().join("state.yml"), state(&name, &url, false)).unwrap();
    let counting = Arc::new(Counting::new(docker.clone()));
    let (running, shutdown) = start(dir.path(), counting.clone(), docker.clone(), &name).await;
    wait_app(&running, &name, "Ready at 1.0.0", |a| {
        ready(a) && a.status.observed_version.as_deref() == Some("1.0.0+1.0.0")
    })
    .await;
    assert!(app_image(&stack).contains("webapp:1.0.0"));

    // 1. A candidate: the pull request's checkout (image 1.1.0, labelled 1.2.0), uncommitted.
    let pr = dir.path().join("pr");
    clone_fixture(&pr);
    set_version(&pr, "1.2.0+1.2.0", "1.1.0");
    let pr_head = git(&pr, &["rev-parse", "HEAD"]);
    let pr_arg = pr.display().to_string();
    let id = run_start(
        &running,
        &name,
        &["--candidate", &pr_arg, "--require", "upgrade"],
    )
    .await;
    // Edited after the start: nothing of this reaches the run or a promotion.
    set_version(&pr, "1.2.0+1.2.0", "2.0.0");
    let run = running.store.get::<Run>(&id).unwrap();
    let content = run
        .spec
        .content
        .clone()
        .expect("the candidate is snapshotted");
    assert_eq!(content.kind, ContentKind::WorkTree);
    assert_eq!(content.commit.as_deref(), Some(pr_head.as_str()));
    assert!(content.dirty);
    assert_eq!(
        run.spec.version, "1.2.0+1.2.0",
        "the version its compose file names"
    );
    let api: serde_json::Value = controller::cli::ci::Client::new(running.http_addr.unwrap())
        .get(&format!("/api/v1/runs/{id}"))
        .await
        .unwrap();
    assert_eq!(api["spec"]["content"]["digest"], content.digest.as_str());
    let run_stack = format!("hr-{id}");
    assert!(
        app_image(&run_stack).contains("webapp:1.1.0"),
        "install tier: the snapshot"
    );
    // The upgrade tier: the canonical's exact content, then the candidate over it.
    let said = hearth(&running, &["run", "deploy", &id, "--from", "canonical"]).await;
    assert!(said.contains("canonical 1.0.0+1.0.0"), "{said}");
    assert!(
        app_image(&run_stack).contains("webapp:1.0.0"),
        "upgrade base: the canonical"
    );
    // A commit of the declared recipe and a published version, each snapshotted.
    let base_commit = git(&repo, &["rev-parse", "1.0.0+1.0.0^{commit}"]);
    hearth(&running, &["run", "deploy", &id, "--commit", &base_commit]).await;
    assert!(app_image(&run_stack).contains("webapp:1.0.0"));
    let deployed = running
        .store
        .get::<Run>(&id)
        .unwrap()
        .status
        .deployed
        .unwrap();
    let at = deployed.content.unwrap();
    assert_eq!(at.commit.as_deref(), Some(base_commit.as_str()));
    assert_eq!(deployed.from, "commit");
    hearth(
        &running,
        &["run", "deploy", &id, "--version", "1.1.0+1.1.0"],
    )
    .await;
    let deployed = running
        .store
        .get::<Run>(&id)
        .unwrap()
        .status
        .deployed
        .unwrap();
    assert_eq!(deployed.content.unwrap().kind, ContentKind::Release);
    hearth(&running, &["run", "deploy", &id, "--from", "run"]).await;
    assert!(
        app_image(&run_stack).contains("webapp:1.1.0"),
        "the snapshot again, never the edited tree"
    );
    let deployed = running
        .store
        .get::<Run>(&id)
        .unwrap()
        .status
        .deployed
        .unwrap();
    assert_eq!(deployed.content.as_ref(), Some(&content));
    let run = run_finish(&running, &id, &["install=pass", "upgrade=pass"]).await;
    assert_eq!(run.status.phase, RunPhase::Succeeded);
    // Green, but a candidate: the canonical does not move.
    let refused = eventually(
        "the candidate's promotion refused",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let hit = entries(&running, &name, "Rejected")
                .into_iter()
                .find(|e| e.message.contains("promoteCandidates"));
            async move { hit }
        },
    )
    .await;
    assert!(refused.message.contains(&id), "{}", refused.message);
    let app = running.store.get::<WarmApp>(&name).unwrap();
    assert_eq!(app.spec.version, "1.0.0+1.0.0");
    assert_eq!(app.spec.content, None);
    eprintln!("timing: candidate run {:?}", t0.elapsed());

    // 2. promoteCandidates: true; the same candidate (its tree edited meanwhile) goes green
    //    again — from a fresh snapshot of the tree as it is now (2.0.0)? No: a run tests what
    //    it was started with; start it from the edit-free tree to promote exactly 1.1.0.
    std::fs::write(dir.path().join("state.yml"), state(&name, &url, true)).unwrap();
    wait_app(&running, &name, "promoteCandidates on", |a| {
        a.spec.promote_candidates
    })
    .await;
    set_version(&pr, "1.2.0+1.2.0", "1.1.0");
    let id = run_start(&running, &name, &["--candidate", &pr_arg]).await;
    let tested = running.store.get::<Run>(&id).unwrap().spec.content.unwrap();
    assert_eq!(tested.digest, content.digest, "same tree, same digest");
    set_version(&pr, "1.2.0+1.2.0", "2.0.0");
    let run = run_finish(&running, &id, &["install=pass"]).await;
    assert_eq!(run.status.phase, RunPhase::Succeeded);
    let app = wait_app(&running, &name, "serving the candidate", |a| {
        ready(a)
            && a.spec
                .content
                .as_ref()
                .is_some_and(|c| c.digest == tested.digest)
            && a.status.observed_version.as_deref() == Some("1.2.0+1.2.0")
    })
    .await;
    let served = app.spec.content.clone().unwrap();
    assert_eq!(served.run.as_deref(), Some(id.as_str()));
    assert_eq!(served.commit.as_deref(), Some(pr_head.as_str()));
    assert!(
        app_image(&stack).contains("webapp:1.1.0"),
        "exactly what was tested"
    );
    // Re-applying the unchanged state file undoes nothing: 0 Docker writes.
    counting.reset();
    let body = std::fs::read_to_string(dir.path().join("state.yml")).unwrap();
    let base = BaseDomain::parse("hearth.test").unwrap();
    let set = controller::statefile::parse("state.yml", &body, Some(&base)).unwrap();
    let applied = controller::statefile::apply(
        &running.store,
        &set,
        controller::statefile::ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert!(applied.is_noop(), "{applied}");
    running.handle.resync_now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counting.writes(), 0, "re-apply after a promotion");
    let app = running.store.get::<WarmApp>(&name).unwrap();
    assert_eq!(
        app.spec.content.as_ref().map(|c| &c.digest),
        Some(&tested.digest)
    );
    eprintln!("timing: candidate promoted {:?}", t0.elapsed());

    // 3. Released: tag 1.3.0 (image 1.1.0). A green run of the tag promotes exactly it.
    let tag_commit = publish(&repo, "1.3.0+1.3.0", "1.1.0");
    real_serve::wait_fetched(&running, &name, "1.3.0+1.3.0").await;
    let id = run_start(&running, &name, &["--version", "1.3.0+1.3.0"]).await;
    let release = running.store.get::<Run>(&id).unwrap().spec.content.unwrap();
    assert_eq!(release.kind, ContentKind::Release);
    assert_eq!(release.commit.as_deref(), Some(tag_commit.as_str()));
    assert_eq!(release.tag.as_deref(), Some("1.3.0+1.3.0"));
    run_finish(&running, &id, &["install=pass"]).await;
    let app = wait_app(&running, &name, "serving the tag", |a| {
        ready(a) && a.status.observed_version.as_deref() == Some("1.3.0+1.3.0")
    })
    .await;
    let served = app.spec.content.unwrap();
    assert_eq!(served.commit.as_deref(), Some(tag_commit.as_str()));
    assert_eq!(served.digest, release.digest);
    eprintln!("timing: release promoted {:?}", t0.elapsed());

    // 4. A skipped required tier promotes nothing; a tag moved under a run is refused.
    let before = running.store.get::<WarmApp>(&name).unwrap();
    publish(&repo, "1.4.0+1.4.0", "2.0.0");
    real_serve::wait_fetched(&running, &name, "1.4.0+1.4.0").await;
    let skipped = run_start(&running, &name, &["--version", "1.4.0+1.4.0"]).await;
    let run = run_finish(&running, &skipped, &["install=skip:flaky"]).await;
    assert_eq!(run.status.phase, RunPhase::Failed, "a skip is not a pass");
    let moved = run_start(&running, &name, &["--version", "1.4.0+1.4.0"]).await;
    std::fs::write(repo.join("motd.txt"), "moved\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "moved"]);
    git(&repo, &["tag", "-f", "1.4.0+1.4.0"]);
    let moved_to = git(&repo, &["rev-parse", "HEAD"]);
    eventually(
        "the moved tag fetched",
        Duration::from_secs(45),
        Duration::from_millis(250),
        || {
            let r = running.store.get::<crd::Recipe>(&name).unwrap();
            let hit = r
                .status
                .versions
                .iter()
                .any(|v| v.commit == moved_to)
                .then_some(());
            async move { hit }
        },
    )
    .await;
    let run = run_finish(&running, &moved, &["install=pass"]).await;
    assert_eq!(run.status.phase, RunPhase::Succeeded);
    let why = eventually(
        "the moved tag refused",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let hit = entries(&running, &name, "Rejected")
                .into_iter()
                .find(|e| e.message.contains("moved since run"));
            async move { hit }
        },
    )
    .await;
    assert!(why.message.contains(&moved_to), "{}", why.message);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = running.store.get::<WarmApp>(&name).unwrap();
    assert_eq!(after.spec, before.spec, "nothing promoted");
    eprintln!("timing: refusals {:?}", t0.elapsed());

    shutdown.stop_gracefully();
    running.wait().await;
    teardown(&docker, &stack, &TeardownOptions::forced())
        .await
        .unwrap();
    eprintln!("timing: whole test {:?}", t0.elapsed());
}
