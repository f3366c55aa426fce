//! Watching the state file: its parent directory is watched, because editors replace files by rename.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crd::names::BaseDomain;
use notify::{EventKind, RecursiveMode, Watcher};
use state::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{apply_file, ApplyOptions, Error};

/// Delay before applying again after a store failure.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Sleeps for `d`, or forever when `None`.
async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

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

/// What `hearth serve --state FILE` runs: applies the file at start and after every change
/// until `stop`. A rejected file is logged and recorded in history; the desired state in force
/// stays as it was, and the next change is tried again.
///
/// # Errors
/// [`Error::WatchFailed`] when the watch cannot be set up; store failures are logged and
/// retried at the next change.
pub async fn follow(
    store: Store,
    file: PathBuf,
    base: Option<BaseDomain>,
    options: ApplyOptions,
    debounce: Duration,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut watch = FileWatch::new(&file, debounce)?;
    loop {
        // A store failure is retried on its own; a bad file waits for the next edit.
        let retry = match apply_file(&store, &file, base.as_ref(), options).await {
            Ok(diff) if diff.is_noop() => {
                tracing::debug!(file = %file.display(), "state file unchanged");
                None
            }
            Ok(diff) => {
                tracing::info!(file = %file.display(), "state file applied:\n{}", diff.redacted());
                None
            }
            // Logged (and recorded) by apply_file.
            Err(Error::FileRejected { .. } | Error::FileUnreadable { .. }) => None,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "applying the state file failed; retrying");
                Some(STORE_RETRY)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            more = watch.changed() => if !more { return Ok(()) },
            _ = sleep_opt(retry) => {}
        }
    }
}
