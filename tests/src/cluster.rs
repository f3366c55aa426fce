//! The real multi-node swarm of `scripts/cluster.sh`: three dockerd on this machine, each in
//! its own network and UTS namespace (hostnames `hearth-node1..3`), node 1 the manager.
//!
//! [`Cluster::ensure`] brings it up (a no-op taking well under a second when it already is,
//! repairing a node a failed test left stopped or partitioned) and removes what earlier tests
//! left on it. The cluster tests share it and change it (they stop nodes, partition them), so
//! they run one at a time: the `cluster` test group of `.config/nextest.toml`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;
use controller::runs::Started;
use controller::swarm::{DockerOptions, DockerSwarm, LabelFilter, Swarm, TaskState};

use crate::support::{in_ci, TEST_LABEL};

/// The stack-namespace label on every object of a stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// The recipe of the multi-node stacks (`tests/fixtures/catalogue/spread`): a global service
/// mounting the stack's volume (a task and a copy of the volume on every node), on an overlay
/// network.
pub const RECIPE: &str = "spread";

/// One node: its hostname (Swarm's node name) and its dockerd's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `hearth-nodeN`.
    pub hostname: String,
    /// `/run/hearth-cluster/nodeN.sock`.
    pub socket: PathBuf,
}

/// The cluster (see the module docs).
#[derive(Debug, Clone)]
pub struct Cluster {
    nodes: Vec<Node>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh")
}

