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

use std::time::{Duration, Instant};

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
    for (kind, times) in &mut kinds {
        for round in 1..=runs {
            wait_recovered(&cluster, &stack).await?;
            let leader = stack.leader().await.ok_or("no leader")?;
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
                })
            };
            let new = stack
                .wait_leader(Some(leader), Duration::from_secs(60))
                .await?;
            let took = t0.elapsed();
            cut.await?;
            eprintln!(
                "bench_failover: {kind} {round}/{runs}: node {leader} -> node {new} leads after {:.2} s",
                took.as_secs_f64()
            );
            times.push(took);
            if *kind == "partition" {
                cluster.heal(leader);
            } else {
                cluster.start_node(leader);
            }
        }
    }
    wait_recovered(&cluster, &stack).await?;
    println!("| kind | median s | min–max s | all s |");
    println!("|---|---|---|---|");
    for (kind, times) in &kinds {
        println!("{}", row(kind, times));
    }
    HaStack::remove(&cluster).await;
    Ok(())
}
