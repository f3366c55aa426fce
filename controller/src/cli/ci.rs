//! `hearth slot exec`, `hearth run start|heartbeat|report|finish` and `hearth sweep`: clients of the daemon's CI endpoints.
//!
//! The daemon holds the store (sled: one process per data directory), so these commands talk
//! to it over HTTP (`--server`, `$HEARTH_SERVER`, default `127.0.0.1:7433`), sending the bearer
//! token of `--token-file` (`$HEARTH_TOKEN_FILE`, default `<data-dir>/token`, the file the
//! daemon creates) with every request.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use crd::{Owner, OwnerKind};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;

/// The HTTP method type [`Client::send`] takes.
pub use hyper::Method;

use crate::access::admin_token::{self as auth, Token};
use crate::runs::Started;
use crate::serve::{default_data_dir, DEFAULT_LISTEN};
use crate::slots::{self, ExecOptions, Grant, SlotClient, SlotRequest};

/// Errors of the CI commands. None is retried by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be reached.
    #[error("cannot reach the hearth daemon at {addr} (is `hearth serve` running?): {reason}")]
    DaemonUnreachable {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The daemon refused or failed the request.
    #[error("{method} {path}: {status}: {message}")]
    RequestRefused {
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer could not be read.
    #[error("unreadable answer to {path}: {reason}")]
    AnswerUnreadable {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The token file given could not be read.
    #[error(transparent)]
    TokenUnreadable(#[from] auth::Error),
    /// The caller's process identity could not be read.
    #[error("cannot identify the owner process")]
    OwnerUnidentified(#[source] crate::liveness::Error),
    /// `slot exec` failed.
    #[error(transparent)]
    ExecFailed(#[from] slots::exec::Error),
    /// Output could not be written.
    #[error("cannot write output")]
    OutputFailed(#[from] std::io::Error),
    /// A candidate working tree could not be read (`--candidate DIR`).
    #[error("cannot snapshot the candidate: {0}")]
    CandidateUnreadable(String),
    /// What was waited for ended badly or not in time (`promote`, `rollback` without
    /// `--detach`).
    #[error("{what}: {why}")]
    WaitFailed {
        /// What was waited for (`web 1.1.0 -> 2.0.0`).
        what: String,
        /// How it ended, with the daemon's last error and failed tasks.
        why: String,
    },
}

/// The environment variable a token's value may be given in (after `--token-file`).
pub const TOKEN_ENV: &str = "HEARTH_TOKEN";

/// Where the daemon is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The daemon's endpoint.
    #[arg(long, env = "HEARTH_SERVER", default_value = DEFAULT_LISTEN)]
    pub server: SocketAddr,
    /// The file holding the API token to send (default: `$HEARTH_TOKEN`'s value, else
    /// `<data-dir>/token`, which `hearth serve` creates).
    #[arg(long, env = "HEARTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Data directory (default: $HEARTH_DATA_DIR, $XDG_DATA_HOME/hearth, /var/lib/hearth for
    /// root, else ~/.local/share/hearth): where the default token file is.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ServerArg {
    /// The data directory these arguments name.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The bearer token: the `--token-file`'s (`$HEARTH_TOKEN_FILE`; an unreadable one is an
    /// error), else `$HEARTH_TOKEN`'s value (how CI systems hand out secrets), else the
    /// default file's when it is readable (else none: reads work where they are open,
    /// mutations are refused with a message saying how to pass a token).
    ///
    /// # Errors
    /// [`Error::TokenUnreadable`] for an unreadable `--token-file`.
    pub fn token(&self) -> Result<Option<Token>, Error> {
        if let Some(file) = &self.token_file {
            return Ok(Some(auth::read(file)?));
        }
        if let Some(secret) = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            return Ok(Some(Token::new(&secret)));
        }
        let file = auth::default_token_file(&self.data_dir());
        match auth::read(&file) {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                tracing::debug!(error = %e, "no default token; mutations will be refused");
                Ok(None)
            }
        }
    }

    /// A client of the daemon carrying the token.
    ///
    /// # Errors
    /// As [`ServerArg::token`].
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::new(self.server).with_token(self.token()?))
    }
}

/// `hearth slot`.
#[derive(Debug, Clone, Subcommand)]
pub enum SlotCommand {
    /// Run a command while holding a slot of a pool (exports HEARTH_SLOT, HEARTH_PORT_BASE, …).
    Exec(SlotExecArgs),
}

/// `hearth slot exec`.
#[derive(Debug, Clone, Args)]
pub struct SlotExecArgs {
    /// The slot pool.
    #[arg(long)]
    pub pool: String,
    /// Lease TTL renewed by heartbeat (e.g. `30s`); without it the lease lives as long as
    /// this wrapper process.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// `hearth run`.
#[derive(Debug, Clone, Subcommand)]
pub enum RunCommand {
    /// Start a run: take a slot, resolve deps, optionally deploy the run's stack.
    #[command(disable_version_flag = true)]
    Start(RunStartArgs),
    /// Renew a run's lease.
    Heartbeat(RunIdArgs),
    /// Report tier results (`--tier install=pass --tier custom=skip:reason`).
    Report(RunReportArgs),
    /// Finish a run: verified teardown, then slot release.
    Finish(RunIdArgs),
    /// Redeploy a running run's stack in place: another version, a candidate, a commit, the
    /// warm canonical's exact content (`--from canonical`) or the run's own (`--from run`).
    #[command(disable_version_flag = true)]
    Deploy(RunDeployArgs),
    /// Start a run (lease owner, heartbeats every TTL/3), run a command with the run's
    /// variables, finish the run when it exits (verified teardown) and exit with its status.
    #[command(disable_version_flag = true)]
    Exec(Box<super::run_exec::RunExecArgs>),
}

/// `hearth run deploy`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "candidate", "commit", "from"])))]
pub struct RunDeployArgs {
    /// The run id.
    pub id: String,
    /// A published version.
    #[arg(long)]
    pub version: Option<String>,
    /// A recipe working tree (snapshotted now).
    #[arg(long, value_name = "DIR")]
    pub candidate: Option<std::path::PathBuf>,
    /// A commit of the declared git recipe.
    #[arg(long)]
    pub commit: Option<String>,
    /// `canonical` (the warm canonical's exact content, else the newest published version
    /// older than the run's) or `run` (what the run tests, as snapshotted at its start).
    #[arg(long, value_parser = ["canonical", "run"])]
    pub from: Option<String>,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?}: the key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The candidate at `dir`, read for upload.
fn upload(dir: &std::path::Path) -> Result<crate::candidates::Upload, Error> {
    crate::candidates::Upload::of_dir(dir)
        .map_err(|e| Error::CandidateUnreadable(crate::errors::chain(&e)))
}

/// How `run start` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartOutput {
    /// JSON.
    Json,
    /// `KEY='value'` lines for `eval`.
    Env,
}

/// `hearth run start`.
#[derive(Debug, Clone, Args)]
pub struct RunStartArgs {
    /// The recipe.
    #[arg(long)]
    pub recipe: String,
    /// Its version (a published version; for `--candidate`/`--commit`, the version the
    /// candidate carries — by default the one its compose.yml labels itself with).
    #[arg(long, default_value = "")]
    pub version: String,
    /// Test a commit of the declared git recipe (`--ref` is its older name); hearth snapshots
    /// its files at start.
    #[arg(long = "commit", alias = "ref", conflicts_with = "candidate")]
    pub git_ref: Option<String>,
    /// Test a recipe working tree (e.g. a pull request's checkout); its files are sent to
    /// hearth and snapshotted at start, so later edits of DIR change nothing of the run.
    #[arg(long, value_name = "DIR")]
    pub candidate: Option<std::path::PathBuf>,
    /// Env overrides of the run's stack, `KEY=VALUE` (repeatable; part of the snapshot).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Dependency providers (repeatable).
    #[arg(long = "dep")]
    pub deps: Vec<String>,
    /// The slot pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Lease TTL (e.g. `10m`): the run is swept this long after the last heartbeat (required
    /// with `--owner lease`).
    #[arg(long, required_if_eq("owner", "lease"))]
    pub ttl: Option<String>,
    /// The process that starts the run, and (with `--owner pid`) owns it (default: this
    /// command's parent, e.g. the CI script).
    #[arg(long)]
    pub owner_pid: Option<u32>,
    /// What the run lives as long as: `pid` (the owning process: `--owner-pid`, else this
    /// command's parent), `container:ID` (a CI step running as a container on the swarm's
    /// engine — `container:$HOSTNAME` from inside it; swept within seconds of its exit), or
    /// `lease` (heartbeats — `hearth run heartbeat RUN` — within `--ttl`; the creating process
    /// may exit, so later steps and remote runners keep it). Any run is swept once its owner
    /// is gone or its lease expired, and never while its owner lives.
    #[arg(long, value_name = "KIND", default_value = "pid", value_parser = parse_owner_kind)]
    pub owner: OwnerKind,
    /// Deploy the run's stack from the catalogue.
    #[arg(long)]
    pub deploy: bool,
    /// Tiers that must pass (repeatable).
    #[arg(long = "require")]
    pub require: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = StartOutput::Json)]
    pub output: StartOutput,
    /// With `--deploy`: wait until the run's stack converges (the default; progress on
    /// stderr, stdout stays the output above) or not (`--detach`).
    #[command(flatten)]
    pub wait: super::progress::WaitArgs,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// A command on one run.
