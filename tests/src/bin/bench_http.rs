//! Benchmark: the daemon's HTTP API under load from a second process on loopback.
//!
//! ```text
//! cargo build --release -p hearth-controller --bin hearth -p hearth-tests --bin bench_http
//! target/release/bench_http [--reps N] [--seconds S] [--clients C,C,..] [--hearth PATH]
//!                           [--stores sled,etcd] [--etcd HOST:PORT,..]
//! ```
//!
//! Each repetition starts a fresh release `hearth serve` (sled store in a temp directory, or
//! with `--stores` also an etcd store under a fresh prefix of the `--etcd` cluster — default
//! the 3-member scripts/etcd.sh cluster; the stores take turns within each repetition, so both
//! see the same machine load; the machine's Docker, its own port, default log level) and
//! drives it with C concurrent clients,
//! each on its own keep-alive HTTP/1.1 connection, for S seconds (defaults: 5 repetitions,
//! 10 s, C = 1 and 16), for each of two workloads:
//!
//! - **runs**: `POST /api/v1/runs` (no `deploy`, no pool, one required tier), `POST
//!   …/report` (the tier passed), `POST …/finish`, one after another. Start and finish are not
//!   store-only: start lists the run's namespace on Docker (leftovers under its name), finish
//!   tears the (empty) namespace down and verifies it, so both make Docker API calls;
//! - **slots**: `POST /api/v1/slotpools/bench/acquire` then `…/release` (store only; the pool
//!   has as many slots as clients, so nobody waits).
//!
//! Every mutation is answered only after the store made it durable (group commit: concurrent
//! writers share one flush). That is checked, not assumed: after the timed part of each
//! repetition the clients go on, the daemon is SIGKILLed 0.7 s later in the middle of their
//! requests, restarted on the same data directory, and every acknowledged mutation is looked
//! up; one that is missing makes the benchmark fail. (sled keeps unflushed writes in the
//! process's own buffers, so a SIGKILL loses what was not flushed; a power loss is not
//! simulated.)
//!
//! Printed: per workload and client count, throughput (requests/s over all request types) and
//! p50/p99 latency per request type — each the median over the repetitions, with min–max.
//!
//! **Peer** (slots only, measured in the same run with the same client counts): what CI
//! scripts do today without hearth — a shell script per operation (`sh`, one process per
//! acquire or release, as a CI job would run it) that takes an exclusive `flock` on the pool's
//! lock file, reads the lease file, picks the first free slot (or drops the caller's lease),
//! writes a new lease file, `sync`s it (fsync) and renames it over the old one, then `sync`s
//! the directory — durable like hearth's answer. Runs have no peer: hearth's start and finish
//! also list and tear down the run's namespace on Docker, which a file-writing script does not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crd::{Run, RunPhase, SlotPool};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POOL: &str = "bench";

struct Settings {
    reps: usize,
    seconds: u64,
    clients: Vec<usize>,
    hearth: PathBuf,
    stores: Vec<StoreKind>,
    etcd: String,
}

/// Where the benchmarked daemon keeps its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StoreKind {
    /// sled in the data directory (the default store).
    Sled,
    /// A fresh prefix of the `--etcd` cluster (`--store etcd://…`).
    Etcd,
}

fn settings() -> Result<Settings, BoxError> {
    let exe = std::env::current_exe()?;
    let mut s = Settings {
        reps: 5,
        seconds: 10,
        clients: vec![1, 16],
        hearth: exe.with_file_name("hearth"),
        stores: vec![StoreKind::Sled],
        etcd: "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793".to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--reps" => s.reps = value()?.parse()?,
            "--seconds" => s.seconds = value()?.parse()?,
            "--clients" => {
                s.clients = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--hearth" => s.hearth = PathBuf::from(value()?),
            "--etcd" => s.etcd = value()?,
            "--stores" => {
                s.stores = value()?
                    .split(',')
                    .map(|v| match v {
                        "sled" => Ok(StoreKind::Sled),
                        "etcd" => Ok(StoreKind::Etcd),
                        other => Err(format!("--stores: unknown store {other:?} (sled, etcd)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if s.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if s.reps < 5 {
        eprintln!("--reps {}: a smoke run; medians need at least 5", s.reps);
    }
    if s.clients.contains(&0) {
        return Err("--clients: each count must be at least 1".into());
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

/// One keep-alive HTTP/1.1 connection to the daemon.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    token: Option<String>,
}

impl Conn {
    async fn open(addr: SocketAddr, token: Option<String>) -> Result<Conn, BoxError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            token,
        })
    }

    /// `POST path` with a JSON body: (status, body).
    async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), BoxError> {
        self.sender.ready().await?;
        let mut req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = self.sender.send_request(req).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, value))
    }
}

/// Request types measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Start,
    Report,
    Finish,
    Acquire,
    Release,
}

