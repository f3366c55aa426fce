//! Test resource types and engine backends shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use crd::{Kind, ObjectMeta, Resource};
use serde::{Deserialize, Serialize};
use state::{Config, Engine, MemoryEngine, SledEngine, Store};

/// A WarmApp-kinded test resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub metadata: ObjectMeta,
    pub spec: AppSpec,
    #[serde(default)]
    pub status: AppStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub phase: String,
}

impl App {
    pub fn new(name: &str, version: &str) -> App {
        App {
            metadata: ObjectMeta::named(name),
            spec: AppSpec {
                version: version.into(),
            },
            status: AppStatus::default(),
        }
    }
}

impl Resource for App {
    const KIND: Kind = Kind::WarmApp;
    type Spec = AppSpec;
    type Status = AppStatus;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &AppSpec {
        &self.spec
    }
    fn status(&self) -> &AppStatus {
        &self.status
    }
    fn status_mut(&mut self) -> &mut AppStatus {
        &mut self.status
    }
}

/// A Run-kinded test resource (a counter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub n: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub done: bool,
}

impl Job {
    pub fn new(name: &str, n: u64) -> Job {
        Job {
            metadata: ObjectMeta::named(name),
            spec: JobSpec { n },
            status: JobStatus::default(),
        }
    }
}

impl Resource for Job {
    const KIND: Kind = Kind::Run;
    type Spec = JobSpec;
    type Status = JobStatus;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &JobSpec {
        &self.spec
    }
    fn status(&self) -> &JobStatus {
        &self.status
    }
    fn status_mut(&mut self) -> &mut JobStatus {
        &mut self.status
    }
}

/// Where a conformance case's data lives. `engine()` called again after the previous store
/// was dropped is a "reopen" of the same data.
pub trait Backend: Send + Sync + 'static {
    fn engine(&self) -> Arc<dyn Engine>;
    /// Whether data survives the process (sled) or only the store (memory).
    fn durable(&self) -> bool;
}

pub struct MemoryBackend(MemoryEngine);

impl MemoryBackend {
    pub fn new() -> Self {
        MemoryBackend(MemoryEngine::new())
    }
}

impl Backend for MemoryBackend {
    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(self.0.clone())
    }
    fn durable(&self) -> bool {
        false
    }
}

pub struct SledBackend(tempfile::TempDir);

impl SledBackend {
    pub fn new() -> Self {
        SledBackend(tempfile::tempdir().expect("tempdir"))
    }
}

impl Backend for SledBackend {
    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(SledEngine::open(self.0.path().join("data")).expect("open sled engine"))
    }
    fn durable(&self) -> bool {
        true
    }
}

pub async fn open(backend: &dyn Backend, config: Config) -> Store {
    Store::with_engine(backend.engine(), config)
        .await
        .expect("open store")
}

/// The etcd cluster of the etcd engine's tests: `scripts/etcd.sh` (3 members on loopback),
/// or `HEARTH_ETCD_ENDPOINTS` (comma-separated `host:port`).
pub fn etcd_endpoints() -> String {
    std::env::var("HEARTH_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793".to_string())
}

/// Brings the test cluster up (once per process) with `scripts/etcd.sh up`. Under `CI=true`
/// a missing etcd fails the test; elsewhere it prints a loud SKIP and returns false.
pub fn etcd_available(test: &str) -> bool {
    static UP: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let up = UP.get_or_init(|| {
        if std::env::var("HEARTH_ETCD_ENDPOINTS").is_ok() {
            return Ok(());
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/etcd.sh");
        match std::process::Command::new("bash")
            .arg(script)
            .arg("up")
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    match up {
        Ok(()) => true,
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "CI=true and the etcd test cluster is unusable for {test}: {why} \
                 (scripts/testbed.sh installs etcd-server; scripts/etcd.sh up starts it)"
            );
            eprintln!("\n!!!!!! SKIP {test}: no etcd test cluster: {why}\n");
            false
        }
    }
}

/// A fresh prefix in the shared etcd test cluster per backend; "reopen" opens the same
/// prefix again (the previous engine has released its holder key when it was dropped).
pub struct EtcdBackend(String);

impl EtcdBackend {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        EtcdBackend(format!(
            "etcd://{}/hearth-test/{}-{nanos}-{n}/data",
            etcd_endpoints(),
            std::process::id()
        ))
    }

    pub fn config(&self) -> state::etcd_engine::Config {
        state::etcd_engine::Config::from_url(&self.0).expect("test etcd URL")
    }
}

impl Backend for EtcdBackend {
    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(state::EtcdEngine::open(self.config()).expect("open etcd engine"))
    }
    fn durable(&self) -> bool {
        true
    }
}

/// A TCP proxy to one etcd member that the test owns: `cut` drops every connection through it
/// and refuses new ones until `restore`, so a client behind it loses etcd while etcd and every
/// other client go on.
pub struct Proxy {
    addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the first endpoint of [`etcd_endpoints`], listening on a free loopback port.
    pub async fn start() -> Proxy {
        let upstream = etcd_endpoints()
            .split(',')
            .next()
            .expect("an etcd endpoint")
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let open = open.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Proxy {
            addr,
            open,
            conns,
            accept,
        }
    }

    /// `etcd://<proxy>/<prefix of config>`: the config with the proxy as its only endpoint.
    pub fn route(&self, mut config: state::etcd_engine::Config) -> state::etcd_engine::Config {
        config.endpoints = vec![format!("http://{}", self.addr)];
        config
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Runs `etcdctl` (API 3) against the test cluster; returns stdout.
pub fn etcdctl(args: &[&str]) -> String {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd_endpoints()])
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compacts the test cluster's history up to its current revision (every watcher that
/// resumes from an older revision is told it was compacted).
pub fn compact_etcd() -> i64 {
    let status = etcdctl(&["endpoint", "status", "-w", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&status).expect("endpoint status JSON");
    let revision = parsed[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("a revision in endpoint status");
    etcdctl(&["compact", &revision.to_string()]);
    revision
}
