//! `hearth stack deploy` waits for convergence by default (the real binary, real swarm, output
//! not a terminal, so one line per change):
//! - a stack whose image is missing ends non-zero well within its `--timeout`, with the task's
//!   error (Docker's "No such image") in its output;
//! - a stack whose health check always fails ends non-zero before its timeout, naming the
//!   tasks that exited (Swarm reports them `complete`: the fixture exits 0 when killed);
//! - a healthy stack waits until its task runs and is healthy, printing the service's progress;
//! - `--detach` returns before any task runs.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::support::{fixtures, hearth_bin, real_swarm, unique_name, RUN_LABEL, TEST_LABEL};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One service `web` of `image`, labelled as a test object on the service and its containers.
fn compose(dir: &Path, ns: &str, image: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{ns}.yml"));
    std::fs::write(
        &file,
        format!(
            r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["/bin/serve"]
    labels: {{ "{t}": "{v}", "{RUN_LABEL}": "{ns}" }}
    healthcheck:
      test: ["CMD", "/bin/healthcheck"]
      interval: 1s
      start_period: 1s
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
      restart_policy: {{ delay: 2s }}
"#,
            t = TEST_LABEL.0,
            v = TEST_LABEL.1,
        ),
    )
    .unwrap();
    file
}

fn hearth(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(hearth_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// Removes the stack whatever happened.
struct Stack(String);

impl Drop for Stack {
    fn drop(&mut self) {
        let (out, _) = hearth(&["stack", "rm", "--force", &self.0]);
        if !out.status.success() && !text(&out).contains("Nothing found") {
            eprintln!("cleanup of {}: {}", self.0, text(&out));
        }
    }
}

fn deploy_args<'a>(file: &'a str, ns: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["stack", "deploy", "-c", file, "--label", "hearth.test=1"];
    args.extend_from_slice(extra);
    args.push(ns);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_whose_image_is_missing_fails_within_its_timeout_naming_the_task_error() {
    if real_swarm("stack deploy waits").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = unique_name("nimg");
    let _stack = Stack(ns.clone());
    let image = format!("hearth-test/no-such-image:{}", &ns["hearth-test-".len()..]);
    let file = compose(dir.path(), &ns, &image);
    let file = file.to_str().unwrap();
    let timeout = Duration::from_secs(90);
    let (out, took) = hearth(&deploy_args(file, &ns, &["--timeout", "90s"]));
    let said = text(&out);
    println!("took {took:?}:\n{said}");
    assert!(!out.status.success(), "a missing image must fail:\n{said}");
    assert!(
        took < timeout,
        "took {took:?}, beyond the {timeout:?} timeout"
    );
    assert!(
        said.contains("No such image"),
        "the task error is shown:\n{said}"
    );
    // Shown as it happened (a line naming the task) and again in the final error.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{ns}_web.1 (")) && l.contains("rejected")),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("hearth: stack {ns} failed to converge"))
            && last.contains("No such image"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_stack_is_waited_for_and_detach_returns_at_once() {
    if real_swarm("stack deploy waits").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    let ns = unique_name("wait");
    let _stack = Stack(ns.clone());
    let file = compose(dir.path(), &ns, fixtures::WEBAPP_1_0_0);
    let (out, took) = hearth(&deploy_args(
        file.to_str().unwrap(),
        &ns,
        &["--timeout", "90s"],
    ));
    let said = text(&out);
    println!("waited {took:?}:\n{said}");
    assert!(out.status.success(), "{said}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&format!("Stack {ns} is ready")), "{stdout}");
    assert!(stderr.contains(&format!("{ns}_web 0/1 ready")), "{stderr}");
    assert!(
        stderr.contains(&format!("{ns}_web 1/1 ready\n")),
        "{stderr}"
    );
    let ps = Command::new("docker")
        .args(["service", "ps", "--format", "{{.CurrentState}}"])
        .arg(format!("{ns}_web"))
        .output()
        .unwrap();
    assert!(text(&ps).starts_with("Running"), "{}", text(&ps));

    let ns = unique_name("det");
    let _detached = Stack(ns.clone());
    let file = compose(dir.path(), &ns, fixtures::WEBAPP_1_0_0);
    let (out, took) = hearth(&deploy_args(file.to_str().unwrap(), &ns, &["--detach"]));
    let said = text(&out);
    println!("detached in {took:?}:\n{said}");
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("ready"), "--detach does not wait:\n{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_whose_health_check_fails_ends_non_zero_before_its_timeout() {
    if real_swarm("stack deploy waits").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = unique_name("bhlth");
    let _stack = Stack(ns.clone());
    let file = compose(dir.path(), &ns, fixtures::WEBAPP_BROKEN);
    let timeout = Duration::from_secs(120);
    let (out, took) = hearth(&deploy_args(
        file.to_str().unwrap(),
        &ns,
        &["--timeout", "120s"],
    ));
    let said = text(&out);
    println!("took {took:?}:\n{said}");
    assert!(
        !out.status.success(),
        "a failing health check must fail:\n{said}"
    );
    assert!(
        took < timeout,
        "took {took:?}, beyond the {timeout:?} timeout"
    );
    let last = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(
        last.starts_with(&format!("hearth: stack {ns} failed to converge"))
            && last.contains(&format!("{ns}_web.1 (")),
        "{last}"
    );
}
