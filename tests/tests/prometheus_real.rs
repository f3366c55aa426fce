//! A real Prometheus scrapes a running `hearth serve` on the real swarm; PromQL over its HTTP
//! API returns a run's tier results and the warm app's readiness; `promtool check metrics`
//! finds no problem in hearth's `/metrics`.
//!
//! Needs `scripts/testbed.sh` (dockerd, an active swarm, fixture images, and the Debian
//! `prometheus` package: `/usr/bin/prometheus`, `/usr/bin/promtool`). Under `CI=true` a missing
//! Docker or Prometheus fails the test; elsewhere it prints a loud SKIP. The daemon runs
//! in-process with its own data dir and a free port; Prometheus runs as a child process with a
//! temp config and TSDB directory, listening on 127.0.0.1 only, and is killed at the end.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use controller::stack::{teardown, TeardownOptions};
use hearth_tests::real_serve;
use hearth_tests::support::{eventually, in_ci, real_swarm, unique_name, RemoveOnDrop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// The `hearth` binary next to this test's target directory.
fn hearth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("hearth");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p hearth-controller --bin hearth`)",
        bin.display()
    );
    bin
}

/// Whether Prometheus and promtool are installed; under `CI=true` their absence fails.
fn prometheus_installed() -> bool {
    let found = Path::new(PROMETHEUS).exists() && Path::new(PROMTOOL).exists();
    if !found {
        assert!(
            !in_ci(),
            "CI=true and {PROMETHEUS} or {PROMTOOL} is missing: run `bash scripts/testbed.sh` as root"
        );
        eprintln!(
            "\n!!!!!! SKIPPING prometheus_real: {PROMETHEUS} / {PROMTOOL} missing\n\
             !!!!!! (run `bash scripts/testbed.sh` as root; under CI=true this fails)\n"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child (our own Prometheus) when the test ends, whatever happens.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.0 GET; the status code and body.
async fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request =
        format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant PromQL query: each result's labels and value, or `None` while Prometheus is not
/// answering yet.
async fn query(prom: SocketAddr, promql: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(promql)))
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let results = v.pointer("/data/result")?.as_array()?;
    Some(
        results
            .iter()
            .filter_map(|r| {
                let value = r.pointer("/value/1")?.as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect(),
    )
}

fn hearth(args: &[&str]) -> String {
    let out = Command::new(hearth_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hearth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_hearth_and_promql_returns_tier_results_and_warm_app_readiness() {
    let Some(docker) = real_swarm("prometheus_real").await else {
        return;
    };
    if !prometheus_installed() {
        return;
    }
    let run_label = unique_name("prom");
    // A failing assertion below must not leave the warm app's stack behind.
    let _guard = RemoveOnDrop::new(&run_label);
    let app = format!("t-prom-{}", &run_label[run_label.len() - 8..]).replace('_', "-");
    let dir = tempfile::tempdir().unwrap();
    let pool = format!("{app}-pool");
    let state = format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {app}\nspec:\n  recipe: webapp\n  \
         version: 1.0.0\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    \
         readyTimeout: 90s\n---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {pool}\nspec:\n  \
         slots: 1\n  portBase: 32000\n  portsPerSlot: 10\n  waitTimeout: 1m\n  tiers: [install, upgrade, custom-sso]\n"
    );
    std::fs::write(dir.path().join("state.yml"), state).unwrap();
    let (running, shutdown) = real_serve::start(
        real_serve::options(dir.path(), &run_label),
        Arc::new(docker.clone()),
        &docker,
    )
    .await;
    let hearth_addr = running.http_addr.unwrap();
    // The CLI calls below change state: they pass the token file the daemon created.
    let token = running.token_file.clone().unwrap().display().to_string();
    let server = hearth_addr.to_string();

    // Prometheus, scraping hearth every second.
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: hearth\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: ['{hearth_addr}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // The warm app becomes Ready (hearth reports it through the API).
    let client = controller::cli::ci::Client::new(hearth_addr);
    eventually(
        "warm app Ready",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            let path = format!("/api/v1/warmapps/{app}");
            let client = client.clone();
            async move {
                let a: crd::WarmApp = client.get(&path).await.ok()?;
                (a.status.phase == crd::WarmAppPhase::Ready).then_some(())
            }
        },
    )
    .await;

    // A run (handed to the CI harness, no deploy) with three reported tiers, then finished.
    let pid = std::process::id().to_string();
    let started: serde_json::Value = serde_json::from_str(&hearth(&[
        "run",
        "start",
        "--recipe",
        "webapp",
        "--version",
        "1.0.0",
        "--pool",
        &pool,
        "--owner-pid",
        &pid,
        "--server",
        &server,
        "--token-file",
        &token,
        "-o",
        "json",
    ]))
    .unwrap();
    let id = started["run"].as_str().unwrap().to_owned();
    hearth(&[
        "run",
        "report",
        &id,
        "--tier",
        "install=pass",
        "--tier",
        "upgrade=fail:broke",
        "--tier",
        "custom-sso=skip:no idp",
        "--server",
        &server,
        "--token-file",
        &token,
    ]);
    let finished = hearth(&[
        "run",
        "finish",
        &id,
        "--server",
        &server,
        "--token-file",
        &token,
    ]);
    // "run <id>: <phase>"
    let phase = finished.trim().rsplit(' ').next().unwrap().to_owned();
    println!("{}", finished.trim());

    // PromQL over Prometheus' HTTP API: the tier results and the warm app's readiness.
    let tiers = eventually(
        "tier results scraped by prometheus",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let r = query(
                prom_addr,
                r#"hearth_tier_results_total{job="hearth",recipe="webapp"}"#,
            )
            .await?;
            (r.len() == 3).then_some(r)
        },
    )
    .await;
    let mut seen: Vec<(String, String, f64)> = tiers
        .iter()
        .map(|(m, v)| {
            (
                m["tier"].as_str().unwrap().to_owned(),
                m["result"].as_str().unwrap().to_owned(),
                *v,
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    println!("PromQL tier results: {seen:?}");
    assert_eq!(
        seen,
        [
            ("custom-sso".to_owned(), "skip".to_owned(), 1.0),
            ("install".to_owned(), "pass".to_owned(), 1.0),
            ("upgrade".to_owned(), "fail".to_owned(), 1.0),
        ]
    );
    let ready = eventually(
        "warm app readiness scraped by prometheus",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let q = format!(r#"hearth_warm_app_ready{{app="{app}"}} * on(app) group_left(version) hearth_warm_app_info"#);
            async move {
                let r = query(prom_addr, &q).await?;
                r.into_iter().next()
            }
        },
    )
    .await;
    println!("PromQL warm app readiness: {ready:?}");
    assert_eq!(ready.1, 1.0);
    assert_eq!(ready.0["version"], "1.0.0");
    let up = query(prom_addr, r#"up{job="hearth"}"#).await.unwrap();
    assert_eq!(up.first().map(|u| u.1), Some(1.0), "{up:?}");
    // The rest of the daemon's wiring, as Prometheus sees it: the store gauges, the slot wait,
    // the metered Docker calls.
    for (promql, want) in [
        (format!(r#"hearth_runs{{phase="{phase}"}}"#), 1.0),
        (
            format!(r#"hearth_slot_wait_seconds_count{{pool="{pool}"}}"#),
            1.0,
        ),
        (format!(r#"hearth_slots_capacity{{pool="{pool}"}}"#), 1.0),
        (r#"count(hearth_store_size_bytes > 0)"#.to_owned(), 1.0),
        (
            r#"count(hearth_docker_api_calls_total{operation="list_services"} > 0)"#.to_owned(),
            1.0,
        ),
        (
            r#"count(hearth_reconciles_total{controller="warmapp"} > 0)"#.to_owned(),
            1.0,
        ),
    ] {
        eventually(
            &promql,
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                let r = query(prom_addr, &promql).await?;
                (r.first().map(|x| x.1) == Some(want)).then_some(())
            },
        )
        .await;
    }

    // promtool lints hearth's exposition.
    let (status, text) = http_get(hearth_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool check metrics: {problems}"
    );

    shutdown.stop_gracefully();
    running.wait().await;
    teardown(&docker, &format!("hw-{app}"), &TeardownOptions::forced())
        .await
        .unwrap_or_else(|e| panic!("cleanup of hw-{app} failed: {e}"));
}
