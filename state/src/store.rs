//! The shared store layer: typed, optimistically concurrent, durable access to resources over any [`Engine`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crd::{Kind, Resource};

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, KeyRange, Keyspace, Op, Order};
use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::history::{Entry, NewEntry, Query, Retention};
use crate::keys;
use crate::memory::MemoryEngine;
use crate::schema;
use crate::sled_engine::SledEngine;
use crate::transaction::{PendingOp, Transaction};
use crate::watch::{Change, ChangeType, Subscription};

/// Most history entries retention removes per append (the rest waits for the next append or
/// [`Store::maintenance`]); keeps append latency bounded.
const PRUNE_PER_APPEND: usize = 64;
/// Entries read per step when a history query filters by reason.
const HISTORY_SCAN_CHUNK: usize = 256;

/// Store settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How much history to keep.
    pub history_retention: Retention,
    /// Change-feed buffer per subscriber; a subscriber further behind is told to relist.
    pub feed_capacity: usize,
    /// The time source for creation timestamps and history.
    pub clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history_retention: Retention::default(),
            feed_capacity: 4096,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A list of one kind's objects and the store revision it reflects.
#[derive(Debug, Clone)]
pub struct ObjectList<R> {
    /// The objects, by name.
    pub items: Vec<R>,
    /// Every durable write up to this revision is reflected in `items`; wait for later ones
    /// with [`Store::changed`]`(kind, revision)` or the feed.
    pub revision: u64,
}

/// What [`Store::maintenance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// History entries removed by retention.
    pub history_pruned: u64,
    /// History entries kept.
    pub history_entries: u64,
    /// Bytes on disk afterwards (measured after a flush).
    pub size_on_disk: u64,
}

/// hearth's desired-state store. Cheap to clone; clones share one engine, one writer lock and
/// one change feed, so the reconcile loop and the HTTP server can each hold one.
///
/// # Guarantees
/// - Every mutation (`create`, `update`, `update_status`, `delete`, `append_history`) returns
///   `Ok` only after it is durable (engine flush); concurrent writers share flushes.
/// - `resource_version` is a store-wide revision, strictly increasing across all kinds and
///   across restarts, assigned on every object write. `generation` starts at 1 and is bumped
///   only when `spec` changes. `creation_timestamp_ms` is set on create and kept.
/// - Writes are serialised: for one object, exactly one writer wins per resourceVersion.
/// - A write that changes nothing (same labels, spec and status) does not bump the revision
///   and emits no change, so a controller re-writing the same status makes no churn.
///
/// # Caveats
/// - Reads (`get`, `list`, `history`) see a write as soon as it is applied, slightly before it
///   is durable; the change feed only shows durable writes.
/// - If a write's future is dropped before it resolves, the write may or may not persist.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<dyn Engine>,
    config: Config,
    writer: Mutex<Writer>,
    gate: Arc<Gate>,
    /// Objects decoded by [`Store::get_shared`], by key, each with the bytes it was decoded
    /// from.
    decoded: Mutex<Decoded>,
}

/// Decoded objects by key, each with the bytes it was decoded from.
type Decoded = HashMap<Vec<u8>, (Vec<u8>, Arc<dyn Any + Send + Sync>)>;

/// The most objects [`Store::get_shared`] keeps decoded; past it, all are forgotten at once
/// (the next read of each decodes it again).
const DECODED_CAPACITY: usize = 1 << 16;

/// Counters owned by the single writer.
#[derive(Debug)]
struct Writer {
    /// The last assigned store revision.
    revision: u64,
    /// The next history sequence number.
    history_next: u64,
    /// The oldest history entry kept (== `history_next` when empty).
    history_oldest: u64,
}

/// What a mutation decided to do, given the current object.
pub(crate) enum Plan<R> {
    /// Write this object (its metadata already assigned).
    Put(R, ChangeType),
    /// Delete the current object (returned as is).
    Delete(R),
    /// Nothing changes; return this object.
    Unchanged(R),
}

