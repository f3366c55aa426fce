//! `hearth get workers` (the CLI binary) against a real `hearth serve` process on the real
//! swarm lists every background worker of the daemon with its last run and its last error
//! (issue 14, "one worker model").
//!
//! The daemon gets everything that starts a worker: a state file (`state-file`), a nightly
//! schedule (`nightly`), an API listener (`tokens-file`), plus the ones every daemon runs
//! (`orphan-sweep`, `slot-reclaim`, `gauges`, `recipe-fetch`, `container-owners`). The periodic ones must show a
//! last run and no error; an edit of the state file must show as the `state-file` row's last
//! run. (A worker error is not provoked here: a rejected file is the file's error, in history,
//! not the follower's; `runtime::workers` tests a failing step's LAST ERROR on the board.)
//! Cost: a few seconds (one daemon start, no stack deployed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hearth_tests::process::{free_addr, ServeProcess};
use hearth_tests::support::{
    eventually, hearth_bin, real_swarm, unique_name, RUN_LABEL, TEST_LABEL,
};

/// Every worker a fully configured daemon runs, sorted.
const WORKERS: [&str; 8] = [
    "container-owners",
    "gauges",
    "nightly",
    "orphan-sweep",
    "recipe-fetch",
    "slot-reclaim",
    "state-file",
    "tokens-file",
];

/// Those that run on a timer (the followers wait for an edit; the nightly for 03:00).
const PERIODIC: [&str; 4] = ["gauges", "orphan-sweep", "recipe-fetch", "slot-reclaim"];

/// `hearth get workers --server ADDR <extra…>`: (success, stdout, stderr).
fn get_workers(
    server: &str,
    token_file: &std::path::Path,
    extra: &[&str],
) -> (bool, String, String) {
    let out = std::process::Command::new(hearth_bin())
        .args(["get", "workers", "--server", server])
        .args(extra)
        .env("HEARTH_TOKEN_FILE", token_file)
        .output()
        .expect("run hearth get workers");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_workers_lists_every_worker_with_last_run_and_last_error() {
    if real_swarm("get_workers_lists_every_worker").await.is_none() {
        return;
    }
    let test_run = unique_name("wk");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yml");
    std::fs::write(
        &state,
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {test_run}\nspec:\n  \
             slots: 1\n  portBase: 31600\n  portsPerSlot: 10\n  waitTimeout: 1m\n"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let server = addr.to_string();
    let mut daemon = ServeProcess::new(
        dir.path(),
        addr,
        vec![
            "--state".into(),
            state.clone().into(),
            "--catalogue".into(),
            hearth_tests::daemon::example_catalogue().into(),
            "--base-domain".into(),
            "hearth.test".into(),
            "--label".into(),
            format!("{}={}", TEST_LABEL.0, TEST_LABEL.1).into(),
            "--label".into(),
            format!("{RUN_LABEL}={test_run}").into(),
            "--nightly".into(),
            "0 3 * * *".into(),
            "--nightly-prune-label".into(),
            format!("{RUN_LABEL}={test_run}").into(),
        ],
    );
    daemon.spawn();
    daemon.ready(Duration::from_secs(30)).await;
    let token_file = dir.path().join("data").join("token");

    // JSON first: wait until every periodic worker ran once.
    let workers: Vec<serde_json::Value> = eventually(
        "every periodic worker ran once",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (ok, out, err) = get_workers(&server, &token_file, &["-o", "json"]);
            async move {
                assert!(ok, "hearth get workers -o json failed: {err}");
                let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
                let ran = |w: &serde_json::Value| w["lastRunMs"].as_u64().is_some();
                all.iter()
                    .filter(|w| PERIODIC.contains(&w["name"].as_str().unwrap()))
                    .all(ran)
                    .then_some(all)
            }
        },
    )
    .await;
    let mut names: Vec<&str> = workers
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, WORKERS, "{workers:#?}\n{}", daemon.log_tail(40));

    // The table: one row per worker, with LAST RUN and LAST ERROR columns.
    let (ok, table, err) = get_workers(&server, &token_file, &[]);
    assert!(ok, "hearth get workers failed: {err}");
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["NAME", "STATE", "LAST RUN", "NEXT RUN", "LAST ERROR"] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    let error_at = header.find("LAST ERROR").unwrap();
    let rows: Vec<&str> = lines.collect();
    for name in WORKERS {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        if PERIODIC.contains(&name) {
            assert!(row.contains(" ago"), "{name} shows no last run:\n{table}");
        }
        assert_eq!(
            row.get(error_at..).map(str::trim),
            Some("-"),
            "{name} shows an error:\n{table}"
        );
    }

    // An edit of the state file is a run of its follower, shown in LAST RUN (a follower that
    // waits for edits shows `never` until then); it ran without an error.
    std::fs::write(
        &state,
        std::fs::read_to_string(&state)
            .unwrap()
            .replace("slots: 1", "slots: 2"),
    )
    .unwrap();
    let row = eventually(
        "the state-file worker shows its run",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (ok, table, err) = get_workers(&server, &token_file, &[]);
            async move {
                assert!(ok, "hearth get workers failed: {err}");
                table
                    .lines()
                    .find(|r| r.split_whitespace().next() == Some("state-file"))
                    .filter(|r| r.contains(" ago"))
                    .map(str::to_string)
            }
        },
    )
    .await;
    assert_eq!(row.get(error_at..).map(str::trim), Some("-"), "{row}");
    daemon.kill();
}