#[derive(Debug, Clone, Args)]
pub struct RunIdArgs {
    /// The run id.
    pub id: String,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// `hearth run report`.
#[derive(Debug, Clone, Args)]
pub struct RunReportArgs {
    /// The run id.
    pub id: String,
    /// `NAME=pass|fail[:reason]|skip[:reason]` (repeatable).
    #[arg(long = "tier", required = true)]
    pub tiers: Vec<String>,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// `hearth sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// List what would be removed; remove nothing.
    #[arg(long, conflicts_with = "now")]
    pub dry_run: bool,
    /// Run the full nightly sweep now (orphan sweep, warm-app refresh, store maintenance)
    /// instead of the orphan sweep only.
    #[arg(long)]
    pub now: bool,
    /// How `--now` shows that it is running: `tty` (a live spinner with the time taken, on
    /// stderr), `plain` (a line when it starts and one per step when it ends), `auto`.
    #[arg(long, value_enum, default_value_t = super::progress::Mode::Auto)]
    pub progress: super::progress::Mode,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// A JSON client of the daemon.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    token: Option<Token>,
}

/// The message of an API error body (`{"error": {"message"}}`, or the text itself).
pub fn error_message(body: &[u8]) -> String {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(String::from)
    });
    message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

impl Client {
    /// A client of the daemon at `addr`, without a token (reads only).
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, token: None }
    }

    /// Sends `token` with every request.
    pub fn with_token(mut self, token: Option<Token>) -> Client {
        self.token = token;
        self
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `DELETE path`; the decoded answer.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(hyper::Method::DELETE, path, None).await
    }

    /// One request with a raw body; (status, body). Only transport failures are errors.
    ///
    /// # Errors
    /// [`Error::DaemonUnreachable`].
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(u16, Bytes), Error> {
        let addr = self.addr;
        let unreachable = |reason: String| Error::DaemonUnreachable { addr, reason };
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| unreachable("connect timed out".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.secret()),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        }
        .await;
        driver.abort();
        result
    }

    /// `POST path` with a JSON body; the decoded answer.
    ///
    /// # Errors
    /// [`Error::DaemonUnreachable`], [`Error::RequestRefused`], [`Error::AnswerUnreadable`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Error> {
        self.call(hyper::Method::POST, path, Some(body)).await
    }

    /// `GET path`; the decoded answer.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(hyper::Method::GET, path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, Error> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| Error::DaemonUnreachable {
                addr: self.addr,
                reason: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let (status, bytes) = self
            .send(method.clone(), path, bytes, "application/json")
            .await?;
        if !(200..300).contains(&status) {
            return Err(Error::RequestRefused {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message: error_message(&bytes),
            });
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::AnswerUnreadable {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A slot error for [`SlotClient`]: the daemon's refusal mapped back where it has a meaning;
/// a daemon that cannot be reached, or fails, says so with its address.
fn slot_error(addr: SocketAddr, pool: &str, slot: Option<u32>, e: Error) -> slots::Error {
    match e {
        Error::RequestRefused { status: 404, .. } => {
            slots::Error::PoolNotFound { pool: pool.into() }
        }
        Error::RequestRefused { status: 409, .. } => slots::Error::LeaseNotHeld {
            pool: pool.into(),
            slot: slot.unwrap_or_default(),
        },
        Error::DaemonUnreachable { addr, reason } => slots::Error::DaemonUnreachable {
            addr: addr.to_string(),
            reason,
        },
        other => slots::Error::DaemonFailed {
            addr: addr.to_string(),
            reason: other.to_string(),
        },
    }
}

fn ttl_text(ttl: Option<Duration>) -> Option<String> {
    ttl.map(|d| humantime::format_duration(d).to_string())
}

impl SlotClient for Client {
    fn acquire<'a>(&'a self, req: &'a SlotRequest) -> BoxFuture<'a, slots::Result<Grant>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "owner": req.owner,
                "run": req.run,
                "ttl": ttl_text(req.ttl),
            });
            self.post(&format!("/api/v1/slotpools/{}/acquire", req.pool), &body)
                .await
                .map_err(|e| match e {
                    Error::RequestRefused { status: 408, .. } => slots::Error::WaitTimedOut {
                        pool: req.pool.clone(),
                        waited: Duration::ZERO,
                    },
                    other => slot_error(self.addr, &req.pool, None, other),
                })
        })
    }

    fn heartbeat<'a>(
        &'a self,
        grant: &'a Grant,
        ttl: Duration,
    ) -> BoxFuture<'a, slots::Result<Grant>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "slot": grant.slot,
                "owner": grant.owner,
                "ttl": ttl_text(Some(ttl)),
            });
            self.post(
                &format!("/api/v1/slotpools/{}/heartbeat", grant.pool),
                &body,
            )
            .await
            .map_err(|e| slot_error(self.addr, &grant.pool, Some(grant.slot), e))
        })
    }

    fn release<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, slots::Result<()>> {
        Box::pin(async move {
            let body = serde_json::json!({"slot": grant.slot, "owner": grant.owner});
            self.post::<()>(&format!("/api/v1/slotpools/{}/release", grant.pool), &body)
                .await
                .map_err(|e| slot_error(self.addr, &grant.pool, Some(grant.slot), e))
        })
    }
}

