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

use super::{default_data_dir, Options, DEFAULT_BASE_DOMAIN, DEFAULT_LISTEN};
use crate::cli::ci::ServerArg;
use crate::statefile;
use crate::swarm::Labels;
use clap::{Args, Subcommand, ValueEnum};
use crd::names::BaseDomain;
use crd::WarmApp;

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
    /// The API's bearer token file for mutations (default: `<data-dir>/token`, created with a
    /// random token, mode 0600, on first start).
    #[arg(long, env = "HEARTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
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
}

/// `hearth get`.
#[derive(Debug, Clone, Subcommand)]
pub enum GetCommand {
    /// Warm apps: phase, versions, readiness.
    #[command(alias = "warmapp", alias = "wa")]
    Warmapps(GetArgs),
}

/// Arguments of `hearth get warmapps`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon (its data directory is read directly when no daemon answers).
    #[command(flatten)]
    pub server: ServerArg,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The objects as JSON.
    Json,
}

/// Errors of these commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon failed to start or run.
    #[error(transparent)]
    ServeFailed(#[from] super::Error),
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
    })
}

fn base_domain(s: &str) -> Result<BaseDomain, Error> {
    BaseDomain::parse(s).map_err(|e| Error::ArgumentRejected(format!("--base-domain: {e}")))
}

/// Runs `hearth serve` until SIGINT/SIGTERM.
///
/// # Errors
/// Startup errors ([`super::Error`]) and bad arguments.
pub async fn serve(args: &ServeArgs) -> Result<(), Error> {
    let options = options(args)?;
    let nightly = args.nightly.clone().map(|cron| super::NightlyOptions {
        cron,
        tz: args.nightly_tz.clone(),
        jitter: args.nightly_jitter,
    });
    super::run(options, nightly).await?;
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
            let text = answer.get("text").and_then(|t| t.as_str()).unwrap_or("");
            writeln!(out, "{text}")?;
            Ok(())
        }
        Ok((_, body)) => Err(Error::DaemonRefused(crate::cli::ci::error_message(&body))),
        Err(e) => {
            let dir = args.server.data_dir();
            tracing::info!(server = %addr, error = %e, data_dir = %dir.display(), "no daemon answered; applying to the data directory");
            let store = super::open_store(&dir).await?;
            let diff = statefile::apply(
                &store,
                &set,
                statefile::ApplyOptions {
                    prune: args.prune,
                    dry_run: args.dry_run,
                },
            )
            .await?;
            writeln!(out, "{diff}")?;
            Ok(())
        }
    }
}

/// Runs `hearth get ...`.
///
/// # Errors
/// An unreachable daemon and store, or a failed output.
pub async fn get(command: &GetCommand, out: &mut dyn Write) -> Result<(), Error> {
    let GetCommand::Warmapps(args) = command;
    let client = args.server.client()?;
    let addr = client.addr();
    let apps: Vec<WarmApp> = match client
        .send(
            hyper::Method::GET,
            "/api/v1/warmapps",
            Vec::new(),
            "application/json",
        )
        .await
    {
        Ok((200, body)) => serde_json::from_slice(&body).map_err(|e| Error::DaemonUnreachable {
            addr,
            message: format!("unexpected answer: {e}"),
        })?,
        Ok((_, body)) => return Err(Error::DaemonRefused(crate::cli::ci::error_message(&body))),
        Err(e) => {
            let dir = args.server.data_dir();
            let store = super::open_store(&dir)
                .await
                .map_err(|open| Error::DaemonUnreachable {
                    addr,
                    message: format!("{e}; and the data directory cannot be read: {open}"),
                })?;
            store.list::<WarmApp>().map_err(Error::StoreFailed)?.items
        }
    };
    match args.output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&apps)
                .map_err(|e| Error::DaemonRefused(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        Output::Table => write_table(&apps, out)?,
    }
    Ok(())
}

/// `NAME RECIPE VERSION OBSERVED PHASE READY STACK DECLARED LAST ERROR`: VERSION is the
/// version in force, DECLARED the operator's (they differ while a promotion is in force).
pub fn write_table(apps: &[WarmApp], out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let ready =
                crd::condition::find_condition(&a.status.conditions, crd::condition::types::READY)
                    .map(|c| format!("{:?}", c.status))
                    .unwrap_or_else(|| "Unknown".into());
            vec![
                a.metadata.name.clone(),
                a.spec.recipe.clone(),
                a.spec.version.clone(),
                a.status
                    .observed_version
                    .clone()
                    .unwrap_or_else(|| "-".into()),
                format!("{:?}", a.status.phase),
                ready,
                a.status.stack_name.clone().unwrap_or_else(|| "-".into()),
                a.declared_version().to_string(),
                a.status.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "RECIPE",
        "VERSION",
        "OBSERVED",
        "PHASE",
        "READY",
        "STACK",
        "DECLARED",
        "LAST ERROR",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len() - 1;
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
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
            resync: humantime::parse_duration("2m 30s").unwrap(),
            listen: "off".into(),
            base_domain: "hearth.test".into(),
            labels: vec!["hearth.test=1".into()],
            nightly: None,
            nightly_tz: "UTC".into(),
            nightly_jitter: Duration::ZERO,
            token_file: None,
        };
        let o = options(&args).unwrap();
        assert_eq!(o.resync, Duration::from_secs(150));
        assert_eq!(o.listen, None);
        assert_eq!(o.extra_labels.get("hearth.test").unwrap(), "1");
        let bad = ServeArgs {
            labels: vec!["nolabel".into()],
            ..args
        };
        assert!(options(&bad).is_err());
    }

    #[test]
    fn the_warmapp_table_shows_phase_versions_and_errors() {
        let mut app: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp",
            "metadata": {"name": "web"},
            "spec": {"recipe": "webapp", "version": "2.0.0"}
        }))
        .unwrap();
        app.status.observed_version = Some("1.1.0".into());
        app.status.phase = crd::WarmAppPhase::Degraded;
        app.status.last_error = Some("upgrade to 2.0.0 failed".into());
        let mut out = Vec::new();
        write_table(&[app], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   RECIPE   VERSION   OBSERVED   PHASE"));
        assert!(
            lines[1].contains("web    webapp   2.0.0     1.1.0      Degraded"),
            "{text}"
        );
        assert!(lines[1].ends_with("upgrade to 2.0.0 failed"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("deploy/a b.yml"), "deploy/a%20b.yml");
    }
}
