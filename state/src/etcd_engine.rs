//! The etcd engine: the only module that imports etcd-client; durable once the etcd cluster commits, fenced by a lease-held lock.
//!
//! # Design
//! - **One holder at a time.** Opening takes the *holder key* (`<prefix>holder`) with a
//!   lease (`lease_ttl`, kept alive every third of it): a transaction that creates the key
//!   only if it does not exist. A second opener is refused
//!   ([`Error::LocationHeld`]) or, with [`EtcdEngine::campaign`], waits until the key is gone
//!   (holder closed, or its lease expired because it died or lost etcd).
//! - **Fenced writes.** Every write is one etcd transaction guarded by
//!   `create_revision(holder key) == ours`: once the lease expired (and perhaps another
//!   replica took the key) every later write of this holder fails in etcd itself, whatever
//!   this process believes. A failed write poisons the engine (every later write and flush
//!   fails) and [`EtcdEngine::lost`] resolves, so the owner steps down.
//! - **Reads from a mirror.** The holder is the only writer, so it keeps a full in-memory
//!   copy of its prefix (loaded at open, updated on apply). `get`/`scan` never touch the
//!   network and never block a tokio worker; `apply` updates the mirror and queues the batch.
//! - **Durable on flush.** A dedicated thread (own single-threaded tokio runtime, so the
//!   engine works the same from any caller) sends queued batches in order, merging what
//!   queued meanwhile into one transaction (group commit; last write per key wins, so a
//!   merged transaction has the same final state and stays all-or-nothing). `flush` resolves
//!   once every batch applied before it was acknowledged by etcd, i.e. committed by a quorum.
//!
//! - **Followers.** A process that does not hold the prefix can mirror it read-only
//!   ([`EtcdFollower`], `follow.rs`): loaded at one revision, then kept current by an etcd
//!   watch that resumes from the last revision it applied and reloads after a compaction. So
//!   that a follower can tell every object write apart, the writer never merges a batch that
//!   writes an object the transaction already writes, and sends a batch that deletes an object
//!   alone.
//!
//! Keys live under `<prefix>m/`, `<prefix>o/`, `<prefix>h/` (meta, objects, history).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::engine::{Engine, Entries, Error, KeyRange, Keyspace, Op, Order};
use crate::memory::MemoryEngine;

mod follow;
pub use follow::{EtcdFollower, FollowStatus, SILENCE};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/hearth/";
/// The default lease of the holder key: a holder that dies (or loses etcd) is replaced after
/// at most this long. Kubernetes' leader-election default is 15 s; the failover goal is 10 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// Keys read per request while loading the mirror.
const LOAD_PAGE: i64 = 1000;
/// Most distinct keys in one merged transaction: etcd's default `--max-txn-ops` is 128. A
/// single batch larger than this is sent alone (and needs a larger `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;
/// Most bytes of keys and values in one merged transaction (etcd's default request limit is
/// 1.5 MiB).
const MAX_TXN_BYTES: usize = 1024 * 1024;
/// How long one etcd request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP (and TLS) connect to one member may take: members are on the local network,
/// so a connect that takes longer means the member is gone (stopped node, partition).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one step of a campaign (read the key; grant a lease and take the key) may take on
/// one member before the campaign moves on to the next member.
const CAMPAIGN_STEP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a same-process holder that is still closing may keep the key when we reopen.
const SAME_PROCESS_GRACE: Duration = Duration::from_secs(5);
/// How long a closing holder tries to give its lease back (every member at once).
const GIVE_BACK_TIMEOUT: Duration = Duration::from_secs(3);
/// The reason [`EtcdEngine::lost`] gives when the engine was closed (not deposed).
pub const CLOSED: &str = "the etcd engine was closed";
/// How long a waiting campaign that was asked to defer ([`Defer`]) leaves a free holder key to
/// the other replicas before it takes the key itself (none of them did: it is alone).
const DEFER_AT_MOST: Duration = Duration::from_secs(2);

/// How to reach etcd and where hearth's data lives in it.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Client URLs (`http://host:port` or, with TLS, `https://host:port`).
    pub endpoints: Vec<String>,
    /// The key prefix; everything hearth stores lives under it.
    pub prefix: String,
    /// The holder key's lease.
    pub lease_ttl: Duration,
    /// CA bundle (PEM) that signed the etcd servers' certificates; enables TLS.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's client-certificate authentication.
    pub cert_file: Option<PathBuf>,
    /// See `cert_file`.
    pub key_file: Option<PathBuf>,
    /// etcd user (role-based access control).
    pub user: Option<String>,
    /// That user's password (never logged).
    pub password: Option<String>,
    /// Where this process serves hearth's API (written into the holder key so standbys can
    /// forward requests to the holder).
    pub api: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("api", &self.api)
            .finish()
    }
}

