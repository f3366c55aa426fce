//! Benchmark: failover time of the HA stack (`deploy/ha`: etcd×3 and hearth×3, one each per
//! manager) on the real 3-manager test cluster (`BENCHMARKS.md`, "Failover").
//!
//! ```text
//! sudo bash scripts/testbed.sh
//! cargo build -p hearth-controller --bin hearth -p hearth-tests --bin bench_failover --bin netns_relay
//! target/debug/bench_failover [--runs N] [--partition]
//! ```
//!
//! It brings the cluster up with 3 managers, deploys the stack with `deploy/ha/deploy.sh
//! --test-cluster` (the `hearth` binary next to this one in the image; the default lease, 6 s)
//! and repeats `--runs` times (default 5):
//!
//! - **stop**: the node of the leading replica is stopped (`cluster.sh stop-node`: its
//!   dockerd gets SIGTERM and stops its containers — the leader's hearth and its etcd member);
//!   timed from the stop until another replica's `/readyz` answers 200 as leader (it holds the
//!   lease, its first reconcile pass is done: it acts and serves), polled every 50 ms through
//!   the relays of [`hearth_tests::ha`]. Then the node is started again and the next round
//!   waits until all three replicas answer and the three etcd members are healthy.
//! - **partition** (`--partition`, after the stop rounds): the leader's node is cut off the
//!   others (`cluster.sh partition`: its engine and its replica keep running, but reach neither
//!   the other etcd members nor the other managers), timed the same way; then healed. This
//!   is the crash path: nothing releases the lease, it must run out.
//!
//! Medians and min–max per kind. The stack is removed at the end and the cluster left up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_tests::cluster::Cluster;
use hearth_tests::ha::HaStack;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn row(name: &str, v: &[Duration]) -> String {
    let secs = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!(
        "| {name} | {} | {}–{} | {} |",
        secs(&median(v)),
        secs(&min),
        secs(&max),
        v.iter().map(secs).collect::<Vec<_>>().join(", ")
    )
}

/// Seconds since midnight UTC, now.
fn day_secs_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86_400.0)
}

