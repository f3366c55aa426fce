//! `deploy/` exercised: the systemd unit passes `systemd-analyze verify`, and hearth runs as a
//! swarm service from `deploy/stack.yml` on the real swarm until `/healthz` answers.
//!
//! The unit's `ExecStart` names `/usr/local/bin/hearth`, which `systemd-analyze verify`
//! requires to exist; the test verifies a copy whose only change is that path, rewritten to the
//! `hearth` binary built next to this test (the copy is checked to differ in nothing else).
//!
//! The stack test builds `hearth-test/hearth:<unique>` with `scripts/image.sh` (deploy/Dockerfile:
//! FROM scratch, the built binary stripped, the shared libraries `ldd` names, CA certificates,
//! the non-root user 10001, `hearth healthcheck` as the health check); deploys
//! `deploy/stack.yml` with `docker stack deploy` as `hearth-test-…` with every object labelled
//! `hearth.test=1` (the stack file's `HEARTH_*` variables), waits until `/healthz` answers on the
//! host-mode published port and the task's health check reports healthy, checks the task runs
//! as user 10001 with the socket's group, then removes the stack, its volume, secret and the
//! image.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::support::{in_ci, real_swarm, unique_name};

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

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

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `systemd-analyze verify` on `unit`; its success and everything it printed.
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_with_its_binary_path_rewritten() {
    if !Path::new(SYSTEMD_ANALYZE).exists() {
        assert!(!in_ci(), "CI=true and {SYSTEMD_ANALYZE} is missing");
        eprintln!("\n!!!!!! SKIPPING unit verify: {SYSTEMD_ANALYZE} missing\n");
        return;
    }
    let unit = std::fs::read_to_string(deploy_dir().join("hearth.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/hearth serve"),
        "{unit}"
    );
    let bin = hearth_bin();
    let copy = unit.replace("/usr/local/bin/hearth", bin.to_str().unwrap());
    assert_eq!(
        copy.replace(bin.to_str().unwrap(), "/usr/local/bin/hearth"),
        unit,
        "the copy differs only in the binary path"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.service");
    std::fs::write(&path, &copy).unwrap();
    let (ok, said) = verify(&path);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check is live: a bad directive in the same unit is reported.
    std::fs::write(
        &path,
        copy.replace("Restart=on-failure", "Restart=sometimes"),
    )
    .unwrap();
    let (_, said) = verify(&path);
    assert!(said.contains("restart"), "{said}");
}

/// `docker …`, checked.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds `tag` the way an operator does, with `scripts/image.sh` (deploy/Dockerfile, FROM
/// scratch) from the binary built next to this test, labelled `hearth.test=1`.
fn build_image(tag: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bin")
        .arg(hearth_bin())
        .args(["--tag", tag, "--label", "hearth.test=1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/image.sh: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(tag),
        "image.sh prints the tag: {}",
        text(&out)
    );
}

/// The group id of the Docker socket the swarm service will mount.
fn docker_socket_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock").unwrap().gid()
}

/// Removes what the stack test created, whatever happened: the stack, then (once its
/// containers are gone) its volume, the token secret and the image.
struct Cleanup {
    stack: String,
    secret: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.stack])
            .output();
        let volume = format!("{}_data", self.stack);
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let left = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=com.docker.stack.namespace={}", self.stack))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if left.is_empty() || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for _ in 0..40 {
            let out = Command::new("docker")
                .args(["volume", "rm", &volume])
                .output();
            match out {
                Ok(o) if o.status.success() || text(&o).contains("no such volume") => break,
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let _ = Command::new("docker")
            .args(["secret", "rm", &self.secret])
            .output();
        let _ = Command::new("docker")
            .args(["image", "rm", &self.image])
            .output();
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`; the status and body.
/// `GET path` on the published port, with the stack's token (the daemon listens on
/// `0.0.0.0`, off loopback: every route but health, readiness and metrics needs a token).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The stack's API token (a test value, in the test's swarm secret).
const TOKEN: &str = "test-token-not-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_runs_as_a_swarm_service_from_the_stack_file_and_answers_healthz() {
    if real_swarm("deploy stack").await.is_none() {
        return;
    }
    let stack = unique_name("stk").replace('_', "-");
    let work = tempfile::tempdir().unwrap();
    let tag = format!("hearth-test/hearth:{}", &stack["hearth-test-".len()..]);
    let cleanup = Cleanup {
        stack: stack.clone(),
        secret: format!("{stack}-token"),
        image: tag.clone(),
    };
    let t = Instant::now();
    build_image(&tag);
    println!(
        "image {tag} built in {:?}: {} bytes",
        t.elapsed(),
        docker(&["image", "inspect", "-f", "{{.Size}}", &tag])
    );

    // The token secret and a state file with one slot pool (nothing that deploys).
    let token = work.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    docker(&[
        "secret",
        "create",
        "--label",
        "hearth.test=1",
        &cleanup.secret,
        token.to_str().unwrap(),
    ]);
    let pool = format!("{stack}-pool");
    let state = work.path().join("state.yml");
    std::fs::write(
        &state,
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {pool}\nspec:\n  slots: 1\n  \
             portBase: 33000\n  portsPerSlot: 10\n  waitTimeout: 1m\n"
        ),
    )
    .unwrap();
    let node = docker(&["info", "-f", "{{.Name}}"]);
    let port = free_port();
    let out = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(deploy_dir().join("stack.yml"))
        .arg(&stack)
        .env("HEARTH_IMAGE", &tag)
        .env("HEARTH_NODE", &node)
        .env("HEARTH_DOCKER_GID", docker_socket_gid().to_string())
        .env("HEARTH_PORT", port.to_string())
        .env("HEARTH_TOKEN_SECRET", &cleanup.secret)
        .env("HEARTH_STATE_FILE", &state)
        .env("HEARTH_CATALOGUE", deploy_dir().join("examples/catalogue"))
        .env("HEARTH_LABEL", "hearth.test=1")
        .env("HEARTH_CONFIG_PREFIX", &stack)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "stack deploy: {}", text(&out));

    // Every object of the stack carries hearth.test=1.
    let service = format!("{stack}_hearth");
    assert_eq!(
        docker(&[
            "service",
            "inspect",
            "-f",
            "{{index .Spec.Labels \"hearth.test\"}}",
            &service
        ]),
        "1"
    );

    // /healthz on the host-mode published port, then the task's own health check.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        if let Ok((200, body)) = http_get(port, "/healthz") {
            println!("healthz answered {body:?} after {:?}", started.elapsed());
            break;
        }
        if Instant::now() > deadline {
            let logs = Command::new("docker")
                .args(["service", "logs", "--raw", &service])
                .output()
                .map(|o| text(&o))
                .unwrap_or_default();
            let ps = Command::new("docker")
                .args(["service", "ps", "--no-trunc", &service])
                .output()
                .map(|o| text(&o))
                .unwrap_or_default();
            panic!("/healthz never answered on port {port}\n{ps}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let container_filter = format!("label=com.docker.swarm.service.name={service}");
    let health = loop {
        let id = docker(&["ps", "-q", "--filter", &container_filter]);
        let health = if id.is_empty() {
            String::new()
        } else {
            docker(&["inspect", "-f", "{{.State.Health.Status}}", &id])
        };
        if health == "healthy" || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(health, "healthy", "the `hearth healthcheck` health check");
    println!("task healthy after {:?}", started.elapsed());
    // Not root: the image's user with the socket's group.
    let id = docker(&["ps", "-q", "--filter", &container_filter]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.Config.User}}", &id]),
        format!("10001:{}", docker_socket_gid())
    );

    // The daemon inside read its state file from the swarm config.
    let (status, body) = http_get(port, "/api/v1/slotpools").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&pool), "{body}");
    drop(cleanup);
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.stack.namespace={stack}"),
    ]);
    assert!(left.is_empty(), "containers left: {left}");
}
