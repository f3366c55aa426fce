//! Test support: the real swarm (or a loud skip outside CI), unique names, labels, polling.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use controller::errors::chain;
use controller::swarm::{spec, DockerOptions, DockerSwarm, LabelFilter, Swarm};

/// The label every object a test creates carries; the test bed removes leftovers by it.
pub const TEST_LABEL: (&str, &str) = ("hearth.test", "1");
/// The label that tells one test's objects from another's (value: the test's unique name).
pub const RUN_LABEL: &str = "hearth.test.run";

/// Fixture images built by `scripts/testbed.sh`.
pub mod fixtures {
    /// Healthy web app, version 1.0.0 (command `/bin/serve`, healthcheck `/bin/healthcheck`).
    pub const WEBAPP_1_0_0: &str = "hearth-fixture/webapp:1.0.0";
    /// Healthy web app, version 1.1.0.
    pub const WEBAPP_1_1_0: &str = "hearth-fixture/webapp:1.1.0";
    /// Healthy web app, version 2.0.0.
    pub const WEBAPP_2_0_0: &str = "hearth-fixture/webapp:2.0.0";
    /// Serves like the others, but its healthcheck always fails.
    pub const WEBAPP_BROKEN: &str = "hearth-fixture/webapp:2.1.0-broken";
}

/// Whether the tests run under CI (`CI=true`), where a missing Docker is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Connects to the local Docker daemon (`/var/run/docker.sock`, or `HEARTH_DOCKER_SOCKET`)
/// and checks it is an active swarm manager.
///
/// # Panics
/// Under `CI=true`, when Docker is unreachable or not an active swarm manager: the suite must
/// fail, never skip. Outside CI it prints a loud SKIP line and returns `None`.
pub async fn real_swarm(test: &str) -> Option<DockerSwarm> {
    match connect().await {
        Ok(swarm) => Some(swarm),
        Err(why) if in_ci() => panic!(
            "CI=true and the real swarm is unusable for {test}: {why}. \
             Run `bash scripts/testbed.sh` as root first."
        ),
        Err(why) => {
            eprintln!(
                "\n!!!!!! SKIPPING real-swarm test {test}: {why}\n\
                 !!!!!! (run `bash scripts/testbed.sh` as root; under CI=true this fails)\n"
            );
            None
        }
    }
}

async fn connect() -> Result<DockerSwarm, String> {
    let mut options = DockerOptions::default();
    if let Some(socket) = std::env::var_os("HEARTH_DOCKER_SOCKET") {
        options.socket = socket.into();
    }
    let swarm = DockerSwarm::connect(options)
        .await
        .map_err(|e| format!("docker unreachable: {}", chain(&e)))?;
    let info = swarm
        .info()
        .await
        .map_err(|e| format!("info failed: {e}"))?;
    if !info.is_active_manager() {
        return Err(format!(
            "docker is not an active swarm manager (state {:?})",
            info.local_node_state
        ));
    }
    Ok(swarm)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique object name `hearth-test-<test>-<pid><n>` (≤ 63 characters for a short `test`).
pub fn unique_name(test: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "hearth-test-{test}-{:x}{:x}{n}",
        std::process::id(),
        nanos % 0x1000
    )
}

/// A short unique name `<prefix><pid><nanos>` (hex, 4 digits each at most), for names that
/// become part of stack, secret and config names (a recipe's, a warm app's).
pub fn short_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{:x}{:x}",
        std::process::id() % 0x10000,
        nanos % 0x10000
    )
}

/// The labels of a test's objects: the test label plus its run label.
pub fn labels(run: &str) -> spec::Map {
    spec::Map::from([
        (TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string()),
        (RUN_LABEL.to_string(), run.to_string()),
    ])
}

/// The filter that finds exactly one test's objects.
pub fn run_filter(run: &str) -> LabelFilter {
    LabelFilter::eq(TEST_LABEL.0, TEST_LABEL.1).and_eq(RUN_LABEL, run)
}

/// The `hearth` binary of this build (`target/<profile>/hearth`, next to the test executables'
/// `deps/` directory). `scripts/test.sh` builds it before the tests.
///
/// # Panics
/// When it is missing, saying how to build it.
pub fn hearth_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/hearth; a binary of this crate
    // (target/<profile>/bench_…) has it beside itself.
    let dir = exe.parent().expect("the executable lives in a directory");
    let bin = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .map(|profile| profile.join("hearth"))
            .expect("the test executable lives in target/<profile>/deps")
    } else {
        dir.join("hearth")
    };
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p hearth-controller --bin hearth`; \
         scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Polls `probe` every `every` until it yields `Some`, or panics after `within` naming `what`.
///
/// Uses tokio time, so under a paused clock (simulated swarm) the wait is virtual.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not reached within {within:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes every object labelled with a test's run label (`RUN_LABEL=<run>`) when dropped —
/// after a failed assertion too, so a failing real-swarm test leaves nothing behind. Declare it
/// before the daemon that deploys the objects: locals drop in reverse order, so the daemon is
/// killed first and cannot redeploy what this removes.
#[derive(Debug)]
pub struct RemoveOnDrop {
    run: String,
    stop: Option<controller::runtime::Shutdown>,
}

impl RemoveOnDrop {
    /// Guards the objects of `run`.
    pub fn new(run: &str) -> RemoveOnDrop {
        RemoveOnDrop {
            run: run.to_string(),
            stop: None,
        }
    }

    /// When dropped, first stops the in-process daemon `shutdown` belongs to: its tasks outlive
    /// a panicking test's locals (they run until the runtime ends) and would redeploy what this
    /// removes (found by `pipelines_real`: a failed run left its warm app's stack behind).
    pub fn stop_first(&mut self, shutdown: controller::runtime::Shutdown) {
        self.stop = Some(shutdown);
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(shutdown) = &self.stop {
            shutdown.stop_now();
            // The daemon's tasks run on the runtime's other threads: let them see it.
            std::thread::sleep(Duration::from_secs(1));
        }
        let filter = format!("label={RUN_LABEL}={}", self.run);
        let docker = |args: &[&str]| {
            std::process::Command::new("/usr/bin/docker")
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ids = |kind: &str| -> Vec<String> {
            docker(&[kind, "ls", "-q", "--filter", &filter])
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut left = 0;
            // Services first (their tasks hold the networks, secrets and configs), then the rest.
            for kind in ["service", "network", "secret", "config", "volume"] {
                let found = ids(kind);
                left += found.len();
                if !found.is_empty() {
                    let mut args = vec![kind, "rm"];
                    args.extend(found.iter().map(String::as_str));
                    docker(&args);
                }
            }
            if left == 0 || std::time::Instant::now() > deadline {
                if left > 0 {
                    eprintln!("RemoveOnDrop({}): {left} objects still left", self.run);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
