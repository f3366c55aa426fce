//! `hearth run exec`'s verdict against a daemon on the simulated swarm (no deploy, so no
//! Docker): a command that exits non-zero makes its run red even when it reported every
//! required tier as passed (`spec.failure`, verdict problem `jobFailed`), and a command that
//! exits 0 while a required tier was skipped makes the wrapper exit non-zero. The real `hearth`
//! binary is the wrapper and, inside the command, the reporting client.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use controller::cli::ci::Method;
use hearth_tests::daemon::SimDaemon;
use hearth_tests::support::hearth_bin;
use serde_json::Value;

/// `hearth run exec --recipe webapp --version 1.1.0 --require install -- sh -c SCRIPT`: its exit
/// code and the run it started.
async fn exec(d: &SimDaemon, script: &str) -> (Option<i32>, String, String) {
    let bin = hearth_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "exec", "--recipe", "webapp", "--version", "1.1.0"])
        .args([
            "--require",
            "install",
            "--ttl",
            "1m",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("PATH", path)
        .env("HEARTH_SERVER", d.addr.to_string())
        .env("HEARTH_TOKEN_FILE", &d.token_file)
        .env_remove("HEARTH_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run = stderr
        .lines()
        .find_map(|l| l.strip_prefix("hearth: run ")?.strip_suffix(" started"))
        .unwrap_or_else(|| panic!("no run started: {stderr}"))
        .to_string();
    (out.status.code(), run, stderr)
}

async fn run(d: &SimDaemon, id: &str) -> Value {
    d.client().get(&format!("/api/v1/runs/{id}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exec_is_red_when_its_command_fails_and_exits_non_zero_when_its_run_is_not_green() {
    let d = SimDaemon::start("").await;
    let report = "hearth run report \"$HEARTH_RUN_ID\" --tier";

    // Every required tier passed, then the command failed: red, and the wrapper exits 3.
    let (code, id, stderr) = exec(&d, &format!("{report} install=pass && exit 3")).await;
    assert_eq!(code, Some(3), "{stderr}");
    let r = run(&d, &id).await;
    assert_eq!(r["status"]["phase"], "Failed", "{r}");
    assert_eq!(r["spec"]["failure"], "command exited 3", "{r}");
    let problems = r["status"]["verdict"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["problem"] == "jobFailed" && p["reason"] == "command exited 3"),
        "{r}"
    );
    assert!(stderr.contains("Failed"), "{stderr}");

    // The command exits 0 but its required tier was skipped: red, and the wrapper exits 1.
    let (code, id, stderr) = exec(&d, &format!("{report} install=skip:no-base")).await;
    assert_eq!(code, Some(1), "{stderr}");
    let r = run(&d, &id).await;
    assert_eq!(r["status"]["phase"], "Failed", "{r}");
    assert!(r["spec"].get("failure").is_none(), "{r}");

    // Passed and exited 0: green, exit 0 (the two above are the job's doing, not the bed's).
    let (code, id, stderr) = exec(&d, &format!("{report} install=pass")).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(run(&d, &id).await["status"]["phase"], "Succeeded");

    // The finish body is optional; a bad one is a 4xx naming it, and finishes nothing.
    let started: Value = d
        .client()
        .post(
            "/api/v1/runs",
            &serde_json::json!({"recipe": "webapp", "version": "1.1.0", "ttl": "1m",
                "owner": {"pid": 1, "processStartTime": 1, "host": "h", "bootId": "b", "kind": "lease"},
                "requiredTiers": ["install"]}),
        )
        .await
        .unwrap();
    let id = started["run"].as_str().unwrap();
    let finish = format!("/api/v1/runs/{id}/finish");
    for bad in [r#"{"failure": "a\nb"}"#, r#"{"failed": "x"}"#, "[1]"] {
        let (status, body) = d
            .client()
            .send(
                Method::POST,
                &finish,
                bad.as_bytes().to_vec(),
                "application/json",
            )
            .await
            .unwrap();
        assert!((400..500).contains(&status), "{bad}: {status}");
        assert!(
            String::from_utf8_lossy(&body).contains("failure"),
            "{bad}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(run(&d, id).await["status"]["phase"], "Running");
    }
    let (status, body) = d
        .client()
        .send(Method::POST, &finish, Vec::new(), "application/json")
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = run(&d, id).await;
    assert_eq!(r["status"]["phase"], "Failed", "no tier reported: {r}");
    d.stop().await;
}
