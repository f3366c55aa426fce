//! `hearth serve`, `hearth apply -f FILE` and `hearth get warmapps`: arguments and what they run.
//!
//! `serve` holds the store (sled: one process per data directory), so `get` and `apply` ask
//! the running daemon over its local endpoint (`--server`, default `127.0.0.1:7433`). When no
//! daemon answers, `apply` opens the data directory itself and applies there (the daemon
//! picks the change up when it starts); `get` then reads the store directly too.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ci::{self, ServerArg};
use crate::cli::render;
use crate::http;
use crate::serve::{self, default_data_dir, Options, DEFAULT_BASE_DOMAIN, DEFAULT_LISTEN};
use crate::statefile;
use crate::swarm::Labels;
use clap::{Args, Subcommand};
use crd::names::BaseDomain;
use crd::{Kind, Run, SlotPool, WarmApp};
use state::Store;

/// `hearth serve --store …`: the etcd store and leader election (docs/ETCD.md).
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Keep the store in etcd instead of sled in the data directory:
    /// etcd://host:port[,host:port…][/prefix] (etcds:// for TLS). Replicas on one etcd elect a
    /// leader; the others stand by and forward the API to it.
    #[arg(long = "store", value_name = "URL", env = "HEARTH_STORE")]
    pub url: Option<String>,
    /// CA bundle (PEM) of the etcd servers' certificates (enables TLS).
    #[arg(long, value_name = "FILE", env = "HEARTH_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE", env = "HEARTH_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, value_name = "FILE", env = "HEARTH_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user (with --etcd-password-file).
    #[arg(long, value_name = "NAME", env = "HEARTH_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (first line).
    #[arg(long, value_name = "FILE", env = "HEARTH_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// The leadership lease: a dead leader is replaced within about this long.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, env = "HEARTH_ETCD_LEASE")]
    pub etcd_lease: Option<Duration>,
    /// This replica's API address as the other replicas reach it (they forward requests
    /// there while it leads). Default: http://<hostname>:<--listen port>.
    #[arg(long, value_name = "URL", env = "HEARTH_ADVERTISE_API")]
    pub advertise_api: Option<String>,
}

impl StoreArgs {
    /// The store location these arguments name (`listen`: the API address, for the default
    /// advertised address).
    ///
    /// # Errors
    /// [`Error::ArgumentRejected`] for a bad URL, a password file that cannot be read, or
    /// etcd options without `--store`.
    pub fn location(&self, listen: Option<SocketAddr>) -> Result<serve::StoreLocation, Error> {
        let Some(url) = &self.url else {
            let etcd_only = self.etcd_ca_file.is_some()
                || self.etcd_cert_file.is_some()
                || self.etcd_key_file.is_some()
                || self.etcd_user.is_some()
                || self.etcd_password_file.is_some()
                || self.etcd_lease.is_some()
                || self.advertise_api.is_some();
            if etcd_only {
                return Err(Error::ArgumentRejected(
                    "the --etcd-* and --advertise-api options need --store etcd://…".into(),
                ));
            }
            return Ok(serve::StoreLocation::Sled);
        };
        let mut config = state::etcd_engine::Config::from_url(url)
            .map_err(|e| Error::ArgumentRejected(format!("--store: {e}")))?;
        config.ca_file = self.etcd_ca_file.clone();
        config.cert_file = self.etcd_cert_file.clone();
        config.key_file = self.etcd_key_file.clone();
        if let Some(lease) = self.etcd_lease {
            if lease < Duration::from_secs(3) {
                return Err(Error::ArgumentRejected(format!(
                    "--etcd-lease {lease:?}: at least 3s (etcd's minimum lease)"
                )));
            }
            config.lease_ttl = lease;
        }
        match (&self.etcd_user, &self.etcd_password_file) {
            (Some(user), Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    Error::ArgumentRejected(format!("--etcd-password-file {}: {e}", file.display()))
                })?;
                config.user = Some(user.clone());
                config.password = Some(text.lines().next().unwrap_or("").to_string());
            }
            (None, None) => {}
            _ => {
                return Err(Error::ArgumentRejected(
                    "--etcd-user and --etcd-password-file go together".into(),
                ))
            }
        }
        config.api = self.advertise_api.clone().or_else(|| {
            listen.map(|addr| {
                let host = if addr.ip().is_unspecified() {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or_else(|_| "localhost".into())
                } else {
                    addr.ip().to_string()
                };
                format!("http://{host}:{}", addr.port())
            })
        });
        Ok(serve::StoreLocation::Etcd(Box::new(config)))
    }
}