/// `hearth slot exec`: returns the command's exit code.
///
/// # Errors
/// See [`Error`].
pub async fn slot(command: &SlotCommand) -> Result<i32, Error> {
    let SlotCommand::Exec(args) = command;
    let client = args.server.client()?;
    let owner = crate::liveness::current_owner().map_err(Error::OwnerUnidentified)?;
    let outcome = slots::exec(
        &client,
        &ExecOptions {
            pool: args.pool.clone(),
            owner,
            ttl: args.ttl,
            command: args.command.clone(),
        },
    )
    .await?;
    Ok(outcome.exit_code)
}

/// Parses `--owner`: `pid`, `container:ID` or `lease`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_owner_kind(text: &str) -> Result<OwnerKind, String> {
    match text.split_once(':') {
        None if text == "pid" => Ok(OwnerKind::Pid),
        None if text == "lease" => Ok(OwnerKind::Lease),
        Some(("container", id)) if !id.is_empty() => Ok(OwnerKind::Container(id.to_string())),
        _ => Err(format!(
            "{text:?}: expected `pid`, `container:ID` (e.g. `container:$HOSTNAME` inside a CI step container) or `lease` (with --ttl)"
        )),
    }
}

fn owner(pid: Option<u32>) -> Result<Owner, Error> {
    let pid = pid.unwrap_or_else(std::os::unix::process::parent_id);
    crate::liveness::owner_of(pid).map_err(Error::OwnerUnidentified)
}

