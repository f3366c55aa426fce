//! Leader election with the etcd store, with real processes: two (then three) `hearth serve
//! --store etcd://…` replicas on the 3-member test etcd cluster and the real swarm.
//!
//! One test walks the whole story so the replicas start once (~20 s):
//! 1. the first replica leads, the second stands by; `/readyz` says so on both;
//! 2. mutations sent to the standby are forwarded and acknowledged (a state file with a slot
//!    pool, a slot for this live test process, a slot for a child process);
//! 3. the leader is SIGKILLed and the child dies during the outage: the standby leads within
//!    the lease window (asserted < 10 s; lease 3 s), every acknowledged mutation is there, the
//!    dead child's slot is reclaimed, the live one is kept;
//! 4. a new replica stands by; the leader is frozen (SIGSTOP: a partition from etcd, as far as
//!    its lease goes) until the new one leads; thawed, it finds its leadership gone and exits
//!    non-zero without another write, and the live slot is still held.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::access::admin_token::Token;
use controller::cli::ci::Client;
use hearth_tests::daemon::example_catalogue;
use hearth_tests::process::free_addr;
use hearth_tests::support::{hearth_bin, real_swarm};
use serde_json::Value;

const LEASE: &str = "3s";

struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn start(name: &'static str, dir: &Path, url: &str, token_file: &Path) -> Replica {
        let addr = free_addr();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(hearth_bin())
            .args(["serve", "--store", url, "--etcd-lease", LEASE, "--listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--token-file")
            .arg(token_file)
            .args(["--label", "hearth.test=1", "--catalogue"])
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/readyz` as (status, body); `None` while it does not answer.
    async fn readyz(&self) -> Option<(u16, Value)> {
        let (status, body) = Client::new(self.addr)
            .send(
                hyper::Method::GET,
                "/readyz",
                Vec::new(),
                "application/json",
            )
            .await
            .ok()?;
        Some((status, serde_json::from_slice(&body).ok()?))
    }

    /// Waits until `/readyz` says `role`; returns the body.
    async fn wait_role(&self, role: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some((status, body)) = self.readyz().await {
                let ready = status == 200;
                if body["role"] == role && (role != "leader" || ready) {
                    return body;
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

async fn send(client: &Client, method: hyper::Method, path: &str, body: Value) -> (u16, Value) {
    let (status, bytes) = client
        .send(
            method,
            path,
            body.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn owner_of(pid: u32) -> Value {
    serde_json::to_value(controller::liveness::owner_of(pid).unwrap()).unwrap()
}

/// The pids owning leases of slot pool `pool`.
async fn lease_owners(client: &Client, pool: &str) -> Vec<u64> {
    let (status, body) = send(
        client,
        hyper::Method::GET,
        &format!("/api/v1/slotpools/{pool}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut pids: Vec<u64> = body["status"]["leases"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|lease| lease["owner"]["pid"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_should_elect_one_leader_forward_to_it_and_fail_over_with_fencing() {
    let test = "etcd-leader";
    if real_swarm(test).await.is_none() {
        return;
    }
    let Some(url) = hearth_tests::etcd::store_url(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = Token::random();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token.secret()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // 1. One leads, one stands by.
    let a = Replica::start("a", dir.path(), &url, &token_file);
    let body = a.wait_role("leader", Duration::from_secs(30)).await;
    assert_eq!(body["leader"]["pid"], a.pid());
    assert_eq!(body["leader"]["self"], true);
    let b = Replica::start("b", dir.path(), &url, &token_file);
    let body = b.wait_role("standby", Duration::from_secs(30)).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["leader"]["pid"], a.pid(), "{body}");
    assert_eq!(
        body["leader"]["api"],
        format!("http://{}", a.addr),
        "{body}"
    );

    // 2. Mutations through the standby are forwarded to the leader and acknowledged.
    let via_b = Client::new(b.addr).with_token(Some(token.clone()));
    let pool = format!("etcd-{}", std::process::id());
    let state = format!(
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {pool}\nspec:\n  slots: 3\n  portBase: 29000\n  portsPerSlot: 10\n  waitTimeout: 5s\n"
    );
    let (status, bytes) = via_b
        .send(
            hyper::Method::POST,
            "/api/v1/apply",
            state.into_bytes(),
            "application/yaml",
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let me = std::process::id();
    let (status, grant) = send(
        &via_b,
        hyper::Method::POST,
        &format!("/api/v1/slotpools/{pool}/acquire"),
        serde_json::json!({ "owner": owner_of(me) }),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let mut doomed = Command::new("sleep").arg("600").spawn().unwrap();
    let (status, grant) = send(
        &via_b,
        hyper::Method::POST,
        &format!("/api/v1/slotpools/{pool}/acquire"),
        serde_json::json!({ "owner": owner_of(doomed.id()) }),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let mut both = vec![u64::from(me), u64::from(doomed.id())];
    both.sort_unstable();
    assert_eq!(lease_owners(&via_b, &pool).await, both);

    // 3. The leader dies; so does the child owning a slot, during the outage.
    let killed = Instant::now();
    a.signal("KILL");
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let body = b.wait_role("leader", Duration::from_secs(15)).await;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL of the leader: {takeover:?} (lease {LEASE})");
    assert!(takeover < Duration::from_secs(10), "{takeover:?}");
    assert_eq!(body["leader"]["pid"], b.pid());
    // Every acknowledged mutation is there; the dead owner's slot is reclaimed, the live one
    // kept.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owners = lease_owners(&via_b, &pool).await;
        if owners == [u64::from(me)] {
            break;
        }
        assert_eq!(owners, both, "only the dead owner's slot may go");
        assert!(
            Instant::now() < deadline,
            "the dead owner's slot is still held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. A new standby; the leader is frozen (cut off from etcd) until the standby leads.
    let c = Replica::start("c", dir.path(), &url, &token_file);
    let body = c.wait_role("standby", Duration::from_secs(30)).await;
    assert_eq!(body["leader"]["pid"], b.pid());
    let frozen = Instant::now();
    b.signal("STOP");
    let body = c.wait_role("leader", Duration::from_secs(15)).await;
    eprintln!("takeover from a frozen leader: {:?}", frozen.elapsed());
    assert_eq!(body["leader"]["pid"], c.pid());
    b.signal("CONT");
    let mut b = b;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the deposed leader still runs; log:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a deposed leader exits with an error");
    let log = b.log_text();
    assert!(
        log.contains("lost the leadership of the etcd store"),
        "{log}"
    );
    let via_c = Client::new(c.addr).with_token(Some(token.clone()));
    assert_eq!(lease_owners(&via_c, &pool).await, [u64::from(me)]);
    let (status, body) = send(
        &via_c,
        hyper::Method::DELETE,
        &format!("/api/v1/slotpools/{pool}"),
        Value::Null,
    )
    .await;
    assert!(status == 200 || status == 409, "{status} {body}");
}