impl Store {
    /// Opens the sled store in data directory `dir` with default settings.
    ///
    /// # Errors
    /// See [`Store::with_engine`]; an open directory is
    /// [`engine::Error::DirectoryInUse`](crate::engine::Error::DirectoryInUse).
    pub async fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Config::default()).await
    }

    /// Opens the sled store in `dir` with `config`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_with(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let engine = SledEngine::open(dir)?;
        Store::with_engine(Arc::new(engine), config).await
    }

    /// A fresh in-memory store (no durability) with default settings.
    ///
    /// # Errors
    /// Only if the engine fails, which the memory engine does not.
    pub async fn in_memory() -> Result<Store> {
        Store::with_engine(Arc::new(MemoryEngine::new()), Config::default()).await
    }

    /// A store over `engine`: checks (or, when empty, records) the schema version and loads
    /// the revision and history counters.
    ///
    /// # Errors
    /// [`Error::SchemaVersionUnsupported`] for an unknown schema version,
    /// [`Error::MetadataCorrupted`] for unreadable metadata, [`Error::EngineFailed`].
    pub async fn with_engine(engine: Arc<dyn Engine>, config: Config) -> Result<Store> {
        let followed = engine.follow();
        schema::ensure(engine.as_ref(), followed.is_none()).await?;
        let location = engine.location();
        let counter = |space, key: &[u8], default: u64| -> Result<u64> {
            match engine.get(space, key)? {
                None => Ok(default),
                Some(bytes) => keys::trailing_u64(&bytes)
                    .filter(|_| bytes.len() == 8)
                    .ok_or_else(|| Error::MetadataCorrupted {
                        location: location.clone(),
                        detail: format!(
                            "counter {:?} is not 8 bytes",
                            String::from_utf8_lossy(key)
                        ),
                    }),
            }
        };
        let revision = counter(Keyspace::Objects, keys::REVISION, 0)?;
        let history_next = counter(Keyspace::History, keys::HISTORY_NEXT, 1)?;
        let oldest = engine.scan(
            Keyspace::History,
            &KeyRange::prefix(keys::HISTORY_ENTRIES),
            Order::Ascending,
            1,
        )?;
        let history_oldest = oldest
            .first()
            .and_then(|(k, _)| keys::trailing_u64(k))
            .unwrap_or(history_next);
        let gate = Arc::new(Gate::new(&engine, revision, config.feed_capacity));
        tracing::debug!(location, revision, history_next, "store opened");
        if let Some(followed) = followed {
            crate::follow::spawn(followed, Arc::downgrade(&gate), revision);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                config,
                writer: Mutex::new(Writer {
                    revision,
                    history_next,
                    history_oldest,
                }),
                gate,
                decoded: Mutex::default(),
            }),
        })
    }

    /// Where the data lives ("memory" or the data directory).
    pub fn location(&self) -> String {
        self.inner.engine.location()
    }

    // ----- reads -------------------------------------------------------------------------

    /// The object `name` of kind `R`, or `None`.
    ///
    /// # Errors
    /// [`Error::NameRejected`], [`Error::DecodeFailed`], [`Error::EngineFailed`].
    pub fn get_opt<R: Resource>(&self, name: &str) -> Result<Option<R>> {
        check_name(name)?;
        self.inner
            .engine
            .get(Keyspace::Objects, &keys::object(R::KIND, name))?
            .map(|bytes| decode::<R>(&bytes, name))
            .transpose()
    }

    /// [`Store::get_opt`], shared: the object decoded by an earlier call while its stored
    /// bytes are unchanged (compared in full), decoded afresh otherwise. A reconcile reads its
    /// object on every resync; decoding 10,000 warm apps' JSON was ~10 % of a pass (issue 14).
    ///
    /// # Guarantees
    /// Exactly what [`Store::get_opt`] would return now: the bytes are read from the engine
    /// on every call, only their decoding is skipped.
    ///
    /// # Errors
    /// As [`Store::get_opt`].
    pub fn get_shared<R: Resource>(&self, name: &str) -> Result<Option<Arc<R>>> {
        check_name(name)?;
        let key = keys::object(R::KIND, name);
        let Some(bytes) = self.inner.engine.get(Keyspace::Objects, &key)? else {
            self.decoded().remove(&key);
            return Ok(None);
        };
        let kept = self
            .decoded()
            .get(&key)
            .filter(|(decoded_from, _)| *decoded_from == bytes)
            .and_then(|(_, obj)| Arc::clone(obj).downcast::<R>().ok());
        if let Some(obj) = kept {
            return Ok(Some(obj));
        }
        let obj = Arc::new(decode::<R>(&bytes, name)?);
        let mut decoded = self.decoded();
        if decoded.len() >= DECODED_CAPACITY {
            decoded.clear();
        }
        decoded.insert(key, (bytes, Arc::clone(&obj) as _));
        Ok(Some(obj))
    }

    fn decoded(&self) -> MutexGuard<'_, Decoded> {
        // Every update replaces whole entries: a poisoned lock still holds consistent data.
        self.inner
            .decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The object `name` of kind `R`.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] when absent; otherwise as [`Store::get_opt`].
    pub fn get<R: Resource>(&self, name: &str) -> Result<R> {
        self.get_opt(name)?.ok_or_else(|| not_found::<R>(name))
    }

    /// Every object of kind `R`, by name. Reads only that kind's key range.
    ///
    /// # Errors
    /// [`Error::DecodeFailed`], [`Error::EngineFailed`].
    pub fn list<R: Resource>(&self) -> Result<ObjectList<R>> {
        // Read the revision first: every write at or below it is already visible to the scan.
        let revision = self.inner.gate.revision();
        let items = self
            .scan_kind(R::KIND)?
            .into_iter()
            .map(|(name, bytes)| decode::<R>(&bytes, &name))
            .collect::<Result<Vec<R>>>()?;
        Ok(ObjectList { items, revision })
    }

    /// The names of every object of kind `R`, in order, without decoding them (a relist needs
    /// keys only: decoding 10,000 warm apps cost a resync pass as much as their reconciles'
    /// own reads).
    ///
    /// # Errors
    /// [`Error::EngineFailed`].
    pub fn names<R: Resource>(&self) -> Result<Vec<String>> {
        Ok(self
            .scan_kind(R::KIND)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Every stored object of `kind` as (name, encoded bytes), in name order: one scan of
    /// that kind's key range.
    fn scan_kind(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = keys::object_prefix(kind);
        Ok(self
            .inner
            .engine
            .scan(
                Keyspace::Objects,
                &KeyRange::prefix(&prefix),
                Order::Ascending,
                usize::MAX,
            )?
            .into_iter()
            .map(|(key, bytes)| {
                let name = String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default());
                (name.into_owned(), bytes)
            })
            .collect())
    }

    /// The last durable store revision.
    pub fn revision(&self) -> u64 {
        self.inner.gate.revision()
    }

    // ----- writes ------------------------------------------------------------------------

    /// Creates `obj`: generation 1, a new resourceVersion, the creation timestamp; labels, spec
    /// and status as given.
    ///
    /// # Errors
    /// [`Error::ObjectAlreadyExists`], [`Error::NameRejected`], [`Error::FlushFailed`],
    /// [`Error::EngineFailed`].
    pub async fn create<R: Resource>(&self, obj: &R) -> Result<R> {
        self.mutate(obj.name(), plan_create(obj.clone())).await
    }

    /// Replaces labels and spec of `obj` if its resourceVersion is current. The stored status
    /// is kept (write it with [`Store::update_status`]); generation is bumped only when the
    /// spec changed.
    ///
    /// # Errors
    /// [`Error::ResourceVersionMismatched`] for a stale copy, [`Error::ObjectNotFound`],
    /// [`Error::FlushFailed`], [`Error::EngineFailed`].
    pub async fn update<R: Resource>(&self, obj: &R) -> Result<R> {
        self.mutate(obj.name(), plan_update(obj.clone())).await
    }

    /// Replaces only the status with `obj`'s if its resourceVersion is current (labels and
    /// spec of `obj` are ignored). Never bumps generation.
    ///
    /// # Errors
    /// As [`Store::update`].
    pub async fn update_status<R: Resource>(&self, obj: &R) -> Result<R> {
        self.mutate(obj.name(), plan_update_status(obj.clone()))
            .await
    }

    /// Deletes `name`, if `expected_resource_version` (when given) is current. Returns the
    /// object as it was.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`], [`Error::ResourceVersionMismatched`],
    /// [`Error::FlushFailed`], [`Error::EngineFailed`].
    pub async fn delete<R: Resource>(
        &self,
        name: &str,
        expected_resource_version: Option<u64>,
    ) -> Result<R> {
        let plan = plan_delete::<R>(name.to_string(), expected_resource_version);
        self.mutate(name, plan).await
    }

    /// Starts an atomic multi-object write (e.g. create a Run and take its slot lease).
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Reads `name`, lets `plan` decide under the writer lock, applies and registers the write,
    /// then waits for durability outside the lock.
    async fn mutate<R: Resource>(&self, name: &str, plan: impl Planner<R>) -> Result<R> {
        check_name(name)?;
        let key = keys::object(R::KIND, name);
        let (result, ticket) = {
            let mut w = self.inner.lock_writer();
            let engine = &self.inner.engine;
            let current = engine.get(Keyspace::Objects, &key)?;
            let stamp = Stamp {
                revision: w.revision + 1,
                now_ms: self.inner.config.clock.now_ms(),
            };
            match step(name, current.as_deref(), stamp, plan)? {
                // Nothing to write, but still wait: what we read may be another writer's
                // applied but not yet durable write.
                (obj, None) => (obj, self.inner.gate.sync()),
                (obj, Some((op, change))) => {
                    engine.apply(Keyspace::Objects, vec![op, revision_op(stamp.revision)])?;
                    w.revision = stamp.revision;
                    (obj, self.inner.gate.register(Some(change)))
                }
            }
        };
        self.inner.gate.wait(ticket).await?;
        Ok(result)
    }

    /// Applies `ops` (planned against the current objects, in order, each seeing the effect
    /// of the previous ones) and appends `history` in one atomic engine batch; nothing is
    /// written if any op fails.
    pub(crate) async fn commit(
        &self,
        ops: Vec<PendingOp>,
        history: Vec<NewEntry>,
    ) -> Result<Vec<Change>> {
        let (changes, ticket) = {
            let mut w = self.inner.lock_writer();
            let engine = &self.inner.engine;
            let now_ms = self.inner.config.clock.now_ms();
            let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            let mut revision = w.revision;
            let mut writes = Vec::new();
            let mut changes = Vec::new();
            for pending in ops {
                let current = match overlay.get(&pending.key) {
                    Some(bytes) => bytes.clone(),
                    None => engine.get(Keyspace::Objects, &pending.key)?,
                };
                let stamp = Stamp {
                    revision: revision + 1,
                    now_ms,
                };
                if let Some((op, change)) = (pending.run)(current.as_deref(), stamp)? {
                    revision += 1;
                    let after = match &op {
                        Op::Put(_, bytes) => Some(bytes.clone()),
                        Op::Delete(_) => None,
                    };
                    overlay.insert(pending.key, after);
                    writes.push(op);
                    changes.push(change);
                }
            }
            let appended = if history.is_empty() {
                None
            } else {
                Some(self.inner.plan_history(&w, history, now_ms)?)
            };
            if writes.is_empty() && appended.is_none() {
                (changes, self.inner.gate.sync())
            } else {
                let mut batches = Vec::new();
                if !writes.is_empty() {
                    writes.push(revision_op(revision));
                    batches.push((Keyspace::Objects, writes));
                }
                let mut ticket = 0;
                match appended {
                    // Objects only: the single-keyspace batch.
                    None => {
                        for (space, ops) in batches {
                            engine.apply(space, ops)?;
                        }
                    }
                    Some(appended) => {
                        batches.push((Keyspace::History, appended.ops));
                        engine.apply_all(batches)?;
                        w.history_next = appended.next;
                        w.history_oldest = appended.oldest;
                        ticket = self.inner.gate.register(None);
                    }
                }
                w.revision = revision;
                for change in &changes {
                    ticket = self.inner.gate.register(Some(change.clone()));
                }
                (changes, ticket)
            }
        };
        self.inner.gate.wait(ticket).await?;
        Ok(changes)
    }

    // ----- change feed -------------------------------------------------------------------

    /// Subscribes to every durable write from now on, in revision order.
    ///
    /// To follow a kind without gaps: subscribe, then `list`, then apply changes with a
    /// `resource_version` above the list's `revision`; on [`watch::Error::Lagged`](crate::watch::Error) relist.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.inner.gate.subscribe())
    }

    /// Resolves once a durable write to kind `kind` has a revision above `after`, returning
    /// that kind's latest revision. Never lags: the cheap "something changed, relist" trigger.
    ///
    /// # Caveats
    /// Right after opening, the first call for any kind with `after` below the store revision
    /// resolves at once (per-kind revisions are not persisted); a relist then is harmless.
    pub async fn changed(&self, kind: Kind, after: u64) -> u64 {
        let mut rx = self.inner.gate.kind_revision(kind);
        let result = rx.wait_for(|rev| *rev > after).await.map(|rev| *rev);
        // The sender lives in the gate, which `self` keeps alive; an error cannot happen.
        result.unwrap_or(after)
    }

    // ----- history -----------------------------------------------------------------------

    /// Appends a history entry durably, then applies retention (bounded work per append).
    ///
    /// # Errors
    /// [`Error::NameRejected`] for a bad subject name, [`Error::FlushFailed`],
    /// [`Error::EngineFailed`].
    pub async fn append_history(&self, entry: NewEntry) -> Result<Entry> {
        if let Some(subject) = &entry.subject {
            check_name(&subject.name)?;
        }
        let now = self.inner.config.clock.now_ms();
        let (stored, ticket) = {
            let mut w = self.inner.lock_writer();
            let mut appended = self.inner.plan_history(&w, vec![entry], now)?;
            self.inner.engine.apply(Keyspace::History, appended.ops)?;
            w.history_next = appended.next;
            w.history_oldest = appended.oldest;
            let stored = appended
                .entries
                .pop()
                .ok_or_else(|| Error::MetadataCorrupted {
                    location: self.location(),
                    detail: "a history append planned no entry".into(),
                })?;
            (stored, self.inner.gate.register(None))
        };
        self.inner.gate.wait(ticket).await?;
        Ok(stored)
    }

    /// History entries matching `query`, newest first.
    ///
    /// # Errors
    /// [`Error::DecodeFailed`], [`Error::EngineFailed`].
    pub fn history(&self, query: &Query) -> Result<Vec<Entry>> {
        let engine = &self.inner.engine;
        let mut out = Vec::new();
        let mut before = query.before;
        // With a subject, walk its index; otherwise walk all entries.
        let prefix = match &query.subject {
            Some(s) => {
                check_name(&s.name)?;
                keys::history_index_prefix(s.kind, &s.name)
            }
            None => keys::HISTORY_ENTRIES.to_vec(),
        };
        while out.len() < query.limit {
            let range = match before {
                Some(seq) => {
                    let mut below = prefix.clone();
                    below.extend_from_slice(&seq.to_be_bytes());
                    KeyRange::prefix_below(&prefix, below)
                }
                None => KeyRange::prefix(&prefix),
            };
            let chunk_len = if query.reason.is_some() {
                HISTORY_SCAN_CHUNK
            } else {
                query.limit - out.len()
            };
            let chunk = engine.scan(Keyspace::History, &range, Order::Descending, chunk_len)?;
            let exhausted = chunk.len() < chunk_len;
            for (key, value) in chunk {
                let Some(seq) = keys::trailing_u64(&key) else {
                    continue;
                };
                before = Some(seq);
                let bytes = if query.subject.is_some() {
                    // An index key whose entry retention removed concurrently is skipped.
                    match engine.get(Keyspace::History, &keys::history_entry(seq))? {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                } else {
                    value
                };
                let entry: Entry = decode_value(&bytes, "history entry")?;
                if query.matches(&entry) && out.len() < query.limit {
                    out.push(entry);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(out)
    }

    /// Removes every history entry retention no longer keeps; returns how many.
    ///
    /// # Errors
    /// [`Error::FlushFailed`], [`Error::EngineFailed`].
    pub async fn prune_history(&self) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let ticket = {
                let mut w = self.inner.lock_writer();
                let now = self.inner.config.clock.now_ms();
                let (ops, oldest) =
                    self.inner
                        .plan_prune(&w, w.history_next, now, HISTORY_SCAN_CHUNK)?;
                if ops.is_empty() {
                    None
                } else {
                    pruned += oldest - w.history_oldest;
                    self.inner.engine.apply(Keyspace::History, ops)?;
                    w.history_oldest = oldest;
                    Some(self.inner.gate.register(None))
                }
            };
            match ticket {
                Some(ticket) => self.inner.gate.wait(ticket).await?,
                None => return Ok(pruned),
            }
        }
    }

    // ----- small named values --------------------------------------------------------------

    /// A small named value (e.g. the nightly job's last completed window and cursor), or
    /// `None` when never written. Values live outside the resource kinds and the change feed.
    ///
    /// # Errors
    /// [`Error::NameRejected`], [`Error::DecodeFailed`], [`Error::EngineFailed`].
    pub fn get_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_name(key)?;
        self.inner
            .engine
            .get(Keyspace::Meta, &keys::value(key))?
            .map(|bytes| decode_value(&bytes, &format!("value {key}")))
            .transpose()
    }

    /// Writes a small named value durably (last write wins; no revision, no change event).
    ///
    /// # Errors
    /// [`Error::NameRejected`], [`Error::EncodeFailed`], [`Error::FlushFailed`],
    /// [`Error::EngineFailed`].
    pub async fn put_value<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        check_name(key)?;
        let bytes = encode(value, &format!("value {key}"))?;
        let ticket = {
            let _w = self.inner.lock_writer();
            let op = Op::Put(keys::value(key), bytes);
            self.inner.engine.apply(Keyspace::Meta, vec![op])?;
            self.inner.gate.register(None)
        };
        self.inner.gate.wait(ticket).await
    }

    // ----- maintenance -------------------------------------------------------------------

    /// Bytes the store occupies on disk.
    ///
    /// # Errors
    /// [`Error::EngineFailed`].
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.engine.size_on_disk()?)
    }

    /// The nightly hook: applies history retention fully, flushes the engine (so the size is
    /// what is on disk) and reports the history's length and the size.
    ///
    /// # Errors
    /// As [`Store::prune_history`]; [`Error::FlushFailed`] when the flush fails.
    pub async fn maintenance(&self) -> Result<MaintenanceReport> {
        let history_pruned = self.prune_history().await?;
        self.inner
            .engine
            .flush()
            .await
            .map_err(|e| Error::FlushFailed {
                message: e.to_string(),
            })?;
        let history_entries = {
            let w = self.inner.lock_writer();
            w.history_next.saturating_sub(w.history_oldest)
        };
        let size_on_disk = self.size_on_disk()?;
        tracing::info!(
            history_pruned,
            history_entries,
            size_on_disk,
            "store maintenance done"
        );
        Ok(MaintenanceReport {
            history_pruned,
            history_entries,
            size_on_disk,
        })
    }
}