/// `hearth serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The operator state file to load at start and follow (its directory is watched).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Delete resources removed from the state file (their stacks are torn down).
    #[arg(long)]
    pub prune: bool,
    /// Data directory (default: $HEARTH_DATA_DIR, $XDG_DATA_HOME/hearth, /var/lib/hearth
    /// for root, else ~/.local/share/hearth).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the store lives: sled in the data directory (default) or etcd.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Recipe catalogue directory.
    #[arg(
        long,
        value_name = "DIR",
        env = "HEARTH_CATALOGUE",
        default_value = "/etc/hearth/catalogue"
    )]
    pub catalogue: PathBuf,
    /// Docker socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "HEARTH_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
    /// The socket of another swarm manager (repeatable; or `HEARTH_MANAGER_SOCKETS`,
    /// comma-separated): when the manager hearth talks to stops answering, it fails over to
    /// the next of these (then --docker-socket again) that answers as an active manager, and
    /// relists. Give every node an --node-endpoint too (docs/OPERATING.md).
    #[arg(
        long = "manager-socket",
        value_name = "PATH",
        env = "HEARTH_MANAGER_SOCKETS",
        value_delimiter = ','
    )]
    pub manager_sockets: Vec<PathBuf>,
    /// The Engine endpoint of a swarm node, `<node-id-or-hostname>=unix:///path/docker.sock`
    /// (repeatable; or `HEARTH_NODE_ENDPOINTS`, comma-separated): teardowns remove the stacks'
    /// containers and volumes on every node where their tasks ran; a node without an endpoint
    /// is a residual naming it.
    #[arg(
        long = "node-endpoint",
        value_name = "NODE=unix:///PATH",
        env = "HEARTH_NODE_ENDPOINTS",
        value_delimiter = ','
    )]
    pub node_endpoints: Vec<String>,
    /// Reconcile every warm app at least this often (humantime: 90s, 5m, 1h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub resync: Duration,
    /// Local endpoint for `hearth get` / `hearth apply` (`off` to disable).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Base domain of derived domains (`<stack>.<base>`).
    #[arg(long, default_value = DEFAULT_BASE_DOMAIN)]
    pub base_domain: String,
    /// Extra label on every object hearth deploys, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Run the nightly sweep on this cron schedule (five fields, e.g. "0 3 * * *"); off
    /// when absent (`hearth sweep --now` still runs it by hand).
    #[arg(long, value_name = "CRON", env = "HEARTH_NIGHTLY")]
    pub nightly: Option<String>,
    /// The time zone of --nightly (IANA name).
    #[arg(
        long,
        value_name = "TZ",
        env = "HEARTH_NIGHTLY_TZ",
        default_value = "UTC"
    )]
    pub nightly_tz: String,
    /// Spread each nightly run by up to this much after its time (humantime, e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub nightly_jitter: Duration,
    /// The nightly sweep prunes only dangling images with this label, KEY=VALUE (repeatable;
    /// all must match). Without it, every dangling image no service or container uses.
    #[arg(long = "nightly-prune-label", value_name = "KEY=VALUE")]
    pub nightly_prune_labels: Vec<String>,
    /// The API's bearer token file for mutations (default: `<data-dir>/token`, created with a
    /// random token, mode 0600, on first start).
    #[arg(long, env = "HEARTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Named, scoped tokens (`hearth token create`), followed while the daemon runs (default:
    /// `<data-dir>/tokens`; must not be accessible to group or others).
    #[arg(long, env = "HEARTH_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Answer reads without a token even when listening off loopback (on a loopback address
    /// reads are always open).
    #[arg(long)]
    pub public_reads: bool,
}

