//! `hearth serve`: the daemon — store, Docker, state file, WarmApp controller and a local read/apply HTTP endpoint, started step by step.
//!
//! [`run`] is what the binary calls; [`start`] is the same daemon with the swarm and prober
//! given by the caller (tests run it in-process against the real swarm with a counting
//! wrapper). Startup is narrated in the log, one line per step:
//!
//! 1. open the store in the data directory (sled: one process per directory — a second
//!    daemon on the same directory stops here with a clear error);
//! 2. connect to Docker and negotiate the API version ([`run`] only);
//! 3. open the recipe catalogue;
//! 4. load the state file (a rejected file changes nothing: logged, counted in
//!    `hearth_state_file_rejections_total`, recorded as `Rejected` in the history) and watch
//!    its directory for edits;
//! 5. listen on the local HTTP API (`127.0.0.1:7433` by default; see [`http`]) — how
//!    `hearth get` and `hearth apply` talk to a running daemon, since it holds the store.
//!    Mutations need the bearer token of `--token-file`, else of `<data-dir>/token`
//!    (created with a random token, mode 0600, on first start), or a named token of the
//!    tokens file with the route's scope (see [`crate::access`]);
//! 6. run the WarmApp controller until SIGINT/SIGTERM (in-flight reconciles finish; a
//!    second signal stops at once).
//!
//! Every stack the daemon deploys carries `hearth.instance=<id>`, an ID drawn once per data
//! directory: a deleted (pruned) warm app's stack is torn down only if it carries this ID, so
//! a daemon never removes warm-app stacks that another hearth deployed on the same host.

mod ci;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crd::names::BaseDomain;
use metrics::Metrics;
use state::Store;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::access::admin_token as auth;
use crate::catalogue::DirCatalogue;
use crate::http;
use crate::promote::Promoter;
use crate::runtime::workers::{Board, Supervisor};
use crate::runtime::{self, Controller, Handle, Shutdown, Stopped};
use crate::stack::{ApplyOptions, ObservationCache, TeardownOptions};
use crate::statefile;
use crate::swarm::{DockerOptions, DockerSwarm, LabelFilter, Labels, MeteredSwarm, Swarm};
use crate::warmapp::probe::{GatewayProber, Prober};
use crate::warmapp::INSTANCE_KEY;
use crate::warmapp::{Context, TokioClock, WarmAppReconciler};

/// The default local endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";

/// The default base domain of derived domains.
pub const DEFAULT_BASE_DOMAIN: &str = "hearth.localhost";

/// How long one HTTP/TCP probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The data directory when none is given: `$HEARTH_DATA_DIR`, else `$XDG_DATA_HOME/hearth`,
/// else `/var/lib/hearth` for root (`$HOME` is `/root` or unset), else
/// `$HOME/.local/share/hearth`.
pub fn default_data_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = var("HEARTH_DATA_DIR") {
        return dir.into();
    }
    if let Some(xdg) = var("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("hearth");
    }
    match var("HOME") {
        Some(home) if home != "/root" => PathBuf::from(home).join(".local/share/hearth"),
        _ => PathBuf::from("/var/lib/hearth"),
    }
}

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The operator state file to load and follow.
    pub state_file: Option<PathBuf>,
    /// Delete objects removed from the state file.
    pub prune: bool,
    /// The data directory (the store).
    pub data_dir: PathBuf,
    /// The recipe catalogue directory.
    pub catalogue: PathBuf,
    /// The Docker socket.
    pub docker_socket: PathBuf,
    /// Every warm app is reconciled at least this often.
    pub resync: Duration,
    /// Where the local HTTP endpoint listens (`None`: no endpoint).
    pub listen: Option<SocketAddr>,
    /// Base of derived domains.
    pub base_domain: BaseDomain,
    /// Extra labels on every object hearth deploys (e.g. `hearth.test=1`).
    pub extra_labels: Labels,
    /// The bearer token file for mutations (`None`: `<data_dir>/token`, created if missing).
    pub token_file: Option<PathBuf>,
    /// Named, scoped tokens and who may read (issue 19).
    pub access: AccessOptions,
    /// The nightly sweep prunes only dangling images carrying all these labels
    /// (`--nightly-prune-label`); empty: every dangling image no service or container uses.
    pub nightly_prune_labels: Labels,
    /// Engine endpoints of other swarm nodes (`--node-endpoint`), where teardowns remove the
    /// stacks' containers and volumes.
    pub node_endpoints: crate::stack::NodeDaemons,
}