impl Inner {
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // Writer state is only changed after a successful apply, so it is consistent even if
        // a holder panicked.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The history writes that append `entries` (in order, from `w.history_next`) and apply
    /// retention (bounded work).
    fn plan_history(&self, w: &Writer, entries: Vec<NewEntry>, now: u64) -> Result<Appended> {
        let mut ops = Vec::new();
        let mut stored = Vec::new();
        let mut seq = w.history_next;
        for entry in entries {
            let e = Entry {
                seq,
                time_ms: now,
                reason: entry.reason,
                subject: entry.subject,
                message: entry.message,
                details: entry.details,
                actor: crate::history::current_actor(),
            };
            ops.push(Op::Put(
                keys::history_entry(seq),
                encode(&e, "history entry")?,
            ));
            if let Some(subject) = &e.subject {
                ops.push(Op::Put(
                    keys::history_index(subject.kind, &subject.name, seq),
                    Vec::new(),
                ));
            }
            stored.push(e);
            seq += 1;
        }
        ops.push(Op::Put(
            keys::HISTORY_NEXT.to_vec(),
            seq.to_be_bytes().to_vec(),
        ));
        let (prune_ops, oldest) = self.plan_prune(w, seq, now, PRUNE_PER_APPEND)?;
        ops.extend(prune_ops);
        Ok(Appended {
            ops,
            entries: stored,
            next: seq,
            oldest,
        })
    }