/// A store URL that is not `etcd://host:port[,host:port…][/prefix]`.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid etcd store URL {url:?}: {reason} (expected etcd://host:port[,host:port…][/prefix])"
)]
pub struct UrlRejected {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Config {
    /// Parses `etcd://host:port[,host:port…][/prefix]` (`etcds://` for TLS; TLS is also on
    /// when a CA file is set later). The prefix defaults to [`DEFAULT_PREFIX`].
    ///
    /// # Errors
    /// [`UrlRejected`] naming what is wrong.
    pub fn from_url(url: &str) -> Result<Config, UrlRejected> {
        let reject = |reason: &str| UrlRejected {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (true, rest)
        } else {
            return Err(reject("the scheme must be etcd:// or etcds://"));
        };
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, path)) if !path.is_empty() => {
                (hosts, format!("/{}/", path.trim_matches('/')))
            }
            Some((hosts, _)) => (hosts, DEFAULT_PREFIX.to_string()),
            None => (rest, DEFAULT_PREFIX.to_string()),
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let Some((name, port)) = host.rsplit_once(':') else {
                return Err(reject(&format!("{host:?} has no port")));
            };
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(reject(&format!("{host:?} is not host:port")));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        Ok(Config {
            endpoints,
            prefix,
            lease_ttl: DEFAULT_LEASE_TTL,
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            password: None,
            api: None,
        })
    }

    /// `etcd://a:1,b:2/prefix`, for messages.
    pub fn location(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h))
            .collect();
        format!(
            "etcd://{}{}",
            hosts.join(","),
            self.prefix.trim_end_matches('/')
        )
    }

    fn holder_key(&self) -> Vec<u8> {
        format!("{}holder", self.prefix).into_bytes()
    }

    fn space_prefix(&self, space: Keyspace) -> Vec<u8> {
        let tag = match space {
            Keyspace::Meta => "m/",
            Keyspace::Objects => "o/",
            Keyspace::History => "h/",
        };
        format!("{}{tag}", self.prefix).into_bytes()
    }
}

/// Who holds an etcd prefix, as written (JSON) into the holder key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The holder's host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Where it serves hearth's API, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

impl Holder {
    /// This process.
    pub fn this_process(api: Option<String>) -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".to_string());
        Holder {
            host,
            pid: std::process::id(),
            api,
        }
    }

    /// Reads a holder key's value (a value that is not ours is shown as text).
    fn parse(raw: &[u8]) -> Holder {
        serde_json::from_slice(raw).unwrap_or_else(|_| Holder {
            host: String::from_utf8_lossy(raw).into_owned(),
            pid: 0,
            api: None,
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)?;
        if let Some(api) = &self.api {
            write!(f, " (API {api})")?;
        }
        Ok(())
    }
}

/// What the holder of an etcd prefix knows about its own tenure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    /// The holder key's create revision: writes are fenced on it.
    pub revision: i64,
    /// The lease that keeps the holder key alive.
    pub lease: i64,
    /// What this holder wrote into the key.
    pub holder: Holder,
}

/// Whether the holder still holds the store *now*: until half a lease after its last
/// successful renewal, and never again once lost. Cheap (two atomics), so callers can check it
/// before every action outside etcd (the daemon does before every Docker write).
#[derive(Debug, Clone)]
pub struct Holds(Arc<HoldState>);

#[derive(Debug)]
struct HoldState {
    base: Instant,
    /// Milliseconds after `base` until which the holder may act.
    valid_until_ms: AtomicU64,
    lost: AtomicBool,
}

impl Holds {
    fn new(valid_until: Instant) -> Holds {
        let base = Instant::now();
        let h = Holds(Arc::new(HoldState {
            base,
            valid_until_ms: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        }));
        h.extend(valid_until);
        h
    }

    fn extend(&self, valid_until: Instant) {
        let ms = valid_until
            .saturating_duration_since(self.0.base)
            .as_millis();
        self.0.valid_until_ms.store(
            u64::try_from(ms).unwrap_or(u64::MAX),
            AtomicOrdering::SeqCst,
        );
    }

    fn lose(&self) {
        self.0.lost.store(true, AtomicOrdering::SeqCst);
    }

    /// Whether this process may still act as the holder.
    pub fn now(&self) -> bool {
        let elapsed = u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        !self.0.lost.load(AtomicOrdering::SeqCst)
            && elapsed < self.0.valid_until_ms.load(AtomicOrdering::SeqCst)
    }
}

/// The writer thread's progress, observed by `flush`.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every batch up to this sequence number is committed.
    durable: u64,
    /// Set once a write failed or the tenure was lost; the engine is poisoned.
    failed: Option<String>,
}

/// A batch of writes with etcd keys (`None`: delete).
type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

enum Command {
    Write(u64, Batch),
    Close,
}

