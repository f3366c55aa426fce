//! The `hearth` command line: the clap command tree and what each command runs.
//!
//! Each top-level command is one variant of [`Command`] with its own module (`stack` now;
//! `serve`, `apply`, `get`, `run`, `slot`, `sweep`, `promote` are added as siblings). Commands
//! write their results to the writers they are given, so tests run them without a terminal.

pub mod ci;
pub mod objects;
pub mod progress;
pub mod promote;
pub mod render;
pub mod run_exec;
pub mod shell;
pub mod stack;
pub mod token;

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};

use crate::swarm::{self, DockerSwarm, Swarm};

/// hearth: a reconciling controller for Docker Swarm.
#[derive(Debug, Parser)]
#[command(name = "hearth", version = shell::VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `controller=debug`.
    #[arg(long, env = "HEARTH_LOG", default_value = "warn", global = true)]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy, remove and inspect stacks directly on Docker (in place of `docker stack`).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Run the daemon: keep the warm apps of the state file deployed, healthy and current.
    Serve(Box<objects::ServeArgs>),
    /// Validate a state file and apply it (through the running daemon, else to the store).
    Apply(objects::ApplyArgs),
    /// Show resources: warmapps, runs, slotpools, history (asks the running daemon).
    #[command(subcommand)]
    Get(objects::GetCommand),
    /// Show one resource in detail with its recent history: `describe KIND NAME`.
    Describe(objects::ObjectArgs),
    /// Delete a resource through the daemon: `delete KIND NAME` (a warm app's stack is torn
    /// down; a run must be finished; a pool must be idle).
    Delete(objects::ObjectArgs),
    /// Hold a slot of a pool while a command runs (through the daemon).
    #[command(subcommand)]
    Slot(ci::SlotCommand),
    /// Start, heartbeat, report and finish CI runs (through the daemon).
    #[command(subcommand)]
    Run(ci::RunCommand),
    /// Sweep orphaned objects now, list them with --dry-run, or run the full nightly sweep
    /// with --now (through the daemon).
    Sweep(ci::SweepArgs),
    /// Promote a warm app to a version (health-gated upgrade, rolled back on failure).
    Promote(promote::PromoteArgs),
    /// Roll a warm app back to the version before its last promotion that became Ready.
    Rollback(promote::RollbackArgs),
    /// Print a shell completion script: `hearth completions bash|zsh|fish`.
    Completions(shell::CompletionsArgs),
    /// Exit 0 when the daemon answers `GET /healthz` (the image's health check).
    Healthcheck(shell::HealthcheckArgs),
    /// Create, list and revoke the API's named tokens (scopes read, ci, admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Errors of CLI commands. None is retried by the CLI; the exit code is non-zero for all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker daemon could not be reached (or is not a swarm manager).
    #[error("cannot talk to docker")]
    DockerUnreachable(#[source] swarm::Error),
    /// The daemon is reachable but not an active swarm manager.
    #[error("docker is not an active swarm manager (swarm state: {0}); run `docker swarm init`")]
    SwarmInactive(String),
    /// The compose files could not be translated.
    #[error("compose files rejected")]
    ComposeRejected(#[from] crate::compose::Error),
    /// An env file could not be read.
    #[error("cannot read env file {path}")]
    EnvFileUnreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An env file line is not `KEY=VALUE`.
    #[error("{path}:{line}: {message}")]
    EnvFileRejected {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A stack operation failed.
    #[error(transparent)]
    StackFailed(#[from] crate::stack::Error),
    /// A swarm call made directly by a command failed.
    #[error(transparent)]
    SwarmFailed(#[from] swarm::Error),
    /// The stack has nothing to show or remove.
    #[error("nothing found in stack: {0}")]
    StackNotFound(String),
    /// The stack was not ready when the wait's timeout passed.
    #[error("stack {namespace} not ready after {after}: {why}")]
    NotReady {
        /// The stack.
        namespace: String,
        /// How long it waited.
        after: String,
        /// What was not ready.
        why: String,
    },
    /// A service's tasks kept failing while the stack was waited for
    /// ([`progress::FAILURES_TO_GIVE_UP`] per wanted task).
    #[error("stack {namespace} failed to converge after {after}: tasks of {service} keep failing: {failures}")]
    ConvergenceFailed {
        /// The stack.
        namespace: String,
        /// How long it waited.
        after: String,
        /// The service whose tasks failed.
        service: String,
        /// The last failed tasks with their errors, as `docker service ps --no-trunc` shows them.
        failures: String,
    },
    /// Writing the output failed (closed pipe).
    #[error("cannot write output")]
    OutputFailed(#[from] std::io::Error),
    /// `serve`, `apply` or `get` failed.
    #[error(transparent)]
    DaemonFailed(#[from] objects::Error),
    /// A CI command (slot, run, sweep) failed.
    #[error(transparent)]
    CiFailed(#[from] ci::Error),
    /// A `KEY=VALUE` argument is malformed.
    #[error("invalid argument: {0}")]
    ArgumentRejected(String),
    /// `healthcheck`: the daemon did not answer `/healthz` with 200.
    #[error("hearth at {addr} is not healthy: {why}")]
    Unhealthy {
        /// The daemon's address.
        addr: String,
        /// What failed.
        why: String,
    },
    /// A `token` command failed.
    #[error(transparent)]
    TokenFailed(#[from] crate::access::tokens_file::Error),
}

/// Builds the node endpoints of `--node-endpoint <node-id-or-hostname>=unix:///path`
/// arguments: each daemon is connected (and its API version negotiated) only when a teardown
/// needs that node, with the default call deadline.
///
/// # Errors
/// [`Error::ArgumentRejected`] naming a malformed argument.
pub fn node_daemons(args: &[String]) -> Result<crate::stack::NodeDaemons, Error> {
    let mut daemons = crate::stack::NodeDaemons::new();
    for arg in args {
        let (node, socket) = crate::stack::nodes::parse_endpoint(arg)
            .map_err(|e| Error::ArgumentRejected(format!("--node-endpoint: {e}")))?;
        let url = format!("unix://{}", socket.display());
        let connect: crate::stack::nodes::Connect = std::sync::Arc::new(move || {
            let socket = socket.clone();
            Box::pin(async move {
                let daemon = DockerSwarm::connect(crate::swarm::DockerOptions {
                    socket,
                    ..crate::swarm::DockerOptions::default()
                })
                .await?;
                Ok(std::sync::Arc::new(daemon) as std::sync::Arc<dyn crate::swarm::Swarm>)
            })
        });
        daemons.add(node, url, connect);
    }
    Ok(daemons)
}

/// Connects to the local daemon and checks it can manage a swarm.
///
/// # Errors
/// [`Error::DockerUnreachable`], [`Error::SwarmInactive`].
pub async fn connect() -> Result<DockerSwarm, Error> {
    let swarm = DockerSwarm::connect_local()
        .await
        .map_err(Error::DockerUnreachable)?;
    check_swarm(&swarm).await?;
    Ok(swarm)
}

/// Checks the daemon is an active swarm manager.
///
/// # Errors
/// [`Error::DockerUnreachable`], [`Error::SwarmInactive`].
async fn check_swarm(swarm: &DockerSwarm) -> Result<(), Error> {
    let info = swarm.info().await.map_err(Error::DockerUnreachable)?;
    if !info.is_active_manager() {
        return Err(Error::SwarmInactive(info.local_node_state));
    }
    Ok(())
}

/// Runs a stack command with the swarm check alongside instead of before it.
///
/// The check costs ~10 ms (the daemon gathers its whole `info`); run first, it delayed every
/// command, `stack rm --force` by ~1.5 % of its time (issue 3). Running alongside is safe:
/// every stack command lists before it writes, and on a node that is not an active manager
/// those listings fail; when the check fails, the command is dropped and the check's error
/// is returned (the listings' "not a swarm manager" may be retried, so they are not waited
/// for).
///
/// # Errors
/// [`Error::DockerUnreachable`], [`Error::SwarmInactive`], or the command's.
async fn run_stack(
    command: stack::StackCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let swarm = DockerSwarm::connect_local()
        .await
        .map_err(Error::DockerUnreachable)?;
    let mut checked = std::pin::pin!(check_swarm(&swarm));
    let mut ran = std::pin::pin!(stack::run(&swarm, command, out, err));
    tokio::select! {
        c = &mut checked => {
            c?;
            ran.await
        }
        r = &mut ran => {
            checked.await?;
            r
        }
    }
}

/// Runs a parsed command line, writing results to `out` and notices to `err`.
///
/// # Errors
/// Whatever the command reports; the binary prints it with its causes and exits non-zero.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Error> {
    match cli.command {
        Command::Stack(command) => run_stack(command, out, err).await,
        Command::Serve(args) => Ok(objects::serve(&args).await?),
        Command::Apply(args) => Ok(objects::apply(&args, out).await?),
        Command::Get(command) => Ok(objects::get(&command, out).await?),
        Command::Describe(args) => Ok(objects::describe(&args, out).await?),
        Command::Delete(args) => Ok(objects::delete(&args, out).await?),
        Command::Slot(command) => {
            let code = ci::slot(&command).await?;
            out.flush()?;
            err.flush()?;
            // The wrapper exits with the command's code.
            std::process::exit(code)
        }
        Command::Run(ci::RunCommand::Exec(args)) => {
            let code = run_exec::exec(&args, err).await?;
            out.flush()?;
            err.flush()?;
            // Like `slot exec`: the wrapper exits with the command's code.
            std::process::exit(code)
        }
        Command::Run(command) => Ok(ci::run(&command, out, err).await?),
        Command::Sweep(args) => Ok(ci::sweep(&args, out, err).await?),
        Command::Promote(args) => Ok(promote::promote(&args, out, err).await?),
        Command::Rollback(args) => Ok(promote::rollback(&args, out, err).await?),
        Command::Completions(args) => shell::completions(&args, out),
        Command::Healthcheck(args) => shell::healthcheck(&args, out).await,
        Command::Token(command) => token::run(&command, out, err),
    }
}

/// The one error formatter, [`crate::errors::chain`], under the name commands have used.
pub use crate::errors::chain as error_chain;

/// Writes rows as left-aligned columns separated by three spaces (like docker's tables).
pub(crate) fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn stack_commands_parse_like_docker_stack() {
        let cli = Cli::try_parse_from([
            "hearth",
            "stack",
            "deploy",
            "-c",
            "a.yml",
            "-c",
            "b.yml",
            "--env-file",
            "x.env",
            "web",
        ])
        .unwrap();
        let Command::Stack(stack::StackCommand::Deploy(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.compose_files.len(), 2);
        assert_eq!(args.name, "web");
        let cli = Cli::try_parse_from([
            "hearth",
            "--log-format",
            "json",
            "stack",
            "rm",
            "--force",
            "a",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Stack(stack::StackCommand::Rm(args)) = cli.command else {
            panic!()
        };
        assert!(args.force);
        assert_eq!(args.names, ["a", "b"]);
        assert!(Cli::try_parse_from(["hearth", "stack", "deploy", "web"]).is_err());
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["NAME", "SERVICES"],
            &[
                vec!["a".into(), "2".into()],
                vec!["longer".into(), "10".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME     SERVICES\na        2\nlonger   10\n"
        );
    }

    #[test]
    fn error_chains_show_every_cause_once() {
        let e = Error::EnvFileUnreadable {
            path: "x.env".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            crate::errors::chain(&e),
            "cannot read env file x.env: no such file"
        );
    }
}