/// Runs `scripts/cluster.sh ARGS`; its stdout, or its stderr as the error.
///
/// # Errors
/// The script failed or could not be started.
pub fn run_script(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "cluster.sh {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Cluster {
    /// Brings the 3-node cluster up (1 manager, 2 workers) and removes what earlier tests left
    /// on it (every service, then every container, volume, network, secret and config
    /// labelled `hearth.test=1`, on every node).
    ///
    /// # Panics
    /// Under `CI=true` when it cannot be brought up: the suite must fail, never skip.
    /// Elsewhere it prints a loud SKIP line and returns `None`.
    pub async fn ensure(test: &str) -> Option<Cluster> {
        Self::ensure_with(test, 1).await
    }

    /// [`Cluster::ensure`] with `managers` managers (nodes 1..=managers). Another shape than the
    /// one that is up is built anew (about 15 s: `down`, then `up`), as is the next
    /// [`Cluster::ensure`] after it.
    ///
    /// # Panics
    /// As [`Cluster::ensure`].
    pub async fn ensure_with(test: &str, managers: usize) -> Option<Cluster> {
        let managers = managers.to_string();
        let up = run_script(&["up", "3", "--managers", &managers]).and_then(|out| {
            let nodes: Vec<Node> = out
                .lines()
                .filter_map(|l| {
                    let (host, sock) = l.split_once(' ')?;
                    Some(Node {
                        hostname: host.to_string(),
                        socket: PathBuf::from(sock.trim()),
                    })
                })
                .collect();
            if nodes.len() == 3 {
                Ok(Cluster { nodes })
            } else {
                Err(format!(
                    "cluster.sh up 3 printed {} nodes: {out}",
                    nodes.len()
                ))
            }
        });
        let cluster = match up {
            Ok(c) => c,
            Err(why) if in_ci() => panic!(
                "CI=true and the multi-node cluster is unusable for {test}: {why}. \
                 Run `bash scripts/cluster.sh up 3` as root (after scripts/testbed.sh)."
            ),
            Err(why) => {
                eprintln!(
                    "\n!!!!!! SKIPPING multi-node test {test}: {why}\n\
                     !!!!!! (run `bash scripts/cluster.sh up 3` as root; under CI=true this fails)\n"
                );
                return None;
            }
        };
        cluster.clean().await;
        Some(cluster)
    }

    /// The nodes, node 1 (the manager) first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `n` (1-based).
    ///
    /// # Panics
    /// When there is no such node.
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    /// A connection to node `n`'s own dockerd.
    ///
    /// # Panics
    /// When it does not answer.
    pub async fn daemon(&self, n: usize) -> DockerSwarm {
        DockerSwarm::connect(DockerOptions {
            socket: self.node(n).socket.clone(),
            ..DockerOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("node {n} does not answer: {e}"))
    }

    /// A connection to the manager (node 1).
    pub async fn manager(&self) -> DockerSwarm {
        self.daemon(1).await
    }

    /// `--node-endpoint` values for every node: `hearth-nodeN=unix:///run/hearth-cluster/nodeN.sock`.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}=unix://{}", n.hostname, n.socket.display()))
            .collect()
    }

    /// Stops node `n`'s dockerd (SIGTERM, waits until it is gone; its containers stop too).
    ///
    /// # Panics
    /// When the script fails.
    pub fn stop_node(&self, n: usize) {
        run_script(&["stop-node", &n.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts node `n`'s dockerd again and waits until it answers.
    ///
    /// # Panics
    /// When the script fails.
    pub fn start_node(&self, n: usize) {
        run_script(&["start-node", &n.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Cuts node `n` off the others (its link to the bridge down).
    ///
    /// # Panics
    /// When the script fails.
    pub fn partition(&self, n: usize) {
        run_script(&["partition", &n.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Connects node `n` again.
    ///
    /// # Panics
    /// When the script fails.
    pub fn heal(&self, n: usize) {
        run_script(&["heal", &n.to_string()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs the docker CLI (`/usr/bin/docker`, matching the engine) against node `n`; its
    /// trimmed stdout.
    ///
    /// # Panics
    /// When the command fails, with its stderr.
    pub fn docker(&self, n: usize, args: &[&str]) -> String {
        let out = Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", self.node(n).socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        assert!(
            out.status.success(),
            "docker -H node{n} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// As [`Cluster::docker`], the failure as an error (a node that is down, an object that
    /// is gone).
    ///
    /// # Errors
    /// The command failed: its stderr.
    pub fn try_docker(&self, n: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", self.node(n).socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("docker {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "docker -H node{n} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Every object of stack `namespace` left anywhere, one line each (`nodeN: kind name`):
    /// services, secrets and configs on the manager; containers, volumes and networks on each
    /// node's own daemon. Empty when nothing is left. A node that does not answer is a line
    /// too (nothing can be said about it).
    pub async fn leftovers(&self, namespace: &str) -> Vec<String> {
        let filter = LabelFilter::eq(NAMESPACE_LABEL, namespace);
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let n = i + 1;
            let daemon = match DockerSwarm::connect(DockerOptions {
                socket: node.socket.clone(),
                ..DockerOptions::default()
            })
            .await
            {
                Ok(d) => d,
                Err(e) => {
                    out.push(format!("node{n}: does not answer: {e}"));
                    continue;
                }
            };
            let listed = async {
                let containers = daemon.list_containers(&filter).await?;
                let volumes = daemon.list_volumes(&filter).await?;
                let networks = daemon.list_networks(&filter).await?;
                let mut found: Vec<String> = containers
                    .into_iter()
                    .map(|c| format!("node{n}: container {}", c.name))
                    .chain(
                        volumes
                            .into_iter()
                            .map(|v| format!("node{n}: volume {}", v.name)),
                    )
                    .chain(
                        networks
                            .into_iter()
                            .map(|v| format!("node{n}: network {}", v.name)),
                    )
                    .collect();
                if n == 1 {
                    let services = daemon.list_services(&filter).await?;
                    let secrets = daemon.list_secrets(&filter).await?;
                    let configs = daemon.list_configs(&filter).await?;
                    found.extend(
                        services
                            .into_iter()
                            .map(|s| format!("node1: service {}", s.meta.name))
                            .chain(
                                secrets
                                    .into_iter()
                                    .map(|s| format!("node1: secret {}", s.meta.name)),
                            )
                            .chain(
                                configs
                                    .into_iter()
                                    .map(|c| format!("node1: config {}", c.meta.name)),
                            ),
                    );
                }
                Ok::<_, controller::swarm::Error>(found)
            };
            match listed.await {
                Ok(found) => out.extend(found),
                Err(e) => out.push(format!("node{n}: listing failed: {e}")),
            }
        }
        out
    }

    /// Polls [`Cluster::leftovers`] every `every` until nothing of `namespace` is left; the
    /// time from `since`.
    ///
    /// # Errors
    /// What is left after `within`.
    pub async fn wait_until_gone(
        &self,
        namespace: &str,
        since: Instant,
        within: Duration,
        every: Duration,
    ) -> Result<Duration, Vec<String>> {
        loop {
            let left = self.leftovers(namespace).await;
            if left.is_empty() {
                return Ok(since.elapsed());
            }
            if since.elapsed() > within {
                return Err(left);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Removes everything labelled `hearth.test=1` on the cluster (what failed tests left).
    /// The cluster tests run one at a time, so nothing in flight is touched.
    pub async fn clean(&self) {
        let test = LabelFilter::eq(TEST_LABEL.0, TEST_LABEL.1);
        let manager = self.manager().await;
        if let Ok(services) = manager.list_services(&test).await {
            for s in services {
                let _ = manager.remove_service(&s.meta.id).await;
            }
        }
        // Swarm's own labels: the containers of removed services stop on their nodes.
        for n in 1..=self.nodes.len() {
            let daemon = self.daemon(n).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let containers = daemon
                    .list_containers(&LabelFilter::all())
                    .await
                    .unwrap_or_default();
                if containers.is_empty() || Instant::now() > deadline {
                    for c in containers {
                        let _ = daemon.remove_container(&c.id).await;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for v in daemon.list_volumes(&test).await.unwrap_or_default() {
                let _ = daemon.remove_volume(&v.name).await;
            }
        }
        for n in manager.list_networks(&test).await.unwrap_or_default() {
            let _ = manager.remove_network(&n.id).await;
        }
        for s in manager.list_secrets(&test).await.unwrap_or_default() {
            let _ = manager.remove_secret(&s.meta.id).await;
        }
        for c in manager.list_configs(&test).await.unwrap_or_default() {
            let _ = manager.remove_config(&c.meta.id).await;
        }
    }

    /// Waits until stack `ns` has a task running on every node and, on each node's own
    /// daemon, a container and its volume.
    ///
    /// # Errors
    /// What is there after `within`.
    pub async fn wait_spread(&self, ns: &str, within: Duration) -> Result<(), String> {
        let filter = LabelFilter::eq(NAMESPACE_LABEL, ns);
        let since = Instant::now();
        'poll: loop {
            if since.elapsed() > within {
                return Err(format!(
                    "{ns} not on every node after {within:?}: {:?}",
                    self.leftovers(ns).await
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(tasks) = self.manager().await.list_tasks(&filter).await else {
                continue;
            };
            let running = tasks
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .count();
            if running < self.nodes.len() {
                continue;
            }
            for n in 1..=self.nodes.len() {
                let daemon = self.daemon(n).await;
                let containers = daemon.list_containers(&filter).await.unwrap_or_default();
                let volumes = daemon.list_volumes(&filter).await.unwrap_or_default();
                if containers.is_empty() || volumes.is_empty() {
                    continue 'poll;
                }
            }
            return Ok(());
        }
    }

    /// The multi-node kill scenario: a `sleep` process stands for a CI job and owns a run of
    /// [`RECIPE`] that `hearth serve` (reached by `client`) deploys on every node; once it is
    /// on every node, the job is SIGKILLed and each node's own daemon is polled every 25 ms
    /// until nothing of the run is left. The time from the kill, and the run's stack name.
    ///
    /// # Errors
    /// The run did not start or spread, or something is left after 60 s.
    pub async fn killed_owner_swept(&self, client: &Client) -> Result<(Duration, Started), String> {
        let mut job = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning the CI job: {e}"))?;
        let result = async {
            let owner = controller::liveness::owner_of(job.id()).map_err(|e| e.to_string())?;
            let body = serde_json::json!({
                "recipe": RECIPE, "version": "1.0.0", "owner": owner, "deploy": true,
                "requiredTiers": ["e2e"],
            });
            let started: Started = client
                .post("/api/v1/runs", &body)
                .await
                .map_err(|e| format!("run start: {e}"))?;
            self.wait_spread(&started.stack, Duration::from_secs(90))
                .await?;
            Ok::<_, String>(started)
        }
        .await;
        let _ = job.kill();
        let killed = Instant::now();
        let _ = job.wait();
        let started = result?;
        let took = self
            .wait_until_gone(
                &started.stack,
                killed,
                Duration::from_secs(60),
                Duration::from_millis(25),
            )
            .await
            .map_err(|left| format!("left 60 s after the kill: {left:#?}"))?;
        Ok((took, started))
    }

    /// The peer of [`Cluster::killed_owner_swept`]: the same stack deployed with `docker stack
    /// deploy` as `ns`, then removed by a docker-CLI script doing what hearth does on every
    /// node — `docker stack rm` on the manager, then on each node `docker volume rm` of the
    /// stack's volumes, retried every 100 ms until none is left. Timed from the script's start
    /// by the same poller (each node's own daemon, every 25 ms) until nothing is left.
    ///
    /// # Errors
    /// The deploy or the script failed, or something is left after 120 s.
    pub async fn script_cleanup(&self, ns: &str) -> Result<Duration, String> {
        let compose = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/catalogue")
            .join(RECIPE)
            .join("compose.yml");
        let manager = format!("unix://{}", self.node(1).socket.display());
        let out = Command::new("/usr/bin/docker")
            .args(["-H", &manager, "stack", "deploy", "-c"])
            .arg(&compose)
            .arg(ns)
            .env("VERSION", "1.0.0")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("docker stack deploy: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker stack deploy: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.wait_spread(ns, Duration::from_secs(90)).await?;
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("unix://{}", n.socket.display()))
            .collect();
        // Forced, as hearth's sweeper is: the services go (so Swarm starts no replacement),
        // then on every node at once its containers are killed and its volumes removed,
        // retried until none is left.
        let script = format!(
            "docker -H {manager} stack rm {ns} >/dev/null
             for h in {hosts}; do
               (
                 c=$(docker -H $h ps -aq --filter label={NAMESPACE_LABEL}={ns})
                 [ -z \"$c\" ] || docker -H $h rm -f $c >/dev/null 2>&1
                 while v=$(docker -H $h volume ls -q --filter label={NAMESPACE_LABEL}={ns}) && [ -n \"$v\" ]; do
                   docker -H $h volume rm $v >/dev/null 2>&1 || sleep 0.1
                 done
               ) &
             done
             wait
",
            hosts = hosts.join(" ")
        );
        let started = Instant::now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("the cleanup script: {e}"))?;
        let took = self
            .wait_until_gone(
                ns,
                started,
                Duration::from_secs(120),
                Duration::from_millis(25),
            )
            .await;
        let status = child.wait().map_err(|e| e.to_string())?;
        let took =
            took.map_err(|left| format!("left 120 s after the script started: {left:#?}"))?;
        if !status.success() {
            return Err(format!("the cleanup script failed: {status}"));
        }
        Ok(took)
    }
}
