//! Two replicas never act at once (issue 18): the etcd leader is cut off from etcd while it is
//! repairing a warm app, and the Docker writes of both replicas are checked against each other.
//!
//! Two `hearth serve --store etcd://…` replicas (lease 3 s) on the real swarm, each talking to
//! etcd through its own TCP proxy and to Docker through its own recording proxy (a unix
//! socket the test owns, `--docker-socket`), so every Docker write is attributed to the
//! replica that sent it:
//! 1. A leads and deploys a warm app; B stands by;
//! 2. a "vandal" removes the app's service every 400 ms, so whoever leads keeps repairing it
//!    (Docker writes); once A has started repairing, A's etcd proxy is cut (its Docker side
//!    stays up): A is partitioned mid-reconcile;
//! 3. B takes over and repairs; the vandal stops once B has written, A exits.
//!
//! Checked: A wrote and B wrote (the check is not vacuous); every Docker write of A was
//! answered before B's first write was sent; and in the daemon's event stream (`docker
//! events`, recorded live) every event of the app's stack after B's first write falls inside
//! one of B's writes, never one of A's.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use controller::access::admin_token::Token;
use controller::cli::ci::Client;
use controller::swarm::{LabelFilter, Swarm};
use hearth_tests::daemon::example_catalogue;
use hearth_tests::process::free_addr;
use hearth_tests::support::{hearth_bin, real_swarm};
use serde_json::Value;

const LEASE: &str = "3s";
/// How long after answering a write dockerd may stamp its event.
const SLACK_NS: u128 = 300_000_000;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One Docker write as the recording proxy saw it (wall-clock nanoseconds).
#[derive(Debug, Clone)]
struct Write {
    method: String,
    path: String,
    sent: u128,
    answered: u128,
}

/// A Docker API proxy on a unix socket recording every request that is not a GET or HEAD.
struct DockerTap {
    socket: PathBuf,
    writes: Arc<Mutex<Vec<Write>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DockerTap {
    fn start(socket: PathBuf) -> DockerTap {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let record = writes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let record = record.clone();
                        async move { forward(req, record).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        DockerTap {
            socket,
            writes,
            task,
        }
    }

    fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }
}

impl Drop for DockerTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    record: Arc<Mutex<Vec<Write>>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
    let is_write = req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD;
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let stream = tokio::net::UnixStream::connect("/var/run/docker.sock")
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let sent = now_ns();
    let response = sender.send_request(req).await?;
    if is_write {
        record.lock().unwrap().push(Write {
            method,
            path,
            sent,
            answered: now_ns(),
        });
    }
    Ok(response)
}