/// `hearth run …`.
///
/// # Errors
/// See [`Error`].
pub async fn run(
    command: &RunCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        RunCommand::Start(a) => {
            let client = a.server.client()?;
            let since = std::time::SystemTime::now();
            let body = start_body(a, owner(a.owner_pid)?.with_kind(a.owner.clone()), None)?;
            let started: Started = client.post("/api/v1/runs", &body).await?;
            match a.output {
                StartOutput::Json => {
                    let text = serde_json::to_string_pretty(&started)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    writeln!(out, "{text}")?;
                }
                StartOutput::Env => write!(out, "{}", started.to_env())?,
            }
            out.flush()?;
            if a.deploy && !a.wait.detach {
                wait_for_run_stack(&started, since, &a.wait, err).await?;
            }
        }
        RunCommand::Heartbeat(a) => {
            post_and_print_phase(&a.server, &a.id, "heartbeat", serde_json::json!({}), out).await?;
        }
        RunCommand::Report(a) => {
            post_and_print_phase(
                &a.server,
                &a.id,
                "report",
                serde_json::json!({"tiers": a.tiers}),
                out,
            )
            .await?;
        }
        RunCommand::Deploy(a) => {
            let body = serde_json::json!({
                "version": a.version,
                "candidate": a.candidate.as_deref().map(upload).transpose()?,
                "commit": a.commit,
                "from": a.from,
            });
            let run: crd::Run = a
                .server
                .client()?
                .post(&format!("/api/v1/runs/{}/deploy", a.id), &body)
                .await?;
            let what = run
                .status
                .deployed
                .as_ref()
                .map(crate::runs::describe_target)
                .unwrap_or_default();
            writeln!(out, "run {}: deployed {what}", a.id)?;
        }
        RunCommand::Exec(_) => {
            // Exits the process with the command's status: dispatched by `cli::run`.
            return Err(Error::OutputFailed(std::io::Error::other(
                "`run exec` is dispatched by cli::run",
            )));
        }
        RunCommand::Finish(a) => {
            post_and_print_phase(&a.server, &a.id, "finish", serde_json::json!({}), out).await?;
        }
    }
    Ok(())
}

