//! `hearth run exec [run start options] -- CMD…`: one CI job as one command.
//!
//! Starts the run with a lease owner (`--ttl`, default 30 s; or `--owner container:ID`),
//! renews the lease every TTL/3 while CMD runs, gives CMD the run's variables (what `run start
//! -o env` prints), forwards SIGINT and SIGTERM to it, and when it exits finishes the run
//! (verified teardown, slot release; the verdict is the tiers CMD reported, as for `run
//! finish`, and never green when CMD exited non-zero: the finish records `spec.failure`).
//! Exits with CMD's status, or 1 when CMD succeeded but the run's teardown left objects
//! (named on stderr) or — when tiers are required (`--require`) — the run is not green.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use clap::Args;
use crd::OwnerKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use super::ci::{start_body, wait_for_run_stack, Error, RunStartArgs};
use crate::runs::Started;

/// The lease TTL when neither `--ttl` nor a container owner is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// `hearth run exec`.
#[derive(Debug, Clone, Args)]
pub struct RunExecArgs {
    /// What `run start` takes. `--owner` defaults to `lease` here (`pid` is read as `lease`:
    /// this wrapper heartbeats); `--ttl` defaults to 30s.
    #[command(flatten)]
    pub start: RunStartArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// Runs the job; returns the exit code the wrapper exits with.
///
/// # Errors
/// The run could not be started (nothing to finish), or CMD could not be spawned (the run is
/// finished first). Failures after CMD ran are reported on `err` and in the exit code.
pub async fn exec(a: &RunExecArgs, err: &mut dyn Write) -> Result<i32, Error> {
    let (program, args) = a
        .command
        .split_first()
        .ok_or(Error::ExecFailed(crate::slots::exec::Error::CommandMissing))?;
    let s = &a.start;
    let client = s.server.client()?;
    let kind = match &s.owner {
        OwnerKind::Container(id) => OwnerKind::Container(id.clone()),
        OwnerKind::Pid | OwnerKind::Lease => OwnerKind::Lease,
    };
    let ttl_text = s
        .ttl
        .clone()
        .unwrap_or_else(|| humantime::format_duration(DEFAULT_TTL).to_string());
    let ttl = humantime::parse_duration(&ttl_text).map_err(|e| Error::RequestRefused {
        method: "POST".into(),
        path: "/api/v1/runs".into(),
        status: 400,
        message: format!("--ttl {ttl_text:?}: {e}"),
    })?;
    let pid = s.owner_pid.unwrap_or_else(std::process::id);
    let owner = crate::liveness::owner_of(pid)
        .map_err(Error::OwnerUnidentified)?
        .with_kind(kind);
    let since = std::time::SystemTime::now();
    let body = start_body(s, owner, Some(&ttl_text))?;
    let started: Started = client.post("/api/v1/runs", &body).await?;
    writeln!(err, "hearth: run {} started", started.run)?;
    if s.deploy && !s.wait.detach {
        if let Err(e) = wait_for_run_stack(&started, since, &s.wait, err).await {
            let _ = finish(&client, &started.run, None, err).await;
            return Err(e);
        }
    }
    let child = tokio::process::Command::new(program)
        .args(args)
        .envs(started.env_vars())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(source) => {
            let _ = finish(
                &client,
                &started.run,
                Some("command not started".into()),
                err,
            )
            .await;
            return Err(Error::ExecFailed(crate::slots::exec::Error::SpawnFailed {
                command: program.clone(),
                source,
            }));
        }
    };
    let child_pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut terminations = signal(SignalKind::terminate())?;
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let heartbeat = format!("/api/v1/runs/{}/heartbeat", started.run);
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status,
            _ = interrupts.recv() => Signal::SIGINT,
            _ = terminations.recv() => Signal::SIGTERM,
            _ = ticks.tick() => {
                let renewed: Result<serde_json::Value, Error> =
                    client.post(&heartbeat, &serde_json::json!({})).await;
                if let Err(e) = renewed {
                    writeln!(err, "hearth: heartbeat of run {} failed: {}", started.run, crate::errors::chain(&e))?;
                }
                continue;
            }
        };
        if let Some(pid) = child_pid {
            // The child may have exited in between: nothing to forward to then.
            let _ = kill(pid, forward);
        }
    };
    let code = match status {
        Ok(status) => status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1),
        Err(e) => {
            writeln!(err, "hearth: cannot wait for the command: {e}")?;
            1
        }
    };
    let failure = (code != 0).then(|| format!("command exited {code}"));
    let ended = finish(&client, &started.run, failure, err).await?;
    // A job that required tiers is green only if its run is: CMD's 0 does not hide a run
    // whose required tier was skipped, failed or never reported.
    let red = !s.require.is_empty() && ended != Ended::Green;
    Ok(if code == 0 && (ended == Ended::Unclean || red) {
        1
    } else {
        code
    })
}

/// How the finished run ended, as far as the wrapper's exit status cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Succeeded, teardown verified.
    Green,
    /// Over and torn down, but not green.
    Red,
    /// Teardown left objects, or the finish failed.
    Unclean,
}

/// Finishes the run (`failure`: the command failed, why: the run is then not green); says on
/// `err` how it ended.
async fn finish(
    client: &super::ci::Client,
    run: &str,
    failure: Option<String>,
    err: &mut dyn Write,
) -> Result<Ended, Error> {
    let answer: Result<crd::Run, Error> = client
        .post(
            &format!("/api/v1/runs/{run}/finish"),
            &serde_json::json!({ "failure": failure }),
        )
        .await;
    match answer {
        Ok(r) if r.status.residuals.is_empty() && r.status.phase.is_terminal() => {
            writeln!(
                err,
                "hearth: run {run}: {:?}; teardown verified",
                r.status.phase
            )?;
            Ok(if r.status.phase == crd::RunPhase::Succeeded {
                Ended::Green
            } else {
                Ended::Red
            })
        }
        Ok(r) => {
            writeln!(
                err,
                "hearth: run {run}: {:?}; teardown left {}: {}",
                r.status.phase,
                r.status.residuals.len(),
                r.status.residuals.join(", ")
            )?;
            Ok(Ended::Unclean)
        }
        Err(e) => {
            writeln!(
                err,
                "hearth: finishing run {run} failed: {}",
                crate::errors::chain(&e)
            )?;
            Ok(Ended::Unclean)
        }
    }
}