/// The etcd engine. See the module documentation.
pub struct EtcdEngine {
    config: Config,
    tenure: Tenure,
    mirror: MemoryEngine,
    /// The sequence number of the last queued batch, and the queue (one lock keeps them in
    /// order).
    queue: Mutex<(u64, mpsc::UnboundedSender<Command>)>,
    progress: watch::Receiver<Progress>,
    holds: Holds,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EtcdEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdEngine")
            .field("location", &self.config.location())
            .field("tenure", &self.tenure)
            .finish_non_exhaustive()
    }
}

/// What the opening thread hands back.
struct Opened {
    tenure: Tenure,
    mirror: MemoryEngine,
    queue: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
    holds: Holds,
}

impl EtcdEngine {
    /// Connects, takes the holder key (refusing when another process holds it) and loads the
    /// mirror. Blocks the calling thread until then (startup only; safe inside a tokio runtime
    /// because the work runs on the engine's own thread).
    ///
    /// # Errors
    /// [`Error::LocationHeld`] naming the holder; [`Error::OperationFailed`] when etcd cannot
    /// be reached or refuses (authentication, TLS).
    pub fn open(config: Config) -> Result<EtcdEngine, Error> {
        let (tx, rx) = std_mpsc::channel();
        let thread = spawn(
            config.clone(),
            false,
            Box::new(|_| {}),
            Box::new(|| false),
            move |r| {
                let _ = tx.send(r);
            },
        )?;
        let opened = rx.recv().map_err(|_| Error::Closed)?;
        EtcdEngine::finish(config, thread, opened)
    }

    /// Like [`EtcdEngine::open`] but waits (asynchronously) while another holder has the key:
    /// leader election. Resolves once this process holds the key and the mirror is loaded;
    /// `observe` hears of every holder seen meanwhile. Dropping the future before it resolves
    /// leaves the engine thread to finish the attempt and close again.
    ///
    /// # Errors
    /// [`Error::OperationFailed`] when the TLS files cannot be read; an unreachable or failing
    /// etcd is retried.
    pub async fn campaign(config: Config, observe: Observer) -> Result<EtcdEngine, Error> {
        Self::campaign_deferring(config, observe, Box::new(|| false)).await
    }

