//! The status page rendered by a real headless Chromium: a screenshot (kept as a test
//! artifact) and the DOM the browser built.
//!
//! A store is filled with a small but complete picture — two warm apps (one Ready after a
//! promotion by a green run, one Degraded after a rolled-back upgrade), a running, a green and
//! a failed run, a slot pool with holders and a waiter, history with a promotion, a sweep and a
//! rollback — and served by [`controller::http::status_page::router`], the page the daemon
//! serves at `/` (`tests/api.rs` checks the daemon's own `/`). Chromium (Debian `chromium`,
//! installed by `scripts/testbed.sh`) then takes a 1280×900 screenshot and dumps the DOM.
//!
//! The screenshot is kept at `<target dir>/test-artifacts/status.png` (the target dir of this
//! build, so `$CARGO_TARGET_DIR` when set). Under `CI=true` a missing Chromium fails the test;
//! elsewhere it prints a loud SKIP. Each Chromium run is killed after [`CHROMIUM_TIMEOUT`] and
//! retried once (headless Chromium occasionally dies on start).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crd::{Run, SlotPool, WarmApp};
use hearth_tests::support::in_ci;
use state::history::{NewEntry, ObjectRef};
use state::Store;

/// The browser; `HEARTH_CHROMIUM` overrides.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// A markup-laden message: the browser must show it as text, never run it.
const EVIL: &str = "<script>document.title='pwned'</script><img src=x>";

fn chromium() -> Option<PathBuf> {
    let path: PathBuf = std::env::var_os("HEARTH_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| CHROMIUM.into());
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "CI=true and {} is missing: run `bash scripts/testbed.sh` as root (installs Debian chromium)",
        path.display()
    );
    eprintln!(
        "\n!!!!!! SKIPPING status_page: {} missing\n\
         !!!!!! (run `bash scripts/testbed.sh` as root; under CI=true this fails)\n",
        path.display()
    );
    None
}

/// `<target dir>/test-artifacts`: this test executable lives in `<target>/<profile>/deps/`.
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn owner() -> serde_json::Value {
    serde_json::json!({"pid": 4242, "processStartTime": 99, "host": "ci-runner-1",
                       "bootId": "b00t"})
}

/// Fills `store` with the picture the page must show.
async fn fill(store: &Store) {
    let now = now_ms();
    let min = 60_000;
    let apps = [
        serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "shop"},
            "spec": {"recipe": "webapp", "version": "1.1.0", "promote": "onGreen"},
            "status": {"phase": "Ready", "observedVersion": "1.1.0", "stackName": "hw-shop",
                       "previousKnownGood": "1.0.0",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy",
                                       "message": "1/1 tasks healthy, probe passed",
                                       "lastTransitionTimeMs": now - 12 * min}],
                       "promotion": {"declaredVersion": "1.0.0", "version": "1.1.0",
                                     "last": {"source": "greenRun", "run": "r-shop-0002",
                                              "from": "1.0.0", "to": "1.1.0", "generation": 2,
                                              "atMs": now - 14 * min, "result": "ready"}}}
        }),
        serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "sso"},
            "spec": {"recipe": "sso", "version": "2.0.0"},
            "status": {"phase": "Degraded", "observedVersion": "2.0.0", "stackName": "hw-sso",
                       "lastError": "upgrade to 2.1.0-broken failed: not healthy within 2m; rolled back to 2.0.0",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "RolledBack",
                                       "message": "serving 2.0.0 after a rollback",
                                       "lastTransitionTimeMs": now - 40_000}],
                       "promotion": {"declaredVersion": "2.0.0", "version": "2.1.0-broken",
                                     "last": {"source": "operator", "from": "2.0.0",
                                              "to": "2.1.0-broken", "generation": 3,
                                              "atMs": now - 3 * min, "result": "rolledBack"}}}
        }),
    ];
    for app in apps {
        let app: WarmApp = serde_json::from_value(app).unwrap();
        store.create(&app).await.unwrap();
    }
    let runs = [
        serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "Run",
            "metadata": {"name": "r-shop-0003"},
            "spec": {"recipe": "webapp", "version": "2.0.0", "owner": owner(), "slotPool": "ci",
                     "requiredTiers": ["install", "e2e"]},
            "status": {"phase": "Running",
                       "slot": {"pool": "ci", "index": 0, "portBase": 20000, "ports": 10},
                       "tiers": [{"name": "install", "result": "pass", "required": true},
                                 {"name": "lint", "result": "pass"}]}
        }),
        serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "Run",
            "metadata": {"name": "r-shop-0002"},
            "spec": {"recipe": "webapp", "version": "1.1.0", "owner": owner(),
                     "requiredTiers": ["install", "e2e"]},
            "status": {"phase": "Succeeded",
                       "tiers": [{"name": "install", "result": "pass"},
                                 {"name": "e2e", "result": "pass"},
                                 {"name": "perf", "result": "skip", "reason": "no runner"}],
                       "verdict": {"green": true}}
        }),
        serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "Run",
            "metadata": {"name": "r-shop-0001"},
            "spec": {"recipe": "webapp", "version": "1.2.0", "owner": owner(),
                     "requiredTiers": ["install", "e2e"]},
            "status": {"phase": "Failed", "lastError": "required tiers did not pass",
                       "tiers": [{"name": "install", "result": "pass"},
                                 {"name": "e2e", "result": "fail", "reason": "3 tests failed"}],
                       "verdict": {"green": false, "problems": [
                           {"problem": "requiredTierFailed", "tier": "e2e",
                            "reason": "3 tests failed"}]}}
        }),
    ];
    for run in runs {
        let run: Run = serde_json::from_value(run).unwrap();
        store.create(&run).await.unwrap();
    }
    let pool: SlotPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "SlotPool",
        "metadata": {"name": "ci"},
        "spec": {"slots": 3, "portBase": 20000, "portsPerSlot": 10},
        "status": {"phase": "Available",
                   "leases": [{"slot": 0, "owner": owner(), "run": "r-shop-0003",
                               "acquiredAtMs": now - 4 * min},
                              {"slot": 2, "owner": owner(), "acquiredAtMs": now - 30_000}],
                   "waiters": [{"owner": owner(), "run": "r-blog-0007",
                                "enqueuedAtMs": now - 5_000, "deadlineMs": now + 595_000}]}
    }))
    .unwrap();
    store.create(&pool).await.unwrap();
    let entry = |reason: &str, kind: crd::Kind, name: &str, message: &str| NewEntry {
        subject: Some(ObjectRef::new(kind, name)),
        ..NewEntry::new(reason, message)
    };
    for e in [
        entry(
            "Swept",
            crd::Kind::Run,
            "r-blog-0006",
            "swept run r-blog-0006: owner pid 977 is gone (stack, 2 volumes, 1 secret)",
        ),
        entry(
            "Promoted",
            crd::Kind::WarmApp,
            "shop",
            "shop promoted 1.0.0 → 1.1.0 by green run r-shop-0002",
        ),
        entry(
            "RolledBack",
            crd::Kind::WarmApp,
            "sso",
            "sso: 2.1.0-broken was not healthy within 2m; rolled back to 2.0.0",
        ),
        NewEntry::new("Rejected", format!("state file rejected: {EVIL}")),
    ] {
        store.append_history(e).await.unwrap();
    }
}