/// One client's acknowledged slot state.
#[derive(Debug, Clone, Copy, Default)]
struct SlotClientState {
    /// The slot its acknowledged requests leave it holding.
    held: Option<u32>,
    /// Whether a request was sent and not answered (its effect is unknown).
    in_flight: bool,
}

/// What the clients measured and got acknowledged.
#[derive(Default)]
struct Record {
    latencies: BTreeMap<Op, Vec<Duration>>,
    /// Runs whose start was acknowledged → the last acknowledged step.
    runs: BTreeMap<String, Op>,
    /// Per owner pid, for the slots workload.
    slots: BTreeMap<u32, SlotClientState>,
    /// Answers that were not the expected success (transport failures are not counted: the
    /// durability check kills the daemon under the clients on purpose).
    refusals: Vec<String>,
}

impl Record {
    fn lock(this: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
        this.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Runs,
    Slots,
}

/// One client: requests on one connection, `pause` after each acknowledged slot request,
/// until `stop` (checked before every request) or a transport failure.
async fn client_loop(
    addr: SocketAddr,
    token: Option<String>,
    workload: Workload,
    stop: Arc<AtomicBool>,
    owner: crd::Owner,
    record: Arc<Mutex<Record>>,
    pause: Duration,
) {
    let Ok(mut conn) = Conn::open(addr, token).await else {
        return;
    };
    // A request: (status, body) if it was answered, None on a transport failure.
    macro_rules! call {
        ($op:expr, $path:expr, $body:expr, $want:expr) => {{
            let t = Instant::now();
            match conn.post(&$path, &$body).await {
                Ok((status, value)) if status == $want => {
                    Record::lock(&record)
                        .latencies
                        .entry($op)
                        .or_default()
                        .push(t.elapsed());
                    Some(value)
                }
                Ok((status, value)) => {
                    Record::lock(&record)
                        .refusals
                        .push(format!("{:?} {}: {status} {value}", $op, $path));
                    return;
                }
                Err(_) => None,
            }
        }};
    }
    let stopped = || stop.load(Ordering::SeqCst);
    while !stopped() {
        match workload {
            Workload::Runs => {
                let body = serde_json::json!({
                    "recipe": "webapp", "version": "1.0.0", "owner": owner,
                    "requiredTiers": ["install"],
                });
                let Some(started) = call!(Op::Start, "/api/v1/runs", body, 201) else {
                    return;
                };
                let Some(run) = started
                    .get("run")
                    .and_then(|r| r.as_str())
                    .map(String::from)
                else {
                    return;
                };
                let ack = |op| {
                    Record::lock(&record).runs.insert(run.clone(), op);
                };
                ack(Op::Start);
                if stopped() {
                    return;
                }
                let body = serde_json::json!({"tiers": ["install=pass"]});
                if call!(Op::Report, format!("/api/v1/runs/{run}/report"), body, 200).is_none() {
                    return;
                }
                ack(Op::Report);
                if stopped() {
                    return;
                }
                let body = serde_json::json!({});
                if call!(Op::Finish, format!("/api/v1/runs/{run}/finish"), body, 200).is_none() {
                    return;
                }
                ack(Op::Finish);
            }
            Workload::Slots => {
                let state = |held, in_flight| {
                    Record::lock(&record)
                        .slots
                        .insert(owner.pid, SlotClientState { held, in_flight });
                };
                state(None, true);
                let body = serde_json::json!({"owner": owner});
                let path = format!("/api/v1/slotpools/{POOL}/acquire");
                let Some(grant) = call!(Op::Acquire, path, body, 200) else {
                    return;
                };
                let Some(slot) = grant
                    .get("slot")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|s| u32::try_from(s).ok())
                else {
                    return;
                };
                state(Some(slot), false);
                tokio::time::sleep(pause).await;
                if stopped() {
                    return;
                }
                state(Some(slot), true);
                let body = serde_json::json!({"slot": slot, "owner": owner});
                let path = format!("/api/v1/slotpools/{POOL}/release");
                if call!(Op::Release, path, body, 204).is_none() {
                    return;
                }
                state(None, false);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// A release `hearth serve` on a temp data directory.
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

fn start_daemon(
    hearth: &Path,
    dir: &Path,
    addr: SocketAddr,
    label: &str,
    store: Option<&str>,
) -> Result<Daemon, BoxError> {
    let catalogue = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))?;
    let mut command = Command::new(hearth);
    command.arg("serve");
    if let Some(url) = store {
        // The restart after the SIGKILL waits for the killed leader's lease: keep it short.
        command.args(["--store", url, "--etcd-lease", "3s"]);
    }
    let child = command
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--state")
        .arg(dir.join("state.yml"))
        .arg("--catalogue")
        .arg(catalogue)
        .args(["--listen", &addr.to_string()])
        .args(["--label", "hearth.test=1"])
        .args(["--label", &format!("hearth.test.run={label}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Daemon { child, addr })
}

async fn get<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, BoxError> {
    Ok(controller::cli::ci::Client::new(addr).get(path).await?)
}

async fn wait_ready(d: &mut Daemon) -> Result<(), BoxError> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pools) = get::<Vec<SlotPool>>(d.addr, "/api/v1/slotpools").await {
            if pools.iter().any(|p| p.metadata.name == POOL) {
                return Ok(());
            }
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

/// One repetition's figures for one workload and client count.
#[derive(Debug, Clone, Default)]
struct Figures {
    /// Requests per second (all request types).
    throughput: f64,
    /// Per request type: (p50, p99) in ms.
    latency: BTreeMap<Op, (f64, f64)>,
    /// Requests answered in the timed part.
    requests: usize,
    /// Acknowledged mutations looked up after the SIGKILL.
    checked: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir, BoxError> {
        let dir =
            std::env::temp_dir().join(format!("hearth-benchhttp-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Owner processes of the clients (killed on drop).
struct Owners(Vec<Child>);

impl Owners {
    /// `n` processes that live until dropped.
    fn spawn(n: usize) -> Result<Owners, BoxError> {
        let mut owners = Owners(Vec::new());
        for _ in 0..n {
            owners.0.push(
                Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .spawn()?,
            );
        }
        Ok(owners)
    }
}

impl Drop for Owners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn run_clients(
    addr: SocketAddr,
    token: Option<&str>,
    workload: Workload,
    stop: &Arc<AtomicBool>,
    owners: &Owners,
    record: &Arc<Mutex<Record>>,
    pause: Duration,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
    let mut tasks = Vec::new();
    for child in &owners.0 {
        let owner = controller::liveness::owner_of(child.id())?;
        tasks.push(tokio::spawn(client_loop(
            addr,
            token.map(String::from),
            workload,
            stop.clone(),
            owner,
            record.clone(),
            pause,
        )));
    }
    Ok(tasks)
}

/// One repetition: the timed part, then the durability check.
async fn measure(
    s: &Settings,
    store: StoreKind,
    workload: Workload,
    clients: usize,
    rep: usize,
) -> Result<Figures, BoxError> {
    let dir = TempDir::new(&format!("{store:?}-{workload:?}-{clients}-{rep}"))?;
    let prefix = format!(
        "hearth-bench/{}-{store:?}-{workload:?}-{clients}-{rep}",
        std::process::id()
    );
    let url = match store {
        StoreKind::Sled => None,
        StoreKind::Etcd => Some(format!("etcd://{}/{prefix}", s.etcd)),
    };
    let figures = measure_in(s, &dir, url.as_deref(), workload, clients, rep).await;
    if store == StoreKind::Etcd {
        // Leave the shared cluster as it was.
        let _ = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &s.etcd,
                "del",
                "--prefix",
                &format!("/{prefix}/"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    figures
}

async fn measure_in(
    s: &Settings,
    dir: &TempDir,
    url: Option<&str>,
    workload: Workload,
    clients: usize,
    rep: usize,
) -> Result<Figures, BoxError> {
    std::fs::write(
        dir.path().join("state.yml"),
        format!(
            "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {POOL}\nspec:\n  slots: {clients}\n  \
             portBase: 34000\n  portsPerSlot: 1\n  waitTimeout: 1m\n"
        ),
    )?;
    let label = format!("hearth-test-benchhttp-{}-{rep}", std::process::id());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut daemon = start_daemon(&s.hearth, dir.path(), addr, &label, url)?;
    wait_ready(&mut daemon).await?;
    // The bearer token the daemon keeps in its data directory, when it has one.
    let token = std::fs::read_to_string(dir.path().join("data/token"))
        .ok()
        .map(|t| t.trim().to_string());
    let owners = Owners::spawn(clients)?;

    let record: Arc<Mutex<Record>> = Arc::default();
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        let seconds = s.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let timed = run_clients(
        addr,
        token.as_deref(),
        workload,
        &stop,
        &owners,
        &record,
        Duration::ZERO,
    );
    for t in timed.await? {
        t.await?;
    }
    timer.await?;
    let elapsed = began.elapsed();
    let mut figures = Figures::default();
    {
        let r = Record::lock(&record);
        if !r.refusals.is_empty() {
            return Err(format!("requests refused: {:?}", r.refusals).into());
        }
        for (op, lat) in &r.latencies {
            let mut sorted = lat.clone();
            sorted.sort_unstable();
            figures.requests += sorted.len();
            figures
                .latency
                .insert(*op, (percentile(&sorted, 50.0), percentile(&sorted, 99.0)));
        }
    }
    figures.throughput = figures.requests as f64 / elapsed.as_secs_f64();

    // Durability: the clients go on; after 0.7 s they are told to send nothing more and the
    // daemon is SIGKILLed at once, under the requests still in flight; restart; look up. Here
    // clients pause 20 ms after each acknowledged slot request, so that at the kill some are
    // between requests with a known acknowledged state (one whose request was in flight
    // cannot be checked: either outcome is right).
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Duration::from_millis(20);
    // New owners: a slot client of the timed part may have stopped holding its slot.
    let owners = Owners::spawn(clients)?;
    let tasks = run_clients(
        addr,
        token.as_deref(),
        workload,
        &stop,
        &owners,
        &record,
        pause,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    drop(daemon);
    for t in tasks {
        t.await?;
    }
    let mut daemon = start_daemon(&s.hearth, dir.path(), addr, &label, url)?;
    wait_ready(&mut daemon).await?;
    let acknowledged = std::mem::take(&mut *Record::lock(&record));
    let (checked, lost) = check_durable(addr, workload, &acknowledged).await?;
    drop(daemon);
    if !lost.is_empty() {
        return Err(format!("acknowledged mutations lost after SIGKILL: {lost:?}").into());
    }
    figures.checked = checked;
    Ok(figures)
}

/// Looks every acknowledged mutation up in the restarted daemon: (checked, lost).
async fn check_durable(
    addr: SocketAddr,
    workload: Workload,
    record: &Record,
) -> Result<(usize, Vec<String>), BoxError> {
    let mut lost = Vec::new();
    let mut checked = 0;
    match workload {
        Workload::Runs => {
            let runs: Vec<Run> = get(addr, "/api/v1/runs").await?;
            let by_name: BTreeMap<&str, &Run> =
                runs.iter().map(|r| (r.metadata.name.as_str(), r)).collect();
            for (name, step) in &record.runs {
                checked += 1;
                let Some(r) = by_name.get(name.as_str()) else {
                    lost.push(format!("run {name} ({step:?} acknowledged) is gone"));
                    continue;
                };
                let kept = match step {
                    Op::Finish => r.status.phase == RunPhase::Succeeded,
                    Op::Report => r.status.tiers.iter().any(|t| t.name == "install"),
                    _ => !matches!(r.status.phase, RunPhase::Pending | RunPhase::Deploying),
                };
                if !kept {
                    lost.push(format!(
                        "run {name}: {step:?} acknowledged, now {:?}",
                        r.status.phase
                    ));
                }
            }
        }
        Workload::Slots => {
            let pools: Vec<SlotPool> = get(addr, "/api/v1/slotpools").await?;
            let pool = pools
                .iter()
                .find(|p| p.metadata.name == POOL)
                .ok_or("the bench pool is missing")?;
            for (pid, state) in &record.slots {
                if state.in_flight {
                    continue; // its last request's effect is unknown
                }
                checked += 1;
                let holds: Vec<u32> = pool
                    .status
                    .leases
                    .iter()
                    .filter(|l| l.owner.pid == *pid)
                    .map(|l| l.slot)
                    .collect();
                let want: Vec<u32> = state.held.into_iter().collect();
                if holds != want {
                    lost.push(format!(
                        "owner {pid}: acknowledged leases {want:?}, now {holds:?}"
                    ));
                }
            }
        }
    }
    Ok((checked, lost))
}

/// The peer's per-operation script (see the module docs). Arguments: DIR OP PID SLOTS; prints
/// the slot acquired; exits 3 when no slot is free.
const PEER_SCRIPT: &str = r#"set -eu
dir=$1 op=$2 pid=$3 slots=$4
exec 9>"$dir/lock"
flock 9
touch "$dir/leases"
if [ "$op" = acquire ]; then
  i=0
  while [ "$i" -lt "$slots" ]; do
    grep -q "^$i " "$dir/leases" || break
    i=$((i + 1))
  done
  [ "$i" -lt "$slots" ] || exit 3
  { cat "$dir/leases"; echo "$i $pid"; } > "$dir/leases.tmp"
  echo "$i"
else
  grep -v " $pid\$" "$dir/leases" > "$dir/leases.tmp" || true
fi
sync "$dir/leases.tmp"
mv "$dir/leases.tmp" "$dir/leases"
sync "$dir"
"#;

/// One repetition of the peer: `clients` concurrent loops of acquire + release through the
/// script for `seconds`; then the lease file is checked to be consistent (every client
/// released what it acquired: empty).
async fn measure_peer(clients: usize, seconds: u64, rep: usize) -> Result<Figures, BoxError> {
    let dir = TempDir::new(&format!("peer-{clients}-{rep}"))?;
    let script = dir.path().join("slot.sh");
    std::fs::write(&script, PEER_SCRIPT)?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let script = script.clone();
        let root = dir.path().to_path_buf();
        let pid = format!("{}", 100_000 + c);
        tasks.push(tokio::spawn(async move {
            let mut lat: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
            while Instant::now() < deadline {
                for (op, name) in [(Op::Acquire, "acquire"), (Op::Release, "release")] {
                    let t = Instant::now();
                    let out = tokio::process::Command::new("sh")
                        .arg(&script)
                        .arg(&root)
                        .arg(name)
                        .arg(&pid)
                        .arg(clients.to_string())
                        .output()
                        .await?;
                    if !out.status.success() {
                        return Err::<_, BoxError>(
                            format!(
                                "peer {name} failed: {}",
                                String::from_utf8_lossy(&out.stderr)
                            )
                            .into(),
                        );
                    }
                    lat.entry(op).or_default().push(t.elapsed());
                }
            }
            Ok(lat)
        }));
    }
    let mut all: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
    for t in tasks {
        for (op, mut l) in t.await?? {
            all.entry(op).or_default().append(&mut l);
        }
    }
    let elapsed = began.elapsed();
    let leases = std::fs::read_to_string(dir.path().join("leases"))?;
    if !leases.trim().is_empty() {
        return Err(format!("peer lease file not empty after every release: {leases:?}").into());
    }
    let mut figures = Figures::default();
    for (op, mut sorted) in all {
        sorted.sort_unstable();
        figures.requests += sorted.len();
        figures
            .latency
            .insert(op, (percentile(&sorted, 50.0), percentile(&sorted, 99.0)));
    }
    figures.throughput = figures.requests as f64 / elapsed.as_secs_f64();
    Ok(figures)
}

/// Prints the table rows of one workload × client count (medians over the repetitions).
fn print_rows(name: &str, clients: usize, all: &[Figures]) -> f64 {
    let t = spread(all.iter().map(|f| f.throughput).collect());
    let ops: Vec<Op> = all
        .first()
        .map(|f| f.latency.keys().copied().collect())
        .unwrap_or_default();
    for (i, op) in ops.into_iter().enumerate() {
        let p = |pick: fn(&(f64, f64)) -> f64| {
            spread(
                all.iter()
                    .filter_map(|f| f.latency.get(&op))
                    .map(pick)
                    .collect(),
            )
        };
        let (p50, p99) = (p(|l| l.0), p(|l| l.1));
        let head = if i == 0 {
            format!("| {name} | {clients} | {:.0} ({:.0}–{:.0})", t.0, t.1, t.2)
        } else {
            "| | |".to_string()
        };
        println!(
            "{head} | {op:?} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) |",
            p50.0, p50.1, p50.2, p99.0, p99.1, p99.2
        );
    }
    t.0
}

/// (median, min, max).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let s = settings()?;
    println!(
        "bench_http: {} reps × {} s per workload and client count, clients {:?}, stores {:?}, hearth {}",
        s.reps,
        s.seconds,
        s.clients,
        s.stores,
        s.hearth.display()
    );
    println!("| workload | clients | requests/s | request | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let mut slot_medians: BTreeMap<usize, f64> = BTreeMap::new();
    for workload in [Workload::Runs, Workload::Slots] {
        for &clients in &s.clients {
            // The stores take turns within each repetition: same load, same run.
            let mut all: BTreeMap<StoreKind, Vec<Figures>> = BTreeMap::new();
            for rep in 0..s.reps {
                for &store in &s.stores {
                    let f = measure(&s, store, workload, clients, rep).await?;
                    eprintln!(
                        "  {store:?} {workload:?} × {clients} rep {rep}: {:.0} req/s, {} requests, {} \
                         acknowledged states (runs or owners) found intact after SIGKILL, {:?}",
                        f.throughput, f.requests, f.checked, f.latency
                    );
                    all.entry(store).or_default().push(f);
                }
            }
            let mut medians = BTreeMap::new();
            for (store, figures) in &all {
                let name = match (workload, store) {
                    (Workload::Runs, StoreKind::Sled) => "runs: start, report, finish",
                    (Workload::Runs, StoreKind::Etcd) => "runs (etcd): start, report, finish",
                    (Workload::Slots, StoreKind::Sled) => "slots: acquire, release",
                    (Workload::Slots, StoreKind::Etcd) => "slots (etcd): acquire, release",
                };
                let median = print_rows(name, clients, figures);
                medians.insert(*store, median);
                if workload == Workload::Slots && *store == StoreKind::Sled {
                    slot_medians.insert(clients, median);
                }
            }
            if let (Some(etcd), Some(sled)) =
                (medians.get(&StoreKind::Etcd), medians.get(&StoreKind::Sled))
            {
                println!(
                    "| {workload:?}, etcd / sled throughput | {clients} | {:.2} | | | |",
                    etcd / sled
                );
            }
        }
    }
    if !s.stores.contains(&StoreKind::Sled) {
        return Ok(());
    }
    for &clients in &s.clients {
        let mut all = Vec::new();
        for rep in 0..s.reps {
            let f = measure_peer(clients, s.seconds, rep).await?;
            eprintln!(
                "  peer × {clients} rep {rep}: {:.0} req/s, {} requests, {:?}",
                f.throughput, f.requests, f.latency
            );
            all.push(f);
        }
        let median = print_rows("peer slots: sh + flock + fsync'd file", clients, &all);
        if let Some(h) = slot_medians.get(&clients) {
            println!(
                "| slots, hearth / peer throughput | {clients} | {:.2} | | | |",
                h / median
            );
        }
    }
    Ok(())
}