    /// Deletions that bring history within retention once it holds entries
    /// `w.history_oldest..next`; at most `max` removals. Returns them and the new oldest seq.
    fn plan_prune(&self, w: &Writer, next: u64, now: u64, max: usize) -> Result<(Vec<Op>, u64)> {
        let retention = &self.config.history_retention;
        let count = next.saturating_sub(w.history_oldest);
        let mut excess = retention.excess(count);
        if excess == 0 && retention.max_age.is_none() {
            return Ok((Vec::new(), w.history_oldest));
        }
        let mut ops = Vec::new();
        let mut oldest = w.history_oldest;
        let scan = |limit| {
            self.engine.scan(
                Keyspace::History,
                &KeyRange::prefix(keys::HISTORY_ENTRIES),
                Order::Ascending,
                limit,
            )
        };
        // Never remove the newest entry (`next - 1`), so at least one is always kept.
        let prunable = |entry: &Entry, excess: u64| {
            entry.seq + 1 < next && (excess > 0 || retention.expired(entry.time_ms, now))
        };
        // Usually nothing is due: peek at the oldest entry before reading a batch.
        let mut candidates = scan(1)?;
        if let Some((_, bytes)) = candidates.first() {
            let entry: Entry = decode_value(bytes, "history entry")?;
            if prunable(&entry, excess) && max > 1 {
                candidates = scan(max)?;
            }
        }
        for (key, bytes) in candidates {
            let entry: Entry = decode_value(&bytes, "history entry")?;
            if !prunable(&entry, excess) {
                break;
            }
            excess = excess.saturating_sub(1);
            ops.push(Op::Delete(key));
            if let Some(s) = &entry.subject {
                ops.push(Op::Delete(keys::history_index(s.kind, &s.name, entry.seq)));
            }
            oldest = entry.seq + 1;
        }
        Ok((ops, oldest))
    }
}