/// The body of `POST /api/v1/runs` for `run start` and `run exec` (`ttl` overrides `--ttl`).
pub(super) fn start_body(
    a: &RunStartArgs,
    owner: Owner,
    ttl: Option<&str>,
) -> Result<serde_json::Value, Error> {
    Ok(serde_json::json!({
        "recipe": a.recipe,
        "version": a.version,
        "commit": a.git_ref,
        "candidate": a.candidate.as_deref().map(upload).transpose()?,
        "env": a.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "deps": a.deps,
        "pool": a.pool,
        "ttl": ttl.or(a.ttl.as_deref()),
        "owner": owner,
        "deploy": a.deploy,
        "requiredTiers": a.require,
    }))
}

/// Posts `body` to run `id`'s `verb` endpoint (`heartbeat`, `report`, `finish`) and prints
/// the run's phase from the answer.
async fn post_and_print_phase(
    server: &ServerArg,
    id: &str,
    verb: &str,
    body: serde_json::Value,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let run: serde_json::Value = server
        .client()?
        .post(&format!("/api/v1/runs/{id}/{verb}"), &body)
        .await?;
    let phase = run
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("Unknown");
    writeln!(out, "run {id}: {phase}")?;
    Ok(())
}

/// Waits for the stack `run start --deploy` deployed, reading it from Docker (the daemon
/// answers once the objects exist); progress and the verdict go to `err`, since stdout carries
/// the run's variables. Without Docker access from here, says so and does not wait.
///
/// # Errors
/// [`Error::WaitFailed`] naming the run (still started: finish it, or its owner's exit lets
/// the sweeper reclaim it) when the stack did not converge.
pub(super) async fn wait_for_run_stack(
    started: &crate::runs::Started,
    since: std::time::SystemTime,
    wait: &super::progress::WaitArgs,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let docker = tokio::time::timeout(
        Duration::from_secs(3),
        crate::swarm::DockerSwarm::connect_local(),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let Some(docker) = docker else {
        writeln!(
            err,
            "(Docker not reachable from here: not waiting for stack {})",
            started.stack
        )?;
        return Ok(());
    };
    let begun = tokio::time::Instant::now();
    let mut verdict = Vec::new();
    let result = super::stack::wait_converged(
        &docker,
        &started.stack,
        since,
        (begun, begun + wait.timeout),
        wait.display(err),
        &mut verdict,
    )
    .await;
    err.write_all(&verdict)?;
    result.map_err(|e| Error::WaitFailed {
        what: format!("run {}", started.run),
        why: crate::errors::chain(&e),
    })
}

/// `hearth sweep [--dry-run]`: prints the orphan sweep's plan or report as JSON; `hearth sweep
/// --now` runs the full nightly sweep and prints its report.
///
/// # Errors
/// See [`Error`].
pub async fn sweep(
    args: &SweepArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let client = args.server.client()?;
    let answer: serde_json::Value = if args.now {
        // The daemon answers when every step is done (it reports no step before that): a
        // spinner with the time taken on a terminal, a line before and one per step after
        // otherwise. The report itself stays alone on stdout.
        let started = tokio::time::Instant::now();
        let spinner = match args.progress.resolve() {
            super::progress::Mode::Tty => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_message(
                    "nightly sweep: orphan sweep, warm-app refresh, image prune, store maintenance",
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            _ => {
                writeln!(
                    err,
                    "nightly sweep started (orphan sweep, warm-app refresh, image prune, store maintenance)"
                )?;
                None
            }
        };
        let answer = client.post("/api/v1/nightly", &serde_json::json!({})).await;
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        let answer: serde_json::Value = answer?;
        let steps = answer.get("steps").and_then(|s| s.as_array());
        for step in steps.into_iter().flatten() {
            let field = |k: &str| step.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let mark = if step.get("ok").and_then(|v| v.as_bool()) == Some(true) {
                "ok"
            } else {
                "FAILED"
            };
            writeln!(err, "  {} {mark}: {}", field("name"), field("summary"))?;
        }
        writeln!(
            err,
            "nightly sweep {} in {:.1?}",
            if answer.get("ok").and_then(|v| v.as_bool()) == Some(true) {
                "done"
            } else {
                "done with failures"
            },
            started.elapsed()
        )?;
        answer
    } else {
        client
            .post(
                "/api/v1/sweep",
                &serde_json::json!({"dryRun": args.dry_run}),
            )
            .await?
    };
    let text =
        serde_json::to_string_pretty(&answer).map_err(|e| std::io::Error::other(e.to_string()))?;
    writeln!(out, "{text}")?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn run_start_takes_every_flag_of_issue_5() {
        let cli = Cli::try_parse_from([
            "hearth",
            "run",
            "start",
            "--recipe",
            "r",
            "--version",
            "1.2.0",
            "--ref",
            "abc",
            "--dep",
            "sso",
            "--pool",
            "ci",
            "--ttl",
            "10m",
            "--owner-pid",
            "42",
            "--deploy",
            "--require",
            "install",
            "-o",
            "env",
            "--server",
            "127.0.0.1:9",
        ])
        .unwrap();
        let Command::Run(RunCommand::Start(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.version, "1.2.0");
        assert_eq!(a.deps, ["sso"]);
        assert_eq!(a.owner_pid, Some(42));
        assert!(a.deploy);
        assert_eq!(a.output, StartOutput::Env);
        assert_eq!(a.server.server.port(), 9);
    }

    #[test]
    fn run_start_takes_an_owner_kind_and_a_lease_owner_needs_a_ttl() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "hearth",
                "run",
                "start",
                "--recipe",
                "r",
                "--version",
                "1.0.0",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Run(RunCommand::Start(a)) => a.owner,
                _ => panic!(),
            })
        };
        assert_eq!(parse(&[]).unwrap(), OwnerKind::Pid);
        assert_eq!(
            parse(&["--owner", "container:3f2a9c"]).unwrap(),
            OwnerKind::Container("3f2a9c".into())
        );
        assert_eq!(
            parse(&["--owner", "lease", "--ttl", "2m"]).unwrap(),
            OwnerKind::Lease
        );
        let err = parse(&["--owner", "lease"]).unwrap_err().to_string();
        assert!(err.contains("--ttl"), "{err}");
        for bad in ["container:", "container", "docker:x", "Pid"] {
            let err = parse(&["--owner", bad]).unwrap_err().to_string();
            assert!(err.contains("container:ID"), "{bad}: {err}");
        }
    }

    #[test]
    fn slot_exec_takes_the_command_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "hearth", "slot", "exec", "--pool", "p", "--", "sh", "-c", "x",
        ])
        .unwrap();
        let Command::Slot(SlotCommand::Exec(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.command, ["sh", "-c", "x"]);
        assert!(Cli::try_parse_from(["hearth", "slot", "exec", "--pool", "p"]).is_err());
    }

    fn request() -> SlotRequest {
        SlotRequest {
            pool: "ci".into(),
            owner: Owner {
                kind: crd::OwnerKind::Pid,
                pid: 1,
                process_start_time: 1,
                host: "h".into(),
                boot_id: "b".into(),
            },
            run: None,
            ttl: None,
        }
    }

    #[tokio::test]
    async fn a_slot_request_to_a_daemon_that_is_not_running_says_it_cannot_reach_hearth() {
        // A port nothing listens on: bound, then released.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let err = SlotClient::acquire(&Client::new(addr), &request())
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&err, slots::Error::DaemonUnreachable { addr: a, .. } if *a == addr.to_string()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach hearth at {addr}: ")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_daemon_that_fails_a_slot_request_is_reported_with_its_status_and_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"error":"store operation failed"}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let err = SlotClient::acquire(&Client::new(addr), &request())
            .await
            .expect_err("the daemon fails");
        let text = err.to_string();
        assert!(matches!(err, slots::Error::DaemonFailed { .. }), "{err:?}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(
            text.contains("500") && text.contains("store operation failed"),
            "{text}"
        );
    }
}
