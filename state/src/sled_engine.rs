//! The sled engine: the only module that imports sled; durable, exclusive per data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sled::Transactional;

use crate::dir_lock::DirLock;
use crate::engine::{Engine, Entries, Error, KeyRange, Keyspace, Op, Order};

/// The subdirectory of the data directory holding sled's files.
const SLED_DIR: &str = "sled";
/// sled's page cache budget; our data set (10k runs, 1k apps) is far smaller.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
/// How long to wait for sled's own directory lock when we already hold ours: only a sled
/// instance of this same process that is still shutting down can hold it then.
const SLED_LOCK_GRACE: Duration = Duration::from_secs(5);

/// A sled database in a data directory, locked against other processes.
#[derive(Debug)]
pub struct SledEngine {
    // Field order matters: sled closes before the directory lock is released.
    db: sled::Db,
    meta: sled::Tree,
    objects: sled::Tree,
    history: sled::Tree,
    dir: PathBuf,
    _lock: DirLock,
}

impl SledEngine {
    /// Opens (creating if needed) the data directory `dir`.
    ///
    /// # Errors
    /// - [`Error::DirectoryInUse`] naming the pid of the process that has it open;
    /// - [`Error::DirectoryUnusable`] when the directory or lock file cannot be created;
    /// - [`Error::OperationFailed`] when sled cannot open its files.
    pub fn open(dir: impl AsRef<Path>) -> Result<SledEngine, Error> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::DirectoryUnusable {
            path: dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&dir)?;
        let location = dir.display().to_string();
        let fail = |op| {
            let location = location.clone();
            move |e: sled::Error| Error::OperationFailed {
                location,
                op,
                source: Box::new(e),
            }
        };
        let db = open_db(&dir.join(SLED_DIR)).map_err(fail("open"))?;
        let meta = db
            .open_tree(Keyspace::Meta.as_str())
            .map_err(fail("open"))?;
        let objects = db
            .open_tree(Keyspace::Objects.as_str())
            .map_err(fail("open"))?;
        let history = db
            .open_tree(Keyspace::History.as_str())
            .map_err(fail("open"))?;
        Ok(SledEngine {
            db,
            meta,
            objects,
            history,
            dir,
            _lock: lock,
        })
    }

    fn tree(&self, space: Keyspace) -> &sled::Tree {
        match space {
            Keyspace::Meta => &self.meta,
            Keyspace::Objects => &self.objects,
            Keyspace::History => &self.history,
        }
    }

    fn failed(&self, op: &'static str, e: sled::Error) -> Error {
        Error::OperationFailed {
            location: self.location(),
            op,
            source: Box::new(e),
        }
    }
}

/// Opens sled, waiting briefly when sled's own lock is still held by a closing instance.
fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open();
        match result {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < SLED_LOCK_GRACE =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The position of `space` in [`Keyspace::ALL`].
fn space_index(space: Keyspace) -> usize {
    match space {
        Keyspace::Meta => 0,
        Keyspace::Objects => 1,
        Keyspace::History => 2,
    }
}

/// A sled batch of `ops`.
fn batch(ops: Vec<Op>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for op in ops {
        match op {
            Op::Put(k, v) => batch.insert(k, v),
            Op::Delete(k) => batch.remove(k),
        }
    }
    batch
}

impl Engine for SledEngine {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.tree(space)
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.failed("read", e))
    }

    fn scan(
        &self,
        space: Keyspace,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, Error> {
        let iter = self
            .tree(space)
            .range::<Vec<u8>, _>((range.start.clone(), range.end.clone()));
        let pick = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.failed("scan", e))
        };
        match order {
            Order::Ascending => iter.take(limit).map(pick).collect(),
            Order::Descending => iter.rev().take(limit).map(pick).collect(),
        }
    }

    fn apply(&self, space: Keyspace, ops: Vec<Op>) -> Result<(), Error> {
        self.tree(space)
            .apply_batch(batch(ops))
            .map_err(|e| self.failed("write", e))
    }

    /// One sled transaction over the three trees: sled seals the writes of all of them into
    /// one log batch, which recovery replays whole or not at all.
    fn apply_all(&self, batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), Error> {
        let mut per_space: [Vec<Op>; 3] = Default::default();
        for (space, ops) in batches {
            per_space[space_index(space)].extend(ops);
        }
        let [meta, objects, history] = per_space.map(batch);
        (&self.meta, &self.objects, &self.history)
            .transaction(|(m, o, h)| {
                m.apply_batch(&meta)?;
                o.apply_batch(&objects)?;
                h.apply_batch(&history)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => self.failed("write", e),
                // The closure never aborts.
                sled::transaction::TransactionError::Abort(()) => self.failed(
                    "write",
                    sled::Error::ReportableBug("transaction aborted".into()),
                ),
            })
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), Error>> {
        let db = self.db.clone();
        let location = self.location();
        async move {
            db.flush_async()
                .await
                .map(|_| ())
                .map_err(|e| Error::OperationFailed {
                    location,
                    op: "flush",
                    source: Box::new(e),
                })
        }
        .boxed()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.db
            .size_on_disk()
            .map_err(|e| self.failed("measure size", e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn data_should_survive_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        engine
            .apply(
                Keyspace::Objects,
                vec![Op::Put(b"k".to_vec(), b"v".to_vec())],
            )
            .unwrap();
        engine.flush().await.unwrap();
        drop(engine);
        let engine = SledEngine::open(dir.path()).unwrap();
        assert_eq!(
            engine.get(Keyspace::Objects, b"k").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(engine.get(Keyspace::Meta, b"k").unwrap(), None);
        assert!(engine.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn second_open_in_the_same_process_should_be_refused_with_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _engine = SledEngine::open(dir.path()).unwrap();
        let err = SledEngine::open(dir.path()).unwrap_err();
        let expected = format!(
            "data directory {} is already in use by pid {}",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(err.to_string(), expected);
    }
}