/// History entries planned by [`Inner::plan_history`], not yet applied.
struct Appended {
    /// The engine writes (entries, index keys, next sequence number, retention).
    ops: Vec<Op>,
    /// The entries as they will be stored.
    entries: Vec<Entry>,
    /// The next sequence number afterwards.
    next: u64,
    /// The oldest entry kept afterwards.
    oldest: u64,
}

/// The revision and time a write is stamped with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// The revision this write gets if it writes.
    pub(crate) revision: u64,
    /// Now, for creation timestamps.
    pub(crate) now_ms: u64,
}

/// Decides one object write from the current object (pure).
pub(crate) trait Planner<R>:
    FnOnce(Option<R>, Stamp) -> Result<Plan<R>> + Send + 'static
{
}
impl<R, F: FnOnce(Option<R>, Stamp) -> Result<Plan<R>> + Send + 'static> Planner<R> for F {}

pub(crate) fn plan_create<R: Resource>(obj: R) -> impl Planner<R> {
    move |current: Option<R>, stamp: Stamp| {
        if current.is_some() {
            return Err(Error::ObjectAlreadyExists {
                kind: R::KIND,
                name: obj.name().to_string(),
            });
        }
        let mut next = obj;
        let meta = next.meta_mut();
        meta.generation = 1;
        meta.resource_version = stamp.revision;
        meta.creation_timestamp_ms = stamp.now_ms;
        Ok(Plan::Put(next, ChangeType::Created))
    }
}