/// A TCP proxy to one etcd member: `cut` drops its connections and refuses new ones.
struct EtcdProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EtcdProxy {
    async fn start(upstream: String) -> EtcdProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let t = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c.lock().unwrap().push(t.abort_handle());
            }
        });
        EtcdProxy {
            addr,
            open,
            conns,
            task,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for EtcdProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn start(name: &'static str, dir: &Path, url: &str, docker: &Path, run: &str) -> Replica {
        let addr = free_addr();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(hearth_bin())
            .args(["serve", "--store", url, "--etcd-lease", LEASE, "--listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--docker-socket")
            .arg(docker)
            .args(["--label", "hearth.test=1", "--label"])
            .arg(format!("hearth.test.run={run}"))
            .arg("--catalogue")
            .arg(example_catalogue())
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Replica {
            name,
            child,
            addr,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_role(&self, role: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let answer = Client::new(self.addr)
                .send(
                    hyper::Method::GET,
                    "/readyz",
                    Vec::new(),
                    "application/json",
                )
                .await
                .ok();
            if let Some((status, body)) = answer {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if body["role"] == role && (role != "leader" || status == 200) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} is not {role} after {within:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 100 ms until it holds, failing after `within`.
async fn until(what: &str, within: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_mid_reconcile_should_stop_writing_before_the_next_one_starts() {
    let test = "etcd-partition";
    let Some(docker) = real_swarm(test).await else {
        return;
    };
    let Some(url) = hearth_tests::etcd::store_url(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = Token::random();
    std::fs::write(dir.path().join("token"), token.secret()).unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let upstream = hearth_tests::etcd::endpoints()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let prefix = url.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let prefix = prefix.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let prefix = prefix.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let (etcd_a, etcd_b) = (
        EtcdProxy::start(upstream.clone()).await,
        EtcdProxy::start(upstream).await,
    );
    let (tap_a, tap_b) = (
        DockerTap::start(dir.path().join("a.sock")),
        DockerTap::start(dir.path().join("b.sock")),
    );
    let run = format!("etcd-partition-{}", std::process::id());
    let app = format!("ep{}", std::process::id() % 100_000);
    let stack = format!("hw-{app}");

    // 1. A leads and deploys the app; B stands by.
    let a = Replica::start(
        "a",
        dir.path(),
        &format!("etcd://{}/{prefix}", etcd_a.addr),
        &tap_a.socket,
        &run,
    );
    a.wait_role("leader", Duration::from_secs(30)).await;
    let b = Replica::start(
        "b",
        dir.path(),
        &format!("etcd://{}/{prefix}", etcd_b.addr),
        &tap_b.socket,
        &run,
    );
    b.wait_role("standby", Duration::from_secs(30)).await;
    let events_file = dir.path().join("events");
    let mut events = Command::new("/usr/bin/docker")
        .args([
            "events",
            "--filter",
            "type=service",
            "--format",
            "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&events_file).unwrap())
        .spawn()
        .unwrap();
    let state = format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {app}\nspec:\n  recipe: webapp\n  version: 1.0.0\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: 60s\n  env:\n    REPLICAS: \"1\"\n"
    );
    let client = Client::new(a.addr).with_token(Some(token.clone()));
    let (status, body) = client
        .send(
            hyper::Method::POST,
            "/api/v1/apply",
            state.into_bytes(),
            "application/yaml",
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let filter = LabelFilter::eq("com.docker.stack.namespace", stack.as_str());
    let deadline = Instant::now() + Duration::from_secs(60);
    while docker.list_services(&filter).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "A did not deploy {stack}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. The vandal keeps removing the service; once A is repairing, A loses etcd.
    let vandal_stop = Arc::new(AtomicBool::new(false));
    let vandal = {
        let (docker, filter, stop) = (docker.clone(), filter.clone(), vandal_stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for s in docker.list_services(&filter).await.unwrap_or_default() {
                    let _ = docker.remove_service(&s.meta.id).await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let deployed = tap_a.writes().len();
    until("A repairing", Duration::from_secs(60), || {
        tap_a
            .writes()
            .iter()
            .skip(deployed)
            .any(|w| w.path.ends_with("/services/create"))
    })
    .await;
    let cut_at = now_ns();
    etcd_a.cut();

    // 3. B takes over and repairs; then the vandal stops and A is gone.
    b.wait_role("leader", Duration::from_secs(20)).await;
    until("B repairing", Duration::from_secs(60), || {
        tap_b
            .writes()
            .iter()
            .any(|w| w.path.ends_with("/services/create"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    vandal_stop.store(true, Ordering::SeqCst);
    vandal.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = events.kill();
    let _ = events.wait();

    let writes_a = tap_a.writes();
    let writes_b = tap_b.writes();
    let first_b = writes_b.iter().map(|w| w.sent).min().unwrap();
    let last_a = writes_a.iter().map(|w| w.answered).max().unwrap();
    let after_cut = writes_a.iter().filter(|w| w.sent > cut_at).count();
    eprintln!(
        "A: {} Docker writes {:?} ({after_cut} sent after the cut), the last answered {:.3} s after \
         the cut; B: {} writes, the first sent {:.3} s after the cut",
        writes_a.len(),
        writes_a.iter().map(|w| format!("{} {}", w.method, w.path)).collect::<Vec<_>>(),
        (last_a as f64 - cut_at as f64) / 1e9,
        writes_b.len(),
        (first_b as f64 - cut_at as f64) / 1e9,
    );
    let late: Vec<&Write> = writes_a.iter().filter(|w| w.answered >= first_b).collect();
    assert!(
        late.is_empty(),
        "writes of the old leader answered after the new leader's first write: {late:?}"
    );

    // The daemon's own record: every event of the stack after B's first write is B's.
    let text = std::fs::read_to_string(&events_file).unwrap();
    let mut ours = 0;
    let mut after_b = 0;
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(time), Some(action), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !name.starts_with(&format!("{stack}_")) {
            continue;
        }
        ours += 1;
        let time: u128 = time.parse().unwrap();
        // Events written by the vandal (removals) are not a replica's.
        if action == "remove" || time < first_b {
            continue;
        }
        after_b += 1;
        // dockerd stamps a service event when the swarm store publishes it, which may be a
        // little after it answered the write.
        let within = |w: &Write| w.sent <= time && time <= w.answered + SLACK_NS;
        assert!(
            !writes_a.iter().any(within),
            "event {line} lands inside a write of the old leader"
        );
        assert!(
            writes_b.iter().any(within),
            "event {line} after B's first write is not one of B's writes"
        );
    }
    assert!(ours > 0 && after_b > 0, "no events recorded: {text}");

    // The cut-off leader has stopped (it lost its lease).
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the cut-off leader still runs; log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Leave nothing behind: B removes the app (it leads), then the stack is gone.
    let client = Client::new(b.addr).with_token(Some(token));
    let (status, body) = client
        .send(
            hyper::Method::DELETE,
            &format!("/api/v1/warmapps/{app}"),
            Vec::new(),
            "application/json",
        )
        .await
        .unwrap();
    assert!(
        status == 200 || status == 202 || status == 204,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    // Services and the stack's network: the test ended with the services gone before, and
    // left one hw-ep* network per run behind (B's teardown removes it after the containers).
    while !docker.list_services(&filter).await.unwrap().is_empty()
        || !docker.list_networks(&filter).await.unwrap().is_empty()
    {
        assert!(Instant::now() < deadline, "{stack} left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