    /// [`EtcdEngine::campaign`], asking `defer` whenever the holder key is free: while it says
    /// `true` (for at most 2 s from when the key was first seen free) this process leaves the
    /// key to the other replicas, then takes it itself if none did. hearth defers while its own
    /// node leads Swarm's raft, so that one node lost never takes both leaders at once.
    ///
    /// # Errors
    /// As [`EtcdEngine::campaign`].
    pub async fn campaign_deferring(
        config: Config,
        observe: Observer,
        defer: Defer,
    ) -> Result<EtcdEngine, Error> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let thread = spawn(config.clone(), true, observe, defer, move |r| {
            let _ = tx.send(r);
        })?;
        let opened = rx.await.map_err(|_| Error::Closed)?;
        EtcdEngine::finish(config, thread, opened)
    }

    fn finish(
        config: Config,
        thread: JoinHandle<()>,
        opened: Result<Opened, Error>,
    ) -> Result<EtcdEngine, Error> {
        match opened {
            Ok(o) => Ok(EtcdEngine {
                config,
                tenure: o.tenure,
                mirror: o.mirror,
                queue: Mutex::new((0, o.queue)),
                progress: o.progress,
                holds: o.holds,
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// This holder's tenure (revision and lease of the holder key).
    pub fn tenure(&self) -> &Tenure {
        &self.tenure
    }

    /// Whether this process still holds the store, checkable at any moment (see [`Holds`]).
    pub fn holds(&self) -> Holds {
        self.holds.clone()
    }

    /// Resolves with the reason once this engine can no longer write: a write was refused
    /// (fenced: another holder took over) or the lease could not be kept alive.
    pub fn lost(&self) -> BoxFuture<'static, String> {
        let mut rx = self.progress.clone();
        async move {
            match rx.wait_for(|p| p.failed.is_some()).await {
                Ok(p) => p.failed.clone().unwrap_or_default(),
                Err(_) => CLOSED.to_string(),
            }
        }
        .boxed()
    }

    fn failed(&self, op: &'static str, message: String) -> Error {
        Error::OperationFailed {
            location: self.config.location(),
            op,
            source: message.into(),
        }
    }
}

impl Drop for EtcdEngine {
    fn drop(&mut self) {
        {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = queue.1.send(Command::Close);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Engine for EtcdEngine {
    fn location(&self) -> String {
        self.config.location()
    }

    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.mirror.get(space, key)
    }

    fn scan(
        &self,
        space: Keyspace,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, Error> {
        self.mirror.scan(space, range, order, limit)
    }

    /// One batch of every keyspace's writes (full keys), so one etcd transaction: the writer
    /// never splits a batch.
    fn apply_all(&self, batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), Error> {
        if let Some(reason) = self.progress.borrow().failed.clone() {
            return Err(self.failed("write", reason));
        }
        let mut batch: Batch = Vec::new();
        for (space, ops) in &batches {
            let prefix = self.config.space_prefix(*space);
            let full = |k: &[u8]| [prefix.as_slice(), k].concat();
            batch.extend(ops.iter().map(|op| match op {
                Op::Put(k, v) => (full(k), Some(v.clone())),
                Op::Delete(k) => (full(k), None),
            }));
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        self.mirror.apply_all(batches)?;
        queue.0 += 1;
        let seq = queue.0;
        queue
            .1
            .send(Command::Write(seq, batch))
            .map_err(|_| Error::Closed)
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), Error>> {
        let target = self.queue.lock().unwrap_or_else(PoisonError::into_inner).0;
        let mut rx = self.progress.clone();
        let location = self.config.location();
        async move {
            let p = rx
                .wait_for(|p| p.durable >= target || p.failed.is_some())
                .await
                .map_err(|_| Error::Closed)?
                .clone();
            match p.failed {
                Some(reason) if p.durable < target => Err(Error::OperationFailed {
                    location,
                    op: "flush",
                    source: reason.into(),
                }),
                _ => Ok(()),
            }
        }
        .boxed()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.mirror.size_on_disk()
    }
}

/// Starts the engine thread; `reply` gets the result of opening.
fn spawn(
    config: Config,
    wait: bool,
    observe: Observer,
    defer: Defer,
    reply: impl FnOnce(Result<Opened, Error>) + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let location = config.location();
    std::thread::Builder::new()
        .name("hearth-etcd".to_string())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    reply(Err(operation_failed(&config, "start", e.to_string())));
                    return;
                }
            };
            runtime.block_on(run(config, wait, observe, defer, reply));
        })
        .map_err(|e| Error::OperationFailed {
            location,
            op: "start",
            source: Box::new(e),
        })
}

fn operation_failed(config: &Config, op: &'static str, message: String) -> Error {
    Error::OperationFailed {
        location: config.location(),
        op,
        source: message.into(),
    }
}

/// The engine thread: open, then write and keep the lease alive until closed.
async fn run(
    config: Config,
    wait: bool,
    observe: Observer,
    defer: Defer,
    reply: impl FnOnce(Result<Opened, Error>) + Send + 'static,
) {
    let (client, tenure, mirror, granted_at) = match open(&config, wait, &observe, &defer).await {
        Ok(x) => x,
        Err(e) => {
            reply(Err(e));
            return;
        }
    };
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let holds = Holds::new(granted_at + config.lease_ttl / 2);
    reply(Ok(Opened {
        tenure: tenure.clone(),
        mirror,
        queue: queue_tx,
        progress: progress_rx,
        holds: holds.clone(),
    }));
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        config.clone(),
        tenure.lease,
        granted_at,
        progress_tx.clone(),
        holds.clone(),
    ));
    write_loop(
        client.clone(),
        &config,
        &tenure,
        queue_rx,
        &progress_tx,
        &holds,
    )
    .await;
    keeper.abort();
    // Closing: give the key up at once so the next holder need not wait for the lease. Asked
    // of every member at once: when this process's node stops, its own member stops too and
    // its network goes soon after; one member after the other (each waited out) did not get
    // through in time (bench_failover: three timeouts of 1.5 s, then the lease ran out).
    // Retried while no member can do it: a member without an etcd leader (its leader was on
    // the stopping node too: a new election takes ~2 s here) answers "no leader" at once.
    let mut last = String::from("no member answered");
    let revoked = tokio::time::timeout(GIVE_BACK_TIMEOUT, async {
        loop {
            match client.revoke_anywhere(tenure.lease).await {
                Ok(member) => break member,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match revoked {
        Ok(member) => {
            tracing::info!(location = config.location(), %member, "gave the holder lease back");
        }
        Err(_) => tracing::warn!(
            location = config.location(),
            error = %last,
            "could not give the holder lease back within {GIVE_BACK_TIMEOUT:?}: the next holder waits for it to expire"
        ),
    }
}

/// Called with the current holder whenever a waiting campaign sees it change.
pub type Observer = Box<dyn Fn(Option<Holder>) + Send + 'static>;

/// Asked by a waiting campaign when the holder key is free: `true` leaves it to the other
/// replicas for a while ([`EtcdEngine::campaign_deferring`]).
pub type Defer = Box<dyn Fn() -> bool + Send + 'static>;

/// What one campaign step found.
enum Step {
    /// This process took the key: its tenure and when the lease was granted.
    Won(Tenure, Instant),
    /// Another process holds it.
    Held(Holder),
    /// The key is free and this process leaves it to the others for now.
    Deferred,
}

/// Connects, takes the holder key and loads the mirror. Returns when the lease was granted
/// too (the keep-alive deadline counts from then).
async fn open(
    config: &Config,
    wait: bool,
    observe: &Observer,
    defer: &Defer,
) -> Result<(Members, Tenure, MemoryEngine, Instant), Error> {
    let fail = |op: &'static str| {
        let config = config.clone();
        move |e: etcd_client::Error| operation_failed(&config, op, e.to_string())
    };
    let mut members = Members::new(config)?;
    if wait {
        members.warm_all().await;
    }
    let started = Instant::now();
    let holder = Holder::this_process(config.api.clone());
    let holder_json = serde_json::to_vec(&holder).unwrap_or_default();
    let ttl = i64::try_from(config.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let key = config.holder_key();
    let mut seen: Option<Option<Holder>> = None;
    // Since when a deferring campaign has seen the key free.
    let mut free_since: Option<Instant> = None;
    let (tenure, granted_at) = loop {
        let client = match members.client().await {
            Ok(c) => c,
            Err(e) if wait => {
                members.next(config, &e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(fail("connect")(e)),
        };
        let deferring = wait && free_since.is_none_or(|t| t.elapsed() < DEFER_AT_MOST) && defer();
        let attempt = async {
            if wait {
                // Waiting: only ask for a lease once the key is gone.
                let current = client.get(key.clone(), None).await?;
                if let Some(kv) = current.kvs().first() {
                    return Ok(Step::Held(Holder::parse(kv.value())));
                }
                if deferring {
                    return Ok(Step::Deferred);
                }
            }
            let granted_at = Instant::now();
            let lease = client.lease_grant(ttl, None).await?;
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    key.clone(),
                    holder_json.clone(),
                    Some(PutOptions::new().with_lease(lease.id())),
                )])
                .or_else(vec![TxnOp::get(key.clone(), None)]);
            let response = client.txn(txn).await?;
            if response.succeeded() {
                let revision = response.header().map_or(0, |h| h.revision());
                return Ok(Step::Won(
                    Tenure {
                        revision,
                        lease: lease.id(),
                        holder: holder.clone(),
                    },
                    granted_at,
                ));
            }
            let _ = client.lease_revoke(lease.id()).await;
            let current = response
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Holder::parse(kv.value())),
                    _ => None,
                })
                .unwrap_or_else(|| Holder {
                    host: "a holder that just left".to_string(),
                    pid: 0,
                    api: None,
                });
            Ok(Step::Held(current))
        };
        // A step that fails or hangs (a stopped or cut-off member: connect timeouts, or a
        // member without an etcd leader) moves the campaign to the next member at once, so a
        // takeover waits for the lease, not for one timeout per request on a dead member.
        let attempt = match tokio::time::timeout(CAMPAIGN_STEP_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {CAMPAIGN_STEP_TIMEOUT:?}"),
            ))),
        };
        let current = match attempt {
            Ok(Step::Won(tenure, granted_at)) => break (tenure, granted_at),
            Ok(Step::Held(current)) => {
                free_since = None;
                current
            }
            Ok(Step::Deferred) => {
                if free_since.is_none() {
                    tracing::info!(
                        location = config.location(),
                        "the store is free; leaving it to another replica for up to {DEFER_AT_MOST:?} (asked to defer)"
                    );
                    free_since = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) if wait => {
                members.next(config, &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(fail("take the holder key")(e)),
        };
        let closing_here = current.pid == holder.pid
            && current.host == holder.host
            && started.elapsed() < SAME_PROCESS_GRACE;
        if !wait && !closing_here {
            return Err(Error::LocationHeld {
                location: config.location(),
                holder: current.to_string(),
            });
        }
        if wait && seen.as_ref() != Some(&Some(current.clone())) {
            tracing::info!(location = config.location(), holder = %current, "standing by: another process holds the store");
            observe(Some(current.clone()));
            seen = Some(Some(current));
        }
        tokio::time::sleep(Duration::from_millis(if wait { 200 } else { 20 })).await;
    };
    tracing::info!(
        location = config.location(),
        revision = tenure.revision,
        "took the holder key; loading the mirror"
    );
    // Loaded from the member that just answered (it is up and has an etcd leader); a member
    // failing meanwhile moves the load to the next one.
    let mirror = load_all(&mut members, config).await?;
    tracing::info!(
        location = config.location(),
        revision = tenure.revision,
        "etcd store opened; this process holds it"
    );
    Ok((members, tenure, mirror, granted_at))
}

fn connect_options(config: &Config) -> Result<ConnectOptions, Error> {
    // require_leader: a member cut off from its peers answers "no leader" at once instead of
    // holding the request until it times out.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    let tls_wanted = config.ca_file.is_some()
        || config.cert_file.is_some()
        || config.endpoints.iter().any(|e| e.starts_with("https://"));
    if tls_wanted {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                operation_failed(config, "read TLS file", format!("{}: {e}", path.display()))
            })
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(operation_failed(
                    config,
                    "configure TLS",
                    "a client certificate needs both the certificate and the key file".into(),
                ))
            }
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// One client per etcd member, used one at a time.
///
/// etcd-client's own client balances every request over all endpoints, so after a member
/// stopped or was cut off, requests kept going to it and each waited out a timeout (3 s
/// connect timeouts, seen in the standbys' logs of the failover benchmark). Here a request
/// that fails (or a caller's step that times out) moves to the next member with
/// [`Members::next`], and the next requests stay on the member that answers.
#[derive(Clone)]
struct Members {
    endpoints: Vec<String>,
    options: ConnectOptions,
    clients: Vec<Option<Client>>,
    at: usize,
}

