//! An exclusive, pid-naming lock on a data directory (flock on `<dir>/hearth.lock`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::engine::Error;

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "hearth.lock";

/// Held for as long as the directory is open; the kernel releases it when the process dies,
/// so a SIGKILLed holder never leaves a stale lock behind.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock and records our pid in it.
    ///
    /// # Errors
    /// [`Error::DirectoryInUse`] naming the holder's pid when another open file description
    /// (another process, or another open in this one) holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, Error> {
        let path = dir.join(LOCK_FILE);
        let unusable = |source| Error::DirectoryUnusable {
            path: dir.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unusable)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(Error::DirectoryInUse {
                    path: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                })
            }
            Err((_, errno)) => return Err(unusable(std::io::Error::from(errno))),
        };
        write_pid(&mut file, std::process::id()).map_err(unusable)?;
        Ok(DirLock { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File, pid: u32) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{pid}")?;
    file.sync_all()
}

/// The lock file path for `dir` (for messages and tests).
#[cfg(test)]
pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn second_acquire_should_name_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        match err {
            Error::DirectoryInUse { pid, .. } => assert_eq!(pid, Some(std::process::id())),
            other => panic!("unexpected error: {other}"),
        }
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn lock_file_should_hold_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(lock_path(dir.path())).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
