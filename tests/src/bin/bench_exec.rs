//! Benchmark: one CI job's slot through `hearth run exec -- true`, end to end, against the
//! flock script a hand-made harness uses for the same guarantee (issue 16).
//!
//! ```text
//! cargo build --release -p hearth-controller --bin hearth -p hearth-tests --bin bench_exec
//! target/release/bench_exec [--reps N] [--rounds R] [--hearth PATH]
//! ```
//!
//! Each repetition starts a fresh release `hearth serve` (sled store in a temp directory, the
//! machine's Docker, a state file declaring one slot pool `bench` of 1 slot) and then, R times
//! in turn (default 5 repetitions × 20 rounds), times from spawn to exit:
//!
//! - **hearth**: `hearth run exec --recipe webapp --version 1.1.0 --pool bench -- true` — a
//!   process start of the CLI, the run's start (`POST /api/v1/runs`: the owner checked, a
//!   Docker listing of the run's namespace for leftovers, the run and its slot lease written
//!   durably in one transaction), `true` run with the run's variables, the finish (`POST
//!   …/finish`: the reconciler tears the run's namespace down — empty without `--deploy`, so
//!   a verified teardown is listings that find nothing — then the verdict and the slot's
//!   release in one durable transaction), exit with `true`'s status;
//! - **peer**: `sh peer.sh slot.lock` — an exclusive `flock` on the slot's lock file (the
//!   `flock` binary), `true`, release (`flock -u`), exit with `true`'s status: what a CI script
//!   does without hearth to hold one slot while a job runs. Nothing is written or verified;
//! - **floors**: `hearth --version` (the CLI binary's process start alone) and `sh -c true`;
//! - **in-process**: the same start and finish requests sent from this process (no process
//!   start), timed separately: where hearth's time goes.
//!
//! A round is checked, not assumed: every `run exec` must exit 0; after each repetition the
//! pool must hold no lease, every run must have finished (its verdict is `Failed`, "no
//! required tier": `true` reports none) with a verified teardown that left nothing, and there
//! must be as many runs as starts.
//!
//! Printed: per row the median of the repetitions' medians with their min–max, and the
//! same-run ratio hearth / peer (the median of the repetitions' ratios, min–max).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;
use crd::{OwnerKind, Run, RunPhase, SlotPool};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POOL: &str = "bench";

/// The peer: one slot held with `flock` while the job (`true`) runs.
const PEER: &str = r#"#!/bin/sh
# One CI job on slot $1 at a time: what a hand-made harness does without hearth.
exec 9>"$1"
flock 9 || exit 1
true
status=$?
flock -u 9
exit $status
"#;

struct Settings {
    reps: usize,
    rounds: usize,
    hearth: PathBuf,
}