/// Seconds since midnight UTC of a `docker logs -t` line (`2026-12-05T08:55:01.123456789Z …`).
fn day_secs(line: &str) -> Option<f64> {
    let time = line.get(11..)?.split(['Z', ' ']).next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Seconds from `t0` (seconds since midnight) to `t`, across midnight.
fn since(t0: f64, t: f64) -> f64 {
    let d = t - t0;
    if d < -43_200.0 {
        d + 86_400.0
    } else {
        d
    }
}

/// The node leading Swarm's raft, as manager `n` sees it (`docker node ls`).
fn swarm_leader(cluster: &Cluster, n: usize) -> Option<usize> {
    let out = cluster
        .try_docker(
            n,
            &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"],
        )
        .ok()?;
    out.lines()
        .find(|l| l.ends_with(" Leader"))
        .and_then(|l| l.split(' ').next())
        .and_then(|host| host.strip_prefix("hearth-node"))
        .and_then(|n| n.parse().ok())
}

/// When (seconds since midnight) and which node a surviving manager named as Swarm's new
/// raft leader.
type SwarmSeen = Arc<Mutex<Option<(f64, usize)>>>;

/// Polls the managers but `stopped` (each in its own thread: a call blocks while Swarm has
/// no raft leader) until one answers `docker node ls` naming a raft leader other than
/// `stopped`; the seconds since midnight when it did.
fn watch_swarm(cluster: &Cluster, stopped: usize) -> (Arc<AtomicBool>, SwarmSeen) {
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(None));
    for n in (1..=3).filter(|&n| n != stopped) {
        let (cluster, done, seen) = (cluster.clone(), done.clone(), seen.clone());
        std::thread::spawn(move || {
            let since = Instant::now();
            while !done.load(Ordering::Relaxed) && since.elapsed() < Duration::from_secs(90) {
                if let Some(leader) = swarm_leader(&cluster, n).filter(|&l| l != stopped) {
                    let mut s = seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if s.is_none() {
                        *s = Some((day_secs_now(), leader));
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    (done, seen)
}

/// The `docker logs -t` lines of the hearth containers on node `n`.
fn hearth_logs(cluster: &Cluster, n: usize) -> Vec<String> {
    let filter = format!(
        "label=com.docker.swarm.service.name={}_hearth",
        hearth_tests::ha::STACK
    );
    let ids = cluster
        .try_docker(n, &["ps", "-q", "--filter", &filter])
        .unwrap_or_default();
    let mut lines = Vec::new();
    for id in ids.lines() {
        if let Ok(out) = std::process::Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", cluster.node(n).socket.display()))
            .args(["logs", "-t", id])
            .stdin(std::process::Stdio::null())
            .output()
        {
            for l in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                lines.push(l.to_string());
            }
        }
    }
    lines
}

/// The ID of the running hearth container on node `n`.
fn hearth_container(cluster: &Cluster, n: usize) -> Option<String> {
    let filter = format!(
        "label=com.docker.swarm.service.name={}_hearth",
        hearth_tests::ha::STACK
    );
    cluster
        .try_docker(n, &["ps", "-q", "--no-trunc", "--filter", &filter])
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

/// Follows the json-file log of container `id` on node `n` from disk (`tail -f` of the open
/// file: what the container writes while its node stops is kept even when the file is
/// removed then, as Swarm does with a killed task's container).
struct LogTail {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
}

impl LogTail {
    fn start(cluster: &Cluster, n: usize, id: &str) -> Option<LogTail> {
        let file = cluster
            .node(n)
            .socket
            .with_file_name(format!("node{n}"))
            .join("data/containers")
            .join(id)
            .join(format!("{id}-json.log"));
        let out = tempfile::NamedTempFile::new().ok()?;
        let child = std::process::Command::new("tail")
            .args(["-c", "+1", "-f"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(out.reopen().ok()?)
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(LogTail { child, out })
    }

    /// Stops following; the lines as `TIME LINE`.
    fn lines(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.out.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                format!(
                    "{} {}",
                    v["time"].as_str().unwrap_or_default(),
                    v["log"].as_str().unwrap_or_default().trim_end()
                )
            })
            .collect()
    }
}

/// Seconds from `t0` to the first line at or after `t0` that contains every one of `marks`.
fn first(lines: &[String], t0: f64, marks: &[&str]) -> Option<f64> {
    lines
        .iter()
        .filter(|l| marks.iter().all(|m| l.contains(m)))
        .filter_map(|l| day_secs(l).map(|t| since(t0, t)))
        .filter(|&d| d >= -0.5)
        .reduce(f64::min)
}

/// One round's phases, in seconds from the stop (`None`: not seen).
#[derive(Debug, Default, Clone)]
struct Phases {
    swarm_leader_before: Option<usize>,
    hearth_leader: usize,
    new_leader: usize,
    /// The stop command returned (the node's dockerd is gone).
    stopped: f64,
    /// The old leader got SIGTERM / gave its lease back / could not.
    old_signal: Option<f64>,
    old_gave_back: Option<f64>,
    old_could_not: Option<f64>,
    /// The old leader gave up its leadership (its fence: its lease not renewed in time).
    old_gave_up: Option<f64>,
    /// A surviving manager answered naming a new Swarm raft leader.
    swarm_answers: Option<f64>,
    won: Option<f64>,
    mirror: Option<f64>,
    leader_key: Option<f64>,
    docker: Option<f64>,
    api: Option<f64>,
    first_pass: Option<f64>,
    member_switches: usize,
    ready: f64,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
}

fn phases_row(p: &Phases) -> String {
    format!(
        "| {} → {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
        p.hearth_leader,
        p.new_leader,
        p.swarm_leader_before
            .map_or("?".to_string(), |n| n.to_string()),
        p.stopped,
        match (p.old_gave_back, p.old_could_not, p.old_gave_up) {
            (Some(t), _, _) => format!("gave back {t:.2}"),
            (None, Some(t), _) => format!("could not give back {t:.2}"),
            (None, None, Some(t)) => format!("gave up {t:.2}"),
            (None, None, None) => format!("– (SIGTERM {})", opt(p.old_signal)),
        },
        opt(p.swarm_answers),
        opt(p.won),
        opt(p.mirror),
        opt(p.leader_key),
        opt(p.docker),
        opt(p.api),
        opt(p.first_pass),
        p.member_switches,
        p.ready,
    )
}

/// Waits until one replica leads, the other two stand by naming it, and every etcd member is
/// healthy (`etcdctl endpoint health --cluster` in the member on node 1).
async fn wait_recovered(cluster: &Cluster, stack: &HaStack) -> Result<(), BoxError> {
    let since = Instant::now();
    loop {
        let settled = stack.wait_settled(Duration::from_secs(1)).await;
        let leads = settled.is_ok();
        let etcd = cluster
            .try_docker(
                1,
                &[
                    "ps",
                    "-q",
                    "--filter",
                    &format!(
                        "label=com.docker.swarm.service.name={}_etcd1",
                        hearth_tests::ha::STACK
                    ),
                ],
            )
            .ok()
            .filter(|id| !id.is_empty())
            .is_some_and(|id| {
                cluster
                    .try_docker(
                        1,
                        &[
                            "exec",
                            id.lines().next().unwrap_or_default(),
                            "etcdctl",
                            "--endpoints",
                            "http://127.0.0.1:2379",
                            "endpoint",
                            "health",
                            "--cluster",
                        ],
                    )
                    .is_ok()
            });
        if leads && etcd {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(180) {
            return Err(
                format!("not recovered after 180 s: {settled:?}, etcd healthy: {etcd}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut runs = 5usize;
    let mut partition = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a value")?.parse()?,
            "--partition" => partition = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cluster = Cluster::ensure_with("bench-failover", 3)
        .await
        .ok_or("the 3-manager cluster is not available")?;
    HaStack::remove(&cluster).await;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.yml");
    std::fs::write(
        &state,
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: bench\nspec:\n  slots: 1\n  portBase: 29400\n  portsPerSlot: 1\n  waitTimeout: 1s\n",
    )?;
    let stack = HaStack::deploy(dir.path(), &state).await?;
    let mut kinds: Vec<(&str, Vec<Duration>)> = vec![("stop-node", Vec::new())];
    if partition {
        kinds.push(("partition", Vec::new()));
    }
    let mut phases: Vec<(String, Phases)> = Vec::new();
    for (kind, times) in &mut kinds {
        for round in 1..=runs {
            wait_recovered(&cluster, &stack).await?;
            let leader = stack.leader().await.ok_or("no leader")?;
            let swarm_before = swarm_leader(&cluster, leader);
            let old_log = hearth_container(&cluster, leader)
                .and_then(|id| LogTail::start(&cluster, leader, &id));
            if old_log.is_none() {
                eprintln!("bench_failover: cannot follow the log of node {leader}'s replica");
            }
            let (swarm_done, swarm_seen) = watch_swarm(&cluster, leader);
            let t0_day = day_secs_now();
            let t0 = Instant::now();
            let cut = {
                let cluster = cluster.clone();
                let kind = kind.to_string();
                tokio::task::spawn_blocking(move || {
                    if kind == "partition" {
                        cluster.partition(leader);
                    } else {
                        cluster.stop_node(leader);
                    }
                    t0.elapsed()
                })
            };
            let new = stack
                .wait_leader(Some(leader), Duration::from_secs(60))
                .await?;
            let took = t0.elapsed();
            let stopped = cut.await?;
            // Swarm's own leader, if not known yet (at most 30 s more).
            let waited = Instant::now();
            while swarm_seen.lock().map(|s| s.is_none()).unwrap_or(false)
                && waited.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            swarm_done.store(true, Ordering::Relaxed);
            let swarm_after = swarm_seen.lock().ok().and_then(|s| *s);
            times.push(took);
            // The old leader's last words (its node is down, or cut off: its log is still
            // written there).
            tokio::time::sleep(Duration::from_millis(500)).await;
            let old_logs = old_log.map(LogTail::lines).unwrap_or_default();
            for line in old_logs.iter().filter(|l| {
                [
                    "shutting down",
                    "member failed",
                    "lease",
                    "lost the etcd store",
                    "hearth stopped",
                ]
                .iter()
                .any(|m| l.contains(m))
                    && day_secs(l).is_some_and(|t| since(t0_day, t) >= -0.5)
            }) {
                eprintln!("bench_failover:   old leader (node {leader}): {line}");
            }
            if *kind == "partition" {
                cluster.heal(leader);
            } else {
                cluster.start_node(leader);
            }
            let new_logs = hearth_logs(&cluster, new);
            let p = Phases {
                swarm_leader_before: swarm_before,
                hearth_leader: leader,
                new_leader: new,
                stopped: stopped.as_secs_f64(),
                old_signal: first(&old_logs, t0_day, &["shutting down"]),
                old_gave_back: first(&old_logs, t0_day, &["gave the holder lease back"]),
                old_could_not: first(&old_logs, t0_day, &["could not give the holder lease back"]),
                old_gave_up: first(&old_logs, t0_day, &["lost the etcd store"]),
                swarm_answers: swarm_after.map(|(t, _)| since(t0_day, t)),
                won: first(&new_logs, t0_day, &["took the holder key"]),
                mirror: first(&new_logs, t0_day, &["this process holds it"]),
                leader_key: first(&new_logs, t0_day, &["this replica leads"]),
                docker: first(&new_logs, t0_day, &["step 2/6"]),
                api: first(&new_logs, t0_day, &["step 5/6"]),
                first_pass: first(&new_logs, t0_day, &["first pass done", "WarmApp"]),
                member_switches: new_logs
                    .iter()
                    .filter(|l| l.contains("etcd member failed"))
                    .filter(|l| day_secs(l).is_some_and(|t| since(t0_day, t) >= 0.0))
                    .count(),
                ready: took.as_secs_f64(),
            };
            eprintln!(
                "bench_failover: {kind} {round}/{runs}: node {leader} -> node {new} leads after {:.2} s; swarm raft leader before: {swarm_before:?}, after: {swarm_after:?}; {p:?}",
                took.as_secs_f64()
            );
            phases.push((kind.to_string(), p));
        }
    }
    wait_recovered(&cluster, &stack).await?;
    println!("| kind | median s | min–max s | all s |");
    println!("|---|---|---|---|");
    for (kind, times) in &kinds {
        println!("{}", row(kind, times));
    }
    println!();
    println!("Phases, seconds from the stop (or cut):");
    println!();
    println!("| kind | hearth leader → new | Swarm raft leader before | stop returned | old leader's lease | Swarm answers (new raft leader) | key won | mirror loaded | leader key written | Docker connected | API listening | first pass | etcd member switches | readyz 200 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (kind, p) in &phases {
        println!(
            "| {kind} | {}",
            phases_row(p).trim_start_matches('|').trim_start()
        );
    }
    HaStack::remove(&cluster).await;
    Ok(())
}