/// `hearth apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The state file.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Validate and show the diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete resources that are not in the file.
    #[arg(long)]
    pub prune: bool,
    /// The daemon (its data directory is applied to directly when no daemon answers).
    #[command(flatten)]
    pub server: ServerArg,
    /// Base domain (must match the daemon's).
    #[arg(long, default_value = DEFAULT_BASE_DOMAIN)]
    pub base_domain: String,
    /// Output format (table: the diff as text).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `hearth get`.
#[derive(Debug, Clone, Subcommand)]
pub enum GetCommand {
    /// Warm apps: phase, versions, readiness.
    #[command(alias = "warmapp", alias = "wa")]
    Warmapps(GetArgs),
    /// CI runs: phase, slot, tier results, verdict.
    #[command(alias = "run")]
    Runs(GetArgs),
    /// Slot pools: slots in use, waiters, ports.
    #[command(alias = "slotpool", alias = "pools", alias = "sp")]
    Slotpools(GetArgs),
    /// Recipes: source, versions found, newest, last fetch.
    #[command(alias = "recipe", alias = "rc")]
    Recipes(GetArgs),
    /// The history, newest first.
    History(HistoryArgs),
    /// The daemon's background workers: state, last run, next run, last error.
    #[command(alias = "worker")]
    Workers(WorkersArgs),
}

/// Arguments of `hearth get workers`.
#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon (workers run only inside `hearth serve`: there is no offline answer).
    #[command(flatten)]
    pub server: ServerArg,
}

/// Arguments of `hearth get warmapps|runs|slotpools`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Only this object.
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon (its data directory is read directly when no daemon answers).
    #[command(flatten)]
    pub server: ServerArg,
}

/// Arguments of `hearth get history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Only entries about this object: `NAME` or `KIND/NAME` (e.g. `warmapp/webapp`).
    pub name: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon (its data directory is read directly when no daemon answers).
    #[command(flatten)]
    pub server: ServerArg,
}

/// `hearth describe KIND NAME` and `hearth delete KIND NAME`.
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    /// The kind: warmapp, run or slotpool (plurals and short forms work).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

pub use render::Output;

