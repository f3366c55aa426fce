//! Benchmark: from the SIGKILL of a CI job to the last object of its run gone on **every node**
//! of the real 3-node cluster (`scripts/cluster.sh`), against a docker-CLI script doing the
//! same cleanup on every node, in the same run (`BENCHMARKS.md`, "Kill → gone on 3 nodes").
//!
//! ```text
//! sudo bash scripts/testbed.sh && sudo bash scripts/cluster.sh up 3
//! cargo build --release -p hearth-controller --bin hearth -p hearth-tests --bin bench_cluster
//! target/release/bench_cluster [--runs N]
//! ```
//!
//! It starts `hearth serve` (the `hearth` binary next to this one) on node 1 with every node's
//! `--node-endpoint`, then repeats `--runs` times (default 5), in turn:
//!
//! - **hearth**: [`Cluster::killed_owner_swept`] — a `sleep` process owns a run of the `spread`
//!   recipe (a global service mounting a volume: a task and a volume on each of the 3 nodes, an
//!   overlay network) deployed by hearth; once it is on every node the owner is SIGKILLed;
//! - **script**: [`Cluster::script_cleanup`] — the same stack deployed with `docker stack
//!   deploy`, removed by a shell script as forcibly as hearth's sweeper removes it: `docker
//!   stack rm` on the manager, then on every node at once `docker rm -f` of the stack's
//!   containers and `docker volume rm` of its volumes retried every 100 ms until none is left,
//!   timed from the script's start (the best case of a script: it runs the moment it is asked,
//!   with no owner's death to notice).
//!
//! Both are timed by the same poller: each node's own daemon listed every 25 ms until nothing
//! of the stack is left there (containers, volumes, networks; services, secrets and configs on
//! the manager). Medians and min–max.

use std::time::Duration;

use hearth_tests::cluster::Cluster;
use hearth_tests::process::{free_addr, ServeProcess};

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if runs < 5 {
        eprintln!("--runs {runs}: a smoke run; medians need at least 5");
    }
    let cluster = Cluster::ensure("bench-cluster")
        .await
        .ok_or("the cluster is not up: sudo bash scripts/cluster.sh up 3")?;
    let dir = tempfile::tempdir()?;
    let mut args: Vec<std::ffi::OsString> = vec![
        "--docker-socket".into(),
        cluster.node(1).socket.clone().into(),
        "--catalogue".into(),
        hearth_tests::ci_kill::catalogue_dir().into(),
        "--label".into(),
        "hearth.test=1".into(),
    ];
    for e in cluster.endpoints() {
        args.push("--node-endpoint".into());
        args.push(e.into());
    }
    let mut hearth = ServeProcess::new(dir.path(), free_addr(), args);
    hearth.spawn();
    hearth.ready(Duration::from_secs(30)).await;
    let client = hearth.client();
    let (mut by_hearth, mut by_script) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (took, started) = cluster.killed_owner_swept(&client).await?;
        eprintln!("run {i}: hearth {:?} ({})", took, started.stack);
        by_hearth.push(took);
        let ns = hearth_tests::support::unique_name("benchcl");
        let took = cluster.script_cleanup(&ns).await?;
        eprintln!("run {i}: script {took:?} ({ns})");
        by_script.push(took);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("kill → everything gone on 3 nodes, {runs} runs, load {load}");
    println!("| scenario (s) | median | min–max | all runs |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        row(
            "hearth: owner SIGKILLed, swept by `hearth serve`",
            &by_hearth
        )
    );
    println!(
        "{}",
        row(
            "script: `docker stack rm`, then on every node at once `docker rm -f` + `docker volume rm` retries (no kill to notice)",
            &by_script
        )
    );
    println!(
        "ratio hearth / script (medians): {:.3}",
        median(&by_hearth).as_secs_f64() / median(&by_script).as_secs_f64()
    );
    Ok(())
}
