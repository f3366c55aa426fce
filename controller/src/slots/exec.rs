//! `hearth slot exec`: run a command while holding a slot, release it when the command ends.
//!
//! The wrapper talks to hearth through a [`SlotClient`]. Today the one implementation is
//! [`Slots`] itself (in-process, over the store); because sled allows one process per data
//! directory, the CLI will use an HTTP implementation of the same trait against the daemon
//! (issue 6). If the wrapper is SIGKILLed, nothing releases the slot here: the daemon's
//! [`ReclaimWorker`](super::ReclaimWorker) sees the owner (the wrapper's PID and start time)
//! dead and frees it.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crd::Owner;
use futures::future::BoxFuture;

use super::{Grant, SlotRequest, Slots};

/// Environment variables exported to the command.
pub mod env {
    /// The pool name.
    pub const POOL: &str = "HEARTH_POOL";
    /// The slot index.
    pub const SLOT: &str = "HEARTH_SLOT";
    /// First port of the slot's block.
    pub const PORT_BASE: &str = "HEARTH_PORT_BASE";
    /// Number of ports in the block.
    pub const PORTS: &str = "HEARTH_PORTS";
    /// The slot namespace (`hs-<pool>-<slot>`).
    pub const NAMESPACE: &str = "HEARTH_NAMESPACE";
}

/// What `slot exec` needs from hearth: acquire, heartbeat, release. Object-safe.
pub trait SlotClient: Send + Sync {
    /// Acquires a slot, waiting in line up to the pool's wait timeout.
    fn acquire<'a>(&'a self, req: &'a SlotRequest) -> BoxFuture<'a, super::Result<Grant>>;
    /// Renews a held lease for `ttl`.
    fn heartbeat<'a>(
        &'a self,
        grant: &'a Grant,
        ttl: Duration,
    ) -> BoxFuture<'a, super::Result<Grant>>;
    /// Releases a held lease.
    fn release<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, super::Result<()>>;
}

impl SlotClient for Slots {
    fn acquire<'a>(&'a self, req: &'a SlotRequest) -> BoxFuture<'a, super::Result<Grant>> {
        Box::pin(Slots::acquire(self, req))
    }

    fn heartbeat<'a>(
        &'a self,
        grant: &'a Grant,
        ttl: Duration,
    ) -> BoxFuture<'a, super::Result<Grant>> {
        Box::pin(Slots::heartbeat(
            self,
            &grant.pool,
            grant.slot,
            &grant.owner,
            ttl,
        ))
    }

    fn release<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, super::Result<()>> {
        Box::pin(Slots::release(self, &grant.pool, grant.slot, &grant.owner))
    }
}

/// What to run, and for whom.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The pool.
    pub pool: String,
    /// The lease owner: the wrapper process (normally `liveness::current_owner()`).
    pub owner: Owner,
    /// Lease TTL, renewed every third of it while the command runs; `None` = owner liveness
    /// alone.
    pub ttl: Option<Duration>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The slot it held.
    pub grant: Grant,
    /// Its exit code; `128 + signal` when a signal killed it (as shells report it).
    pub exit_code: i32,
}

/// Errors of `slot exec`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No command was given. Not retryable.
    #[error("no command given")]
    CommandMissing,
    /// Acquiring, renewing or releasing the slot failed. See [`super::Error`].
    #[error(transparent)]
    SlotFailed(#[from] super::Error),
    /// The command could not be started (not found, not executable). Not retryable; the slot
    /// was released.
    #[error("starting {command:?} failed")]
    SpawnFailed {
        /// The program.
        command: OsString,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the command failed. Not retryable.
    #[error("waiting for the command failed")]
    WaitFailed(#[source] std::io::Error),
    /// The lease was lost while the command ran (expired or reclaimed), so the command was
    /// killed: another holder may already use the slot. Retryable (run again).
    #[error("the lease on slot {slot} of pool {pool} was lost while the command ran; the command was killed")]
    LeaseLost {
        /// The pool.
        pool: String,
        /// The slot.
        slot: u32,
        /// Why renewing failed.
        #[source]
        source: super::Error,
    },
}

/// Runs `options.command` while holding a slot of `options.pool`.
///
/// # Guarantees
/// - The command starts only after the slot is granted, with `HEARTH_POOL`, `HEARTH_SLOT`,
///   `HEARTH_PORT_BASE`, `HEARTH_PORTS` and `HEARTH_NAMESPACE` set.
/// - The slot is released when the command ends, fails to start, or the lease is lost; the
///   command's exit code is returned.
/// - If this future is dropped, the command is killed (and the lease is left to the
///   reclaimer, as for a killed wrapper).
///
/// # Errors
/// See [`Error`].
pub async fn exec(client: &dyn SlotClient, options: &ExecOptions) -> Result<ExecOutcome, Error> {
    let (program, args) = options.command.split_first().ok_or(Error::CommandMissing)?;
    let req = SlotRequest {
        pool: options.pool.clone(),
        owner: options.owner.clone(),
        run: None,
        ttl: options.ttl,
    };
    let grant = client.acquire(&req).await?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env(env::POOL, &grant.pool)
        .env(env::SLOT, grant.slot.to_string())
        .env(env::PORT_BASE, grant.port_base.to_string())
        .env(env::PORTS, grant.ports.to_string())
        .env(env::NAMESPACE, &grant.namespace)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(source) => {
            client.release(&grant).await?;
            return Err(Error::SpawnFailed {
                command: program.clone(),
                source,
            });
        }
    };
    let renew_every = options.ttl.map(|t| (t / 3).max(Duration::from_millis(50)));
    let status = loop {
        let tick = async {
            match renew_every {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status.map_err(Error::WaitFailed),
            () = tick => {
                let ttl = options.ttl.unwrap_or_default();
                if let Err(source) = client.heartbeat(&grant, ttl).await {
                    let _ = child.kill().await;
                    // Best effort: the lease is most likely gone already.
                    let _ = client.release(&grant).await;
                    return Err(Error::LeaseLost { pool: grant.pool.clone(), slot: grant.slot, source });
                }
            }
        }
    };
    let released = client.release(&grant).await;
    let status = status?;
    released?;
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExecOutcome { grant, exit_code })
}
