//! The raw key-value engine trait every backend implements; all store semantics live above it.

use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;

use futures::future::BoxFuture;

/// The fixed keyspaces the store uses. An engine keeps each one separately
/// (sled: one tree each) and writes a batch to one keyspace atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Store metadata: the schema version.
    Meta,
    /// Resources of every kind (prefixed by kind) and the store revision counter.
    Objects,
    /// History entries, their per-object index and the next sequence number.
    History,
}

impl Keyspace {
    /// Every keyspace, in a stable order.
    pub const ALL: [Keyspace; 3] = [Keyspace::Meta, Keyspace::Objects, Keyspace::History];

    /// A stable name (the sled tree name).
    pub fn as_str(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::Objects => "objects",
            Keyspace::History => "history",
        }
    }
}

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Removes `key` (no error when absent).
    Delete(Vec<u8>),
}

/// A key range for scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: prefix_end(prefix),
        }
    }

    /// Every key starting with `prefix` and strictly below `below`.
    pub fn prefix_below(prefix: &[u8], below: Vec<u8>) -> Self {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: Bound::Excluded(below),
        }
    }

    /// Whether `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest key first.
    Ascending,
    /// Largest key first.
    Descending,
}

/// Key/value pairs returned by a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A raw storage backend.
///
/// # Guarantees an implementation must give
/// - `apply` writes the whole batch to one keyspace atomically (all or nothing, also across a
///   crash) and is visible to `get`/`scan` as soon as it returns.
/// - `apply_all` does the same for batches to several keyspaces together: after a crash either
///   every batch is there or none is (a state-file apply writes objects and their history
///   entries this way, issue 14).
/// - The future returned by `flush` resolves `Ok` only once every batch applied before the call
///   survives the death of the process. Engines without durability resolve at once.
/// - Only one engine instance per data location exists at a time (exclusive open).
///
/// Concurrency control, revisions, generations and the change feed are *not* the engine's job:
/// the [`Store`](crate::Store) serialises writes above it, so every engine behaves identically.
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// Where the data lives, for messages ("/var/lib/hearth" or "memory").
    fn location(&self) -> String;
    /// Reads one key.
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Reads up to `limit` pairs inside `range`, in `order`.
    fn scan(
        &self,
        space: Keyspace,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, Error>;
    /// Applies `ops` to `space` atomically.
    fn apply(&self, space: Keyspace, ops: Vec<Op>) -> Result<(), Error> {
        self.apply_all(vec![(space, ops)])
    }
    /// Applies every batch (each to its keyspace) atomically as one.
    fn apply_all(&self, batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), Error>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> BoxFuture<'static, Result<(), Error>>;
    /// Bytes the data occupies on disk (in-memory engines: bytes held).
    fn size_on_disk(&self) -> Result<u64, Error>;
    /// For an engine that mirrors data another process writes (a standby following etcd):
    /// every change it applied to its mirror, in commit order, once (the first call takes the
    /// receiver; later calls and every other engine answer `None`). The store turns them into
    /// its change feed. Such an engine refuses `apply`.
    fn follow(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Followed>> {
        None
    }
}

/// One commit of another writer (or a reload after etcd compacted the history), as applied to
/// a following engine's mirror: every key whose value it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    /// The changed keys, each once.
    pub keys: Vec<FollowedKey>,
}

/// One key a [`Followed`] commit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedKey {
    /// Its keyspace.
    pub space: Keyspace,
    /// The key inside the keyspace.
    pub key: Vec<u8>,
    /// The value before (`None`: absent).
    pub before: Option<Vec<u8>>,
    /// The value after (`None`: deleted).
    pub after: Option<Vec<u8>>,
}

/// Errors raised by engines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the data directory. Not retryable until that process exits.
    #[error("data directory {} is already in use by {}", .path.display(), holder(.pid))]
    DirectoryInUse {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid, when its lock file could be read.
        pid: Option<u32>,
    },
    /// The data directory or its lock file could not be prepared. Not retryable.
    #[error("could not prepare data directory {}", .path.display())]
    DirectoryUnusable {
        /// The data directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend failed an operation (I/O error, corruption). Usually not retryable.
    #[error("storage engine at {location} failed to {op}")]
    OperationFailed {
        /// The engine's location.
        location: String,
        /// What was attempted ("open", "read", "write", "flush", ...).
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process holds the etcd prefix (its lease is alive). Not retryable until that
    /// process closes the store or its lease expires.
    #[error("{location} is held by {holder}")]
    LocationHeld {
        /// The etcd location.
        location: String,
        /// What the holder wrote into the holder key (`host pid N`).
        holder: String,
    },
    /// The engine was closed while an operation waited on it. Not retryable.
    #[error("storage engine was closed")]
    Closed,
    /// The engine only mirrors what another process writes (an etcd standby). Not retryable
    /// here: send the write to the holder.
    #[error("{location} is read-only here: this process follows the holder's writes")]
    ReadOnly {
        /// The engine's location.
        location: String,
    },
}

fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another process (pid unknown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_should_cover_exactly_the_prefixed_keys() {
        let range = KeyRange::prefix(b"o/Run/");
        assert!(range.contains(b"o/Run/a"));
        assert!(range.contains(b"o/Run/"));
        assert!(!range.contains(b"o/Run"));
        assert!(!range.contains(b"o/RunX/a"));
        assert!(!range.contains(b"o/WarmApp/a"));
    }

    #[test]
    fn prefix_of_max_bytes_should_be_unbounded_above() {
        assert_eq!(prefix_end(&[0xff, 0xff]), Bound::Unbounded);
        assert_eq!(prefix_end(&[1, 0xff]), Bound::Excluded(vec![2]));
    }

    #[test]
    fn directory_in_use_should_name_the_pid() {
        let err = Error::DirectoryInUse {
            path: PathBuf::from("/x"),
            pid: Some(1234),
        };
        assert_eq!(
            err.to_string(),
            "data directory /x is already in use by pid 1234"
        );
        let err = Error::DirectoryInUse {
            path: PathBuf::from("/x"),
            pid: None,
        };
        assert!(err.to_string().contains("pid unknown"));
    }
}
