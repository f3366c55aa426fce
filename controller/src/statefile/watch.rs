//! Watching the state file: its parent directory is watched, because editors replace files by rename.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crd::names::BaseDomain;
use metrics::Metrics;
use notify::{EventKind, RecursiveMode, Watcher};
use state::Store;
use tokio::sync::mpsc;

use super::{apply_file, ApplyOptions, Error};

/// Default quiet time before a burst of file events counts as one change.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

/// Notices changes of one file: writes in place, and replacement by rename or delete+create.
///
/// # Guarantees
/// A burst of events (an editor's write-rename-chmod) becomes one [`FileWatch::changed`]
/// once `debounce` passes without events. Reads of the file (access events) are ignored, so
/// reloading never triggers itself.
pub struct FileWatch {
    // Dropping the watcher stops the notifications.
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<()>,
    debouncer: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.debouncer.abort();
    }
}

impl FileWatch {
    /// Starts watching `file` (its parent directory must exist).
    ///
    /// # Errors
    /// [`Error::WatchFailed`].
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime.
    pub fn new(file: &Path, debounce: Duration) -> Result<FileWatch, Error> {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = file.file_name().map(|n| n.to_os_string());
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(event) => {
                    let relevant = !matches!(event.kind, EventKind::Access(_))
                        && event
                            .paths
                            .iter()
                            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                    if relevant {
                        let _ = raw_tx.send(());
                    }
                }
                // An overflow or backend error: better a needless reload than a missed one.
                Err(e) => {
                    tracing::warn!(error = %e, "state file watcher error; reloading to be safe");
                    let _ = raw_tx.send(());
                }
            }
        })
        .map_err(|source| Error::WatchFailed {
            path: dir.clone(),
            source,
        })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| Error::WatchFailed {
                path: dir.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(1);
        let debouncer = tokio::spawn(async move {
            while raw_rx.recv().await.is_some() {
                // Wait for quiet.
                while let Ok(Some(())) = tokio::time::timeout(debounce, raw_rx.recv()).await {}
                // A full channel already holds a pending change: coalesce.
                if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                    return;
                }
            }
        });
        Ok(FileWatch {
            _watcher: watcher,
            rx,
            debouncer,
        })
    }

    /// Waits for the next change; `false` when the watch has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.recv().await.is_some()
    }
}

/// What `hearth serve --state FILE` runs: a worker that applies the file after every change.
/// A rejected file is logged, counted (`hearth_state_file_rejections_total`) and recorded in
/// the history; the desired state in force stays as it was, and the next change is tried
/// again. A store failure is the worker's error, retried with the supervisor's backoff.
///
/// The watch is set up by [`Follower::new`], before the first [`Follower::load`], so an edit
/// in between is not missed.
pub struct Follower {
    store: Store,
    file: PathBuf,
    base: Option<BaseDomain>,
    options: ApplyOptions,
    debounce: Duration,
    watch: FileWatch,
    metrics: Option<Metrics>,
    loaded: bool,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Watches `file` (events quiet for `debounce` count as one change); nothing is applied
    /// yet.
    ///
    /// # Errors
    /// [`Error::WatchFailed`].
    pub fn new(
        store: Store,
        file: PathBuf,
        base: Option<BaseDomain>,
        options: ApplyOptions,
        debounce: Duration,
        metrics: Option<Metrics>,
    ) -> Result<Follower, Error> {
        let watch = FileWatch::new(&file, debounce)?;
        Ok(Follower {
            store,
            file,
            base,
            options,
            debounce,
            watch,
            metrics,
            loaded: false,
        })
    }

    /// Applies the file once. A rejected or unreadable file is not an error here (logged and
    /// recorded by [`apply_file`], counted); once this succeeded the worker's first step waits
    /// for a change.
    ///
    /// # Errors
    /// The store's failures ([`Error::StoreFailed`], ...): nothing of the file is in force.
    pub async fn load(&mut self) -> Result<(), Error> {
        match apply_file(&self.store, &self.file, self.base.as_ref(), self.options).await {
            Ok(diff) if diff.is_noop() => {
                tracing::info!(file = %self.file.display(), "state file unchanged");
            }
            Ok(diff) => {
                tracing::info!(file = %self.file.display(), "state file applied:\n{}", diff.redacted());
            }
            Err(Error::FileRejected { .. } | Error::FileUnreadable { .. }) => {
                if let Some(m) = &self.metrics {
                    m.record_state_file_rejection();
                }
            }
            Err(e) => return Err(e),
        }
        self.loaded = true;
        Ok(())
    }
}

impl crate::runtime::workers::Worker for Follower {
    fn name(&self) -> &'static str {
        "state-file"
    }

    fn schedule(&self) -> String {
        format!("on change of {}", self.file.display())
    }

    fn first(&self) -> crate::runtime::workers::Next {
        if self.loaded {
            crate::runtime::workers::Next::OnTrigger
        } else {
            crate::runtime::workers::Next::After(Duration::ZERO)
        }
    }

    async fn step(
        &mut self,
    ) -> Result<crate::runtime::workers::Next, crate::runtime::workers::Failure> {
        if self.loaded {
            tracing::info!(file = %self.file.display(), "state file changed; reloading");
        }
        self.load().await?;
        Ok(crate::runtime::workers::Next::OnTrigger)
    }

    async fn triggered(&mut self) -> Result<(), crate::runtime::workers::Failure> {
        if self.watch.changed().await {
            return Ok(());
        }
        // The watch ended (its task stopped): set it up again; the retry after the backoff
        // applies the file, covering a change missed in between.
        self.watch = FileWatch::new(&self.file, self.debounce)?;
        Err(crate::runtime::workers::Failure::msg(format!(
            "the watch of {} ended (set up again)",
            self.file.display()
        )))
    }
}