impl Members {
    fn new(config: &Config) -> Result<Self, Error> {
        if config.endpoints.is_empty() {
            return Err(operation_failed(
                config,
                "connect",
                "no etcd endpoint".into(),
            ));
        }
        Ok(Self {
            endpoints: config.endpoints.clone(),
            options: connect_options(config)?,
            clients: vec![None; config.endpoints.len()],
            at: 0,
        })
    }

    /// The current member's client, connected on first use.
    async fn client(&mut self) -> Result<&mut Client, etcd_client::Error> {
        let at = self.at % self.clients.len().max(1);
        let slot = self
            .clients
            .get_mut(at)
            .ok_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoint".into()))?;
        if slot.is_none() {
            let endpoint = [self.endpoints[at].as_str()];
            *slot = Some(Client::connect(endpoint, Some(self.options.clone())).await?);
        }
        slot.as_mut()
            .ok_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoint".into()))
    }

    /// Opens a connection to every member (one status request each, a member that does not
    /// answer within a campaign step is skipped); the connections are kept alive from then on.
    /// A leader whose node stops gives its lease back through another member, and opening a
    /// connection then would need a name lookup that the stopping node may no longer answer
    /// (Docker's embedded DNS lives in the node's dockerd).
    async fn warm_all(&mut self) {
        for at in 0..self.clients.len() {
            let endpoint = self.endpoints[at].clone();
            let options = self.options.clone();
            let slot = &mut self.clients[at];
            let warmed = tokio::time::timeout(CAMPAIGN_STEP_TIMEOUT, async {
                if slot.is_none() {
                    *slot = Some(Client::connect([endpoint.as_str()], Some(options)).await?);
                }
                if let Some(client) = slot.as_mut() {
                    client.status().await?;
                }
                Ok::<(), etcd_client::Error>(())
            })
            .await;
            if !matches!(warmed, Ok(Ok(()))) {
                tracing::info!(member = %endpoint, "etcd member not answering yet; connecting on first use");
            }
        }
    }

