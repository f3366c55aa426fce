//! Benchmark: from the SIGKILL of a CI job to the last object of its run gone, on the real swarm, through a running `hearth serve`.
//!
//! Run once, in release mode, on the test bed (see `BENCHMARKS.md`, "Kill → last object gone"):
//!
//! ```text
//! cargo build --release -p hearth-controller --bin hearth -p hearth-tests --bin bench_sweep
//! target/release/bench_sweep [--runs N] [--hearth PATH]
//! ```
//!
//! It starts `hearth serve` (the `hearth` binary next to this one, a temporary data directory,
//! the fixture catalogue `tests/fixtures/catalogue`, a one-slot pool, a free local port) and
//! repeats `--runs` times (default 5, at least 5), in turn:
//!
//! - **hearth-deployed**: a CI-like `sh` script runs `hearth run start --owner-pid $$ --deploy
//!   -o env` for the `fullstack` recipe (2 services, 2 volumes, a secret, a config, an overlay
//!   network), waits until every object and both containers exist, and is SIGKILLed;
//! - **harness-deployed (adopted)**: the same, but the script deploys the stack itself with
//!   `docker stack deploy` under the name hearth assigned (no hearth label on anything);
//! - **script baseline**: what a cleanup script does when it gets to run at all (a SIGKILLed
//!   job's trap never runs; this is a later job or a cron): `docker stack rm` of the same full
//!   stack deployed with `docker stack deploy`, then retrying `docker volume rm` every 100 ms
//!   until the volumes go — timed from the `docker stack rm`.
//!
//! Each is timed by the same independent poller ([`hearth_tests::ci_kill::inventory`]: every
//! kind — services, containers, networks, volumes, secrets, configs — listed straight from
//! Docker by the stack's namespace label and hearth's run label, every 25 ms) until a listing
//! finds nothing. Reported as median and min–max. Stacks are named `hr-fullstack-…` (hearth)
//! and `hearth-test-bench-script-…`; every object carries `hearth.test=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::swarm::{DockerOptions, DockerSwarm};
use hearth_tests::ci_kill::{self, Deploy, Scenario};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pool the runs take their slot of.
const POOL: &str = "hearth-test-bench";
/// The poller's period.
const POLL: Duration = Duration::from_millis(25);

struct Settings {
    runs: usize,
    hearth: PathBuf,
}

