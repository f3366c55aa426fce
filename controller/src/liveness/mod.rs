//! Owner liveness: who this process is, and whether a recorded owner (a process, a container, or a lease alone) is still alive.
//!
//! Each [`OwnerKind`] is judged its own way ([`Owners`] dispatches):
//! - `pid`: this is the only module that reads `/proc`. The owner is alive only if a process
//!   with its PID exists on this host, in this boot, with the same start time
//!   (`/proc/<pid>/stat` field 22), so a PID reused by another process is never taken for the
//!   owner. A zombie (killed but not yet reaped by its parent) counts as dead: it runs no code
//!   any more.
//! - `container:ID`: alive while that container runs on the swarm's engine, as Docker events
//!   and inspections tell ([`containers`]).
//! - `lease`: always [`Liveness::Unknown`]: only the lease's expiry ends such a run, so its
//!   creating process may exit and later steps keep it alive with heartbeats.
//!
//! # Promptness
//! Death is detected by polling (the slot reclaimer and the sweeper check owners every
//! ~200 ms), not by pidfd: waiting on a pidfd needs either `unsafe` or a crate outside the
//! workspace's dependency set, and reading one small `/proc` file per owner every 200 ms costs
//! nothing measurable. Owners on other hosts (or an earlier boot) are [`Liveness::Unknown`]:
//! only their lease expiry tells.

pub mod containers;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crd::{Owner, OwnerKind};

pub use containers::{ContainerWatch, WatchWorker};