/// Who may do what (see [`crate::access`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// The tokens file (`--tokens-file`; `None`: `<data_dir>/tokens`, no named tokens while it
    /// does not exist). Followed: an edit is in force without a restart.
    pub tokens_file: Option<PathBuf>,
    /// Reads without a token even off loopback (`--public-reads`).
    pub public_reads: bool,
}

/// The nightly sweep's schedule (`--nightly`, `--nightly-tz`, `--nightly-jitter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NightlyOptions {
    /// A five-field cron expression, e.g. `0 3 * * *`.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Berlin`.
    pub tz: String,
    /// Up to this much spread after each window (deterministic per window and data directory).
    pub jitter: Duration,
}

/// Daemon errors. None is retried: the daemon stops and the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory is held by another process.
    #[error(
        "{0}; another hearth is running on it (sled allows one process per data directory): \
         stop it, or use `hearth get`/`hearth apply` which talk to it, or pass another --data-dir"
    )]
    StoreLocked(#[source] state::Error),
    /// The store could not be opened.
    #[error("cannot open the store in {path}")]
    StoreUnopenable {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: state::Error,
    },
    /// The etcd store could not be opened after this replica became the leader.
    #[error("cannot open the etcd store")]
    EtcdUnusable(#[source] state::Error),
    /// Standing by for the etcd store failed (endpoint, TLS files).
    #[error(transparent)]
    StandbyFailed(#[from] crate::leader::Error),
    /// This replica lost the etcd store (its lease ran out, or a write was refused because
    /// another replica holds it): it stopped at once and exits; restarted, it stands by.
    #[error("this replica lost the leadership of the etcd store: {0}")]
    LeadershipLost(String),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDirUncreatable {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Docker could not be reached.
    #[error("cannot connect to docker at {socket}")]
    DockerUnreachable {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: crate::swarm::Error,
    },
    /// Docker is reachable but not an active swarm manager.
    #[error("docker is not an active swarm manager (swarm state: {0}); run `docker swarm init` (or scripts/testbed.sh)")]
    SwarmInactive(String),
    /// The catalogue directory could not be opened.
    #[error("cannot open the recipe catalogue")]
    CatalogueUnopenable(#[source] crate::catalogue::Error),
    /// The state file's directory could not be watched.
    #[error("cannot follow the state file")]
    StateFileUnwatchable(#[source] statefile::Error),
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {addr}")]
    ListenFailed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics registry could not be built (a bug).
    #[error("cannot build the metrics registry")]
    MetricsFailed(#[source] metrics::Error),
    /// This host's identity (boot id, hostname) could not be read for owner liveness checks.
    #[error("cannot read this host's identity for owner liveness checks")]
    HostUnidentified(#[source] crate::liveness::Error),
    /// The API token could not be read or created.
    #[error("cannot set up the API token")]
    TokenFailed(#[source] auth::Error),
    /// The tokens file could not be read (or was rejected) or watched.
    #[error("cannot set up the API's tokens")]
    TokensFailed(#[source] crate::access::Error),
    /// A signal handler could not be installed.
    #[error("cannot install signal handlers")]
    SignalsFailed(#[source] std::io::Error),
    /// The nightly schedule (cron expression or time zone) is invalid.
    #[error("the nightly schedule is invalid")]
    NightlyRejected(#[source] crate::nightly::schedule::Error),
}

/// A started daemon.
pub struct Running {
    /// The store it holds.
    pub store: Store,
    /// Its metrics.
    pub metrics: Metrics,
    /// Where the HTTP endpoint listens (the bound address, if one was asked for).
    pub http_addr: Option<SocketAddr>,
    /// The file holding the API's bearer token (when the endpoint listens).
    pub token_file: Option<PathBuf>,
    /// The tokens file the daemon follows (when the endpoint listens).
    pub tokens_file: Option<PathBuf>,
    /// The controller's handle (gauges, manual triggers).
    pub handle: Handle,
    /// Every background worker's status.
    pub workers: Board,
    shutdown: Shutdown,
    controller: JoinHandle<Stopped>,
    runs_controller: JoinHandle<Stopped>,
    supervisor: Supervisor,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Its promotions' background tasks are stopped and awaited last (runs, workers and API
    /// requests may still submit promotions until they stop).
    promoter: Promoter,
    /// Its slots (the API's and the runs'): the withdrawals of waits the API's stop cancelled
    /// are awaited.
    slots: Vec<crate::slots::Slots>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Waits until `shutdown` stopped the controller, then stops the other tasks, each
    /// awaited by name. The store is released when the returned value and every clone of
    /// `store` are dropped.
    pub async fn wait(self) -> Stopped {
        let stopped = match self.controller.await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "controller task ended abnormally");
                Stopped::Aborted
            }
        };
        self.shutdown.stop_gracefully();
        // In-flight starts and teardowns finish (a second signal aborts them).
        match self.runs_controller.await {
            Ok(s) => info!(task = "runs", stopped = ?s, "stopped"),
            Err(e) => warn!(task = "runs", error = %e, "ended abnormally"),
        }
        self.supervisor.join().await;
        // The API ends on the graceful stop by itself, within its grace period
        // (`http::SHUTDOWN_GRACE`), and closes its connections first; aborted instead, it
        // would drop their tasks unawaited, each holding the store. A forced stop aborts.
        for (name, mut task) in self.tasks {
            let ended = tokio::select! {
                ended = &mut task => ended,
                () = self.shutdown.force.cancelled() => {
                    task.abort();
                    task.await
                }
            };
            match ended {
                Ok(()) => info!(task = name, "stopped"),
                Err(e) if e.is_cancelled() => info!(task = name, "stopped"),
                Err(e) => warn!(task = name, error = %e, "ended abnormally"),
            }
        }
        // The API's connections are closed by now: a slot wait they cancelled leaves the
        // line in a task of its own, which holds the store.
        for slots in &self.slots {
            slots.settle().await;
        }
        info!(task = "slot withdrawals", "stopped");
        self.promoter.stop().await;
        info!(task = "promotions", "stopped");
        info!(?stopped, "hearth stopped");
        stopped
    }
}

/// Opens the store in `dir`, creating the directory.
///
/// # Errors
/// [`Error::StoreLocked`] when another process holds it; [`Error::StoreUnopenable`],
/// [`Error::DataDirUncreatable`].
pub async fn open_store(dir: &Path) -> Result<Store, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::DataDirUncreatable {
        path: dir.to_path_buf(),
        source,
    })?;
    match Store::open(dir).await {
        Ok(store) => Ok(store),
        Err(e @ state::Error::EngineFailed(state::engine::Error::DirectoryInUse { .. })) => {
            Err(Error::StoreLocked(e))
        }
        Err(source) => Err(Error::StoreUnopenable {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Connects to Docker at `socket` and checks it manages an active swarm.
///
/// # Errors
/// [`Error::DockerUnreachable`], [`Error::SwarmInactive`].
pub async fn connect(socket: &Path) -> Result<DockerSwarm, Error> {
    let unreachable = |source| Error::DockerUnreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let swarm = DockerSwarm::connect(DockerOptions {
        socket: socket.to_path_buf(),
        ..DockerOptions::default()
    })
    .await
    .map_err(unreachable)?;
    let info = swarm.info().await.map_err(unreachable)?;
    if !info.is_active_manager() {
        return Err(Error::SwarmInactive(info.local_node_state));
    }
    Ok(swarm)
}

/// `hearth serve`: connects to Docker, starts the daemon, and runs it until SIGINT/SIGTERM.
///
/// # Errors
/// Any startup [`Error`].
pub async fn run(options: Options, nightly: Option<NightlyOptions>) -> Result<Stopped, Error> {
    run_with_managers(options, nightly, Vec::new()).await
}

/// [`run`] with the sockets of other swarm managers to fail over to
/// ([`crate::swarm::FailoverSwarm`]): `options.docker_socket` first, then `managers` in order.
///
/// # Errors
/// Any startup [`Error`].
pub async fn run_with_managers(
    options: Options,
    nightly: Option<NightlyOptions>,
    managers: Vec<PathBuf>,
) -> Result<Stopped, Error> {
    run_with_store(options, nightly, managers, StoreLocation::Sled).await
}

/// Where the daemon keeps its store.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// sled in the data directory (the default; one process per directory).
    Sled,
    /// An etcd cluster (`--store etcd://…`): replicas elect a leader, which runs the daemon;
    /// the others stand by ([`crate::leader`]).
    Etcd(Box<state::etcd_engine::Config>),
}

/// [`run_with_managers`] with the store in `location`.
///
/// # Errors
/// Any startup [`Error`]; [`Error::LeadershipLost`] when an etcd leader was deposed.
pub async fn run_with_store(
    options: Options,
    nightly: Option<NightlyOptions>,
    managers: Vec<PathBuf>,
    location: StoreLocation,
) -> Result<Stopped, Error> {
    info!(version = env!("CARGO_PKG_VERSION"), "hearth serve starting");
    let shutdown = Shutdown::new();
    let signals = runtime::signals::os_signals().map_err(Error::SignalsFailed)?;
    let follower = shutdown.clone();
    tokio::spawn(async move { follower.follow(signals).await });
    // The store comes first: a second daemon on the same directory stops before touching
    // Docker, and an etcd replica stands by here until it leads.
    let mut lost = None;
    let mut leadership = None;
    let store = match location {
        StoreLocation::Sled => {
            let store = open_store(&options.data_dir).await?;
            info!(data_dir = %options.data_dir.display(), "step 1/6: store opened");
            store
        }
        StoreLocation::Etcd(config) => {
            // The data directory still holds the token file and the recipe cache.
            std::fs::create_dir_all(&options.data_dir).map_err(|source| {
                Error::DataDirUncreatable {
                    path: options.data_dir.clone(),
                    source,
                }
            })?;
            let location = config.location();
            info!(store = %location, "step 1/6: campaigning for the etcd store");
            let raft = crate::leader::RaftLeaderWatch::start(&options.docker_socket);
            let engine = crate::leader::campaign(
                *config,
                options.listen,
                shutdown.graceful.clone(),
                raft.defer(),
            )
            .await?;
            drop(raft);
            let Some(engine) = engine else {
                info!("stopped while standing by");
                return Ok(Stopped::Drained);
            };
            lost = Some(engine.lost());
            let holds = engine.holds();
            leadership = Some(Arc::new(move || holds.now()) as crate::swarm::Leadership);
            let holder = engine.tenure().holder.clone();
            let store = Store::with_engine(Arc::new(engine), state::Config::default())
                .await
                .map_err(Error::EtcdUnusable)?;
            // Written (fenced, like every write) so /readyz and the status page name the
            // leader; a deposed leader cannot overwrite it.
            store
                .put_value(crate::leader::LEADER_KEY, &holder)
                .await
                .map_err(Error::EtcdUnusable)?;
            info!(store = %location, leader = %holder, "step 1/6: store opened; this replica leads");
            store
        }
    };
    let deposed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    if let Some(lost) = lost {
        let deposed = deposed.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let reason = lost.await;
            if shutdown.graceful.is_cancelled() && reason == state::etcd_engine::CLOSED {
                // A stop that was asked for: the engine closed last and gave the lease back.
                return;
            }
            tracing::error!(%reason, "leadership lost: stopping at once");
            *deposed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
            shutdown.stop_now();
        });
    }
    let (swarm, api_version): (Arc<dyn Swarm>, String) = if managers.is_empty() {
        let swarm = connect(&options.docker_socket).await?;
        let api = swarm.api_version().to_string();
        (Arc::new(swarm), api)
    } else {
        let mut sockets = vec![options.docker_socket.clone()];
        sockets.extend(managers);
        let swarm = crate::swarm::FailoverSwarm::connect(sockets, DockerOptions::default())
            .await
            .map_err(|source| Error::DockerUnreachable {
                socket: options.docker_socket.clone(),
                source,
            })?;
        let api = swarm.api_version();
        (Arc::new(swarm), api)
    };
    info!(socket = %options.docker_socket.display(), api = %api_version, "step 2/6: connected to docker (swarm manager)");
    // An etcd leader writes to Docker only while it holds its lease (crate::swarm::FencedSwarm).
    let swarm: Arc<dyn Swarm> = match leadership {
        Some(leads) => Arc::new(crate::swarm::FencedSwarm::new(swarm, leads)),
        None => swarm,
    };
    let prober = Arc::new(GatewayProber::new(swarm.clone(), PROBE_TIMEOUT));
    let running = start_with_store(options, store, swarm, prober, shutdown, nightly).await?;
    let stopped = running.wait().await;
    let reason = deposed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match reason {
        Some(reason) => Err(Error::LeadershipLost(reason)),
        None => Ok(stopped),
    }
}

/// Starts the daemon on `swarm` with `prober`: opens the store, then steps 3–6 of the
/// module docs. Stop it with `shutdown`, then [`Running::wait`].
///
/// # Errors
/// Any startup [`Error`].
pub async fn start(
    options: Options,
    swarm: Arc<dyn Swarm>,
    prober: Arc<dyn Prober>,
    shutdown: Shutdown,
) -> Result<Running, Error> {
    let store = open_store(&options.data_dir).await?;
    info!(data_dir = %options.data_dir.display(), "step 1/6: store opened");
    info!("step 2/6: docker given by the caller");
    start_with_store(options, store, swarm, prober, shutdown, None).await
}

/// [`start`] with a nightly schedule.
///
/// # Errors
/// Any startup [`Error`].
pub async fn start_with_nightly(
    options: Options,
    swarm: Arc<dyn Swarm>,
    prober: Arc<dyn Prober>,
    shutdown: Shutdown,
    nightly: NightlyOptions,
) -> Result<Running, Error> {
    let store = open_store(&options.data_dir).await?;
    info!(data_dir = %options.data_dir.display(), "step 1/6: store opened");
    info!("step 2/6: docker given by the caller");
    start_with_store(options, store, swarm, prober, shutdown, Some(nightly)).await
}

async fn start_with_store(
    options: Options,
    store: Store,
    swarm: Arc<dyn Swarm>,
    prober: Arc<dyn Prober>,
    shutdown: Shutdown,
    nightly: Option<NightlyOptions>,
) -> Result<Running, Error> {
    let metrics = Metrics::new().map_err(Error::MetricsFailed)?;
    // Every Docker call of the daemon is counted, timed and its failures classified.
    let swarm: Arc<dyn Swarm> = Arc::new(MeteredSwarm::new(swarm, metrics.clone()));
    let catalogue = DirCatalogue::open(&options.catalogue).map_err(Error::CatalogueUnopenable)?;
    let recipes = catalogue.check_all();
    for problem in &recipes {
        warn!(problem = %problem, "catalogue problem");
    }
    info!(catalogue = %options.catalogue.display(), problems = recipes.len(), "step 3/6: catalogue opened");

    let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    let mut workers = Supervisor::new(
        shutdown.graceful.clone(),
        runtime::workers::DEFAULT_POLICY,
        Some(metrics.clone()),
    );
    match &options.state_file {
        Some(file) => {
            let apply = statefile::ApplyOptions {
                prune: options.prune,
                dry_run: false,
            };
            // The watch is set up before the first load, so an edit in between is not missed.
            let mut follower = statefile::watch::Follower::new(
                store.clone(),
                file.clone(),
                Some(options.base_domain.clone()),
                apply,
                statefile::watch::DEFAULT_DEBOUNCE,
                Some(metrics.clone()),
            )
            .map_err(Error::StateFileUnwatchable)?;
            if let Err(e) = follower.load().await {
                tracing::error!(file = %file.display(), error = %crate::errors::chain(&e), "applying the state file failed; the state-file worker retries");
            }
            info!(file = %file.display(), prune = options.prune, "step 4/6: state file loaded; following its directory");
            workers.spawn(follower);
        }
        None => info!("step 4/6: no state file; the store's desired state is used as is"),
    }

    let instance = instance_id(&store).await?;
    let mut extra_labels = options.extra_labels.clone();
    extra_labels.insert(crate::warmapp::INSTANCE_LABEL.to_string(), instance.clone());
    info!(instance = %instance, "stacks are labelled {}={instance}; only those are ever torn down", crate::warmapp::INSTANCE_LABEL);

    // Declared Recipes first, the --catalogue directory for names no Recipe declares.
    let sources = Arc::new(crate::catalogue::Sources::new(
        options.data_dir.join("recipes"),
        Some(catalogue),
        crate::catalogue::sources::Limits::default(),
    ));
    let fetcher = Arc::new(crate::recipes::Fetcher::new(
        store.clone(),
        sources.clone(),
        metrics.clone(),
        Arc::new(state::SystemClock),
    ));
    match fetcher.sync() {
        Ok(r) => info!(
            recipes = r.len(),
            "declared recipes loaded (git recipes fetch in the background)"
        ),
        Err(e) => warn!(error = %e, "cannot list the declared recipes"),
    }
    workers.spawn(crate::recipes::FetchWorker::new(Arc::clone(&fetcher)));
    let catalogue: Arc<dyn crate::catalogue::Catalogue> = sources.clone();
    let catalogue_dyn: Arc<dyn crate::catalogue::Catalogue> = catalogue.clone();
    let promoter = Promoter::new(
        store.clone(),
        metrics.clone(),
        Arc::new(TokioClock::new()),
        Some(catalogue.clone()),
        crate::promote::Config::default(),
    );
    match promoter.resume() {
        Ok(0) => {}
        Ok(n) => info!(promotions = n, "resumed promotions under way"),
        Err(e) => warn!(error = %e, "cannot resume promotions under way"),
    }
    let ctx = Arc::new(Context {
        swarm: Arc::clone(&swarm),
        store: store.clone(),
        catalogue: catalogue.clone(),
        prober,
        metrics: metrics.clone(),
        clock: Arc::new(TokioClock::new()),
        base_domain: options.base_domain.clone(),
        extra_labels: extra_labels.clone(),
        apply: ApplyOptions::default(),
        teardown: TeardownOptions {
            nodes: options.node_endpoints.clone(),
            ..TeardownOptions::graceful()
        },
        observations: ObservationCache::new(),
        renders: Default::default(),
    });
    let cleanup = ci::start(
        ci::Setup {
            store: store.clone(),
            swarm: Arc::clone(&swarm),
            catalogue,
            base_domain: options.base_domain.clone(),
            extra_labels,
            instance: instance.clone(),
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            promoter: promoter.clone(),
            node_endpoints: options.node_endpoints.clone(),
        },
        &mut workers,
    )?;
    tasks.extend(cleanup.tasks);
    let runs_controller = cleanup.controller;
    let cleanup_slots = vec![cleanup.slots.clone(), cleanup.runs.slots().clone()];
    let config = runtime::Config {
        resync_period: options.resync,
        ..runtime::Config::default()
    };
    let controller = Controller::<WarmAppReconciler>::new(store.clone(), ctx, config)
        .with_swarm(Arc::clone(&swarm));
    let handle = controller.handle();
    fetcher.set_handle(handle.clone());

    let seed = u64::from_str_radix(instance.get(..12).unwrap_or(&instance), 16).unwrap_or(0);
    let schedule = nightly
        .as_ref()
        .map(|n| crate::nightly::Schedule::parse(&n.cron, &n.tz, n.jitter, seed))
        .transpose()
        .map_err(Error::NightlyRejected)?;
    let nightly = Arc::new(crate::nightly::Nightly::new(
        store.clone(),
        schedule.clone(),
        Arc::new(TokioClock::new()),
        Arc::new(crate::nightly::Work {
            store: store.clone(),
            sweeper: cleanup.sweeper.clone(),
            catalogue: catalogue_dyn.clone(),
            fetcher: Some(fetcher.clone()),
            promoter: promoter.clone(),
            handle: Some(handle.clone()),
            metrics: metrics.clone(),
            swarm: Arc::clone(&swarm),
            prune_labels: options
                .nightly_prune_labels
                .iter()
                .fold(LabelFilter::all(), |f, (k, v)| f.and_eq(k, v)),
        }),
        metrics.clone(),
    ));
    match crate::nightly::NightlyWorker::new(Arc::clone(&nightly)) {
        Some(worker) => {
            info!(
                schedule = runtime::workers::Worker::schedule(&worker),
                "nightly sweep scheduled"
            );
            workers.spawn(worker);
        }
        None => info!("no nightly schedule (--nightly); `hearth sweep --now` runs it by hand"),
    }

    let mut http_addr = None;
    let mut token_file = None;
    let mut tokens_file = None;
    if let Some(addr) = options.listen {
        let file = options
            .token_file
            .clone()
            .unwrap_or_else(|| auth::default_token_file(&options.data_dir));
        let token = if options.token_file.is_some() {
            auth::read(&file).map_err(Error::TokenFailed)?
        } else {
            let (token, created) = auth::read_or_create(&file).map_err(Error::TokenFailed)?;
            if created {
                info!(file = %file.display(), "created the API token file (mode 0600)");
            }
            token
        };
        token_file = Some(file);
        let named = options
            .access
            .tokens_file
            .clone()
            .unwrap_or_else(|| crate::access::tokens_file::default_path(&options.data_dir));
        // Watch before the first load, so an edit in between is not missed.
        let watch = crate::access::Keyring::watch(&named).map_err(Error::TokensFailed)?;
        let keyring = Arc::new(
            crate::access::Keyring::load(Some(token.secret()), Some(&named))
                .map_err(Error::TokensFailed)?,
        );
        info!(file = %named.display(), tokens = keyring.tokens().len(), "API tokens loaded (the token file's as `admin`, the tokens file's by name); following the tokens file");
        workers.spawn(crate::access::TokensWorker::new(
            Arc::clone(&keyring),
            watch,
            named.clone(),
        ));
        tokens_file = Some(named);
        let reads_open = options.access.public_reads || addr.ip().is_loopback();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::ListenFailed { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::ListenFailed { addr, source })?;
        http_addr = Some(bound);
        let state = http::State {
            store: store.clone(),
            metrics: metrics.clone(),
            base_domain: options.base_domain.clone(),
            runs: cleanup.runs.clone(),
            slots: cleanup.slots.clone(),
            sweeper: cleanup.sweeper.clone(),
            promoter: promoter.clone(),
            nightly: nightly.clone(),
            swarm: Arc::clone(&swarm),
            handle: handle.clone(),
            workers: workers.board(),
        };
        let stop = shutdown.graceful.clone();
        let gate = http::Gate {
            keyring,
            reads_open,
        };
        tasks.push((
            "http",
            tokio::spawn(http::serve(listener, state, gate, stop)),
        ));
        let reads = if reads_open {
            "reads open"
        } else {
            "reads need a token (not loopback; --public-reads opens them)"
        };
        info!(addr = %bound, token_file = ?token_file, reads, "step 5/6: API listening (mutations need a token of their scope)");
    } else {
        info!("step 5/6: no local endpoint");
    }

    workers.spawn(
        crate::gauges::GaugesWorker::new(
            store.clone(),
            metrics.clone(),
            handle.clone(),
            crate::warmapp::CONTROLLER,
        )
        .with_catalogue(catalogue_dyn.clone()),
    );
    info!(
        workers = ?workers.board().list().iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
        "background workers running"
    );

    info!(resync = %humantime::format_duration(options.resync), "step 6/6: warm-app controller running");
    let controller = tokio::spawn(controller.run(shutdown.clone()));
    Ok(Running {
        store,
        metrics,
        http_addr,
        token_file,
        tokens_file,
        handle,
        workers: workers.board(),
        shutdown,
        controller,
        runs_controller,
        supervisor: workers,
        tasks,
        promoter,
        slots: cleanup_slots,
    })
}

/// This data directory's instance ID: read from the store, or drawn and stored on first start.
///
/// # Errors
/// [`Error::StoreUnopenable`] when the store cannot be read or written.
pub async fn instance_id(store: &Store) -> Result<String, Error> {
    let failed = |source| Error::StoreUnopenable {
        path: PathBuf::from(store.location()),
        source,
    };
    if let Some(id) = store.get_value::<String>(INSTANCE_KEY).map_err(failed)? {
        return Ok(id);
    }
    let id: String = (0..6)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    store.put_value(INSTANCE_KEY, &id).await.map_err(failed)?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_instance_id_is_drawn_once_and_kept_by_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = open_store(dir.path()).await.unwrap();
            let id = instance_id(&store).await.unwrap();
            assert_eq!(id.len(), 12);
            assert_eq!(instance_id(&store).await.unwrap(), id);
            id
        };
        let store = open_store(dir.path()).await.unwrap();
        assert_eq!(
            instance_id(&store).await.unwrap(),
            first,
            "kept across a restart"
        );
        let other = Store::in_memory().await.unwrap();
        assert_ne!(instance_id(&other).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_second_daemon_on_the_same_data_directory_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open_store(dir.path()).await.unwrap();
        let err = open_store(dir.path()).await.unwrap_err();
        assert!(matches!(err, Error::StoreLocked(_)), "{err}");
        assert!(
            err.to_string().contains("another hearth is running on it"),
            "{err}"
        );
    }
}