/// Errors of these commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon failed to start or run.
    #[error(transparent)]
    ServeFailed(#[from] serve::Error),
    /// An argument is malformed.
    #[error("invalid argument: {0}")]
    ArgumentRejected(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    DaemonRefused(String),
    /// The daemon could not be asked (and the store could not be used instead).
    #[error("cannot reach hearth at {addr}: {message}")]
    DaemonUnreachable {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The state file was rejected or could not be applied.
    #[error(transparent)]
    StateFileFailed(#[from] statefile::Error),
    /// Reading the store failed.
    #[error("reading the store failed")]
    StoreFailed(#[source] state::Error),
    /// A client failure (unreadable token file, unreachable daemon).
    #[error(transparent)]
    ClientFailed(#[from] crate::cli::ci::Error),
    /// Writing the output failed.
    #[error("cannot write output")]
    OutputFailed(#[from] std::io::Error),
    /// Rendering the output failed.
    #[error(transparent)]
    RenderFailed(#[from] render::Error),
    /// The daemon answered something this CLI cannot read.
    #[error("unexpected answer from the daemon: {0}")]
    AnswerUnreadable(String),
}

/// Turns `serve` arguments into daemon options.
///
/// # Errors
/// [`Error::ArgumentRejected`] for a bad label, listen address or base domain.
pub fn options(args: &ServeArgs) -> Result<Options, Error> {
    let mut extra = Labels::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::ArgumentRejected(format!("label {l:?} is not KEY=VALUE")))?;
        extra.insert(k.to_string(), v.to_string());
    }
    let mut prune_labels = Labels::new();
    for l in &args.nightly_prune_labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                Error::ArgumentRejected(format!("--nightly-prune-label {l:?} is not KEY=VALUE"))
            })?;
        prune_labels.insert(k.to_string(), v.to_string());
    }
    let listen = match args.listen.as_str() {
        "off" | "" => None,
        s => Some(
            s.parse::<SocketAddr>()
                .map_err(|e| Error::ArgumentRejected(format!("--listen {s:?}: {e}")))?,
        ),
    };
    Ok(Options {
        state_file: args.state.clone(),
        prune: args.prune,
        data_dir: args.data_dir.clone().unwrap_or_else(default_data_dir),
        catalogue: args.catalogue.clone(),
        docker_socket: args.docker_socket.clone(),
        resync: args.resync,
        listen,
        base_domain: base_domain(&args.base_domain)?,
        extra_labels: extra,
        token_file: args.token_file.clone(),
        access: crate::serve::AccessOptions {
            tokens_file: args.tokens_file.clone(),
            public_reads: args.public_reads,
        },
        nightly_prune_labels: prune_labels,
        node_endpoints: crate::cli::node_daemons(&args.node_endpoints)
            .map_err(|e| Error::ArgumentRejected(e.to_string()))?,
    })
}

fn base_domain(s: &str) -> Result<BaseDomain, Error> {
    BaseDomain::parse(s).map_err(|e| Error::ArgumentRejected(format!("--base-domain: {e}")))
}

/// Runs `hearth serve` until SIGINT/SIGTERM.
///
/// # Errors
/// Startup errors ([`serve::Error`]) and bad arguments.
pub async fn serve(args: &ServeArgs) -> Result<(), Error> {
    let options = options(args)?;
    let nightly = args.nightly.clone().map(|cron| serve::NightlyOptions {
        cron,
        tz: args.nightly_tz.clone(),
        jitter: args.nightly_jitter,
    });
    let location = args.store.location(options.listen)?;
    serve::run_with_store(options, nightly, args.manager_sockets.clone(), location).await?;
    Ok(())
}

/// Runs `hearth apply`.
///
/// # Errors
/// A rejected file (with every problem's location), or an unreachable daemon and store.
pub async fn apply(args: &ApplyArgs, out: &mut dyn Write) -> Result<(), Error> {
    let base = base_domain(&args.base_domain)?;
    // Validate locally first: a bad file is reported the same way with or without a daemon.
    let set = statefile::load(&args.file, Some(&base))?;
    let text =
        std::fs::read_to_string(&args.file).map_err(|source| statefile::Error::FileUnreadable {
            path: args.file.clone(),
            source,
        })?;
    let path = format!(
        "/api/v1/apply?dryRun={}&prune={}&file={}",
        args.dry_run,
        args.prune,
        encode(&set.source)
    );
    let client = args.server.client()?;
    let addr = client.addr();
    match client
        .send(
            hyper::Method::POST,
            &path,
            text.into_bytes(),
            "application/yaml",
        )
        .await
    {
        Ok((200, body)) => {
            let answer: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| Error::DaemonUnreachable {
                    addr,
                    message: format!("unexpected answer: {e}"),
                })?;
            match args.output {
                Output::Table => {
                    let text = answer.get("text").and_then(|t| t.as_str()).unwrap_or("");
                    writeln!(out, "{text}")?;
                }
                other => write!(out, "{}", render::structured(&answer, other)?)?,
            }
            Ok(())
        }
        Ok((_, body)) => Err(Error::DaemonRefused(crate::cli::ci::error_message(&body))),
        Err(e) => {
            let dir = args.server.data_dir();
            tracing::info!(server = %addr, error = %e, data_dir = %dir.display(), "no daemon answered; applying to the data directory");
            let store = serve::open_store(&dir).await?;
            let diff = statefile::apply(
                &store,
                &set,
                statefile::ApplyOptions {
                    prune: args.prune,
                    dry_run: args.dry_run,
                },
            )
            .await?;
            match args.output {
                Output::Table => writeln!(out, "{diff}")?,
                other => write!(
                    out,
                    "{}",
                    render::structured(&http::diff_json(&diff, args.dry_run), other)?
                )?,
            }
            Ok(())
        }
    }
}

/// The API path segment and kind of a `describe`/`delete` kind argument.
fn object_kind(kind: &str) -> Result<(Kind, &'static str), Error> {
    match http::parse_kind(kind) {
        Some(Kind::WarmApp) => Ok((Kind::WarmApp, "warmapps")),
        Some(Kind::Run) => Ok((Kind::Run, "runs")),
        Some(Kind::SlotPool) => Ok((Kind::SlotPool, "slotpools")),
        Some(Kind::Recipe) => Ok((Kind::Recipe, "recipes")),
        _ => Err(Error::ArgumentRejected(format!(
            "unknown kind {kind:?}: one of warmapp, run, slotpool, recipe"
        ))),
    }
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Decodes an answer.
fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::AnswerUnreadable(e.to_string()))
}