/// Whether an owner process is alive, as seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// A process with the owner's PID and start time runs on this host and boot.
    Alive,
    /// The owner ran on this host and boot and is gone (no such PID, a different start time,
    /// or a zombie).
    Dead,
    /// The owner ran on another host or in another boot, or `/proc` could not be read: only
    /// lease expiry can tell.
    Unknown,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `/proc` file could not be read or parsed. Not retryable for a given PID (the process
    /// is gone or `/proc` is not mounted).
    #[error("reading {path} failed")]
    ProcReadFailed {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A `/proc/<pid>/stat` line did not have the expected shape. Not retryable.
    #[error("{path} could not be parsed: {reason}")]
    StatUnparsable {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Answers "is this owner alive?"; [`ProcLiveness`] is the real one, tests may script one.
pub trait Checker: Send + Sync + std::fmt::Debug {
    /// Whether `owner` is alive.
    fn check(&self, owner: &Owner) -> Liveness;
}

/// What `/proc/<pid>/stat` says about a process that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, `X`...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the *last* `)`.
///
/// # Errors
/// A static reason when the line does not have the expected shape.
pub fn parse_stat(line: &str) -> Result<ProcStat, &'static str> {
    let close = line
        .rfind(')')
        .ok_or("no closing parenthesis after the command")?;
    let rest = line.get(close + 1..).ok_or("nothing after the command")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is at index 22 - 3 = 19.
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or("missing state field")?;
    let start_time = fields
        .get(19)
        .ok_or("missing start time field")?
        .parse::<u64>()
        .map_err(|_| "start time is not a number")?;
    Ok(ProcStat { state, start_time })
}

/// Reads `/proc/<pid>/stat`; `Ok(None)` when no such process exists.
///
/// # Errors
/// [`Error::ProcReadFailed`] for other I/O errors, [`Error::StatUnparsable`].
pub fn read_stat(pid: u32) -> Result<Option<ProcStat>> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    match procfs_read(&path) {
        Ok(line) => parse_stat(&line)
            .map(Some)
            .map_err(|reason| Error::StatUnparsable { path, reason }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ESRCH: the process went away between open and read.
        Err(e) if e.raw_os_error() == Some(3) => Ok(None),
        Err(source) => Err(Error::ProcReadFailed { path, source }),
    }
}

fn procfs_read(path: &std::path::Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

fn read_trimmed(path: &str) -> Result<String> {
    procfs_read(std::path::Path::new(path))
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::ProcReadFailed {
            path: path.into(),
            source,
        })
}

/// This host's name and boot id: which owners this host can check directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// `/proc/sys/kernel/hostname`.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

impl HostIdentity {
    /// Reads this host's identity.
    ///
    /// # Errors
    /// [`Error::ProcReadFailed`] when `/proc` is not readable.
    pub fn current() -> Result<HostIdentity> {
        Ok(HostIdentity {
            host: read_trimmed("/proc/sys/kernel/hostname")?,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
        })
    }
}

/// The owner record of process `pid` on this host (e.g. `hearth run start --owner-pid PID`).
///
/// # Errors
/// [`Error::ProcReadFailed`] when no such process exists or `/proc` is unreadable,
/// [`Error::StatUnparsable`].
pub fn owner_of(pid: u32) -> Result<Owner> {
    let host = HostIdentity::current()?;
    let stat = read_stat(pid)?.ok_or_else(|| Error::ProcReadFailed {
        path: format!("/proc/{pid}/stat").into(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such process"),
    })?;
    Ok(Owner {
        kind: crd::OwnerKind::Pid,
        pid,
        process_start_time: stat.start_time,
        host: host.host,
        boot_id: host.boot_id,
    })
}

/// The owner record of the current process.
///
/// # Errors
/// As [`owner_of`].
pub fn current_owner() -> Result<Owner> {
    owner_of(std::process::id())
}

/// Decides liveness from what `/proc` shows for the owner's PID on the owner's own host.
/// Pure: `stat` is `None` when no process has that PID.
pub fn judge(owner: &Owner, host: &HostIdentity, stat: Option<ProcStat>) -> Liveness {
    if !owner.same_machine_boot(&host.host, &host.boot_id) {
        return Liveness::Unknown;
    }
    match stat {
        None => Liveness::Dead,
        // A different start time: the PID was reused by another process.
        Some(s) if s.start_time != owner.process_start_time => Liveness::Dead,
        // Zombie or dead-but-listed: it runs no code any more.
        Some(s) if matches!(s.state, 'Z' | 'X' | 'x') => Liveness::Dead,
        Some(_) => Liveness::Alive,
    }
}

/// Liveness from this host's `/proc`.
#[derive(Debug, Clone)]
pub struct ProcLiveness {
    host: HostIdentity,
}

impl ProcLiveness {
    /// A checker for this host.
    ///
    /// # Errors
    /// As [`HostIdentity::current`].
    pub fn new() -> Result<ProcLiveness> {
        Ok(ProcLiveness {
            host: HostIdentity::current()?,
        })
    }

    /// This host's identity.
    pub fn host(&self) -> &HostIdentity {
        &self.host
    }
}

impl Checker for ProcLiveness {
    /// `pid` owners from `/proc`; other kinds are [`Liveness::Unknown`] here (see [`Owners`]).
    fn check(&self, owner: &Owner) -> Liveness {
        if owner.kind != OwnerKind::Pid {
            return Liveness::Unknown;
        }
        if !owner.same_machine_boot(&self.host.host, &self.host.boot_id) {
            return Liveness::Unknown;
        }
        match read_stat(owner.pid) {
            Ok(stat) => judge(owner, &self.host, stat),
            Err(e) => {
                tracing::warn!(pid = owner.pid, error = %e, "owner liveness unknown");
                Liveness::Unknown
            }
        }
    }
}

/// The daemon's checker: every owner kind, each judged its own way.
#[derive(Debug, Clone)]
pub struct Owners {
    processes: ProcLiveness,
    containers: Arc<ContainerWatch>,
}

impl Owners {
    /// Judges `pid` owners with `processes` and container owners by `containers` (kept
    /// current by a [`WatchWorker`]).
    pub fn new(processes: ProcLiveness, containers: Arc<ContainerWatch>) -> Owners {
        Owners {
            processes,
            containers,
        }
    }
}

impl Checker for Owners {
    fn check(&self, owner: &Owner) -> Liveness {
        // exhaustive on purpose: a new owner kind must decide
        match &owner.kind {
            OwnerKind::Pid => self.processes.check(owner),
            OwnerKind::Container(id) => self.containers.check(id),
            // Only the lease's expiry tells (the sweeper and the slot reclaimer check it).
            OwnerKind::Lease => Liveness::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn each_owner_kind_is_judged_its_own_way() {
        let watch = ContainerWatch::new();
        let owners = Owners::new(ProcLiveness::new().unwrap(), watch.clone());
        let me = current_owner().unwrap();
        assert_eq!(owners.check(&me), Liveness::Alive);
        // A lease owner created by a process that is gone is still not dead: only expiry tells.
        let mut gone = me.clone().with_kind(OwnerKind::Lease);
        gone.process_start_time += 1;
        assert_eq!(owners.check(&gone), Liveness::Unknown);
        gone.kind = OwnerKind::Pid;
        assert_eq!(owners.check(&gone), Liveness::Dead);
        // A container owner is judged by the container, not the creating process.
        let step = gone
            .clone()
            .with_kind(OwnerKind::Container("c0ffee".into()));
        assert_eq!(owners.check(&step), Liveness::Unknown);
        watch.record(
            "c0ffee",
            containers::Seen::Running {
                id: "c0ffee00".into(),
                name: "step".into(),
            },
        );
        assert_eq!(owners.check(&step), Liveness::Alive);
        // The process checker alone cannot tell containers or leases.
        let processes = ProcLiveness::new().unwrap();
        assert_eq!(processes.check(&step), Liveness::Unknown);
        assert_eq!(
            processes.check(&me.clone().with_kind(OwnerKind::Lease)),
            Liveness::Unknown
        );
    }

    #[test]
    fn the_current_process_is_alive() {
        let me = current_owner().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.process_start_time > 0);
        assert!(!me.boot_id.is_empty());
        assert_eq!(ProcLiveness::new().unwrap().check(&me), Liveness::Alive);
    }

    #[test]
    fn a_spawned_then_killed_and_reaped_child_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let owner = owner_of(child.id()).unwrap();
        let checker = ProcLiveness::new().unwrap();
        assert_eq!(checker.check(&owner), Liveness::Alive);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(checker.check(&owner), Liveness::Dead);
    }

    #[test]
    fn a_killed_child_not_yet_reaped_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let owner = owner_of(child.id()).unwrap();
        let checker = ProcLiveness::new().unwrap();
        child.kill().unwrap();
        // Until reaped, the PID stays a zombie with the same start time.
        let mut seen = Liveness::Alive;
        for _ in 0..200 {
            seen = checker.check(&owner);
            if seen == Liveness::Dead {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, Liveness::Dead);
        child.wait().unwrap();
    }

    #[test]
    fn the_same_pid_with_another_start_time_is_a_reused_pid_and_dead() {
        let mut me = current_owner().unwrap();
        me.process_start_time += 1;
        assert_eq!(ProcLiveness::new().unwrap().check(&me), Liveness::Dead);
    }

    #[test]
    fn owners_on_another_host_or_boot_are_unknown() {
        let checker = ProcLiveness::new().unwrap();
        let mut me = current_owner().unwrap();
        me.boot_id = "0000-other-boot".into();
        assert_eq!(checker.check(&me), Liveness::Unknown);
        let mut me = current_owner().unwrap();
        me.host = "elsewhere".into();
        assert_eq!(checker.check(&me), Liveness::Unknown);
    }

    #[test]
    fn stat_lines_with_parentheses_and_spaces_in_the_command_parse() {
        let line = "1234 (we(ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line).unwrap(),
            ProcStat {
                state: 'S',
                start_time: 987654
            }
        );
        assert!(parse_stat("1234 (x) S 1 2").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn judging_is_pure_and_compares_start_time_and_state() {
        let host = HostIdentity {
            host: "h".into(),
            boot_id: "b".into(),
        };
        let owner = Owner {
            kind: crd::OwnerKind::Pid,
            pid: 7,
            process_start_time: 100,
            host: "h".into(),
            boot_id: "b".into(),
        };
        let s = |state, start_time| Some(ProcStat { state, start_time });
        assert_eq!(judge(&owner, &host, s('S', 100)), Liveness::Alive);
        assert_eq!(judge(&owner, &host, s('S', 101)), Liveness::Dead);
        assert_eq!(judge(&owner, &host, s('Z', 100)), Liveness::Dead);
        assert_eq!(judge(&owner, &host, None), Liveness::Dead);
        let other = HostIdentity {
            host: "h".into(),
            boot_id: "c".into(),
        };
        assert_eq!(judge(&owner, &other, None), Liveness::Unknown);
    }
}