    /// Revokes `lease` through every member at once; the member that did it first, or the
    /// last error when none could.
    async fn revoke_anywhere(&self, lease: i64) -> Result<String, String> {
        let attempts = self
            .endpoints
            .iter()
            .zip(&self.clients)
            .map(|(endpoint, client)| {
                let endpoint = endpoint.clone();
                let client = client.clone();
                let options = self.options.clone();
                Box::pin(async move {
                    let mut client = match client {
                        Some(c) => c,
                        None => Client::connect([endpoint.as_str()], Some(options))
                            .await
                            .map_err(|e| format!("{endpoint}: {e}"))?,
                    };
                    match client.lease_revoke(lease).await {
                        Ok(_) => Ok(endpoint.clone()),
                        // Gone already (it ran out, or was revoked behind this holder's
                        // back): nothing to give back.
                        Err(e) if e.to_string().contains("requested lease not found") => {
                            Ok(format!("{endpoint} (the lease was gone already)"))
                        }
                        Err(e) => Err(format!("{endpoint}: {e}")),
                    }
                })
            });
        futures::future::select_ok(attempts)
            .await
            .map(|(member, _)| member)
    }

    /// The current member failed: use the next one from now on.
    fn next(&mut self, config: &Config, error: &dyn std::fmt::Display) {
        let from = self.endpoints.get(self.at).cloned().unwrap_or_default();
        self.at = (self.at + 1) % self.endpoints.len().max(1);
        tracing::warn!(
            location = config.location(),
            member = %from,
            next = %self.endpoints.get(self.at).map_or("", String::as_str),
            %error,
            "etcd member failed; using the next one"
        );
    }
}