/// Runs Chromium headless on `url` with `mode` (`--screenshot=…` or `--dump-dom`); stdout.
/// Killed after [`CHROMIUM_TIMEOUT`]; retried once when it fails or `done` says no.
async fn chromium_run(
    browser: &Path,
    url: &str,
    mode: &str,
    scratch: &Path,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let mut last = String::new();
    for attempt in 1..=2 {
        let profile = scratch.join(format!("profile-{}-{attempt}", mode.len()));
        let child = tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--window-size=1280,900")
            .arg(mode)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        match tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() && done(&out.stdout) => return out.stdout,
            Ok(Ok(out)) => {
                last = format!(
                    "attempt {attempt}: {} — stderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(Err(e)) => last = format!("attempt {attempt}: {e}"),
            Err(_) => last = format!("attempt {attempt}: killed after {CHROMIUM_TIMEOUT:?}"),
        }
        eprintln!("chromium {mode} failed, {last}");
    }
    panic!("chromium {mode} failed twice; last: {last}");
}

/// `(width, height)` from a PNG's IHDR chunk: the 8-byte signature, then the first chunk
/// (length, `IHDR`, width, height as big-endian u32).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "a PNG is longer than {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn png_sizes_come_from_the_ihdr_chunk() {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&1280u32.to_be_bytes());
    png.extend_from_slice(&900u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0]);
    assert_eq!(png_size(&png), (1280, 900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_status_page_with_apps_runs_slots_and_history() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data")).await.unwrap();
    fill(&store).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, controller::http::status_page::router(store))
            .await
            .unwrap();
    });

    // The screenshot: a 1280×900 PNG with real content (a blank page is ~7 kB).
    let shot = dir.path().join("status.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium_run(&browser, &url, &arg, dir.path(), |_| shot.exists()).await;
    let png = std::fs::read(&shot).unwrap();
    let kept = artifact_dir().join("status.png");
    std::fs::write(&kept, &png).unwrap();
    eprintln!("screenshot kept at {}", kept.display());
    assert_eq!(png_size(&png), (1280, 900), "the window size");
    assert!(
        png.len() > 40_000,
        "the screenshot has content: {} bytes",
        png.len()
    );

    // The DOM the browser built: what an operator reads.
    let dom = chromium_run(&browser, &url, "--dump-dom", dir.path(), |out| {
        out.windows(7).any(|w| w == b"</html>")
    })
    .await;
    let dom = String::from_utf8(dom).unwrap();
    for text in [
        "<title>hearth status</title>",
        "1/2</b> warm apps ready",
        ">shop<",
        ">sso<",
        "<b>1.1.0</b>",
        "promoted over declared 1.0.0",
        ">Ready<",
        ">Degraded<",
        "rolled back to 2.0.0",
        ">r-shop-0002<",
        ">Succeeded<",
        ">green<",
        ">r-shop-0001<",
        ">Failed<",
        "e2e fail <small>required</small>",
        "perf skipped <small>optional</small>",
        "<b>2 / 3</b> in use",
        "waiting: r-blog-0007",
        ">Promoted<",
        ">Swept<",
        "Run/r-blog-0006",
    ] {
        assert!(dom.contains(text), "the DOM shows {text:?}:\n{dom}");
    }
    // The markup in the message is text in the DOM: no script or image element was created.
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no script element: {dom}");
    assert!(!dom.contains("<img"), "no image element: {dom}");
    assert!(!dom.contains("pwned</title>"), "the title was not changed");
    server.abort();
}