/// `GET path` from the daemon; when no daemon answers, `local` computes the same answer
/// from the data directory (sled: only possible while no daemon holds it).
async fn fetch(
    server: &ServerArg,
    path: &str,
    local: impl FnOnce(&Store) -> Result<serde_json::Value, Error>,
) -> Result<serde_json::Value, Error> {
    let client = server.client()?;
    match client.get::<serde_json::Value>(path).await {
        Ok(v) => Ok(v),
        Err(ci::Error::DaemonUnreachable { addr, reason }) => {
            let dir = server.data_dir();
            let store = serve::open_store(&dir)
                .await
                .map_err(|open| Error::DaemonUnreachable {
                    addr,
                    message: format!("{reason}; and the data directory cannot be read: {open}"),
                })?;
            local(&store)
        }
        Err(e) => Err(e.into()),
    }
}

fn local_objects<R: crd::Resource>(
    store: &Store,
    name: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let value = match name {
        Some(n) => serde_json::to_value(
            store
                .get_opt::<R>(n)
                .map_err(Error::StoreFailed)?
                .ok_or_else(|| Error::DaemonRefused(format!("{}/{n} was not found", R::KIND)))?,
        ),
        None => serde_json::to_value(store.list::<R>().map_err(Error::StoreFailed)?.items),
    };
    value.map_err(|e| Error::AnswerUnreadable(e.to_string()))
}

/// Writes one object or a list in `output`; `table` renders a list.
fn write_objects<T: serde::de::DeserializeOwned + serde::Serialize>(
    out: &mut dyn Write,
    value: serde_json::Value,
    single: bool,
    output: Output,
    table: fn(&[T], u64) -> String,
) -> Result<(), Error> {
    let items: Vec<T> = if single {
        vec![decode(value)?]
    } else {
        decode(value)?
    };
    let text = match (output, single) {
        (Output::Table, _) => table(&items, now_ms()),
        (other, true) => render::structured(&items[0], other)?,
        (other, false) => render::structured(&items, other)?,
    };
    write!(out, "{text}")?;
    Ok(())
}