/// Reads every keyspace into a new mirror; a member failing moves the load to the next one
/// (each member tried once).
async fn load_all(members: &mut Members, config: &Config) -> Result<MemoryEngine, Error> {
    let mut tries = members.endpoints.len();
    loop {
        let attempt = async {
            let client = members
                .client()
                .await
                .map_err(|e| operation_failed(config, "connect", e.to_string()))?;
            let mirror = MemoryEngine::new();
            for space in Keyspace::ALL {
                load(client, config, space, &mirror).await?;
            }
            Ok::<_, Error>(mirror)
        };
        match attempt.await {
            Ok(mirror) => return Ok(mirror),
            Err(e) if tries > 1 => {
                tries -= 1;
                members.next(config, &e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads one keyspace into the mirror, a page at a time.
async fn load(
    client: &mut Client,
    config: &Config,
    space: Keyspace,
    mirror: &MemoryEngine,
) -> Result<(), Error> {
    let prefix = config.space_prefix(space);
    let end = prefix_end(&prefix);
    let mut from = prefix.clone();
    loop {
        let response = client
            .get(
                from.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(LOAD_PAGE),
                ),
            )
            .await
            .map_err(|e| operation_failed(config, "read", e.to_string()))?;
        let kvs = response.kvs();
        let ops: Vec<Op> = kvs
            .iter()
            .filter_map(|kv| {
                kv.key()
                    .strip_prefix(prefix.as_slice())
                    .map(|k| Op::Put(k.to_vec(), kv.value().to_vec()))
            })
            .collect();
        mirror.apply(space, ops)?;
        match kvs.last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// The smallest key above every key starting with `prefix` (prefixes here are ASCII).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Sends queued batches in order, merging what queued meanwhile, until closed.
async fn write_loop(
    mut client: Members,
    config: &Config,
    tenure: &Tenure,
    mut queue: mpsc::UnboundedReceiver<Command>,
    progress: &watch::Sender<Progress>,
    holds: &Holds,
) {
    let fence = Compare::create_revision(config.holder_key(), CompareOp::Equal, tenure.revision);
    let mut carry: Option<(u64, Batch)> = None;
    let mut closing = false;
    loop {
        let first = match carry.take() {
            Some(b) => b,
            None if closing => return,
            None => match queue.recv().await {
                Some(Command::Write(seq, batch)) => (seq, batch),
                Some(Command::Close) | None => return,
            },
        };
        // Merge: last write per key wins; stop before the transaction grows too large. So
        // that a follower sees every object write (follow.rs), a batch is not merged when it
        // writes an object the transaction already writes, and a batch that deletes an object
        // goes alone (a deletion's revision is only known from the revision counter).
        let objects = config.space_prefix(Keyspace::Objects);
        let counter = [objects.as_slice(), crate::keys::REVISION].concat();
        let is_object = |k: &Vec<u8>| k.starts_with(&objects) && *k != counter;
        let deletes_object = |b: &Batch| b.iter().any(|(k, v)| v.is_none() && is_object(k));
        let mut last_seq = first.0;
        let alone = deletes_object(&first.1);
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = first.1.into_iter().collect();
        let mut bytes: usize = merged.iter().map(entry_bytes).sum();
        while let Ok(command) = queue.try_recv() {
            match command {
                Command::Write(seq, batch) => {
                    let extra_keys = batch
                        .iter()
                        .filter(|(k, _)| !merged.contains_key(k))
                        .count();
                    let extra_bytes: usize = batch.iter().map(|(k, v)| entry_bytes((k, v))).sum();
                    let overlaps = batch
                        .iter()
                        .any(|(k, _)| is_object(k) && merged.contains_key(k));
                    if alone
                        || overlaps
                        || deletes_object(&batch)
                        || merged.len() + extra_keys > MAX_TXN_OPS
                        || bytes + extra_bytes > MAX_TXN_BYTES
                    {
                        carry = Some((seq, batch));
                        break;
                    }
                    merged.extend(batch);
                    bytes += extra_bytes;
                    last_seq = seq;
                }
                Command::Close => {
                    closing = true;
                    break;
                }
            }
        }
        if progress.borrow().failed.is_some() {
            continue; // poisoned: drain without writing
        }
        let ops: Vec<TxnOp> = merged
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            })
            .collect();
        match commit(&mut client, config, fence.clone(), ops).await {
            Ok(()) => progress.send_modify(|p| p.durable = last_seq),
            Err(reason) => {
                tracing::error!(location = config.location(), %reason, "etcd write failed; this holder stops writing");
                holds.lose();
                progress.send_modify(|p| p.failed = Some(reason));
            }
        }
    }
}

fn entry_bytes((k, v): (&Vec<u8>, &Option<Vec<u8>>)) -> usize {
    k.len() + v.as_ref().map_or(0, Vec::len)
}

/// One fenced transaction; transport errors are retried for up to a lease period (the
/// writes are idempotent: the same final values under the same fence).
async fn commit(
    members: &mut Members,
    config: &Config,
    fence: Compare,
    ops: Vec<TxnOp>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let txn = Txn::new().when(vec![fence.clone()]).and_then(ops.clone());
        let result = match members.client().await {
            Ok(client) => client.txn(txn).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) if r.succeeded() => return Ok(()),
            Ok(_) => {
                return Err(format!(
                    "write refused: this process no longer holds {}",
                    String::from_utf8_lossy(&config.holder_key())
                ))
            }
            Err(e) if started.elapsed() < config.lease_ttl && retryable(&e) => {
                tracing::warn!(location = config.location(), error = %e, "etcd write failed; retrying");
                members.next(config, &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("etcd write failed: {e}")),
        }
    }
}

/// Errors worth retrying: the cluster is electing a leader or a member is unreachable.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        // gRPC codes Unknown (2), DeadlineExceeded (4), Unavailable (14): etcd answers
        // "leader changed" / "request timed out" with these while electing.
        etcd_client::Error::GRpcStatus(s) => matches!(s.code() as i32, 2 | 4 | 14),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Keeps the holder key's lease alive; marks the engine lost when it cannot.
///
/// # Guarantees
/// etcd expires the lease no earlier than `ttl` after it processed the last renewal, which is
/// after we sent it. This holder gives up at half the TTL after sending the last renewal that
/// succeeded, so it has stopped (and its owner was told) at least `ttl / 2` before any other
/// process can take the key. Renewals go out every quarter of the TTL.
async fn keep_alive(
    mut client: Members,
    config: Config,
    lease: i64,
    granted_at: Instant,
    progress: watch::Sender<Progress>,
    holds: Holds,
) {
    let ttl = config.lease_ttl;
    let mut renewed_at = granted_at;
    let mut channel = None;
    let reason = loop {
        let give_up_at = renewed_at + ttl / 2;
        let sent = Instant::now();
        if sent >= give_up_at {
            break format!("the holder lease was not renewed within {:?}", ttl / 2);
        }
        // One member gets at most a third of the time left, so a renewal stuck on a dead
        // member moves to the next one while the lease can still be saved.
        let step_end = (sent + (give_up_at - sent) / 3).max(sent + CONNECT_TIMEOUT);
        let step_end = step_end.min(give_up_at);
        let attempt = tokio::time::timeout_at(
            tokio::time::Instant::from_std(step_end),
            renew(&mut client, lease, &mut channel),
        )
        .await;
        match attempt {
            Ok(Ok(left)) if left > 0 => {
                renewed_at = sent;
                holds.extend(sent + ttl / 2);
                tokio::time::sleep(ttl / 4).await;
            }
            Ok(Ok(_)) => break "the holder lease expired".to_string(),
            Ok(Err(e)) => {
                tracing::warn!(location = config.location(), error = %e, "lease renewal failed; retrying");
                client.next(&config, &e);
                channel = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) if Instant::now() < give_up_at => {
                tracing::warn!(
                    location = config.location(),
                    "lease renewal timed out; retrying"
                );
                client.next(&config, &"lease renewal timed out");
                channel = None;
            }
            Err(_) => break format!("the holder lease was not renewed within {:?}", ttl / 2),
        }
    };
    holds.lose();
    lose(&progress, reason);
}

type KeepAliveChannel = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// One renewal; returns the TTL etcd granted (0: the lease is gone).
async fn renew(
    members: &mut Members,
    lease: i64,
    channel: &mut Option<KeepAliveChannel>,
) -> Result<i64, etcd_client::Error> {
    if channel.is_none() {
        *channel = Some(members.client().await?.lease_keep_alive(lease).await?);
    }
    let Some((keeper, stream)) = channel.as_mut() else {
        return Err(etcd_client::Error::LeaseKeepAliveError("no channel".into()));
    };
    keeper.keep_alive().await?;
    match stream.message().await? {
        Some(r) => Ok(r.ttl()),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "the keep-alive stream ended".into(),
        )),
    }
}

fn lose(progress: &watch::Sender<Progress>, reason: String) {
    tracing::error!(%reason, "this process lost the etcd store");
    progress.send_modify(|p| {
        if p.failed.is_none() {
            p.failed = Some(reason);
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_should_parse_hosts_and_prefix() {
        let c = Config::from_url("etcd://a:2379,b:2379").unwrap();
        assert_eq!(c.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.prefix, "/hearth/");
        assert_eq!(c.location(), "etcd://a:2379,b:2379/hearth");
        let c = Config::from_url("etcds://10.0.0.1:2379/teams/ci").unwrap();
        assert_eq!(c.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(c.prefix, "/teams/ci/");
        assert_eq!(c.holder_key(), b"/teams/ci/holder");
        assert_eq!(c.space_prefix(Keyspace::Objects), b"/teams/ci/o/");
    }

    #[test]
    fn bad_urls_should_say_what_is_wrong() {
        let e = Config::from_url("http://a:1").unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
        let e = Config::from_url("etcd://a").unwrap_err();
        assert!(e.to_string().contains("\"a\" has no port"), "{e}");
        let e = Config::from_url("etcd://a:x").unwrap_err();
        assert!(e.to_string().contains("not host:port"), "{e}");
    }

    #[test]
    fn passwords_should_not_be_printed() {
        let mut c = Config::from_url("etcd://a:1").unwrap();
        c.password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn prefix_end_should_bound_the_prefix() {
        assert_eq!(prefix_end(b"/h/o/"), b"/h/o0");
    }
}