pub(crate) fn plan_update<R: Resource>(obj: R) -> impl Planner<R> {
    move |current: Option<R>, stamp: Stamp| {
        let current = current_at(current, &obj)?;
        let spec_changed = obj.spec() != current.spec();
        if !spec_changed && obj.meta().labels == current.meta().labels {
            return Ok(Plan::Unchanged(current));
        }
        let mut next = obj;
        *next.status_mut() = current.status().clone();
        succeed(&mut next, &current, spec_changed, stamp);
        Ok(Plan::Put(next, ChangeType::Updated))
    }
}

pub(crate) fn plan_update_all<R: Resource>(obj: R) -> impl Planner<R> {
    move |current: Option<R>, stamp: Stamp| {
        let current = current_at(current, &obj)?;
        let spec_changed = obj.spec() != current.spec();
        let labels_changed = obj.meta().labels != current.meta().labels;
        if !spec_changed && !labels_changed && obj.status() == current.status() {
            return Ok(Plan::Unchanged(current));
        }
        let mut next = obj;
        succeed(&mut next, &current, spec_changed, stamp);
        let change = if spec_changed || labels_changed {
            ChangeType::Updated
        } else {
            ChangeType::StatusUpdated
        };
        Ok(Plan::Put(next, change))
    }
}

pub(crate) fn plan_update_status<R: Resource>(obj: R) -> impl Planner<R> {
    move |current: Option<R>, stamp: Stamp| {
        let current = current_at(current, &obj)?;
        if obj.status() == current.status() {
            return Ok(Plan::Unchanged(current));
        }
        let mut next = current;
        *next.status_mut() = obj.status().clone();
        next.meta_mut().resource_version = stamp.revision;
        Ok(Plan::Put(next, ChangeType::StatusUpdated))
    }
}

pub(crate) fn plan_delete<R: Resource>(name: String, expected: Option<u64>) -> impl Planner<R> {
    move |current: Option<R>, _stamp: Stamp| {
        let current = current.ok_or_else(|| not_found::<R>(&name))?;
        if let Some(expected) = expected {
            check_version(&current, expected)?;
        }
        Ok(Plan::Delete(current))
    }
}

/// Runs `plan` against the stored bytes: the resulting object and, unless nothing changes,
/// the engine write and its change event.
pub(crate) fn step<R: Resource>(
    name: &str,
    current: Option<&[u8]>,
    stamp: Stamp,
    plan: impl Planner<R>,
) -> Result<(R, Option<(Op, Change)>)> {
    let current = current.map(|bytes| decode::<R>(bytes, name)).transpose()?;
    let key = keys::object(R::KIND, name);
    let (obj, op, change) = match plan(current, stamp)? {
        Plan::Unchanged(obj) => return Ok((obj, None)),
        Plan::Put(obj, change) => {
            let op = Op::Put(key, encode(&obj, name)?);
            (obj, op, change)
        }
        Plan::Delete(obj) => (obj, Op::Delete(key), ChangeType::Deleted),
    };
    let change = Change {
        kind: R::KIND,
        name: name.to_string(),
        resource_version: stamp.revision,
        generation: obj.meta().generation,
        change,
    };
    Ok((obj, Some((op, change))))
}