/// Runs `hearth get ...`.
///
/// # Errors
/// An unreachable daemon and store, a refused request, or a failed output.
pub async fn get(command: &GetCommand, out: &mut dyn Write) -> Result<(), Error> {
    use render::{history_table, recipes_table, runs_table, slotpools_table, warmapps_table};
    match command {
        GetCommand::Warmapps(a)
        | GetCommand::Runs(a)
        | GetCommand::Slotpools(a)
        | GetCommand::Recipes(a) => {
            let segment = match command {
                GetCommand::Runs(_) => "runs",
                GetCommand::Slotpools(_) => "slotpools",
                GetCommand::Recipes(_) => "recipes",
                _ => "warmapps",
            };
            let path = match &a.name {
                Some(n) => format!("/api/v1/{segment}/{}", encode(n)),
                None => format!("/api/v1/{segment}"),
            };
            let name = a.name.as_deref();
            let single = name.is_some();
            match command {
                GetCommand::Runs(_) => {
                    let v = fetch(&a.server, &path, |s| local_objects::<Run>(s, name)).await?;
                    write_objects::<Run>(out, v, single, a.output, runs_table)
                }
                GetCommand::Slotpools(_) => {
                    let v = fetch(&a.server, &path, |s| local_objects::<SlotPool>(s, name)).await?;
                    write_objects::<SlotPool>(out, v, single, a.output, slotpools_table)
                }
                GetCommand::Recipes(_) => {
                    let v =
                        fetch(&a.server, &path, |s| local_objects::<crd::Recipe>(s, name)).await?;
                    write_objects::<crd::Recipe>(out, v, single, a.output, recipes_table)
                }
                _ => {
                    let v = fetch(&a.server, &path, |s| local_objects::<WarmApp>(s, name)).await?;
                    write_objects::<WarmApp>(out, v, single, a.output, warmapps_table)
                }
            }
        }
        GetCommand::Workers(a) => {
            let v = a
                .server
                .client()?
                .get::<serde_json::Value>("/api/v1/workers")
                .await?;
            write_objects::<crate::runtime::workers::Status>(
                out,
                v,
                false,
                a.output,
                render::workers_table,
            )
        }
        GetCommand::History(a) => {
            let mut query = format!("limit={}", a.limit);
            let mut subject = None;
            if let Some(n) = &a.name {
                match n.split_once('/') {
                    Some((k, name)) => {
                        let (kind, _) = object_kind(k).or_else(|_| match http::parse_kind(k) {
                            Some(kind) => Ok((kind, "")),
                            None => Err(Error::ArgumentRejected(format!("unknown kind {k:?}"))),
                        })?;
                        query.push_str(&format!("&kind={}&name={}", kind.as_str(), encode(name)));
                        subject = Some((Some(kind), name.to_string()));
                    }
                    None => {
                        query.push_str(&format!("&name={}", encode(n)));
                        subject = Some((None, n.clone()));
                    }
                }
            }
            let limit = a.limit;
            let v = fetch(&a.server, &format!("/api/v1/history?{query}"), |store| {
                let q = state::history::Query::newest(limit.saturating_mul(20).min(10_000));
                let entries: Vec<state::history::Entry> = store
                    .history(&q)
                    .map_err(Error::StoreFailed)?
                    .into_iter()
                    .filter(|e| match (&subject, &e.subject) {
                        (None, _) => true,
                        (Some((kind, name)), Some(s)) => {
                            s.name == *name && kind.is_none_or(|k| s.kind == k)
                        }
                        (Some(_), None) => false,
                    })
                    .take(limit)
                    .collect();
                serde_json::to_value(entries).map_err(|e| Error::AnswerUnreadable(e.to_string()))
            })
            .await?;
            write_objects::<state::history::Entry>(out, v, false, a.output, history_table)
        }
    }
}

/// Runs `hearth describe KIND NAME`: the object and its recent history.
///
/// # Errors
/// An unknown kind, an unreachable daemon, a missing object, a failed output.
pub async fn describe(args: &ObjectArgs, out: &mut dyn Write) -> Result<(), Error> {
    use render::{describe_run, describe_slotpool, describe_warmapp};
    let (kind, segment) = object_kind(&args.kind)?;
    let client = args.server.client()?;
    let object: serde_json::Value = client
        .get(&format!("/api/v1/{segment}/{}", encode(&args.name)))
        .await?;
    let history: Vec<state::history::Entry> = client
        .get(&format!(
            "/api/v1/history?kind={}&name={}&limit=10",
            kind.as_str(),
            encode(&args.name)
        ))
        .await?;
    let now = now_ms();
    let text = match args.output {
        Output::Table => match kind {
            Kind::Run => describe_run(&decode(object)?, &history, now),
            Kind::SlotPool => describe_slotpool(&decode(object)?, &history, now),
            Kind::Recipe => render::describe_recipe(&decode(object)?, &history, now),
            _ => describe_warmapp(&decode(object)?, &history, now),
        },
        other => render::structured(
            &serde_json::json!({"object": object, "history": history}),
            other,
        )?,
    };
    write!(out, "{text}")?;
    Ok(())
}

