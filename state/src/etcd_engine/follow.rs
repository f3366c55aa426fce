//! A standby's read mirror of an etcd prefix, kept current by an etcd watch that resumes from the last revision it saw.
//!
//! # Design
//! - **Load, then watch.** Opening reads the whole prefix at one etcd revision `R` (paged,
//!   every page pinned to `R`) into an in-memory mirror, then watches the prefix from `R + 1`.
//!   Each etcd revision (one transaction of the holder) is applied to the mirror at once and
//!   handed to the store ([`Engine::follow`]) as the keys it changed, before and after.
//! - **Resume.** When the watch stream breaks (etcd member gone, connection cut, no answer to
//!   a progress request within [`SILENCE`]), the follower watches again from the revision
//!   after the last one it applied: nothing is missed and nothing applied twice.
//! - **Compaction.** When etcd compacted that revision away meanwhile (the watch is cancelled
//!   with a compact revision), the follower reloads the prefix at the current revision and
//!   applies the difference to the mirror as one followed commit: every key that differs,
//!   once; then it watches from there.
//! - **Staleness.** Every second the follower asks etcd for watch progress; an answer (or any
//!   event) confirms the mirror current up to that moment. [`EtcdFollower::status`] says when
//!   that last happened, so a caller can refuse to answer from a mirror older than it accepts.
//! - **Read-only.** `apply` is refused ([`Error::ReadOnly`]); only the holder writes.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::{connect_options, operation_failed, prefix_end, Config, LOAD_PAGE};
use crate::engine::{Engine, Entries, Error, Followed, FollowedKey, KeyRange, Keyspace, Op, Order};
use crate::memory::MemoryEngine;

/// How often the follower asks etcd to confirm that its watch is current.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A watch that answered nothing (no event, no progress) for this long is given up and
/// resumed on a fresh stream.
pub const SILENCE: Duration = Duration::from_secs(3);

/// Where a follower stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowStatus {
    /// The etcd revision the mirror reflects.
    pub revision: i64,
    /// When etcd last confirmed the mirror current (an event or a progress answer).
    pub confirmed: Instant,
    /// Watches resumed after a broken stream.
    pub resumes: u64,
    /// Reloads of the whole prefix after etcd compacted the revision to resume from.
    pub reloads: u64,
}

impl FollowStatus {
    /// How long ago etcd last confirmed the mirror current: the mirror misses at most the
    /// writes of this long (plus the watch's delivery delay).
    pub fn staleness(&self) -> Duration {
        self.confirmed.elapsed()
    }
}

/// A read-only mirror of an etcd prefix that another process holds. See the module docs.
pub struct EtcdFollower {
    config: Config,
    mirror: MemoryEngine,
    followed: Mutex<Option<mpsc::UnboundedReceiver<Followed>>>,
    status: watch::Receiver<FollowStatus>,
    close: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EtcdFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdFollower")
            .field("location", &self.config.location())
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// What the follower thread hands back once loaded.
type Loaded = Result<(MemoryEngine, watch::Receiver<FollowStatus>), Error>;

impl EtcdFollower {
    /// Connects, loads the prefix and starts following it; resolves once loaded (the work
    /// runs on the follower's own thread).
    ///
    /// # Errors
    /// [`Error::OperationFailed`] when etcd cannot be reached or refuses.
    pub async fn open(config: Config) -> Result<EtcdFollower, Error> {
        let (loaded_tx, loaded_rx) = oneshot::channel::<Loaded>();
        let (followed_tx, followed_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = oneshot::channel();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-etcd-follow".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = loaded_tx.send(Err(operation_failed(
                            &thread_config,
                            "start",
                            e.to_string(),
                        )));
                        return;
                    }
                };
                runtime.block_on(run(thread_config, loaded_tx, followed_tx, close_rx));
            })
            .map_err(|e| operation_failed(&config, "start", e.to_string()))?;
        match loaded_rx.await {
            Ok(Ok((mirror, status))) => Ok(EtcdFollower {
                config,
                mirror,
                followed: Mutex::new(Some(followed_rx)),
                status,
                close: Some(close_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Closed)
            }
        }
    }

    /// Where the follower stands now.
    pub fn status(&self) -> FollowStatus {
        *self.status.borrow()
    }

    /// A receiver of the follower's status (changes on every applied revision, confirmation,
    /// resume and reload).
    pub fn watch_status(&self) -> watch::Receiver<FollowStatus> {
        self.status.clone()
    }
}