fn revision_op(revision: u64) -> Op {
    Op::Put(keys::REVISION.to_vec(), revision.to_be_bytes().to_vec())
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    match keys::name_problem(name) {
        Some(reason) => Err(Error::NameRejected {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The stored object `obj` is written over: it must exist and be at the resource version
/// `obj` names.
fn current_at<R: Resource>(current: Option<R>, obj: &R) -> Result<R> {
    let current = current.ok_or_else(|| not_found::<R>(obj.name()))?;
    check_version(&current, obj.meta().resource_version)?;
    Ok(current)
}

/// Stamps `next` as what follows `current` in a write at `stamp`: the next generation when the
/// spec changed, the write's resource version, the creation time kept.
fn succeed<R: Resource>(next: &mut R, current: &R, spec_changed: bool, stamp: Stamp) {
    let meta = next.meta_mut();
    meta.generation = current.meta().generation + u64::from(spec_changed);
    meta.resource_version = stamp.revision;
    meta.creation_timestamp_ms = current.meta().creation_timestamp_ms;
}

fn check_version<R: Resource>(current: &R, expected: u64) -> Result<()> {
    let actual = current.meta().resource_version;
    if expected == actual {
        Ok(())
    } else {
        Err(Error::ResourceVersionMismatched {
            kind: R::KIND,
            name: current.name().to_string(),
            expected,
            actual,
        })
    }
}

fn not_found<R: Resource>(name: &str) -> Error {
    Error::ObjectNotFound {
        kind: R::KIND,
        name: name.to_string(),
    }
}

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::EncodeFailed {
        what: what.to_string(),
        source,
    })
}

fn decode<R: Resource>(bytes: &[u8], name: &str) -> Result<R> {
    decode_value(bytes, &format!("{}/{}", R::KIND, name))
}

fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::DecodeFailed {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, Ordering};

    use crd::ObjectMeta;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::engine::{self, Entries};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        metadata: ObjectMeta,
        spec: u32,
        status: u32,
    }

    impl Resource for Thing {
        const KIND: Kind = Kind::DepProvider;
        type Spec = u32;
        type Status = u32;
        fn meta(&self) -> &ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
        fn spec(&self) -> &u32 {
            &self.spec
        }
        fn status(&self) -> &u32 {
            &self.status
        }
        fn status_mut(&mut self) -> &mut u32 {
            &mut self.status
        }
    }

    fn thing(name: &str) -> Thing {
        Thing {
            metadata: ObjectMeta::named(name),
            spec: 1,
            status: 0,
        }
    }

    /// A memory engine whose writes or flushes can be made to fail.
    #[derive(Debug, Default)]
    struct FlakyEngine {
        inner: MemoryEngine,
        fail_apply: AtomicBool,
        fail_flush: Arc<AtomicBool>,
        /// Every scan: keyspace, range, limit.
        scans: Mutex<Vec<(Keyspace, KeyRange, usize)>>,
    }

    impl Engine for FlakyEngine {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, engine::Error> {
            self.inner.get(space, key)
        }
        fn scan(
            &self,
            space: Keyspace,
            range: &KeyRange,
            order: Order,
            limit: usize,
        ) -> Result<Entries, engine::Error> {
            self.scans
                .lock()
                .unwrap()
                .push((space, range.clone(), limit));
            self.inner.scan(space, range, order, limit)
        }
        fn apply_all(&self, batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), engine::Error> {
            if self.fail_apply.load(Ordering::SeqCst) {
                return Err(engine::Error::Closed);
            }
            self.inner.apply_all(batches)
        }
        fn flush(&self) -> BoxFuture<'static, Result<(), engine::Error>> {
            let fail = self.fail_flush.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(engine::Error::Closed)
                } else {
                    Ok(())
                }
            }
            .boxed()
        }
        fn size_on_disk(&self) -> Result<u64, engine::Error> {
            self.inner.size_on_disk()
        }
    }

    async fn flaky_store() -> (Store, Arc<FlakyEngine>) {
        let engine = Arc::new(FlakyEngine::default());
        let store = Store::with_engine(engine.clone(), Config::default())
            .await
            .unwrap();
        (store, engine)
    }

    #[tokio::test]
    async fn names_should_list_one_kinds_names_in_order_like_list() {
        let (store, _) = flaky_store().await;
        for name in ["b", "a", "c"] {
            store.create(&thing(name)).await.unwrap();
        }
        let listed: Vec<String> = store
            .list::<Thing>()
            .unwrap()
            .items
            .iter()
            .map(|t| t.metadata.name.clone())
            .collect();
        assert_eq!(store.names::<Thing>().unwrap(), ["a", "b", "c"]);
        assert_eq!(store.names::<Thing>().unwrap(), listed);
    }

    #[tokio::test]
    async fn get_shared_should_decode_again_only_after_the_stored_bytes_changed() {
        let (store, _) = flaky_store().await;
        assert!(store.get_shared::<Thing>("a").unwrap().is_none());
        let created = store.create(&thing("a")).await.unwrap();
        let first = store.get_shared::<Thing>("a").unwrap().unwrap();
        assert_eq!(*first, created);
        let again = store.get_shared::<Thing>("a").unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged bytes: the same decoded object"
        );

        let mut changed = (*again).clone();
        changed.status = 7;
        let written = store.update_status(&changed).await.unwrap();
        let after = store.get_shared::<Thing>("a").unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(*after, written, "what get_opt reads");
        assert_eq!(Some((*after).clone()), store.get_opt::<Thing>("a").unwrap());

        store.delete::<Thing>("a", None).await.unwrap();
        assert!(store.get_shared::<Thing>("a").unwrap().is_none());
        store.create(&thing("a")).await.unwrap();
        let recreated = store.get_shared::<Thing>("a").unwrap().unwrap();
        assert_eq!(recreated.status, 0, "not the deleted object's status");
        assert!(
            store.get_shared::<Thing>("").is_err(),
            "as get_opt: {:?}",
            store.get_opt::<Thing>("")
        );
    }

    #[tokio::test]
    async fn a_failed_apply_should_leave_revision_and_feed_untouched() {
        let (store, engine) = flaky_store().await;
        let mut feed = store.subscribe();
        engine.fail_apply.store(true, Ordering::SeqCst);
        let err = store.create(&thing("a")).await.unwrap_err();
        assert!(matches!(err, Error::EngineFailed(_)), "{err}");
        engine.fail_apply.store(false, Ordering::SeqCst);
        let created = store.create(&thing("a")).await.unwrap();
        assert_eq!(
            created.metadata.resource_version, 1,
            "no revision was used up"
        );
        assert_eq!(
            feed.try_recv().unwrap().map(|c| c.resource_version),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_failed_flush_should_not_report_the_write_done_nor_publish_it() {
        let (store, engine) = flaky_store().await;
        let mut feed = store.subscribe();
        engine.fail_flush.store(true, Ordering::SeqCst);
        let err = store.create(&thing("a")).await.unwrap_err();
        assert!(matches!(err, Error::FlushFailed { .. }), "{err}");
        assert_eq!(feed.try_recv().unwrap(), None, "not durable, not published");
        assert_eq!(store.revision(), 0);
        // The write was applied; once a later flush succeeds it is durable and published.
        engine.fail_flush.store(false, Ordering::SeqCst);
        store.create(&thing("b")).await.unwrap();
        let names: Vec<String> = std::iter::from_fn(|| feed.try_recv().unwrap())
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.revision(), 2);
    }

    #[tokio::test]
    async fn an_unchanged_write_should_still_wait_for_pending_durability() {
        let (store, engine) = flaky_store().await;
        let created = store.create(&thing("a")).await.unwrap();
        engine.fail_flush.store(true, Ordering::SeqCst);
        let mut edit = created.clone();
        edit.spec = 2;
        assert!(store.update(&edit).await.is_err());
        // Re-sending the (applied, not durable) spec is a no-op write, but it must not claim
        // durability the store does not have.
        let current = store.get::<Thing>("a").unwrap();
        assert!(matches!(
            store.update(&current).await,
            Err(Error::FlushFailed { .. })
        ));
        engine.fail_flush.store(false, Ordering::SeqCst);
        assert_eq!(store.update(&current).await.unwrap(), current);
    }

    #[tokio::test]
    async fn history_and_values_should_be_kept_apart_from_objects() {
        let (store, _engine) = flaky_store().await;
        store
            .append_history(NewEntry::new("Deployed", "x"))
            .await
            .unwrap();
        store.put_value("cursor", &7u32).await.unwrap();
        assert_eq!(store.revision(), 0, "only object writes take revisions");
        assert!(store.list::<Thing>().unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn a_list_should_scan_only_its_own_kinds_key_range() {
        let (store, engine) = flaky_store().await;
        for i in 0..5 {
            store.create(&thing(&format!("t{i}"))).await.unwrap();
        }
        engine.scans.lock().unwrap().clear();
        assert_eq!(store.list::<Thing>().unwrap().items.len(), 5);
        let scans = engine.scans.lock().unwrap().clone();
        assert_eq!(
            scans,
            [(
                Keyspace::Objects,
                KeyRange::prefix(b"o/DepProvider/"),
                usize::MAX
            )]
        );
    }

    #[tokio::test]
    async fn history_about_one_object_should_read_only_its_index() {
        let (store, engine) = flaky_store().await;
        let me = crate::history::ObjectRef::new(Kind::Run, "r1");
        for i in 0..20 {
            let entry = NewEntry::new("Tested", format!("{i}"));
            let entry = if i % 10 == 0 {
                entry.subject(me.clone())
            } else {
                entry
            };
            store.append_history(entry).await.unwrap();
        }
        engine.scans.lock().unwrap().clear();
        let found = store.history(&Query::newest(10).about(me)).unwrap();
        assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [11, 1]);
        let scans = engine.scans.lock().unwrap().clone();
        assert_eq!(scans.len(), 1);
        assert_eq!(scans[0].1, KeyRange::prefix(b"i/Run/r1/"));
    }
}