/// Runs `hearth delete KIND NAME` through the daemon.
///
/// # Errors
/// An unknown kind, an unreachable daemon, a refusal (409 for an active run or a held pool).
pub async fn delete(args: &ObjectArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (kind, segment) = object_kind(&args.kind)?;
    let deleted: serde_json::Value = args
        .server
        .client()?
        .delete(&format!("/api/v1/{segment}/{}", encode(&args.name)))
        .await?;
    let text = match args.output {
        Output::Table => format!("{}/{} deleted\n", kind.as_str().to_lowercase(), args.name),
        other => render::structured(&deleted, other)?,
    };
    write!(out, "{text}")?;
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serve_takes_a_nightly_schedule_with_time_zone_and_jitter() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "hearth",
            "serve",
            "--nightly",
            "0 3 * * *",
            "--nightly-tz",
            "Europe/Berlin",
            "--nightly-jitter",
            "10m",
        ])
        .unwrap();
        let crate::cli::Command::Serve(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.nightly.as_deref(), Some("0 3 * * *"));
        assert_eq!(a.nightly_tz, "Europe/Berlin");
        assert_eq!(a.nightly_jitter, Duration::from_secs(600));
        let cli = crate::cli::Cli::try_parse_from(["hearth", "sweep", "--now"]).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Sweep(s) if s.now && !s.dry_run));
        assert!(
            crate::cli::Cli::try_parse_from(["hearth", "sweep", "--now", "--dry-run"]).is_err()
        );
    }

    #[test]
    fn serve_arguments_become_options_with_labels_and_durations() {
        let args = ServeArgs {
            state: Some("s.yml".into()),
            prune: false,
            data_dir: Some("/tmp/x".into()),
            catalogue: "c".into(),
            docker_socket: "/var/run/docker.sock".into(),
            manager_sockets: Vec::new(),
            resync: humantime::parse_duration("2m 30s").unwrap(),
            listen: "off".into(),
            base_domain: "hearth.test".into(),
            labels: vec!["hearth.test=1".into()],
            nightly: None,
            nightly_tz: "UTC".into(),
            nightly_jitter: Duration::ZERO,
            nightly_prune_labels: vec!["hearth.test=1".into()],
            token_file: None,
            tokens_file: None,
            public_reads: false,
            node_endpoints: vec!["node-1=unix:///run/node-1.sock".into()],
            store: StoreArgs::default(),
        };
        let o = options(&args).unwrap();
        assert_eq!(
            format!("{:?}", o.node_endpoints),
            r#"{"node-1": "unix:///run/node-1.sock"}"#
        );
        let bad = ServeArgs {
            node_endpoints: vec!["node-1=tcp://10.0.0.1:2375".into()],
            ..args.clone()
        };
        let err = options(&bad).unwrap_err().to_string();
        assert!(
            err.contains("--node-endpoint") && err.contains("tcp://"),
            "{err}"
        );
        assert_eq!(o.resync, Duration::from_secs(150));
        assert_eq!(o.listen, None);
        assert_eq!(o.extra_labels.get("hearth.test").unwrap(), "1");
        assert_eq!(o.nightly_prune_labels.get("hearth.test").unwrap(), "1");
        let bad = ServeArgs {
            labels: vec!["nolabel".into()],
            ..args.clone()
        };
        assert!(options(&bad).is_err());
        let bad = ServeArgs {
            nightly_prune_labels: vec!["=1".into()],
            ..args
        };
        assert!(options(&bad).is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("deploy/a b.yml"), "deploy/a%20b.yml");
    }
}