impl Drop for EtcdFollower {
    fn drop(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Engine for EtcdFollower {
    fn location(&self) -> String {
        self.config.location()
    }

    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.mirror.get(space, key)
    }

    fn scan(
        &self,
        space: Keyspace,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, Error> {
        self.mirror.scan(space, range, order, limit)
    }

    fn apply_all(&self, _batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), Error> {
        Err(Error::ReadOnly {
            location: self.config.location(),
        })
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), Error>> {
        async { Ok(()) }.boxed()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.mirror.size_on_disk()
    }

    fn follow(&self) -> Option<mpsc::UnboundedReceiver<Followed>> {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Every key of the prefix (per keyspace) at one revision.
type Snapshot = BTreeMap<(Keyspace, Vec<u8>), Vec<u8>>;

/// The follower thread: connect, load, then follow until closed.
async fn run(
    config: Config,
    loaded: oneshot::Sender<Loaded>,
    followed: mpsc::UnboundedSender<Followed>,
    mut close: oneshot::Receiver<()>,
) {
    let opened = async {
        let options = connect_options(&config)?;
        let mut client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| operation_failed(&config, "connect", e.to_string()))?;
        let (revision, snapshot) = snapshot(&mut client, &config)
            .await
            .map_err(|e| operation_failed(&config, "read", e.to_string()))?;
        let mirror = MemoryEngine::new();
        let mut batches: BTreeMap<Keyspace, Vec<Op>> = BTreeMap::new();
        for ((space, key), value) in snapshot {
            batches.entry(space).or_default().push(Op::Put(key, value));
        }
        mirror.apply_all(batches.into_iter().collect())?;
        Ok::<_, Error>((client, mirror, revision))
    };
    let (client, mirror, revision) = match opened.await {
        Ok(x) => x,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let (status_tx, status_rx) = watch::channel(FollowStatus {
        revision,
        confirmed: Instant::now(),
        resumes: 0,
        reloads: 0,
    });
    if loaded.send(Ok((mirror.clone(), status_rx))).is_err() {
        return;
    }
    tracing::info!(
        location = config.location(),
        revision,
        "etcd store loaded; following the holder's writes"
    );
    let follower = Follower {
        client,
        config,
        mirror,
        followed,
        status: status_tx,
    };
    tokio::select! {
        () = follower.follow() => {}
        _ = &mut close => {}
    }
}

/// Reads every keyspace of the prefix at one revision (the first page's), a page at a time.
async fn snapshot(
    client: &mut Client,
    config: &Config,
) -> Result<(i64, Snapshot), etcd_client::Error> {
    let mut revision = 0;
    let mut out = Snapshot::new();
    for space in Keyspace::ALL {
        let prefix = config.space_prefix(space);
        let end = prefix_end(&prefix);
        let mut from = prefix.clone();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LOAD_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = client.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let kvs = response.kvs();
            for kv in kvs {
                if let Some(key) = kv.key().strip_prefix(prefix.as_slice()) {
                    out.insert((space, key.to_vec()), kv.value().to_vec());
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
    }
    Ok((revision, out))
}

/// Why a watch stream ended.
enum Ended {
    /// Broken or silent: watch again from the next revision.
    Broken(String),
    /// etcd compacted the revision to resume from: reload.
    Compacted(i64),
}

struct Follower {
    client: Client,
    config: Config,
    mirror: MemoryEngine,
    followed: mpsc::UnboundedSender<Followed>,
    status: watch::Sender<FollowStatus>,
}

impl Follower {
    /// Watches, resumes and reloads forever (until the thread is closed).
    async fn follow(mut self) {
        let mut delay = Duration::from_millis(100);
        let mut first = true;
        loop {
            if !first {
                self.status.send_modify(|s| s.resumes += 1);
            }
            first = false;
            match self.watch().await {
                Ended::Broken(reason) => {
                    tracing::warn!(location = self.config.location(), %reason, revision = self.status.borrow().revision, "etcd watch broke; resuming");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Ended::Compacted(compacted) => {
                    tracing::warn!(
                        location = self.config.location(),
                        compacted,
                        revision = self.status.borrow().revision,
                        "etcd compacted the revision to resume from; reloading"
                    );
                    self.reload().await;
                    delay = Duration::from_millis(100);
                }
            }
        }
    }

    /// One watch stream from the revision after the last applied one, until it ends.
    async fn watch(&mut self) -> Ended {
        let from = self.status.borrow().revision + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let opened = tokio::time::timeout(
            SILENCE,
            self.client.watch(self.config.prefix.clone(), Some(options)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ended::Broken(e.to_string()),
            Err(_) => return Ended::Broken("opening the watch timed out".into()),
        };
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if heard.elapsed() > SILENCE {
                        return Ended::Broken(format!("no answer from etcd for {SILENCE:?}"));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return Ended::Broken(e.to_string());
                    }
                }
                message = stream.message() => {
                    let response = match message {
                        Ok(Some(r)) => r,
                        Ok(None) => return Ended::Broken("the watch stream ended".into()),
                        Err(e) => return Ended::Broken(e.to_string()),
                    };
                    heard = Instant::now();
                    if response.compact_revision() > 0 {
                        return Ended::Compacted(response.compact_revision());
                    }
                    if response.canceled() {
                        return Ended::Broken(format!("the watch was cancelled: {}", response.cancel_reason()));
                    }
                    let header = response.header().map_or(0, |h| h.revision());
                    if let Err(e) = self.apply_events(response.events()) {
                        return Ended::Broken(e);
                    }
                    // A progress answer (no events) says every event up to its revision was
                    // sent: the mirror is current at that revision.
                    let progress = response.events().is_empty() && !response.created();
                    self.status.send_modify(|s| {
                        if progress && header > s.revision {
                            s.revision = header;
                        }
                        s.confirmed = Instant::now();
                    });
                }
            }
        }
    }

    /// Applies events, one etcd revision (one holder transaction) at a time.
    fn apply_events(&mut self, events: &[etcd_client::Event]) -> Result<(), String> {
        let mut group: Vec<(Keyspace, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut group_revision = 0;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision != group_revision && !group.is_empty() {
                self.apply(std::mem::take(&mut group), group_revision)?;
            }
            group_revision = revision;
            let Some((space, key)) = self.split(kv.key()) else {
                continue; // the holder key
            };
            let after = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            group.push((space, key, after));
        }
        if group_revision > 0 {
            self.apply(group, group_revision)?;
        }
        Ok(())
    }

    /// The keyspace and key inside it of an etcd key, or `None` outside the keyspaces.
    fn split(&self, key: &[u8]) -> Option<(Keyspace, Vec<u8>)> {
        Keyspace::ALL.into_iter().find_map(|space| {
            key.strip_prefix(self.config.space_prefix(space).as_slice())
                .map(|k| (space, k.to_vec()))
        })
    }

    /// Applies one revision's writes to the mirror and hands the changed keys to the store.
    fn apply(
        &mut self,
        writes: Vec<(Keyspace, Vec<u8>, Option<Vec<u8>>)>,
        revision: i64,
    ) -> Result<(), String> {
        let mut keys = Vec::new();
        let mut batches: BTreeMap<Keyspace, Vec<Op>> = BTreeMap::new();
        for (space, key, after) in writes {
            let before = self.mirror.get(space, &key).map_err(|e| e.to_string())?;
            if before == after {
                continue;
            }
            batches.entry(space).or_default().push(match &after {
                Some(v) => Op::Put(key.clone(), v.clone()),
                None => Op::Delete(key.clone()),
            });
            keys.push(FollowedKey {
                space,
                key,
                before,
                after,
            });
        }
        self.mirror
            .apply_all(batches.into_iter().collect())
            .map_err(|e| e.to_string())?;
        self.status
            .send_modify(|s| s.revision = s.revision.max(revision));
        if !keys.is_empty() {
            // No receiver (the store is gone or never took it) is fine: the mirror is kept.
            let _ = self.followed.send(Followed { keys });
        }
        Ok(())
    }

    /// Reloads the prefix at the current revision and applies the difference, retrying until
    /// it succeeds.
    async fn reload(&mut self) {
        let mut delay = Duration::from_millis(100);
        let (revision, snapshot) = loop {
            match snapshot(&mut self.client, &self.config).await {
                Ok(x) => break x,
                Err(e) => {
                    tracing::warn!(location = self.config.location(), error = %e, "reloading the etcd prefix failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        };
        let mut writes = Vec::new();
        for space in Keyspace::ALL {
            let all = KeyRange {
                start: std::ops::Bound::Unbounded,
                end: std::ops::Bound::Unbounded,
            };
            let held = self
                .mirror
                .scan(space, &all, Order::Ascending, usize::MAX)
                .unwrap_or_default();
            for (key, _) in held {
                if !snapshot.contains_key(&(space, key.clone())) {
                    writes.push((space, key, None));
                }
            }
        }
        for ((space, key), value) in snapshot {
            writes.push((space, key, Some(value)));
        }
        if let Err(e) = self.apply(writes, revision) {
            tracing::error!(location = self.config.location(), error = %e, "applying the reloaded etcd prefix failed");
        }
        self.status.send_modify(|s| {
            s.reloads += 1;
            s.confirmed = Instant::now();
        });
    }
}