fn settings() -> Result<Settings, BoxError> {
    let exe = std::env::current_exe()?;
    let mut s = Settings {
        runs: 5,
        hearth: exe.with_file_name("hearth"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => s.runs = value()?.parse()?,
            "--hearth" => s.hearth = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if s.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if s.runs < 5 {
        eprintln!("--runs {}: a smoke run; medians need at least 5", s.runs);
    }
    if !s.hearth.exists() {
        return Err(format!(
            "{} missing: cargo build --release -p hearth-controller --bin hearth",
            s.hearth.display()
        )
        .into());
    }
    Ok(s)
}

/// A running `hearth serve`, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    server: String,
    data_dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_daemon(hearth: &Path, dir: &Path) -> Result<Daemon, BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = format!("127.0.0.1:{port}");
    let state = dir.join("state.yml");
    std::fs::write(
        &state,
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {POOL}\nspec:\n  slots: 1\n  \
             portBase: 32000\n  portsPerSlot: 10\n  waitTimeout: 2m\n"
        ),
    )?;
    let data_dir = dir.join("data");
    let child = Command::new(hearth)
        .arg("serve")
        .arg("--state")
        .arg(&state)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--catalogue")
        .arg(ci_kill::catalogue_dir())
        .args(["--listen", &server, "--label", "hearth.test=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let daemon = Daemon {
        child,
        server,
        data_dir,
    };
    let client = controller::cli::ci::Client::new(daemon.server.parse()?);
    for _ in 0..200 {
        if let Ok(pools) = client.get::<Vec<crd::SlotPool>>("/api/v1/slotpools").await {
            if pools.iter().any(|p| p.metadata.name == POOL) {
                return Ok(daemon);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("hearth serve did not come up with the pool within 20 s".into())
}

/// The slot is free again (the previous run was closed).
async fn wait_for_free_slot(server: &str) -> Result<(), BoxError> {
    let client = controller::cli::ci::Client::new(server.parse()?);
    for _ in 0..600 {
        let pools: Vec<crd::SlotPool> = client.get("/api/v1/slotpools").await?;
        if pools
            .iter()
            .any(|p| p.metadata.name == POOL && p.status.leases.is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the slot was not freed within 30 s".into())
}

async fn hearth_kill(
    swarm: &DockerSwarm,
    daemon: &Daemon,
    hearth: &Path,
    deploy: Deploy,
    work: PathBuf,
) -> Result<Duration, BoxError> {
    wait_for_free_slot(&daemon.server).await?;
    let scenario = Scenario {
        hearth: hearth.to_path_buf(),
        server: daemon.server.clone(),
        pool: POOL.into(),
        deploy,
        work,
        env: vec![(
            "HEARTH_TOKEN_FILE".into(),
            daemon.data_dir.join("token").display().to_string(),
        )],
    };
    let mut job = ci_kill::start_job(swarm, &scenario, Duration::from_secs(180)).await?;
    // Let the daemon settle (the poller starts from a quiet state, not mid-deploy).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = ci_kill::kill(&mut job)?;
    let took = ci_kill::wait_until_gone(
        swarm,
        &job.stack,
        &job.run,
        killed,
        Duration::from_secs(120),
        POLL,
    )
    .await?;
    Ok(took)
}

fn docker(args: &[&str]) -> Result<std::process::Output, BoxError> {
    Ok(Command::new("docker")
        .args(args)
        .env("VERSION", ci_kill::VERSION)
        .output()?)
}

async fn script_cleanup(swarm: &DockerSwarm, name: &str) -> Result<Duration, BoxError> {
    let compose = ci_kill::catalogue_dir().join("fullstack/compose.yml");
    let compose = compose.display().to_string();
    let out = docker(&["stack", "deploy", "-c", &compose, name])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    let until = Instant::now() + Duration::from_secs(180);
    while !ci_kill::inventory(swarm, name, "-").await?.is_complete() {
        if Instant::now() > until {
            return Err(format!("{name} did not come up").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let out = docker(&["stack", "rm", name])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    // The script's loop: retry the volumes until they go (they are in use while the
    // containers stop), in the background of the poller.
    let volumes = [format!("{name}_data"), format!("{name}_cache")];
    let remover = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let gone = volumes.iter().all(|v| {
                docker(&["volume", "rm", v]).is_ok_and(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("no such")
                })
            });
            if gone || Instant::now() > until {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let took =
        ci_kill::wait_until_gone(swarm, name, "-", start, Duration::from_secs(120), POLL).await;
    remover.await?;
    Ok(took?)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn row(name: &str, v: &[Duration]) -> String {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    let all: Vec<String> = v.iter().map(|d| ms(*d)).collect();
    format!(
        "| {name} | {} | {}–{} | {} |",
        ms(median(v)),
        ms(min),
        ms(max),
        all.join(", ")
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let s = settings()?;
    let mut options = DockerOptions::default();
    if let Some(socket) = std::env::var_os("HEARTH_DOCKER_SOCKET") {
        options.socket = socket.into();
    }
    let swarm = DockerSwarm::connect(options).await?;
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(&s.hearth, dir.path()).await?;
    eprintln!("hearth serve at {} ({} runs)", daemon.server, s.runs);
    let (mut by_hearth, mut adopted, mut script) = (Vec::new(), Vec::new(), Vec::new());
    let tag = std::process::id();
    for i in 0..s.runs {
        let t = hearth_kill(
            &swarm,
            &daemon,
            &s.hearth,
            Deploy::Hearth,
            dir.path().join(format!("h{i}")),
        )
        .await?;
        eprintln!("run {i}: hearth-deployed {t:?}");
        by_hearth.push(t);
        let t = hearth_kill(
            &swarm,
            &daemon,
            &s.hearth,
            Deploy::Harness,
            dir.path().join(format!("a{i}")),
        )
        .await?;
        eprintln!("run {i}: harness-deployed {t:?}");
        adopted.push(t);
        let t = script_cleanup(&swarm, &format!("hearth-test-bench-script-{tag}-{i}")).await?;
        eprintln!("run {i}: script baseline {t:?}");
        script.push(t);
    }
    println!("| scenario (s) | median | min–max | all runs |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        row("hearth, run deployed by hearth (`--deploy`)", &by_hearth)
    );
    println!(
        "{}",
        row("hearth, run deployed by the harness (adopted)", &adopted)
    );
    println!(
        "{}",
        row(
            "script: `docker stack rm` + `docker volume rm` retries (no kill)",
            &script
        )
    );
    drop(daemon);
    Ok(())
}