fn settings() -> Result<Settings, BoxError> {
    let exe = std::env::current_exe()?;
    let mut s = Settings {
        reps: 5,
        rounds: 20,
        hearth: exe.with_file_name("hearth"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--reps" => s.reps = value()?.parse()?,
            "--rounds" => s.rounds = value()?.parse()?,
            "--hearth" => s.hearth = value()?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if s.reps == 0 || s.rounds == 0 {
        return Err("--reps and --rounds must be at least 1".into());
    }
    Ok(s)
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir, BoxError> {
        let dir =
            std::env::temp_dir().join(format!("hearth-benchexec-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn start_daemon(hearth: &Path, dir: &Path, rep: usize) -> Result<Daemon, BoxError> {
    let catalogue = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue");
    std::fs::write(
        dir.join("state.yml"),
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {POOL}\nspec:\n  slots: 1\n  \
             portBase: 23400\n  portsPerSlot: 10\n  waitTimeout: 30s\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let addr = free_addr()?;
    let child = Command::new(hearth)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--state")
        .arg(dir.join("state.yml"))
        .arg("--catalogue")
        .arg(catalogue)
        .args(["--listen", &addr.to_string()])
        .args(["--label", "hearth.test=1"])
        .args([
            "--label",
            &format!("hearth.test.run=benchexec-{}-{rep}", std::process::id()),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Daemon { child, addr })
}

async fn wait_ready(d: &mut Daemon, token: &Path) -> Result<(), BoxError> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = token.exists()
            && Client::new(d.addr)
                .get::<SlotPool>(&format!("/api/v1/slotpools/{POOL}"))
                .await
                .is_ok();
        if ready {
            return Ok(());
        }
        if let Some(status) = d.child.try_wait()? {
            return Err(format!("hearth serve exited: {status}").into());
        }
        if Instant::now() > until {
            return Err("hearth serve did not answer within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Spawn to exit of `command`, which must exit 0.
fn timed(command: &mut Command, what: &str) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{what} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(took)
}

/// The rows, in print order.
const ROWS: [&str; 7] = [
    "hearth run exec -- true",
    "peer: sh + flock + true",
    "floor: hearth --version",
    "floor: sh -c true",
    "in-process: start (POST /api/v1/runs)",
    "in-process: finish (POST …/finish)",
    "in-process: start + finish",
];

/// One repetition: every row's samples, in ms.
async fn repetition(s: &Settings, rep: usize) -> Result<Vec<Vec<f64>>, BoxError> {
    let dir = TempDir::new(&rep.to_string())?;
    let token = dir.0.join("data/token");
    let mut daemon = start_daemon(&s.hearth, &dir.0, rep)?;
    wait_ready(&mut daemon, &token).await?;
    let client = Client::new(daemon.addr).with_token(Some(
        controller::access::admin_token::read(&token).map_err(|e| format!("token: {e}"))?,
    ));
    let peer = dir.0.join("peer.sh");
    std::fs::write(&peer, PEER)?;
    let lock = dir.0.join("slot.lock");
    let owner = controller::liveness::current_owner()
        .map_err(|e| format!("owner: {e}"))?
        .with_kind(OwnerKind::Lease);
    let body = serde_json::json!({
        "recipe": "webapp", "version": "1.1.0", "pool": POOL, "ttl": "30s",
        "owner": owner, "deploy": false, "requiredTiers": [],
    });
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut starts = 0;
    for _ in 0..s.rounds {
        let exec = timed(
            Command::new(&s.hearth)
                .args(["run", "exec", "--recipe", "webapp", "--version", "1.1.0"])
                .args(["--pool", POOL, "--server", &daemon.addr.to_string()])
                .arg("--token-file")
                .arg(&token)
                .args(["--", "true"]),
            "hearth run exec",
        )?;
        starts += 1;
        samples[0].push(ms(exec));
        samples[1].push(ms(timed(
            Command::new("sh").arg(&peer).arg(&lock),
            "the peer",
        )?));
        samples[2].push(ms(timed(
            Command::new(&s.hearth).arg("--version"),
            "hearth --version",
        )?));
        samples[3].push(ms(timed(
            Command::new("sh").args(["-c", "true"]),
            "sh -c true",
        )?));
        let t = Instant::now();
        let started: controller::runs::Started = client.post("/api/v1/runs", &body).await?;
        let start = t.elapsed();
        starts += 1;
        let t = Instant::now();
        let run: Run = client
            .post(
                &format!("/api/v1/runs/{}/finish", started.run),
                &serde_json::json!({}),
            )
            .await?;
        let finish = t.elapsed();
        if !ended_clean(&run) {
            return Err(format!("run {} ended {:?}", started.run, run.status.phase).into());
        }
        samples[4].push(ms(start));
        samples[5].push(ms(finish));
        samples[6].push(ms(start + finish));
    }
    // Every slot released, every run ended green with a verified (empty) teardown.
    let pool: SlotPool = client.get(&format!("/api/v1/slotpools/{POOL}")).await?;
    if !pool.status.leases.is_empty() {
        return Err(format!("pool still leased: {:?}", pool.status.leases).into());
    }
    let runs: Vec<Run> = client.get("/api/v1/runs").await?;
    let bad: Vec<_> = runs
        .iter()
        .filter(|r| !ended_clean(r))
        .map(|r| format!("{} {:?}", r.metadata.name, r.status.phase))
        .collect();
    if runs.len() != starts || !bad.is_empty() {
        return Err(format!(
            "{} runs for {starts} starts; not green: {bad:?}",
            runs.len()
        )
        .into());
    }
    Ok(samples)
}

/// Finished with a verified teardown that left nothing. The verdict is `Failed` ("no
/// required tier": `-- true` reports none, and a run is green only when required tiers
/// passed), which is the job's business here, not the benchmark's.
fn ended_clean(r: &Run) -> bool {
    matches!(r.status.phase, RunPhase::Succeeded | RunPhase::Failed)
        && r.status.residuals.is_empty()
        && r.status.finished_at_ms.is_some()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v.to_vec()), min, max)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let s = settings()?;
    if !s.hearth.exists() {
        return Err(format!(
            "{} not found (build it, or --hearth PATH)",
            s.hearth.display()
        )
        .into());
    }
    eprintln!(
        "bench_exec: {} reps × {} rounds, hearth {}, load before: {}",
        s.reps,
        s.rounds,
        s.hearth.display(),
        load()
    );
    let mut per_rep: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
    let mut ratios = Vec::new();
    for rep in 0..s.reps {
        let samples = repetition(&s, rep).await?;
        let medians: Vec<f64> = samples.into_iter().map(median).collect();
        eprintln!(
            "  rep {rep}: {}",
            ROWS.iter()
                .zip(&medians)
                .map(|(r, m)| format!("{r} {m:.2} ms"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        ratios.push(medians[0] / medians[1]);
        for (row, m) in per_rep.iter_mut().zip(medians) {
            row.push(m);
        }
    }
    eprintln!("load after: {}", load());
    if s.reps < 3 || s.rounds < 10 {
        println!("(smoke run: fewer than 3 reps or 10 rounds — not figures)");
    }
    println!("| row | median ms (min–max of the reps' medians) |");
    println!("|---|---|");
    for (row, v) in ROWS.iter().zip(&per_rep) {
        let (m, lo, hi) = spread(v);
        println!("| {row} | {m:.2} ({lo:.2}–{hi:.2}) |");
    }
    let (m, lo, hi) = spread(&ratios);
    println!("\nratio hearth / peer (same run): **{m:.1}** ({lo:.1}–{hi:.1})");
    Ok(())
}
