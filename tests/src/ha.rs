//! hearth's HA stack (`deploy/ha`: etcd×3 and hearth×3) on the 3-manager test cluster: deploy
//! it with its one command, reach each replica's API, find the leader, watch Swarm's service
//! events. Shared by `tests/ha_real.rs` (the failover test) and `bench_failover`.
//!
//! The replicas publish their API in host mode on the nodes' addresses (192.168.213.N), which
//! exist only inside the nodes' network namespaces. A [`Relay`] reaches one: a TCP listener on
//! 127.0.0.1 in this process, a unix socket, and `netns_relay` inside the node's namespace
//! connecting to the node's address — no interface or route in the machine's namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::access::admin_token::Token;
use controller::cli::ci::Client;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::support::hearth_bin;

/// The stack's name on the cluster.
pub const STACK: &str = "hha";
/// The API port every replica publishes on its node.
pub const PORT: u16 = 7433;
/// The label on the stack's objects and everything its hearth deploys.
pub const LABEL: &str = "hearth.test=1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of this crate, beside `hearth` (target/<profile>/).
fn sibling_bin(name: &str) -> PathBuf {
    hearth_bin().with_file_name(name)
}

/// A way from this process to node `n`'s address `192.168.213.n:7433` (module docs). The
/// namespace half stops when this is dropped.
#[derive(Debug)]
pub struct Relay {
    node: usize,
    addr: SocketAddr,
    child: Child,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts the relay to node `n`'s replica.
    ///
    /// # Errors
    /// `netns_relay` could not be started or did not listen within 10 s.
    pub async fn start(n: usize) -> Result<Relay, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join(format!("node{n}.sock"));
        let relay = sibling_bin("netns_relay");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/hearth-cl-node{n}"))
            .arg(&relay)
            .arg(&socket)
            .arg(format!("192.168.213.{n}:{PORT}"))
            // Its stdin closing (this process gone) stops it.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("nsenter {}: {e}", relay.display()))?;
        let since = Instant::now();
        while !socket.exists() {
            if since.elapsed() > Duration::from_secs(10) {
                return Err(format!("{} did not listen within 10 s", relay.display()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(Relay {
            node: n,
            addr,
            child,
            accept,
            _dir: dir,
        })
    }

    /// The node this relay reaches.
    pub fn node(&self) -> usize {
        self.node
    }

    /// A client of node `n`'s replica.
    pub fn client(&self, token: &Token) -> Client {
        Client::new(self.addr).with_token(Some(token.clone()))
    }

    /// `/readyz` of the replica as (status, body); `None` when it does not answer within 2 s.
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        let client = Client::new(self.addr);
        let call = client.send(
            hyper::Method::GET,
            "/readyz",
            Vec::new(),
            "application/json",
        );
        let (status, body) = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()?
            .ok()?;
        Some((status, serde_json::from_slice(&body).ok()?))
    }

    /// Whether the replica answers `/readyz` as the ready leader.
    pub async fn leads(&self) -> bool {
        matches!(self.readyz().await, Some((200, body)) if body["role"] == "leader")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HA stack as deployed by `deploy/ha/deploy.sh --test-cluster`.
#[derive(Debug)]
pub struct HaStack {
    /// One relay per node, node 1 first.
    pub relays: Vec<Relay>,
    /// The API token (the `admin` token of every replica).
    pub token: Token,
}

impl HaStack {
    /// Deploys the stack (the debug or release `hearth` beside this binary, `state` as the
    /// state file, a new random token) and waits until a replica leads. What an earlier
    /// deployment left must be gone first ([`HaStack::remove`]; [`Cluster::ensure_with`]
    /// removes everything labelled `hearth.test=1`).
    ///
    /// # Errors
    /// The script failed (its output), or the relays could not start.
    pub async fn deploy(dir: &Path, state: &Path) -> Result<HaStack, String> {
        let token = Token::random();
        let token_file = dir.join("token");
        std::fs::write(&token_file, token.secret()).map_err(|e| e.to_string())?;
        let out = Command::new("bash")
            .arg(repo().join("deploy/ha/deploy.sh"))
            .arg("--test-cluster")
            .arg("--bin")
            .arg(hearth_bin())
            .args(["--label", LABEL, "--stack", STACK, "--timeout", "120"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state")
            .arg(state)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("deploy.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "deploy/ha/deploy.sh failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut relays = Vec::new();
        for n in 1..=3 {
            relays.push(Relay::start(n).await?);
        }
        Ok(HaStack { relays, token })
    }

    /// The node whose replica leads (ready), asking each once.
    pub async fn leader(&self) -> Option<usize> {
        for r in &self.relays {
            if r.leads().await {
                return Some(r.node());
            }
        }
        None
    }

    /// Waits until a replica on a node other than `except` leads (ready); that node. Polls
    /// every 50 ms.
    ///
    /// # Errors
    /// None did within `within`.
    pub async fn wait_leader(
        &self,
        except: Option<usize>,
        within: Duration,
    ) -> Result<usize, String> {
        let since = Instant::now();
        loop {
            for r in self.relays.iter().filter(|r| Some(r.node()) != except) {
                if r.leads().await {
                    return Ok(r.node());
                }
            }
            if since.elapsed() > within {
                return Err(format!(
                    "no replica (but node {except:?}) leads after {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until one replica leads and the other two stand by naming it (a standby that
    /// does not know the leader yet answers 503 to what it would forward); the leader's node.
    ///
    /// # Errors
    /// Not so within `within`: what each replica said last.
    pub async fn wait_settled(&self, within: Duration) -> Result<usize, String> {
        let since = Instant::now();
        loop {
            let mut said = Vec::new();
            for r in &self.relays {
                said.push(r.readyz().await);
            }
            let leaders: Vec<usize> = said
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, Some((200, b)) if b["role"] == "leader"))
                .map(|(i, _)| i + 1)
                .collect();
            if let [leader] = leaders[..] {
                let api = said[leader - 1]
                    .as_ref()
                    .map(|(_, b)| b["leader"]["api"].clone());
                let named = said
                    .iter()
                    .all(|s| matches!(s, Some((_, b)) if Some(b["leader"]["api"].clone()) == api));
                if named {
                    return Ok(leader);
                }
            }
            if since.elapsed() > within {
                return Err(format!("not settled after {within:?}: {said:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` log lines of the hearth replica on each node in `nodes` (for a
    /// failure's message: why a standby did not take over).
    pub fn replica_logs(cluster: &Cluster, nodes: &[usize], lines: usize) -> String {
        let mut out = String::new();
        for &n in nodes {
            let filter = format!("label=com.docker.swarm.service.name={STACK}_hearth");
            let ids = cluster
                .try_docker(n, &["ps", "-q", "--filter", &filter])
                .unwrap_or_default();
            for id in ids.lines() {
                let log = Command::new("/usr/bin/docker")
                    .arg("-H")
                    .arg(format!("unix://{}", cluster.node(n).socket.display()))
                    .args(["logs", "--tail", &lines.to_string(), id])
                    .stdin(Stdio::null())
                    .output()
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_else(|e| e.to_string());
                out.push_str(&format!("--- node {n}, container {id}:\n{log}\n"));
            }
        }
        out
    }

    /// A client of node `n`'s replica (1-based).
    pub fn client(&self, n: usize) -> Client {
        self.relays[n - 1].client(&self.token)
    }

    /// Removes the stack: hearth's replicas first (so nothing deploys again), then etcd, then
    /// everything labelled `hearth.test=1` on the cluster (the stacks hearth deployed, the
    /// members' volumes, the token secret).
    pub async fn remove(cluster: &Cluster) {
        let _ = cluster.try_docker(1, &["service", "rm", &format!("{STACK}_hearth")]);
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(60) {
            let left: usize = (1..=3)
                .map(|n| {
                    cluster
                        .try_docker(
                            n,
                            &[
                                "ps",
                                "-q",
                                "--filter",
                                &format!("label=com.docker.swarm.service.name={STACK}_hearth"),
                            ],
                        )
                        .map(|out| out.lines().count())
                        .unwrap_or(0)
                })
                .sum();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = cluster.try_docker(1, &["stack", "rm", STACK]);
        cluster.clean().await;
    }
}

/// Swarm's service events as one manager's engine reports them (`docker events --filter
/// type=service`), from [`ServiceEvents::start`] until [`ServiceEvents::stop`].
#[derive(Debug)]
pub struct ServiceEvents {
    child: Child,
    file: PathBuf,
}

/// One service event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    /// `create`, `update`, `remove`.
    pub action: String,
    /// The service's name.
    pub name: String,
    /// The service's ID.
    pub id: String,
}

impl ServiceEvents {
    /// Starts following node `n`'s engine (a manager that will stay up), writing to `file`.
    ///
    /// # Errors
    /// The docker CLI could not be started.
    pub fn start(cluster: &Cluster, n: usize, file: &Path) -> Result<ServiceEvents, String> {
        let out = std::fs::File::create(file).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", cluster.node(n).socket.display()))
            .args([
                "events",
                "--filter",
                "type=service",
                "--format",
                "{{json .}}",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("docker events: {e}"))?;
        Ok(ServiceEvents {
            child,
            file: file.to_path_buf(),
        })
    }

    /// Stops following; every event seen, in order.
    pub fn stop(mut self) -> Vec<ServiceEvent> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| ServiceEvent {
                action: v["Action"].as_str().unwrap_or_default().to_string(),
                name: v["Actor"]["Attributes"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                id: v["Actor"]["ID"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

impl Drop for ServiceEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
